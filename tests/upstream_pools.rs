//! End-to-end tests of upstream pools: weighted and consistent selection, health checks,
//! retries on another server, fallback groups, and prompt errors when nothing can serve.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// The spread over servers weighted 1, 1 and 2 is 25% / 25% / 50% within ±3 points.
#[test]
fn weighted_round_robin_spread() {
    let a = Origin::start("a");
    let b = Origin::start("b");
    let c = Origin::start("c");
    let section = format!(
        "  groups:\n    stable:\n      servers: [\"{}\", \"{}\", {{ addr: \"{}\", weight: 2 }}]\n\
         \x20     selection: round_robin\n  routing:\n    default: stable\n",
        a.addr, b.addr, c.addr
    );
    let gateway = Gateway::start(&section);
    const REQUESTS: usize = 4_000;
    let mut bodies = Vec::with_capacity(REQUESTS);
    let mut client = Client::connect(gateway.addr);
    for _ in 0..REQUESTS {
        let r = client.get("/", &[]);
        assert_eq!(r.status, 200);
        bodies.push(r.text());
    }
    let counts = tally(bodies.iter().map(String::as_str));
    let share = |name: &str| counts.get(name).copied().unwrap_or(0) as f64 / REQUESTS as f64;
    for (name, expected) in [("a", 0.25), ("b", 0.25), ("c", 0.5)] {
        let got = share(name);
        assert!(
            (got - expected).abs() <= 0.03,
            "server {name}: {got:.3} of requests, expected {expected} ± 0.03 ({counts:?})"
        );
    }
}

/// Consistent selection: every user keeps hitting one server, and users spread over all three.
#[test]
fn consistent_selection_keeps_each_user_on_one_server() {
    let origins = [Origin::start("a"), Origin::start("b"), Origin::start("c")];
    let section = format!(
        "  groups:\n    stable:\n      servers: [\"{}\", \"{}\", \"{}\"]\n      selection: consistent\n\
         \x20 routing:\n    default: stable\n",
        origins[0].addr, origins[1].addr, origins[2].addr
    );
    let gateway = Gateway::start(&section);
    let mut client = Client::connect(gateway.addr);
    let mut server_of: HashMap<String, HashSet<String>> = HashMap::new();
    for round in 0..3 {
        for u in 0..300 {
            let cookie = format!("canary_user=user-{u}");
            let r = client.get("/", &[("Cookie", &cookie)]);
            assert_eq!(r.status, 200, "round {round}");
            server_of.entry(cookie).or_default().insert(r.text());
        }
    }
    let wanderers: Vec<_> = server_of.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(
        wanderers.is_empty(),
        "users on several servers: {wanderers:?}"
    );
    let used: HashSet<&String> = server_of.values().flatten().collect();
    assert_eq!(used.len(), 3, "300 users should reach all three servers");
}

/// (requests sent, failure descriptions, count of each response body)
type StreamResult = (usize, Vec<String>, HashMap<String, usize>);

/// Sends GETs from `clients` keep-alive connections until `stop`, counting non-200 answers and
/// transport errors; returns (requests, failures, bodies seen).
fn request_stream(
    addr: std::net::SocketAddr,
    clients: usize,
    cookie: &'static str,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
) -> Vec<thread::JoinHandle<StreamResult>> {
    (0..clients)
        .map(|_| {
            let stop = stop.clone();
            let sent = sent.clone();
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut requests = 0;
                let mut failures = Vec::new();
                let mut bodies = HashMap::new();
                while !stop.load(Ordering::SeqCst) && requests < 20_000 {
                    let r = client.get("/", &[("Cookie", cookie)]);
                    requests += 1;
                    sent.fetch_add(1, Ordering::SeqCst);
                    if r.status != 200 {
                        failures.push(format!("{} {}", r.status, r.text()));
                        // The gateway closes the connection after an error response.
                        client = Client::connect(addr);
                    }
                    *bodies.entry(r.text()).or_insert(0) += 1;
                }
                (requests, failures, bodies)
            })
        })
        .collect()
}

/// One of three servers is SIGKILLed in the middle of a stream of GETs: no client sees an error.
#[test]
fn killing_one_server_loses_no_request() {
    let mut victim = OriginProcess::start("s1");
    let s2 = OriginProcess::start("s2");
    let s3 = OriginProcess::start("s3");
    let section = format!(
        "  groups:\n    stable:\n      servers: [\"{}\", \"{}\", \"{}\"]\n\
         \x20     health_check: {{ type: tcp, interval: 500ms }}\n\
         \x20 routing:\n    default: stable\n",
        victim.addr, s2.addr, s3.addr
    );
    let gateway = Gateway::start(&section);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let handles = request_stream(gateway.addr, 4, "canary_user=x", stop.clone(), sent.clone());
    wait_until(
        "500 requests before the kill",
        Duration::from_secs(30),
        || sent.load(Ordering::SeqCst) >= 500,
    );
    victim.kill();
    let at_kill = sent.load(Ordering::SeqCst);
    wait_until(
        "1,000 requests after the kill",
        Duration::from_secs(60),
        || sent.load(Ordering::SeqCst) >= at_kill + 1_000,
    );
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    let mut failures = Vec::new();
    let mut bodies: HashMap<String, usize> = HashMap::new();
    for h in handles {
        let (n, f, b) = h.join().expect("client thread");
        total += n;
        failures.extend(f);
        for (k, v) in b {
            *bodies.entry(k).or_insert(0) += v;
        }
    }
    assert!(total >= 1_500, "{total} requests");
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        bodies.get("s1\n").copied().unwrap_or(0) > 0,
        "s1 served before it died: {bodies:?}"
    );
}

