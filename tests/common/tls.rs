//! TLS for the end-to-end tests: certificates made at test time (nothing with a private key is
//! checked in), a client that reports what the gateway presented, an HTTPS origin, and raw
//! HTTP/2 frames for the attack tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{
    SslAcceptor, SslConnector, SslConnectorBuilder, SslMethod, SslStream, SslVerifyMode, SslVersion,
};
use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509NameRef, X509};

use super::{free_port, test_listener, Gateway, TempDir};

/// The kind of key a certificate gets.
#[derive(Clone, Copy)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
}

fn new_key(kind: KeyKind) -> PKey<Private> {
    match kind {
        KeyKind::EcdsaP256 => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
            PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("pkey")
        }
        KeyKind::Rsa2048 => PKey::from_rsa(Rsa::generate(2048).expect("RSA key")).expect("pkey"),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A test certificate authority.
pub struct Ca {
    pub cert: X509,
    key: PKey<Private>,
}

/// A certificate and its key, as the gateway reads them: full-chain PEM and PEM key.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The serial in upper-case hex (as OpenSSL prints it).
    pub serial: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = new_key(KeyKind::EcdsaP256);
        let mut b = cert_builder(V3, 1, name, None, &key, thirty_days());
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("ext");
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku"),
        )
        .expect("ext");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        Ca {
            cert: b.build(),
            key,
        }
    }

    /// A leaf certificate for `names` valid from an hour ago for `days` days (negative: it
    /// expired that long ago).
    pub fn leaf(
        &self,
        names: &[&str],
        kind: KeyKind,
        serial_no: u32,
        days: i64,
    ) -> (X509, PKey<Private>) {
        let key = new_key(kind);
        let valid = if days >= 0 {
            (now() - 3600, now() + days * 86_400)
        } else {
            (now() + (days - 10) * 86_400, now() + days * 86_400)
        };
        let mut b = cert_builder(
            V3,
            serial_no,
            names.first().copied().unwrap_or("client"),
            Some(self.cert.subject_name()),
            &key,
            valid,
        );
        if !names.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for n in names {
                san.dns(n);
            }
            let ext = san
                .build(&b.x509v3_context(Some(&self.cert), None))
                .expect("san");
            b.append_extension(ext).expect("ext");
        }
        b.sign(&self.key, MessageDigest::sha256()).expect("sign");
        (b.build(), key)
    }

    /// Writes a leaf (full chain: leaf then this CA) and its key to `dir/stem.pem` and
    /// `dir/stem.key`.
    pub fn issue(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        kind: KeyKind,
        serial_no: u32,
        days: i64,
    ) -> Issued {
        let (cert, key) = self.leaf(names, kind, serial_no, days);
        let mut pem = cert.to_pem().expect("pem");
        pem.extend(self.cert.to_pem().expect("pem"));
        write_issued(dir, stem, serial_no, &pem, &key)
    }

    /// [`Ca::issue`] for the one name `name`: an ECDSA P-256 leaf valid for 30 days.
    pub fn issue_p256(&self, dir: &Path, stem: &str, name: &str, serial_no: u32) -> Issued {
        self.issue(dir, stem, &[name], KeyKind::EcdsaP256, serial_no, 30)
    }

    /// Writes an X.509 version 1 leaf for `name` (no extensions, as `openssl x509 -req` makes
    /// without `-extfile`) and its own key to `dir/stem.pem` and `dir/stem.key`.
    pub fn issue_v1(&self, dir: &Path, stem: &str, name: &str, serial_no: u32) -> Issued {
        let key = new_key(KeyKind::EcdsaP256);
        let mut b = cert_builder(
            V1,
            serial_no,
            name,
            Some(self.cert.subject_name()),
            &key,
            thirty_days(),
        );
        b.sign(&self.key, MessageDigest::sha256()).expect("sign");
        let pem = b.build().to_pem().expect("pem");
        write_issued(dir, stem, serial_no, &pem, &key)
    }

    /// Writes this CA's certificate to `path`.
    pub fn write_cert(&self, path: &Path) {
        std::fs::write(path, self.cert.to_pem().expect("pem")).expect("write CA");
    }
}

