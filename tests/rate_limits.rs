//! End-to-end tests of per-route rate limits (`rate_limits`, nginx's `limit_req ... nodelay`):
//! real gateway processes, a real origin that counts what reaches it, and for shared limits a
//! real `redis-server` (installed by `scripts/setup.sh test`).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::*;
use serde_json::Value;

const TOKEN: &str = "ratelimit-test-token-0123456789";

/// The limit of the loops below: 20 requests a second, 10 more at once.
const RATE: f64 = 20.0;
const BURST: f64 = 10.0;

/// A gateway with route `api` (every path) limited by `limit` (a YAML flow map), its admin API
/// and metrics endpoint; `store`: the Redis port shared limits count in.
struct Node {
    gateway: Gateway,
    admin: SocketAddr,
    metrics: SocketAddr,
}

fn node(origin: &Origin, limit: &str, store: Option<u16>) -> Node {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let store = store.map_or(String::new(), |port| {
        format!("  store: {{ redis: \"redis://127.0.0.1:{port}/0\", prefix: \"rl-test:\", timeout: 1s }}\n")
    });
    let section = format!(
        "{groups}  routes:\n    - name: api\n      rate_limits: [{limit}]\n      routing: {{ default: stable }}\n\
         {store}  admin: {{ listen: \"{admin}\", token: \"{TOKEN}\" }}\n  metrics: {{ listen: \"{metrics}\" }}\n",
        groups = groups_yaml(&[("stable", origin)])
    );
    Node {
        gateway: Gateway::start(&section),
        admin,
        metrics,
    }
}

impl Node {
    fn status(&self) -> Value {
        let r = admin(self.admin, "GET", "/status", Some(TOKEN), None);
        serde_json::from_slice(&r.body).expect("status json")
    }

