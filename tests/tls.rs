//! TLS and HTTP/2 at the edge, end to end with certificates made at test time: SNI picks the
//! certificate, old protocols and plaintext are refused, cookie routing over h2 streams of one
//! connection, wss, the redirect listener, certificate rotation under load, hot restart with
//! TLS listeners, upstream TLS (verification, client certificate, health checks) and the
//! HTTP/2 attack classes.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::Duration;

use common::tls::{
    connect_with, curl, h2, served_serial, served_serial_with, tls_block, Ca, Edge, Issued,
    KeyKind, RawH2, TlsOrigin,
};
use common::*;

const TOKEN: &str = "tls-test-operator-token";

/// An edge (see `common::tls::start_edge`) whose admin takes this file's token.
fn start_edge(dir: TempDir, tls_block: &str, rest: &str) -> Edge {
    common::tls::start_edge(dir, tls_block, &format!("    token: \"{TOKEN}\"\n"), rest)
}

fn routing(stable: &Origin, canary: &Origin) -> String {
    format!(
        "  groups:\n    stable: {{ servers: [\"{}\"] }}\n    canary: {{ servers: [\"{}\"] }}\n\
         \x20 routing:\n    cookie: uid\n    default: stable\n    rules:\n\
         \x20     - {{ name: beta, users: [bob, carol], group: canary }}\n",
        stable.addr, canary.addr
    )
}

fn metrics_text(edge: &Edge) -> String {
    get(edge.metrics, "/metrics", &[]).text()
}

fn resolve(name: &str, addr: SocketAddr) -> String {
    format!("{name}:{}:127.0.0.1", addr.port())
}

