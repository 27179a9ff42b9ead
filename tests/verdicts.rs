//! End-to-end tests of the plans' verdicts on real traffic through a real gateway, with test
//! origins that draw each answer's delay (and 5xx) from a seeded random generator:
//! identical canary and baseline distributions pass 200 plan steps without a pause or a
//! rollback; a canary 30 % slower in its median is paused within two steps; a canary answering
//! 5xx to 20 % of requests is rolled back at its first step.
//!
//! Every plan here has the same limits: min_requests 100, errors +5 points, p99 3x, median
//! 1.15x — see [`PLAN`] for why they make the 200 fair steps safe. The fair and the slow plans
//! hold each step 1 s; the 5xx plan 10 s (see its test).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOKEN: &str = "verdict-test-token-0123456789";

/// The plans' settings (the flow mapping's keys but `hold` and `on_failure`).
///
/// The fair test runs 8 plans of 25 steps, so 200 steps. Each step is judged on every 0.5 s tick
/// from its 100th canary request until its 1 s hold is over, which is 2 to 4 looks a step. A
/// check fails a step only when the canary is over its limit AND the one-sided test is
/// significant at 99.9 %. If the test alone were the guard, 200 steps × 3 looks at 0.1 % would
/// fail a fair run about 45 % of the time (1 − 0.999^600). An earlier version of this test saw
/// it: one fair step's rank test reached z 3.28, over the 3.09 that 99.9 % asks. So the limits
/// are what keep a fair run safe, and they are set where a fair sample cannot reach them:
/// - errors: the fair origins never answer 5xx. The canary's share is 0, never over +5 points.
///   The 5xx test shows that the check still acts.
/// - median 1.15×: the latency histogram's buckets are 2^(1/4) wide, and a median is read by
///   interpolating inside its bucket. Counted in bucket widths, a median 1.15× the baseline's is
///   4 × log2(1.15) = 0.81 of a bucket above it. A group's median, read from n requests, varies
///   with a standard deviation of 0.5 / (√n × f) bucket widths, where f is the share of the
///   group's requests in the median's bucket. The difference of two medians varies with
///   √2 × 0.5 / (√n × f), which is 0.071 / f at n = 100 (the baseline gets about as many
///   requests as the canary at these steps). The fair origins wait 38.5–40.5 ms, inside the
///   bucket 38.05–45.25 ms, which leaves 4.7 ms for the gateway's own time. While the gateway
///   keeps up, most requests stay in that bucket (f near 1). Under load some spill into the next
///   bucket, for both groups alike. The test prints how many. The worst step seen, on 2 cores at
///   load average 10, had 44 % over 45.25 ms, so f = 0.56. Then 0.81 bucket widths is
///   0.81 × 0.56 / 0.071 = 6.4 standard deviations: about 1e-10 a look, about 1e-7 over the 800
///   looks. On top of that, the rank test must find the canary slower at 99.9 % at the same
///   look. The traffic must stay under the gateway's capacity, though. With 64 clients, a
///   saturated debug gateway queued requests for tens of ms, and the middle of each group
///   spread over three buckets (f about 1/3, 3.8 sigma a look). The median ratio then reached
///   1.12, so 24 clients send the traffic here. Runs with 24 clients showed largest median ratios
///   of 1.009 and 1.020.
/// - p99 3×: a fair canary's p99 over 3× the baseline's means about 135 ms against 45 ms. That
///   needs 1 % of the canary's requests stalled while the baseline's stay fast. The count of
///   canary requests over 3× the baseline's p99 must also be significant against the
///   baseline's: about 10 of 100 against none. A stall of the gateway or of the machine hits
///   requests of both groups in flight together. Stalls that pick out only canary requests
///   would be needed, and the interleaved traffic (a user's group is fixed, the users are
///   cycled) does not make them.
///
/// The slow canary is 1.3× in every draw: 50.05–52.65 ms, in the bucket 45.25–53.82 ms. Its
/// median reads at least 49.5 ms, 1.19× the fair 41.65. Every one of its requests is slower
/// than every baseline request, so the rank test's z is over 12 at 100 requests a side and the
/// first judged look fails it.
const PLAN: &str = "min_requests: 100, baseline: stable, max_error_rate_increase: 0.05, max_p99_ratio: 3, max_median_ratio: 1.15";

