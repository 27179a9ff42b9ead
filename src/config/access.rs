//! Validation of `access` blocks (`gateway.access`, the default for every route, and
//! `gateway.routes[i].access`): the networks of `allow` and `deny`, and `basic_auth`'s
//! htpasswd file, read here (at load and on every reload) and refused when any entry is weak.

use std::path::Path;
use std::sync::Arc;

use super::spec::{AccessSpec, BasicAuthSpec};
use super::{key_error, Cidr, KeyError};
use crate::routing::access::{Access, BasicAuth, Users};

/// The realm a `basic_auth` without `realm` names.
const DEFAULT_REALM: &str = "restricted";
/// Longest realm accepted.
const MAX_REALM_LEN: usize = 128;

/// An `access` block (`key` names it in errors): `None` when it restricts nothing.
pub(super) fn validate_access(
    spec: &AccessSpec,
    key: &str,
    base: &Path,
) -> Result<Option<Arc<Access>>, KeyError> {
    let networks = |field: &str, list: &[String]| {
        list.iter()
            .enumerate()
            .map(|(i, c)| {
                Cidr::parse(c).map_err(|e| key_error(format!("{key}.{field}[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let allow = match &spec.allow {
        Some(list) if list.is_empty() => {
            return Err(key_error(
                format!("{key}.allow"),
                "an empty list would deny every client; leave the key out to allow all".into(),
            ))
        }
        Some(list) => Some(networks("allow", list)?),
        None => None,
    };
    let deny = networks("deny", &spec.deny)?;
    let basic = spec
        .basic_auth
        .as_ref()
        .map(|b| basic_auth(b, &format!("{key}.basic_auth"), base))
        .transpose()?;
    Ok(Access::new(allow, deny, basic).map(Arc::new))
}

fn basic_auth(spec: &BasicAuthSpec, key: &str, base: &Path) -> Result<BasicAuth, KeyError> {
    let realm = spec.realm.as_deref().unwrap_or(DEFAULT_REALM);
    let fits = |b: u8| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\';
    if realm.is_empty() || realm.len() > MAX_REALM_LEN || !realm.bytes().all(fits) {
        return Err(key_error(
            format!("{key}.realm"),
            format!(
                "{realm:?} must be 1..={MAX_REALM_LEN} printable ASCII characters without `\"` or `\\`"
            ),
        ));
    }
    let file_key = || format!("{key}.users_file");
    let path = base.join(&spec.users_file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| key_error(file_key(), format!("cannot read {}: {e}", path.display())))?;
    let users = Users::parse(&text)
        .map_err(|e| key_error(file_key(), format!("{}: {e}", path.display())))?;
    Ok(BasicAuth::new(users, realm, path.display().to_string()))
}
