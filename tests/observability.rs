//! End-to-end tests of metrics and the access log.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

struct Observed {
    stable: Origin,
    canary: Origin,
    gateway: Gateway,
    metrics: SocketAddr,
}

fn start() -> Observed {
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "{groups}  routing:\n    default: stable\n    rules:\n\
         \x20     - name: testers\n        users: [\"tess\", \"tom\"]\n        group: canary\n\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n  access_log: {{ path: access.log }}\n",
        groups = groups_yaml(&[("stable", &stable), ("canary", &canary)])
    );
    let gateway = Gateway::start(&section);
    Observed {
        stable,
        canary,
        gateway,
        metrics,
    }
}

impl Observed {
    /// Metric samples: `name{labels}` → value.
    fn scrape(&self) -> HashMap<String, f64> {
        let r = get(self.metrics, "/metrics", &[]);
        assert_eq!(r.status, 200);
        r.text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.gateway.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
            .collect()
    }

    /// Waits (bounded) until the log has `n` lines; the writer flushes within a second.
    fn wait_log(&self, n: usize) -> Vec<Value> {
        let mut lines = Vec::new();
        wait_until(&format!("{n} log lines"), READY_TIMEOUT, || {
            lines = self.log_lines();
            lines.len() >= n
        });
        lines
    }
}

fn sum(samples: &HashMap<String, f64>, prefix: &str, needle: &str) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && k.contains(needle))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn counters_move_by_exactly_the_requests_sent() {
    let o = start();
    let mut client = Client::connect(o.gateway.addr);
    for i in 0..37 {
        let cookie = if i % 3 == 0 {
            "canary_user=tess"
        } else {
            "canary_user=someone"
        };
        assert_eq!(client.get("/", &[("Cookie", cookie)]).status, 200);
    }
    // A request is counted when it is logged, just after its response went out; its count
    // and its duration are two updates, so wait for both.
    let mut m = HashMap::new();
    wait_until("37 requests counted and timed", READY_TIMEOUT, || {
        m = o.scrape();
        sum(&m, "gateway_requests_total{", "") >= 37.0
            && sum(&m, "gateway_request_duration_seconds_count{", "") >= 37.0
    });
    let total = |group: &str| sum(&m, "gateway_requests_total{", &format!("group=\"{group}\""));
    assert_eq!(total("canary"), 13.0);
    assert_eq!(total("stable"), 24.0);
    assert_eq!(
        m.get("gateway_requests_total{group=\"canary\",route=\"default\",rule=\"testers\",status=\"200\"}"),
        Some(&13.0)
    );
    assert_eq!(
        m.get("gateway_requests_total{group=\"stable\",route=\"default\",rule=\"default\",status=\"200\"}"),
        Some(&24.0)
    );
    assert_eq!(
        m.get("gateway_request_duration_seconds_count{group=\"canary\",route=\"default\"}"),
        Some(&13.0)
    );
    assert!(m.contains_key(
        "gateway_request_duration_seconds_bucket{group=\"stable\",route=\"default\",le=\"0.005\"}"
    ));
    assert_eq!(m.get("gateway_config_generation"), Some(&1.0));
    assert_eq!(
        m.get("gateway_users{route=\"default\",rule=\"testers\"}"),
        Some(&2.0)
    );
    let healthy = format!(
        "gateway_upstream_healthy{{group=\"canary\",server=\"{}\"}}",
        o.canary.addr
    );
    assert_eq!(m.get(&healthy), Some(&1.0), "{m:?}");
    assert_eq!(o.stable.count() + o.canary.count(), 37);
}

#[test]
fn log_line_per_request_with_every_field() {
    let o = start();
    let mut ids = Vec::new();
    for cookie in ["canary_user=tess", "canary_user=x", "nothing=1"] {
        let r = get(o.gateway.addr, "/path/here?q=1", &[("Cookie", cookie)]);
        ids.push(r.header("x-request-id").expect("id").to_string());
    }
    let lines = o.wait_log(3);
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["route"] == "default"), "{lines:?}");
    let fields = [
        "ts",
        "request_id",
        "client_ip",
        "method",
        "host",
        "path",
        "status",
        "route",
        "group",
        "rule",
        "reason",
        "upstream",
        "bytes_sent",
        "duration_ms",
        "upstream_duration_ms",
    ];
    for line in &lines {
        for f in fields {
            assert!(
                line.get(f).is_some_and(|v| !v.is_null()),
                "{f} missing in {line}"
            );
        }
        assert!(
            humantime::parse_rfc3339(line["ts"].as_str().expect("ts")).is_ok(),
            "{line}"
        );
        assert_eq!(line["method"], "GET");
        assert_eq!(line["host"], "test.local");
        assert_eq!(line["path"], "/path/here?q=1");
        assert_eq!(line["status"], 200);
        assert_eq!(line["client_ip"], "127.0.0.1");
    }
    // With two worker threads, a request's line can be written after the next request's (its
    // client already has the answer): match lines to requests by id, not by position.
    let line_of = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for request {id}: {lines:?}"))
    };
    let lines: Vec<&Value> = ids.iter().map(|id| line_of(id)).collect();
    assert_eq!(
        (
            lines[0]["group"].as_str(),
            lines[0]["rule"].as_str(),
            lines[0]["reason"].as_str()
        ),
        (Some("canary"), Some("testers"), Some("user_list"))
    );
    assert_eq!(
        (lines[1]["rule"].as_str(), lines[1]["reason"].as_str()),
        (Some("default"), Some("default"))
    );
    assert_eq!(lines[2]["reason"], "anonymous");
    assert_eq!(lines[0]["upstream"], o.canary.addr.to_string());
    assert_eq!(lines[0]["bytes_sent"], 6, "body \"canary\"");
}

