//! Listener certificates uploaded through the admin API, end to end with certificates made at
//! test time: served by SNI without a reload (checked by a verifying client), listed beside
//! the file's with issuer, names and days left, deleted back to the file's, bad uploads
//! refused naming the field, roles, a restart through the state file (written 0600), and two
//! nodes sharing Redis.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::tls::{curl, served_serial, tls_block, Ca, Edge, Issued, KeyKind};
use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "certs-test-admin-token";
const OPERATOR: &str = "certs-test-operator-token";
const VIEWER: &str = "certs-test-viewer-token";

/// The file's certificates.
struct Files {
    default: Issued,
    exact: Issued,
}

fn file_certificates(dir: &Path) -> Files {
    let ca = Ca::new("File CA");
    let default = ca.issue(
        dir,
        "file",
        &["file.test", "*.wild.test"],
        KeyKind::EcdsaP256,
        0xF1,
        90,
    );
    let exact = ca.issue_p256(dir, "exact", "exact.wild.test", 0xF2);
    Files { default, exact }
}

/// Starts the edge in `dir` (see `common::tls::start_edge`): a TLS listener serving the file's
/// certificates `files`, `file.test` + `*.wild.test` (the default) and `exact.wild.test`; an
/// admin API with an admin, an operator and a viewer token and the state file `state_file`;
/// group `stable` of `origin`; and, with `redis_port`, the store.
fn start_edge(
    dir: TempDir,
    files: &Files,
    origin: &Origin,
    state_file: &Path,
    redis_port: Option<u16>,
) -> Edge {
    let tls = tls_block(&[&files.default, &files.exact], Some(&files.default), "");
    let admin_keys = format!(
        "    token: \"{ADMIN}\"\n    state_file: \"{state}\"\n\
         \x20   tokens:\n\
         \x20     - {{ name: ops, token: \"{OPERATOR}\", role: operator }}\n\
         \x20     - {{ name: look, token: \"{VIEWER}\", role: viewer }}\n",
        state = state_file.display(),
    );
    let store = redis_port
        .map(|port| store_line(port, "certs:"))
        .unwrap_or_default();
    let rest = format!(
        "{store}\
         \x20 groups:\n    stable: {{ servers: [\"{origin}\"] }}\n\
         \x20 routing:\n    default: stable\n",
        origin = origin.addr,
    );
    common::tls::start_edge(dir, &tls, &admin_keys, &rest)
}

impl Edge {
    /// An admin's upload of `body` as `name` is refused with `status`, naming `field`.
    fn assert_refused(&self, name: &str, body: &str, status: u16, field: &str) {
        let path = format!("/config/certificates/{name}");
        let (got, answer) = self.call(ADMIN, "PUT", &path, Some(body));
        assert_eq!(
            (got, answer["field"].as_str()),
            (status, Some(field)),
            "PUT {path}: {answer}"
        );
    }

    fn call(&self, token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let r = admin(self.admin, method, path, Some(token), body);
        let value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, value)
    }

    /// The raw text of a read as a viewer (for the no-key checks: `GET /config` is YAML).
    fn read_text(&self, path: &str) -> String {
        let r = admin(self.admin, "GET", path, Some(VIEWER), None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.text()
    }

    fn version(&self) -> u64 {
        let (_, status) = self.call(VIEWER, "GET", "/status", None);
        status["control"]["version"].as_u64().expect("version")
    }

    /// `GET /config/certificates` (as a viewer).
    fn list(&self) -> Vec<Value> {
        let (status, body) = self.call(VIEWER, "GET", "/config/certificates", None);
        assert_eq!(status, 200, "{body}");
        body["certificates"].as_array().cloned().expect("a list")
    }

    fn upload(&self, name: &str, upload: &Upload) -> (u16, Value) {
        self.call(
            ADMIN,
            "PUT",
            &format!("/config/certificates/{name}"),
            Some(&upload.body()),
        )
    }
}

/// A certificate to upload: its chain and key PEM (made now, never stored in the repository).
struct Upload {
    chain: String,
    key: String,
    serial: String,
}

