//! End-to-end tests of the Redis store: a real `redis-server` on an ephemeral port (installed
//! by `scripts/setup.sh test`), real gateway nodes sharing it.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "store-test-token-0123456789";

struct Node {
    gateway: Gateway,
    admin: SocketAddr,
}

/// A gateway node: default stable, the `vip` rule sends store set `vip` to canary.
fn node(stable: &Origin, canary: &Origin, redis_port: u16, fallback: &str) -> Node {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "{groups}  routing:\n    default: stable\n    rules:\n\
         \x20     - name: vip\n        users_store: vip\n        users: [{fallback}]\n        group: canary\n\
         \x20 store: {{ redis: \"redis://127.0.0.1:{redis_port}/0\", prefix: \"t:\", resync_interval: 30s, timeout: 2s }}\n\
         \x20 admin: {{ listen: \"{admin}\", token: \"{TOKEN}\" }}\n",
        groups = groups_yaml(&[("stable", stable), ("canary", canary)])
    );
    let gateway = Gateway::start(&section);
    Node { gateway, admin }
}

impl Node {
    fn group_of(&self, user: &str) -> String {
        group_of(self.gateway.addr, user)
    }

    fn status(&self) -> Value {
        let r = admin(self.admin, "GET", "/status", Some(TOKEN), None);
        serde_json::from_slice(&r.body).expect("status json")
    }

