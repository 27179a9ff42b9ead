//! End-to-end tests of draining, disabling and enabling a group's servers through the admin
//! API: real origins that count their requests (slow ones, so requests are in flight when a
//! server is drained), wrk for load, real gateway processes, and `redis-server` for two nodes.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const ADMIN_TOKEN: &str = "drain-admin-token-0123456789";
const OPERATOR_TOKEN: &str = "drain-operator-token-0123456789";
const VIEWER_TOKEN: &str = "drain-viewer-token-0123456789";

/// How long a poll for something expected within a second may take before the test fails
/// (the measured time is printed).
const POLL_LIMIT: Duration = Duration::from_secs(20);

/// A gateway with group `web` of `servers`, the admin listener on `admin` (three tokens: admin,
/// operator, viewer), the control state kept in `state_file`, and `store` if any.
fn start(servers: &[SocketAddr], admin: SocketAddr, state_file: &Path, store: &str) -> Gateway {
    let servers: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    let section = format!(
        "  groups:\n    web:\n      servers: [{servers}]\n  routing:\n    default: web\n{store}\
         \x20 admin:\n    listen: \"{admin}\"\n    token: \"{ADMIN_TOKEN}\"\n    state_file: \"{state}\"\n\
         \x20   tokens:\n\
         \x20     - {{ name: ops, token: \"{OPERATOR_TOKEN}\", role: operator }}\n\
         \x20     - {{ name: dash, token: \"{VIEWER_TOKEN}\", role: viewer }}\n",
        servers = servers.join(", "),
        state = state_file.display(),
    );
    Gateway::start(&section)
}

fn admin_port() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().expect("addr")
}

/// A gateway started by `start_two`, with what the tests reach it by.
struct Two {
    gateway: Gateway,
    admin_addr: SocketAddr,
    state_file: PathBuf,
    /// Holds the state file's folder for the test's length.
    dir: TempDir,
}

/// A gateway with group `web` of origins `a` and `b`, a fresh admin port, the state file in a
/// fresh folder, and `more` (a store, metrics) in the gateway section.
fn start_two(a: &Origin, b: &Origin, more: &str) -> Two {
    let dir = TempDir::new("drain");
    let state_file = dir.path().join("state.json");
    let admin_addr = admin_port();
    let gateway = start(&[a.addr, b.addr], admin_addr, &state_file, more);
    Two {
        gateway,
        admin_addr,
        state_file,
        dir,
    }
}

/// Ten requests from `request` are all answered by origin `b`, and `held` gets none of them
/// (`what` says why it should not).
fn assert_only_b_serves(held: &Origin, what: &str, mut request: impl FnMut() -> Response) {
    let before = held.count();
    for _ in 0..10 {
        let r = request();
        assert_eq!((r.status, r.text()), (200, "b".to_string()));
    }
    assert_eq!(held.count(), before, "{what}");
}

/// An admin call with `token`: the status and the JSON answer.
fn call(admin_addr: SocketAddr, method: &str, path: &str, token: &str) -> (u16, Value) {
    let r = admin(admin_addr, method, path, Some(token), None);
    let value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, value)
}

/// An admin call with `token` that must answer `expected`: the JSON answer.
fn call_expecting(
    admin_addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    expected: u16,
) -> Value {
    let (status, answer) = call(admin_addr, method, path, token);
    assert_eq!(status, expected, "{method} {path}: {answer}");
    answer
}

/// `POST /config/groups/web/servers/{server}/{action}` as the admin: the server's new state.
fn set(admin_addr: SocketAddr, server: SocketAddr, action: &str) -> Value {
    let path = format!("/config/groups/web/servers/{server}/{action}");
    let answer = call_expecting(admin_addr, "POST", &path, ADMIN_TOKEN, 200);
    assert_eq!(answer["group"], "web", "{answer}");
    assert_eq!(answer["server"], server.to_string(), "{answer}");
    answer
}

/// The group's view of `server` (`GET /config/groups/web/servers`).
fn server_view(admin_addr: SocketAddr, server: SocketAddr) -> Value {
    let answer = call_expecting(
        admin_addr,
        "GET",
        "/config/groups/web/servers",
        VIEWER_TOKEN,
        200,
    );
    find_server(&answer, &answer["servers"], "server", server)
}