impl Upload {
    /// A leaf of `ca` for `names` valid for `days` (negative: expired), serial `serial_no`.
    fn new(ca: &Ca, dir: &Path, stem: &str, names: &[&str], serial_no: u32, days: i64) -> Upload {
        let issued = ca.issue(dir, stem, names, KeyKind::EcdsaP256, serial_no, days);
        Upload {
            chain: std::fs::read_to_string(&issued.cert).expect("chain"),
            key: std::fs::read_to_string(&issued.key).expect("key"),
            serial: issued.serial,
        }
    }

    fn body(&self) -> String {
        json!({ "chain": self.chain, "key": self.key }).to_string()
    }

    /// The first line of the key's base64 body (in a leak it shows as it is, however the
    /// line ends are escaped).
    fn key_line(&self) -> &str {
        self.key
            .lines()
            .find(|l| !l.starts_with("-----"))
            .expect("a PEM key body")
    }
}

/// Runs curl over TLS to `name` (resolved to the listener), verifying the chain against
/// `ca_file` and the name: the origin's answer body.
fn curl_verified(tls: SocketAddr, name: &str, ca_file: &Path) -> String {
    let ca_file = ca_file.to_str().expect("a UTF-8 path");
    let resolve = format!("{name}:{}:127.0.0.1", tls.port());
    let url = format!("https://{name}:{}/", tls.port());
    curl(&["--cacert", ca_file, "--resolve", &resolve, &url])
}

/// The rows of `list` with `source` and `name`.
fn row<'a>(list: &'a [Value], source: &str, name: &str) -> Option<&'a Value> {
    list.iter()
        .find(|r| r["source"] == source && r["name"] == name)
}

