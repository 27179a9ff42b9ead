//! End-to-end tests of live operations: reload (SIGHUP and API), the admin API, the state file,
//! graceful upgrade (-u + SIGQUIT) and graceful shutdown (SIGTERM).

mod common;

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const TOKEN: &str = "test-admin-token-0123456789";
const SEED: &str = "live-seed";

struct Live {
    stable: Origin,
    canary: Origin,
    gateway: Gateway,
    admin: SocketAddr,
    metrics: SocketAddr,
}

/// The gateway section with `percent` for the rollout and `vips` on the VIP list.
fn section(
    stable: &Origin,
    canary: &Origin,
    (admin, metrics): (SocketAddr, SocketAddr),
    percent: f64,
    vips: &str,
) -> String {
    format!(
        "{groups}  routing:\n    default: stable\n    rules:\n\
         \x20     - name: qa\n        header: x-canary-group\n\
         \x20     - name: vip\n        users: [{vips}]\n        group: stable\n\
         \x20     - name: rollout\n        percent: {percent}\n        seed: {SEED}\n        group: canary\n\
         \x20 admin:\n    listen: \"{admin}\"\n    token: \"{TOKEN}\"\n    state_file: state.json\n\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n",
        groups = groups_yaml(&[("stable", stable), ("canary", canary)])
    )
}

fn start(percent: f64, vips: &str) -> Live {
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let gateway = Gateway::start(&section(&stable, &canary, (admin, metrics), percent, vips));
    Live {
        stable,
        canary,
        gateway,
        admin,
        metrics,
    }
}

impl Live {
    fn group_of(&self, user: &str) -> String {
        let cookie = format!("canary_user={user}");
        let r = get(self.gateway.addr, "/", &[("Cookie", &cookie)]);
        assert_eq!(r.status, 200);
        r.text()
    }

    /// Rewrites the config file (same listeners) with new rule settings.
    fn rewrite(&self, percent: f64, vips: &str) {
        let text = std::fs::read_to_string(&self.gateway.config_path).expect("read config");
        let head = text.split("gateway:\n").next().expect("head");
        let new = format!(
            "{head}gateway:\n  listen: [\"{}\"]\n{}",
            self.gateway.addr,
            section(
                &self.stable,
                &self.canary,
                (self.admin, self.metrics),
                percent,
                vips
            )
        );
        std::fs::write(&self.gateway.config_path, new).expect("write config");
    }

    fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let r = admin(self.admin, method, path, Some(TOKEN), body);
        let json = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, json)
    }

    /// Failed reloads so far (`gateway_reloads_total{result="error"}`).
    fn reload_errors(&self) -> f64 {
        let text = get(self.metrics, "/metrics", &[]).text();
        metric_value(&text, "gateway_reloads_total{result=\"error\"}")
    }

    fn status(&self) -> Value {
        let (code, json) = self.admin("GET", "/status", None);
        assert_eq!(code, 200, "{json}");
        json
    }
}

#[test]
fn sighup_and_api_reload_change_routing_for_new_requests() {
    let live = start(0.0, "\"alice\"");
    let user = rollout_user(SEED, 50.0, true);
    assert_eq!(live.group_of(&user), "stable");
    assert_eq!(live.status()["generation"], 1);

    live.rewrite(50.0, "\"alice\"");
    live.gateway.signal("HUP");
    wait_until("SIGHUP reload", READY_TIMEOUT, || {
        live.group_of(&user) == "canary"
    });
    let status = live.status();
    assert_eq!(status["generation"], 2);
    assert_eq!(status["last_reload"]["ok"], true);

    live.rewrite(50.0, &format!("\"alice\", \"{user}\""));
    let (code, body) = live.admin("POST", "/reload", None);
    assert_eq!(
        (code, &body["generation"]),
        (200, &Value::from(3)),
        "{body}"
    );
    assert_eq!(live.group_of(&user), "stable", "now a VIP");
}

