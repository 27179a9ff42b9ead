//! Files that hold secrets (the state file with uploaded certificates' keys): created
//! readable by their owner only.

use std::fs::File;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Opens `path` for writing, truncated, with mode 0600 — created so, and set so on the open
/// file when it already existed (a file left by an earlier run keeps its own mode
/// otherwise), before anything secret is written to it.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}
