//! End-to-end tests of the gateway core: a real gateway process in front of real origins.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::thread;

use common::*;

/// stable + canary origins behind a gateway with the README's rule set.
struct Setup {
    stable: Origin,
    canary: Origin,
    gateway: Gateway,
}

const SEED: &str = "e2e-release";

fn setup(percent: f64) -> Setup {
    let stable = Origin::start("stable-origin");
    let canary = Origin::start("canary-origin");
    let section = format!(
        "{groups}  routing:\n    cookie: canary_user\n    default: stable\n    rules:\n\
         \x20     - name: qa-override\n        header: x-canary-group\n\
         \x20     - name: vip\n        users: [\"alice\", \"bob\"]\n        group: stable\n\
         \x20     - name: rollout\n        percent: {percent}\n        seed: \"{SEED}\"\n        group: canary\n",
        groups = groups_yaml(&[("stable", &stable), ("canary", &canary)])
    );
    let gateway = Gateway::start(&section);
    Setup {
        stable,
        canary,
        gateway,
    }
}

/// (what, request headers, origin body expected, decision header expected)
type RoutingCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);

#[test]
fn cookie_header_and_default_pick_the_group() {
    let s = setup(10.0);
    let inside = format!("canary_user={}", rollout_user(SEED, 10.0, true));
    let outside = format!("canary_user={}", rollout_user(SEED, 10.0, false));
    let cases: &[RoutingCase] = &[
        ("no cookie → default", vec![], "stable-origin", "stable"),
        (
            "VIP → stable",
            vec![("Cookie", "canary_user=alice")],
            "stable-origin",
            "stable",
        ),
        (
            "rollout user → canary",
            vec![("Cookie", &inside)],
            "canary-origin",
            "canary",
        ),
        (
            "other user → default",
            vec![("Cookie", &outside)],
            "stable-origin",
            "stable",
        ),
        (
            "QA header → canary",
            vec![("x-canary-group", "canary")],
            "canary-origin",
            "canary",
        ),
        (
            "QA header beats VIP",
            vec![
                ("Cookie", "canary_user=alice"),
                ("x-canary-group", "canary"),
            ],
            "canary-origin",
            "canary",
        ),
        (
            "unknown QA value ignored",
            vec![("x-canary-group", "nope")],
            "stable-origin",
            "stable",
        ),
        (
            "quoted cookie among others",
            vec![("Cookie", "theme=dark; canary_user=\"bob\"; x=1")],
            "stable-origin",
            "stable",
        ),
        (
            "malformed cookie header → anonymous",
            vec![("Cookie", ";;==; canary_user; canary_user=\"unterminated")],
            "stable-origin",
            "stable",
        ),
    ];
    for (what, headers, body, group) in cases {
        let r = get(s.gateway.addr, "/", headers);
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.text(), *body, "{what}");
        assert_eq!(r.header("x-canary-group"), Some(*group), "{what}");
    }
    assert!(s.stable.count() > 0 && s.canary.count() > 0);
}

/// Two Cookie header lines are read as one list; the first occurrence of the cookie wins.
#[test]
fn duplicate_cookie_lines_first_wins() {
    let s = setup(100.0);
    let r = get(
        s.gateway.addr,
        "/",
        &[
            ("Cookie", "a=1"),
            ("Cookie", "canary_user=alice; canary_user=zed"),
        ],
    );
    assert_eq!(
        r.text(),
        "stable-origin",
        "alice is a VIP even though zed follows"
    );
    let r = get(
        s.gateway.addr,
        "/",
        &[("Cookie", "canary_user=zed; canary_user=alice")],
    );
    assert_eq!(
        r.text(),
        "canary-origin",
        "zed comes first and the rollout is 100%"
    );
}

#[test]
fn forwarding_headers_reach_the_origin() {
    let s = setup(10.0);
    let r = get(
        s.gateway.addr,
        "/some/path?q=1",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = s.stable.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.path, "/some/path?q=1");
    assert_eq!(
        seen.one("host"),
        "test.local",
        "Host is the client's, unchanged"
    );
    assert_eq!(
        seen.one("x-real-ip"),
        "127.0.0.1",
        "client-sent X-Real-IP is replaced"
    );
    assert_eq!(
        seen.one("x-forwarded-for"),
        "203.0.113.9, 198.51.100.1, 127.0.0.1",
        "client's values kept, client address appended"
    );
    assert_eq!(seen.one("x-forwarded-proto"), "http");
    assert_eq!(
        seen.one("x-request-id"),
        r.header("x-request-id").expect("id")
    );

    // Without a client X-Forwarded-For the header is just the client address.
    get(s.gateway.addr, "/", &[]);
    assert_eq!(s.stable.last().one("x-forwarded-for"), "127.0.0.1");
}

