//! Test harness: real origins on ephemeral ports that record what reaches them, a real gateway
//! process (the built binary) with a generated config, and a small raw HTTP/1.1 client.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod browser;
pub mod pebble;
pub mod tls;

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long anything in a test may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Socket read timeout for test clients: a hang becomes a failure, not a stuck test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_canary-gateway")
}

/// Ports this test process has handed out. Tests run in parallel threads: without this, a port
/// released by `free_port` for one test's gateway could be handed to another test's origin
/// before that gateway binds it (seen once: an admin request answered by an origin).
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port that was free a moment ago on 127.0.0.1 and that no other part of this test process
/// has been given.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// A listener for a test's own server, on a port from `free_port` (never port 0, whose
/// kernel-chosen port could be one just handed to another test).
pub fn test_listener() -> TcpListener {
    let start = Instant::now();
    loop {
        match TcpListener::bind(("127.0.0.1", free_port())) {
            Ok(listener) => return listener,
            Err(e) => assert!(start.elapsed() < READY_TIMEOUT, "no port to listen on: {e}"),
        }
    }
}

/// Waits, by connecting in a bounded loop, until something accepts on `addr`.
pub fn wait_for_port(addr: SocketAddr) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < READY_TIMEOUT,
            "nothing listening on {addr} after {READY_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits, by connecting in a bounded loop, until something accepts on `addr`, failing at
/// once (with `log()`) if `child` exits first.
fn wait_listening(addr: SocketAddr, child: &mut Child, log: &dyn Fn() -> String) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("gateway exited early ({status}); log:\n{}", log());
        }
        assert!(
            start.elapsed() < READY_TIMEOUT,
            "gateway not listening on {addr} after {READY_TIMEOUT:?}; log:\n{}",
            log()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Every address a gateway config file listens on: `gateway.listen` (plaintext, TLS and
/// redirect listeners), `gateway.admin.listen`, `gateway.metrics.listen` and
/// `gateway.demo_origins[].listen`. An unspecified IP (`0.0.0.0`) is reached on loopback.
pub fn listeners_in(config: &str) -> Vec<SocketAddr> {
    let root: serde_yaml::Value = serde_yaml::from_str(config).expect("config is YAML");
    let gateway = &root["gateway"];
    let mut texts: Vec<&str> = Vec::new();
    for entry in gateway["listen"].as_sequence().into_iter().flatten() {
        texts.extend(entry.as_str().or_else(|| entry["addr"].as_str()));
    }
    texts.extend(gateway["admin"]["listen"].as_str());
    texts.extend(gateway["metrics"]["listen"].as_str());
    for origin in gateway["demo_origins"].as_sequence().into_iter().flatten() {
        texts.extend(origin["listen"].as_str());
    }
    texts
        .into_iter()
        .map(|text| {
            let mut addr = std::net::ToSocketAddrs::to_socket_addrs(text)
                .ok()
                .and_then(|mut addrs| addrs.next())
                .unwrap_or_else(|| panic!("listener {text:?} is not an address"));
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            addr
        })
        .collect()
}

/// A fresh temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "canary-gw-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// One request as an origin received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header lines in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// All values of header `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of header `name`; fails the test when it is missing or repeated.
    pub fn one(&self, name: &str) -> &str {
        let values = self.all(name);
        assert_eq!(
            values.len(),
            1,
            "header {name} at origin: {:?}",
            self.headers
        );
        values[0]
    }
}

/// A keep-alive HTTP/1.1 origin on an ephemeral port. It answers every request `200` with its
/// name as the body, records each request, and counts the connections it accepted.
pub struct Origin {
    pub addr: SocketAddr,
    pub name: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// Connections that carried at least one request (health-check connects do not count).
    pub connections: Arc<AtomicUsize>,
}

impl Origin {
    pub fn start(name: &str) -> Origin {
        Self::start_with_delay(name, Duration::ZERO)
    }

    /// An origin that waits `delay` before answering each request.
    pub fn start_with_delay(name: &str, delay: Duration) -> Origin {
        Self::start_with(name, delay, 0)
    }

    /// An origin that answers every `fail_every`-th request (counted over all its
    /// connections) with `500` instead (0: never), after waiting `delay`.
    pub fn start_with(name: &str, delay: Duration, fail_every: usize) -> Origin {
        Self::serve(test_listener(), name, delay, fail_every)
    }

    /// An origin listening on `addr` (any loopback address: Linux routes all of 127/8 to `lo`,
    /// so origins on 127.0.0.2 and 127.0.0.3 can share a port).
    pub fn start_at(name: &str, addr: SocketAddr) -> Origin {
        let listener = TcpListener::bind(addr).expect("bind the origin's address");
        Self::serve(listener, name, Duration::ZERO, 0)
    }

    fn serve(listener: TcpListener, name: &str, delay: Duration, fail_every: usize) -> Origin {
        let addr = listener.local_addr().expect("origin addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let origin = Origin {
            addr,
            name: name.to_string(),
            requests: requests.clone(),
            connections: connections.clone(),
        };
        let body = name.to_string();
        let answer = Arc::new(Answer {
            body,
            delay,
            fail_every,
            served: AtomicUsize::new(0),
        });
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let requests = requests.clone();
                let connections = connections.clone();
                let answer = answer.clone();
                thread::spawn(move || serve_connection(stream, &answer, &requests, &connections));
            }
        });
        origin
    }

    pub fn count(&self) -> usize {
        self.requests.lock().expect("origin lock").len()
    }

    pub fn last(&self) -> Recorded {
        self.requests
            .lock()
            .expect("origin lock")
            .last()
            .cloned()
            .expect("origin received a request")
    }
}