    /// How the route's first limit counts now (`local`, `redis`, `local fallback`).
    fn counted(&self) -> String {
        self.status()["rate_limits"][0]["counted"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn metrics(&self) -> String {
        get(self.metrics, "/metrics", &[]).text()
    }
}

/// What a loop of requests saw.
#[derive(Default)]
struct Tally {
    admitted: usize,
    refused: usize,
}

/// Sends `n` requests as fast as one client can (each on a new connection), round-robin over
/// `nodes`, all with `headers`; every response is a 200 from the origin or a 429 with a
/// `Retry-After` of at least one second. Returns the tally and the seconds from before the
/// first request was sent to after the last answer was read.
fn burst_of(nodes: &[SocketAddr], n: usize, headers: &[(&str, &str)]) -> (Tally, f64) {
    let mut tally = Tally::default();
    let started = Instant::now();
    for i in 0..n {
        let r = get(nodes[i % nodes.len()], "/login", headers);
        match r.status {
            200 => {
                assert_eq!(r.text(), "stable");
                tally.admitted += 1;
            }
            429 => {
                let retry: u64 = r
                    .header("retry-after")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("429 without a Retry-After: {:?}", r.headers));
                assert!(retry >= 1, "Retry-After rounds up: {retry}");
                assert_eq!(r.text(), "429 Too Many Requests\n");
                tally.refused += 1;
            }
            other => panic!("request {i}: status {other} {}", r.text()),
        }
    }
    (tally, started.elapsed().as_secs_f64())
}

/// What GCRA admits from one key sending faster than the rate for `elapsed` seconds: the
/// burst and the first request at once (`BURST + 1`), then one every `1/RATE` s.
///
/// Why the bound is safe: nothing here is random. With `burst ≥ 1` a key sending faster than
/// the rate keeps its theoretical arrival time ahead of the clock, so admissions follow the
/// emission schedule exactly (no drift from request spacing). The limiter sees the requests
/// within the span the client measured (its clock starts before the first request is sent
/// and stops after the last answer), so it admits at most `BURST + 1 + elapsed·RATE`
/// (+1 for the slot the last instant may open), and at least that minus `RATE ×` the time the
/// first request and the last answer spent in flight (~1 ms each here; a 100 ms stall costs
/// 2 requests). Against ~1,900 refusals, 5 % is 90 requests: over 40 times the worst
/// deviation a stalled machine produces, so a correct limiter never fails it, while a limiter
/// off by 10 % (or one ignoring the burst, or counting per node) does.
fn expected_admitted(elapsed: f64, nodes_counting: f64) -> f64 {
    nodes_counting * (BURST + 1.0 + elapsed * RATE)
}

fn assert_within_five_percent(tally: &Tally, elapsed: f64, n: usize) {
    let expected_refused = n as f64 - expected_admitted(elapsed, 1.0);
    let off = (tally.refused as f64 - expected_refused).abs();
    println!(
        "{n} requests in {elapsed:.2} s: {} admitted, {} refused; expected {expected_refused:.0} refused (off by {off:.1})",
        tally.admitted, tally.refused
    );
    assert!(
        expected_refused > n as f64 / 2.0,
        "the loop ran slower than the rate can show ({elapsed:.1} s)"
    );
    assert!(
        off <= 0.05 * expected_refused,
        "{} refused, expected {expected_refused:.0} ± 5 %",
        tally.refused
    );
    assert!(
        tally.admitted as f64 <= expected_admitted(elapsed, 1.0) + 1.0,
        "more admitted than the rate and burst allow: {}",
        tally.admitted
    );
}

/// 2,000 requests from one client address: the burst at once, then the rate; every other
/// request 429 with `Retry-After`, none of them at the origin, each counted in
/// `gateway_rate_limited_total` and logged at most once a second. Paths outside `paths` are
/// not limited.
#[test]
fn a_client_ip_limit_admits_the_rate_and_burst_and_refuses_the_rest() {
    let origin = Origin::start("stable");
    let n = node(
        &origin,
        "{ name: login, paths: [/login], key: client_ip, rate: 20/s, burst: 10 }",
        None,
    );
    let (tally, elapsed) = burst_of(&[n.gateway.addr], 2000, &[]);
    assert_within_five_percent(&tally, elapsed, 2000);
    assert_eq!(
        origin.count(),
        tally.admitted,
        "only admitted requests reach the origin"
    );

    // The refusal counter moves before each 429 is sent; the request counters and the
    // histogram in the logging hook, after the last answer may have been read: wait for them.
    let requests = |metrics: &str, group: &str, rule: &str, status: &str| {
        let series = format!(
            "gateway_requests_total{{group=\"{group}\",route=\"api\",rule=\"{rule}\",status=\"{status}\"}}"
        );
        metric_value(metrics, &series) as usize
    };
    let timed = "gateway_request_duration_seconds_count{group=\"stable\",route=\"api\"}";
    let counted = |metrics: &str| {
        requests(metrics, "", "", "429") + requests(metrics, "stable", "default", "200") == 2000
    };
    wait_until("every request counted", READY_TIMEOUT, || {
        counted(&n.metrics())
    });
    let metrics = n.metrics();
    let series = "gateway_rate_limited_total{limit=\"login\",route=\"api\"}";
    assert_eq!(
        metric_value(&metrics, series) as usize,
        tally.refused,
        "{metrics}"
    );
    assert_eq!(
        requests(&metrics, "", "", "429"),
        tally.refused,
        "429s are requests of the route, served by no group"
    );
    assert_eq!(
        requests(&metrics, "stable", "default", "200"),
        tally.admitted
    );
    assert_eq!(
        metric_value(&metrics, timed) as usize,
        tally.admitted,
        "only what the group served is in its latency"
    );
    let other = get(n.gateway.addr, "/other", &[]);
    assert_eq!(other.status, 200, "a path the limit does not name");

    let log = n.gateway.log();
    let lines = log.matches("rate limit api/login").count();
    println!("{lines} log lines for {} refusals", tally.refused);
    assert!(lines >= 1, "refusals are logged:\n{log}");
    assert!(
        (lines as f64) <= elapsed + 2.0,
        "at most one line a second ({lines} in {elapsed:.1} s)"
    );

    let status = n.status();
    let limit = &status["rate_limits"][0];
    assert_eq!(limit["route"], "api", "{status}");
    assert_eq!(limit["key"], "client_ip");
    assert_eq!(limit["rate"], "20/s");
    assert_eq!(limit["burst"], 10);
    assert_eq!(limit["counted"], "local");
    assert_eq!(limit["local_keys"], 1, "one client address");
}

/// Keyed by a header, two clients from the same address have a limit each; a request without
/// the header counts by its address. `Retry-After` says when the key may send again.
#[test]
fn a_header_key_separates_clients() {
    let origin = Origin::start("stable");
    let n = node(
        &origin,
        "{ name: per-key, key: \"header:X-Api-Key\", rate: 1/m, burst: 2 }",
        None,
    );
    let addr = n.gateway.addr;
    let statuses = |headers: &[(&str, &str)]| -> Vec<u16> {
        (0..4).map(|_| get(addr, "/", headers).status).collect()
    };
    assert_eq!(statuses(&[("X-Api-Key", "alice")]), [200, 200, 200, 429]);
    assert_eq!(
        statuses(&[("X-Api-Key", "bob")]),
        [200, 200, 200, 429],
        "another key has its own limit"
    );
    assert_eq!(
        statuses(&[]),
        [200, 200, 200, 429],
        "no header: the address"
    );
    let refused = get(addr, "/", &[("X-Api-Key", "alice")]);
    assert_eq!(refused.status, 429);
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        (50..=60).contains(&retry),
        "1/m with the burst spent: about a minute, got {retry}"
    );
    assert_eq!(origin.count(), 9);
}

