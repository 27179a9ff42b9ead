//! End-to-end gRPC through the gateway: real gRPC origins and clients (Debian's
//! python3-grpcio, run as `/usr/bin/python3 tests/common/grpc_peer.py`, installed by
//! `scripts/setup.sh test`) over an h2c listener and a TLS one, to h2c groups: the four call
//! kinds, a canary by user across 1,000 users (by the routing cookie and by a user id in
//! metadata through the identity `header` source), the origin's statuses and trailers unchanged,
//! the gateway's own errors as gRPC statuses, `grpc-timeout` as the upstream deadline, a stalled
//! reader against the gateway's memory, multiplexing on few upstream connections, and
//! websockets unchanged beside an HTTP/2 group.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The Python that has `grpc` (Debian's python3-grpcio); a pyenv `python3` on PATH lacks it.
const PYTHON: &str = "/usr/bin/python3";

fn peer_script() -> String {
    format!("{}/tests/common/grpc_peer.py", env!("CARGO_MANIFEST_DIR"))
}

/// A gRPC origin (`grpc_peer.py server`) answering as `version`; killed on drop.
struct GrpcOrigin {
    addr: SocketAddr,
    child: Child,
}

impl GrpcOrigin {
    fn start(version: &str) -> GrpcOrigin {
        let port = free_port();
        let mut child = Command::new(PYTHON)
            .args([&peer_script(), "server", &port.to_string(), version])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the python gRPC origin (python3-grpcio: scripts/setup.sh test)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("origin says ready");
        assert_eq!(line.trim(), "ready", "the gRPC origin did not start");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        wait_for_port(addr);
        GrpcOrigin { addr, child }
    }
}

impl Drop for GrpcOrigin {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// How a client reaches the gateway: h2c, or TLS with the test CA and a server name.
#[derive(Clone)]
enum Via {
    H2c(SocketAddr),
    Tls {
        addr: SocketAddr,
        ca: String,
        name: &'static str,
    },
}

impl Via {
    fn args(&self) -> Vec<String> {
        match self {
            Via::H2c(addr) => vec![addr.to_string()],
            Via::Tls { addr, ca, name } => vec![
                addr.to_string(),
                "--ca".into(),
                ca.clone(),
                "--authority".into(),
                name.to_string(),
            ],
        }
    }
}

/// Runs one client case and returns its JSON answer.
fn client(via: &Via, case: &str, args: &[&str]) -> Value {
    let out = Command::new(PYTHON)
        .arg(peer_script())
        .arg("client")
        .args(via.args())
        .arg(case)
        .args(args)
        .output()
        .expect("run the python gRPC client");
    assert!(
        out.status.success(),
        "client {case} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "client {case}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Counts the TCP connections made to `target` (each relayed both ways), so the test sees how
/// many upstream connections the gateway opened.
struct CountingRelay {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl CountingRelay {
    fn start(target: SocketAddr) -> CountingRelay {
        let listener = test_listener();
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                relay(client, server);
            }
        });
        CountingRelay { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn relay(a: TcpStream, b: TcpStream) {
    let pump = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let mut buf = [0u8; 16384];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            to.shutdown(std::net::Shutdown::Both).ok();
        });
    };
    if let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) {
        pump(a, b2);
        pump(b, a2);
    }
}

const SEED: &str = "grpc-canary";

/// A gateway with a plaintext listener, an h2c listener and a TLS listener, two h2c groups
/// (`v1`, `v2`, checked by `grpc.health.v1`; a generous check timeout, as the Python origins
/// answer slowly while the tests run side by side) behind a 50 % canary by the cookie's user
/// id, and routes for each error the gateway makes itself.
struct Setup {
    gateway: Gateway,
    h2c: SocketAddr,
    tls: Via,
    metrics: SocketAddr,
    _dir: TempDir,
}