/// How an [`Origin`] answers.
struct Answer {
    body: String,
    delay: Duration,
    fail_every: usize,
    served: AtomicUsize,
}

fn serve_connection(
    stream: TcpStream,
    answer: &Answer,
    requests: &Mutex<Vec<Recorded>>,
    connections: &AtomicUsize,
) {
    let Answer { body, delay, .. } = answer;
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let mut first = true;
    loop {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        if std::mem::take(&mut first) {
            connections.fetch_add(1, Ordering::SeqCst);
        }
        requests.lock().expect("origin lock").push(request);
        if !delay.is_zero() {
            thread::sleep(*delay);
        }
        let n = answer.served.fetch_add(1, Ordering::SeqCst) + 1;
        let status = if answer.fail_every > 0 && n.is_multiple_of(answer.fail_every) {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Origin: {body}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads one request (head and Content-Length body); `None` at end of stream or on garbage.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Recorded> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let headers = read_headers(reader)?;
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break body;
            }
            chunk.truncate(size);
            body.extend_from_slice(&chunk);
        }
    } else {
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        body
    };
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

fn read_headers(reader: &mut impl BufRead) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let mut raw = Vec::new();
        if reader.read_until(b'\n', &mut raw).ok()? == 0 {
            return None;
        }
        // Header values may carry non-UTF-8 bytes (obs-text); keep them visible.
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Some(headers);
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
}

/// A response as the test client read it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that can send several requests (keep-alive).
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Self::from_stream(TcpStream::connect(addr).expect("connect to gateway"))
    }

    /// Connects from the local address `source` (any of 127/8 on Linux, whose loopback
    /// interface takes the whole network), so the gateway sees that client address.
    pub fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> Client {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind the source address");
        socket.connect(&addr.into()).expect("connect to gateway");
        Self::from_stream(socket.into())
    }

    fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).ok();
        let writer = stream.try_clone().expect("clone stream");
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Sends `GET path` with `headers` and reads the response.
    pub fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        self.send_raw(request.as_bytes())
    }

    /// Writes raw bytes without reading anything.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Writes raw bytes and reads one response.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Response {
        self.writer.write_all(bytes).expect("write request");
        self.read_response()
    }

    pub fn read_response(&mut self) -> Response {
        let mut status_line = String::new();
        self.reader
            .read_line(&mut status_line)
            .expect("read status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = read_headers(&mut self.reader).expect("response headers");
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let body = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            self.read_chunked()
        } else if let Some(len) = find("content-length") {
            let mut body = vec![0; len.parse().expect("content-length")];
            self.reader.read_exact(&mut body).expect("read body");
            body
        } else {
            Vec::new()
        };
        Response {
            status,
            headers,
            body,
        }
    }

    fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut size = String::new();
            self.reader.read_line(&mut size).expect("chunk size");
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .expect("hex chunk size");
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).expect("chunk");
            chunk.truncate(size);
            body.extend_from_slice(&chunk);
            if size == 0 {
                return body;
            }
        }
    }

    /// Reads until the gateway closes the connection: what came before the close, or `None`
    /// if the connection was still open (a read waited `IO_TIMEOUT`) or was reset.
    pub fn read_until_closed(&mut self) -> Option<Vec<u8>> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).ok().map(|_| rest)
    }

    pub fn close(self) {
        self.writer.shutdown(Shutdown::Both).ok();
    }
}