#[test]
fn a_bad_reload_keeps_the_old_rules_and_is_reported() {
    let live = start(100.0, "\"alice\"");
    assert_eq!(live.group_of("bob"), "canary");
    let good = std::fs::read_to_string(&live.gateway.config_path).expect("read");
    std::fs::write(
        &live.gateway.config_path,
        good.replace("percent: 100", "percent: 140"),
    )
    .expect("write");
    let (code, body) = live.admin("POST", "/reload", None);
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("percent: 140 is not in 0..=100"),
        "{body}"
    );
    assert_eq!(live.reload_errors(), 1.0, "the API reload failed");
    live.gateway.signal("HUP");
    // The signal's reload is observed failing, not assumed to have run.
    wait_until("SIGHUP reload refused", READY_TIMEOUT, || {
        live.reload_errors() == 2.0
    });
    let status = live.status();
    assert_eq!(status["generation"], 1, "nothing was applied");
    assert_eq!(status["last_reload"]["ok"], false);
    assert!(status["last_reload"]["error"]
        .as_str()
        .unwrap_or("")
        .contains("gateway.routing.rules[2].percent"));
    assert_eq!(live.group_of("bob"), "canary", "old rules still serve");
    assert!(
        live.gateway.log().contains("reload refused"),
        "error is logged"
    );
}

