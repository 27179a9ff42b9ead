//! The JSON access log: one object per line per request, written off the request path by a
//! background thread (buffered, flushed at least once a second), reopened on SIGUSR1 so
//! logrotate works. A full queue drops lines (counted in metrics) instead of slowing requests.
//! The proxy hands records over through its [`RequestLog`] interface.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::error;

use crate::config::AccessLogTarget as Target;
use crate::proxy::{AccessRecord, RequestLog};
use crate::state::metrics::METRICS;
use crate::text;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE_LINES: usize = 65_536;
/// The writer flushes at least this often while lines arrive.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// The writer wakes this often and drains the queue. Sleeping instead of blocking on the
/// queue means a request never pays for waking the writer thread.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// The log format.
trait WriteJson {
    fn write_json(&self, out: &mut Vec<u8>);
}

impl WriteJson for AccessRecord<'_> {
    /// Appends the record as one JSON object (no newline). Written by hand: through serde_json
    /// and `Display` a line cost about 7,600 instructions, most of the access log's price.
    /// Strings that come from clients (host, path) are escaped; so are the others, which cost
    /// little and keep the line valid whatever the configuration names things.
    fn write_json(&self, out: &mut Vec<u8>) {
        fn key(out: &mut Vec<u8>, name: &str) {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        }
        out.extend_from_slice(b"{\"ts\":\"");
        text::push_rfc3339_millis(out, self.ts);
        out.push(b'"');
        let strings = [
            ("request_id", self.request_id),
            ("client_ip", self.client_ip),
            ("method", self.method),
            ("host", self.host),
            ("path", self.path),
        ];
        for (name, value) in strings {
            key(out, name);
            text::push_json_str(out, value);
        }
        key(out, "status");
        text::push_u64(out, u64::from(self.status));
        for (name, value) in [
            ("route", self.route),
            ("group", self.group),
            ("rule", self.rule),
            ("reason", self.reason),
            ("identity", self.identity),
        ] {
            key(out, name);
            text::push_json_str(out, value);
        }
        for (name, value) in [("tls_version", self.tls_version), ("alpn", self.alpn)] {
            key(out, name);
            match value {
                Some(v) => text::push_json_str(out, v),
                None => out.extend_from_slice(b"null"),
            }
        }
        if let Some(user) = self.user_id {
            key(out, "user_id");
            text::push_json_str(out, user);
        }
        key(out, "upstream");
        match self.upstream {
            Some(addr) => {
                out.push(b'"');
                text::push_socket_addr(out, addr);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        key(out, "bytes_sent");
        text::push_u64(out, self.bytes_sent as u64);
        key(out, "duration_ms");
        text::push_millis(out, self.duration);
        key(out, "upstream_duration_ms");
        match self.upstream_duration {
            Some(d) => text::push_millis(out, d),
            None => out.extend_from_slice(b"null"),
        }
        // Only on gRPC calls, so web requests' lines stay as they were.
        if let Some(code) = self.grpc_status {
            key(out, "grpc_status");
            text::push_u64(out, u64::from(code));
        }
        out.push(b'}');
    }
}

enum Message {
    Line(Vec<u8>),
    /// Flush now and acknowledge.
    Flush(SyncSender<()>),
}

/// Handle to the access log; cheap to clone.
#[derive(Clone)]
pub(crate) struct AccessLog {
    sender: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Opens the target and starts the writer thread.
    pub(crate) fn start(target: Target) -> std::io::Result<AccessLog> {
        let sink = open(&target)?;
        let (sender, receiver) = sync_channel(QUEUE_LINES);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(target, sink, receiver, flag))?;
        Ok(AccessLog { sender, reopen })
    }

    /// Asks the writer to reopen the file (after logrotate moved it).
    pub(crate) fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Writes out everything queued so far, waiting at most `limit`.
    pub(crate) fn flush(&self, limit: Duration) {
        let (ack, done) = sync_channel(1);
        if self.sender.send(Message::Flush(ack)).is_ok() {
            done.recv_timeout(limit).ok();
        }
    }
}