/// The plans' steps: 25 percentages from 38 to 62, so canary and baseline both see about half
/// the traffic on every step.
fn steps() -> String {
    let steps: Vec<String> = (38..=62).map(|p| p.to_string()).collect();
    format!("[{}]", steps.join(", "))
}

/// An origin answering each request after a delay drawn uniformly from `delay_ms`, with 500 for
/// a share `errors` of requests; the draws come from one generator seeded with `seed`.
struct SeededOrigin {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
}

/// splitmix64: a small, good, seedable generator (the tests need no crate for it).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl SeededOrigin {
    fn start(name: &'static str, delay_ms: (f64, f64), errors: f64, seed: u64) -> SeededOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let rng = Arc::new(Mutex::new(Rng(seed)));
        let served = Arc::new(AtomicUsize::new(0));
        let counted = served.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (rng, served) = (rng.clone(), counted.clone());
                thread::spawn(move || {
                    let Ok(mut writer) = stream.try_clone() else {
                        return;
                    };
                    let mut reader = BufReader::new(stream);
                    loop {
                        // A GET without a body: the head ends at the empty line.
                        let mut line = String::new();
                        loop {
                            line.clear();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" || line == "\n" => break,
                                Ok(_) => {}
                            }
                        }
                        let (delay, fail) = {
                            let mut rng = rng.lock().expect("rng");
                            let d = delay_ms.0 + (delay_ms.1 - delay_ms.0) * rng.next();
                            (d, rng.next() < errors)
                        };
                        thread::sleep(Duration::from_secs_f64(delay / 1000.0));
                        served.fetch_add(1, Ordering::Relaxed);
                        let status = if fail {
                            "500 Internal Server Error"
                        } else {
                            "200 OK"
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if writer.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SeededOrigin { addr, served }
    }
}

/// A gateway with `routes` routes (`r0`, `r1`, ... on `/r0/`, `/r1/`, ...), each with the
/// rollout rule at 38 % and its plan, and an admin API.
struct Node {
    gateway: Gateway,
    admin: SocketAddr,
    routes: usize,
}

fn start(
    routes: usize,
    (stable, canary): (&SeededOrigin, &SeededOrigin),
    hold: &str,
    on_failure: &str,
) -> Node {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut section = format!(
        "  groups:\n    stable: {{ servers: [\"{}\"] }}\n    canary: {{ servers: [\"{}\"] }}\n  routes:\n",
        stable.addr, canary.addr
    );
    for i in 0..routes {
        section.push_str(&format!(
            "    - name: r{i}\n      paths: [\"/r{i}/\"]\n      routing:\n        default: stable\n        rules:\n          - name: rollout\n            percent: 38\n            group: canary\n            plan: {{ steps: {}, hold: {hold}, {PLAN}, on_failure: {on_failure} }}\n",
            steps()
        ));
    }
    section.push_str(&format!(
        "  admin: {{ listen: \"{admin}\", token: \"{TOKEN}\" }}\n"
    ));
    Node {
        gateway: Gateway::start(&section),
        admin,
        routes,
    }
}

impl Node {
    fn call(&self, method: &str, path: &str) -> (u16, Value) {
        let r = admin(self.admin, method, path, Some(TOKEN), None);
        let value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, value)
    }

    fn plans(&self) -> Vec<Value> {
        let (status, answer) = self.call("GET", "/status");
        assert_eq!(status, 200, "{answer}");
        answer["plans"].as_array().cloned().unwrap_or_default()
    }

    fn start_plans(&self) {
        for i in 0..self.routes {
            let (status, answer) =
                self.call("POST", &format!("/routes/r{i}/rules/rollout/plan/start"));
            assert_eq!(status, 200, "r{i}: {answer}");
        }
    }

    /// Every plan once none runs any more.
    fn outcome(&self, limit: Duration) -> Vec<Value> {
        let mut plans = Vec::new();
        wait_until("every plan stops running", limit, || {
            plans = self.plans();
            plans.len() == self.routes && plans.iter().all(|p| p["state"] != "running")
        });
        plans
    }
}

/// `threads` client threads sending requests to every route in turn, as 5,000 users, until
/// stopped; returns the number of requests answered.
struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<usize>>,
}