fn setup(v1: SocketAddr, v2: SocketAddr, extra_groups: &str, extra_routes: &str) -> Setup {
    let dir = TempDir::new("grpc");
    let ca = common::tls::Ca::new("grpc test CA");
    let issued = ca.issue_p256(dir.path(), "edge", "grpc.test", 2);
    let ca_file = dir.path().join("ca.pem");
    ca.write_cert(&ca_file);
    let users = dir.path().join("users");
    // Written by the real `htpasswd` (bcrypt); no test sends the password.
    let made = Command::new("htpasswd")
        .args(["-cbB", &users.display().to_string(), "alice", "secret"])
        .output()
        .expect("run htpasswd (apache2-utils: scripts/setup.sh test)");
    assert!(made.status.success(), "htpasswd failed");
    let h2c: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let closed = free_port();
    let more_listen = format!(
        "    - {{ addr: \"{h2c}\", h2c: true }}\n    - addr: \"{tls}\"\n      tls: {{ certificates: [{{ cert: \"{}\", key: \"{}\" }}] }}\n",
        issued.cert.display(),
        issued.key.display()
    );
    let section = format!(
        "  groups:\n\
         \x20   v1: {{ servers: [\"{v1}\"], protocol: h2c, max_streams_per_connection: 100, health_check: {{ type: grpc, interval: 300ms, timeout: 5s, fall: 3 }} }}\n\
         \x20   v2: {{ servers: [\"{v2}\"], protocol: h2c, max_streams_per_connection: 100, health_check: {{ type: grpc, interval: 300ms, timeout: 5s, fall: 3 }} }}\n\
         \x20   refusing: {{ servers: [\"127.0.0.1:{closed}\"], protocol: h2c, health_check: {{ type: none }} }}\n\
         \x20   dead: {{ servers: [\"127.0.0.1:{closed}\"], protocol: h2c, health_check: {{ type: tcp, interval: 100ms, fall: 1 }} }}\n\
         {extra_groups}\
         \x20 routes:\n\
         \x20   - name: denied\n      paths: [/test.Denied/]\n      access: {{ deny: [\"127.0.0.1\"] }}\n      routing: {{ default: v1 }}\n\
         \x20   - name: secret\n      paths: [/test.Secret/]\n      access: {{ basic_auth: {{ users_file: \"{users}\", realm: grpc }} }}\n      routing: {{ default: v1 }}\n\
         \x20   - name: limited\n      paths: [/test.Limited/]\n      rate_limits: [{{ name: few, key: client_ip, rate: 1/m, burst: 1 }}]\n      routing: {{ default: v1 }}\n\
         \x20   - name: refusing\n      paths: [/test.Refusing/]\n      routing: {{ default: refusing }}\n\
         \x20   - name: dead\n      paths: [/test.Dead/]\n      routing: {{ default: dead }}\n\
         {extra_routes}\
         \x20   - name: echo\n      paths: [/test.Echo/]\n      routing:\n        cookie: canary_user\n        default: v1\n        rules:\n\
         \x20         - {{ name: rollout, percent: 50, seed: \"{SEED}\", group: v2 }}\n\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n  access_log: {{ path: access.log }}\n",
        users = users.display(),
    );
    let gateway = Gateway::start_with_listeners(&more_listen, &section);
    Setup {
        gateway,
        h2c,
        tls: Via::Tls {
            addr: tls,
            ca: ca_file.display().to_string(),
            name: "grpc.test",
        },
        metrics,
        _dir: dir,
    }
}

fn scrape(addr: SocketAddr) -> String {
    get(addr, "/metrics", &[]).text()
}