/// Every canary server down: canary users land on stable (0 errors, header says fallback) and
/// come back to the canary once it is up again (health-checked every second).
#[test]
fn canary_down_falls_back_to_stable_and_returns() {
    let stable = OriginProcess::start("stable");
    let mut canary = OriginProcess::start("canary");
    let canary_addr = canary.addr;
    const INTERVAL: Duration = Duration::from_secs(1);
    let section = format!(
        "  groups:\n    stable: {{ servers: [\"{}\"] }}\n    canary:\n      servers: [\"{}\"]\n\
         \x20     health_check: {{ type: http, path: /healthz, interval: 1s, timeout: 500ms, rise: 1, fall: 1 }}\n\
         \x20     fallback: stable\n\
         \x20 routing:\n    default: stable\n    rules:\n\
         \x20     - name: testers\n        users: [\"tess\"]\n        group: canary\n",
        stable.addr, canary.addr
    );
    let gateway = Gateway::start(&section);
    let cookie = [("Cookie", "canary_user=tess")];
    let r = get(gateway.addr, "/", &cookie);
    assert_eq!((r.status, r.text().as_str()), (200, "canary\n"));
    assert_eq!(r.header("x-canary-group"), Some("canary"));

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let handles = request_stream(
        gateway.addr,
        2,
        "canary_user=tess",
        stop.clone(),
        sent.clone(),
    );
    wait_until("200 requests", Duration::from_secs(30), || {
        sent.load(Ordering::SeqCst) >= 200
    });
    canary.kill();
    let at_kill = sent.load(Ordering::SeqCst);
    wait_until(
        "1,000 requests after the kill",
        Duration::from_secs(60),
        || sent.load(Ordering::SeqCst) >= at_kill + 1_000,
    );
    // By now the health check has marked the canary down: the decision header says so.
    let r = get(gateway.addr, "/", &cookie);
    assert_eq!(r.text(), "stable\n");
    assert_eq!(
        r.header("x-canary-group"),
        Some("stable; reason=fallback; from=canary")
    );
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    let mut total = 0;
    for h in handles {
        let (n, f, _) = h.join().expect("client thread");
        total += n;
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} of {total} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let _canary = OriginProcess::start_on(canary_addr, "canary");
    // The outcome is that the canary serves again; how soon (about one interval) is a figure
    // to print, not a bound a loaded machine could overrun.
    let back = wait_until("canary back", READY_TIMEOUT, || {
        get(gateway.addr, "/", &cookie).text() == "canary\n"
    });
    eprintln!("canary served again {back:?} after it came back (interval {INTERVAL:?})");
}

/// A slow origin: the read timeout answers 504, not before the timeout and before the origin
/// would have answered, and the request is not repeated.
#[test]
fn read_timeout_is_a_prompt_504() {
    // Far slower than the timeout, so a timer that fires late on a busy machine still fires
    // before the origin answers.
    let slow = Origin::start_with_delay("slow", Duration::from_secs(20));
    let section = format!(
        "  groups:\n    stable:\n      servers: [\"{}\"]\n      health_check: {{ type: none }}\n\
         \x20     timeouts: {{ read: 500ms }}\n  routing:\n    default: stable\n",
        slow.addr
    );
    let gateway = Gateway::start(&section);
    let start = Instant::now();
    let r = get(gateway.addr, "/", &[]);
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        r.text().starts_with("504"),
        "short plain body: {:?}",
        r.text()
    );
    assert!(r.header("x-request-id").is_some());
    // The 504 itself shows the timeout fired before the origin's answer (20 s away).
    assert!(
        took >= Duration::from_millis(450),
        "504 after {took:?}, before the 500ms read timeout"
    );
    eprintln!("504 after {took:?}, read timeout 500ms");
    assert_eq!(slow.count(), 1, "a timed-out request is not sent again");
}

/// Both groups' servers refuse connections: a prompt 502, never a hang.
#[test]
fn nothing_can_serve_is_a_prompt_502() {
    let dead_a = free_port();
    let dead_b = free_port();
    let section = format!(
        "  groups:\n    stable:\n      servers: [\"127.0.0.1:{dead_a}\"]\n      health_check: {{ type: none }}\n\
         \x20     timeouts: {{ connect: 1s }}\n\
         \x20   canary:\n      servers: [\"127.0.0.1:{dead_b}\"]\n      health_check: {{ type: none }}\n\
         \x20     fallback: stable\n\
         \x20 routing:\n    default: canary\n"
    );
    let gateway = Gateway::start(&section);
    let start = Instant::now();
    let r = get(gateway.addr, "/", &[]);
    let took = start.elapsed();
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.text(), "502 Bad Gateway\n");
    // Never a hang: the answer came (the client gives up after IO_TIMEOUT); how soon is a
    // figure, not a bound.
    eprintln!("502 after {took:?}");
}

/// Once health checks mark every server down (and no fallback is left), the answer is 503.
#[test]
fn no_healthy_server_is_a_503() {
    let dead = free_port();
    let section = format!(
        "  groups:\n    stable:\n      servers: [\"127.0.0.1:{dead}\"]\n\
         \x20     health_check: {{ type: tcp, interval: 200ms, fall: 1 }}\n\
         \x20 routing:\n    default: stable\n"
    );
    let gateway = Gateway::start(&section);
    wait_until("503 once the server is marked down", READY_TIMEOUT, || {
        get(gateway.addr, "/", &[]).status == 503
    });
    let r = get(gateway.addr, "/", &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "503 Service Unavailable\n");
}