/// Upload → served by SNI at once (exact names and wildcards, checked by a client that
/// verifies the chain and the name) and proxied, no reload; listed with issuer, names, serial
/// and days left; precedence over the file's (same kind of match) but not over an exact
/// name of the file's; audited without the key; no read ever shows the key; delete → the
/// file's certificate again.
#[test]
fn an_uploaded_certificate_is_served_by_sni_and_deleted_back_to_the_files() {
    let dir = TempDir::new("certs-api");
    let files = file_certificates(dir.path());
    let upload_ca = Ca::new("Upload CA");
    let upload_ca_file = dir.path().join("upload-ca.pem");
    upload_ca.write_cert(&upload_ca_file);
    let shop = Upload::new(
        &upload_ca,
        dir.path(),
        "shop",
        &["shop.test", "*.shop.test", "*.wild.test"],
        0x51,
        30,
    );
    let origin = Origin::start("stable");
    let state_file = dir.path().join("state.json");
    let edge = start_edge(dir, &files, &origin, &state_file, None);

    // Before: the file's default certificate for the unknown name, which the redirect
    // listener does not know.
    assert_eq!(
        served_serial(edge.tls, Some("shop.test")),
        files.default.serial
    );
    assert_eq!(get_host(edge.redirect, "shop.test", "/a", &[]).status, 400);
    let generation_before = edge.call(VIEWER, "GET", "/status", None).1["generation"].clone();

    let (status, answer) = edge.upload("shop", &shop);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["certificate"]["names"][0], "shop.test", "{answer}");
    assert!(
        !answer.to_string().contains(shop.key_line()),
        "the PUT answer has no key"
    );

    // Served by SNI at once (the answer comes once applied), no reload.
    assert_eq!(served_serial(edge.tls, Some("shop.test")), shop.serial);
    assert_eq!(served_serial(edge.tls, Some("api.shop.test")), shop.serial);
    // Same kind of match: the upload's wildcard beats the file's; an exact name of the file
    // beats the upload's wildcard; unknown names still get the file's default.
    assert_eq!(served_serial(edge.tls, Some("x.wild.test")), shop.serial);
    assert_eq!(
        served_serial(edge.tls, Some("exact.wild.test")),
        files.exact.serial
    );
    assert_eq!(
        served_serial(edge.tls, Some("file.test")),
        files.default.serial
    );
    assert_eq!(served_serial(edge.tls, None), files.default.serial);
    assert_eq!(
        curl_verified(edge.tls, "shop.test", &upload_ca_file),
        "stable"
    );
    assert_eq!(
        curl_verified(edge.tls, "www.shop.test", &upload_ca_file),
        "stable"
    );
    assert!(origin.count() >= 2, "the requests reached the origin");
    // The redirect listener sends the upload's names on to https.
    let redirected = get_host(edge.redirect, "www.shop.test", "/a?b=1", &[]);
    assert_eq!(redirected.status, 308);
    assert_eq!(
        redirected.header("location"),
        Some(format!("https://www.shop.test:{}/a?b=1", edge.tls.port()).as_str())
    );
    let log = edge.gateway.log();
    assert!(!log.contains("reload:"), "no reload happened: {log}");
    let status_after = edge.call(VIEWER, "GET", "/status", None).1;
    assert_ne!(status_after["generation"], generation_before, "a new state");
    assert!(status_after["last_reload"].is_null(), "never reloaded");

    // The list: the file's two per listener, the upload with issuer, names, days left.
    let list = edge.list();
    let uploaded = row(&list, "api", "shop").unwrap_or_else(|| panic!("shop in {list:?}"));
    assert_eq!(uploaded["issuer"], "Upload CA");
    assert_eq!(
        uploaded["names"],
        json!(["shop.test", "*.shop.test", "*.wild.test"])
    );
    assert_eq!(uploaded["serial"], shop.serial);
    let days = uploaded["days_left"].as_i64().expect("days_left");
    assert!((29..=30).contains(&days), "30 days less a little: {days}");
    assert!(uploaded["not_after"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(uploaded["by"], "admin");
    let file_row = row(&list, "file", &files.default.cert.display().to_string())
        .unwrap_or_else(|| panic!("the file's certificate in {list:?}"));
    assert_eq!(file_row["issuer"], "File CA");
    assert_eq!(file_row["default"], true);
    assert_eq!(file_row["listener"], edge.tls.to_string());
    assert!(row(&list, "file", &files.exact.cert.display().to_string()).is_some());
    let (status, one) = edge.call(VIEWER, "GET", "/config/certificates/shop", None);
    assert_eq!(
        (status, &one["serial"]),
        (200, &json!(shop.serial)),
        "{one}"
    );
    let (status, _) = edge.call(VIEWER, "GET", "/config/certificates/nope", None);
    assert_eq!(status, 404);

    // Its expiry is exported like the file's.
    let exported = metric_value(
        &get(edge.metrics, "/metrics", &[]).text(),
        "gateway_certificate_expiry_seconds{name=\"shop.test\"}",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as f64;
    assert!(
        exported > now + 29.0 * 86_400.0,
        "expiry exported: {exported}"
    );

    // The audit entry names the certificate, its names and expiry; not the key.
    let (_, audit) = edge.call(VIEWER, "GET", "/audit", None);
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "certificate_upload", "{audit}");
    let detail = entry["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("\"shop\"") && detail.contains("shop.test") && detail.contains("expires"),
        "{detail}"
    );

    // No read answers the key (its PEM body, in any form).
    for path in [
        "/status",
        "/config",
        "/audit",
        "/config/certificates",
        "/config/certificates/shop",
        "/whoami",
    ] {
        let text = edge.read_text(path);
        assert!(!text.contains(shop.key_line()), "GET {path} shows the key");
        assert!(
            !text.contains("PRIVATE KEY"),
            "GET {path} shows a key: {text}"
        );
    }
    // The state file holds it, readable by its owner only.
    let state = std::fs::read_to_string(&state_file).expect("state file");
    assert!(
        state.contains(shop.key_line()),
        "the state file keeps the key"
    );
    let mode = std::fs::metadata(&state_file)
        .expect("state file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the state file is 0600");

    // Delete: the file's certificates again; a second delete is a 404.
    let (status, answer) = edge.call(ADMIN, "DELETE", "/config/certificates/shop", None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        served_serial(edge.tls, Some("shop.test")),
        files.default.serial
    );
    assert_eq!(
        served_serial(edge.tls, Some("x.wild.test")),
        files.default.serial
    );
    assert!(row(&edge.list(), "api", "shop").is_none());
    assert_eq!(get_host(edge.redirect, "shop.test", "/a", &[]).status, 400);
    let (status, answer) = edge.call(ADMIN, "DELETE", "/config/certificates/shop", None);
    assert_eq!(status, 404, "{answer}");
    let (_, audit) = edge.call(VIEWER, "GET", "/audit", None);
    assert_eq!(audit["entries"][0]["action"], "certificate_delete");
}