/// Over TLS: HTTP/1.1 and HTTP/2 by ALPN, SNI picks the certificate (exact names before
/// wildcards, the default for unknown or no names), routing by cookie over several h2
/// streams on one connection, `X-Forwarded-Proto: https`, HSTS, the access log's TLS fields,
/// `/status` and metrics; TLS 1.0/1.1 and plaintext on the TLS port are refused.
#[test]
fn tls_listener_serves_h1_and_h2_and_picks_certificates_by_sni() {
    let dir = TempDir::new("tls-sni");
    let ca = Ca::new("test CA");
    let a = ca.issue(
        dir.path(),
        "a",
        &["a.test", "*.wild.test"],
        KeyKind::EcdsaP256,
        0xA1,
        90,
    );
    let b = ca.issue(
        dir.path(),
        "b",
        &["b.test", "exact.wild.test"],
        KeyKind::Rsa2048,
        0xB2,
        90,
    );
    let soon = ca.issue(
        dir.path(),
        "soon",
        &["soon.test"],
        KeyKind::EcdsaP256,
        0x50,
        5,
    );
    // An RSA and an ECDSA certificate for one name: the client's signature algorithms choose.
    let dual_rsa = ca.issue(
        dir.path(),
        "dual-rsa",
        &["dual.test"],
        KeyKind::Rsa2048,
        0xD1,
        90,
    );
    let dual_ec = ca.issue(
        dir.path(),
        "dual-ec",
        &["dual.test"],
        KeyKind::EcdsaP256,
        0xD2,
        90,
    );
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let block = tls_block(
        &[&a, &b, &soon, &dual_rsa, &dual_ec],
        Some(&b),
        "      hsts: \"max-age=31536000\"\n",
    );
    let edge = start_edge(dir, &block, &routing(&stable, &canary));

    // SNI: exact names, the exact name over the wildcard, wildcards, the default otherwise.
    assert_eq!(served_serial(edge.tls, Some("a.test")), a.serial);
    assert_eq!(served_serial(edge.tls, Some("b.test")), b.serial);
    assert_eq!(served_serial(edge.tls, Some("x.wild.test")), a.serial);
    assert_eq!(served_serial(edge.tls, Some("exact.wild.test")), b.serial);
    assert_eq!(served_serial(edge.tls, Some("unknown.test")), b.serial);
    assert_eq!(served_serial(edge.tls, None), b.serial);
    let serial_with = |sigalgs: &str| {
        served_serial_with(edge.tls, Some("dual.test"), |c| {
            c.set_sigalgs_list(sigalgs).expect("sigalgs");
        })
    };
    assert_eq!(serial_with("ECDSA+SHA256"), dual_ec.serial);
    assert_eq!(serial_with("RSA-PSS+SHA256:RSA+SHA256"), dual_rsa.serial);
    assert_eq!(
        served_serial(edge.tls, Some("dual.test")),
        dual_rsa.serial,
        "both: the first"
    );
    // The same with openssl's own client.
    let s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &edge.tls.to_string(),
            "-servername",
            "a.test",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let printed = String::from_utf8_lossy(&s_client.stdout);
    assert!(printed.contains("CN = a.test"), "s_client: {printed}");

    // Session resumption: a session from one connection resumes on the next ones, whichever
    // of the two workers takes them.
    let dir = edge.gateway.dir.path();
    assert_eq!(
        common::tls::resumed_connections(edge.tls, "a.test", 4, dir, &[]),
        4
    );
    assert_eq!(
        common::tls::resumed_connections(edge.tls, "b.test", 4, dir, &["-tls1_2"]),
        4
    );

    // HTTP/1.1 and HTTP/2 over TLS, routed by the cookie.
    let url = format!("https://a.test:{}/", edge.tls.port());
    let r = resolve("a.test", edge.tls);
    let h1 = curl(&[
        "-k",
        "--http1.1",
        "--resolve",
        &r,
        "-b",
        "uid=alice",
        "-w",
        "\n%{http_version} %header{x-canary-group} %header{strict-transport-security}",
        &url,
    ]);
    assert_eq!(h1, "stable\n1.1 stable max-age=31536000");
    let h2 = curl(&[
        "-k",
        "--http2",
        "--resolve",
        &r,
        "-b",
        "uid=bob",
        "-w",
        "\n%{http_version} %header{x-canary-group}",
        &url,
    ]);
    assert_eq!(h2, "canary\n2 canary");
    assert_eq!(canary.last().one("x-forwarded-proto"), "https");

    // Several users' requests as streams of one h2 connection.
    let mut args: Vec<String> = vec!["-k".into(), "--http2".into(), "--resolve".into(), r.clone()];
    let users = ["alice", "bob", "dave", "carol", "erin", "bob"];
    for (i, user) in users.iter().enumerate() {
        if i > 0 {
            args.push("--next".into());
            args.extend(["-k".into(), "--http2".into(), "--resolve".into(), r.clone()]);
        }
        args.extend([
            "-o".into(),
            "/dev/null".into(),
            "-b".into(),
            format!("uid={user}"),
            "-w".into(),
            "%{http_version} %{num_connects} %header{x-canary-group}\n".into(),
            url.clone(),
        ]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lines = curl(&args);
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(
        lines,
        [
            "2 1 stable",
            "2 0 canary",
            "2 0 stable",
            "2 0 canary",
            "2 0 stable",
            "2 0 canary"
        ],
        "one connection (new connections after the first: 0), each stream routed by its cookie"
    );

    // Plaintext listener: no HSTS, X-Forwarded-Proto http.
    let plain = get(edge.plain, "/", &[("Cookie", "uid=bob")]);
    assert_eq!(plain.text(), "canary");
    assert_eq!(plain.header("strict-transport-security"), None);
    assert_eq!(canary.last().one("x-forwarded-proto"), "http");

    // TLS 1.0 and 1.1 are refused by the gateway (its failed-handshake count rises, so the
    // client did offer them), and so is plaintext HTTP on the TLS port.
    for version in [
        openssl::ssl::SslVersion::TLS1,
        openssl::ssl::SslVersion::TLS1_1,
    ] {
        let before = metric_value(
            &metrics_text(&edge),
            "gateway_tls_handshakes_total{result=\"failed\"}",
        );
        let old = connect_with(edge.tls, Some("a.test"), |b| {
            b.set_cipher_list("DEFAULT:@SECLEVEL=0").expect("ciphers");
            b.set_min_proto_version(Some(version)).expect("min");
            b.set_max_proto_version(Some(version)).expect("max");
        });
        assert!(old.is_err(), "{version:?} was accepted");
        wait_until("the refused handshake counted", READY_TIMEOUT, || {
            metric_value(
                &metrics_text(&edge),
                "gateway_tls_handshakes_total{result=\"failed\"}",
            ) > before
        });
    }
    let mut raw = TcpStream::connect(edge.tls).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5))).ok();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).ok();
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plaintext answered: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // /status lists the certificates with names and expiry; the one expiring in 5 days warns.
    let status: serde_json::Value =
        serde_json::from_str(&admin(edge.admin, "GET", "/status", Some(TOKEN), None).text())
            .expect("json");
    let certs = status["certificates"].as_array().expect("certificates");
    assert_eq!(certs.len(), 5);
    assert_eq!(
        certs[0]["names"],
        serde_json::json!(["a.test", "*.wild.test"])
    );
    assert_eq!(certs[0]["key_type"], "ECDSA");
    assert_eq!(certs[1]["key_type"], "RSA");
    assert_eq!(certs[1]["default"], true);
    assert!(certs[0]["warning"].is_null());
    assert!(certs[2]["warning"]
        .as_str()
        .expect("warning")
        .contains("expires in"));
    assert!(
        edge.gateway.log().contains("soon.test) expires in"),
        "log: {}",
        edge.gateway.log()
    );
    let metrics = metrics_text(&edge);
    assert!(metric_value(&metrics, "gateway_tls_handshakes_total{result=\"ok\"}") >= 8.0);
    assert!(
        metric_value(
            &metrics,
            "gateway_certificate_expiry_seconds{name=\"a.test\"}"
        ) > 1.7e9
    );

    // The access log has the TLS version and the protocol ALPN chose.
    let log_path = edge.gateway.dir.path().join("access.log");
    // Every request has a line: 6 streams over h2 and the rest. The log is flushed by a
    // background thread, so wait (bounded) for the lines.
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    };
    let count = |alpn: serde_json::Value, version: serde_json::Value| {
        lines()
            .iter()
            .filter(|l| l["alpn"] == alpn && l["tls_version"] == version)
            .count()
    };
    use serde_json::json;
    wait_until("the access log's lines", READY_TIMEOUT, || {
        count(json!("h2"), json!("TLSv1.3")) >= 7
            && count(json!("http/1.1"), json!("TLSv1.3")) >= 1
            && count(json!("http/1.1"), json!("TLSv1.2")) >= 1
            && count(json!(null), json!(null)) >= 1
    });
}