#[test]
fn admin_api_requires_the_token_everywhere() {
    let live = start(10.0, "\"alice\"");
    let endpoints = [
        ("GET", "/status", None),
        ("GET", "/explain?user=alice", None),
        ("PUT", "/rules/rollout/percent", Some(r#"{"percent": 20}"#)),
        ("POST", "/rules/vip/users", Some(r#"{"add": ["x"]}"#)),
        ("POST", "/rollback", None),
        ("POST", "/promote", Some(r#"{"group": "canary"}"#)),
        ("POST", "/resume", None),
        ("POST", "/reload", None),
    ];
    for (method, path, body) in endpoints {
        let none = admin(live.admin, method, path, None, body);
        assert_eq!(none.status, 401, "{method} {path} without a token");
        let wrong = admin(
            live.admin,
            method,
            path,
            Some("test-admin-token-0123456788"),
            body,
        );
        assert_eq!(wrong.status, 401, "{method} {path} with a wrong token");
        let short = admin(live.admin, method, path, Some("test"), body);
        assert_eq!(
            short.status, 401,
            "{method} {path} with a prefix of the token"
        );
    }
    assert_eq!(
        live.status()["generation"],
        1,
        "no unauthorized change applied"
    );
    let in_query = admin(
        live.admin,
        "GET",
        &format!("/status?token={TOKEN}"),
        None,
        None,
    );
    assert_eq!(
        in_query.status, 400,
        "a token in the query string is refused"
    );
    let status = live.status();
    assert!(!status.to_string().contains(TOKEN), "no secret in /status");
    assert!(
        !live.gateway.log().contains(TOKEN),
        "the token is never logged"
    );
}

#[test]
fn admin_endpoints_change_routing_and_reject_bad_input() {
    let live = start(0.0, "\"alice\"");
    let user = rollout_user(SEED, 30.0, true);
    assert_eq!(live.group_of(&user), "stable");

    // Percentage.
    let (code, body) = live.admin("PUT", "/rules/rollout/percent", Some(r#"{"percent": 30}"#));
    assert_eq!(code, 200, "{body}");
    assert_eq!(live.group_of(&user), "canary");
    let rules = &live.status()["rules"];
    assert_eq!(rules[2]["percent"], 30.0);
    assert_eq!(rules[2]["percent_source"], "api");
    assert_eq!(rules[1]["users_source"], "file");

    // Users.
    let (code, body) = live.admin(
        "POST",
        "/rules/vip/users",
        Some(&format!(r#"{{"add": ["{user}"], "remove": ["alice"]}}"#)),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(live.group_of(&user), "stable");
    let (_, explain) = live.admin("GET", &format!("/explain?user={user}"), None);
    assert_eq!(
        (
            explain["group"].as_str(),
            explain["rule"].as_str(),
            explain["reason"].as_str()
        ),
        (Some("stable"), Some("vip"), Some("user_list"))
    );
    assert_eq!(
        (body["added"].as_u64(), body["removed"].as_u64()),
        (Some(1), Some(1)),
        "{body}"
    );
    let (_, explain) = live.admin("GET", "/explain?user=alice", None);
    assert_eq!(explain["rule"], Value::Null, "alice was removed: {explain}");

    // Removing an id that is not on the list changes nothing and says so: no new version, no
    // count moved, no audit entry.
    let trail_before = live.admin("GET", "/audit", None).1["entries"]
        .as_array()
        .map(Vec::len);
    let version = live.status()["control"]["version"].clone();
    let (code, body) = live.admin("POST", "/rules/vip/users", Some(r#"{"remove": ["alice"]}"#));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (
            body["changed"].as_bool(),
            body["removed"].as_u64(),
            body["not_on"].as_u64()
        ),
        (Some(false), Some(0), Some(1)),
        "{body}"
    );
    assert_eq!(live.status()["control"]["version"], version);
    let vip = live.status()["rules"][1].clone();
    assert_eq!(
        (vip["api_added"].as_u64(), vip["api_removed"].as_u64()),
        (Some(1), Some(1)),
        "{vip}"
    );
    assert_eq!(
        live.admin("GET", "/audit", None).1["entries"]
            .as_array()
            .map(Vec::len),
        trail_before
    );
    let (_, explain) = live.admin("GET", "/explain?user=alice&header=canary", None);
    assert_eq!(
        (explain["group"].as_str(), explain["rule"].as_str()),
        (Some("canary"), Some("qa"))
    );

    // Kill switch, promote, resume.
    let (code, _) = live.admin("POST", "/rollback", None);
    assert_eq!(code, 200);
    let qa = get(live.gateway.addr, "/", &[("x-canary-group", "canary")]);
    assert_eq!(
        qa.text(),
        "stable",
        "rollback turns every rule off, the QA header too"
    );
    assert_eq!(live.status()["mode"], "rollback");
    let (code, _) = live.admin("POST", "/promote", Some(r#"{"group": "canary"}"#));
    assert_eq!(code, 200);
    assert_eq!(live.group_of("alice"), "canary");
    assert_eq!(live.group_of("nobody"), "canary");
    let (code, _) = live.admin("POST", "/resume", None);
    assert_eq!(code, 200);
    assert_eq!(live.group_of(&user), "stable");
    assert_eq!(
        live.group_of("nobody-at-all"),
        live.group_of("nobody-at-all")
    );

    // Bad input: 400 with the field named, nothing applied.
    let generation = live.status()["generation"].clone();
    let bad: &[(&str, &str, &str, u16, &str)] = &[
        (
            "PUT",
            "/rules/rollout/percent",
            r#"{"percent": 140}"#,
            400,
            "percent",
        ),
        (
            "PUT",
            "/rules/rollout/percent",
            r#"{"percent": "ten"}"#,
            400,
            "percent",
        ),
        (
            "PUT",
            "/rules/rollout/percent",
            r#"{"percnt": 5}"#,
            400,
            "percnt",
        ),
        ("PUT", "/rules/rollout/percent", r#"not json"#, 400, "body"),
        (
            "PUT",
            "/rules/vip/percent",
            r#"{"percent": 5}"#,
            400,
            "name",
        ),
        (
            "POST",
            "/rules/vip/users",
            r#"{"add": ["has space"]}"#,
            400,
            "add",
        ),
        (
            "POST",
            "/rules/vip/users",
            r#"{"add": "alice"}"#,
            400,
            "add",
        ),
        ("POST", "/rules/vip/users", r#"{}"#, 400, "add"),
        (
            "POST",
            "/rules/rollout/users",
            r#"{"add": ["x"]}"#,
            400,
            "name",
        ),
        ("POST", "/promote", r#"{"group": "nope"}"#, 400, "group"),
        ("POST", "/promote", r#"{}"#, 400, "group"),
    ];
    for (method, path, body, status, field) in bad {
        let (code, json) = live.admin(method, path, Some(body));
        assert_eq!(code, *status, "{method} {path} {body}: {json}");
        assert_eq!(json["field"], *field, "{method} {path} {body}: {json}");
        assert!(json["error"].is_string());
    }
    let (code, _) = live.admin("PUT", "/rules/nope/percent", Some(r#"{"percent": 5}"#));
    assert_eq!(code, 404);
    let (code, _) = live.admin("GET", "/nope", None);
    assert_eq!(code, 404);
    let (code, _) = live.admin("DELETE", "/status", None);
    assert_eq!(code, 405);
    let big = format!(r#"{{"add": ["{}"]}}"#, "a".repeat(70 * 1024));
    let (code, _) = live.admin("POST", "/rules/vip/users", Some(&big));
    assert_eq!(code, 413, "body size limit");
    assert_eq!(
        live.status()["generation"],
        generation,
        "bad input applied nothing"
    );

    // The trail: before and after, filters and paging (newest first).
    let (_, all) = live.admin("GET", "/audit", None);
    let entries = all["entries"].as_array().expect("entries").clone();
    let actions: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["resume", "promote", "rollback", "users", "percent"],
        "{all}"
    );
    assert_eq!(
        (entries[4]["before"].as_str(), entries[4]["after"].as_str()),
        (Some("0%"), Some("30%"))
    );
    assert_eq!(entries[4]["detail"], "percent 0% → 30%");
    assert_eq!(
        (entries[3]["before"].as_str(), entries[3]["after"].as_str()),
        (Some("1 users"), Some("1 users"))
    );
    assert_eq!(
        (entries[2]["before"].as_str(), entries[2]["after"].as_str()),
        (Some("rules"), Some("rollback"))
    );
    let (_, vip) = live.admin("GET", "/audit?rule=vip", None);
    assert_eq!(vip["entries"].as_array().map(Vec::len), Some(1), "{vip}");
    let (_, nobody) = live.admin("GET", "/audit?actor=nobody", None);
    assert_eq!(nobody["entries"], serde_json::json!([]));
    let (_, page) = live.admin("GET", "/audit?limit=2", None);
    assert_eq!(page["more"], true, "{page}");
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(2));
    let before = page["next_before"].as_u64().expect("a cursor");
    let (_, older) = live.admin("GET", &format!("/audit?limit=10&before={before}"), None);
    assert_eq!(older["more"], false, "{older}");
    assert!(older["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .all(|e| e["at_ms"].as_u64() < Some(before)));
    let (code, bad) = live.admin("GET", "/audit?before=yesterday", None);
    assert_eq!((code, bad["field"].as_str()), (400, Some("before")));
}

#[test]
fn api_changes_survive_restart_and_reload() {
    let mut live = start(0.0, "\"alice\"");
    let user = rollout_user(SEED, 40.0, true);
    live.admin("PUT", "/rules/rollout/percent", Some(r#"{"percent": 40}"#));
    live.admin("POST", "/rules/vip/users", Some(r#"{"add": ["zed"]}"#));
    assert_eq!(live.group_of(&user), "canary");
    let state =
        std::fs::read_to_string(live.gateway.dir.path().join("state.json")).expect("state file");
    assert!(state.contains("\"rollout\": 40"), "{state}");

    // A reload of the unchanged file keeps the API's changes on top.
    live.gateway.signal("HUP");
    wait_until("reload", READY_TIMEOUT, || live.status()["generation"] == 4);
    assert_eq!(live.group_of(&user), "canary");

    // Restart: a new process on the same config and state file.
    live.gateway.signal("KILL");
    live.gateway.wait_status(Duration::from_secs(5));
    let dir = std::mem::replace(&mut live.gateway.dir, TempDir::new("unused"));
    let restarted =
        Gateway::start_with_file(dir, live.gateway.config_path.clone(), live.gateway.addr);
    let live = Live {
        gateway: restarted,
        ..live
    };
    assert_eq!(
        live.group_of(&user),
        "canary",
        "percent from the state file"
    );
    assert_eq!(live.group_of("zed"), "stable", "user added through the API");
    assert_eq!(live.status()["rules"][2]["percent_source"], "api");
}

/// Reloads that do not touch a user's rule never move that user.
#[test]
fn users_keep_their_group_across_unrelated_reloads() {
    let live = start(25.0, "\"alice\"");
    let users: Vec<String> = (0..2_000).map(|i| format!("u{i}")).collect();
    let mut client = Client::connect(live.gateway.addr);
    let groups_of = |client: &mut Client| -> Vec<String> {
        users
            .iter()
            .map(|u| {
                client
                    .get("/", &[("Cookie", &format!("canary_user={u}"))])
                    .text()
            })
            .collect()
    };
    let before = groups_of(&mut client);
    for round in 0..3 {
        // Change only the VIP list, with users outside the sample.
        live.rewrite(25.0, &format!("\"alice\", \"vip-{round}\""));
        let (code, body) = live.admin("POST", "/reload", None);
        assert_eq!(code, 200, "{body}");
        assert_eq!(groups_of(&mut client), before, "round {round}");
    }
    let canary = before.iter().filter(|g| *g == "canary").count();
    assert!((400..=600).contains(&canary), "25% of 2,000: {canary}");
}

/// A request in flight finishes on the rules it started with.
#[test]
fn in_flight_requests_finish_on_their_rules() {
    let slow = Origin::start_with_delay("slow-stable", Duration::from_millis(800));
    let canary = Origin::start("canary");
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let gateway = Gateway::start(&section(
        &slow,
        &canary,
        (admin_addr, metrics_addr),
        0.0,
        "\"alice\"",
    ));
    let addr = gateway.addr;
    let in_flight = thread::spawn(move || get(addr, "/", &[("Cookie", "canary_user=bob")]));
    wait_until("request reached the origin", READY_TIMEOUT, || {
        slow.count() == 1
    });
    let (code, _) = {
        let r = admin(
            admin_addr,
            "PUT",
            "/rules/rollout/percent",
            Some(TOKEN),
            Some(r#"{"percent": 100}"#),
        );
        (r.status, ())
    };
    assert_eq!(code, 200);
    let r = in_flight.join().expect("request thread");
    assert_eq!((r.status, r.text().as_str()), (200, "slow-stable"));
    assert_eq!(
        r.header("x-canary-group"),
        Some("stable"),
        "decided before the change"
    );
    assert_eq!(
        get(addr, "/", &[("Cookie", "canary_user=bob")]).text(),
        "canary"
    );
}

#[test]
fn websocket_survives_reloads() {
    let (ws_addr, server) = websocket_echo_origin(4);
    let stable = Origin::start("stable");
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "  groups:\n    stable: {{ servers: [\"{}\"] }}\n    ws: {{ servers: [\"{ws_addr}\"] }}\n\
         \x20 routing:\n    default: stable\n    rules:\n\
         \x20     - name: sockets\n        users: [\"wsuser\"]\n        group: ws\n\
         \x20 admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\" }}\n",
        stable.addr
    );
    let gateway = Gateway::start(&section);
    let (mut ws, _) = websocket_client(gateway.addr, "canary_user=wsuser");
    websocket_echo_rounds(&mut ws, 0..2);
    let r = admin(admin_addr, "POST", "/reload", Some(TOKEN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let generation = || {
        let r = admin(admin_addr, "GET", "/status", Some(TOKEN), None);
        let status: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        status["generation"].as_u64().unwrap_or(0)
    };
    assert_eq!(generation(), 2, "the API reload applied");
    gateway.signal("HUP");
    // The signal's reload is observed, so the socket below lives through it.
    wait_until("SIGHUP reload", READY_TIMEOUT, || generation() == 3);
    let r = admin(
        admin_addr,
        "POST",
        "/rules/sockets/users",
        Some(TOKEN),
        Some(r#"{"remove": ["wsuser"]}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    websocket_echo_rounds(&mut ws, 2..4);
    assert_eq!(
        ws.read().expect("push").to_text().expect("text"),
        "server push"
    );
    ws.close(None).ok();
    server.join().expect("ws origin");
    assert_eq!(
        get(gateway.addr, "/", &[("Cookie", "canary_user=wsuser")]).text(),
        "stable",
        "new requests follow the new rules"
    );
}

/// A gateway with one group, `stable` (served by `origin`), for everyone.
fn stable_gateway(origin: &Origin) -> Gateway {
    Gateway::start(&format!(
        "{}  routing:\n    default: stable\n",
        groups_yaml(&[("stable", origin)])
    ))
}

/// SIGTERM: an idle gateway exits at once; a busy one finishes the request in flight first.
/// "At once" is shown by how it exits — by the drain, which exits as soon as nothing is in
/// flight, rather than by Pingora's 5 s grace period —, not by a time that a loaded machine
/// could overrun.
#[test]
fn sigterm_drains_then_exits_promptly() {
    let stable = Origin::start("stable");
    let mut idle = stable_gateway(&stable);
    idle.signal("TERM");
    let took = idle.wait_exit(Duration::from_secs(30));
    let log = idle.log();
    assert!(
        log.contains("graceful shutdown: draining 0 request(s) in flight")
            && log.contains("graceful shutdown: drained"),
        "the idle gateway exited by the drain: {log}"
    );
    eprintln!("idle SIGTERM exit: {took:?}");

    let slow = Origin::start_with_delay("slow", Duration::from_millis(1_500));
    let mut busy = stable_gateway(&slow);
    let addr = busy.addr;
    let request = thread::spawn(move || get(addr, "/", &[]));
    wait_until("request reached the origin", READY_TIMEOUT, || {
        slow.count() == 1
    });
    busy.signal("TERM");
    let took = busy.wait_exit(Duration::from_secs(30));
    let r = request
        .join()
        .unwrap_or_else(|_| panic!("request failed; log:\n{}", busy.log()));
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "slow"),
        "the in-flight request completed"
    );
    let log = busy.log();
    assert!(
        log.contains("graceful shutdown: draining 1 request(s) in flight")
            && log.contains("graceful shutdown: drained"),
        "the busy gateway waited for its request, then exited by the drain: {log}"
    );
    eprintln!("busy SIGTERM exit (1.5 s request in flight): {took:?}");
}

/// A row of /proc/net/tcp: the ports, the state (`0A`: listening) and the socket's inode.
struct TcpRow {
    local_port: u16,
    remote_port: u16,
    state: String,
    inode: String,
}

fn tcp_table() -> Vec<TcpRow> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let hex_port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(TcpRow {
                local_port: hex_port(f.get(1)?)?,
                remote_port: hex_port(f.get(2)?)?,
                state: f.get(3)?.to_string(),
                inode: f.get(9)?.to_string(),
            })
        })
        .collect()
}

/// A connection to the gateway, once the gateway has accepted it: the server side of a
/// connection still in the listening socket's queue has inode 0 in /proc/net/tcp.
fn accepted_connection(gateway: &Gateway) -> TcpStream {
    let stream = TcpStream::connect(gateway.addr).expect("connect");
    let client = stream.local_addr().expect("local address").port();
    let port = gateway.addr.port();
    wait_until("the gateway accepts", READY_TIMEOUT, || {
        tcp_table()
            .iter()
            .any(|r| r.local_port == port && r.remote_port == client && r.inode != "0")
    });
    stream
}

/// A connection accepted before a graceful shutdown whose request arrives after it began is
/// still answered, as nginx does: its client already sent, or is sending, that request. Only
/// idle keep-alive connections are closed, which clients retry. (SIGTERM here; the old process
/// of an upgrade shuts down through the same path after SIGQUIT.)
#[test]
fn a_request_on_a_connection_accepted_before_shutdown_is_answered() {
    let stable = Origin::start("stable");
    let mut gateway = stable_gateway(&stable);
    let stream = accepted_connection(&gateway);
    gateway.signal("TERM");
    // Every proxy worker has stopped (the listening socket itself stays open until the
    // process ends, kept for an upgrade): the shutdown is under way.
    wait_until("the workers stop", READY_TIMEOUT, || {
        let log = gateway.log();
        let started = log
            .matches("Starting service: canary-gateway proxy worker")
            .count();
        let stopped = log
            .lines()
            .filter(|l| l.contains("canary-gateway proxy worker") && l.ends_with("exited."))
            .count();
        started > 0 && stopped == started
    });
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    writer
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    BufReader::new(stream).read_to_string(&mut answer).ok();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("stable"),
        "answer: {answer:?}; log:\n{}",
        gateway.log()
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer:?}"
    );
    gateway.wait_exit(Duration::from_secs(10));
}

/// A connection that stays silent through a graceful shutdown holds the process for at most
/// the first-request grace (1 s), well inside Pingora's 5 s grace period, and is then closed
/// without an answer.
#[test]
fn a_silent_connection_does_not_hold_a_shutdown() {
    let stable = Origin::start("stable");
    let mut gateway = stable_gateway(&stable);
    let mut silent = accepted_connection(&gateway);
    gateway.signal("TERM");
    let took = gateway.wait_exit(Duration::from_secs(30));
    assert!(
        gateway.log().contains("graceful shutdown: drained"),
        "exited by the drain, not by Pingora's grace period: {}",
        gateway.log()
    );
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = Vec::new();
    silent.read_to_end(&mut answer).ok();
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    eprintln!("SIGTERM exit with a silent connection open: {took:?}");
}

/// Graceful upgrade: a second process takes over the sockets (-u, then SIGQUIT to the old one)
/// while clients keep sending; no request fails and the old process exits.
#[test]
fn graceful_upgrade_drops_no_request() {
    let stable = Origin::start("stable");
    let mut old = stable_gateway(&stable);
    let addr = old.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    // A new connection each time, as browsers behind the edge do after a close.
                    let r = std::panic::catch_unwind(|| get(addr, "/", &[]));
                    match r {
                        Ok(r) if r.status == 200 => {}
                        _ => {
                            failures.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    wait_until("traffic", READY_TIMEOUT, || {
        sent.load(Ordering::SeqCst) > 200
    });
    // Serves until the test ends (killed when dropped).
    let _new = old.spawn_upgrade(2);
    old.signal("QUIT");
    let took = old.wait_exit(Duration::from_secs(30));
    let after = sent.load(Ordering::SeqCst);
    wait_until("traffic on the new process", READY_TIMEOUT, || {
        sent.load(Ordering::SeqCst) > after + 200
    });
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client");
    }
    let total = sent.load(Ordering::SeqCst);
    assert_eq!(failures.load(Ordering::SeqCst), 0, "of {total} requests");
    eprintln!("upgrade: old process exited {took:?} after SIGQUIT; {total} requests, 0 failed");
}

/// Health checks keep their timing across changes that leave a group as it is: twenty admin
/// changes and a reload in a second start no extra probe of an unchanged group (each state
/// swap used to restart every group's checks, probing every server at once).
#[test]
fn health_checks_keep_their_timing_across_changes() {
    // A server that only counts the connections (TCP health probes) it accepts.
    let listener = test_listener();
    let probed = listener.local_addr().expect("addr");
    let probes = Arc::new(AtomicUsize::new(0));
    let counter = probes.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            if stream.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let canary = Origin::start("canary");
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "  groups:\n    stable:\n      servers: [\"{probed}\"]\n\
         \x20     health_check: {{ type: tcp, interval: 30s }}\n\
         \x20   canary: {{ servers: [\"{}\"] }}\n\
         \x20 routing:\n    default: stable\n    rules:\n\
         \x20     - name: rollout\n        percent: 10\n        group: canary\n\
         \x20 admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\" }}\n",
        canary.addr
    );
    let gateway = Gateway::start(&section);
    wait_until("first probe", READY_TIMEOUT, || {
        probes.load(Ordering::SeqCst) >= 1
    });
    let first = probes.load(Ordering::SeqCst);
    for percent in 0..20 {
        let body = format!(r#"{{"percent": {percent}}}"#);
        let r = admin(
            admin_addr,
            "PUT",
            "/rules/rollout/percent",
            Some(TOKEN),
            Some(&body),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = admin(admin_addr, "POST", "/reload", Some(TOKEN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    // A positive signal that the checker has looked at the pools since all of the above: one
    // more reload, which changes the canary group only. The checker's look that starts its new
    // pool's checks is logged, and comes after its looks at every earlier state.
    let moved = Origin::start("canary-2");
    let config = std::fs::read_to_string(&gateway.config_path).expect("read config");
    let config = config.replace(&canary.addr.to_string(), &moved.addr.to_string());
    std::fs::write(&gateway.config_path, config).expect("write config");
    let r = admin(admin_addr, "POST", "/reload", Some(TOKEN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let looks = || -> Vec<String> {
        gateway
            .log()
            .lines()
            .filter(|l| l.contains("health checks: "))
            .map(str::to_string)
            .collect()
    };
    // One logged look at start (both groups' checks started), one for the canary's change.
    wait_until("the checker sees the changed group", READY_TIMEOUT, || {
        looks().len() >= 2
    });
    let looks = looks();
    assert!(
        looks.len() == 2 && looks[1].contains("1 started, 1 stopped"),
        "only the changed group's checks restarted: {looks:?}"
    );
    assert_eq!(
        probes.load(Ordering::SeqCst),
        first,
        "an unchanged group was probed again before its 30 s interval"
    );
}

/// The descriptors of the process that refer to the socket listening on `port` (found by the
/// socket's inode in /proc/net/tcp).
fn listening_descriptors(pid: u32, port: u16) -> usize {
    let inode = tcp_table()
        .into_iter()
        .find(|r| r.local_port == port && r.state == "0A")
        .expect("a listening socket on the port")
        .inode;
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the gateway's descriptors")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy() == wanted)
        .count()
}

/// `threads: 2` runs two workers, each on its own duplicate of the listening socket (one more
/// descriptor stays in Pingora's table): none is closed twice when they stop, and a graceful
/// upgrade hands all three over. Both exits above are clean (`wait_exit` checks the status).
#[test]
fn each_worker_holds_its_own_listening_descriptor() {
    let stable = Origin::start("stable");
    let mut gateway = stable_gateway(&stable);
    let port = gateway.addr.port();
    // The first worker may accept before the second has made its duplicate: wait for both.
    let pid = gateway.pid();
    wait_until(
        "the socket in the table, and one duplicate per worker",
        READY_TIMEOUT,
        || listening_descriptors(pid, port) == 3,
    );
    assert_eq!(get(gateway.addr, "/", &[]).text(), "stable");
    let new = gateway.spawn_upgrade(2);
    gateway.signal("QUIT");
    gateway.wait_exit(Duration::from_secs(30));
    wait_until("the new process serves", READY_TIMEOUT, || {
        std::panic::catch_unwind(|| get(gateway.addr, "/", &[]).text()).ok()
            == Some("stable".into())
    });
    let new_pid = new.id();
    wait_until(
        "the new process took over the same three",
        READY_TIMEOUT,
        || listening_descriptors(new_pid, port) == 3,
    );
}

/// The environment a gateway with `token_env` secrets runs with (set on its process only).
const SPEC_ENV: [(&str, &str); 3] = [
    ("CANARY_SPEC_OPERATOR", "spec-operator-token-0123456789"),
    ("CANARY_SPEC_VIEWER", "spec-viewer-token-0123456789"),
    ("CANARY_SPEC_SIGNING", "spec-signing-key-0123456789"),
];

/// A gateway process started with [`SPEC_ENV`], killed on drop.
struct WithEnv(std::process::Child);

impl Drop for WithEnv {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// The binary with `args` and [`SPEC_ENV`].
fn spec_command(args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(binary());
    command
        .args(args)
        .envs(SPEC_ENV)
        .stdin(std::process::Stdio::null());
    command
}

/// `GET /config` answers the running gateway section as YAML (for a viewer too) that `-t`
/// accepts when written next to the original file, and that reads back as the original's spec;
/// secrets referenced by variable name travel as names.
#[test]
fn get_config_answers_yaml_that_t_accepts() {
    use canary_gateway::config::GatewaySpec;

    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let dir = TempDir::new("spec");
    std::fs::write(dir.path().join("vips.txt"), "alice\nbob\n").expect("users file");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let original = format!(
        "version: 1\nthreads: 1\npid_file: {dir}/gw.pid\nupgrade_sock: {dir}/upgrade.sock\n\
         gateway:\n  listen: [\"{addr}\"]\n{groups}\
         \x20 routes:\n    - name: api\n      paths: [/api]\n      strip_prefix: true\n\
         \x20     routing:\n        default: canary\n        signing_key_env: CANARY_SPEC_SIGNING\n\
         \x20   - name: web\n      routing:\n        default: stable\n        rules:\n\
         \x20         - {{ name: vip, users_file: vips.txt, group: canary }}\n\
         \x20         - {{ name: rollout, percent: 12.5, seed: spec, group: canary }}\n\
         \x20 decision_header: X-Route\n\
         \x20 admin:\n    listen: \"{admin_addr}\"\n    token_env: CANARY_SPEC_OPERATOR\n\
         \x20   tokens: [{{ name: viewer, token_env: CANARY_SPEC_VIEWER, role: viewer }}]\n",
        dir = dir.path().display(),
        groups = groups_yaml(&[("stable", &stable), ("canary", &canary)]),
    );
    let original_path = dir.path().join("gateway.yaml");
    std::fs::write(&original_path, &original).expect("write config");
    let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log");
    let _gateway = WithEnv(
        spec_command(&["-c", &original_path.to_string_lossy()])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start canary-gateway"),
    );
    wait_for_port(addr);
    wait_for_port(admin_addr);
    let r = get(addr, "/", &[("Cookie", "canary_user=alice")]);
    assert_eq!(
        (r.status, r.header("x-route")),
        (200, Some("canary")),
        "the file is the one running"
    );

    let (_, viewer) = SPEC_ENV[1];
    let served = admin(admin_addr, "GET", "/config", Some(viewer), None);
    assert_eq!(served.status, 200, "{}", served.text());
    assert_eq!(served.header("content-type"), Some("application/yaml"));
    let yaml = served.text();
    for (_, secret) in SPEC_ENV {
        assert!(!yaml.contains(secret), "{secret} shown:\n{yaml}");
    }
    assert!(yaml.contains("token_env: CANARY_SPEC_OPERATOR"), "{yaml}");

    let written = dir.path().join("served.yaml");
    std::fs::write(&written, &yaml).expect("write served config");
    let checked = spec_command(&["-t", "-c", &written.to_string_lossy()])
        .output()
        .expect("run -t");
    assert!(
        checked.status.success(),
        "-t refused GET /config's answer: {}\n{yaml}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(
        GatewaySpec::from_yaml(&yaml).expect("served spec"),
        GatewaySpec::from_yaml(&original).expect("original spec"),
        "GET /config is the original file's spec:\n{yaml}"
    );

    let (_, operator) = SPEC_ENV[0];
    let post = admin(admin_addr, "POST", "/config", Some(operator), Some("{}"));
    assert_eq!(post.status, 405, "{}", post.text());
    let anonymous = admin(admin_addr, "GET", "/config", None, None);
    assert_eq!(anonymous.status, 401, "the configuration needs a token");
}

/// A secret written in the file (the admin token here) never leaves through `GET /config`:
/// it is replaced, and the rest of the section is shown as written.
#[test]
fn get_config_never_shows_an_inline_secret() {
    let live = start(10.0, "\"alice\"");
    let r = admin(live.admin, "GET", "/config", Some(TOKEN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let yaml = r.text();
    assert!(!yaml.contains(TOKEN), "the token is shown:\n{yaml}");
    assert!(yaml.contains("token: <redacted>"), "{yaml}");
    assert!(yaml.contains("state_file: state.json"), "{yaml}");
    assert!(yaml.contains(&format!("seed: {SEED}")), "{yaml}");
}
