//! Debian's Pebble (a real ACME test server, `/usr/bin/pebble`) for the tests that order
//! certificates: started on 127.0.0.1 with an HTTPS listener certificate made at test time,
//! validating the challenges for real (never `PEBBLE_VA_ALWAYS_VALID`) by connecting back to
//! [`PEBBLE_NAME`] on the ports it is given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::tls::{Ca, KeyKind};
use super::{free_port, wait_for_port};

/// The name Pebble validates: it resolves it as the system does, to this machine.
pub const PEBBLE_NAME: &str = "localhost";

const NAME: &str = PEBBLE_NAME;

fn local_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().expect("addr")
}

/// Starts Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of
/// [`PEBBLE_NAME`], its files in `dir`. The returned guard stops it when dropped; its
/// `directory` is the ACME directory URL and its `ca_file` the root of its HTTPS listener
/// (a gateway's `gateway.acme.ca_file`); `write_root` fetches the root it issues under.
pub fn start_pebble(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
    Pebble::start(dir, http_port, tls_port)
}

/// A running Pebble; killed on drop.
pub struct Pebble {
    child: Child,
    /// Its ACME directory URL.
    pub directory: String,
    /// Its management listener (`/roots/0`).
    pub management: SocketAddr,
    /// The CA of its HTTPS listener's certificate (the gateway's `ca_file`).
    pub ca_file: PathBuf,
    log: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`.
    pub fn start(dir: &Path, http_port: u16, tls_port: u16) -> Pebble {
        let ca = Ca::new("pebble-listener-ca");
        let listener = ca.issue(dir, "pebble", &[NAME], KeyKind::EcdsaP256, 7, 30);
        let ca_file = dir.join("pebble-ca.pem");
        ca.write_cert(&ca_file);
        let (acme, management) = (local_addr(), local_addr());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": acme.to_string(),
                "managementListenAddress": management.to_string(),
                "certificate": listener.cert,
                "privateKey": listener.key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).expect("pebble config");
        let log = dir.join("pebble.log");
        let child = Command::new("/usr/bin/pebble")
            .arg("-config")
            .arg(&config_path)
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(std::fs::File::create(&log).expect("pebble log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble is installed by scripts/setup.sh test");
        wait_for_port(acme);
        wait_for_port(management);
        Pebble {
            child,
            directory: format!("https://{NAME}:{}/dir", acme.port()),
            management,
            ca_file,
            log,
        }
    }

    /// Pebble's issuing root (PEM), written to `path`.
    pub fn write_root(&self, path: &Path) {
        let url = format!("https://{NAME}:{}/roots/0", self.management.port());
        let root = curl(&[
            "--cacert",
            self.ca_file.to_str().expect("utf-8"),
            "--resolve",
            &format!("{NAME}:{}:127.0.0.1", self.management.port()),
            &url,
        ]);
        assert!(root.contains("BEGIN CERTIFICATE"), "root: {root}");
        std::fs::write(path, root).expect("write root");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// curl, as the TLS tests run it.
pub use super::tls::curl;

/// How many certificates Pebble issued and orders it holds, from its log.
pub fn pebble_counts(pebble: &Pebble) -> (usize, usize) {
    let log = pebble.log();
    let issued = log.matches("Issued certificate serial").count();
    let orders = log
        .lines()
        .filter_map(|l| l.split("There are now ").nth(1))
        .filter_map(|rest| rest.strip_suffix(" orders in the db"))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0);
    (issued, orders)
}
