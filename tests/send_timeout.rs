//! `limits.send_timeout` against a real gateway: HTTP/2 streams whose client accepts no
//! response bytes (a zero flow-control window) are reset and the gateway's memory stays
//! bounded meanwhile; an HTTP/1.1 client that never reads a large answer is disconnected.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::tls::{h2, Ca, RawH2};
use common::*;

/// The send timeout in these tests.
const SEND_TIMEOUT: &str = "2s";

/// An HTTP/1.1 origin whose every answer is `size` bytes of `x`, served on keep-alive
/// connections, one small-stacked thread each (the test opens thousands). Also returns the
/// count of answers cut off by the gateway closing the connection.
fn large_origin(size: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = test_listener();
    let addr = listener.local_addr().expect("origin addr");
    let cut = Arc::new(AtomicUsize::new(0));
    let counted = cut.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let cut = counted.clone();
            let spawned = thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || serve_large(stream, size, &cut));
            if spawned.is_err() {
                // Out of threads: the connection is dropped, which the test would notice.
                continue;
            }
        }
    });
    (addr, cut)
}

fn serve_large(mut stream: TcpStream, size: usize, cut: &AtomicUsize) {
    let chunk = vec![b'x'; 64 * 1024];
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        head.clear();
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            if stream.write_all(&chunk[..n]).is_err() {
                cut.fetch_add(1, Ordering::SeqCst);
                return;
            }
            left -= n;
        }
    }
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Raises this test process's soft open-files limit to its hard one (the origin holds a
/// connection per stalled stream).
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct on this stack.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// A gateway with a plaintext listener and a TLS one (certificate for `a.test`) in front of
/// `origin`, with `limits` (a YAML flow mapping); returns it and the TLS address.
fn tls_gateway(tag: &str, origin: SocketAddr, limits: &str) -> (Gateway, SocketAddr) {
    let dir = TempDir::new(tag);
    let ca = Ca::new("test CA");
    let cert = ca.issue_p256(dir.path(), "a", "a.test", 1);
    let plain: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let config = format!(
        "version: 1\nthreads: 2\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\n\
         grace_period_seconds: 5\ngraceful_shutdown_timeout_seconds: 1\n\
         gateway:\n  listen:\n    - \"{plain}\"\n\
         \x20   - addr: \"{tls}\"\n      tls:\n        certificates:\n\
         \x20         - {{ cert: \"{cert}\", key: \"{key}\" }}\n\
         \x20 groups:\n    stable: {{ servers: [\"{origin}\"] }}\n\
         \x20 routing: {{ default: stable }}\n  limits: {limits}\n",
        d = dir.path().display(),
        cert = cert.cert.display(),
        key = cert.key.display(),
    );
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, config).expect("write config");
    (Gateway::start_with_file(dir, config_path, plain), tls)
}

/// What one zero-window connection saw.
#[derive(Debug, Default)]
struct Seen {
    answered: usize,
    data_bytes: usize,
    reset: usize,
    /// The error codes of the resets.
    codes: std::collections::BTreeSet<u32>,
}

/// Opens `streams` GETs on one connection whose client first sets its initial stream window
/// to zero, so no response byte can be sent; reads frames until every stream was reset or
/// nothing came for `IO_TIMEOUT`. `answered` counts response heads, `reset` RST_STREAMs. The
/// connection is returned open.
fn zero_window_client(tls: SocketAddr, streams: u32) -> (Seen, RawH2) {
    let mut client = RawH2::connect(tls, "a.test");
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0.
    let mut burst = h2::frame(h2::SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]);
    let block = h2::get_block("a.test");
    for i in 0..streams {
        burst.extend(h2::frame(
            h2::HEADERS,
            h2::END_HEADERS | h2::END_STREAM,
            2 * i + 1,
            &block,
        ));
    }
    client.send(&burst).expect("requests");
    let mut seen = Seen::default();
    while seen.reset < streams as usize {
        let Some((kind, _flags, stream, payload)) = client.read_frame() else {
            break;
        };
        match kind {
            h2::HEADERS if stream != 0 => seen.answered += 1,
            h2::DATA => seen.data_bytes += payload.len(),
            h2::RST_STREAM => {
                seen.reset += 1;
                if let Some(code) = payload.get(..4) {
                    seen.codes
                        .insert(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
                }
            }
            _ => {}
        }
    }
    (seen, client)
}