#[test]
fn request_id_generated_kept_or_replaced() {
    let s = setup(10.0);
    let generated = get(s.gateway.addr, "/", &[]);
    let id = generated
        .header("x-request-id")
        .expect("response has an id")
        .to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(s.stable.last().one("x-request-id"), id);
    let second = get(s.gateway.addr, "/", &[]);
    assert_ne!(
        second.header("x-request-id"),
        Some(id.as_str()),
        "ids are unique"
    );

    let kept = get(s.gateway.addr, "/", &[("X-Request-Id", "trace-42.a:b_c")]);
    assert_eq!(kept.header("x-request-id"), Some("trace-42.a:b_c"));
    assert_eq!(s.stable.last().one("x-request-id"), "trace-42.a:b_c");

    let long = "a".repeat(129);
    for bad in ["has space", "quote\"d", long.as_str()] {
        let r = get(s.gateway.addr, "/", &[("X-Request-Id", bad)]);
        let got = r.header("x-request-id").expect("id");
        assert_ne!(got, bad);
        assert_eq!(got.len(), 32);
        assert_eq!(s.stable.last().one("x-request-id"), got);
    }
}

/// Many requests, sequential and over fresh client connections, share pooled upstream
/// connections instead of opening one each.
#[test]
fn upstream_connections_are_reused() {
    let s = setup(10.0);
    let mut client = Client::connect(s.gateway.addr);
    for _ in 0..30 {
        assert_eq!(client.get("/", &[]).status, 200);
    }
    client.close();
    for _ in 0..30 {
        assert_eq!(get(s.gateway.addr, "/", &[]).status, 200);
    }
    let opened = s.stable.connections.load(Ordering::SeqCst);
    assert_eq!(s.stable.count(), 60);
    // Two worker threads may each hold a pooled connection.
    assert!(
        opened <= 2,
        "60 requests opened {opened} upstream connections"
    );
}

/// Client keep-alive: one downstream connection carries many requests.
#[test]
fn client_keep_alive() {
    let s = setup(10.0);
    let mut client = Client::connect(s.gateway.addr);
    for i in 0..10 {
        let r = client.get(
            "/",
            &[(
                "Cookie",
                if i % 2 == 0 {
                    "canary_user=alice"
                } else {
                    "x=1"
                },
            )],
        );
        assert_eq!(r.status, 200);
        assert_ne!(r.header("connection"), Some("close"));
    }
}

#[test]
fn websocket_round_trip() {
    let (ws_addr, server) = websocket_echo_origin(3);
    let stable = Origin::start("stable-origin");
    let section = format!(
        "  groups:\n    stable: {{ servers: [\"{}\"] }}\n    canary: {{ servers: [\"{ws_addr}\"] }}\n\
         \x20 routing:\n    default: stable\n    rules:\n\
         \x20     - name: vip\n        users: [\"wsuser\"]\n        group: canary\n",
        stable.addr
    );
    let gateway = Gateway::start(&section);
    let (mut ws, response) = websocket_client(gateway.addr, "canary_user=wsuser");
    assert_eq!(response.status(), 101);
    assert_eq!(
        response
            .headers()
            .get("x-canary-group")
            .and_then(|v| v.to_str().ok()),
        Some("canary")
    );
    websocket_echo_rounds(&mut ws, 0..3);
    assert_eq!(
        ws.read().expect("push").to_text().expect("text"),
        "server push"
    );
    ws.close(None).ok();
    server.join().expect("ws origin thread");
    assert_eq!(
        stable.count(),
        0,
        "the websocket went to the canary group only"
    );
}