/// The entry of `list` whose `key` is `server` (failing the test, showing `answer`, if none).
fn find_server(answer: &Value, list: &Value, key: &str, server: SocketAddr) -> Value {
    list.as_array()
        .and_then(|all| all.iter().find(|s| s[key] == server.to_string()).cloned())
        .unwrap_or_else(|| panic!("{server} not in {answer}"))
}

/// `server`'s entry in `/status`'s groups.
fn status_entry(admin_addr: SocketAddr, server: SocketAddr) -> Value {
    let answer = call_expecting(admin_addr, "GET", "/status", VIEWER_TOKEN, 200);
    find_server(&answer, &answer["groups"][0]["servers"], "addr", server)
}

/// wrk's run ended with every request answered 2xx and no socket error.
fn assert_no_failures(what: &str, requests: usize, text: &str) {
    assert!(requests > 0, "{what}: no request completed: {text}");
    assert!(!text.contains("Non-2xx"), "{what}: {text}");
    assert!(!text.contains("Socket errors"), "{what}: {text}");
}

/// Holds `server` back with `action` (drain or disable) in the middle of a wrk run against a
/// group of two slow origins: the answer shows the server `draining`/`disabled` with requests
/// in flight; once they are done (`drained`, 0 in flight) the origin never gets another
/// request; wrk sees no failed request; the other origin carries on.
fn hold_back_under_load(
    gateway: &Gateway,
    admin_addr: SocketAddr,
    held: &Origin,
    other: &Origin,
    action: &str,
) {
    let url = format!("http://{}/", gateway.addr);
    let load = thread::spawn(move || run_wrk(&["-t1", "-c8", "-d4s", &url]));
    // Load is on once the held origin has requests (a bounded poll, not a sleep).
    let before = held.count();
    wait_until("load reaches the origin", POLL_LIMIT, || {
        held.count() >= before + 4
    });
    let answer = set(admin_addr, held.addr, action);
    let at_answer = held.count();
    let expected = if action == "drain" {
        "draining"
    } else {
        "disabled"
    };
    // The origin waits 500 ms per request and wrk keeps 8 connections busy, so requests are
    // in flight on it when the change is applied.
    assert_eq!(answer["mode"], expected, "{answer}");
    assert!(
        answer["in_flight"].as_u64().is_some_and(|n| n > 0),
        "requests in flight at the {action}: {answer}"
    );
    let idle_mode = if action == "drain" {
        "drained"
    } else {
        "disabled"
    };
    let mut at_idle = 0;
    let took = wait_until("the in-flight requests finish", POLL_LIMIT, || {
        let view = server_view(admin_addr, held.addr);
        at_idle = held.count();
        view["mode"] == idle_mode && view["in_flight"] == 0
    });
    println!(
        "{action}: {} requests in flight at the answer, idle after {took:?}; origin count {at_answer} at the answer, {at_idle} when idle",
        answer["in_flight"]
    );
    assert!(
        at_idle <= at_answer + 8,
        "at most the 8 connections' requests were picked before the {action} applied: {at_answer} → {at_idle}"
    );
    let other_at_idle = other.count();
    let (requests, text) = load.join().expect("wrk thread");
    assert_no_failures(action, requests, &text);
    assert_eq!(
        held.count(),
        at_idle,
        "no request reached the {action} server once its in-flight ones were done"
    );
    assert!(
        other.count() > other_at_idle,
        "the other server kept serving"
    );
    let entry = status_entry(admin_addr, held.addr);
    assert_eq!(entry["mode"], idle_mode, "{entry}");
    assert_eq!(entry["in_flight"], 0, "{entry}");
    assert_eq!(entry["healthy"], true, "{entry}");
    assert_eq!(entry["weight"], 1, "{entry}");
}