/// Unary, server-streaming (10,000 messages), client-streaming and bidirectional calls reach
/// the h2c origins over the h2c listener and over TLS; metadata goes both ways (the request id
/// and the decision header arrive as response metadata, the client's metadata reaches the
/// origin), and the origin's trailers arrive unchanged. The HTTP/1.1 listener still serves.
#[test]
fn the_four_call_kinds_pass_over_h2c_and_tls() {
    let (v1, v2) = (GrpcOrigin::start("v1"), GrpcOrigin::start("v2"));
    let s = setup(v1.addr, v2.addr, "", "");
    for via in [Via::H2c(s.h2c), s.tls.clone()] {
        let unary = client(&via, "unary", &["x-user=bob", "cookie=canary_user=u1"]);
        assert_eq!(unary["code"], "OK");
        assert_eq!(unary["echo"], "hello");
        assert_eq!(unary["x-user"], "bob", "client metadata reaches the origin");
        let request_id = unary["x-request-id"]
            .as_str()
            .expect("the origin got a request id");
        assert_eq!(
            unary["headers"]["x-request-id"], request_id,
            "the same id comes back as metadata"
        );
        let version = unary["version"].as_str().expect("version");
        assert_eq!(
            unary["headers"]["x-canary-group"], version,
            "the decision header is metadata naming the group that served"
        );
        assert_eq!(unary["trailers"]["x-origin-version"], version);
        assert_eq!(unary["x-forwarded-for"], "127.0.0.1");

        let stream = client(&via, "server_stream", &["10000", "100"]);
        assert_eq!(stream["code"], "OK");
        assert_eq!(stream["count"], 10000);
        assert_eq!(stream["bytes"], 1_000_000);

        let upload = client(&via, "client_stream", &["5000"]);
        assert_eq!(upload["count"], 5000);

        let bidi = client(&via, "bidi", &["2000"]);
        assert_eq!(bidi["count"], 2000);
        assert!(bidi["first"].as_str().is_some_and(|f| f.ends_with(":0")));
        assert!(bidi["last"].as_str().is_some_and(|l| l.ends_with(":1999")));
    }
    // HTTP/1.1 on the h2c listener is served as HTTP/1.1 (no route matches `/`: the
    // gateway's own 404, as text, since the request is not gRPC).
    let response = get(s.h2c, "/", &[]);
    assert_eq!(response.status, 404);
    assert_eq!(response.text(), "404 Not Found\n");
    assert!(response.header("x-request-id").is_some());
    let log = std::fs::read_to_string(s.gateway.dir.path().join("access.log")).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("/test.Echo/Unary") && l.contains("\"grpc_status\":0")),
        "the access log carries grpc_status: {log}"
    );
    let metrics = scrape(s.metrics);
    assert!(
        metric_value(
            &metrics,
            "gateway_grpc_responses_total{group=\"v1\",grpc_status=\"0\",route=\"echo\"}"
        ) + metric_value(
            &metrics,
            "gateway_grpc_responses_total{group=\"v2\",grpc_status=\"0\",route=\"echo\"}"
        ) >= 8.0,
        "{metrics}"
    );
}

/// A 50 % canary by the user id in the routing cookie (sent as gRPC metadata) across 1,000
/// users: each user reaches the version the rule's hash gives it, on every call.
#[test]
fn a_canary_by_user_keeps_each_caller_on_one_version() {
    let (v1, v2) = (GrpcOrigin::start("v1"), GrpcOrigin::start("v2"));
    let s = setup(v1.addr, v2.addr, "", "");
    let answer = client(&Via::H2c(s.h2c), "canary", &["1000", "2"]);
    assert_each_user_on_its_version(&answer, 1000, 2);
}

/// The same canary with the user id in `x-user-id` metadata, as an auth layer in front sets
/// it, read by the identity `header` source: believed from the TCP peer `from` names (here
/// the client itself, 127.0.0.1), so 1,000 users × 2 calls each stay on the version the hash
/// gives their id; a route whose `from` does not name the peer ignores the metadata and
/// sends every caller to the default.
#[test]
fn a_canary_by_a_metadata_user_id_keeps_each_caller_on_one_version() {
    let (v1, v2) = (GrpcOrigin::start("v1"), GrpcOrigin::start("v2"));
    let by_id = |host: &str, from: &str| {
        format!(
            "\x20   - name: {host}\n      hosts: [{host}]\n      paths: [/test.Echo/]\n      routing:\n\
             \x20       identity: [{{ header: x-user-id, from: [\"{from}\"] }}]\n        default: v1\n        rules:\n\
             \x20         - {{ name: rollout, percent: 50, seed: \"{SEED}\", group: v2 }}\n"
        )
    };
    let routes = by_id("by-id.test", "127.0.0.1/32") + &by_id("elsewhere.test", "192.0.2.0/24");
    let s = setup(v1.addr, v2.addr, "", &routes);
    let via = Via::H2c(s.h2c);
    let answer = client_with_authority(&via, "by-id.test", "canary", &["1000", "2", "x-user-id"]);
    assert_each_user_on_its_version(&answer, 1000, 2);
    // From a peer `from` does not name, the metadata is no user id: the default for all,
    // though the hash would send some of these users to v2.
    let answer = client_with_authority(&via, "elsewhere.test", "canary", &["20", "1", "x-user-id"]);
    let seen = answer["seen"].as_object().expect("users");
    assert_eq!(seen.len(), 20);
    assert!(seen.keys().any(|user| rollout_user_is_inside(user)));
    for (user, versions) in seen {
        assert_eq!(versions, &serde_json::json!(["v1"]), "{user}");
    }
}