impl RequestLog for AccessLog {
    /// Queues one record; never blocks.
    fn log(&self, record: &AccessRecord<'_>) {
        let mut line = Vec::with_capacity(384);
        record.write_json(&mut line);
        line.push(b'\n');
        match self.sender.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => METRICS.access_log_dropped.inc(),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn open(target: &Target) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        Target::Stdout => Box::new(std::io::stdout()),
        Target::File(path) => Box::new(append(path)?),
    })
}

fn append(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn writer(
    target: Target,
    sink: Box<dyn Write + Send>,
    receiver: Receiver<Message>,
    reopen: Arc<AtomicBool>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    let mut last_flush = Instant::now();
    loop {
        std::thread::sleep(DRAIN_EVERY);
        if reopen.swap(false, Ordering::AcqRel) {
            out.flush().ok();
            match open(&target) {
                Ok(sink) => out = BufWriter::with_capacity(64 * 1024, sink),
                Err(e) => error!("access log: cannot reopen {target:?}: {e}"),
            }
        }
        loop {
            match receiver.try_recv() {
                // Whole lines only: a line is written with one call into the buffer, and the
                // buffer is only ever flushed between lines.
                Ok(Message::Line(line)) => {
                    if let Err(e) = out.write_all(&line) {
                        error!("access log: write failed: {e}");
                    }
                }
                Ok(Message::Flush(ack)) => {
                    out.flush().ok();
                    ack.send(()).ok();
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    out.flush().ok();
                    return;
                }
            }
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            out.flush().ok();
            last_flush = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::SystemTime;

    fn record(
        upstream: Option<SocketAddr>,
        upstream_duration: Option<Duration>,
        grpc_status: Option<u16>,
    ) -> serde_json::Value {
        let record = AccessRecord {
            ts: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            request_id: "abc-1",
            client_ip: "192.0.2.7",
            method: "GET",
            host: "evil\"host\\\n",
            path: "/a?b=\u{1}",
            status: 503,
            route: "default",
            group: "canary",
            rule: "rollout",
            reason: "percent",
            identity: "assigned_new",
            user_id: Some("visitor-1"),
            tls_version: Some("TLSv1.3"),
            alpn: Some("h2"),
            upstream,
            bytes_sent: 12,
            duration: Duration::from_micros(1_500),
            upstream_duration,
            grpc_status,
        };
        let mut line = Vec::new();
        record.write_json(&mut line);
        serde_json::from_slice(&line).expect("one valid JSON object")
    }

    #[test]
    fn lines_are_json_with_every_field() {
        let upstream: SocketAddr = "10.0.0.2:8080".parse().expect("addr");
        let line = record(Some(upstream), Some(Duration::from_micros(250)), None);
        assert_eq!(line["ts"], "2026-11-18T11:06:40.123Z");
        assert_eq!(line["host"], "evil\"host\\\n");
        assert_eq!(line["path"], "/a?b=\u{1}");
        assert_eq!(line["status"], 503);
        assert_eq!(line["upstream"], "10.0.0.2:8080");
        assert_eq!(line["bytes_sent"], 12);
        assert_eq!(line["duration_ms"], 1.5);
        assert_eq!(line["upstream_duration_ms"], 0.25);
        assert_eq!(line["route"], "default");
        assert_eq!(line["identity"], "assigned_new");
        assert_eq!(line["user_id"], "visitor-1");
        assert_eq!(line["tls_version"], "TLSv1.3");
        assert_eq!(line["alpn"], "h2");
        assert_eq!(line.as_object().map(|o| o.len()), Some(19));
        assert!(line.get("grpc_status").is_none(), "web requests have none");
        let unanswered = record(None, None, None);
        assert!(unanswered["upstream"].is_null());
        assert!(unanswered["upstream_duration_ms"].is_null());
    }

    /// A gRPC call's line carries its `grpc_status` as a number.
    #[test]
    fn grpc_lines_carry_the_grpc_status() {
        let line = record(None, None, Some(14));
        assert_eq!(line["grpc_status"], 14);
        assert_eq!(line.as_object().map(|o| o.len()), Some(20));
    }
}
