//! End-to-end tests of `gateway.notify`: a real gateway posting to webhook receivers on
//! 127.0.0.1 (plain TCP listeners in the test) — the JSON body of a plan's rollback and of an
//! operator's kill switch, the Slack text, retries against a receiver answering 500, and a
//! receiver that never answers holding back no change.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const TOKEN: &str = "notify-test-token-0123456789";

/// A webhook receiver: records each request's path and body and answers `status` (`None`:
/// accepts, reads, and never answers).
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<(String, Value)>>>,
    /// Connections accepted (a silent receiver's requests are counted here too).
    accepted: Arc<Mutex<usize>>,
}

impl Receiver {
    fn start(status: Option<u16>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(Mutex::new(0));
        let (r, a) = (received.clone(), accepted.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                *a.lock().expect("lock") += 1;
                let r = r.clone();
                thread::spawn(move || serve(stream, status, &r));
            }
        });
        Receiver {
            addr,
            received,
            accepted,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        let received = self.received.lock().expect("lock");
        received.iter().map(|(_, body)| body.clone()).collect()
    }

    fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }

    fn accepted(&self) -> usize {
        *self.accepted.lock().expect("lock")
    }
}

/// Reads one request (head and `Content-Length` body), records it, answers.
fn serve(mut stream: TcpStream, status: Option<u16>, received: &Mutex<Vec<(String, Value)>>) {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    };
    while data.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    let body = serde_json::from_slice(&data[head_end..head_end + length]).unwrap_or(Value::Null);
    assert!(head.starts_with("POST "), "{head}");
    received.lock().expect("lock").push((target, body));
    match status {
        Some(code) => {
            let answer =
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            stream.write_all(answer.as_bytes()).ok();
        }
        // Holds the connection open, answering nothing, until the gateway gives up.
        None => while matches!(stream.read(&mut chunk), Ok(n) if n > 0) {},
    }
}

/// A gateway with the rollout rule at `percent`, its `plan` (if any), an admin API and
/// metrics, and `notify` (YAML list items, indented four spaces).
struct Node {
    gateway: Gateway,
    admin: SocketAddr,
    metrics: SocketAddr,
}

fn start(
    (stable, canary): (&Origin, &Origin),
    percent: u32,
    plan: Option<&str>,
    notify: &str,
) -> Node {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let plan = plan
        .map(|p| format!("        plan: {p}\n"))
        .unwrap_or_default();
    let section = format!(
        "{groups}  routing:\n    default: stable\n    rules:\n\
         \x20     - name: rollout\n        percent: {percent}\n        group: canary\n{plan}\
         \x20 admin: {{ listen: \"{admin}\", token: \"{TOKEN}\" }}\n\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n\
         \x20 notify:\n{notify}",
        groups = groups_yaml(&[("stable", stable), ("canary", canary)]),
    );
    Node {
        gateway: Gateway::start(&section),
        admin,
        metrics,
    }
}

impl Node {
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let r = admin(self.admin, method, path, Some(TOKEN), body);
        let value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        (r.status, value)
    }

    fn plan_state(&self) -> String {
        let (_, status) = self.call("GET", "/status", None);
        status["plans"][0]["state"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn metric(&self, series: &str) -> f64 {
        metric_value(&get(self.metrics, "/metrics", &[]).text(), series)
    }
}

/// Client threads sending requests as many users until stopped.
fn traffic(addr: SocketAddr, stop: &Arc<AtomicBool>) -> Vec<thread::JoinHandle<()>> {
    (0..2)
        .map(|t| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut i = t * 7919;
                while !stop.load(Ordering::SeqCst) {
                    let cookie = format!("canary_user=user-{}", i % 1000);
                    client.get("/", &[("Cookie", &cookie)]);
                    i += 1;
                }
            })
        })
        .collect()
}

