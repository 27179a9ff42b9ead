//! Malformed and hostile requests against a real gateway and an origin that records what
//! reaches it: each gets a clean, prompt answer, ambiguous ones reach no origin, and the
//! gateway keeps serving. Also the identity and trust features (trusted proxies, restricted QA
//! header, signed cookies).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use canary_gateway::routing::signed::signed_cookie_value;
use common::*;

/// Small limits so the tests are quick.
const LIMITS: &str =
    "  limits:\n    header_timeout: 2s\n    body_timeout: 2s\n    max_body_bytes: 1024\n\
    \x20   max_header_bytes: 8192\n    max_request_line: 1024\n    max_headers: 50\n";

struct Setup {
    stable: Origin,
    canary: Origin,
    gateway: Gateway,
}

fn setup(extra: &str) -> Setup {
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let section = format!(
        "{groups}  routing:\n    default: stable\n    rules:\n\
         \x20     - name: testers\n        users: [\"tess\"]\n        group: canary\n{LIMITS}{extra}",
        groups = groups_yaml(&[("stable", &stable), ("canary", &canary)])
    );
    let gateway = Gateway::start(&section);
    Setup {
        stable,
        canary,
        gateway,
    }
}

/// Sends raw bytes and reads until the gateway closes or one complete answer has come (a read
/// waits at most `IO_TIMEOUT`); returns the first status code (None when the connection closed
/// without an answer) and everything read.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> (Option<u16>, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    stream.write_all(bytes).ok();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        // One complete answer is enough when the gateway keeps the connection open.
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse::<usize>().ok());
            if len.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok());
    (status, text)
}