/// X.509's version field for version 3 (extensions allowed) and version 1 (none).
const V3: i32 = 2;
const V1: i32 = 0;

/// Valid from an hour ago for 30 days (Unix seconds).
fn thirty_days() -> (i64, i64) {
    (now() - 3600, now() + 30 * 86_400)
}

/// A certificate for `key` named `name` (common name), with `serial_no`, issued by `issuer`
/// (`None`: itself) and `valid` from..until (Unix seconds); extensions and signing are the
/// caller's.
fn cert_builder(
    version: i32,
    serial_no: u32,
    name: &str,
    issuer: Option<&X509NameRef>,
    key: &PKey<Private>,
    valid: (i64, i64),
) -> X509Builder {
    let mut subject = X509NameBuilder::new().expect("name");
    subject
        .append_entry_by_nid(Nid::COMMONNAME, name)
        .expect("cn");
    let subject = subject.build();
    let mut b = X509Builder::new().expect("builder");
    b.set_version(version).expect("version");
    b.set_serial_number(&serial(serial_no)).expect("serial");
    b.set_subject_name(&subject).expect("subject");
    b.set_issuer_name(issuer.unwrap_or(&subject))
        .expect("issuer");
    b.set_pubkey(key).expect("pubkey");
    b.set_not_before(&Asn1Time::from_unix(valid.0).expect("time"))
        .expect("nb");
    b.set_not_after(&Asn1Time::from_unix(valid.1).expect("time"))
        .expect("na");
    b
}

/// Writes a certificate chain (`pem`) and `key` to `dir/stem.pem` and `dir/stem.key`.
fn write_issued(dir: &Path, stem: &str, serial_no: u32, pem: &[u8], key: &PKey<Private>) -> Issued {
    let issued = Issued {
        cert: dir.join(format!("{stem}.pem")),
        key: dir.join(format!("{stem}.key")),
        serial: format!("{serial_no:X}"),
    };
    write_atomically(&issued.cert, pem);
    write_atomically(
        &issued.key,
        &key.private_key_to_pem_pkcs8().expect("key pem"),
    );
    issued
}

fn serial(n: u32) -> Asn1Integer {
    BigNum::from_u32(n)
        .and_then(|bn| bn.to_asn1_integer())
        .expect("serial")
}

/// Replaces `path` by renaming a new file over it, as certificate tools do.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A TLS connection to `addr` with `sni` (none when `None`), verification off (the test
/// looks at what was presented), `configure` applied to the connector first.
pub fn connect_with(
    addr: SocketAddr,
    sni: Option<&str>,
    configure: impl FnOnce(&mut SslConnectorBuilder),
) -> Result<SslStream<TcpStream>, String> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    builder.set_verify(SslVerifyMode::NONE);
    configure(&mut builder);
    let connector = builder.build();
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    tcp.set_write_timeout(Some(Duration::from_secs(10))).ok();
    let mut config = connector.configure().expect("config");
    config.set_use_server_name_indication(sni.is_some());
    config.set_verify_hostname(false);
    config
        .connect(sni.unwrap_or("unused"), tcp)
        .map_err(|e| e.to_string())
}

/// Makes one connection with `openssl s_client` and saves its session, then `n` more offering
/// it; returns how many of those resumed it (`Reused` in s_client's report).
pub fn resumed_connections(
    addr: SocketAddr,
    sni: &str,
    n: usize,
    dir: &Path,
    extra: &[&str],
) -> usize {
    let session = dir.join(format!("session-{sni}-{}.pem", extra.join("")));
    // Each sends a request and reads the answer to the end, so that the TLS 1.3 tickets
    // (sent after the handshake) arrive before s_client saves or ends the session.
    let s_client = |how: &str| {
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-ign_eof",
                "-connect",
                &addr.to_string(),
                "-servername",
                sni,
                how,
            ])
            .arg(&session)
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_client");
        let request = format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(request.as_bytes())
            .expect("request");
        let out = child.wait_with_output().expect("s_client output");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = s_client("-sess_out");
    assert!(
        first.contains("\nNew, ") && first.contains("HTTP/1.1 200"),
        "first connection: {first}"
    );
    (0..n)
        .filter(|_| s_client("-sess_in").contains("\nReused, "))
        .count()
}