/// 20,000 users at 10%: 9–11% land on the canary, and every user gets the same group on a
/// second request.
#[test]
fn ten_percent_rollout_over_20k_users_is_sticky() {
    let s = setup(10.0);
    const USERS: usize = 20_000;
    const CLIENTS: usize = 4;
    let addr = s.gateway.addr;
    let run = || -> HashMap<usize, String> {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                thread::spawn(move || {
                    let mut client = Client::connect(addr);
                    let mut seen = Vec::new();
                    for u in (c..USERS).step_by(CLIENTS) {
                        let cookie = format!("canary_user=u{u}");
                        let r = client.get("/", &[("Cookie", &cookie)]);
                        assert_eq!(r.status, 200);
                        seen.push((u, r.header("x-canary-group").expect("group").to_string()));
                    }
                    seen
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    };
    let first = run();
    let second = run();
    assert_eq!(first.len(), USERS);
    let canary = first.values().filter(|g| *g == "canary").count();
    assert!(
        (USERS * 9 / 100..=USERS * 11 / 100).contains(&canary),
        "{canary} of {USERS} users on the canary"
    );
    let moved = first
        .iter()
        .filter(|(u, g)| second.get(u) != Some(g))
        .count();
    assert_eq!(moved, 0, "users changed group between requests");
    assert_eq!(s.canary.count(), canary * 2);
}

#[test]
fn config_test_flag_accepts_shipped_configs_and_names_bad_keys() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let mut checked = 0;
    for entry in std::fs::read_dir(format!("{manifest}/conf")).expect("conf dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = run_binary(&["-t", "-c", path.to_str().expect("utf-8 path")]);
            assert!(
                out.status.success(),
                "{} rejected: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} shipped configs found");
    // The built-in demo (no -c) is valid too.
    assert!(run_binary(&["-t"]).status.success());

    let dir = TempDir::new("badconf");
    let good = std::fs::read_to_string(format!("{manifest}/conf/example.yaml")).expect("read");
    std::fs::copy(
        format!("{manifest}/conf/vip-users.txt"),
        dir.path().join("vip-users.txt"),
    )
    .expect("copy users file");
    let broken: &[(&str, &str, &str)] = &[
        (
            "percent: 10",
            "percent: 140",
            "gateway.routing.rules[2].percent: 140 is not in 0..=100",
        ),
        (
            "default: stable",
            "default: stabel",
            "gateway.routing.default: \"stabel\" is not a group",
        ),
        ("percent: 10", "percnt: 10", "unknown field `percnt`"),
        (
            "users_file: vip-users.txt",
            "users_file: missing.txt",
            "gateway.routing.rules[1].users_file",
        ),
        (
            "equals: always",
            "matches: \"(always\"",
            "gateway.routing.rules[3].when.cookie.matches: \"(always\" is not a valid pattern: unclosed group",
        ),
    ];
    for (from, to, message) in broken {
        let path = dir.path().join("broken.yaml");
        std::fs::write(&path, good.replacen(from, to, 1)).expect("write");
        let out = run_binary(&["-t", "-c", path.to_str().expect("utf-8")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{to} was accepted");
        assert!(stderr.contains(message), "{to}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one-line error: {stderr}");
    }
}

/// The bundled demo: no arguments → gateway on :8080 with origins on :10001 / :10002.
#[test]
fn demo_runs_with_no_arguments() {
    for port in [8080, 9090, 10001, 10002] {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken; the demo test needs 8080, 9090, 10001 and 10002 free"
        );
    }
    let cwd = TempDir::new("demo");
    // The demo keeps its changes under XDG_STATE_HOME: here, not in the user's home.
    let state_home = cwd.path().join("state");
    let start_demo = || {
        let child = std::process::Command::new(binary())
            .current_dir(cwd.path())
            .env("XDG_STATE_HOME", &state_home)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start demo");
        // The demo has no config file to read its listeners from: wait for each of them.
        for port in [8080, 9090, 10001, 10002] {
            wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        child
    };
    let mut child = start_demo();
    let addr: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
    let admin_addr: SocketAddr = "127.0.0.1:9090".parse().expect("addr");
    let v1 = get(addr, "/", &[]);
    let vip = get(addr, "/", &[("Cookie", "canary_user=alice")]);
    let rolled = get(addr, "/", &[("Cookie", "canary_user=user-6")]);
    let qa = get(addr, "/", &[("x-canary-group", "canary")]);
    // The web page and the admin API, with the demo's tokens.
    let page = get(admin_addr, "/ui/", &[]);
    let who = admin(
        admin_addr,
        "GET",
        "/whoami",
        Some("demo-viewer-token"),
        None,
    );
    let refused = admin(
        admin_addr,
        "POST",
        "/rollback",
        Some("demo-viewer-token"),
        None,
    );
    let changed = admin(
        admin_addr,
        "PUT",
        "/rules/rollout/percent",
        Some("demo-operator-token"),
        Some(r#"{"percent": 30}"#),
    );
    child.kill().ok();
    let output = child.wait_with_output().expect("demo output");
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(v1.text(), "This is version 1\n");
    assert_eq!(vip.text(), "This is version 1\n");
    assert_eq!(rolled.text(), "This is version 2\n");
    assert_eq!(qa.text(), "This is version 2\n");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("canary-gateway"), "{}", page.text());
    assert!(page
        .header("content-security-policy")
        .is_some_and(|csp| csp.starts_with("default-src 'self'")));
    assert_eq!(who.status, 200, "{}", who.text());
    assert!(who.text().contains("\"viewer\""), "{}", who.text());
    assert_eq!(
        refused.status, 403,
        "the demo's viewer token changes nothing"
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains("curl"),
        "demo prints curl commands: {printed}"
    );
    let state_file = state_home.join("canary-gateway/demo-state.json");
    assert!(
        printed.contains(&format!("kept in {}", state_file.display())),
        "the demo prints where it keeps its changes: {printed}"
    );
    assert!(state_file.exists(), "{} written", state_file.display());

    // A restart keeps the change and its audit entry.
    for port in [8080, 9090, 10001, 10002] {
        wait_until("the first demo's port is free", READY_TIMEOUT, || {
            TcpListener::bind(("127.0.0.1", port)).is_ok()
        });
    }
    let mut again = start_demo();
    let status = admin(
        admin_addr,
        "GET",
        "/status",
        Some("demo-viewer-token"),
        None,
    );
    let trail = admin(admin_addr, "GET", "/audit", Some("demo-viewer-token"), None);
    again.kill().ok();
    again.wait().ok();
    let status: serde_json::Value = serde_json::from_slice(&status.body).expect("status JSON");
    let rollout = status["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|r| r["name"] == "rollout"))
        .cloned()
        .expect("the rollout rule");
    assert_eq!(rollout["percent"], 30.0, "kept over the restart: {rollout}");
    assert!(trail.text().contains("→ 30%"), "{}", trail.text());
}
