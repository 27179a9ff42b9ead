//! Connection budgets against a real gateway: a flood of silent connections on one proxy
//! listener, in a process with few descriptors, leaves the other listener and the admin API
//! served; a full listener closes its longest-idle keep-alive connection for a new one.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// The admin token of these tests.
const TOKEN: &str = "connection-limits-token-0123456789";

/// A fresh loopback address.
fn local_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().expect("addr")
}

/// One request with `Connection: close` on a new connection: the status and the body, or
/// `None` when the connection could not be made or was closed without an answer.
fn try_request(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// `/status` through the admin API, parsed.
fn status(admin_addr: SocketAddr) -> serde_json::Value {
    let (code, body) = try_request(admin_addr, "/status", Some(TOKEN)).expect("admin answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// The `/status` entry of the listener on `addr`.
fn listener(status: &serde_json::Value, addr: SocketAddr) -> serde_json::Value {
    status["connections"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|l| l["listener"] == addr.to_string())
                .cloned()
        })
        .unwrap_or_else(|| panic!("no connections entry for {addr}: {status}"))
}

/// Starts the gateway on `config` (the whole file), first listener `addr`, with its
/// open-files limit at `nofile` both soft and hard when given (so it cannot raise it).
fn start(dir: TempDir, config: &str, addr: SocketAddr, nofile: Option<u64>) -> Gateway {
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, config).expect("write config");
    Gateway::start_with_command(dir, config_path, addr, |command| {
        let Some(nofile) = nofile else { return };
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit runs between fork and exec, on a struct on this stack.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    })
}

/// With 256 descriptors in all, 400 silent connections to proxy listener A fill A's budget
/// only: the admin API answers, a request on listener B is proxied, A makes room for its extra
/// connections by closing the silent ones that waited longest (counted), a request on A itself
/// is served, and the process never runs out of descriptors.
#[test]
fn a_flood_on_one_listener_leaves_the_others_served() {
    let stable = Origin::start("stable");
    let dir = TempDir::new("gw-flood");
    let (a, b, admin_addr, metrics_addr) = (local_addr(), local_addr(), local_addr(), local_addr());
    let config = format!(
        "version: 1\nthreads: 1\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\n\
         gateway:\n  listen: [\"{a}\", \"{b}\"]\n  admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\" }}\n\
         \x20 metrics: {{ listen: \"{metrics_addr}\" }}\n{groups}  routing: {{ default: stable }}\n",
        d = dir.path().display(),
        groups = groups_yaml(&[("stable", &stable)])
    );
    let gateway = start(dir, &config, a, Some(256));

    let budget = listener(&status(admin_addr), a)["max_connections"]
        .as_u64()
        .expect("a budget");
    assert!(
        (16..128).contains(&budget),
        "A's default budget is a share of 256 descriptors: {budget}"
    );

    // The flood: 400 connections that never send a byte, all held open by this test.
    let flood: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok())
        .collect();
    assert!(
        flood.len() as u64 > budget,
        "the flood got {} connections in",
        flood.len()
    );

    wait_until(
        "the admin API answers during the flood",
        Duration::from_secs(60),
        || try_request(admin_addr, "/status", Some(TOKEN)).is_some_and(|(code, _)| code == 200),
    );
    wait_until(
        "listener B proxies during the flood",
        Duration::from_secs(60),
        || try_request(b, "/", None) == Some((200, "stable".to_string())),
    );
    // Every flood connection is taken in at last (some wait in the kernel's accept queue),
    // each closing a silent one that waited longer.
    let over = (flood.len() as u64 - budget) as f64;
    let closed_on_a = || {
        try_request(metrics_addr, "/metrics", None).map_or(0.0, |(_, metrics)| {
            metric_value(
                &metrics,
                &format!("gateway_idle_connections_closed_total{{listener=\"{a}\"}}"),
            )
        })
    };
    wait_until(
        "A closes a silent connection for each one over its budget",
        Duration::from_secs(60),
        || closed_on_a() >= over,
    );
    let (code, metrics) = try_request(metrics_addr, "/metrics", None).expect("metrics answer");
    assert_eq!(code, 200);
    assert_eq!(
        metric_value(
            &metrics,
            &format!("gateway_connection_limit{{listener=\"{a}\"}}")
        ),
        budget as f64
    );

    let now = status(admin_addr);
    let on_a = listener(&now, a);
    assert!(
        on_a["open"].as_u64().expect("open") <= budget,
        "A never holds more than its budget: {on_a}"
    );
    assert_eq!(listener(&now, b)["refused"], 0, "B refused nothing");
    // A itself still serves a visitor: the silent connection that waited longest makes room.
    wait_until(
        "listener A proxies during the flood",
        Duration::from_secs(60),
        || try_request(a, "/", None) == Some((200, "stable".to_string())),
    );
    let log = gateway.log();
    assert!(
        !log.contains("Too many open files") && !log.contains("Accept() failed"),
        "the process ran out of descriptors:\n{log}"
    );
    drop(flood);
}

