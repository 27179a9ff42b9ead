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
    // Seven requests a third of the timeout apart: the connection lives for twice the timeout.
    let served = 7;
    for _ in 0..served {
        let response = client.get("/", &[]);
        assert_eq!((response.status, response.text().as_str()), (200, "stable"));
        std::thread::sleep(KEEPALIVE / 3);
    }
    assert_eq!(stable.count(), served, "every request reached the origin");
}

/// The admin token of the descriptor test.
const TOKEN: &str = "deadlines-test-token-0123456789";

/// Started with a soft open-files limit of 256 under a higher hard one, the gateway raises the
/// soft limit to the hard one, says so in its log, and `/status` shows it.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_one() {
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
        0
    );
    let hard = hard.rlim_max;
    assert!(
        hard > 256,
        "the hard limit here ({hard}) leaves nothing to raise"
    );
    let stable = Origin::start("stable");
    let dir = TempDir::new("gw-nofile");
    let (addr, admin_addr) = (free_port(), free_port());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{addr}").parse().expect("addr");
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin_addr}").parse().expect("addr");
    let config = format!(
        "version: 1\nthreads: 1\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\n\
         gateway:\n  listen: [\"{addr}\"]\n  admin: {{ listen: \"{admin_addr}\", token: \"{TOKEN}\" }}\n\
         {groups}  routing: {{ default: stable }}\n",
        d = dir.path().display(),
        groups = groups_yaml(&[("stable", &stable)])
    );
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, config).expect("write config");
    let gateway = Gateway::start_with_command(dir, config_path, addr, |command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit runs between fork and exec, on a struct on this stack.
        unsafe {
            command.pre_exec(move || {
                let lowered = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    });
    let status = admin(admin_addr, "GET", "/status", Some(TOKEN), None);
    assert_eq!(status.status, 200, "{}", status.text());
    let status: serde_json::Value = serde_json::from_slice(&status.body).expect("json");
    let files = &status["open_files"];
    assert_eq!(files["at_start"], 256, "{files}");
    let expected = if hard == libc::RLIM_INFINITY {
        files["limit"]
            .as_u64()
            .filter(|&l| l > 256)
            .expect("raised")
    } else {
        hard
    };
    assert_eq!(files["limit"], expected, "{files}");
    assert!(
        gateway.log().contains(&format!(
            "open files: {expected} descriptors (soft limit 256 at start"
        )),
        "{}",
        gateway.log()
    );
}