/// Garbage PEM, another certificate's key and an expired certificate are refused with 422
/// naming the field, and change nothing; a viewer and an operator cannot write (403); a
/// body without `key` is a 400 naming it.
#[test]
fn bad_uploads_and_other_roles_change_nothing() {
    let dir = TempDir::new("certs-bad");
    let files = file_certificates(dir.path());
    let ca = Ca::new("Upload CA");
    let good = Upload::new(&ca, dir.path(), "good", &["good.test"], 0x61, 30);
    let other = Upload::new(&ca, dir.path(), "other", &["other.test"], 0x62, 30);
    let expired = Upload::new(&ca, dir.path(), "old", &["good.test"], 0x63, -2);
    let origin = Origin::start("stable");
    let state_file = dir.path().join("state.json");
    let edge = start_edge(dir, &files, &origin, &state_file, None);
    let version = edge.version();

    let cases = [
        (
            json!({ "chain": "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n", "key": good.key }),
            "chain",
        ),
        (
            json!({ "chain": "no PEM at all", "key": good.key }),
            "chain",
        ),
        (json!({ "chain": good.chain, "key": "garbage" }), "key"),
        (json!({ "chain": good.chain, "key": other.key }), "key"),
        (
            json!({ "chain": expired.chain, "key": expired.key }),
            "chain",
        ),
    ];
    for (body, field) in &cases {
        edge.assert_refused("good", &body.to_string(), 422, field);
    }
    edge.assert_refused("bad%20name", &good.body(), 422, "name");
    let no_key = json!({ "chain": good.chain }).to_string();
    edge.assert_refused("good", &no_key, 400, "key");
    for token in [VIEWER, OPERATOR] {
        let (status, _) = edge.call(
            token,
            "PUT",
            "/config/certificates/good",
            Some(&good.body()),
        );
        assert_eq!(status, 403);
        let (status, _) = edge.call(token, "DELETE", "/config/certificates/good", None);
        assert_eq!(status, 403);
    }
    // Nothing changed: no new version, no upload listed, the file's certificate served.
    assert_eq!(edge.version(), version);
    assert!(edge.list().iter().all(|r| r["source"] != "api"));
    assert_eq!(
        served_serial(edge.tls, Some("good.test")),
        files.default.serial
    );
    // The good one goes through for the same name (so the refusals were about the PEM).
    assert_eq!(edge.upload("good", &good).0, 200);
    assert_eq!(served_serial(edge.tls, Some("good.test")), good.serial);
    // A second upload of the name replaces the first, audited with both.
    assert_eq!(edge.upload("good", &other).0, 200);
    assert_eq!(served_serial(edge.tls, Some("other.test")), other.serial);
    assert_eq!(
        served_serial(edge.tls, Some("good.test")),
        files.default.serial
    );
    let (_, audit) = edge.call(VIEWER, "GET", "/audit", None);
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "certificate_replace", "{audit}");
    assert!(
        entry["before"]
            .as_str()
            .is_some_and(|b| b.contains("good.test"))
            && entry["after"]
                .as_str()
                .is_some_and(|a| a.contains("other.test")),
        "{entry}"
    );
    // An operator and a viewer may read the list.
    for token in [VIEWER, OPERATOR] {
        let (status, body) = edge.call(token, "GET", "/config/certificates", None);
        assert_eq!(status, 200, "{body}");
    }
}

