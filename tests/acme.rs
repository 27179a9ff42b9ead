//! ACME end to end against Debian's Pebble (a real ACME server), which really validates the
//! challenges (no `PEBBLE_VA_ALWAYS_VALID`): it connects back to the gateway's redirect
//! listener for HTTP-01 and to its TLS listener for TLS-ALPN-01, as `localhost`. Pebble's own
//! HTTPS listener gets a certificate made here (its test CA is not packaged), given to the
//! gateway as `gateway.acme.ca_file`; the issued chain is checked by curl against Pebble's
//! issuing root, fetched from its management endpoint.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::pebble::{curl, pebble_counts, start_pebble, Pebble, PEBBLE_NAME};
use common::tls::{connect_with, Ca, KeyKind};
use common::*;

/// The name Pebble validates (see [`PEBBLE_NAME`]).
const NAME: &str = PEBBLE_NAME;

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().expect("addr")
}

/// The listeners of one ACME gateway.
struct Ports {
    plain: SocketAddr,
    tls: SocketAddr,
    redirect: SocketAddr,
    metrics: SocketAddr,
    admin: SocketAddr,
}

const TOKEN: &str = "acme-test-operator-token";

impl Ports {
    fn new() -> Ports {
        Ports {
            plain: addr(),
            tls: addr(),
            redirect: addr(),
            metrics: addr(),
            admin: addr(),
        }
    }
}

/// Starts a gateway whose TLS listener's only certificate is ACME's for [`NAME`].
fn start_gateway(
    ports: &Ports,
    pebble_directory: &str,
    ca_file: &Path,
    storage: &Path,
    acme_more: &str,
    origin: &Origin,
) -> Gateway {
    let dir = TempDir::new("acme-gw");
    let config = format!(
        "version: 1\nthreads: 2\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\n\
         grace_period_seconds: 5\ngraceful_shutdown_timeout_seconds: 1\n\
         gateway:\n  listen:\n    - \"{plain}\"\n\
         \x20   - {{ addr: \"{tls}\", tls: {{ acme: [\"{NAME}\"] }} }}\n\
         \x20   - {{ addr: \"{redirect}\", redirect_https: true, https_port: {tls_port} }}\n\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n\
         \x20 admin: {{ listen: \"{admin}\", token: \"{TOKEN}\" }}\n\
         \x20 acme:\n    directory: \"{pebble_directory}\"\n    email: ops@example.com\n\
         \x20   accept_terms: true\n    ca_file: \"{ca}\"\n    storage: \"{storage}\"\n\
         \x20   retry: 1s\n{acme_more}\
         \x20 groups:\n    stable: {{ servers: [\"{origin}\"] }}\n\
         \x20 routing:\n    cookie: uid\n    default: stable\n",
        d = dir.path().display(),
        plain = ports.plain,
        tls = ports.tls,
        tls_port = ports.tls.port(),
        redirect = ports.redirect,
        metrics = ports.metrics,
        admin = ports.admin,
        ca = ca_file.display(),
        storage = storage.display(),
        origin = origin.addr,
    );
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, config).expect("write config");
    Gateway::start_with_file(dir, config_path, ports.plain)
}