/// One request on a new connection.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    Client::connect(addr).get(path, headers)
}

/// The body (the origin's name) `user`'s request gets from the gateway at `addr`.
pub fn group_of(addr: SocketAddr, user: &str) -> String {
    get(addr, "/", &[("Cookie", &format!("canary_user={user}"))]).text()
}

/// A running gateway process; killed on drop.
pub struct Gateway {
    pub addr: SocketAddr,
    pub dir: TempDir,
    pub config_path: PathBuf,
    child: Child,
}

impl Gateway {
    /// Starts the binary with `gateway_section` (YAML, indented under `gateway:`, without the
    /// `listen` key) and waits until it accepts connections.
    pub fn start(gateway_section: &str) -> Gateway {
        Self::start_with_listeners("", gateway_section)
    }

    /// As [`Gateway::start`], with more `gateway.listen` entries (YAML list items, indented
    /// four spaces) after the plaintext one.
    pub fn start_with_listeners(more_listen: &str, gateway_section: &str) -> Gateway {
        let dir = TempDir::new("gw");
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let config = format!(
            "version: 1\nthreads: 2\npid_file: {dir}/gw.pid\nupgrade_sock: {dir}/upgrade.sock\n\
             grace_period_seconds: 5\ngraceful_shutdown_timeout_seconds: 1\n\
             gateway:\n  listen:\n    - \"{addr}\"\n{more_listen}{gateway_section}",
            dir = dir.path().display()
        );
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, config).expect("write config");
        Self::start_with_file(dir, config_path, addr)
    }

    /// Starts the binary on an existing config file whose first listen address is `addr`, and
    /// waits until every listener the file configures accepts connections.
    pub fn start_with_file(dir: TempDir, config_path: PathBuf, addr: SocketAddr) -> Gateway {
        Self::start_with_command(dir, config_path, addr, |_| {})
    }

    /// As [`Gateway::start_with_file`], with `customise` applied to the process's command
    /// before it starts (descriptor limits, environment).
    pub fn start_with_command(
        dir: TempDir,
        config_path: PathBuf,
        addr: SocketAddr,
        customise: impl FnOnce(&mut Command),
    ) -> Gateway {
        let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");
        let mut command = Command::new(binary());
        command
            .arg("-c")
            .arg(&config_path)
            // GW_LOG=debug (when running a test) shows Pingora's own steps in the log.
            .env("RUST_LOG", std::env::var("GW_LOG").unwrap_or("info".into()))
            .stdout(Stdio::null())
            .stderr(log);
        customise(&mut command);
        let child = command.spawn().expect("start canary-gateway");
        let mut gateway = Gateway {
            addr,
            dir,
            config_path,
            child,
        };
        gateway.wait_ready();
        gateway
    }

    /// Waits until `addr` and every listener in the config file accept connections. Each
    /// listener (plaintext, TLS, redirect, admin, metrics, demo origins) is its own service
    /// and may come up after the others, so each one is waited for.
    fn wait_ready(&mut self) {
        let text = std::fs::read_to_string(&self.config_path).expect("read config");
        let mut listeners = vec![self.addr];
        listeners.extend(listeners_in(&text));
        for addr in listeners {
            wait_listening(addr, &mut self.child, &|| {
                std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
            });
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`HUP`, `TERM`, `QUIT`, ...) to the gateway process.
    pub fn signal(&self, name: &str) {
        send_signal(self.child.id(), name);
    }

    /// Waits (bounded) for a graceful exit, which must be a clean one (no abort — a listening
    /// socket closed twice aborts the process —, no panic); returns how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> Duration {
        let start = Instant::now();
        let status = self.wait_status(limit);
        assert!(
            status.success(),
            "gateway exited with {status}; log:\n{}",
            self.log()
        );
        start.elapsed()
    }

    /// Waits (bounded) for the process to end, however it ends.
    pub fn wait_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "gateway still running after {limit:?}; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts a second process on the same config with `-u` (graceful upgrade), logging to
    /// its own file in the same folder. It takes the sockets once this one gets SIGQUIT.
    pub fn spawn_upgrade(&self, generation: usize) -> Upgraded {
        let log = std::fs::File::create(self.dir.path().join(format!("gateway-{generation}.log")))
            .expect("log file");
        std::fs::remove_file(self.dir.path().join("upgrade.sock")).ok();
        let child = Command::new(binary())
            .arg("-u")
            .arg("-c")
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start upgraded canary-gateway");
        let sock = self.dir.path().join("upgrade.sock");
        let start = Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "new process never opened {}",
                sock.display()
            );
            thread::sleep(Duration::from_millis(10));
        }
        Upgraded(child)
    }
}

