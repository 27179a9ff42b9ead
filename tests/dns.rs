//! End-to-end test of upstream servers given by name: a DNS server the test controls moves the
//! name from one origin to another under traffic, then stops answering.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

const NAME: &str = "app.canary.test";

/// A tiny DNS server on 127.0.0.1: answers A queries for [`NAME`] with the address in `addr`
/// (TTL 1 s), an empty answer for other types, NXDOMAIN for other names. Stops (and closes
/// its socket, so lookups fail at once) when `stop` is set.
struct Dns {
    addr: SocketAddr,
    answer: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Dns {
    fn start(first: Ipv4Addr) -> Dns {
        let socket = UdpSocket::bind(("127.0.0.1", free_port())).expect("bind the DNS socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("dns addr");
        let answer = Arc::new(AtomicU32::new(u32::from(first)));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (answer.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = dns_reply(&buf[..n], Ipv4Addr::from(a.load(Ordering::SeqCst)))
                {
                    socket.send_to(&reply, from).ok();
                }
            }
        });
        Dns {
            addr,
            answer,
            stop,
            thread: Some(thread),
        }
    }

    fn point_to(&self, ip: Ipv4Addr) {
        self.answer.store(u32::from(ip), Ordering::SeqCst);
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("dns thread");
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The reply to one query (RFC 1035 §4.1), or `None` for what is not a one-question query.
fn dns_reply(query: &[u8], ip: Ipv4Addr) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 || u16::from_be_bytes([query[4], query[5]]) != 1 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
        at += len;
    }
    let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
    let question_end = at + 4;
    let question = query.get(12..question_end)?;
    let ours = labels.join(".") == NAME;
    let answers = u16::from(ours && qtype == 1);
    let rcode = if ours { 0 } else { 3 };
    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[0..2]); // id
    reply.push(0x80 | (query[2] & 0x01) | 0x04); // response, authoritative, RD copied
    reply.push(0x80 | rcode); // recursion available, rcode
    reply.extend_from_slice(&[0, 1, 0, answers as u8, 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if answers == 1 {
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // the question's name, A, IN
        reply.extend_from_slice(&1u32.to_be_bytes()); // TTL 1 s
        reply.extend_from_slice(&[0, 4]);
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}

/// Two origins on one port, on 127.0.0.2 and 127.0.0.3.
fn origin_pair() -> (Origin, Origin, u16) {
    loop {
        let port = free_port();
        let free = |ip: [u8; 4]| TcpListener::bind((Ipv4Addr::from(ip), port)).is_ok();
        if free([127, 0, 0, 2]) && free([127, 0, 0, 3]) {
            let a = Origin::start_at("a", SocketAddr::from(([127, 0, 0, 2], port)));
            let b = Origin::start_at("b", SocketAddr::from(([127, 0, 0, 3], port)));
            return (a, b, port);
        }
    }
}

fn metrics_text(addr: SocketAddr) -> String {
    get(addr, "/metrics", &[]).text()
}

/// A `name:port` server follows the name's address under traffic without a failed request, and
/// keeps the last good address (counting the failures) once the DNS server is gone; `/status`
/// shows the name's current address.
#[test]
fn a_named_server_follows_its_address_and_survives_a_dead_resolver() {
    let (a, b, port) = origin_pair();
    let mut dns = Dns::start(Ipv4Addr::new(127, 0, 0, 2));
    let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    const TOKEN: &str = "dns-test-admin-token";
    let gateway = Gateway::start(&format!(
        "  groups:\n    web:\n      servers: [\"{NAME}:{port}\"]\n\
         \x20     resolver: \"{dns}\"\n      resolve_interval: 1s\n\
         \x20 routing:\n    default: web\n\
         \x20 admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\" }}\n\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n",
        dns = dns.addr
    ));
    wait_for_port(admin_addr);
    wait_for_port(metrics);

    // The first lookup puts the name's address in service.
    wait_until("traffic reaches the first address", READY_TIMEOUT, || {
        let r = get(gateway.addr, "/", &[]);
        r.status == 200 && r.text() == "a"
    });

    // Traffic in a loop while the name moves.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (stop, failed, sent) = (stop.clone(), failed.clone(), sent.clone());
        let addr = gateway.addr;
        thread::spawn(move || {
            let mut client = Client::connect(addr);
            while !stop.load(Ordering::SeqCst) {
                let r = client.get("/", &[]);
                sent.fetch_add(1, Ordering::SeqCst);
                if r.status != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    wait_until("traffic flows", READY_TIMEOUT, || {
        sent.load(Ordering::SeqCst) >= 50
    });
    let before_move = b.count();
    assert_eq!(before_move, 0, "nothing reaches 127.0.0.3 before the move");
    dns.point_to(Ipv4Addr::new(127, 0, 0, 3));
    wait_until("traffic reaches the new address", READY_TIMEOUT, || {
        b.count() >= 50
    });

    // The DNS server goes away: lookups fail, the last good address keeps serving.
    dns.stop();
    wait_until("the failed lookups are counted", READY_TIMEOUT, || {
        metric_value(
            &metrics_text(metrics),
            "gateway_upstream_resolve_failures_total",
        ) >= 2.0
    });
    let served_by_b = b.count();
    wait_until(
        "traffic still reaches the last good address",
        READY_TIMEOUT,
        || b.count() >= served_by_b + 50,
    );
    stop.store(true, Ordering::SeqCst);
    traffic.join().expect("traffic thread");
    eprintln!(
        "requests: {} sent, {} failed; a served {}, b served {}",
        sent.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        a.count(),
        b.count()
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no request failed out of {}",
        sent.load(Ordering::SeqCst)
    );
    // Once moved, every request goes to the new address.
    let a_before = a.count();
    for _ in 0..20 {
        let r = get(gateway.addr, "/", &[]);
        assert_eq!((r.status, r.text()), (200, "b".to_string()));
    }
    assert_eq!(a.count(), a_before, "the old address gets nothing");

    // `/status` shows the name, its last good address and the failures.
    let status = admin(admin_addr, "GET", "/status", Some(TOKEN), None);
    let json: Value = serde_json::from_slice(&status.body).expect("json");
    let names = &json["groups"][0]["names"][0];
    assert_eq!(names["name"], format!("{NAME}:{port}"), "{json}");
    assert_eq!(
        names["addrs"],
        serde_json::json!([format!("127.0.0.3:{port}")]),
        "{json}"
    );
    assert!(names["failures"].as_u64().unwrap_or(0) >= 1, "{json}");
    assert!(
        gateway.log().contains("failed"),
        "the failed lookups are logged"
    );
}
