//! End-to-end tests of per-route access control: `allow` / `deny` by the client address (the
//! client connects from 127.0.0.1 or 127.0.0.2), and `basic_auth` against htpasswd files that
//! the real `htpasswd` tool writes (bcrypt, SHA-256 and SHA-512 crypt). A refused request
//! never reaches the origin, which counts what it receives.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;

use base64::Engine;
use common::*;
use serde_json::Value;

const TOKEN: &str = "test-admin-token-0123456789";
const ONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const TWO: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

/// Runs `htpasswd` with `args`; it must succeed.
fn htpasswd(args: &[&str]) {
    let out = Command::new("htpasswd")
        .args(args)
        .output()
        .expect("run htpasswd (Debian: apache2-utils, installed by scripts/setup.sh test)");
    assert!(
        out.status.success(),
        "htpasswd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn get_from(gateway: SocketAddr, source: IpAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    Client::connect_from(gateway, source).get(path, headers)
}

/// A gateway with the `office` route (only 127.0.0.1), the `blocked` route (all but
/// 127.0.0.2), and the open route `/`; X-Forwarded-For is believed from 127.0.0.3.
fn address_gateway(origin: &Origin) -> Gateway {
    Gateway::start(&format!(
        "{groups}  trusted_proxies: [\"127.0.0.3\"]\n  routes:\n\
         \x20   - name: office\n      paths: [/office]\n      access: {{ allow: [\"127.0.0.1\", \"10.0.0.0/8\"], deny: [\"10.9.0.0/16\"] }}\n      routing: {{ default: web }}\n\
         \x20   - name: blocked\n      paths: [/blocked]\n      access: {{ deny: [\"127.0.0.2\"] }}\n      routing: {{ default: web }}\n\
         \x20   - name: open\n      routing: {{ default: web }}\n",
        groups = groups_yaml(&[("web", origin)]),
    ))
}

/// A request from a source address, to a path, with headers, and the status it gets.
type Case = (
    IpAddr,
    &'static str,
    &'static [(&'static str, &'static str)],
    u16,
);

/// `allow` admits its networks only, `deny` refuses its own; a refusal is a 403 from the
/// gateway that never reaches the origin, while an allowed client on the same route gets
/// through.
#[test]
fn allow_and_deny_by_client_address() {
    let origin = Origin::start("web");
    let gateway = address_gateway(&origin);
    let cases: [Case; 9] = [
        (ONE, "/office/a", &[], 200),
        (TWO, "/office/a", &[], 403),
        (ONE, "/blocked/b", &[], 200),
        (TWO, "/blocked/b", &[], 403),
        (TWO, "/", &[], 200),
        // A client naming another address is not believed (127.0.0.2 is no trusted proxy)…
        (TWO, "/office/a", &[("x-forwarded-for", "127.0.0.1")], 403),
        // …while the trusted proxy's X-Forwarded-For is the client address the lists see.
        (
            "127.0.0.3".parse().expect("ip"),
            "/office/a",
            &[("x-forwarded-for", "10.1.2.3")],
            200,
        ),
        (
            "127.0.0.3".parse().expect("ip"),
            "/office/a",
            &[("x-forwarded-for", "10.9.2.3")],
            403,
        ),
        (
            "127.0.0.3".parse().expect("ip"),
            "/office/a",
            &[("x-forwarded-for", "127.0.0.1, 127.0.0.2")],
            403,
        ),
    ];
    let mut reached = 0;
    for (source, path, headers, status) in cases {
        let response = get_from(gateway.addr, source, path, headers);
        assert_eq!(
            response.status,
            status,
            "{source} {path} {headers:?}: {}",
            response.text()
        );
        if status == 200 {
            reached += 1;
            assert_eq!(response.text(), "web");
            assert_eq!(
                origin.count(),
                reached,
                "{source} {path} reached the origin"
            );
        } else {
            assert_eq!(response.text(), "403 Forbidden\n");
            assert!(response.header("x-request-id").is_some());
            assert_eq!(
                origin.count(),
                reached,
                "{source} {path} stopped at the gateway"
            );
        }
    }
    assert_eq!(origin.count(), 4, "only the admitted requests arrived");
}

/// A gateway whose `staging` route (`/staging`) needs a user of `users_file`; `/` is open.
/// It also serves the admin API and metrics.
fn auth_gateway(origin: &Origin, users_file: &Path) -> (Gateway, SocketAddr, SocketAddr) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let gateway = Gateway::start(&format!(
        "{groups}  routes:\n\
         \x20   - name: staging\n      paths: [/staging]\n      access:\n        basic_auth: {{ users_file: \"{file}\", realm: \"staging area\" }}\n      routing: {{ default: web }}\n\
         \x20   - name: open\n      routing: {{ default: web }}\n\
         \x20 admin: {{ listen: \"{admin}\", token: \"{TOKEN}\" }}\n\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n  access_log: {{ path: access.log }}\n",
        groups = groups_yaml(&[("web", origin)]),
        file = users_file.display(),
    ));
    (gateway, admin, metrics)
}