/// Checks a `canary` answer of `users` users × `rounds` calls: every call of a user reached
/// the version the rollout's hash gives its id, and the share on v2 is within 5 σ of 50 %.
fn assert_each_user_on_its_version(answer: &Value, users: usize, rounds: usize) {
    let seen = answer["seen"].as_object().expect("users");
    assert_eq!(seen.len(), users);
    let mut on_v2 = 0;
    for (user, versions) in seen {
        let versions: Vec<&str> = versions
            .as_array()
            .expect("list")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let expected = if rollout_user_is_inside(user) {
            "v2"
        } else {
            "v1"
        };
        assert_eq!(versions, vec![expected; rounds], "{user}");
        on_v2 += usize::from(expected == "v2");
    }
    // 50 % of n users: σ = √n / 2 (15.8 of 1,000); 5 σ either side.
    let (mean, five_sigma) = (users as f64 / 2.0, 2.5 * (users as f64).sqrt());
    assert!(
        (on_v2 as f64 - mean).abs() <= five_sigma,
        "{on_v2} of {users} users on v2"
    );
}

fn rollout_user_is_inside(user: &str) -> bool {
    let share = canary_gateway::routing::Percent::new(50.0).expect("percent");
    share.includes(canary_gateway::routing::percent_bucket(
        SEED.as_bytes(),
        user.as_bytes(),
    ))
}

/// The origin's own errors arrive unchanged: status, message and custom trailing metadata.
#[test]
fn origin_statuses_and_trailers_arrive_unchanged() {
    let (v1, v2) = (GrpcOrigin::start("v1"), GrpcOrigin::start("v2"));
    let s = setup(v1.addr, v2.addr, "", "");
    for via in [Via::H2c(s.h2c), s.tls.clone()] {
        for code in [
            "NOT_FOUND",
            "FAILED_PRECONDITION",
            "UNAVAILABLE",
            "INTERNAL",
        ] {
            let answer = client(&via, "fail", &[code, "origin says no", "detail-42"]);
            assert_eq!(answer["code"], code);
            assert_eq!(answer["details"], "origin says no");
            assert_eq!(answer["trailers"]["x-detail"], "detail-42");
        }
    }
}

/// Each error the gateway makes itself reaches a gRPC client as its gRPC status: no route →
/// UNIMPLEMENTED, connection refused and no healthy server → UNAVAILABLE, access denied →
/// PERMISSION_DENIED, no credentials → UNAUTHENTICATED, rate limited → RESOURCE_EXHAUSTED. A
/// web request to the same route keeps its HTTP status.
#[test]
fn gateway_errors_are_grpc_statuses() {
    let (v1, v2) = (GrpcOrigin::start("v1"), GrpcOrigin::start("v2"));
    // An HTTP/1.1 origin in an h2c group with a gRPC check: the check marks it down (a request
    // to a server thought healthy would fail its connection instead: 502, not 503).
    let web = Origin::start("web");
    let groups = format!(
        "    notgrpc: {{ servers: [\"{}\"], protocol: h2c, health_check: {{ type: grpc, interval: 100ms, fall: 1 }} }}\n",
        web.addr
    );
    let routes =
        "    - name: notgrpc\n      paths: [/test.NotGrpc/]\n      routing: { default: notgrpc }\n";
    let s = setup(v1.addr, v2.addr, &groups, routes);
    let via = Via::H2c(s.h2c);
    // The dead and notgrpc groups' servers are marked down by their checks.
    wait_until(
        "the gRPC check marks the HTTP/1.1 origin down",
        Duration::from_secs(20),
        || {
            client(&via, "call", &["/test.NotGrpc/Call"])["details"]
                == "gateway: 503 Service Unavailable"
        },
    );
    let cases = [
        ("/other.Service/Method", "UNIMPLEMENTED"),
        ("/test.Refusing/Call", "UNAVAILABLE"),
        ("/test.Dead/Call", "UNAVAILABLE"),
        ("/test.Denied/Call", "PERMISSION_DENIED"),
        ("/test.Secret/Call", "UNAUTHENTICATED"),
    ];
    for (path, code) in cases {
        let answer = client(&via, "call", &[path]);
        assert_eq!(answer["code"], code, "{path}: {answer}");
        assert!(
            answer["details"]
                .as_str()
                .is_some_and(|d| d.starts_with("gateway: ")),
            "{path}: {answer}"
        );
    }
    // The first call is admitted (the origin has no such method); with 1 a minute and a burst
    // of 1, a few more calls in a row are over the limit.
    let first = client(&via, "call", &["/test.Limited/Call"]);
    assert_eq!(first["code"], "UNIMPLEMENTED", "{first}");
    assert!(
        !first["details"]
            .as_str()
            .is_some_and(|d| d.starts_with("gateway: ")),
        "the origin answered the admitted call: {first}"
    );
    let later: Vec<Value> = (0..3)
        .map(|_| client(&via, "call", &["/test.Limited/Call"]))
        .collect();
    assert_eq!(later[2]["code"], "RESOURCE_EXHAUSTED", "{later:?}");

    // The head is a trailers-only answer: HTTP 200, grpc-status, and the stream ends with it.
    let raw = raw_grpc(s.h2c, "/other.Service/Method", &[], b"");
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("grpc-status"), Some("12"));
    assert!(raw.ended_with_head, "trailers-only: END_STREAM on the head");
    assert!(raw.header("x-request-id").is_some());

    // Web requests keep HTTP statuses.
    assert_eq!(
        get(s.gateway.addr, "/other.Service/Method", &[]).status,
        404
    );
    assert_eq!(get(s.gateway.addr, "/test.Denied/Call", &[]).status, 403);
    let log = std::fs::read_to_string(s.gateway.dir.path().join("access.log")).unwrap_or_default();
    for (path, code) in [("/test.Denied/Call", 7), ("/other.Service/Method", 12)] {
        assert!(
            log.lines().any(|l| l.contains(path)
                && l.contains(&format!("\"grpc_status\":{code}"))
                && l.contains("\"status\":200")),
            "{path} logged with grpc_status {code}: {log}"
        );
    }
}