    fn add(&self, user: &str) -> u16 {
        let body = format!(r#"{{"add": ["{user}"]}}"#);
        admin(
            self.admin,
            "POST",
            "/rules/vip/users",
            Some(TOKEN),
            Some(&body),
        )
        .status
    }
}

#[test]
fn store_backed_set_routes_and_changes_reach_every_node() {
    let dir = TempDir::new("redis");
    let redis = Redis::start(dir.path(), free_port());
    redis.sadd("t:users:vip", &["alice", "amy"]);
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let a = node(&stable, &canary, redis.port, "");
    let b = node(&stable, &canary, redis.port, "");
    for n in [&a, &b] {
        wait_until("set loaded", READY_TIMEOUT, || {
            n.group_of("alice") == "canary"
        });
        assert_eq!(n.group_of("amy"), "canary");
        assert_eq!(n.group_of("zed"), "stable");
    }
    let status = a.status();
    assert_eq!(status["store"]["connected"], true, "{status}");
    assert_eq!(status["store"]["sets"][0]["members"], 2);
    assert_eq!(status["rules"][0]["users_source"], "store");

    // A change through one node's admin API reaches the other (how soon is printed: a
    // figure, not a bound that a loaded machine could overrun).
    let mut latencies = Vec::new();
    for user in ["bob", "carol", "dave"] {
        let start = Instant::now();
        assert_eq!(a.add(user), 200);
        assert_eq!(
            a.group_of(user),
            "canary",
            "the writing node applies it at once"
        );
        wait_until("propagation", READY_TIMEOUT, || {
            b.group_of(user) == "canary"
        });
        latencies.push(start.elapsed());
    }
    eprintln!("propagation to the second node: {latencies:?}");
    let r = admin(
        b.admin,
        "POST",
        "/rules/vip/users",
        Some(TOKEN),
        Some(r#"{"remove": ["alice"]}"#),
    );
    assert_eq!(r.status, 200);
    wait_until("removal propagation", READY_TIMEOUT, || {
        a.group_of("alice") == "stable"
    });

    // An id written to Redis behind the nodes' backs (no announcement: their copies lag until
    // the next resync, 30 s away) is still removed when asked: a node that sees nothing to
    // change asks Redis before answering so.
    redis.sadd("t:users:vip", &["erin"]);
    assert_eq!(a.group_of("erin"), "stable", "a's copy lags");
    let r = admin(
        a.admin,
        "POST",
        "/rules/vip/users",
        Some(TOKEN),
        Some(r#"{"remove": ["erin"]}"#),
    );
    let body: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(
        (body["changed"].as_bool(), body["removed"].as_u64()),
        (Some(true), Some(1)),
        "{body}"
    );
    // An id on no copy and not in Redis: nothing changes, no audit entry.
    let trail = |n: &Node| {
        let r = admin(n.admin, "GET", "/audit", Some(TOKEN), None);
        let v: Value = serde_json::from_slice(&r.body).expect("audit json");
        v["entries"].as_array().map_or(0, Vec::len)
    };
    let before = trail(&a);
    let r = admin(
        a.admin,
        "POST",
        "/rules/vip/users",
        Some(TOKEN),
        Some(r#"{"remove": ["nobody"]}"#),
    );
    let body: Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(
        (body["changed"].as_bool(), body["not_on"].as_u64()),
        (Some(false), Some(1)),
        "{body}"
    );
    assert_eq!(trail(&a), before, "no audit entry");
}

/// Redis killed during a stream of requests: nothing fails, members keep their group from the
/// snapshot; Redis back: writes and propagation work again.
#[test]
fn redis_outage_changes_nothing_for_users() {
    let dir = TempDir::new("redis");
    let port = free_port();
    let mut redis = Redis::start(dir.path(), port);
    redis.sadd("t:users:vip", &["alice", "amy"]);
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let a = node(&stable, &canary, port, "");
    let b = node(&stable, &canary, port, "");
    for n in [&a, &b] {
        wait_until("set loaded", READY_TIMEOUT, || {
            n.group_of("amy") == "canary"
        });
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = [
        a.gateway.addr,
        b.gateway.addr,
        a.gateway.addr,
        b.gateway.addr,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, addr)| {
        let (stop, sent, failures) = (stop.clone(), sent.clone(), failures.clone());
        thread::spawn(move || {
            let mut client = Client::connect(addr);
            let (user, expected) = if i % 2 == 0 {
                ("alice", "canary")
            } else {
                ("zed", "stable")
            };
            while !stop.load(Ordering::SeqCst) {
                let r = client.get("/", &[("Cookie", &format!("canary_user={user}"))]);
                if r.status != 200 || r.text() != expected {
                    failures.lock().expect("lock").push(format!(
                        "{user}: {} {}",
                        r.status,
                        r.text()
                    ));
                    client = Client::connect(addr);
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    })
    .collect();
    wait_until("traffic", READY_TIMEOUT, || {
        sent.load(Ordering::SeqCst) > 300
    });
    redis.kill();
    let at_kill = sent.load(Ordering::SeqCst);
    wait_until(
        "1,000 requests with Redis down",
        Duration::from_secs(30),
        || sent.load(Ordering::SeqCst) > at_kill + 1_000,
    );
    let status = a.status();
    assert_eq!(status["store"]["connected"], false, "{status}");
    assert!(
        status["store"]["sets"][0]["stale_seconds"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{status}"
    );
    assert_eq!(
        a.add("nobody-while-down"),
        503,
        "writes fail cleanly while Redis is down"
    );

    let _redis = Redis::start(dir.path(), port);
    for n in [&a, &b] {
        wait_until("reconnected", Duration::from_secs(15), || {
            n.status()["store"]["connected"] == true
        });
    }
    let start = Instant::now();
    assert_eq!(b.add("carol"), 200);
    wait_until("propagation after the outage", READY_TIMEOUT, || {
        a.group_of("carol") == "canary"
    });
    eprintln!("propagation after the outage: {:?}", start.elapsed());
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client");
    }
    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} of {} failed: {:?}",
        failures.len(),
        sent.load(Ordering::SeqCst),
        &failures[..failures.len().min(5)]
    );
}

/// A node that starts while Redis is down serves its users file, says so, and loads the set
/// when Redis comes back.
#[test]
fn node_starts_while_redis_is_down() {
    let dir = TempDir::new("redis");
    let port = free_port();
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let a = node(&stable, &canary, port, "\"dave\"");
    assert_eq!(
        a.group_of("dave"),
        "canary",
        "users file serves until Redis is loaded"
    );
    let status = a.status();
    assert_eq!(status["store"]["connected"], false);
    assert_eq!(status["store"]["sets"][0]["loaded"], false);
    assert!(
        a.gateway.log().contains("unavailable"),
        "said loudly in the log"
    );

    let redis = Redis::start(dir.path(), port);
    redis.sadd("t:users:vip", &["alice"]);
    wait_until(
        "set loaded once Redis is up",
        Duration::from_secs(15),
        || a.group_of("alice") == "canary",
    );
    assert_eq!(
        a.group_of("dave"),
        "stable",
        "the store's set replaces the file's"
    );
    assert_eq!(a.status()["store"]["sets"][0]["loaded"], true);
}