/// The serial (hex) of the certificate the gateway presents for `sni`.
pub fn served_serial(addr: SocketAddr, sni: Option<&str>) -> String {
    served_serial_with(addr, sni, |_| {})
}

/// The serial (hex) of the certificate the gateway presents for `sni` to a client set up by
/// `configure` (its signature algorithms, say).
pub fn served_serial_with(
    addr: SocketAddr,
    sni: Option<&str>,
    configure: impl FnOnce(&mut SslConnectorBuilder),
) -> String {
    let stream = connect_with(addr, sni, configure).expect("TLS handshake");
    let cert = stream.ssl().peer_certificate().expect("a certificate");
    let hex = cert
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
        .expect("serial");
    hex.trim_start_matches('0').to_string()
}

/// An HTTPS/1.1 origin: answers every request 200 with its name and, in `x-client-cert`, the
/// common name of the client's certificate (`none` without one). With `client_ca`, a client
/// certificate from that CA is required.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    /// Connections accepted (TCP), whether or not their handshake then succeeded.
    pub connections: Arc<AtomicUsize>,
}

impl TlsOrigin {
    pub fn start(name: &str, cert: &Issued, client_ca: Option<&X509>) -> TlsOrigin {
        Self::start_with(name, cert, client_ca, None)
    }

    /// An origin that speaks TLS 1.2 at most: a client certificate it requires is refused
    /// during the handshake (in TLS 1.3 the client learns of it only after its handshake).
    pub fn start_tls12(name: &str, cert: &Issued, client_ca: Option<&X509>) -> TlsOrigin {
        Self::start_with(name, cert, client_ca, Some(SslVersion::TLS1_2))
    }