/// A deadline shorter than the server's sleep ends the call with DEADLINE_EXCEEDED, long
/// before the sleep is over; the gateway itself answers at the client's `grpc-timeout` (a raw
/// HTTP/2 client that sends the header but keeps no deadline of its own gets a trailers-only
/// DEADLINE_EXCEEDED from the gateway).
#[test]
fn grpc_timeout_is_the_upstream_deadline() {
    let (v1, v2) = (GrpcOrigin::start("v1"), GrpcOrigin::start("v2"));
    let s = setup(v1.addr, v2.addr, "", "");
    let answer = client(&Via::H2c(s.h2c), "sleep", &["30", "0.5"]);
    assert_eq!(answer["code"], "DEADLINE_EXCEEDED", "{answer}");
    let elapsed = answer["elapsed"].as_f64().expect("elapsed");
    assert!(
        elapsed < 20.0,
        "did not wait for the server's 30 s: {elapsed}"
    );

    let started = Instant::now();
    let raw = raw_grpc(
        s.h2c,
        "/test.Echo/Sleep",
        &[("grpc-timeout", "300m"), ("cookie", "canary_user=u1")],
        b"30",
    );
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("grpc-status"), Some("4"), "{:?}", raw.headers);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the gateway answered at the deadline, not after the server's 30 s"
    );
}

