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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::{load_str, ConfigError, LoadedConfig};

    // Written by `htpasswd -nbB -C 4 u pw`.
    const BCRYPT_LINE: &str = "alice:$2y$04$1J/N4hbX5sHvesS.6kKdLuhpJGjetmpFE1.pqsDdcMPqEVwdAKEWi";

    /// Two routes; `ACCESS` is replaced by each test's `access` lines.
    const ROUTES: &str = r#"
gateway:
  listen: ["127.0.0.1:8080"]
  groups:
    web: { servers: ["127.0.0.1:10001"] }
  DEFAULT
  routes:
    - name: staging
      hosts: [staging.example.com]
      ACCESS
      routing: { default: web }
    - name: public
      routing: { default: web }
"#;

    /// A folder of its own for each test, with the htpasswd files it needs.
    fn folder(test: &str, files: &[(&str, String)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cg-access-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write");
        }
        dir
    }

    fn load(dir: &Path, default: &str, access: &str) -> Result<LoadedConfig, ConfigError> {
        let text = ROUTES.replace("DEFAULT", default).replace("ACCESS", access);
        load_str(&text, "gw.yaml", dir)
    }

    /// Each bad value is refused naming its key, down to the list index.
    #[test]
    fn errors_name_the_key() {
        let dir = folder("keys", &[("ok.htpasswd", format!("{BCRYPT_LINE}\n"))]);
        let cases = [
            (
                "",
                r#"access: { allow: ["10.0.0.0/8", "10.0.0.0/33"] }"#,
                "gateway.routes[0].access.allow[1]: \"10.0.0.0/33\": prefix must be 0..=32",
            ),
            (
                "",
                r#"access: { deny: [not-an-address] }"#,
                "gateway.routes[0].access.deny[0]: \"not-an-address\" is not an IP address",
            ),
            (
                "",
                "access: { allow: [] }",
                "gateway.routes[0].access.allow: an empty list would deny every client",
            ),
            (
                r#"access: { deny: ["1.2.3.4", "300.1.1.1"] }"#,
                "",
                "gateway.access.deny[1]:",
            ),
            (
                "",
                r#"access: { basic_auth: { users_file: ok.htpasswd, realm: "say \"hi\"" } }"#,
                "gateway.routes[0].access.basic_auth.realm:",
            ),
            (
                "",
                "access: { basic_auth: { users_file: missing.htpasswd } }",
                "gateway.routes[0].access.basic_auth.users_file: cannot read",
            ),
            (
                "",
                "access: { basic_auth: { user_file: ok.htpasswd } }",
                "unknown field `user_file`",
            ),
        ];
        for (default, access, says) in cases {
            let e = load(&dir, default, access)
                .err()
                .unwrap_or_else(|| panic!("accepted: {default} {access}"))
                .to_string();
            assert!(e.contains(says), "{access}: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A plaintext or DES line is refused at load with the file and the line, never the hash.
    #[test]
    fn weak_htpasswd_lines_are_refused_with_file_and_line() {
        let dir = folder(
            "weak",
            &[
                ("plain.htpasswd", format!("{BCRYPT_LINE}\nbob:hunter2\n")),
                (
                    "des.htpasswd",
                    format!("# ops\n{BCRYPT_LINE}\n\ncarol:rbirHIMA.Q9Ps\n"),
                ),
                (
                    "md5.htpasswd",
                    "eve:$apr1$.0uyaTeH$pCMiFP2fGqBPUJbGfIynP.\n".into(),
                ),
            ],
        );
        let cases = [
            (
                "plain.htpasswd",
                "line 2: user \"bob\": a plaintext password",
            ),
            (
                "des.htpasswd",
                "line 4: user \"carol\": a crypt(3) DES entry",
            ),
            ("md5.htpasswd", "line 1: user \"eve\": an MD5 entry"),
        ];
        for (file, says) in cases {
            let access = format!("access: {{ basic_auth: {{ users_file: {file} }} }}");
            let e = load(&dir, "", &access).err().expect(file).to_string();
            let path = dir.join(file).display().to_string();
            assert!(
                e.contains(&format!(
                    "gateway.routes[0].access.basic_auth.users_file: {path}: {says}"
                )),
                "{e}"
            );
            assert!(!e.contains("hunter2") && !e.contains("rbirHIMA"), "{e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// `gateway.access` applies to every route without its own; a route's `access` replaces
    /// it whole, and `access: {}` opts out.
    #[test]
    fn the_gateway_default_applies_where_a_route_sets_none() {
        let dir = folder("default", &[("ok.htpasswd", format!("{BCRYPT_LINE}\n"))]);
        let default = r#"access: { deny: ["10.9.0.0/16"] }"#;
        let loaded = load(&dir, default, "").expect("valid");
        let denied = Some("10.9.1.1".parse().expect("ip"));
        for route in &loaded.gateway.routes {
            let access = route.access.as_ref().expect("the default");
            assert!(!access.admits(denied), "{}", route.name);
        }
        let own = r#"access: { allow: ["127.0.0.1"], basic_auth: { users_file: ok.htpasswd, realm: staging } }"#;
        let loaded = load(&dir, default, own).expect("valid");
        let staging = loaded.gateway.routes[0].access.as_ref().expect("own");
        assert!(staging.admits(Some("127.0.0.1".parse().expect("ip"))));
        assert!(staging.deny().is_empty(), "replaced, not merged");
        let basic = staging.basic().expect("basic_auth");
        assert_eq!(basic.challenge(), "Basic realm=\"staging\"");
        assert_eq!(basic.users().len(), 1);
        assert!(
            loaded.gateway.routes[1].access.is_some(),
            "public keeps the default"
        );
        let loaded = load(&dir, default, "access: {}").expect("valid");
        assert!(loaded.gateway.routes[0].access.is_none(), "opted out");
        let loaded = load(&dir, "", "").expect("valid");
        assert!(loaded.gateway.routes.iter().all(|r| r.access.is_none()));
        std::fs::remove_dir_all(&dir).ok();
    }
}