/// Keyed by user, each verified user id from the route's cookie has a limit of its own; a
/// request without one counts by its client address.
#[test]
fn a_user_key_counts_each_user() {
    let origin = Origin::start("stable");
    let n = node(
        &origin,
        "{ name: per-user, key: user, rate: 1/m, burst: 1 }",
        None,
    );
    let addr = n.gateway.addr;
    let statuses = |headers: &[(&str, &str)]| -> Vec<u16> {
        (0..3).map(|_| get(addr, "/", headers).status).collect()
    };
    assert_eq!(
        statuses(&[("Cookie", "canary_user=alice")]),
        [200, 200, 429]
    );
    assert_eq!(statuses(&[("Cookie", "canary_user=bob")]), [200, 200, 429]);
    assert_eq!(statuses(&[]), [200, 200, 429], "anonymous: the address");
    assert_eq!(origin.count(), 6);
}

/// A redis-server without persistence (every shared step writes a key) on `port`.
struct Redis(Child);

impl Redis {
    fn start(dir: &Path, port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/setup.sh test");
        wait_for_port(format!("127.0.0.1:{port}").parse().expect("addr"));
        Redis(child)
    }

    fn stop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

const SHARED: &str =
    "{ name: login, paths: [/login], key: \"header:X-Api-Key\", rate: 20/s, burst: 10, shared: true }";

/// Two nodes share one limit through Redis: 2,000 requests alternating between them are
/// admitted about as one limit allows, not two.
#[test]
fn two_nodes_share_a_limit_through_redis() {
    let dir = TempDir::new("redis");
    let port = free_port();
    let _redis = Redis::start(dir.path(), port);
    let origin = Origin::start("stable");
    let a = node(&origin, SHARED, Some(port));
    let b = node(&origin, SHARED, Some(port));
    for n in [&a, &b] {
        wait_until("the shared limit counts in Redis", READY_TIMEOUT, || {
            n.counted() == "redis"
        });
    }
    let key = [("X-Api-Key", "shared-client")];
    let (tally, elapsed) = burst_of(&[a.gateway.addr, b.gateway.addr], 2000, &key);
    assert_within_five_percent(&tally, elapsed, 2000);
    let two_limits = expected_admitted(elapsed, 2.0);
    assert!(
        (tally.admitted as f64) < 0.6 * two_limits,
        "{} admitted: one limit, not one per node ({two_limits:.0})",
        tally.admitted
    );
    assert_eq!(origin.count(), tally.admitted);
    for n in [&a, &b] {
        assert_eq!(n.counted(), "redis", "no fallback while Redis answers");
    }
}

/// With Redis stopped, a node counts shared limits on its own: requests are still served (and
/// still limited, locally), `/status` and the log say so; with Redis back it counts there
/// again.
#[test]
fn redis_stopped_falls_back_to_the_local_limiter() {
    let dir = TempDir::new("redis");
    let port = free_port();
    let mut redis = Redis::start(dir.path(), port);
    let origin = Origin::start("stable");
    let n = node(&origin, SHARED, Some(port));
    wait_until("the shared limit counts in Redis", READY_TIMEOUT, || {
        n.counted() == "redis"
    });
    let addr = n.gateway.addr;
    assert_eq!(get(addr, "/login", &[("X-Api-Key", "before")]).status, 200);

    redis.stop();
    let key = [("X-Api-Key", "during")];
    let first = get(addr, "/login", &key);
    assert_eq!(first.status, 200, "never refused because Redis is down");
    let status = n.status();
    assert_eq!(
        status["rate_limits"][0]["counted"], "local fallback",
        "{status}"
    );
    assert_eq!(status["rate_limits"][0]["fallback"], true);
    assert!(
        n.metrics().contains("gateway_rate_limit_fallback 1"),
        "the fallback gauge"
    );
    assert!(
        n.gateway
            .log()
            .contains("shared limits are counted by each node on its own"),
        "the fallback is logged:\n{}",
        n.gateway.log()
    );
    // The local limiter holds the limit meanwhile: the burst, then refusals.
    let (tally, _) = burst_of(&[addr], 40, &key);
    assert!(
        tally.admitted >= 10,
        "the burst is served: {}",
        tally.admitted
    );
    assert!(tally.refused > 0, "and the limit still holds locally");

    let _redis = Redis::start(dir.path(), port);
    wait_until(
        "the shared limit counts in Redis again",
        READY_TIMEOUT,
        || n.counted() == "redis",
    );
    assert_eq!(get(addr, "/login", &[("X-Api-Key", "after")]).status, 200);
    assert!(n.metrics().contains("gateway_rate_limit_fallback 0"));
}

/// On a route with `basic_auth`, a request whose password must be checked is counted first
/// (nginx's `limit_req` runs before `auth_basic`): a client guessing passwords gets its burst
/// of 401s, then 429s without a password check, right password or not; none reach the origin,
/// and the 429s count for the route (not as unrouted requests).
#[test]
fn a_password_guesser_is_limited_before_the_password_check() {
    use base64::Engine;
    let dir = TempDir::new("htpasswd");
    let file = dir.path().join("staging.htpasswd");
    let out = Command::new("htpasswd")
        .args(["-cbB", "-C", "5"])
        .arg(&file)
        .args(["alice", "alice-pw"])
        .output()
        .expect("run htpasswd (Debian: apache2-utils, installed by scripts/setup.sh test)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let basic = |password: &str| {
        let pair = format!("alice:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let origin = Origin::start("stable");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "{groups}  routes:\n    - name: staging\n      access: {{ basic_auth: {{ users_file: \"{file}\" }} }}\n\
         \x20     rate_limits: [{{ name: guess, key: client_ip, rate: 1/m, burst: 2 }}]\n      routing: {{ default: stable }}\n\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n",
        groups = groups_yaml(&[("stable", &origin)]),
        file = file.display()
    );
    let gateway = Gateway::start(&section);
    let wrong = basic("guess");
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(gateway.addr, "/", &[("Authorization", wrong.as_str())]).status)
        .collect();
    assert_eq!(statuses, [401, 401, 401, 429]);
    let right = basic("alice-pw");
    let limited = get(gateway.addr, "/", &[("Authorization", right.as_str())]);
    assert_eq!(
        limited.status, 429,
        "the address is held, right password or not"
    );
    assert!(limited.header("retry-after").is_some());
    assert_eq!(origin.count(), 0);
    let series = "gateway_rate_limited_total{limit=\"guess\",route=\"staging\"}";
    let requests = "gateway_requests_total{group=\"\",route=\"staging\",rule=\"\",status=\"429\"}";
    // The request counter moves in the logging hook, after the answer may have been read.
    wait_until("both 429s counted for the route", READY_TIMEOUT, || {
        metric_value(&get(metrics, "/metrics", &[]).text(), requests) == 2.0
    });
    let text = get(metrics, "/metrics", &[]).text();
    assert_eq!(metric_value(&text, series), 2.0, "{text}");
}

/// A limit of `gateway.rate_limits` is one count for every route that inherits it (as an nginx
/// zone used in several locations); a route with its own `rate_limits: []` has none; refusals
/// are counted by the route that answered them.
#[test]
fn a_gateway_wide_limit_is_one_count_across_routes() {
    let origin = Origin::start("stable");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "{groups}  rate_limits: [{{ name: per-ip, key: client_ip, rate: 1/m, burst: 2 }}]\n  routes:\n\
         \x20   - name: a\n      paths: [/a]\n      routing: {{ default: stable }}\n\
         \x20   - name: b\n      paths: [/b]\n      routing: {{ default: stable }}\n\
         \x20   - name: free\n      paths: [/free]\n      rate_limits: []\n      routing: {{ default: stable }}\n\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n",
        groups = groups_yaml(&[("stable", &origin)])
    );
    let gateway = Gateway::start(&section);
    let status = |path: &str| get(gateway.addr, path, &[]).status;
    assert_eq!(
        [status("/a"), status("/b"), status("/a"), status("/b")],
        [200, 200, 200, 429],
        "three at once across both routes, then refused"
    );
    assert_eq!(status("/a"), 429);
    assert_eq!(status("/free"), 200, "a route that opts out");
    let text = get(metrics, "/metrics", &[]).text();
    for (route, refused) in [("a", 1.0), ("b", 1.0)] {
        let series = format!("gateway_rate_limited_total{{limit=\"per-ip\",route=\"{route}\"}}");
        assert_eq!(metric_value(&text, &series), refused, "{text}");
    }
}