/// A restart keeps an upload (the state file, 0600) and serves it before any change.
#[test]
fn a_restart_keeps_the_upload() {
    let dir = TempDir::new("certs-restart");
    let files = file_certificates(dir.path());
    let ca = Ca::new("Upload CA");
    let kept = Upload::new(&ca, dir.path(), "kept", &["kept.test"], 0x71, 30);
    let origin = Origin::start("stable");
    let state_file = dir.path().join("state.json");
    let mut edge = start_edge(dir, &files, &origin, &state_file, None);
    assert_eq!(edge.upload("kept", &kept).0, 200);
    assert_eq!(served_serial(edge.tls, Some("kept.test")), kept.serial);

    edge.gateway.signal("KILL");
    edge.gateway.wait_status(Duration::from_secs(5));
    let dir = std::mem::replace(&mut edge.gateway.dir, TempDir::new("unused"));
    let config_path = edge.gateway.config_path.clone();
    let gateway = Gateway::start_with_file(dir, config_path, edge.gateway.addr);
    let edge = Edge { gateway, ..edge };
    assert_eq!(served_serial(edge.tls, Some("kept.test")), kept.serial);
    assert!(row(&edge.list(), "api", "kept").is_some());
    let mode = std::fs::metadata(&state_file)
        .expect("state file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A state whose certificate no longer parses starts all the same: warned about, listed
    // with why, and its names get the file's certificate.
    let mut edge = edge;
    edge.gateway.signal("KILL");
    edge.gateway.wait_status(Duration::from_secs(5));
    let text = std::fs::read_to_string(&state_file).expect("state");
    let mut state: Value = serde_json::from_str(&text).expect("JSON");
    state["certificates"]["kept"]["chain_pem"] = json!("-----BEGIN CERTIFICATE-----\nbroken\n");
    std::fs::write(&state_file, state.to_string()).expect("write state");
    let dir = std::mem::replace(&mut edge.gateway.dir, TempDir::new("unused"));
    let config_path = edge.gateway.config_path.clone();
    let gateway = Gateway::start_with_file(dir, config_path, edge.gateway.addr);
    let edge = Edge { gateway, ..edge };
    assert_eq!(
        served_serial(edge.tls, Some("kept.test")),
        files.default.serial
    );
    let (_, status) = edge.call(VIEWER, "GET", "/status", None);
    let warnings: Vec<&str> = status["overlay_warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("uploaded certificate \"kept\" is not served")),
        "{warnings:?}"
    );
    let list = edge.list();
    let kept_row = row(&list, "api", "kept").unwrap_or_else(|| panic!("kept in {list:?}"));
    assert!(kept_row["error"].is_string(), "{kept_row}");
}

/// Two nodes sharing Redis: an upload on A is served by B by SNI (the time it took is
/// printed, not bounded); a delete on B reaches A.
#[test]
fn an_upload_on_one_node_is_served_by_the_other() {
    let dir = TempDir::new("certs-redis");
    let redis = Redis::start(dir.path(), free_port());
    let files = file_certificates(dir.path());
    let ca = Ca::new("Upload CA");
    let shared = Upload::new(&ca, dir.path(), "shared", &["shared.test"], 0x81, 30);
    let origin = Origin::start("stable");
    let start = |name: &str| {
        let node_dir = TempDir::new(&format!("certs-node-{name}"));
        let state: PathBuf = node_dir.path().join("state.json");
        start_edge(node_dir, &files, &origin, &state, Some(redis.port))
    };
    let (a, b) = (start("a"), start("b"));
    wait_store_connected(&[a.admin, b.admin], VIEWER);
    assert_eq!(
        served_serial(b.tls, Some("shared.test")),
        files.default.serial
    );

    let (status, answer) = a.upload("shared", &shared);
    assert_eq!(status, 200, "{answer}");
    let sent = Instant::now();
    wait_until("node b serves the upload", READY_TIMEOUT, || {
        served_serial(b.tls, Some("shared.test")) == shared.serial
    });
    eprintln!(
        "upload on node a served by node b after {:?}",
        sent.elapsed()
    );
    assert!(row(&b.list(), "api", "shared").is_some());

    let (status, answer) = b.call(ADMIN, "DELETE", "/config/certificates/shared", None);
    assert_eq!(status, 200, "{answer}");
    let sent = Instant::now();
    wait_until("node a falls back to the file", READY_TIMEOUT, || {
        served_serial(a.tls, Some("shared.test")) == files.default.serial
    });
    eprintln!(
        "delete on node b applied by node a after {:?}",
        sent.elapsed()
    );
}