/// One wave of the attack: `connections` zero-window clients of `streams` GETs each, run at
/// once. Returns what they saw, their connections (still open), the gateway's peak RSS
/// (KiB) while they ran, and how long the wave took.
fn zero_window_wave(
    gateway: &Gateway,
    tls: SocketAddr,
    connections: usize,
    streams: u32,
) -> (Vec<Seen>, Vec<RawH2>, u64, Duration) {
    let pid = gateway.pid();
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|_| thread::spawn(move || zero_window_client(tls, streams)))
        .collect();
    let sampler = {
        let done = done.clone();
        thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::SeqCst) {
                peak = peak.max(rss_kib(pid));
                thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let (seen, open): (Vec<Seen>, Vec<RawH2>) = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .unzip();
    let took = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let peak = sampler.join().expect("sampler");
    (seen, open, peak, took)
}

/// What a stalled stream may hold in the gateway at most, in KiB: Pingora's read-ahead from
/// the origin (its task queue and the batch being written: up to ten reads of at most 64 KiB),
/// its 64 KiB read buffer for the origin connection, and 64 KiB for the stream's TLS, h2 and
/// proxy state. h2's send buffer holds nothing: the window is zero.
const STALLED_STREAM_KIB: u64 = 10 * 64 + 64 + 64;

/// 20 connections × 100 GETs of a 1 MiB object, each client with a zero stream window: the
/// gateway answers each (a response head needs no window) and resets every stream once
/// `send_timeout` passes without a byte accepted. Memory: the peak stays under
/// [`STALLED_STREAM_KIB`] a stream (2,000 streams: 1.5 GiB; measured about 0.3 MiB a
/// stream), and a second wave while the first wave's connections stay open takes less than
/// three quarters as much again: the first wave's streams were let go (before `send_timeout`
/// existed they were held until the client left, and a second wave would double the memory).
#[test]
fn stalled_h2_streams_are_reset_after_the_send_timeout() {
    raise_open_files();
    let (connections, per_connection) = (20, 100);
    let total = connections * per_connection as usize;
    let (origin, _) = large_origin(1024 * 1024);
    let (gateway, tls) = tls_gateway(
        "send-timeout-h2",
        origin,
        &format!("{{ send_timeout: {SEND_TIMEOUT}, keepalive_timeout: 1h }}"),
    );
    let rss_idle = rss_kib(gateway.pid());
    let (first, _first_open, first_peak, took) =
        zero_window_wave(&gateway, tls, connections, per_connection);
    let (second, _second_open, second_peak, _) =
        zero_window_wave(&gateway, tls, connections, per_connection);
    let sum = |seen: &[Seen], f: fn(&Seen) -> usize| seen.iter().map(f).sum::<usize>();
    eprintln!(
        "zero-window streams, {total} a wave: answered {} + {}, reset {} + {} (codes {:?}), \
         data bytes {}; first wave took {took:?}; RSS idle {rss_idle} KiB, peak {first_peak} \
         KiB, peak in the second wave {second_peak} KiB",
        sum(&first, |s| s.answered),
        sum(&second, |s| s.answered),
        sum(&first, |s| s.reset),
        sum(&second, |s| s.reset),
        first
            .iter()
            .chain(&second)
            .flat_map(|s| s.codes.iter())
            .collect::<std::collections::BTreeSet<_>>(),
        sum(&first, |s| s.data_bytes) + sum(&second, |s| s.data_bytes),
    );
    for (wave, seen) in [("first", &first), ("second", &second)] {
        assert_eq!(sum(seen, |s| s.answered), total, "{wave} wave: {seen:?}");
        assert_eq!(sum(seen, |s| s.data_bytes), 0, "no DATA fits a zero window");
        assert_eq!(
            sum(seen, |s| s.reset),
            total,
            "{wave} wave: every stalled stream is reset: {seen:?}"
        );
    }
    let bound = rss_idle + total as u64 * STALLED_STREAM_KIB;
    assert!(
        first_peak < bound,
        "RSS peaked at {first_peak} KiB, over {bound} KiB"
    );
    let first_growth = first_peak.saturating_sub(rss_idle);
    assert!(
        second_peak < first_peak + first_growth * 3 / 4,
        "the second wave took RSS from {first_peak} to {second_peak} KiB: the first wave's \
         streams are still held"
    );
    assert!(
        took >= Duration::from_secs(2) - Duration::from_millis(100),
        "every stream reset after {took:?}, before the send timeout"
    );
}