/// A plan rolls back a canary answering 5xx to one request in five: the `rollback` webhook
/// gets a JSON body naming the route, rule, action, actor `plan`, the step's figures, the
/// versions and a timestamp; an operator's kill switch after it is posted too, with the
/// operator as actor; a percentage set by hand (`manual` only) is not. The Slack webhook
/// (every event) gets `{"text": …}` only, for each of the changes.
#[test]
fn a_rollback_is_posted_as_json_and_as_slack_text() {
    let rollbacks = Receiver::start(Some(204));
    let slack = Receiver::start(Some(200));
    let stable = Origin::start("stable");
    let canary = Origin::start_with("canary", Duration::ZERO, 5);
    let notify = format!(
        "    - {{ webhook: \"{}\", events: [rollback] }}\n    - {{ webhook: \"{}\", format: slack }}\n",
        rollbacks.url("/hooks/rollbacks?team=edge"),
        slack.url("/services/T0/B0/secret"),
    );
    let node = start(
        (&stable, &canary),
        20,
        Some("{ steps: [20, 100], hold: 30s, min_requests: 40, baseline: stable, max_error_rate_increase: 0.05, on_failure: rollback }"),
        &notify,
    );
    let (status, _) = node.call("POST", "/rules/rollout/plan/start", None);
    assert_eq!(status, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let threads = traffic(node.gateway.addr, &stop);
    wait_until("the plan rolls back", Duration::from_secs(60), || {
        node.plan_state() == "rolled_back"
    });
    stop.store(true, Ordering::SeqCst);
    threads.into_iter().for_each(|t| t.join().expect("traffic"));
    let (status, _) = node.call("PUT", "/rules/rollout/percent", Some(r#"{"percent": 5}"#));
    assert_eq!(status, 200, "a manual change");
    let (status, _) = node.call("POST", "/rollback", None);
    assert_eq!(status, 200, "the kill switch");

    // Start, plan rollback, percent, kill switch: four changes, each to the Slack hook.
    wait_until("four notices on the slack hook", READY_TIMEOUT, || {
        slack.count() == 4
    });
    wait_until("two notices on the rollback hook", READY_TIMEOUT, || {
        rollbacks.count() >= 2
    });
    let bodies = rollbacks.bodies();
    assert_eq!(bodies.len(), 2, "only the rollbacks: {bodies:?}");
    let paths: Vec<String> = rollbacks
        .received
        .lock()
        .expect("lock")
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(paths, ["/hooks/rollbacks?team=edge"; 2]);

    let by_plan = &bodies[0];
    assert_eq!(by_plan["event"], "rollback", "{by_plan}");
    assert_eq!(by_plan["events"], serde_json::json!(["rollback"]));
    assert_eq!(by_plan["action"], "plan_rollback");
    assert_eq!(by_plan["route"], "default");
    assert_eq!(by_plan["rule"], "rollout");
    assert_eq!(by_plan["actor"], "plan");
    assert_eq!(by_plan["version"], 2, "the start was version 1");
    assert!(
        by_plan["generation"].as_u64().unwrap_or(0) >= 3,
        "{by_plan}"
    );
    assert!(by_plan["at_ms"].as_u64().unwrap_or(0) > 0);
    let timestamp = by_plan["timestamp"].as_str().unwrap_or("");
    assert!(
        timestamp.len() == 24 && timestamp.ends_with('Z') && timestamp.contains('T'),
        "RFC 3339 UTC: {timestamp}"
    );
    let canary_figures = &by_plan["figures"]["canary"];
    let requests = canary_figures["requests"].as_u64().unwrap_or(0);
    assert!(requests >= 40, "judged on min_requests: {by_plan}");
    assert!(canary_figures["error_rate"].as_f64().unwrap_or(0.0) > 0.05);
    assert_eq!(by_plan["figures"]["baseline"]["errors"], 0);
    let tests = by_plan["figures"]["tests"].as_array().expect("the tests");
    let errors = tests
        .iter()
        .find(|t| t["check"] == "errors")
        .expect("the error test");
    assert_eq!(errors["decision"], "fail", "{errors}");
    assert!(
        errors["p_value"].as_f64().unwrap_or(1.0) < 0.001,
        "{errors}"
    );
    let text = by_plan["text"].as_str().unwrap_or("");
    assert!(
        text.contains("route default, rule rollout") && text.contains("plan_rollback by plan"),
        "{text}"
    );

    let kill_switch = &bodies[1];
    assert_eq!(kill_switch["action"], "rollback");
    assert_eq!(kill_switch["actor"], "admin");
    assert_eq!(kill_switch["route"], Value::Null, "every route");
    assert_eq!(
        kill_switch["events"],
        serde_json::json!(["rollback", "manual"])
    );
    assert_eq!(kill_switch["version"], 4);

    let texts: Vec<Value> = slack.bodies();
    for body in &texts {
        let object = body.as_object().expect("an object");
        assert_eq!(object.len(), 1, "text only: {body}");
        assert!(body["text"].is_string(), "{body}");
    }
    let line = |i: usize| texts[i]["text"].as_str().unwrap_or("").to_string();
    assert!(
        line(0)
            .starts_with("canary-gateway manual: route default, rule rollout: plan_start by admin"),
        "{}",
        line(0)
    );
    assert_eq!(line(1), text, "the same line as the JSON body's");
    assert!(line(2).contains("→ 5%"), "{}", line(2));
    assert!(
        line(3).starts_with("canary-gateway rollback: every route: rollback by admin"),
        "{}",
        line(3)
    );
    assert_eq!(
        node.metric("gateway_notifications_total{result=\"sent\",webhook=\"0\"}"),
        2.0
    );
    assert_eq!(
        node.metric("gateway_notifications_total{result=\"sent\",webhook=\"1\"}"),
        4.0
    );
}

/// A webhook answering 500 gets its retries (1 + 2 attempts per notice), a webhook that never
/// answers holds its connection open, and meanwhile every admin change is applied at once and
/// the admin API keeps answering; the failures are counted.
#[test]
fn failing_webhooks_are_retried_and_hold_back_no_change() {
    let failing = Receiver::start(Some(500));
    let silent = Receiver::start(None);
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let notify = format!(
        "    - {{ webhook: \"{}\", retries: 2 }}\n    - {{ webhook: \"{}\", timeout: 10m, retries: 0 }}\n",
        failing.url("/fail"),
        silent.url("/silent"),
    );
    let node = start((&stable, &canary), 10, None, &notify);
    let (status, _) = node.call("PUT", "/rules/rollout/percent", Some(r#"{"percent": 11}"#));
    assert_eq!(status, 200);
    // The silent webhook now holds the first notice's connection, unanswered.
    wait_until(
        "the silent webhook has the first notice",
        READY_TIMEOUT,
        || silent.count() == 1,
    );
    for percent in 12..=15 {
        let body = format!(r#"{{"percent": {percent}}}"#);
        let (status, answer) = node.call("PUT", "/rules/rollout/percent", Some(&body));
        assert_eq!(status, 200, "{answer}");
    }
    let (status, answer) = node.call("GET", "/status", None);
    assert_eq!(status, 200);
    assert_eq!(answer["control"]["version"], 5, "every change applied");
    assert_eq!(answer["rules"][0]["percent"], 15.0);
    assert_eq!(
        silent.accepted(),
        1,
        "still on its first notice: the changes did not wait for it"
    );

    // Five notices, three attempts each, then nothing more.
    wait_until(
        "every attempt at the failing webhook",
        Duration::from_secs(60),
        || failing.count() >= 15,
    );
    wait_until("five notices counted failed", READY_TIMEOUT, || {
        node.metric("gateway_notifications_total{result=\"failed\",webhook=\"0\"}") == 5.0
    });
    assert_eq!(
        failing.count(),
        15,
        "1 + 2 retries for each of five notices"
    );
    assert_eq!(
        node.metric("gateway_notification_retries_total{webhook=\"0\"}"),
        10.0
    );
    let versions: Vec<u64> = failing
        .bodies()
        .iter()
        .map(|b| b["version"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        versions,
        [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5],
        "in order"
    );
    let (status, _) = node.call("GET", "/status", None);
    assert_eq!(status, 200, "the admin API answers after it all");
}

/// `https://` webhooks: one whose certificate a CA the gateway trusts (through `SSL_CERT_FILE`,
/// which the system's root store honours) issued gets the notice; one whose certificate an
/// unknown CA issued is refused during the handshake, retried once, and counted failed.
#[test]
fn https_webhooks_check_the_certificate() {
    use common::tls::{Ca, TlsOrigin};
    let dir = TempDir::new("notify-tls");
    let trusted = Ca::new("notify trusted CA");
    let stranger = Ca::new("notify unknown CA");
    let roots = dir.path().join("roots.pem");
    trusted.write_cert(&roots);
    let good = TlsOrigin::start(
        "hook",
        &trusted.issue_p256(dir.path(), "good", "localhost", 2),
        None,
    );
    let bad = TlsOrigin::start(
        "hook",
        &stranger.issue_p256(dir.path(), "bad", "localhost", 3),
        None,
    );
    let (stable, canary) = (Origin::start("stable"), Origin::start("canary"));
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = format!(
        "version: 1\nthreads: 1\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\n\
         gateway:\n  listen: [\"{addr}\"]\n{groups}  routing:\n    default: stable\n    rules:\n\
         \x20     - {{ name: rollout, percent: 10, group: canary }}\n\
         \x20 admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\" }}\n\
         \x20 metrics: {{ listen: \"{metrics_addr}\" }}\n\
         \x20 notify:\n\
         \x20   - {{ webhook: \"https://localhost:{good}/hook\", retries: 0 }}\n\
         \x20   - {{ webhook: \"https://localhost:{bad}/hook\", retries: 1 }}\n",
        d = dir.path().display(),
        groups = groups_yaml(&[("stable", &stable), ("canary", &canary)]),
        good = good.addr.port(),
        bad = bad.addr.port(),
    );
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, config).expect("write config");
    let gateway = Gateway::start_with_command(dir, config_path, addr, |command| {
        command.env("SSL_CERT_FILE", &roots);
    });
    let node = Node {
        gateway,
        admin: admin_addr,
        metrics: metrics_addr,
    };
    let (status, _) = node.call("PUT", "/rules/rollout/percent", Some(r#"{"percent": 20}"#));
    assert_eq!(status, 200);
    wait_until("the trusted webhook gets the notice", READY_TIMEOUT, || {
        good.requests.load(Ordering::SeqCst) == 1
    });
    wait_until(
        "the unknown CA's webhook counted failed",
        READY_TIMEOUT,
        || node.metric("gateway_notifications_total{result=\"failed\",webhook=\"1\"}") == 1.0,
    );
    assert_eq!(
        node.metric("gateway_notifications_total{result=\"sent\",webhook=\"0\"}"),
        1.0
    );
    assert_eq!(
        bad.connections.load(Ordering::SeqCst),
        2,
        "two handshakes: the attempt and its retry"
    );
    assert_eq!(
        bad.requests.load(Ordering::SeqCst),
        0,
        "no request over an unverified connection"
    );
    assert!(
        node.gateway.log().contains("failed after 2 attempt(s)"),
        "{}",
        node.gateway.log()
    );
}
