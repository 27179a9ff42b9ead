//! Connection deadlines against a real gateway: an idle keep-alive connection is closed after
//! `limits.keepalive_timeout`, and one that keeps sending requests stays served.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The keep-alive timeout in these tests, small so they are quick.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// A gateway in front of one origin, with `keepalive_timeout: 1s`.
fn start() -> (Origin, Gateway) {
    let stable = Origin::start("stable");
    let section = format!(
        "{groups}  routing:\n    default: stable\n  limits:\n    keepalive_timeout: 1s\n",
        groups = groups_yaml(&[("stable", &stable)])
    );
    let gateway = Gateway::start(&section);
    (stable, gateway)
}

/// One request, then silence: the gateway closes the connection (the read sees its end),
/// and not before the keep-alive timeout has passed.
#[test]
fn an_idle_http1_connection_is_closed_after_the_keepalive_timeout() {
    let (_stable, gateway) = start();
    let mut client = Client::connect(gateway.addr);
    // Twice: Pingora's own keep-alive bound covers only the first wait; the second is the one
    // that was unbounded.
    for _ in 0..2 {
        let response = client.get("/", &[]);
        assert_eq!((response.status, response.text().as_str()), (200, "stable"));
    }
    let silent_from = Instant::now();
    let extra = client.read_until_closed();
    let waited = silent_from.elapsed();
    let extra = extra.unwrap_or_else(|| panic!("not closed after {waited:?}"));
    assert!(
        extra.is_empty(),
        "no answer is sent to a silent client: {extra:?}"
    );
    // The client starts counting after it has read the answer, a moment after the gateway
    // starts; allow for that moment.
    assert!(
        waited >= KEEPALIVE - Duration::from_millis(100),
        "closed after {waited:?}, before the keep-alive timeout"
    );
}

/// A client that sends its next request within the timeout each time stays on one connection
/// for longer than the timeout.
#[test]
fn a_busy_http1_connection_stays_open() {
    let (stable, gateway) = start();
    let mut client = Client::connect(gateway.addr);
    let started = Instant::now();
    let mut served = 0;
    while started.elapsed() < KEEPALIVE * 3 {
        let response = client.get("/", &[]);
        assert_eq!((response.status, response.text().as_str()), (200, "stable"));
        served += 1;
        std::thread::sleep(KEEPALIVE / 3);
    }
    assert!(served >= 6, "only {served} requests");
    assert_eq!(stable.count(), served, "every request reached the origin");
}