/// Users of each strong scheme get through with their password, and the origin never sees
/// their `Authorization`; no header, another scheme, a wrong password or an unknown user is a
/// 401 with the challenge, and none of them reaches the origin.
#[test]
fn basic_auth_checks_bcrypt_and_sha_crypt_users() {
    let dir = TempDir::new("htpasswd");
    let file = dir.path().join("staging.htpasswd");
    let path = file.to_str().expect("utf-8 path");
    htpasswd(&["-cbB", "-C", "5", path, "alice", "alice-pw"]);
    htpasswd(&["-b5", path, "bob", "bob-pw"]);
    htpasswd(&["-b2", path, "carol", "carol pw:with colon"]);
    let origin = Origin::start("web");
    let (gateway, admin_addr, metrics) = auth_gateway(&origin, &file);

    let refused: [(&str, Option<String>); 6] = [
        ("no header", None),
        ("another scheme", Some("Bearer alice-pw".into())),
        ("wrong password", Some(basic("alice", "alice-PW"))),
        ("wrong SHA-crypt password", Some(basic("bob", "alice-pw"))),
        ("unknown user", Some(basic("mallory", "alice-pw"))),
        ("malformed", Some("Basic %%%".into())),
    ];
    for (what, authorization) in &refused {
        let headers: Vec<(&str, &str)> = authorization
            .iter()
            .map(|v| ("authorization", v.as_str()))
            .collect();
        let response = get(gateway.addr, "/staging/page", &headers);
        assert_eq!(response.status, 401, "{what}: {}", response.text());
        assert_eq!(
            response.header("www-authenticate"),
            Some("Basic realm=\"staging area\""),
            "{what}"
        );
        assert_eq!(response.text(), "401 Unauthorized\n", "{what}");
    }
    assert_eq!(origin.count(), 0, "no refused request reached the origin");
    // The open route next to it asks for nothing.
    assert_eq!(get(gateway.addr, "/", &[]).status, 200);
    assert_eq!(origin.count(), 1);

    let users = [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol pw:with colon"),
    ];
    let mut reached = 1;
    // Twice each: the second time from the table of verified credentials.
    for round in 0..2 {
        for (user, password) in users {
            let authorization = basic(user, password);
            let response = get(
                gateway.addr,
                "/staging/page",
                &[("authorization", &authorization), ("x-round", "r")],
            );
            assert_eq!(
                response.status,
                200,
                "{user} round {round}: {}",
                response.text()
            );
            assert_eq!(response.text(), "web");
            reached += 1;
            assert_eq!(origin.count(), reached);
            let seen = origin.last();
            assert_eq!(seen.path, "/staging/page");
            assert!(
                seen.all("authorization").is_empty(),
                "{user}: the origin saw {:?}",
                seen.headers
            );
            assert_eq!(seen.one("x-round"), "r", "other headers still go through");
        }
    }
    // A verified user with the wrong password is still refused.
    let response = get(
        gateway.addr,
        "/staging/page",
        &[("authorization", &basic("alice", "bob-pw"))],
    );
    assert_eq!(response.status, 401);
    assert_eq!(origin.count(), reached);

    // Refusals are counted by route and status (after the response: waited for).
    let series = "gateway_requests_total{group=\"\",route=\"staging\",rule=\"\",status=\"401\"}";
    let counted = || metric_value(&get(metrics, "/metrics", &[]).text(), series);
    wait_until("the refusals are counted", READY_TIMEOUT, || {
        counted() == refused.len() as f64 + 1.0
    });
    // And logged with the route and why.
    let log = gateway.dir.path().join("access.log");
    let refusals = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["reason"] == "auth_required")
            .collect::<Vec<_>>()
    };
    wait_until("the refusals are logged", READY_TIMEOUT, || {
        refusals().len() == refused.len() + 1
    });
    for line in refusals() {
        assert_eq!(
            (&line["route"], &line["status"]),
            (&Value::from("staging"), &Value::from(401))
        );
        assert_eq!(line["group"], "", "{line}");
    }
    // `/status` shows the route's access control, never a hash.
    let status = admin(admin_addr, "GET", "/status", Some(TOKEN), None);
    let json: Value = serde_json::from_slice(&status.body).expect("json");
    let staging = &json["routes"][0];
    assert_eq!(staging["name"], "staging");
    let basic_auth = &staging["access"]["basic_auth"];
    assert_eq!(basic_auth["realm"], "staging area");
    assert_eq!(basic_auth["users"], 3);
    assert_eq!(basic_auth["users_file"], path);
    assert!(!status.text().contains("$2y$"), "{}", status.text());
    assert_eq!(json["routes"][1]["access"], Value::Null, "the open route");
    drop(gateway);
}