/// The process started by [`Gateway::spawn_upgrade`]; killed when dropped, so a failing test
/// leaves no gateway behind.
pub struct Upgraded(Child);

impl std::ops::Deref for Upgraded {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Upgraded {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Upgraded {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Sends signal `name` to process `pid` with kill(1).
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// One admin API request with an optional bearer token and JSON body.
pub fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Response {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    Client::connect(addr).send_raw(request.as_bytes())
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Runs the binary with `args` to completion.
pub fn run_binary(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run canary-gateway")
}

/// A YAML `groups:` block mapping each name to its origin.
pub fn groups_yaml(groups: &[(&str, &Origin)]) -> String {
    let mut yaml = String::from("  groups:\n");
    for (name, origin) in groups {
        yaml.push_str(&format!(
            "    {name}: {{ servers: [\"{}\"] }}\n",
            origin.addr
        ));
    }
    yaml
}

/// Counts how many requests each origin body answered, from a list of responses.
pub fn tally<'a>(bodies: impl IntoIterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for b in bodies {
        *counts.entry(b.to_string()).or_insert(0) += 1;
    }
    counts
}

/// An origin in its own process (the gateway binary serving a demo origin), so a test can
/// SIGKILL it and start it again on the same address.
pub struct OriginProcess {
    pub addr: SocketAddr,
    pub name: String,
    child: Child,
    _dir: TempDir,
}

impl OriginProcess {
    pub fn start(name: &str) -> OriginProcess {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        Self::start_on(addr, name)
    }

    /// Starts (or restarts) an origin answering `name` on `addr`.
    pub fn start_on(addr: SocketAddr, name: &str) -> OriginProcess {
        let dir = TempDir::new("origin");
        let proxy_port = free_port();
        let config = format!(
            "version: 1\nthreads: 1\npid_file: {d}/o.pid\nupgrade_sock: {d}/o.sock\n\
             gateway:\n  listen: [\"127.0.0.1:{proxy_port}\"]\n\
             \x20 groups:\n    self: {{ servers: [\"{addr}\"], health_check: {{ type: none }} }}\n\
             \x20 routing:\n    default: self\n\
             \x20 demo_origins:\n    - {{ listen: \"{addr}\", body: \"{name}\" }}\n",
            d = dir.path().display()
        );
        let path = dir.path().join("origin.yaml");
        std::fs::write(&path, &config).expect("write origin config");
        let mut child = Command::new(binary())
            .arg("-c")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start origin process");
        for listening in listeners_in(&config) {
            wait_listening(listening, &mut child, &|| {
                "(an origin process logs nothing)".into()
            });
        }
        OriginProcess {
            addr,
            name: name.to_string(),
            child,
            _dir: dir,
        }
    }

    /// SIGKILL: the process dies at once, without closing anything gracefully.
    pub fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for OriginProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A websocket echo origin for one session: it answers `n` text messages with "echo: <msg>",
/// then pushes "server push" on its own. Health-check connects are skipped.
pub fn websocket_echo_origin(n: usize) -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = test_listener();
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        let mut ws = loop {
            let (stream, _) = listener.accept().expect("accept");
            if let Ok(ws) = tungstenite::accept(stream) {
                break ws;
            }
        };
        for _ in 0..n {
            let msg = ws.read().expect("origin reads");
            let text = format!("echo: {}", msg.to_text().unwrap_or("?"));
            ws.send(tungstenite::Message::text(text))
                .expect("origin writes");
        }
        ws.send(tungstenite::Message::text("server push"))
            .expect("push");
        ws.read().ok();
    });
    (addr, handle)
}

/// Opens a websocket through the gateway with the given cookie.
pub fn websocket_client(
    gateway: SocketAddr,
    cookie: &str,
) -> (
    tungstenite::WebSocket<TcpStream>,
    tungstenite::handshake::client::Response,
) {
    websocket_client_with(gateway, cookie, "Upgrade", &[], None)
}