impl Traffic {
    fn start(node: &Node, threads: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|t| {
                let (stop, addr, routes) = (stop.clone(), node.gateway.addr, node.routes);
                thread::spawn(move || {
                    let mut client = Client::connect(addr);
                    let mut i = t * 7919;
                    let mut sent = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let cookie = format!("canary_user=user-{}", i % 5000);
                        let path = format!("/r{}/", i % routes);
                        let r = client.get(&path, &[("Cookie", &cookie)]);
                        assert!(r.status == 200 || r.status == 500, "{}", r.status);
                        i += 1;
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        Traffic { stop, threads }
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .sum()
    }
}

/// The fair delays and the slow canary's (30 % slower, every draw).
const FAIR_MS: (f64, f64) = (38.5, 40.5);
const SLOW_MS: (f64, f64) = (FAIR_MS.0 * 1.3, FAIR_MS.1 * 1.3);

/// 8 plans of 25 steps over a canary and a baseline with the same seeded delay distribution
/// (different seeds): all 200 steps pass, no plan pauses (see [`PLAN`] for why a fair run
/// fails far less than once in a million).
#[test]
fn two_hundred_fair_steps_pass() {
    let stable = SeededOrigin::start("stable", FAIR_MS, 0.0, 1);
    let canary = SeededOrigin::start("canary", FAIR_MS, 0.0, 2);
    let node = start(8, (&stable, &canary), "1s", "pause");
    node.start_plans();
    let started = Instant::now();
    let traffic = Traffic::start(&node, 24);
    let plans = node.outcome(Duration::from_secs(600));
    let sent = traffic.stop();
    eprintln!(
        "200 fair steps in {:?}: {sent} requests, stable served {}, canary {}",
        started.elapsed(),
        stable.served.load(Ordering::Relaxed),
        canary.served.load(Ordering::Relaxed)
    );
    for plan in &plans {
        assert_eq!(plan["state"], "completed", "{plan}");
        assert_eq!(plan["step"], 25, "{plan}");
    }
    let (_, trail) = node.call("GET", "/audit?limit=1000");
    let entries = trail["entries"].as_array().expect("entries");
    let count = |action: &str| entries.iter().filter(|e| e["action"] == action).count();
    assert_eq!(count("plan_advance"), 8 * 24, "24 advances a plan");
    assert_eq!(count("plan_complete"), 8, "and its last step passed");
    assert_eq!(count("plan_pause") + count("plan_rollback"), 0);
    // Every passed step was judged on its own figures with the median compared.
    let judged = entries
        .iter()
        .filter(|e| e["action"] == "plan_advance" || e["action"] == "plan_complete");
    let (mut worst_ratio, mut worst_z, mut top_median) = (0f64, f64::MIN, 0f64);
    for entry in judged {
        let figures = &entry["figures"];
        assert!(
            figures["canary"]["requests"].as_u64().unwrap_or(0) >= 60,
            "{entry}"
        );
        let tests = figures["tests"].as_array().expect("tests");
        let shift = tests
            .iter()
            .find(|t| t["check"] == "latency_shift")
            .unwrap_or_else(|| panic!("the median compared: {entry}"));
        assert_eq!(shift["decision"], "pass", "{entry}");
        worst_ratio = worst_ratio.max(shift["effect"].as_f64().unwrap_or(0.0));
        worst_z = worst_z.max(shift["z"].as_f64().unwrap_or(0.0));
        for group in ["canary", "baseline"] {
            top_median = top_median.max(figures[group]["median_ms"].as_f64().unwrap_or(0.0));
        }
    }
    // A median of m ms in the bucket 38.05-45.25 ms, read by interpolation, means a share
    // 1 - 3.6 / (m - 38.05) of the group's requests took longer than 45.25 ms (see PLAN).
    let q = (1.0 - 3.6 / (top_median - 38.05)).max(0.0);
    eprintln!("largest median of a group in a step {top_median:.2} ms: at most {q:.3} of its requests over 45.25 ms");
    eprintln!("largest median ratio of the 200 steps {worst_ratio:.3} (limit 1.15), largest rank-test z {worst_z:.2} (3.09 at 99.9 %)");
}

/// A canary 30 % slower in every draw (so in its median) is paused within two steps, by the
/// median check.
#[test]
fn a_canary_thirty_percent_slower_is_paused_within_two_steps() {
    let stable = SeededOrigin::start("stable", FAIR_MS, 0.0, 3);
    let canary = SeededOrigin::start("canary", SLOW_MS, 0.0, 4);
    let node = start(1, (&stable, &canary), "1s", "pause");
    node.start_plans();
    let traffic = Traffic::start(&node, 8);
    let plan = node.outcome(Duration::from_secs(120)).remove(0);
    traffic.stop();
    assert_eq!(plan["state"], "paused", "{plan}");
    let step = plan["step"].as_u64().unwrap_or(0);
    assert!((1..=2).contains(&step), "paused at step {step}: {plan}");
    let action = &plan["last_action"];
    assert_eq!(action["action"], "pause");
    let tests = action["figures"]["tests"].as_array().expect("tests");
    let shift = tests
        .iter()
        .find(|t| t["check"] == "latency_shift")
        .expect("the median check");
    assert_eq!(shift["decision"], "fail", "{shift}");
    assert_eq!(shift["test"], "mann_whitney_u");
    assert!(shift["effect"].as_f64().unwrap_or(0.0) > 1.15, "{shift}");
    assert!(shift["p_value"].as_f64().unwrap_or(1.0) < 0.001, "{shift}");
    let errors = tests
        .iter()
        .find(|t| t["check"] == "errors")
        .expect("errors");
    assert_eq!(errors["decision"], "pass", "no errors: {errors}");
}

/// A canary answering 5xx to a seeded 20 % of requests is rolled back at its first step, by
/// the error check. The step holds 10 s, because a step passes only after its hold, with the
/// canary's share under the limit. With a 1 s hold, a slow machine could judge the step on as
/// few as 100 requests, and 5 or fewer errors (a share of 5 % or less) happen about twice in
/// 100,000 there. By 10 s, at even 20 canary requests a second, the share rests on 200
/// requests, and 10 or fewer errors of 200 at 20 % happen about once in a billion. Over the
/// limit, the step fails at the first look where the two-proportion test is significant:
/// 20 errors of 100 against none of 100 baseline requests is z = 4.7 already.
#[test]
fn a_canary_with_twenty_percent_5xx_is_rolled_back_in_one_step() {
    let stable = SeededOrigin::start("stable", FAIR_MS, 0.0, 5);
    let canary = SeededOrigin::start("canary", FAIR_MS, 0.2, 6);
    let node = start(1, (&stable, &canary), "10s", "rollback");
    node.start_plans();
    let traffic = Traffic::start(&node, 8);
    let plan = node.outcome(Duration::from_secs(120)).remove(0);
    traffic.stop();
    assert_eq!(plan["state"], "rolled_back", "{plan}");
    assert_eq!(plan["step"], 1, "at its first step: {plan}");
    let action = &plan["last_action"];
    assert_eq!(action["action"], "rollback");
    let tests = action["figures"]["tests"].as_array().expect("tests");
    let errors = tests
        .iter()
        .find(|t| t["check"] == "errors")
        .expect("errors");
    assert_eq!(errors["decision"], "fail", "{errors}");
    assert!(errors["effect"].as_f64().unwrap_or(0.0) > 0.05, "{errors}");
}