/// A reload reads the htpasswd file again: a user added to it gets through, and a weak
/// entry added later makes the reload fail while the users already loaded keep working.
#[test]
fn reload_reads_the_htpasswd_file_again() {
    let dir = TempDir::new("htpasswd");
    let file = dir.path().join("staging.htpasswd");
    let path = file.to_str().expect("utf-8 path");
    htpasswd(&["-cbB", "-C", "5", path, "alice", "alice-pw"]);
    let origin = Origin::start("web");
    let (gateway, admin_addr, _) = auth_gateway(&origin, &file);
    let status_of = |user: &str, password: &str| {
        get(
            gateway.addr,
            "/staging/",
            &[("authorization", &basic(user, password))],
        )
        .status
    };
    assert_eq!(status_of("alice", "alice-pw"), 200);
    assert_eq!(status_of("dave", "dave-pw"), 401, "not a user yet");

    htpasswd(&["-bB", "-C", "5", path, "dave", "dave-pw"]);
    gateway.signal("HUP");
    wait_until("the reload reads the new user", READY_TIMEOUT, || {
        status_of("dave", "dave-pw") == 200
    });
    assert_eq!(status_of("alice", "alice-pw"), 200);

    // A plaintext entry: the reload is refused and what was loaded stays.
    htpasswd(&["-bp", path, "eve", "eve-pw"]);
    let reload = admin(admin_addr, "POST", "/reload", Some(TOKEN), None);
    assert_eq!(reload.status, 400, "{}", reload.text());
    assert!(
        reload
            .text()
            .contains("gateway.routes[0].access.basic_auth.users_file"),
        "{}",
        reload.text()
    );
    assert!(reload.text().contains("line 3"), "{}", reload.text());
    assert!(!reload.text().contains("eve-pw"), "{}", reload.text());
    assert_eq!(status_of("dave", "dave-pw"), 200);
    assert_eq!(status_of("eve", "eve-pw"), 401);
}

/// `-t` (and so a start) refuses an htpasswd file with a plaintext or crypt(3) DES entry,
/// naming the key, the file and the line, in one line.
#[test]
fn weak_htpasswd_entries_are_refused_at_load() {
    let dir = TempDir::new("htpasswd");
    for (flag, scheme) in [("-bp", "plaintext"), ("-bd", "crypt(3) DES")] {
        let file = dir.path().join(format!("weak{flag}.htpasswd"));
        let path = file.to_str().expect("utf-8 path");
        htpasswd(&["-cbB", "-C", "5", path, "alice", "alice-pw"]);
        htpasswd(&[flag, path, "weak", "weak-pw"]);
        let config = dir.path().join("gw.yaml");
        std::fs::write(
            &config,
            format!(
                "gateway:\n  listen: [\"127.0.0.1:1\"]\n  groups:\n    web: {{ servers: [\"127.0.0.1:2\"] }}\n\
                 \x20 access: {{ basic_auth: {{ users_file: \"{path}\" }} }}\n  routing: {{ default: web }}\n"
            ),
        )
        .expect("write");
        let out = run_binary(&["-t", "-c", config.to_str().expect("utf-8")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{scheme} accepted");
        let says = format!("gateway.access.basic_auth.users_file: {path}: line 2: user \"weak\"");
        assert!(stderr.contains(&says), "{scheme}: {stderr}");
        assert!(stderr.contains(scheme), "{scheme}: {stderr}");
        assert!(!stderr.contains("weak-pw"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");
    }
}