/// A gateway whose one listener takes at most two connections, serving group `stable` from
/// `stable`: `listen_keys` go into the listener's entry before `max_connections`, `more` is
/// more of the gateway section. Returns the gateway, the listener and the admin address.
fn start_full_listener(
    stable: &Origin,
    tag: &str,
    listen_keys: &str,
    more: &str,
) -> (Gateway, SocketAddr, SocketAddr) {
    let dir = TempDir::new(tag);
    let (addr, admin_addr) = (local_addr(), local_addr());
    let config = format!(
        "version: 1\nthreads: 1\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\n\
         gateway:\n  listen: [{{ addr: \"{addr}\", {listen_keys}max_connections: 2 }}]\n\
         \x20 admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\" }}\n\
         {more}{groups}  routing: {{ default: stable }}\n",
        d = dir.path().display(),
        groups = groups_yaml(&[("stable", stable)])
    );
    (start(dir, &config, addr, None), addr, admin_addr)
}

/// The listener at `addr` has `open` connections, `idle` of them idle (per `/status`).
fn open_and_idle(admin_addr: SocketAddr, addr: SocketAddr, open: u64, idle: u64) -> bool {
    let now = listener(&status(admin_addr), addr);
    now["open"] == open && now["idle"] == idle
}

/// With `first` open on a listener started by `start_full_listener`: once it is idle, a second
/// connection is served and goes idle, and a third is served by closing `first` (`which`
/// names it in the failure) without an answer. Returns the second and third connections.
fn full_then_evicted(
    admin_addr: SocketAddr,
    addr: SocketAddr,
    first: &mut Client,
    which: &str,
) -> (Client, Client) {
    wait_until("the first connection idle", Duration::from_secs(30), || {
        open_and_idle(admin_addr, addr, 1, 1)
    });
    let mut second = Client::connect(addr);
    assert_eq!(second.get("/", &[]).text(), "stable");
    wait_until("both connections idle", Duration::from_secs(30), || {
        open_and_idle(admin_addr, addr, 2, 2)
    });
    let mut third = Client::connect(addr);
    let response = third.get("/", &[]);
    assert_eq!((response.status, response.text().as_str()), (200, "stable"));
    assert_eq!(
        first.read_until_closed(),
        Some(Vec::new()),
        "{which} connection is closed for room, without an answer"
    );
    (second, third)
}

/// With `max_connections: 2` and two idle keep-alive connections, a new connection is served
/// by closing the one idle the longest; the other stays served.
#[test]
fn a_full_listener_closes_its_longest_idle_connection_for_a_new_one() {
    let stable = Origin::start("stable");
    let (_gateway, addr, admin_addr) = start_full_listener(&stable, "gw-evict", "", "");

    let mut oldest = Client::connect(addr);
    assert_eq!(oldest.get("/", &[]).text(), "stable");
    let (mut newer, _third) = full_then_evicted(admin_addr, addr, &mut oldest, "the longest-idle");
    assert_eq!(
        newer.get("/", &[]).text(),
        "stable",
        "the other stays served"
    );
    let on_listener = listener(&status(admin_addr), addr);
    assert_eq!(on_listener["max_connections"], 2, "{on_listener}");
    assert_eq!(on_listener["idle_closed"], 1, "{on_listener}");
    assert_eq!(on_listener["refused"], 0, "{on_listener}");
}

/// On an h2c listener (HTTP/2 and HTTP/1.1 told apart by the first bytes) a connection that
/// has sent nothing is idle too: a full listener closes it for a new one. One that began the
/// HTTP/2 preface and stopped has the header timeout, not the minute a silent one gets.
#[test]
fn an_h2c_listener_makes_room_and_times_out_a_stalled_preface() {
    let stable = Origin::start("stable");
    let (_gateway, addr, admin_addr) = start_full_listener(
        &stable,
        "gw-h2c-evict",
        "h2c: true, ",
        "\x20 limits: { header_timeout: 1s }\n",
    );

    // Sends nothing at all: idle from the start.
    let mut silent = Client::connect(addr);
    let (served, third) = full_then_evicted(admin_addr, addr, &mut silent, "the silent");
    let on_listener = listener(&status(admin_addr), addr);
    assert_eq!(on_listener["idle_closed"], 1, "{on_listener}");
    drop((served, third));

    // A preface begun and never finished: closed (a read waits IO_TIMEOUT, 10 times the
    // header timeout and far short of the first-byte minute), not left open.
    let mut stalled = Client::connect(addr);
    stalled.write_raw(b"PRI * HTTP/2.0\r\n");
    assert_eq!(
        stalled.read_until_closed(),
        Some(Vec::new()),
        "a stalled preface is closed after the header timeout"
    );
}