/// Drain a server under a bounded wrk run: no new request reaches it, the ones in flight finish
/// with 200, wrk counts no failure, and it shows `draining` then `drained`. Enabled again it
/// gets traffic; disabled it gets none, again without a failed request.
#[test]
fn drain_enable_disable_under_load() {
    let slow = Duration::from_millis(500);
    let a = Origin::start_with_delay("a", slow);
    let b = Origin::start_with_delay("b", slow);
    let Two {
        gateway,
        admin_addr,
        dir: _dir,
        ..
    } = start_two(&a, &b, "");
    let view = server_view(admin_addr, a.addr);
    assert_eq!(view["mode"], "enabled", "{view}");

    hold_back_under_load(&gateway, admin_addr, &a, &b, "drain");

    let answer = set(admin_addr, a.addr, "enable");
    assert_eq!(answer["mode"], "enabled", "{answer}");
    let before = a.count();
    let url = format!("http://{}/", gateway.addr);
    let (requests, text) = run_wrk(&["-t1", "-c4", "-d2s", &url]);
    assert_no_failures("enabled", requests, &text);
    assert!(a.count() > before, "an enabled server gets traffic again");

    hold_back_under_load(&gateway, admin_addr, &a, &b, "disable");
    let answer = set(admin_addr, a.addr, "enable");
    assert_eq!(answer["mode"], "enabled", "{answer}");
}

/// Every server of the group held back: the group counts as down, so with no fallback the
/// gateway answers 503 at once; enabling one serves again.
#[test]
fn a_group_of_held_servers_is_down() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let Two {
        gateway,
        admin_addr,
        dir: _dir,
        ..
    } = start_two(&a, &b, "");
    set(admin_addr, a.addr, "drain");
    set(admin_addr, b.addr, "disable");
    let r = get(gateway.addr, "/", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    set(admin_addr, b.addr, "enable");
    let r = get(gateway.addr, "/", &[]);
    assert_eq!((r.status, r.text()), (200, "b".to_string()));
}

/// Only an admin may drain: operator and viewer tokens get 403 and nothing changes; an
/// unknown group or server is 404 naming it; the modes are kept in the state file across a
/// restart (the drained server still gets nothing).
#[test]
fn modes_need_an_admin_and_survive_a_restart() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let Two {
        gateway,
        admin_addr,
        state_file,
        dir: _dir,
    } = start_two(&a, &b, "");
    let drain = format!("/config/groups/web/servers/{}/drain", a.addr);
    for token in [OPERATOR_TOKEN, VIEWER_TOKEN] {
        call_expecting(admin_addr, "POST", &drain, token, 403);
    }
    assert_eq!(server_view(admin_addr, a.addr)["mode"], "enabled");
    let answer = call_expecting(
        admin_addr,
        "POST",
        "/config/groups/nope/servers/127.0.0.1:1/drain",
        ADMIN_TOKEN,
        404,
    );
    assert!(answer["error"].to_string().contains("nope"), "{answer}");
    let answer = call_expecting(
        admin_addr,
        "POST",
        "/config/groups/web/servers/127.0.0.1:1/drain",
        ADMIN_TOKEN,
        404,
    );
    assert!(
        answer["error"].to_string().contains("127.0.0.1:1"),
        "{answer}"
    );
    call_expecting(
        admin_addr,
        "GET",
        "/config/groups/nope/servers",
        VIEWER_TOKEN,
        404,
    );

    let answer = set(admin_addr, a.addr, "drain");
    assert_eq!(answer["mode"], "drained", "{answer}");
    let audit = call_expecting(admin_addr, "GET", "/audit", VIEWER_TOKEN, 200);
    assert!(audit.to_string().contains("server_drain"), "{audit}");
    let state = std::fs::read_to_string(&state_file).expect("state file");
    assert!(state.contains(&a.addr.to_string()), "{state}");
    drop(gateway);

    let admin_addr = admin_port();
    let gateway = start(&[a.addr, b.addr], admin_addr, &state_file, "");
    assert_eq!(server_view(admin_addr, a.addr)["mode"], "drained");
    assert_eq!(status_entry(admin_addr, a.addr)["mode"], "drained");
    let mut client = Client::connect(gateway.addr);
    assert_only_b_serves(
        &a,
        "the drained server stays drained after a restart",
        || client.get("/", &[]),
    );
}