/// `-t` refuses a certificate that does not parse, a key that is not the certificate's and an
/// expired certificate, naming the key.
#[test]
fn bad_certificates_are_refused_naming_the_key() {
    let dir = TempDir::new("tls-bad");
    let ca = Ca::new("test CA");
    let good = ca.issue_p256(dir.path(), "good", "good.test", 1);
    let other = ca.issue_p256(dir.path(), "other", "other.test", 2);
    let expired = ca.issue(
        dir.path(),
        "expired",
        &["old.test"],
        KeyKind::EcdsaP256,
        3,
        -1,
    );
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let cases = [
        (
            good.cert.clone(),
            other.key.clone(),
            "gateway.listen[1].tls.certificates[1].key",
            "is not the key of the certificate",
        ),
        (
            expired.cert.clone(),
            expired.key.clone(),
            "gateway.listen[1].tls.certificates[1].cert",
            "expired on",
        ),
        (
            garbage.clone(),
            good.key.clone(),
            "gateway.listen[1].tls.certificates[1].cert",
            "is not a PEM certificate chain",
        ),
    ];
    for (cert, key, want_key, want_message) in cases {
        let config = format!(
            "gateway:\n  listen:\n    - \"127.0.0.1:1\"\n    - addr: \"127.0.0.1:2\"\n      tls:\n        certificates:\n\
             \x20         - {{ cert: \"{}\", key: \"{}\" }}\n          - {{ cert: \"{}\", key: \"{}\" }}\n\
             \x20 groups:\n    stable: {{ servers: [\"127.0.0.1:3\"] }}\n  routing: {{ default: stable }}\n",
            good.cert.display(),
            good.key.display(),
            cert.display(),
            key.display()
        );
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, config).expect("write");
        let out = run_binary(&["-t", "-c", path.to_str().expect("path")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {want_message}");
        assert!(
            stderr.contains(want_key) && stderr.contains(want_message),
            "stderr: {stderr}"
        );
    }
}

/// `-t` refuses an X.509 version 1 certificate (no extensions) with its own key as what it is,
/// a certificate rustls cannot use, naming the certificate's key; it once said the key was
/// not the certificate's. Both as a listener's certificate and as a group's client certificate.
#[test]
fn version_1_certificates_are_refused_for_their_version() {
    let dir = TempDir::new("tls-v1");
    let ca = Ca::new("test CA");
    let good = ca.issue_p256(dir.path(), "good", "good.test", 1);
    let v1 = ca.issue_v1(dir.path(), "v1", "v1.test", 2);
    let (cert, key) = (v1.cert.display(), v1.key.display());
    let group = "  groups:\n    stable: { servers: [\"127.0.0.1:3\"] }\n";
    let cases = [
        (
            format!(
                "    - addr: \"127.0.0.1:2\"\n      tls:\n        certificates:\n\
                 \x20         - {{ cert: \"{}\", key: \"{}\" }}\n          - {{ cert: \"{cert}\", key: \"{key}\" }}\n{group}",
                good.cert.display(),
                good.key.display(),
            ),
            "gateway.listen[1].tls.certificates[1].cert",
        ),
        (
            format!(
                "{group}    mutual: {{ servers: [\"127.0.0.1:4\"], tls: {{ sni: origin.test, client_cert: \"{cert}\", client_key: \"{key}\" }} }}\n"
            ),
            "gateway.groups.mutual.tls.client_cert",
        ),
    ];
    for (rest, want_key) in cases {
        let config = format!(
            "gateway:\n  listen:\n    - \"127.0.0.1:1\"\n{rest}  routing: {{ default: stable }}\n"
        );
        let path = dir.path().join("v1.yaml");
        std::fs::write(&path, config).expect("write");
        let out = run_binary(&["-t", "-c", path.to_str().expect("path")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {want_key}");
        assert!(
            stderr.contains(&format!(
                "{want_key}: {cert}: an X.509 version 1 certificate"
            )) && stderr.contains("re-issue it as version 3")
                && !stderr.contains("is not the key"),
            "stderr: {stderr}"
        );
    }
}

/// The redirect listener answers 308 to https with the same host and target for a host some
/// route or certificate names, 400 for any other host, and proxies nothing.
#[test]
fn redirect_listener_sends_known_hosts_to_https_only() {
    let dir = TempDir::new("tls-redirect");
    let ca = Ca::new("test CA");
    let cert = ca.issue_p256(dir.path(), "site", "*.site.test", 7);
    let stable = Origin::start("stable");
    let rest = format!(
        "  groups:\n    stable: {{ servers: [\"{}\"] }}\n  routes:\n\
         \x20   - {{ name: shop, hosts: [shop.example.com], routing: {{ default: stable }} }}\n\
         \x20   - {{ name: rest, routing: {{ default: stable }} }}\n",
        stable.addr
    );
    let edge = start_edge(dir, &tls_block(&[&cert], None, ""), &rest);
    let port = edge.tls.port();
    let r = get_host(edge.redirect, "shop.example.com", "/cart?item=1", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://shop.example.com:{port}/cart?item=1").as_str())
    );
    let r = get_host(edge.redirect, "WWW.Site.Test:80", "/", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://www.site.test:{port}/").as_str())
    );
    for host in [
        "evil.com",
        "evil.com/x.site.test",
        "site.test",
        "a.b.site.test",
    ] {
        let r = get_host(edge.redirect, host, "/", &[]);
        assert_eq!(r.status, 400, "host {host}");
        assert_eq!(r.header("location"), None);
    }
    assert_eq!(stable.count(), 0, "a redirect listener proxies nothing");
    // The head guard stands in front of it as in front of the proxy: a request line over
    // `limits.max_request_line` (8 KiB by default) is refused, not redirected.
    let long = format!("/{}", "a".repeat(10 * 1024));
    let r = get_host(edge.redirect, "shop.example.com", &long, &[]);
    assert_eq!(r.status, 414);
    assert_eq!(r.header("location"), None);
}

/// Certificates rotate on SIGHUP and on `POST /reload` while wrk runs over TLS: 0 failed
/// requests, new handshakes see the new serial; a bad certificate is refused and the old one
/// kept. Then a graceful upgrade (`-u`) keeps the TLS listener serving.
#[test]
fn certificates_rotate_under_load_and_survive_hot_restart() {
    let dir = TempDir::new("tls-rotate");
    let ca = Ca::new("test CA");
    let first = ca.issue_p256(dir.path(), "site", "site.test", 0x100);
    let stable = Origin::start("stable");
    let rest = format!(
        "  groups:\n    stable: {{ servers: [\"{}\"] }}\n  routing: {{ default: stable }}\n",
        stable.addr
    );
    let mut edge = start_edge(dir, &tls_block(&[&first], None, ""), &rest);
    assert_eq!(served_serial(edge.tls, Some("site.test")), "100");

    // wrk keeps its connections open over TLS across both rotations.
    let url = format!("https://127.0.0.1:{}/", edge.tls.port());
    let load = thread::spawn(move || run_wrk(&["-t1", "-c8", "-d6s", &url]));
    // The rotations happen while wrk's connections are open: wait until its requests arrive.
    wait_until("wrk's requests reach the origin", READY_TIMEOUT, || {
        stable.count() > 0
    });
    let dir = edge.gateway.dir.path().to_path_buf();
    ca.issue_p256(&dir, "site", "site.test", 0x200);
    edge.gateway.signal("HUP");
    wait_until("new handshakes get serial 200", READY_TIMEOUT, || {
        served_serial(edge.tls, Some("site.test")) == "200"
    });
    ca.issue(&dir, "site", &["site.test"], KeyKind::Rsa2048, 0x300, 30);
    let reload = admin(edge.admin, "POST", "/reload", Some(TOKEN), None);
    assert_eq!(reload.status, 200, "{}", reload.text());
    assert_eq!(served_serial(edge.tls, Some("site.test")), "300");
    // A key that is not the certificate's: refused, the running certificate stays.
    let other = ca.issue_p256(&dir, "other", "other.test", 0x400);
    std::fs::copy(&other.key, dir.join("site.key")).expect("copy");
    let refused = admin(edge.admin, "POST", "/reload", Some(TOKEN), None);
    assert_ne!(refused.status, 200);
    assert!(
        refused.text().contains("certificates[0].key"),
        "{}",
        refused.text()
    );
    assert_eq!(served_serial(edge.tls, Some("site.test")), "300");
    let (requests, output) = load.join().expect("wrk");
    // How many requests fit in wrk's 6 s depends on the machine's load (32 under two busy
    // loops once): the checks are that traffic flowed and none of it failed.
    assert!(requests > 0, "wrk: {output}");
    assert!(
        !output.contains("Socket errors") && !output.contains("Non-2xx"),
        "wrk: {output}"
    );

    // Graceful upgrade: the new process serves the TLS listener with the certificate it read.
    ca.issue_p256(&dir, "site", "site.test", 0x500);
    // Serves until the test ends (killed when dropped).
    let _new = edge.gateway.spawn_upgrade(2);
    edge.gateway.signal("QUIT");
    edge.gateway.wait_exit(Duration::from_secs(30));
    wait_until("the new process serves TLS", READY_TIMEOUT, || {
        std::panic::catch_unwind(|| served_serial(edge.tls, Some("site.test"))).ok()
            == Some("500".into())
    });
    let body = curl(&[
        "-k",
        "--http2",
        &format!("https://127.0.0.1:{}/", edge.tls.port()),
    ]);
    assert_eq!(body, "stable");
}

/// A websocket over TLS (`wss://`): the HTTP/1.1 upgrade through a TLS listener, both ways.
#[test]
fn websocket_round_trip_over_tls() {
    let dir = TempDir::new("tls-wss");
    let ca = Ca::new("test CA");
    let cert = ca.issue_p256(dir.path(), "ws", "ws.test", 9);
    let (ws_origin, handle) = websocket_echo_origin(3);
    let rest = format!(
        "  groups:\n    ws: {{ servers: [\"{ws_origin}\"], health_check: {{ type: none }} }}\n  routing: {{ default: ws }}\n"
    );
    let edge = start_edge(
        dir,
        &tls_block(&[&cert], None, "      http2: true\n"),
        &rest,
    );
    // ALPN http/1.1 only, as browsers open wss.
    let tls = connect_with(edge.tls, Some("ws.test"), |b| {
        b.set_alpn_protos(b"\x08http/1.1").expect("alpn");
    })
    .expect("handshake");
    let request = websocket_request("wss://ws.test/socket", "ws.test", "Upgrade", &[]);
    let (mut ws, response) = tungstenite::client::client(request, tls).expect("wss handshake");
    assert_eq!(response.status().as_u16(), 101);
    websocket_echo_rounds(&mut ws, 0..3);
    assert_eq!(
        ws.read().expect("push").to_text().expect("text"),
        "server push"
    );
    ws.close(None).ok();
    handle.join().expect("origin");
}

/// The files of the mutual-TLS tests in `dir`: `ca.pem` (the returned CA's certificate),
/// `client.pem` and `client.key` (the gateway's client certificate, for `gateway-client`); and
/// the origin's certificate (`origin.test`) and the edge's (`edge.test`), both from that CA.
fn mutual_tls_files(dir: &std::path::Path) -> (Ca, Issued, Issued) {
    let ca = Ca::new("origin CA");
    let origin = ca.issue_p256(dir, "origin", "origin.test", 1);
    ca.issue_p256(dir, "client", "gateway-client", 2);
    ca.write_cert(&dir.join("ca.pem"));
    let edge = ca.issue_p256(dir, "edge", "edge.test", 3);
    (ca, origin, edge)
}

/// Upstream TLS: the server's certificate is verified against the group's CA (and its name),
/// a client certificate is offered when the group has one, health checks speak TLS; a group
/// whose CA does not match answers 502 with a clear log line, and its health check marks the
/// server down.
#[test]
fn upstream_tls_verifies_servers_and_offers_client_certificates() {
    let dir = TempDir::new("tls-upstream");
    let (ca, origin_cert, cert) = mutual_tls_files(dir.path());
    let wrong_ca = Ca::new("some other CA");
    wrong_ca.write_cert(&dir.path().join("wrong-ca.pem"));
    let plain_origin = TlsOrigin::start("tls-origin", &origin_cert, None);
    let mtls_origin = TlsOrigin::start("mtls-origin", &origin_cert, Some(&ca.cert));
    let d = dir.path().display();
    let rest = format!(
        "  groups:\n\
         \x20   verified: {{ servers: [\"{p}\"], tls: {{ sni: origin.test, ca: \"{d}/ca.pem\" }}, health_check: {{ type: tcp, interval: 300ms }} }}\n\
         \x20   mutual: {{ servers: [\"{m}\"], tls: {{ sni: origin.test, ca: \"{d}/ca.pem\", client_cert: \"{d}/client.pem\", client_key: \"{d}/client.key\" }}, health_check: {{ type: none }} }}\n\
         \x20   wrong: {{ servers: [\"{p}\"], tls: {{ sni: origin.test, ca: \"{d}/wrong-ca.pem\" }}, health_check: {{ type: none }} }}\n\
         \x20   wrong_checked: {{ servers: [\"{p}\"], tls: {{ sni: origin.test, ca: \"{d}/wrong-ca.pem\" }}, health_check: {{ type: tcp, interval: 300ms }} }}\n\
         \x20 routes:\n\
         \x20   - {{ name: verified, paths: [/verified], routing: {{ default: verified }} }}\n\
         \x20   - {{ name: mutual, paths: [/mutual], routing: {{ default: mutual }} }}\n\
         \x20   - {{ name: wrong, paths: [/wrong], routing: {{ default: wrong }} }}\n\
         \x20   - {{ name: rest, routing: {{ default: wrong_checked }} }}\n",
        p = plain_origin.addr,
        m = mtls_origin.addr,
    );
    let edge = start_edge(dir, &tls_block(&[&cert], None, ""), &rest);

    let verified = get(edge.plain, "/verified", &[]);
    assert_eq!(
        (verified.status, verified.text().as_str()),
        (200, "tls-origin")
    );
    assert_eq!(verified.header("x-client-cert"), Some("none"));
    let mutual = get(edge.plain, "/mutual", &[]);
    assert_eq!(
        (mutual.status, mutual.text().as_str()),
        (200, "mtls-origin")
    );
    assert_eq!(mutual.header("x-client-cert"), Some("gateway-client"));
    let wrong = get(edge.plain, "/wrong", &[]);
    assert_eq!(wrong.status, 502);
    wait_until(
        "a log line naming the verification failure",
        READY_TIMEOUT,
        || {
            edge.gateway
                .log()
                .contains("invalid peer certificate: UnknownIssuer, SNI: origin.test")
        },
    );
    // Health checks over TLS: the verified group's server is up, the wrong CA's is down.
    wait_until("health over TLS", READY_TIMEOUT, || {
        let status: serde_json::Value =
            serde_json::from_str(&admin(edge.admin, "GET", "/status", Some(TOKEN), None).text())
                .expect("json");
        let healthy = |group: &str| {
            status["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|g| g["name"] == group))
                .map(|g| g["servers"][0]["healthy"].clone())
        };
        healthy("verified") == Some(serde_json::json!(true))
            && healthy("wrong_checked") == Some(serde_json::json!(false))
    });
    assert_eq!(get(edge.plain, "/other", &[]).status, 503);
}

/// A mutual-TLS group with the default health check, against an origin that speaks TLS 1.2 at
/// most and requires the client certificate: the health check offers the group's certificate
/// as requests do, so the server stays up and every request is served. (The check once
/// handshook without it; in TLS 1.2 the origin refuses that handshake, the server was marked
/// down and no request was served.)
#[test]
fn mutual_tls_health_checks_offer_the_client_certificate() {
    let dir = TempDir::new("tls-mutual-checked");
    let (ca, origin_cert, cert) = mutual_tls_files(dir.path());
    let origin = TlsOrigin::start_tls12("mtls12-origin", &origin_cert, Some(&ca.cert));
    let d = dir.path().display();
    // No `health_check` key: the default check (TCP with the TLS handshake, every 2 s, down
    // after 2 failures).
    let rest = format!(
        "  groups:\n\
         \x20   mutual: {{ servers: [\"{m}\"], tls: {{ sni: origin.test, ca: \"{d}/ca.pem\", client_cert: \"{d}/client.pem\", client_key: \"{d}/client.key\" }} }}\n\
         \x20 routing: {{ default: mutual }}\n",
        m = origin.addr,
    );
    let edge = start_edge(dir, &tls_block(&[&cert], None, ""), &rest);
    // Checks run one pass after another, and nothing else connects yet: once the origin has
    // seen a third connection, the outcomes of the first two checks (enough to mark the
    // server down) have been applied.
    wait_until("three health checks", READY_TIMEOUT, || {
        origin.connections.load(std::sync::atomic::Ordering::SeqCst) >= 3
    });
    let served = (0..10)
        .map(|_| get(edge.plain, "/", &[]))
        .filter(|r| {
            r.status == 200
                && r.text() == "mtls12-origin"
                && r.header("x-client-cert") == Some("gateway-client")
        })
        .count();
    assert_eq!(served, 10, "requests served through the mutual-TLS group");
}

/// A group with `tls.http2: true` speaks HTTP/2 to its servers: here the server is a second
/// gateway's TLS listener, whose access log shows the request arrived over h2; a group
/// without it stays on HTTP/1.1 to the same server.
#[test]
fn upstream_http2_when_the_group_asks_for_it() {
    let dir = TempDir::new("tls-upstream-h2");
    let ca = Ca::new("inner CA");
    let inner_cert = ca.issue_p256(dir.path(), "inner", "inner.test", 1);
    ca.write_cert(&dir.path().join("ca.pem"));
    let stable = Origin::start("stable");
    let inner_dir = TempDir::new("tls-inner");
    let inner_rest = format!(
        "  groups:\n    stable: {{ servers: [\"{}\"] }}\n  routing: {{ default: stable }}\n",
        stable.addr
    );
    let inner = start_edge(inner_dir, &tls_block(&[&inner_cert], None, ""), &inner_rest);
    let d = dir.path().display();
    let rest = format!(
        "  groups:\n\
         \x20   h2: {{ servers: [\"{i}\"], tls: {{ sni: inner.test, ca: \"{d}/ca.pem\", http2: true }} }}\n\
         \x20   h1: {{ servers: [\"{i}\"], tls: {{ sni: inner.test, ca: \"{d}/ca.pem\" }} }}\n\
         \x20 routes:\n\
         \x20   - {{ name: h2, paths: [/h2], routing: {{ default: h2 }} }}\n\
         \x20   - {{ name: h1, routing: {{ default: h1 }} }}\n",
        i = inner.tls,
    );
    let outer_cert = ca.issue_p256(dir.path(), "outer", "outer.test", 2);
    let outer = start_edge(dir, &tls_block(&[&outer_cert], None, ""), &rest);
    assert_eq!(get(outer.plain, "/h2/x", &[]).text(), "stable");
    assert_eq!(get(outer.plain, "/h1/y", &[]).text(), "stable");
    let log_path = inner.gateway.dir.path().join("access.log");
    let mut alpn_of = std::collections::HashMap::new();
    wait_until("the inner gateway's log", READY_TIMEOUT, || {
        for line in std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
        {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            alpn_of.insert(
                v["path"].as_str().unwrap_or("").to_string(),
                v["alpn"].clone(),
            );
        }
        alpn_of.contains_key("/h2/x") && alpn_of.contains_key("/h1/y")
    });
    assert_eq!(alpn_of["/h2/x"], "h2");
    assert_eq!(alpn_of["/h1/y"], "http/1.1");
}

/// A client that opens a connection to the TLS port and never finishes the handshake is cut
/// off after `limits.header_timeout`, counted as a timeout.
#[test]
fn stalled_handshakes_time_out() {
    let (edge, _stable) = one_origin_edge("tls-stalled", "  limits: { header_timeout: 1s }\n");
    let timeouts = || {
        metric_value(
            &metrics_text(&edge),
            "gateway_tls_handshakes_total{result=\"timeout\"}",
        )
    };
    let before = timeouts();
    let started = std::time::Instant::now();
    let mut stalled = TcpStream::connect(edge.tls).expect("connect");
    stalled.set_read_timeout(Some(READY_TIMEOUT)).ok();
    // Half a ClientHello record header, then nothing.
    stalled.write_all(&[0x16, 0x03, 0x01]).expect("write");
    let mut rest_of_it = Vec::new();
    let outcome = stalled.read_to_end(&mut rest_of_it);
    let took = started.elapsed();
    // Closed by the gateway (end of stream or a reset), not given up on by this client.
    if let Err(e) = &outcome {
        assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "still open after {took:?}"
        );
    }
    assert!(
        took >= Duration::from_secs(1),
        "closed after {took:?}, before the 1 s header timeout"
    );
    eprintln!("stalled handshake closed after {took:?}, header timeout 1 s");
    // The connection closes as the count is taken: wait for it (bounded).
    wait_until("the timeout counted", READY_TIMEOUT, || {
        timeouts() == before + 1.0
    });
}

/// Floods an h2 connection, then checks the gateway closed it and still serves others.
fn after_attack(edge: &Edge, attacker: &mut RawH2, what: &str) -> Option<u32> {
    let code = attacker.until_closed(Duration::from_secs(15));
    let url = format!("https://a.test:{}/", edge.tls.port());
    let body = curl(&[
        "-k",
        "--http2",
        "--resolve",
        &resolve("a.test", edge.tls),
        &url,
    ]);
    assert_eq!(body, "stable", "after {what}, another client is served");
    code
}

/// A gateway with one TLS certificate (`a.test`) and one origin, `more` (YAML keys of the
/// gateway section) added.
fn one_origin_edge(tag: &str, more: &str) -> (Edge, Origin) {
    let dir = TempDir::new(tag);
    let ca = Ca::new("test CA");
    let cert = ca.issue_p256(dir.path(), "a", "a.test", 1);
    let stable = Origin::start("stable");
    let rest = format!(
        "{more}  groups:\n    stable: {{ servers: [\"{}\"] }}\n  routing: {{ default: stable }}\n",
        stable.addr
    );
    (
        start_edge(dir, &tls_block(&[&cert], None, ""), &rest),
        stable,
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Rapid reset (CVE-2023-44487): thousands of requests each cancelled at once. The gateway
/// sends the client away (GOAWAY) and keeps serving others; the origin sees far fewer
/// requests than were opened.
#[test]
fn h2_rapid_reset_is_cut_off() {
    let (edge, stable) = one_origin_edge("tls-rapid-reset", "");
    let mut attacker = RawH2::connect(edge.tls, "a.test");
    let opened = 5_000u32;
    let sent = attacker.requests_followed_by(opened, "a.test", |id| {
        h2::frame(h2::RST_STREAM, 0, id, &8u32.to_be_bytes())
    });
    let code = after_attack(&edge, &mut attacker, "rapid reset");
    eprintln!(
        "rapid reset: {sent}+ streams opened and reset, GOAWAY {code:?}, origin saw {}",
        stable.count()
    );
    assert_eq!(code, Some(0xb), "GOAWAY with ENHANCE_YOUR_CALM");
    assert!(
        stable.count() < opened as usize / 10,
        "origin saw {}",
        stable.count()
    );
}

/// CONTINUATION flood: one request whose header block never ends. The gateway sends the
/// client away with a GOAWAY (ENHANCE_YOUR_CALM) once the block passes its limits, then ends
/// the connection in order: the client's flood (16 MiB) is read and dropped, not answered
/// with a TCP reset (which cut its writes short and could overtake the GOAWAY), and the
/// client reads the GOAWAY and then the end of the stream. Memory stays bounded meanwhile.
#[test]
fn h2_continuation_flood_gets_goaway_then_close() {
    let (edge, stable) = one_origin_edge("tls-continuation", "");
    let rss_before = rss_kib(edge.gateway.pid());
    let mut attacker = RawH2::connect(edge.tls, "a.test");
    attacker
        .send(&h2::frame(
            h2::HEADERS,
            h2::END_STREAM,
            1,
            &h2::get_block("a.test"),
        ))
        .expect("headers");
    let mut fragment = Vec::new();
    let mut i = 0;
    while fragment.len() < 16_000 {
        fragment.extend(h2::literal(&format!("x-flood-{i}"), &"a".repeat(100)));
        i += 1;
    }
    let frame = h2::frame(h2::CONTINUATION, 0, 1, &fragment);
    let mut sent = 0usize;
    // Several times what the socket buffers hold: closing without reading on would reset
    // the connection under these writes.
    let total = 16 * 1024 * 1024;
    let mut write_error = None;
    while sent < total {
        if let Err(e) = attacker.send(&frame) {
            write_error = Some(e);
            break;
        }
        sent += frame.len();
    }
    // Everything the gateway sent, to the end of the connection.
    let mut frames = Vec::new();
    let ending = loop {
        match attacker.read_frame_or_end() {
            Ok(Some((kind, _, _, payload))) => frames.push((kind, payload)),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let kinds: Vec<u8> = frames.iter().map(|(kind, _)| *kind).collect();
    let goaway = frames
        .iter()
        .find(|(kind, payload)| *kind == h2::GOAWAY && payload.len() >= 8)
        .map(|(_, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
    assert_eq!(
        stable.count(),
        0,
        "the unfinished request reached no origin"
    );
    let url = format!("https://a.test:{}/", edge.tls.port());
    let body = curl(&[
        "-k",
        "--http2",
        "--resolve",
        &resolve("a.test", edge.tls),
        &url,
    ]);
    assert_eq!(body, "stable", "after the flood, another client is served");
    let rss_after = rss_kib(edge.gateway.pid());
    eprintln!(
        "continuation flood: sent {sent} bytes (write error {write_error:?}); frames {kinds:?}, \
         GOAWAY {goaway:?}, ended {ending:?}; RSS {rss_before} -> {rss_after} KiB"
    );
    assert_eq!(
        goaway,
        Some(0xb),
        "GOAWAY with ENHANCE_YOUR_CALM; frames {kinds:?}"
    );
    assert!(
        ending.is_ok(),
        "the connection ended with {ending:?}, not in order after the GOAWAY"
    );
    assert!(
        write_error.is_none(),
        "the flood's writes were cut by a reset after {sent} bytes: {write_error:?}"
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
}

/// MadeYouReset (CVE-2025-8671): valid requests each followed by a frame that makes the
/// gateway reset the stream itself (a WINDOW_UPDATE that overflows the stream's window:
/// FLOW_CONTROL_ERROR). Past its budget of such resets the gateway sends the client away, and
/// keeps serving others.
#[test]
fn h2_made_you_reset_is_cut_off() {
    let (edge, stable) = one_origin_edge("tls-made-you-reset", "");
    let mut attacker = RawH2::connect(edge.tls, "a.test");
    let sent = attacker.requests_followed_by(5_000, "a.test", |id| {
        h2::frame(h2::WINDOW_UPDATE, 0, id, &0x7fff_ffffu32.to_be_bytes())
    });
    let code = after_attack(&edge, &mut attacker, "MadeYouReset");
    eprintln!(
        "MadeYouReset: {sent}+ streams, GOAWAY {code:?}, origin saw {}",
        stable.count()
    );
    assert_eq!(code, Some(0xb), "GOAWAY with ENHANCE_YOUR_CALM");
    assert!(stable.count() < 5_000, "origin saw {}", stable.count());
}

/// The frames an HTTP/2 connection got before it closed, after `request` (frames sent once
/// the connection is up), and how long after `request` the GOAWAY came. Panics unless the
/// gateway sent a GOAWAY and then closed the connection.
fn goaway_then_close(attacker: &mut RawH2, request: &[u8]) -> Duration {
    attacker.send(request).expect("send");
    let sent = std::time::Instant::now();
    let (frames, closed) = attacker.frames_until_closed();
    let kinds: Vec<u8> = frames.iter().map(|(kind, _)| *kind).collect();
    assert!(
        closed,
        "still open after {:?}; frames {kinds:?}",
        sent.elapsed()
    );
    let goaway = frames
        .iter()
        .find(|(kind, _)| *kind == h2::GOAWAY)
        .unwrap_or_else(|| panic!("closed without a GOAWAY; frames {kinds:?}"));
    goaway.1 - sent
}

/// Sends a GET (header block `block`) on stream `id` and reads until its answer ends; returns
/// the answer's body. Panics if the gateway sends a GOAWAY first.
fn get_without_goaway(client: &mut RawH2, id: u32, block: &[u8]) -> Vec<u8> {
    client
        .send(&h2::frame(
            h2::HEADERS,
            h2::END_HEADERS | h2::END_STREAM,
            id,
            block,
        ))
        .expect("request");
    let mut body = Vec::new();
    loop {
        let (kind, flags, stream, payload) = client.read_frame().expect("the answer");
        assert_ne!(
            kind,
            h2::GOAWAY,
            "sent away before the answer on stream {id}"
        );
        if kind == h2::DATA && stream == id {
            body.extend(payload);
            if flags & h2::END_STREAM != 0 {
                return body;
            }
        }
    }
}

/// A client that sends the preface and SETTINGS and nothing else is sent away with a GOAWAY
/// after `keepalive_timeout` and closed (it never answers the PING that would let h2 close).
#[test]
fn an_idle_h2_connection_gets_goaway_then_close() {
    let (edge, _stable) = one_origin_edge("tls-h2-idle", "  limits: { keepalive_timeout: 1s }\n");
    let mut idle = RawH2::connect(edge.tls, "a.test");
    let waited = goaway_then_close(&mut idle, &[]);
    assert!(
        waited >= Duration::from_millis(900),
        "GOAWAY after {waited:?}, before the 1 s keep-alive timeout"
    );
}

/// A full TLS listener makes room for a new connection by sending its longest-idle HTTP/2
/// connection away (GOAWAY, then closed), as nginx reuses an idle connection; the newer idle
/// one stays served.
#[test]
fn a_full_listener_sends_its_longest_idle_h2_connection_away() {
    let (edge, _stable) = one_origin_edge("tls-h2-budget", "  limits: { max_connections: 2 }\n");
    let mut oldest = RawH2::connect(edge.tls, "a.test");
    assert_eq!(oldest.read_frame().expect("SETTINGS").0, h2::SETTINGS);
    let mut newer = RawH2::connect(edge.tls, "a.test");
    assert_eq!(newer.read_frame().expect("SETTINGS").0, h2::SETTINGS);

    let mut third = RawH2::connect(edge.tls, "a.test");
    let body = get_without_goaway(&mut third, 1, &h2::get_block("a.test"));
    assert_eq!(body, b"stable", "the new connection is served");
    goaway_then_close(&mut oldest, &[]);
    let body = get_without_goaway(&mut newer, 1, &h2::get_block("a.test"));
    assert_eq!(body, b"stable", "the newer idle connection stays served");
}

/// Idle between streams: the deadline counts from the end of the last answer.
#[test]
fn an_h2_connection_idle_after_a_request_gets_goaway_then_close() {
    let (edge, _stable) =
        one_origin_edge("tls-h2-idle-after", "  limits: { keepalive_timeout: 1s }\n");
    let mut client = RawH2::connect(edge.tls, "a.test");
    let body = get_without_goaway(&mut client, 1, &h2::get_block("a.test"));
    assert_eq!(body, b"stable");
    let waited = goaway_then_close(&mut client, &[]);
    assert!(
        waited >= Duration::from_millis(900),
        "GOAWAY {waited:?} after the answer, before the 1 s keep-alive timeout"
    );
}

/// A client that keeps opening streams within the timeout is served on one connection for
/// longer than the timeout, without a GOAWAY.
#[test]
fn a_busy_h2_connection_stays_open() {
    let (edge, stable) = one_origin_edge("tls-h2-busy", "  limits: { keepalive_timeout: 1s }\n");
    let mut client = RawH2::connect(edge.tls, "a.test");
    let block = h2::get_block("a.test");
    // Seven requests 300 ms apart: the connection lives for twice the timeout.
    let served = 7;
    for id in (1..).step_by(2).take(served) {
        get_without_goaway(&mut client, id, &block);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(stable.count(), served);
}

/// A HEADERS frame without END_HEADERS, then silence: the connection is sent away (GOAWAY)
/// and closed after `header_timeout`, long before the keep-alive timeout.
#[test]
fn an_unfinished_h2_header_block_gets_goaway_then_close() {
    let (edge, stable) = one_origin_edge(
        "tls-h2-header-block",
        "  limits: { header_timeout: 1s, keepalive_timeout: 1h }\n",
    );
    let mut client = RawH2::connect(edge.tls, "a.test");
    let block = h2::get_block("a.test");
    let waited = goaway_then_close(
        &mut client,
        &h2::frame(h2::HEADERS, h2::END_STREAM, 1, &block),
    );
    assert!(
        waited >= Duration::from_millis(900),
        "GOAWAY after {waited:?}, before the 1 s header timeout"
    );
    assert_eq!(
        stable.count(),
        0,
        "the unfinished request reached no origin"
    );
}