/// Client-controlled strings are escaped: each line stays one valid JSON object.
#[test]
fn hostile_strings_cannot_break_a_line() {
    let o = start();
    let raw = "GET /a%22b%5C?x=\\y%0A HTTP/1.1\r\nHost: evil\"host\\ {\"x\":1}\r\n\r\n";
    let r = Client::connect(o.gateway.addr).send_raw(raw.as_bytes());
    assert_eq!(r.status, 200);
    get(o.gateway.addr, "/next", &[]);
    let lines = o.wait_log(2);
    // Two worker threads may write the second request's line first: find each by its path.
    let hostile = lines
        .iter()
        .find(|l| l["path"] != "/next")
        .unwrap_or_else(|| panic!("no line for the hostile request: {lines:?}"));
    assert_eq!(hostile["host"], "evil\"host\\ {\"x\":1}");
    assert_eq!(hostile["path"], "/a%22b%5C?x=\\y%0A");
    assert_eq!(
        lines.iter().filter(|l| l["path"] == "/next").count(),
        1,
        "the next request is its own line: {lines:?}"
    );
}

/// Under a wrk run with rotating cookies every line parses, ids are unique, and the line count
/// matches the requests wrk made.
#[test]
fn wrk_run_logs_every_request() {
    let o = start();
    let script = o.gateway.dir.path().join("rotate.lua");
    std::fs::write(
        &script,
        "local n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(\"GET\", \"/r/\" .. n, { [\"Cookie\"] = \"canary_user=u\" .. (n % 50) })\nend\n",
    )
    .expect("script");
    let url = format!("http://{}/", o.gateway.addr);
    let script = script.to_str().expect("utf-8 path");
    let (requests, text) = run_wrk(&["-t1", "-c8", "-d2s", "-s", script, &url]);
    assert!(requests > 0, "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    // wrk may stop with requests still in flight; they finish (and are counted and logged)
    // after it exits. Wait, bounded, until the request counter stops moving, then until the
    // log has caught up with it.
    // A request reaches its origin before it is counted, and is counted before its line is
    // written: once the origins' count, the counter and the log agree, twice 200 ms apart,
    // nothing is left in flight.
    let counted = || sum(&o.scrape(), "gateway_requests_total{", "") as usize;
    let settled = || {
        let at_origins = o.stable.count() + o.canary.count();
        (at_origins == counted() && at_origins == o.log_lines().len()).then_some(at_origins)
    };
    let mut total = 0;
    wait_until(
        "the origins, the counter and the log agree",
        READY_TIMEOUT,
        || {
            let first = settled();
            thread::sleep(Duration::from_millis(200));
            total = settled().unwrap_or(0);
            first == Some(total)
        },
    );
    // In-flight requests are logged too, so allow wrk's count of connections as the margin.
    assert!(
        (requests..=requests + 8).contains(&total),
        "{total} requests counted for {requests} that wrk saw"
    );
    let lines = o.wait_log(total);
    assert_eq!(lines.len(), total, "metrics agree with the log");
    let ids: HashSet<&str> = lines
        .iter()
        .map(|l| l["request_id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), lines.len(), "request ids are unique");
}

#[test]
fn sigusr1_reopens_the_log_for_logrotate() {
    let o = start();
    get(o.gateway.addr, "/before", &[]);
    o.wait_log(1);
    let path = o.gateway.dir.path().join("access.log");
    let rotated = o.gateway.dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).expect("rotate");
    o.gateway.signal("USR1");
    // Lines keep going to the old file until the writer reopens; keep sending until one lands
    // in the new file.
    wait_until("a new log file after SIGUSR1", READY_TIMEOUT, || {
        get(o.gateway.addr, "/after", &[]);
        std::fs::read_to_string(&path).is_ok_and(|text| !text.is_empty())
    });
    let old = std::fs::read_to_string(&rotated).expect("rotated file");
    assert!(old.contains("/before"));
    assert!(std::fs::read_to_string(&path)
        .expect("new file")
        .contains("/after"));
}

#[test]
fn fallback_and_error_metrics() {
    let stable = Origin::start("stable");
    let dead = free_port();
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "  groups:\n    stable: {{ servers: [\"{}\"] }}\n    canary:\n      servers: [\"127.0.0.1:{dead}\"]\n\
         \x20     health_check: {{ type: none }}\n      fallback: stable\n\
         \x20 routing:\n    default: canary\n  metrics: {{ listen: \"{metrics}\" }}\n",
        stable.addr
    );
    let gateway = Gateway::start(&section);
    for _ in 0..5 {
        let r = get(gateway.addr, "/", &[]);
        assert_eq!((r.status, r.text().as_str()), (200, "stable"));
    }
    // Requests are counted as they are logged, just after their responses.
    let mut text = String::new();
    wait_until("5 fallbacks counted", READY_TIMEOUT, || {
        text = get(metrics, "/metrics", &[]).text();
        text.contains("gateway_fallbacks_total{from=\"canary\",route=\"default\",to=\"stable\"} 5")
    });
    let value = |key: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} missing:\n{text}"))
    };
    assert_eq!(
        value("gateway_upstream_connect_errors_total{group=\"canary\"}"),
        5.0
    );
    assert_eq!(
        value("gateway_fallbacks_total{from=\"canary\",route=\"default\",to=\"stable\"}"),
        5.0
    );
    assert_eq!(value("gateway_retries_total{group=\"canary\"}"), 5.0);
    assert_eq!(
        value("gateway_requests_total{group=\"stable\",route=\"default\",rule=\"default\",status=\"200\"}"),
        5.0
    );
}