    fn start_with(
        name: &str,
        cert: &Issued,
        client_ca: Option<&X509>,
        max_version: Option<SslVersion>,
    ) -> TlsOrigin {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        b.set_max_proto_version(max_version).expect("max version");
        b.set_certificate_chain_file(&cert.cert).expect("chain");
        b.set_private_key_file(&cert.key, openssl::ssl::SslFiletype::PEM)
            .expect("key");
        if let Some(ca) = client_ca {
            let mut store = openssl::x509::store::X509StoreBuilder::new().expect("store");
            store.add_cert(ca.clone()).expect("ca");
            b.set_verify_cert_store(store.build()).expect("store");
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        let acceptor = Arc::new(b.build());
        let listener = test_listener();
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let name = name.to_string();
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (acceptor, counted, name) = (acceptor.clone(), counted.clone(), name.clone());
                thread::spawn(move || {
                    tcp.set_read_timeout(Some(Duration::from_secs(30))).ok();
                    let Ok(mut tls) = acceptor.accept(tcp) else {
                        return;
                    };
                    let client = tls
                        .ssl()
                        .peer_certificate()
                        .and_then(|c| {
                            c.subject_name()
                                .entries_by_nid(Nid::COMMONNAME)
                                .next()
                                .and_then(|e| e.data().to_string().ok())
                        })
                        .unwrap_or_else(|| "none".into());
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tls.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                        buf.drain(..end);
                        counted.fetch_add(1, Ordering::SeqCst);
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nx-client-cert: {client}\r\n\r\n{name}",
                            name.len()
                        );
                        if tls.write_all(response.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TlsOrigin {
            addr,
            requests,
            connections,
        }
    }
}

/// HTTP/2 frame types and flags used by the attack tests.
pub mod h2 {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// One frame.
    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A header block for `GET /` on `authority` (HPACK: static-table entries and a literal
    /// without indexing; no Huffman coding).
    pub fn get_block(authority: &str) -> Vec<u8> {
        // :method GET, :scheme https, :path /
        let mut block = vec![0x82, 0x87, 0x84];
        // :authority (static index 1), literal value, not indexed.
        block.push(0x01);
        block.push(authority.len() as u8);
        block.extend_from_slice(authority.as_bytes());
        block
    }

    /// A literal header field `name: value` (new name, not indexed), `value` under 127 bytes.
    pub fn literal(name: &str, value: &str) -> Vec<u8> {
        let mut out = vec![0x00, name.len() as u8];
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
        out
    }
}

/// One frame as read: type, flags, stream id, payload.
pub type Frame = (u8, u8, u32, Vec<u8>);

/// A raw HTTP/2 connection over TLS (ALPN h2), for sending frames no proper client would.
pub struct RawH2 {
    pub tls: SslStream<TcpStream>,
}

impl RawH2 {
    /// Connects, checks that h2 was negotiated and sends the preface and empty SETTINGS.
    pub fn connect(addr: SocketAddr, sni: &str) -> RawH2 {
        let mut tls = connect_with(addr, Some(sni), |b| {
            b.set_alpn_protos(b"\x02h2").expect("alpn");
        })
        .expect("TLS handshake");
        assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
        let mut hello = h2::PREFACE.to_vec();
        hello.extend(h2::frame(h2::SETTINGS, 0, 0, &[]));
        tls.write_all(&hello).expect("preface");
        RawH2 { tls }
    }

    /// Sends bytes; `Err` once the gateway has closed the connection.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes)
    }

    /// Opens `n` streams, each a `GET /` on `authority` followed by the frames `then(stream id)`
    /// makes, sent in 64 KiB bursts until the gateway closes the connection. Returns how many
    /// had been sent by the last burst that went through.
    pub fn requests_followed_by(
        &mut self,
        n: u32,
        authority: &str,
        then: impl Fn(u32) -> Vec<u8>,
    ) -> u32 {
        let block = h2::get_block(authority);
        let mut burst = Vec::new();
        let mut sent = 0;
        for i in 0..n {
            let id = 2 * i + 1;
            burst.extend(h2::frame(
                h2::HEADERS,
                h2::END_HEADERS | h2::END_STREAM,
                id,
                &block,
            ));
            burst.extend(then(id));
            if burst.len() > 64 * 1024 {
                if self.send(&burst).is_err() {
                    return sent;
                }
                sent = i + 1;
                burst.clear();
            }
        }
        if self.send(&burst).is_ok() {
            sent = n;
        }
        sent
    }

    /// Reads one frame: (type, flags, stream id, payload); `None` once the connection is
    /// closed (or a read waited `IO_TIMEOUT`: see [`RawH2::frames_until_closed`]).
    pub fn read_frame(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        self.tls
            .get_ref()
            .set_read_timeout(Some(super::IO_TIMEOUT))
            .ok();
        let mut head = [0u8; 9];
        self.tls.read_exact(&mut head).ok()?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        self.tls.read_exact(&mut payload).ok()?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some((head[3], head[4], stream, payload))
    }

    /// Reads one frame: `Ok(None)` at the connection's orderly end (TLS close or TCP end of
    /// stream), `Err` if it was reset or a read waited `IO_TIMEOUT`.
    pub fn read_frame_or_end(&mut self) -> std::io::Result<Option<Frame>> {
        self.tls
            .get_ref()
            .set_read_timeout(Some(super::IO_TIMEOUT))
            .ok();
        let mut head = [0u8; 9];
        match self.tls.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        self.tls.read_exact(&mut payload)?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Ok(Some((head[3], head[4], stream, payload)))
    }

    /// Reads frames until the connection ends: the frames' types with when each came, and
    /// whether the gateway closed the connection (false: still open after a read waited
    /// `IO_TIMEOUT`).
    pub fn frames_until_closed(&mut self) -> (Vec<(u8, std::time::Instant)>, bool) {
        let mut frames = Vec::new();
        loop {
            self.tls
                .get_ref()
                .set_read_timeout(Some(super::IO_TIMEOUT))
                .ok();
            let mut head = [0u8; 9];
            if let Err(e) = self.tls.read_exact(&mut head) {
                let open = matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
                return (frames, !open);
            }
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if self.tls.read_exact(&mut payload).is_err() {
                return (frames, true);
            }
            frames.push((head[3], std::time::Instant::now()));
        }
    }

    /// Reads frames until the gateway sends GOAWAY (returns its error code) or closes the
    /// connection (`None`), within `limit`; panics if the connection is still open then.
    pub fn until_closed(&mut self, limit: Duration) -> Option<u32> {
        self.tls.get_ref().set_read_timeout(Some(limit)).ok();
        let start = std::time::Instant::now();
        loop {
            assert!(
                start.elapsed() < limit,
                "the gateway kept the connection open"
            );
            let mut head = [0u8; 9];
            if self.tls.read_exact(&mut head).is_err() {
                return None;
            }
            let len =
                (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if self.tls.read_exact(&mut payload).is_err() {
                return None;
            }
            if head[3] == h2::GOAWAY && payload.len() >= 8 {
                return Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
    }
}

/// A gateway at the edge: a plaintext listener (first), a TLS listener, a redirect listener
/// (to the TLS listener's port), admin and metrics.
pub struct Edge {
    pub gateway: Gateway,
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub redirect: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
}

/// Starts an edge in `dir` (an access log there too): `tls_block` is the TLS listener's
/// `tls:` block (see `tls_block`), `admin_keys` the admin's lines after its `listen`, and
/// `rest` (groups and routing, a store) ends the gateway section. Returns once every listener
/// answers.
pub fn start_edge(dir: TempDir, tls_block: &str, admin_keys: &str, rest: &str) -> Edge {
    let addr = || -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().expect("addr") };
    let (plain, tls, redirect, admin, metrics) = (addr(), addr(), addr(), addr(), addr());
    let config = format!(
        "version: 1\nthreads: 2\npid_file: {d}/gw.pid\nupgrade_sock: {d}/upgrade.sock\n\
         grace_period_seconds: 5\ngraceful_shutdown_timeout_seconds: 1\n\
         gateway:\n  listen:\n    - \"{plain}\"\n\
         \x20   - addr: \"{tls}\"\n{tls_block}\
         \x20   - {{ addr: \"{redirect}\", redirect_https: true, https_port: {tls_port} }}\n\
         \x20 admin:\n    listen: \"{admin}\"\n{admin_keys}\
         \x20 metrics: {{ listen: \"{metrics}\" }}\n\
         \x20 access_log: {{ path: {d}/access.log }}\n{rest}",
        d = dir.path().display(),
        tls_port = tls.port(),
    );
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, config).expect("write config");
    // Waits for every listener of the file: plaintext, TLS, redirect, admin and metrics.
    let gateway = Gateway::start_with_file(dir, config_path, plain);
    Edge {
        gateway,
        plain,
        tls,
        redirect,
        admin,
        metrics,
    }
}

/// The `tls:` block of a TLS listener for `certs`, default `default`, and `more` keys.
pub fn tls_block(certs: &[&Issued], default: Option<&Issued>, more: &str) -> String {
    let mut out = String::from("      tls:\n        certificates:\n");
    for c in certs {
        out.push_str(&format!(
            "          - {{ cert: \"{}\", key: \"{}\" }}\n",
            c.cert.display(),
            c.key.display()
        ));
    }
    if let Some(d) = default {
        out.push_str(&format!(
            "        default_certificate: \"{}\"\n",
            d.cert.display()
        ));
    }
    out.push_str(more);
    out
}

/// Runs curl with `args`; returns stdout (fails the test when curl fails).
pub fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed by scripts/setup.sh test");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