/// An HTTP/1.1 client that asks for 64 MiB and reads nothing: once the socket buffers are full
/// the gateway waits `send_timeout` for the client to take a byte, then closes the connection
/// (and the origin's answer is cut off). Reading afterwards finds the answer short and the
/// connection at its end.
#[test]
fn an_http1_client_that_never_reads_is_closed_after_the_send_timeout() {
    let size = 64 * 1024 * 1024;
    let (origin, cut) = large_origin(size);
    let (gateway, _tls) = tls_gateway(
        "send-timeout-h1",
        origin,
        &format!("{{ send_timeout: {SEND_TIMEOUT} }}"),
    );
    let mut client = TcpStream::connect(gateway.addr).expect("connect");
    client
        .write_all(b"GET /large HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .expect("request");
    let sent = Instant::now();
    // The gateway gives up on the client: it lets the origin connection go, cutting the
    // answer off there.
    let waited = wait_until("the origin's answer cut off", READY_TIMEOUT, || {
        cut.load(Ordering::SeqCst) == 1
    });
    client.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    let ended = loop {
        match client.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => received += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!(
                "still open after {:?} ({e}); read {received} bytes",
                sent.elapsed()
            ),
        }
    };
    eprintln!(
        "HTTP/1.1 client reading nothing: {ended} after {waited:?}; {received} of {size} bytes"
    );
    assert!(
        received < size,
        "the whole answer was delivered ({received} bytes)"
    );
    assert!(
        waited >= Duration::from_secs(2) - Duration::from_millis(100),
        "given up after {waited:?}, before the send timeout"
    );
}

/// Linux's TCP state of an established connection (`include/net/tcp_states.h`).
const TCP_ESTABLISHED: u8 = 1;

/// The TCP state of `stream` ([`TCP_ESTABLISHED`] while the connection is up).
fn tcp_state(stream: &TcpStream) -> u8 {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain data; getsockopt writes at most `len` bytes into it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        assert_eq!(rc, 0, "TCP_INFO");
        info.tcpi_state
    }
}

/// An HTTP/2 client that sends PINGs and never reads: once the socket takes no more of the
/// gateway's answers, h2 stops reading too, and the GOAWAY of the keep-alive deadline cannot
/// go out either. After `send_timeout` without a byte taken, the gateway ends the connection
/// itself (the client's socket leaves ESTABLISHED) instead of holding it for good.
#[test]
fn an_h2_connection_whose_client_stops_reading_is_closed_after_the_send_timeout() {
    let (origin, _) = large_origin(1);
    let (_gateway, tls) = tls_gateway(
        "send-timeout-h2-socket",
        origin,
        &format!("{{ send_timeout: {SEND_TIMEOUT}, keepalive_timeout: 1s }}"),
    );
    let mut client = RawH2::connect(tls, "a.test");
    let pings: Vec<u8> = (0..1024u64)
        .flat_map(|i| h2::frame(h2::PING, 0, 0, &i.to_be_bytes()))
        .collect();
    client
        .tls
        .get_ref()
        .set_write_timeout(Some(Duration::from_millis(500)))
        .expect("write timeout");
    let mut sent = 0usize;
    // Until the gateway stops reading (a write waits 500 ms), or 256 MiB.
    while sent < 256 << 20 && client.send(&pings).is_ok() {
        sent += pings.len();
    }
    let socket = client.tls.get_ref();
    let waited = wait_until("the gateway closing the connection", READY_TIMEOUT, || {
        tcp_state(socket) != TCP_ESTABLISHED
    });
    eprintln!(
        "h2 client that stopped reading: {sent} bytes of PINGs sent; connection ended \
         {waited:?} after the client's writes stalled"
    );
    assert!(sent < 256 << 20, "the gateway read on without being read");
}