/// Two nodes sharing a store: a drain on one applies on the other (the time it took is
/// printed), which then sends the drained server nothing.
#[test]
fn a_drain_on_one_node_applies_on_the_other() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let dir = TempDir::new("drain");
    let redis_port = free_port();
    let _redis = Redis::start(dir.path(), redis_port);
    let store = store_line(redis_port, "drain:");
    let (admin_1, admin_2) = (admin_port(), admin_port());
    let _node_1 = start(
        &[a.addr, b.addr],
        admin_1,
        &dir.path().join("1.json"),
        &store,
    );
    let node_2 = start(
        &[a.addr, b.addr],
        admin_2,
        &dir.path().join("2.json"),
        &store,
    );
    wait_store_connected(&[admin_1, admin_2], VIEWER_TOKEN);
    set(admin_1, a.addr, "drain");
    let took = wait_until("the drain reaches the other node", POLL_LIMIT, || {
        server_view(admin_2, a.addr)["mode"] == "drained"
    });
    println!("drain on node 1 applied on node 2 after {took:?}");
    let mut client = Client::connect(node_2.addr);
    assert_only_b_serves(&a, "node 2 sends the drained server nothing", || {
        client.get("/", &[])
    });
}

/// Without a store, a drain whose state file cannot be written is refused (500 naming the
/// file) and changes nothing: the server stays enabled and keeps getting requests.
#[test]
fn a_drain_that_cannot_be_kept_changes_nothing() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let Two {
        gateway,
        admin_addr,
        state_file,
        dir: _dir,
    } = start_two(&a, &b, "");
    // A non-empty folder where the state file goes: renaming the new state over it fails.
    std::fs::remove_file(&state_file).ok();
    std::fs::create_dir_all(state_file.join("in-the-way")).expect("a folder in the way");
    let path = format!("/config/groups/web/servers/{}/drain", a.addr);
    let answer = call_expecting(admin_addr, "POST", &path, ADMIN_TOKEN, 500);
    assert!(answer["error"].to_string().contains("state"), "{answer}");
    assert_eq!(server_view(admin_addr, a.addr)["mode"], "enabled");
    let before = a.count();
    let mut client = Client::connect(gateway.addr);
    for _ in 0..4 {
        assert_eq!(client.get("/", &[]).status, 200);
    }
    assert!(
        a.count() > before,
        "the refused drain left the server in service"
    );
}

/// `/metrics` shows each server's requests in flight and its mode: slow requests count on
/// their server while they run; a drain shows `draining` while they do, then `drained`.
#[test]
fn metrics_show_in_flight_requests_and_modes() {
    let a = Origin::start_with_delay("a", Duration::from_secs(4));
    let b = Origin::start("b");
    let metrics_addr = admin_port();
    let Two {
        gateway,
        admin_addr,
        dir: _dir,
        ..
    } = start_two(
        &a,
        &b,
        &format!("  metrics: {{ listen: \"{metrics_addr}\" }}\n"),
    );
    // Prometheus text writes the labels in name order: group, mode, server.
    let metric = |name: &str, mode: Option<&str>| {
        let mode = mode.map(|m| format!("mode=\"{m}\",")).unwrap_or_default();
        let series = format!("{name}{{group=\"web\",{mode}server=\"{}\"}}", a.addr);
        metric_value(&get(metrics_addr, "/metrics", &[]).text(), &series)
    };
    let mode = |m: &str| metric("gateway_upstream_server_mode", Some(m));
    let in_flight = || metric("gateway_upstream_in_flight", None);
    assert_eq!(mode("enabled"), 1.0);
    // Round robin sends every other request to the slow origin.
    let proxy = gateway.addr;
    let slow: Vec<_> = (0..4)
        .map(|_| thread::spawn(move || get(proxy, "/", &[]).status))
        .collect();
    wait_until("requests in flight on the slow server", POLL_LIMIT, || {
        in_flight() >= 1.0
    });
    let answer = set(admin_addr, a.addr, "drain");
    assert_eq!(answer["mode"], "draining", "{answer}");
    assert_eq!(mode("draining"), 1.0);
    assert_eq!(mode("enabled"), 0.0);
    for request in slow {
        assert_eq!(request.join().expect("request thread"), 200);
    }
    // The gateway ends its count when the request's context goes, just after the client
    // has the response: polled, not read once.
    let took = wait_until("the in-flight count ends", POLL_LIMIT, || {
        in_flight() == 0.0
    });
    println!("in-flight count at 0 {took:?} after the last response");
    assert_eq!(mode("drained"), 1.0);
    assert_eq!(mode("draining"), 0.0);
}