/// A client that stops reading a large server stream does not make the gateway buffer it:
/// its memory stays within a bound while other callers are served.
#[test]
fn a_stalled_reader_does_not_grow_the_gateway() {
    let (v1, v2) = (GrpcOrigin::start("v1"), GrpcOrigin::start("v2"));
    let s = setup(v1.addr, v2.addr, "", "");
    let via = Via::H2c(s.h2c);
    client(&via, "unary", &[]);
    let before = rss_kib(s.gateway.pid());
    let mut stalled = Command::new(PYTHON)
        .arg(peer_script())
        .arg("client")
        .args(via.args())
        .arg("stalled_reader")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("stalled client");
    let stdin: ChildStdin = stalled.stdin.take().expect("stdin");
    let mut line = String::new();
    BufReader::new(stalled.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("stalled line");
    assert!(line.contains("stalled"), "{line}");
    // The origin would send 6.5 GB; the gateway holds a stream's window and send buffer.
    let mut peak = before;
    for _ in 0..20 {
        let answer = client(&via, "unary", &[]);
        assert_eq!(answer["code"], "OK", "other callers are served");
        peak = peak.max(rss_kib(s.gateway.pid()));
    }
    drop(stdin);
    stalled.wait().ok();
    eprintln!("gateway RSS {before} KiB before, {peak} KiB at most behind the stalled reader");
    assert!(
        peak < before + 64 * 1024,
        "the gateway grew from {before} KiB to {peak} KiB behind a stalled reader"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// 1,000 concurrent unary calls (from four clients) reach each server over at most
/// ⌈1000 / max_streams_per_connection⌉ connections, counted on the origin's side.
#[test]
fn concurrent_calls_share_few_upstream_connections() {
    let (v1, v2) = (GrpcOrigin::start("v1"), GrpcOrigin::start("v2"));
    let relay = CountingRelay::start(v1.addr);
    let groups = format!(
        "    counted: {{ servers: [\"{}\"], protocol: h2c, max_streams_per_connection: 100, health_check: {{ type: none }} }}\n",
        relay.addr
    );
    let routes = "    - name: counted\n      paths: [/test.Echo/]\n      hosts: [counted.test]\n      routing: { default: counted }\n";
    let s = setup(v1.addr, v2.addr, &groups, routes);
    let via = Via::H2c(s.h2c);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let via = via.clone();
            thread::spawn(move || {
                client_with_authority(&via, "counted.test", "concurrent", &["250"])
            })
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        ok += h.join().expect("client")["ok"].as_u64().expect("ok");
    }
    assert_eq!(ok, 1000, "every call succeeded");
    let connections = relay.accepted();
    eprintln!("1,000 concurrent calls: {connections} upstream connection(s)");
    assert!(
        (1..=10).contains(&connections),
        "1,000 calls over {connections} upstream connections (at most ⌈1000/100⌉)"
    );
}

fn client_with_authority(via: &Via, authority: &str, case: &str, args: &[&str]) -> Value {
    let Via::H2c(addr) = via else {
        panic!("h2c only")
    };
    let out = Command::new(PYTHON)
        .arg(peer_script())
        .args(["client", &addr.to_string(), "--authority", authority, case])
        .args(args)
        .output()
        .expect("run the python gRPC client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// A websocket to a route whose group speaks HTTP/2 is still an HTTP/1.1 upgrade tunnel: 101,
/// then frames both ways.
#[test]
fn websockets_are_unchanged_beside_an_http2_group() {
    let (v1, v2) = (GrpcOrigin::start("v1"), GrpcOrigin::start("v2"));
    let (ws_origin, handle) = websocket_echo_origin(3);
    let groups = format!(
        "    sockets: {{ servers: [\"{ws_origin}\"], protocol: h2c, health_check: {{ type: none }} }}\n"
    );
    let routes =
        "    - name: sockets\n      paths: [/socket]\n      routing: { default: sockets }\n";
    let s = setup(v1.addr, v2.addr, &groups, routes);
    let (mut ws, response) = websocket_client(s.gateway.addr, "canary_user=ws");
    assert_eq!(response.status(), 101);
    websocket_echo_rounds(&mut ws, 0..3);
    let push = ws.read().expect("push");
    assert_eq!(push.to_text().expect("text"), "server push");
    ws.close(None).ok();
    drop(ws);
    handle.join().ok();
}

/// What a raw HTTP/2 client saw: the response head, whether the stream ended with it, and the
/// trailers.
struct RawAnswer {
    status: u16,
    headers: http::HeaderMap,
    ended_with_head: bool,
}

impl RawAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A gRPC call (one message) by a bare HTTP/2 client over h2c, which keeps no deadline of
/// its own: what the gateway itself answers.
fn raw_grpc(addr: SocketAddr, path: &str, headers: &[(&str, &str)], message: &[u8]) -> RawAnswer {
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        tokio::spawn(async move {
            connection.await.ok();
        });
        let mut request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(()).expect("request");
        let (response, mut body) = sender.send_request(request, false).expect("send");
        body.send_data(bytes::Bytes::from(framed), true)
            .expect("message");
        let response = tokio::time::timeout(Duration::from_secs(60), response)
            .await
            .expect("an answer within a minute")
            .expect("response");
        let ended_with_head = response.body().is_end_stream();
        RawAnswer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            ended_with_head,
        }
    })
}