/// The serial (hex) the TLS listener serves for [`NAME`], once it serves one: waits (bounded)
/// for a handshake to succeed, and, with `other_than`, for a serial other than that one.
fn wait_for_serial(
    tls: SocketAddr,
    other_than: Option<&str>,
    gateway: &Gateway,
    pebble: &Pebble,
) -> String {
    let start = Instant::now();
    loop {
        if let Ok(stream) = connect_with(tls, Some(NAME), |_| {}) {
            let cert = stream.ssl().peer_certificate().expect("a certificate");
            let serial = cert
                .serial_number()
                .to_bn()
                .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
                .expect("serial");
            if other_than != Some(serial.as_str()) {
                return serial;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no (new) certificate served; gateway log:\n{}\npebble log:\n{}",
            gateway.log(),
            pebble.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A request over TLS to [`NAME`] verified by curl against Pebble's root (chain and name).
fn verified_get(tls: SocketAddr, root: &Path) -> String {
    curl(&[
        "--cacert",
        root.to_str().expect("utf-8"),
        "--resolve",
        &format!("{NAME}:{}:127.0.0.1", tls.port()),
        &format!("https://{NAME}:{}/", tls.port()),
    ])
}

/// `GET path` with `Host: NAME`.
fn get_host(addr: SocketAddr, path: &str) -> Response {
    Client::connect(addr).send_raw(
        format!("GET {path} HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn metric(metrics: SocketAddr, line_start: &str) -> Option<u64> {
    get(metrics, "/metrics", &[])
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

/// HTTP-01: the listener starts without a certificate (handshakes fail), Pebble validates
/// through the redirect listener, the issued chain is served without reload and verifies
/// against Pebble's root; the redirect listener still redirects everything else; the order
/// is counted, the certificate and account are stored.
#[test]
fn http01_issues_and_serves_a_verified_chain() {
    let ports = Ports::new();
    let work = TempDir::new("acme-http01");
    let pebble = start_pebble(work.path(), ports.redirect.port(), free_port());
    let origin = Origin::start("stable");
    let storage = work.path().join("acme");
    let gateway = start_gateway(
        &ports,
        &pebble.directory,
        &pebble.ca_file,
        &storage,
        "",
        &origin,
    );
    let serial = wait_for_serial(ports.tls, None, &gateway, &pebble);
    let root = work.path().join("pebble-root.pem");
    pebble.write_root(&root);
    assert_eq!(verified_get(ports.tls, &root), "stable");
    assert!(
        gateway
            .log()
            .contains(&format!("answering the http-01 challenge for {NAME}")),
        "log: {}",
        gateway.log()
    );
    // Everything but a challenge is still redirected; an unknown token is a 404.
    let redirected = get_host(ports.redirect, "/page");
    assert_eq!(redirected.status, 308);
    assert_eq!(
        redirected.header("location"),
        Some(format!("https://{NAME}:{}/page", ports.tls.port()).as_str())
    );
    let unknown = get_host(ports.redirect, "/.well-known/acme-challenge/nope");
    assert_eq!(unknown.status, 404);
    assert_eq!(
        metric(ports.metrics, "gateway_acme_orders_total{result=\"ok\"}"),
        Some(1)
    );
    assert!(storage.join("account.json").is_file());
    let stored = std::fs::read_to_string(storage.join(format!("{NAME}.crt"))).expect("stored");
    assert!(stored.matches("BEGIN CERTIFICATE").count() >= 2, "{stored}");
    assert!(!serial.is_empty());
}

/// TLS-ALPN-01: Pebble validates through the TLS listener (`acme-tls/1`) and the chain is
/// served and verifies.
#[test]
fn tls_alpn01_issues_through_the_tls_listener() {
    let ports = Ports::new();
    let work = TempDir::new("acme-alpn");
    let pebble = start_pebble(work.path(), free_port(), ports.tls.port());
    let origin = Origin::start("stable");
    let gateway = start_gateway(
        &ports,
        &pebble.directory,
        &pebble.ca_file,
        &work.path().join("acme"),
        "    challenge: tls-alpn-01\n",
        &origin,
    );
    wait_for_serial(ports.tls, None, &gateway, &pebble);
    let root = work.path().join("pebble-root.pem");
    pebble.write_root(&root);
    assert_eq!(verified_get(ports.tls, &root), "stable");
    // Pebble's HTTP-01 port is closed here: only the TLS listener could have answered.
    assert!(
        gateway
            .log()
            .contains(&format!("answering the tls-alpn-01 challenge for {NAME}")),
        "log: {}",
        gateway.log()
    );
}

/// A `renew_before` longer than the certificate's life forces renewal: a new certificate
/// (another serial) is served by the same process, without reload, and still verifies.
/// Pebble validates HTTP-01 on the plaintext proxy listener here.
#[test]
fn renewal_serves_a_new_certificate_without_reload() {
    let ports = Ports::new();
    let work = TempDir::new("acme-renew");
    // HTTP-01 through the plaintext proxy listener this time (the redirect one in the test
    // above): both answer the challenge.
    let pebble = start_pebble(work.path(), ports.plain.port(), free_port());
    let origin = Origin::start("stable");
    let gateway = start_gateway(
        &ports,
        &pebble.directory,
        &pebble.ca_file,
        &work.path().join("acme"),
        "    renew_before: 36500d\n",
        &origin,
    );
    let first = wait_for_serial(ports.tls, None, &gateway, &pebble);
    let second = wait_for_serial(ports.tls, Some(&first), &gateway, &pebble);
    assert_ne!(first, second);
    let root = work.path().join("pebble-root.pem");
    pebble.write_root(&root);
    assert_eq!(verified_get(ports.tls, &root), "stable");
    assert!(
        metric(ports.metrics, "gateway_acme_orders_total{result=\"ok\"}").unwrap_or(0) >= 2,
        "{}",
        get(ports.metrics, "/metrics", &[]).text()
    );
}

/// A restart re-uses the stored certificate: with the CA gone, the new process serves the
/// same serial at once and orders nothing (no order counted, neither ok nor failed).
#[test]
fn restart_reuses_the_stored_certificate() {
    let ports = Ports::new();
    let work = TempDir::new("acme-restart");
    let storage = work.path().join("acme");
    let origin = Origin::start("stable");
    let (directory, ca_file, serial) = {
        let pebble = start_pebble(work.path(), ports.redirect.port(), free_port());
        let gateway = start_gateway(
            &ports,
            &pebble.directory,
            &pebble.ca_file,
            &storage,
            "",
            &origin,
        );
        let serial = wait_for_serial(ports.tls, None, &gateway, &pebble);
        (pebble.directory.clone(), pebble.ca_file.clone(), serial)
        // The gateway and Pebble stop here.
    };
    let gateway = start_gateway(&ports, &directory, &ca_file, &storage, "", &origin);
    let served = connect_with(ports.tls, Some(NAME), |_| {})
        .expect("the stored certificate is served from the start");
    let again = served
        .ssl()
        .peer_certificate()
        .expect("a certificate")
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
        .expect("serial");
    assert_eq!(again, serial);
    assert!(
        gateway.log().contains("serving the stored certificate"),
        "log: {}",
        gateway.log()
    );
    for result in ["ok", "failed"] {
        let line = format!("gateway_acme_orders_total{{result=\"{result}\"}}");
        assert_eq!(metric(ports.metrics, &line).unwrap_or(0), 0, "{line}");
    }
}

/// With the CA unreachable the listener still starts; handshakes for the name fail (logged
/// once), and the failed orders are logged, counted, retried and shown in `/status`.
#[test]
fn failures_are_logged_counted_and_shown() {
    let ports = Ports::new();
    let work = TempDir::new("acme-fail");
    let ca = Ca::new("unused-ca");
    let ca_file = work.path().join("ca.pem");
    ca.write_cert(&ca_file);
    let origin = Origin::start("stable");
    // Nothing listens on this port: every order fails to reach the directory.
    let directory = format!("https://{NAME}:{}/dir", free_port());
    let gateway = start_gateway(
        &ports,
        &directory,
        &ca_file,
        &work.path().join("acme"),
        "",
        &origin,
    );
    for _ in 0..3 {
        assert!(connect_with(ports.tls, Some(NAME), |_| {}).is_err());
    }
    let start = Instant::now();
    let status = loop {
        let status = get(
            ports.admin,
            "/status",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        );
        assert_eq!(status.status, 200);
        let value: serde_json::Value = serde_json::from_str(&status.text()).expect("json");
        let acme = value["acme"][0].clone();
        if acme["failures"].as_u64().unwrap_or(0) >= 2 {
            break acme;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no retried failure in /status: {value}\nlog:\n{}",
            gateway.log()
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["state"], "waiting", "{status}");
    assert_eq!(status["names"][0], NAME, "{status}");
    assert!(
        status["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{status}"
    );
    assert!(
        metric(
            ports.metrics,
            "gateway_acme_orders_total{result=\"failed\"}"
        )
        .unwrap_or(0)
            >= 2
    );
    let log = gateway.log();
    assert!(
        log.contains("ordering a certificate for localhost failed"),
        "{log}"
    );
    assert_eq!(
        log.matches("its ACME certificate is not issued yet")
            .count(),
        1,
        "{log}"
    );
}

/// `-t` refuses ACME names without `gateway.acme`, terms not accepted, a missing `ca_file` and
/// a name in two listeners' different name sets, naming the key.
#[test]
fn acme_config_errors_name_the_key() {
    let dir = TempDir::new("acme-t");
    let cases = [
        (
            "  listen:\n    - { addr: \"127.0.0.1:1\", tls: { acme: [a.example] } }\n",
            "gateway.listen[0].tls.acme",
        ),
        (
            "  listen:\n    - { addr: \"127.0.0.1:1\", tls: { acme: [a.example] } }\n\
             \x20 acme: { directory: \"https://ca.test/dir\", accept_terms: false }\n",
            "gateway.acme.accept_terms",
        ),
        (
            "  listen:\n    - { addr: \"127.0.0.1:1\", tls: { acme: [a.example] } }\n\
             \x20 acme: { directory: \"https://ca.test/dir\", accept_terms: true, ca_file: missing.pem }\n",
            "gateway.acme.ca_file",
        ),
        (
            "  listen:\n    - { addr: \"127.0.0.1:1\", tls: { acme: [a.example, b.example] } }\n\
             \x20   - { addr: \"127.0.0.1:3\", tls: { acme: [b.example] } }\n\
             \x20 acme: { directory: \"https://ca.test/dir\", accept_terms: true }\n",
            "gateway.listen[1].tls.acme",
        ),
    ];
    for (i, (listen, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.yaml"));
        std::fs::write(
            &path,
            format!(
                "version: 1\ngateway:\n{listen}  groups:\n    stable: {{ servers: [\"127.0.0.1:2\"] }}\n\
                 \x20 routing:\n    default: stable\n"
            ),
        )
        .expect("write");
        let out = run_binary(&["-t", "-c", path.to_str().expect("utf-8")]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{key}: accepted");
        assert!(err.contains(key), "{key}: {err}");
    }
}

/// ACME beside uploaded certificates (`PUT /config/certificates/{name}`): while an ACME name
/// has no certificate (the CA unreachable), an upload for it is served; once ACME has issued
/// one, ACME's wins over an upload for the same name. `GET /config/certificates` lists both,
/// the ACME one with its state and, once issued, its issuer.
#[test]
fn an_upload_serves_an_acme_name_until_acme_issues_it() {
    let work = TempDir::new("acme-upload");
    let ca = Ca::new("Upload CA");
    let issued = ca.issue(work.path(), "up", &[NAME], KeyKind::EcdsaP256, 0x5A, 30);
    let body = serde_json::json!({
        "chain": std::fs::read_to_string(&issued.cert).expect("chain"),
        "key": std::fs::read_to_string(&issued.key).expect("key"),
    })
    .to_string();
    let served = |tls: SocketAddr| {
        let stream = connect_with(tls, Some(NAME), |_| {}).expect("TLS handshake");
        let cert = stream.ssl().peer_certificate().expect("a certificate");
        cert.serial_number()
            .to_bn()
            .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
            .expect("serial")
    };
    let list = |admin_addr: SocketAddr| -> Vec<serde_json::Value> {
        let r = admin(admin_addr, "GET", "/config/certificates", Some(TOKEN), None);
        assert_eq!(r.status, 200, "{}", r.text());
        let body: serde_json::Value = serde_json::from_str(&r.text()).expect("json");
        body["certificates"].as_array().cloned().expect("a list")
    };
    let origin = Origin::start("stable");

    // The CA unreachable: the upload serves the ACME name.
    let ca_file = work.path().join("ca.pem");
    ca.write_cert(&ca_file);
    let unreachable = format!("https://{NAME}:{}/dir", free_port());
    let ports = Ports::new();
    let gateway = start_gateway(
        &ports,
        &unreachable,
        &ca_file,
        &work.path().join("acme-none"),
        "",
        &origin,
    );
    assert!(connect_with(ports.tls, Some(NAME), |_| {}).is_err());
    let r = admin(
        ports.admin,
        "PUT",
        "/config/certificates/up",
        Some(TOKEN),
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(served(ports.tls), issued.serial);
    let rows = list(ports.admin);
    let acme = rows
        .iter()
        .find(|r| r["source"] == "acme")
        .expect("acme row");
    assert_eq!(
        (&acme["name"], &acme["state"]),
        (&serde_json::json!(NAME), &serde_json::json!("waiting"))
    );
    assert!(acme["issuer"].is_null(), "{acme}");
    assert!(rows
        .iter()
        .any(|r| r["source"] == "api" && r["name"] == "up"));
    drop(gateway);

    // Pebble issues: ACME's certificate beats the upload for its name.
    let ports = Ports::new();
    let pebble = start_pebble(work.path(), ports.redirect.port(), free_port());
    let gateway = start_gateway(
        &ports,
        &pebble.directory,
        &pebble.ca_file,
        &work.path().join("acme"),
        "",
        &origin,
    );
    let acme_serial = wait_for_serial(ports.tls, None, &gateway, &pebble);
    let r = admin(
        ports.admin,
        "PUT",
        "/config/certificates/up",
        Some(TOKEN),
        Some(&body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(served(ports.tls), acme_serial);
    assert_ne!(acme_serial, issued.serial);
    let rows = list(ports.admin);
    let acme = rows
        .iter()
        .find(|r| r["source"] == "acme")
        .expect("acme row");
    assert_eq!(acme["state"], "issued", "{acme}");
    assert!(
        acme["issuer"]
            .as_str()
            .is_some_and(|i| i.contains("Pebble")),
        "{acme}"
    );
    assert!(acme["days_left"].as_i64().is_some_and(|d| d >= 0), "{acme}");
}

/// `SET key value PX ttl_ms` in the test's Redis.
fn redis_set(redis: &Redis, key: &str, value: &str, ttl_ms: u64) {
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_connection().expect("connect to redis");
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("PX")
        .arg(ttl_ms)
        .query(&mut conn)
        .expect("SET");
}

/// `gateway.store` for [`start_gateway`]'s `acme_more` (it ends the `acme` block and adds the
/// store beside it).
fn store_yaml(redis: &Redis) -> String {
    format!(
        "  store: {{ redis: \"{}\", prefix: \"acme-t:\", timeout: 1s }}\n",
        redis.url()
    )
}

/// The serial of the certificate served for [`NAME`] now, if a handshake succeeds.
fn served_serial(tls: SocketAddr) -> Option<String> {
    let stream = connect_with(tls, Some(NAME), |_| {}).ok()?;
    let cert = stream.ssl().peer_certificate()?;
    cert.serial_number()
        .to_bn()
        .ok()
        .and_then(|bn| bn.to_hex_str().ok().map(|s| s.to_string()))
}

/// `/status` → `acme[0]`.
fn acme_status(admin: SocketAddr) -> serde_json::Value {
    let status = get(
        admin,
        "/status",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(status.status, 200);
    let value: serde_json::Value = serde_json::from_str(&status.text()).expect("json");
    value["acme"][0].clone()
}

fn orders(metrics: SocketAddr, result: &str) -> u64 {
    metric(
        metrics,
        &format!("gateway_acme_orders_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0)
}

/// Two nodes (`a`, `b`) with Redis sharing one Pebble, one origin and the store.
struct TwoNodes {
    work: TempDir,
    redis: Redis,
    pebble: Pebble,
    origin: Origin,
    a: Ports,
    b: Ports,
}

impl TwoNodes {
    /// Pebble validates on node A's listeners only (HTTP-01 on its redirect listener,
    /// TLS-ALPN-01 on its TLS listener): when B orders, A answers from what B published.
    fn new(tag: &str) -> TwoNodes {
        let work = TempDir::new(tag);
        let redis = Redis::start(work.path(), free_port());
        let (a, b) = (Ports::new(), Ports::new());
        let pebble = start_pebble(work.path(), a.redirect.port(), a.tls.port());
        TwoNodes {
            redis,
            pebble,
            origin: Origin::start("stable"),
            a,
            b,
            work,
        }
    }

    /// A node on `ports` with its own folder `storage`; `acme_more` as in [`start_gateway`].
    fn node(&self, ports: &Ports, storage: &str, acme_more: &str) -> Gateway {
        start_gateway(
            ports,
            &self.pebble.directory,
            &self.pebble.ca_file,
            &self.work.path().join(storage),
            &format!("{acme_more}{}", store_yaml(&self.redis)),
            &self.origin,
        )
    }

    /// Both nodes serve the same certificate, verified against Pebble's root; its serial.
    fn both_serve(&self, gateway_a: &Gateway, gateway_b: &Gateway, started: Instant) -> String {
        let serial_a = wait_for_serial(self.a.tls, None, gateway_a, &self.pebble);
        let serial_b = wait_for_serial(self.b.tls, None, gateway_b, &self.pebble);
        eprintln!(
            "both nodes serve the issued certificate {:?} after start",
            started.elapsed()
        );
        assert_eq!(serial_a, serial_b, "both nodes serve the same certificate");
        let root = self.work.path().join("pebble-root.pem");
        self.pebble.write_root(&root);
        assert_eq!(verified_get(self.a.tls, &root), "stable");
        assert_eq!(verified_get(self.b.tls, &root), "stable");
        // Exactly one order: Pebble issued one certificate and holds one order, and the
        // nodes counted one between them.
        assert_eq!(
            pebble_counts(&self.pebble),
            (1, 1),
            "pebble log:\n{}",
            self.pebble.log()
        );
        let (a, b) = (self.a.metrics, self.b.metrics);
        assert_eq!(orders(a, "ok") + orders(b, "ok"), 1);
        assert_eq!(orders(a, "failed") + orders(b, "failed"), 0);
        serial_a
    }
}

/// Two nodes with Redis and the same `tls.acme` names start together: one order is made
/// (Pebble issues one certificate; the nodes' order counters sum to one), both serve the same
/// certificate, verified against Pebble's root. A node restarted with an empty folder serves
/// it from Redis without ordering.
#[test]
fn two_nodes_with_redis_order_once_and_both_serve() {
    let nodes = TwoNodes::new("acme-two");
    let started = Instant::now();
    let gateway_a = nodes.node(&nodes.a, "acme-a", "");
    let gateway_b = nodes.node(&nodes.b, "acme-b", "");
    let serial = nodes.both_serve(&gateway_a, &gateway_b, started);
    let ordered_by_a = orders(nodes.a.metrics, "ok") == 1;
    eprintln!(
        "the order was made by {}",
        if ordered_by_a {
            "node A (Pebble validated it directly)"
        } else {
            "node B (A answered from Redis)"
        }
    );
    let follower = if ordered_by_a { &gateway_b } else { &gateway_a };
    assert!(
        follower.log().contains("from the store"),
        "log:\n{}",
        follower.log()
    );
    assert_eq!(acme_status(nodes.a.admin)["storage"], "redis");

    // Restart B with an empty folder: the certificate comes from Redis, nothing is ordered.
    drop(gateway_b);
    let restarted = Instant::now();
    let gateway_b = nodes.node(&nodes.b, "acme-b-empty", "");
    let again = wait_for_serial(nodes.b.tls, None, &gateway_b, &nodes.pebble);
    eprintln!(
        "a restarted node with an empty folder serves the stored certificate {:?} after start",
        restarted.elapsed()
    );
    assert_eq!(again, serial);
    assert_eq!(
        orders(nodes.b.metrics, "ok") + orders(nodes.b.metrics, "failed"),
        0
    );
    assert_eq!(pebble_counts(&nodes.pebble).0, 1, "still one certificate");
}

/// TLS-ALPN-01 across nodes: while a lease (held by the test) is taken, both nodes wait and
/// say who orders in `/status`; handed to B, the lease lets B order, and A, the node Pebble
/// validates, answers with the validation certificate B published in Redis. With Redis down
/// the nodes keep serving, and a node that has no certificate waits for the store (in
/// `/status`, logged, counted) instead of ordering; once Redis is back it serves the stored
/// certificate, still without an order.
#[test]
fn the_lease_holder_orders_and_every_node_answers_its_challenge() {
    let mut nodes = TwoNodes::new("acme-lease");
    let alpn = "    challenge: tls-alpn-01\n";
    let lease = format!("acme-t:acme:lease:{NAME}");
    redis_set(&nodes.redis, &lease, "the-test", 60_000);
    let started = Instant::now();
    let gateway_a = nodes.node(&nodes.a, "acme-a", alpn);
    let gateway_b = nodes.node(&nodes.b, "acme-b", alpn);
    for ports in [&nodes.a, &nodes.b] {
        wait_until(
            "waiting for the lease holder",
            Duration::from_secs(60),
            || acme_status(ports.admin)["ordering_node"] == "the-test",
        );
    }
    let node_b = acme_status(nodes.b.admin)["node"]
        .as_str()
        .expect("node id")
        .to_string();
    redis_set(&nodes.redis, &lease, &node_b, 30_000);
    let serial = nodes.both_serve(&gateway_a, &gateway_b, started);
    assert_eq!(orders(nodes.b.metrics, "ok"), 1, "B held the lease");
    let (log_a, log_b) = (gateway_a.log(), gateway_b.log());
    assert!(log_a.contains("from the store"), "log:\n{log_a}");
    assert!(!log_a.contains("answering the tls-alpn-01"), "{log_a}");
    assert!(log_b.contains("answering the tls-alpn-01"), "{log_b}");

    // Redis down: both keep serving; a new node with nothing stored waits instead of ordering.
    nodes.redis.kill();
    assert_eq!(served_serial(nodes.a.tls).as_deref(), Some(serial.as_str()));
    assert_eq!(served_serial(nodes.b.tls).as_deref(), Some(serial.as_str()));
    let c = Ports::new();
    let gateway_c = nodes.node(&c, "acme-c", alpn);
    let waited = wait_until("a store error in /status", Duration::from_secs(60), || {
        acme_status(c.admin)["store_error"].is_string()
            && metric(c.metrics, "gateway_acme_store_errors_total").unwrap_or(0) >= 2
    });
    eprintln!("node C reports the store error {waited:?} after start");
    let status = acme_status(c.admin);
    assert_eq!(status["state"], "waiting", "{status}");
    assert!(served_serial(c.tls).is_none());
    assert!(
        gateway_c.log().contains("ordering waits for the store"),
        "log:\n{}",
        gateway_c.log()
    );
    // Redis back (its append-only file kept the data): C serves the stored certificate.
    let _redis = Redis::start(nodes.work.path(), nodes.redis.port);
    let back = Instant::now();
    let served = wait_for_serial(c.tls, None, &gateway_c, &nodes.pebble);
    eprintln!(
        "node C serves the stored certificate {:?} after Redis is back",
        back.elapsed()
    );
    assert_eq!(served, serial);
    wait_until("the store error cleared", Duration::from_secs(30), || {
        acme_status(c.admin)["store_error"].is_null()
    });
    assert_eq!(orders(c.metrics, "ok") + orders(c.metrics, "failed"), 0);
    assert_eq!(pebble_counts(&nodes.pebble).0, 1, "still one certificate");
    // The nodes that were following the store follow it again (a new connection).
    wait_until("A follows the store again", Duration::from_secs(30), || {
        gateway_a.log().contains("the store answers again")
    });
}

/// A certificate whose storage fails after issuance is served from memory, its storage is
/// retried (shown in `/status`, counted) and it is not ordered again; once the folder is
/// writable it is stored.
#[test]
fn storage_failure_after_issuance_does_not_order_again() {
    let ports = Ports::new();
    let work = TempDir::new("acme-store-fail");
    let pebble = start_pebble(work.path(), ports.redirect.port(), free_port());
    let origin = Origin::start("stable");
    let storage = work.path().join("acme");
    // A folder where the chain file goes: the account and the key are written, the chain is not.
    let blocker = storage.join(format!("{NAME}.crt"));
    std::fs::create_dir_all(&blocker).expect("blocker");
    let gateway = start_gateway(
        &ports,
        &pebble.directory,
        &pebble.ca_file,
        &storage,
        "",
        &origin,
    );
    let serial = wait_for_serial(ports.tls, None, &gateway, &pebble);
    wait_until("storage retried", Duration::from_secs(60), || {
        metric(ports.metrics, "gateway_acme_store_errors_total").unwrap_or(0) >= 3
    });
    let status = acme_status(ports.admin);
    assert_eq!(status["state"], "issued", "{status}");
    assert!(status["store_error"].is_string(), "{status}");
    // `/status` writes the serial without leading zeros, OpenSSL with them.
    let same = |s: &str| s.trim_start_matches('0').to_lowercase();
    assert_eq!(
        status["serial"].as_str().map(same),
        Some(same(&serial)),
        "{status}"
    );
    assert_eq!(orders(ports.metrics, "ok"), 1);
    assert_eq!(orders(ports.metrics, "failed"), 0);
    assert_eq!(pebble_counts(&pebble).0, 1);
    std::fs::remove_dir(&blocker).expect("unblock");
    let stored = wait_until("stored", Duration::from_secs(30), || blocker.is_file());
    eprintln!("stored {stored:?} after the folder became writable");
    wait_until("the store error cleared", Duration::from_secs(30), || {
        acme_status(ports.admin)["store_error"].is_null()
    });
    assert_eq!(served_serial(ports.tls), Some(serial));
    assert_eq!(orders(ports.metrics, "ok"), 1);
    assert_eq!(pebble_counts(&pebble).0, 1);
}

/// Runs one Redis command in the test's Redis (as its default user).
fn redis_cmd(redis: &Redis, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_connection().expect("connect to redis");
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn).expect("redis command")
}

/// With a store, a certificate whose write to Redis is refused after issuance (an ACL lets
/// the node take the lease and publish challenges but not write certificates) is served from
/// memory, the failure is shown and counted, the write retried — and nothing is ordered
/// again. Once Redis accepts the write, the certificate is in Redis and a second node serves it.
#[test]
fn a_refused_store_write_does_not_order_again() {
    let mut nodes = TwoNodes::new("acme-store-refused");
    // Reads everywhere; writes only where an order needs them, not the certificates.
    redis_cmd(
        &nodes.redis,
        &[
            "ACL",
            "SETUSER",
            "default",
            "resetkeys",
            "%R~*",
            "~acme-t:acme:lease:*",
            "~acme-t:acme:http-01",
            "~acme-t:acme:tls-alpn-01",
            "~acme-t:acme:account",
        ],
    );
    let gateway_a = nodes.node(&nodes.a, "acme-a", "");
    let serial = wait_for_serial(nodes.a.tls, None, &gateway_a, &nodes.pebble);
    wait_until("the write retried", Duration::from_secs(60), || {
        metric(nodes.a.metrics, "gateway_acme_store_errors_total").unwrap_or(0) >= 3
    });
    let status = acme_status(nodes.a.admin);
    assert_eq!(status["state"], "issued", "{status}");
    assert!(
        status["store_error"]
            .as_str()
            .is_some_and(|e| e.contains("NOPERM") || e.contains("no permissions")),
        "{status}"
    );
    assert_eq!(orders(nodes.a.metrics, "ok"), 1);
    assert_eq!(orders(nodes.a.metrics, "failed"), 0);
    assert_eq!(pebble_counts(&nodes.pebble).0, 1);
    let cert_key = format!("acme-t:acme:cert:{NAME}");
    assert_eq!(
        redis_cmd(&nodes.redis, &["EXISTS", &cert_key]),
        redis::Value::Int(0)
    );
    // Writes allowed again: stored at the next retry, the error cleared; B serves it.
    redis_cmd(&nodes.redis, &["ACL", "SETUSER", "default", "allkeys"]);
    let stored = wait_until("stored in Redis", Duration::from_secs(30), || {
        redis_cmd(&nodes.redis, &["EXISTS", &cert_key]) == redis::Value::Int(1)
    });
    eprintln!("stored {stored:?} after Redis accepted writes");
    wait_until("the store error cleared", Duration::from_secs(30), || {
        acme_status(nodes.a.admin)["store_error"].is_null()
    });
    let gateway_b = nodes.node(&nodes.b, "acme-b", "");
    let served = wait_for_serial(nodes.b.tls, None, &gateway_b, &nodes.pebble);
    assert_eq!(served, serial);
    assert_eq!(
        orders(nodes.a.metrics, "ok") + orders(nodes.b.metrics, "ok"),
        1
    );
    assert_eq!(
        pebble_counts(&nodes.pebble).0,
        1,
        "one certificate issued in all"
    );
    nodes.redis.kill();
}

/// A certificate a node ordered into its folder before `gateway.store` was configured is
/// offered to Redis when Redis holds none, so a second node serves it instead of ordering.
#[test]
fn a_folder_certificate_from_before_the_store_is_shared() {
    let nodes = TwoNodes::new("acme-migrate");
    let serial = {
        let alone = start_gateway(
            &nodes.a,
            &nodes.pebble.directory,
            &nodes.pebble.ca_file,
            &nodes.work.path().join("acme-a"),
            "",
            &nodes.origin,
        );
        wait_for_serial(nodes.a.tls, None, &alone, &nodes.pebble)
    };
    let gateway_a = nodes.node(&nodes.a, "acme-a", "");
    assert_eq!(served_serial(nodes.a.tls).as_deref(), Some(serial.as_str()));
    let cert_key = format!("acme-t:acme:cert:{NAME}");
    let offered = wait_until("offered to Redis", Duration::from_secs(30), || {
        redis_cmd(&nodes.redis, &["EXISTS", &cert_key]) == redis::Value::Int(1)
    });
    eprintln!("the folder certificate is in Redis {offered:?} after A started");
    let gateway_b = nodes.node(&nodes.b, "acme-b", "");
    let served = wait_for_serial(nodes.b.tls, None, &gateway_b, &nodes.pebble);
    assert_eq!(served, serial);
    assert!(
        gateway_a.log().contains("is now in the store"),
        "log:\n{}",
        gateway_a.log()
    );
    assert_eq!(
        orders(nodes.a.metrics, "ok") + orders(nodes.b.metrics, "ok"),
        0
    );
    assert_eq!(
        pebble_counts(&nodes.pebble).0,
        1,
        "one certificate issued in all"
    );
}

const API_ADMIN: &str = "acme-api-admin-token";
const API_OPERATOR: &str = "acme-api-operator-token";

/// Starts a gateway whose TLS listener has no `tls.acme`, only the file certificate `file`
/// (for [`NAME`]): a plaintext listener (`ports.plain`), the TLS one, an admin API with an
/// admin and an operator token and the state file `state_file`, and, with `acme`
/// (`(directory, ca_file, storage, more)`), `gateway.acme`.
fn start_api_gateway(
    ports: &Ports,
    acme: Option<(&str, &Path, &Path, &str)>,
    file: &common::tls::Issued,
    state_file: &Path,
    origin: &Origin,
) -> Gateway {
    let dir = TempDir::new("acme-api-gw");
    let acme = acme
        .map(|(directory, ca, storage, more)| {
            format!(
                "  acme:\n    directory: \"{directory}\"\n    email: ops@example.com\n\
                 \x20   accept_terms: true\n    ca_file: \"{ca}\"\n    storage: \"{storage}\"\n\
                 \x20   retry: 1s\n{more}",
                ca = ca.display(),
                storage = storage.display(),
            )
        })
        .unwrap_or_default();
    let config = format!(
        "version: 1\nthreads: 2\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\n\
         grace_period_seconds: 5\ngraceful_shutdown_timeout_seconds: 1\n\
         gateway:\n  listen:\n    - \"{plain}\"\n\
         \x20   - {{ addr: \"{tls}\", tls: {{ certificates: [{{ cert: \"{cert}\", key: \"{key}\" }}] }} }}\n\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n\
         \x20 admin:\n    listen: \"{admin}\"\n    token: \"{API_ADMIN}\"\n\
         \x20   state_file: \"{state}\"\n\
         \x20   tokens:\n      - {{ name: ops, token: \"{API_OPERATOR}\", role: operator }}\n\
         {acme}\
         \x20 groups:\n    stable: {{ servers: [\"{origin}\"] }}\n\
         \x20 routing:\n    cookie: uid\n    default: stable\n",
        d = dir.path().display(),
        plain = ports.plain,
        tls = ports.tls,
        cert = file.cert.display(),
        key = file.key.display(),
        metrics = ports.metrics,
        admin = ports.admin,
        state = state_file.display(),
        origin = origin.addr,
    );
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, config).expect("write config");
    Gateway::start_with_file(dir, config_path, ports.plain)
}

/// An admin API call: status and JSON body.
fn api(
    admin: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let r = common::admin(admin, method, path, Some(token), body);
    let value = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, value)
}

/// The row of `GET /config/certificates` named `name`, when listed.
fn listed(admin: SocketAddr, name: &str) -> Option<serde_json::Value> {
    let (status, list) = api(admin, API_ADMIN, "GET", "/config/certificates", None);
    assert_eq!(status, 200, "{list}");
    list["certificates"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|row| row["name"] == name)
        .cloned()
}

/// Waits (bounded) until the TLS listener serves [`NAME`] the certificate `serial` (or, with
/// `other_than`, any serial but that one); returns the serial.
fn wait_served(
    tls: SocketAddr,
    want: Option<&str>,
    other_than: Option<&str>,
    gw: &Gateway,
) -> String {
    let start = Instant::now();
    loop {
        if let Ok(stream) = connect_with(tls, Some(NAME), |_| {}) {
            let serial = stream
                .ssl()
                .peer_certificate()
                .and_then(|c| c.serial_number().to_bn().ok())
                .and_then(|bn| {
                    bn.to_hex_str()
                        .ok()
                        .map(|s| s.trim_start_matches('0').to_string())
                })
                .unwrap_or_default();
            if want.is_none_or(|w| w == serial) && other_than != Some(serial.as_str()) {
                return serial;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the expected certificate (want {want:?}, other than {other_than:?}) is not served; log:\n{}",
            gw.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Requests an ACME certificate for [`NAME`] through the API on a gateway whose TLS listener
/// has only a file certificate for it, and checks it is issued by `challenge` (HTTP-01 through
/// the plaintext listener, or TLS-ALPN-01 through the TLS listener), served by SNI (verified
/// against Pebble's root), listed as issued and shown in `/status`. Returns the gateway, the
/// issued serial and the file certificate's.
struct Requested {
    ports: Ports,
    work: TempDir,
    pebble: Pebble,
    origin: Origin,
    file: common::tls::Issued,
    state_file: PathBuf,
    storage: PathBuf,
    more: &'static str,
    gateway: Gateway,
    serial: String,
}

fn request_through_the_api(stem: &str, more: &'static str, alpn: bool) -> Requested {
    let ports = Ports::new();
    let work = TempDir::new(stem);
    let pebble = if alpn {
        start_pebble(work.path(), free_port(), ports.tls.port())
    } else {
        start_pebble(work.path(), ports.plain.port(), free_port())
    };
    let origin = Origin::start("stable");
    let file = Ca::new("file-ca").issue(work.path(), "file", &[NAME], KeyKind::EcdsaP256, 0x51, 30);
    let state_file = work.path().join("state.json");
    let storage = work.path().join("acme");
    let gateway = start_api_gateway(
        &ports,
        Some((&pebble.directory, &pebble.ca_file, &storage, more)),
        &file,
        &state_file,
        &origin,
    );
    // Before any request the file's certificate is served.
    wait_served(ports.tls, Some(&file.serial), None, &gateway);
    let body = format!(r#"{{"acme": ["{NAME}"]}}"#);
    let (status, answer) = api(
        ports.admin,
        API_OPERATOR,
        "PUT",
        "/config/certificates/shop",
        Some(&body),
    );
    assert_eq!(status, 403, "an operator cannot request: {answer}");
    let asked = Instant::now();
    let (status, answer) = api(
        ports.admin,
        API_ADMIN,
        "PUT",
        "/config/certificates/shop",
        Some(&body),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["certificate"]["source"], "acme", "{answer}");
    let serial = wait_served(ports.tls, None, Some(&file.serial), &gateway);
    eprintln!(
        "requested through the API: issued and served {:?} after the PUT",
        asked.elapsed()
    );
    let root = work.path().join("pebble-root.pem");
    pebble.write_root(&root);
    assert_eq!(verified_get(ports.tls, &root), "stable");
    let challenge = if alpn { "tls-alpn-01" } else { "http-01" };
    assert!(
        gateway
            .log()
            .contains(&format!("answering the {challenge} challenge for {NAME}")),
        "log: {}",
        gateway.log()
    );
    // Listed as issued (the status follows the serving by a moment: polled).
    let start = Instant::now();
    let row = loop {
        let row = listed(ports.admin, "shop").expect("the request is listed");
        if row["state"] == "issued" {
            break row;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{row}");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(row["source"], "acme");
    assert_eq!(row["names"], serde_json::json!([NAME]));
    assert_eq!(row["by"], "admin", "{row}");
    assert!(row["days_left"].as_i64().is_some_and(|d| d >= 1), "{row}");
    assert!(
        row["issuer"].as_str().is_some_and(|i| !i.is_empty()),
        "{row}"
    );
    assert!(row["not_after"].is_string(), "{row}");
    assert!(row.get("key").is_none(), "{row}");
    // /status shows it among the ACME certificates, with its request.
    let (_, acme) = api(ports.admin, API_ADMIN, "GET", "/status", None);
    assert!(
        acme["acme"].as_array().is_some_and(|all| all
            .iter()
            .any(|s| s["requests"] == serde_json::json!(["shop"]) && s["state"] == "issued")),
        "{acme}"
    );
    Requested {
        ports,
        work,
        pebble,
        origin,
        file,
        state_file,
        storage,
        more,
        gateway,
        serial,
    }
}

/// An ACME certificate requested through the API (HTTP-01 answered on the plaintext listener;
/// the TLS listener has no `tls.acme`): issued, served by SNI and verified, listed; an upload
/// under its name is refused (409); a restart keeps the request and serves the stored
/// certificate from the folder without ordering; deleted, the name falls back to the file's
/// certificate and the request is no longer listed.
#[test]
fn an_api_request_is_issued_served_kept_and_deleted() {
    let r = request_through_the_api("acme-api", "", false);
    // A good upload under the request's name is refused: the name is taken.
    let upload = serde_json::json!({
        "chain": std::fs::read_to_string(&r.file.cert).expect("chain"),
        "key": std::fs::read_to_string(&r.file.key).expect("key"),
    });
    let (upload_status, answer) = api(
        r.ports.admin,
        API_ADMIN,
        "PUT",
        "/config/certificates/shop",
        Some(&upload.to_string()),
    );
    assert_eq!(upload_status, 409, "{answer}");
    assert!(answer.to_string().contains("ACME request"), "{answer}");

    // Restart with the CA gone: the request is in the state file, the certificate in the
    // folder; served at once, nothing ordered.
    let Requested {
        ports,
        work,
        pebble,
        origin,
        file,
        state_file,
        storage,
        more,
        gateway,
        serial,
    } = r;
    let directory = pebble.directory.clone();
    let ca_file = pebble.ca_file.clone();
    drop(gateway);
    drop(pebble);
    let gateway = start_api_gateway(
        &ports,
        Some((&directory, &ca_file, &storage, more)),
        &file,
        &state_file,
        &origin,
    );
    assert_eq!(
        common::tls::served_serial(ports.tls, Some(NAME)),
        serial,
        "served from the first handshake after the restart; log:\n{}",
        gateway.log()
    );
    assert_eq!(
        listed(ports.admin, "shop").expect("still requested")["state"],
        "issued"
    );
    for result in ["ok", "failed"] {
        let line = format!("gateway_acme_orders_total{{result=\"{result}\"}}");
        assert_eq!(metric(ports.metrics, &line).unwrap_or(0), 0, "{line}");
    }

    let (status, answer) = api(
        ports.admin,
        API_ADMIN,
        "DELETE",
        "/config/certificates/shop",
        None,
    );
    assert_eq!(status, 200, "{answer}");
    wait_served(ports.tls, Some(&file.serial), None, &gateway);
    assert!(listed(ports.admin, "shop").is_none());
    drop(work);
}

/// TLS-ALPN-01 for a requested name: answered by the TLS listener, which has no `tls.acme`
/// (Pebble's HTTP-01 port is closed), because `gateway.acme` is configured.
#[test]
fn an_api_request_is_validated_by_tls_alpn01_on_any_listener() {
    let r = request_through_the_api("acme-api-alpn", "    challenge: tls-alpn-01\n", true);
    assert!(!r.serial.is_empty());
}

/// Without `gateway.acme` a request is refused (422 naming `acme`); a bad name is refused
/// naming its index, a body of both kinds is 400, a request under an upload's name 409, a
/// request sharing part of another's names 422; none of them changes anything.
#[test]
fn an_api_request_needs_gateway_acme_and_dns_names() {
    let ports = Ports::new();
    let work = TempDir::new("acme-api-422");
    let origin = Origin::start("stable");
    let file = Ca::new("file-ca").issue(work.path(), "file", &[NAME], KeyKind::EcdsaP256, 0x52, 30);
    let gateway = start_api_gateway(&ports, None, &file, &work.path().join("s.json"), &origin);
    let (status, answer) = api(
        ports.admin,
        API_ADMIN,
        "PUT",
        "/config/certificates/shop",
        Some(r#"{"acme": ["shop.example.com"]}"#),
    );
    assert_eq!(status, 422, "{answer}");
    let text = answer.to_string();
    assert!(text.contains("acme"), "{text}");
    assert!(text.contains("configure gateway.acme first"), "{text}");
    assert!(listed(ports.admin, "shop").is_none());

    // With gateway.acme (a CA that is never reached): a wildcard is refused naming acme[1].
    let ca_file = work.path().join("ca.pem");
    Ca::new("unused-ca").write_cert(&ca_file);
    drop(gateway);
    let directory = format!("https://{NAME}:{}/dir", free_port());
    let storage = work.path().join("acme");
    let _gateway = start_api_gateway(
        &ports,
        Some((&directory, &ca_file, &storage, "")),
        &file,
        &work.path().join("s.json"),
        &origin,
    );
    let (status, answer) = api(
        ports.admin,
        API_ADMIN,
        "PUT",
        "/config/certificates/shop",
        Some(r#"{"acme": ["shop.example.com", "*.example.com"]}"#),
    );
    assert_eq!(status, 422, "{answer}");
    assert!(answer.to_string().contains("acme[1]"), "{answer}");
    let (status, answer) = api(
        ports.admin,
        API_ADMIN,
        "PUT",
        "/config/certificates/shop",
        Some(r#"{"acme": ["a.example.com"], "chain": "x", "key": "y"}"#),
    );
    assert_eq!(status, 400, "both kinds at once: {answer}");
    assert_eq!(answer["field"], "acme", "{answer}");
    assert!(listed(ports.admin, "shop").is_none());
    // An upload's name is not free for a request (409), and nothing changes.
    let upload = serde_json::json!({
        "chain": std::fs::read_to_string(&file.cert).expect("chain"),
        "key": std::fs::read_to_string(&file.key).expect("key"),
    });
    let (status, answer) = api(
        ports.admin,
        API_ADMIN,
        "PUT",
        "/config/certificates/up",
        Some(&upload.to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = api(
        ports.admin,
        API_ADMIN,
        "PUT",
        "/config/certificates/up",
        Some(r#"{"acme": ["a.example.com"]}"#),
    );
    assert_eq!(status, 409, "{answer}");
    assert_eq!(listed(ports.admin, "up").expect("listed")["source"], "api");
    // A name in one certificate only: a request sharing part of another's set is refused.
    let (status, answer) = api(
        ports.admin,
        API_ADMIN,
        "PUT",
        "/config/certificates/both",
        Some(r#"{"acme": ["a.example.com", "b.example.com"]}"#),
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = api(
        ports.admin,
        API_ADMIN,
        "PUT",
        "/config/certificates/part",
        Some(r#"{"acme": ["b.example.com"]}"#),
    );
    assert_eq!(
        (status, answer["field"].as_str()),
        (422, Some("acme")),
        "{answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"both\"")),
        "{answer}"
    );
    assert!(listed(ports.admin, "part").is_none());
}

/// Two nodes with Redis, neither with `tls.acme`: a request made on node A reaches B through
/// the store, one order is made under the lease (Pebble issues one certificate, the nodes
/// count one order between them), both serve it by SNI (verified against Pebble's root), and
/// B lists it as issued.
#[test]
fn an_api_request_on_one_node_is_ordered_once_and_served_by_both() {
    let work = TempDir::new("acme-api-two");
    let redis = Redis::start(work.path(), free_port());
    let (a, b) = (Ports::new(), Ports::new());
    let pebble = start_pebble(work.path(), a.plain.port(), free_port());
    let origin = Origin::start("stable");
    let file = Ca::new("file-ca").issue(work.path(), "file", &[NAME], KeyKind::EcdsaP256, 0x53, 30);
    let store = store_yaml(&redis);
    let node = |ports: &Ports, tag: &str| {
        start_api_gateway(
            ports,
            Some((
                &pebble.directory,
                &pebble.ca_file,
                &work.path().join(format!("acme-{tag}")),
                &store,
            )),
            &file,
            &work.path().join(format!("state-{tag}.json")),
            &origin,
        )
    };
    let (gateway_a, gateway_b) = (node(&a, "a"), node(&b, "b"));
    let asked = Instant::now();
    let (status, answer) = api(
        a.admin,
        API_ADMIN,
        "PUT",
        "/config/certificates/shop",
        Some(&format!(r#"{{"acme": ["{NAME}"]}}"#)),
    );
    assert_eq!(status, 200, "{answer}");
    let serial_a = wait_served(a.tls, None, Some(&file.serial), &gateway_a);
    let serial_b = wait_served(b.tls, Some(&serial_a), None, &gateway_b);
    eprintln!(
        "a request made on node A is served by both nodes {:?} after the PUT",
        asked.elapsed()
    );
    assert_eq!(serial_a, serial_b);
    let root = work.path().join("pebble-root.pem");
    pebble.write_root(&root);
    assert_eq!(verified_get(a.tls, &root), "stable");
    assert_eq!(verified_get(b.tls, &root), "stable");
    assert_eq!(
        pebble_counts(&pebble),
        (1, 1),
        "pebble log:\n{}",
        pebble.log()
    );
    assert_eq!(orders(a.metrics, "ok") + orders(b.metrics, "ok"), 1);
    let start = Instant::now();
    while listed(b.admin, "shop").is_none_or(|row| row["state"] != "issued") {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{:?}",
            listed(b.admin, "shop")
        );
        thread::sleep(Duration::from_millis(100));
    }
}