/// Opens a websocket through the gateway: `connection` is the handshake's `Connection` value,
/// `extra` more headers, `config` the client's limits (tungstenite's defaults when `None`).
pub fn websocket_client_with(
    gateway: SocketAddr,
    cookie: &str,
    connection: &str,
    extra: &[(&str, &str)],
    config: Option<tungstenite::protocol::WebSocketConfig>,
) -> (
    tungstenite::WebSocket<TcpStream>,
    tungstenite::handshake::client::Response,
) {
    let stream = TcpStream::connect(gateway).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut headers = extra.to_vec();
    headers.push(("Cookie", cookie));
    let request = websocket_request(
        &format!("ws://{gateway}/socket"),
        &gateway.to_string(),
        connection,
        &headers,
    );
    tungstenite::client::client_with_config(request, stream, config)
        .expect("handshake through gateway")
}

/// A websocket handshake request for `uri` with `Host: host`, `Connection: connection` and
/// `headers`.
pub fn websocket_request(
    uri: &str,
    host: &str,
    connection: &str,
    headers: &[(&str, &str)],
) -> tungstenite::http::Request<()> {
    let mut request = tungstenite::http::Request::builder();
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request
        .uri(uri)
        .header("Host", host)
        .header("Connection", connection)
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header(
            "Sec-WebSocket-Key",
            tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .expect("request")
}

/// Sends "hello i" and expects "echo: hello i", for i in `range`.
pub fn websocket_echo_rounds<S: Read + Write>(
    ws: &mut tungstenite::WebSocket<S>,
    range: std::ops::Range<usize>,
) {
    for i in range {
        ws.send(tungstenite::Message::text(format!("hello {i}")))
            .expect("send");
        let reply = ws.read().expect("reply");
        assert_eq!(reply.to_text().expect("text"), format!("echo: hello {i}"));
    }
}

/// Polls `done` every 5 ms until it holds; fails the test naming `what` after `limit`.
/// Returns how long it took.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// The first user id `user-N` inside (`inside = true`) or outside a percentage rule with
/// `seed` at `percent`.
pub fn rollout_user(seed: &str, percent: f64, inside: bool) -> String {
    let share = canary_gateway::routing::Percent::new(percent).expect("valid percent");
    (0..)
        .map(|i| format!("user-{i}"))
        .find(|u| {
            share.includes(canary_gateway::routing::percent_bucket(
                seed.as_bytes(),
                u.as_bytes(),
            )) == inside
        })
        .expect("found")
}

/// The value of one series (`name{labels}` exactly as exported) in Prometheus text; 0 when the
/// series is absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `GET path` with `Host: host` and `headers` on a fresh connection.
pub fn get_host(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    Client::connect(addr).send_raw(request.as_bytes())
}

/// Runs wrk (installed by `scripts/setup.sh test`) with `args` and returns the number of
/// requests it completed and its whole output.
///
/// wrk's own 2 s request timeout is raised to 60 s: a request slower than 2 s on a starved
/// machine is not a failure of the gateway, and counting it as a socket error made the
/// callers' "no socket errors" checks a latency bound in disguise.
pub fn run_wrk(args: &[&str]) -> (usize, String) {
    let out = Command::new("wrk")
        .args(["--timeout", "60s"])
        .args(args)
        .output()
        .expect("wrk is installed by scripts/setup.sh test");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read wrk output: {text}"));
    (requests, text)
}

/// A redis-server process with an append-only file, so a SIGKILL loses nothing.
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start(dir: &Path, port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/setup.sh test");
        wait_for_port(format!("127.0.0.1:{port}").parse().expect("addr"));
        Redis { port, child }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn sadd(&self, key: &str, members: &[&str]) {
        let client = redis::Client::open(self.url()).expect("client");
        let mut conn = client.get_connection().expect("connect to redis");
        let _: () = redis::cmd("SADD")
            .arg(key)
            .arg(members)
            .query(&mut conn)
            .expect("SADD");
    }

    pub fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The gateway section's `store:` line for the redis-server on `port`, keys under `prefix`
/// (a 2 s timeout, a 30 s resync interval).
pub fn store_line(port: u16, prefix: &str) -> String {
    format!(
        "  store: {{ redis: \"redis://127.0.0.1:{port}/0\", prefix: \"{prefix}\", resync_interval: 30s, timeout: 2s }}\n"
    )
}

/// Waits (a bounded poll) until each gateway behind `admins` says in `/status`, read with
/// `token`, that it follows the store.
pub fn wait_store_connected(admins: &[SocketAddr], token: &str) {
    for &addr in admins {
        wait_until("connected to the store", READY_TIMEOUT, || {
            let r = admin(addr, "GET", "/status", Some(token), None);
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .is_ok_and(|status| status["store"]["connected"] == true)
        });
    }
}