/// A websocket open on a server that is drained stays open and keeps working; the server shows
/// `draining` with it in flight, gets no new request, and is `drained` once it closes.
#[test]
fn an_open_websocket_finishes_on_a_drained_server() {
    let (ws_addr, ws_origin) = websocket_echo_origin(6);
    let b = Origin::start("b");
    let dir = TempDir::new("drain");
    let admin_addr = admin_port();
    let gateway = start(
        &[ws_addr, b.addr],
        admin_addr,
        &dir.path().join("state.json"),
        "",
    );
    // With the plain origin disabled, the websocket can only go to the echo origin.
    set(admin_addr, b.addr, "disable");
    let (mut ws, response) = websocket_client(gateway.addr, "canary_user=ws");
    assert_eq!(response.status(), 101);
    websocket_echo_rounds(&mut ws, 0..3);
    set(admin_addr, b.addr, "enable");
    let answer = set(admin_addr, ws_addr, "drain");
    assert_eq!(answer["mode"], "draining", "{answer}");
    assert_eq!(answer["in_flight"], 1, "{answer}");
    for _ in 0..4 {
        let r = get(gateway.addr, "/", &[]);
        assert_eq!((r.status, r.text()), (200, "b".to_string()));
    }
    websocket_echo_rounds(&mut ws, 3..6);
    let push = ws.read().expect("the origin's push");
    assert_eq!(push.to_text().expect("text"), "server push");
    ws.close(None).ok();
    while ws.read().is_ok() {}
    ws_origin.join().expect("the echo origin ends");
    let took = wait_until("the websocket's server is drained", POLL_LIMIT, || {
        server_view(admin_addr, ws_addr)["mode"] == "drained"
    });
    println!("drained {took:?} after the websocket closed");
}

/// A group made through the API is drained like a file group; deleting the group forgets its
/// servers' modes, so a group made again under the name starts with every server enabled.
#[test]
fn a_group_made_through_the_api_is_drained_too() {
    let file_origin = Origin::start("file");
    let (a, b) = (Origin::start("a"), Origin::start("b"));
    let dir = TempDir::new("drain");
    let admin_addr = admin_port();
    let gateway = start(
        &[file_origin.addr],
        admin_addr,
        &dir.path().join("state.json"),
        "",
    );
    let write = |method: &str, path: &str, body: Option<&str>| {
        let r = admin(admin_addr, method, path, Some(ADMIN_TOKEN), body);
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    };
    let group = format!(r#"{{"servers": ["{}", "{}"]}}"#, a.addr, b.addr);
    write("PUT", "/config/groups/api", Some(&group));
    let route = r#"{"hosts": ["api.test"], "routing": {"default": "api"}}"#;
    write("PUT", "/config/routes/api", Some(route));
    let path = format!("/config/groups/api/servers/{}/drain", a.addr);
    let answer = call_expecting(admin_addr, "POST", &path, ADMIN_TOKEN, 200);
    assert_eq!(answer["mode"], "drained", "{answer}");
    assert_only_b_serves(
        &a,
        "the drained server of the API group gets nothing",
        || get_host(gateway.addr, "api.test", "/", &[]),
    );

    write("DELETE", "/config/routes/api", None);
    write("DELETE", "/config/groups/api", None);
    write("PUT", "/config/groups/api", Some(&group));
    let answer = call_expecting(
        admin_addr,
        "GET",
        "/config/groups/api/servers",
        VIEWER_TOKEN,
        200,
    );
    let modes: Vec<&str> = answer["servers"]
        .as_array()
        .map(|all| all.iter().filter_map(|s| s["mode"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(modes, ["enabled", "enabled"], "{answer}");
}
