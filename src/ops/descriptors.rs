//! The process's descriptor budget: at start the soft open-files limit is raised to the hard
//! limit (as nginx's `worker_rlimit_nofile`), so a flood of connections meets the largest budget
//! the system allows; what it came to is kept for `/status`.

use std::io;
use std::sync::OnceLock;

/// The open-files limit after the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process was started with.
    pub before: u64,
    /// The soft limit now: how many descriptors the process may have open.
    pub limit: u64,
    /// The hard limit (`None`: unlimited).
    pub hard: Option<u64>,
}

static OPEN_FILES: OnceLock<OpenFiles> = OnceLock::new();

/// Raises the soft open-files limit to the hard one (where the hard one is unlimited, to the
/// kernel's per-process ceiling, `/proc/sys/fs/nr_open`) and keeps the outcome for
/// `open_files`. Done once, at start, before any listener is opened.
pub fn raise_open_files_limit() -> io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    let hard = (limit.rlim_max != libc::RLIM_INFINITY).then_some(limit.rlim_max);
    let target = hard.unwrap_or_else(kernel_ceiling);
    if target > before {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit.rlim_cur = target;
    }
    let outcome = OpenFiles {
        before,
        limit: limit.rlim_cur,
        hard,
    };
    // A second call (tests) keeps the first outcome, which is what the process started with.
    Ok(*OPEN_FILES.get_or_init(|| outcome))
}

/// The open-files limit the process runs with, once [`raise_open_files_limit`] has run.
pub(crate) fn open_files() -> Option<OpenFiles> {
    OPEN_FILES.get().copied()
}

/// The most descriptors the kernel lets one process have (Linux's default where unreadable).
fn kernel_ceiling() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After the call the soft limit is the hard one (or the kernel's ceiling), never lower
    /// than it was.
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let outcome = raise_open_files_limit().expect("raise");
        assert!(outcome.limit >= outcome.before);
        if let Some(hard) = outcome.hard {
            assert_eq!(outcome.limit, hard);
        }
        assert_eq!(open_files(), Some(outcome));
    }
}