/// Each ambiguous or malformed request: the status, and nothing reaches any origin.
#[test]
fn malformed_requests_are_rejected_before_any_origin() {
    let s = setup("");
    let huge_ext = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;{}\r\nhello\r\n0\r\n\r\n",
        "e".repeat(200_000)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("CL and TE together", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("two different Content-Length", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), 400),
        ("TE not chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nxx".to_vec(), 400),
        ("chunked not final", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("TE with obs-fold", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("TE with space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("TE look-alike", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("obs-fold in a header", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n".to_vec(), 400),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n".to_vec(), 400),
        ("bare CR in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n".to_vec(), 400),
        ("space before colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n".to_vec(), 400),
        ("non-token name", b"GET / HTTP/1.1\r\nHost: a\r\nX(A): b\r\n\r\n".to_vec(), 400),
        ("control byte in the cookie", b"GET / HTTP/1.1\r\nHost: a\r\nCookie: canary_user=a\x01b\r\n\r\n".to_vec(), 400),
        ("HTTP/0.9", b"GET /\r\n\r\n".to_vec(), 400),
        ("junk before the method", b"Extra lineGET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("space inside the target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("method not a token", b"G(ET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("garbage", b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(), 400),
        ("HTTP/2.0 in an h1 request line", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("unknown version", b"GET / HTTP/1.3\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("absolute-form host differs from Host", b"GET http://evil.example/ HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), 400),
        ("missing Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("two Host headers", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        ("POST over HTTP/1.0 with chunked", b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(), 400),
        ("Connection nominating X-Forwarded-For", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Forwarded-For\r\n\r\n".to_vec(), 400),
        ("body announced over the limit", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n".to_vec(), 413),
        ("request line too long", format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(2000)).into_bytes(), 414),
        ("header block too large", format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(9000)).into_bytes(), 431),
        ("too many headers", format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", (0..60).map(|i| format!("X-H{i}: v\r\n")).collect::<String>()).into_bytes(), 431),
        ("one huge Cookie header", format!("GET / HTTP/1.1\r\nHost: a\r\nCookie: {}\r\n\r\n", "c=1; ".repeat(3000)).into_bytes(), 431),
    ];
    for (what, bytes, expected) in &cases {
        let (status, text) = exchange(s.gateway.addr, bytes);
        assert_eq!(status, Some(*expected), "{what}: {text:?}");
        assert_eq!(
            s.stable.count() + s.canary.count(),
            0,
            "{what} reached an origin"
        );
    }
    // Chunk-size garbage and a 200 KB chunk extension: answered, never forwarded complete.
    for (what, bytes) in [
        ("chunk-size garbage", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("chunk extension abuse", huge_ext.into_bytes()),
    ] {
        let (status, text) = exchange(s.gateway.addr, &bytes);
        assert!(matches!(status, Some(400) | Some(413) | None), "{what}: {text:?}");
        assert!(s.stable.requests.lock().expect("lock").iter().all(|r| r.body.is_empty()), "{what}: a body got through");
    }
    // Still serving.
    assert_eq!(get(s.gateway.addr, "/", &[]).status, 200);
}

/// Odd but valid input is served: hundreds of cookies, non-UTF-8 cookie bytes, bare LF line
/// ends, a chunked body under the limit.
#[test]
fn odd_but_valid_requests_are_served() {
    let s = setup("");
    let many = (0..300)
        .map(|i| format!("c{i}=v{i}"))
        .collect::<Vec<_>>()
        .join("; ");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("300 cookies, routing cookie last", format!("GET / HTTP/1.1\r\nHost: a\r\nCookie: {many}; canary_user=tess\r\n\r\n").into_bytes(), "canary"),
        ("non-UTF-8 cookie value", b"GET / HTTP/1.1\r\nHost: a\r\nCookie: canary_user=t\xffss\r\n\r\n".to_vec(), "stable"),
        ("bare LF line ends", b"GET / HTTP/1.1\nHost: a\nCookie: canary_user=tess\n\n".to_vec(), "canary"),
        ("chunked body under the limit", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(), "stable"),
    ];
    for (what, bytes, origin) in cases {
        let (status, text) = exchange(s.gateway.addr, &bytes);
        assert_eq!(status, Some(200), "{what}: {text:?}");
        assert!(text.ends_with(origin), "{what}: {text:?}");
    }
    assert_eq!(s.stable.last().body, b"hello");
}

/// A chunked body over the limit is cut off with 413.
#[test]
fn chunked_body_over_the_limit_is_413() {
    let s = setup("");
    let chunk = "x".repeat(600);
    let body = format!("258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n");
    let request = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
    let (status, text) = exchange(s.gateway.addr, request.as_bytes());
    assert_eq!(status, Some(413), "{text:?}");
    assert!(s
        .stable
        .requests
        .lock()
        .expect("lock")
        .iter()
        .all(|r| r.body.len() < 1200));
}

/// Two pipelined requests with different cookies on one connection are routed each on its own
/// cookie.
#[test]
fn pipelined_requests_are_routed_separately() {
    let s = setup("");
    let mut client = Client::connect(s.gateway.addr);
    let both = b"GET /1 HTTP/1.1\r\nHost: a\r\nCookie: canary_user=tess\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nCookie: canary_user=bob\r\n\r\n";
    let first = client.send_raw(both);
    let second = client.read_response();
    assert_eq!(
        (first.text().as_str(), first.header("x-canary-group")),
        ("canary", Some("canary"))
    );
    assert_eq!(
        (second.text().as_str(), second.header("x-canary-group")),
        ("stable", Some("stable"))
    );
}

/// An Upgrade request answered 200 (not 101) opens no tunnel: a pipelined second request is
/// parsed, routed and checked like any other.
#[test]
fn upgrade_answered_200_opens_no_tunnel() {
    let s = setup("");
    let mut client = Client::connect(s.gateway.addr);
    let both = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nCookie: canary_user=bob\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\nCookie: canary_user=tess\r\n\r\n";
    let first = client.send_raw(both);
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "stable");
    let second = client.read_response();
    assert_eq!(
        (second.status, second.text().as_str()),
        (200, "canary"),
        "routed on its own cookie"
    );
    assert_eq!(s.canary.last().path, "/next");
    assert_eq!(
        s.stable.count(),
        1,
        "the second request did not ride the first one's connection"
    );
}

/// Hop-by-hop abuse: a client cannot make the gateway drop the headers it adds.
#[test]
fn connection_header_cannot_strip_gateway_headers() {
    let s = setup("");
    let r = get(
        s.gateway.addr,
        "/",
        &[
            (
                "Connection",
                "keep-alive, X-Real-IP, X-Request-Id, X-Secret",
            ),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Secret", "drop-me"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = s.stable.last();
    assert_eq!(seen.one("x-real-ip"), "127.0.0.1");
    assert_eq!(
        seen.one("x-request-id"),
        r.header("x-request-id").expect("id")
    );
    assert_eq!(seen.one("x-forwarded-for"), "127.0.0.1");
    assert!(
        seen.all("x-secret").is_empty(),
        "nominated hop-by-hop header removed"
    );
}

/// Slowloris: 200 connections sending their heads a byte at a time are closed after the header
/// timeout, while other clients are served meanwhile.
#[test]
fn slowloris_connections_are_closed_and_others_served() {
    let s = setup("");
    const SLOW: usize = 200;
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut c = TcpStream::connect(s.gateway.addr).expect("connect");
            c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ")
                .expect("write");
            c.set_nonblocking(true).expect("nonblocking");
            c
        })
        .collect();
    let start = Instant::now();
    let mut closed = [false; SLOW];
    let mut served = 0;
    let mut served_meanwhile = 0;
    while closed.iter().any(|c| !c) {
        assert!(
            start.elapsed() < READY_TIMEOUT,
            "{} slow connections still open after {READY_TIMEOUT:?}",
            closed.iter().filter(|c| !**c).count()
        );
        let r = get(s.gateway.addr, "/", &[]);
        assert_eq!(r.status, 200, "served while slow connections are open");
        served += 1;
        for (i, c) in slow.iter_mut().enumerate() {
            if closed[i] {
                continue;
            }
            let mut buf = [0u8; 512];
            match c.read(&mut buf) {
                Ok(0) => closed[i] = true,
                Ok(n) => {
                    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"));
                    closed[i] = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if c.write_all(b"a").is_err() {
                        closed[i] = true;
                    }
                }
                Err(_) => closed[i] = true,
            }
        }
        // Served meanwhile: some slow connection was seen open after the answer came.
        if closed.iter().any(|c| !c) {
            served_meanwhile += 1;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1_800),
        "closed before the 2 s header timeout: {took:?}"
    );
    // The first 1.8 s are inside every slow connection's header timeout: a fair run serves
    // several requests in them, a loaded one at least one.
    assert!(served_meanwhile >= 1, "no request served meanwhile");
    eprintln!("slowloris: all closed after {took:?}; {served_meanwhile} of {served} requests served meanwhile");
    assert_eq!(
        s.stable.count(),
        served,
        "no slow request reached the origin"
    );
}

/// A body trickling in slower than the body timeout allows is cut off.
#[test]
fn slow_body_is_cut_off() {
    let s = setup("");
    // Taken before the connection opens, so the gateway's timeout cannot start before it.
    let start = Instant::now();
    let mut c = TcpStream::connect(s.gateway.addr).expect("connect");
    c.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        .expect("head");
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut answer = Vec::new();
    let closed = loop {
        assert!(
            start.elapsed() < READY_TIMEOUT,
            "slow body still open after {READY_TIMEOUT:?}"
        );
        if c.write_all(b"x").is_err() {
            break true;
        }
        let mut buf = [0u8; 512];
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break true,
        }
    };
    assert!(closed);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "cut off after {took:?}, before the 2 s body timeout"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
}

/// Behind a trusted proxy, X-Real-IP is the right-most untrusted X-Forwarded-For address.
#[test]
fn trusted_proxies_set_the_client_address() {
    let trusted = setup("  trusted_proxies: [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n");
    get(
        trusted.gateway.addr,
        "/",
        &[
            ("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.0.0.9"),
            ("X-Real-IP", "1.1.1.1"),
        ],
    );
    let seen = trusted.stable.last();
    assert_eq!(seen.one("x-real-ip"), "203.0.113.7");
    assert_eq!(
        seen.one("x-forwarded-for"),
        "6.6.6.6, 203.0.113.7, 10.0.0.9, 127.0.0.1"
    );

    let untrusted = setup("");
    get(
        untrusted.gateway.addr,
        "/",
        &[("X-Forwarded-For", "203.0.113.7")],
    );
    assert_eq!(untrusted.stable.last().one("x-real-ip"), "127.0.0.1");
}

/// The QA header can demand a secret, or a client network.
#[test]
fn restricted_qa_header() {
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let section = format!(
        "{groups}  routing:\n    default: stable\n    rules:\n\
         \x20     - name: qa-secret\n        header: x-canary-group\n        header_secret: \"let-me-in-please\"\n\
         \x20     - name: qa-office\n        header: x-office-group\n        from: [\"10.0.0.0/8\"]\n",
        groups = groups_yaml(&[("stable", &stable), ("canary", &canary)])
    );
    let gateway = Gateway::start(&section);
    let pick = |h: &str, v: &str| get(gateway.addr, "/", &[(h, v)]).text();
    assert_eq!(
        pick("x-canary-group", "canary"),
        "stable",
        "no secret: ignored"
    );
    assert_eq!(pick("x-canary-group", "canary:wrong-secret"), "stable");
    assert_eq!(pick("x-canary-group", "canary:let-me-in-please"), "canary");
    assert_eq!(
        pick("x-office-group", "canary"),
        "stable",
        "127.0.0.1 is not in 10.0.0.0/8"
    );
}

/// With a signing key, only correctly signed cookies identify a user; bad ones are anonymous
/// and counted.
#[test]
fn signed_user_cookies() {
    let stable = Origin::start("stable");
    let canary = Origin::start("canary");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let section = format!(
        "{groups}  routing:\n    default: stable\n    signing_key: [\"new-key-0123456789abcdef\", \"old-key-0123456789abcdef\"]\n    rules:\n\
         \x20     - name: testers\n        users: [\"tess\"]\n        group: canary\n  metrics: {{ listen: \"{metrics}\" }}\n",
        groups = groups_yaml(&[("stable", &stable), ("canary", &canary)])
    );
    let gateway = Gateway::start(&section);
    let cookie = |v: String| format!("canary_user={v}");
    let with = |c: &str| get(gateway.addr, "/", &[("Cookie", c)]).text();
    assert_eq!(
        with(&cookie(signed_cookie_value(
            b"new-key-0123456789abcdef",
            "tess"
        ))),
        "canary"
    );
    assert_eq!(
        with(&cookie(signed_cookie_value(
            b"old-key-0123456789abcdef",
            "tess"
        ))),
        "canary",
        "rotation: old key still accepted"
    );
    assert_eq!(with("canary_user=tess"), "stable", "unsigned");
    assert_eq!(
        with(&cookie(signed_cookie_value(
            b"some-other-key-0123456789",
            "tess"
        ))),
        "stable",
        "wrong key"
    );
    let forged = signed_cookie_value(b"new-key-0123456789abcdef", "bob").replacen("bob", "tess", 1);
    assert_eq!(with(&cookie(forged)), "stable", "tag of another user");
    let invalid = || {
        metric_value(
            &get(metrics, "/metrics", &[]).text(),
            "gateway_cookie_signature_invalid_total",
        )
    };
    wait_until("three bad signatures counted", READY_TIMEOUT, || {
        invalid() >= 3.0
    });
    assert_eq!(invalid(), 3.0, "each bad signature counted once");
}

/// An origin that answers each request as soon as its head is in (`early`, 5 bytes), and only
/// then reads the request's body (`Content-Length`), as an origin refusing an upload does;
/// counts the body bytes it received.
fn early_answer_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = test_listener();
    let addr = listener.local_addr().expect("addr");
    let received = Arc::new(AtomicUsize::new(0));
    let counted = received.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let counted = counted.clone();
            thread::spawn(move || {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let head_end = loop {
                        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    pending.drain(..head_end);
                    if conn
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
                        .is_err()
                    {
                        return;
                    }
                    while pending.len() < length {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(length, Ordering::SeqCst);
                    pending.drain(..length);
                }
            });
        }
    });
    (addr, received)
}

/// A request body that arrives after the response has gone out (an origin answering before
/// it reads an upload) is body, not the next request head: its bytes — here control bytes,
/// which a request line may not hold — reach the origin, and nothing is written after the
/// answer (Pingora then closes the connection, as it does whenever a response ends before
/// its request's body).
#[test]
fn body_bytes_after_an_early_answer_are_not_a_head() {
    let (origin, received) = early_answer_origin();
    let section = format!(
        "  groups:\n    early:\n      servers: [\"{origin}\"]\n  routing:\n    default: early\n{LIMITS}"
    );
    let gateway = Gateway::start(&section);
    let mut client = Client::connect(gateway.addr);
    let first = client.send_raw(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 600\r\n\r\n");
    assert_eq!((first.status, first.text().as_str()), (200, "early"));
    // The body, sent only once the answer is in: bytes no request line may contain.
    client.write_raw(&[0x01u8; 600]);
    let after = client
        .read_until_closed()
        .expect("closed, not reset or left open");
    assert_eq!(
        String::from_utf8_lossy(&after),
        "",
        "nothing after the answer"
    );
    wait_until("the origin has the whole body", READY_TIMEOUT, || {
        received.load(Ordering::SeqCst) == 600
    });
}
