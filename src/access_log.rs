//! The JSON access log: one object per line per request, written off the request path by a
//! background thread (buffered, flushed at least once a second), reopened on SIGUSR1 so
//! logrotate works. A full queue drops lines (counted in metrics) instead of slowing requests.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::error;
use serde::Serialize;

use crate::metrics::METRICS;

/// Lines waiting for the writer before new ones are dropped.
const QUEUE_LINES: usize = 65_536;
/// The writer flushes at least this often while lines arrive.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// The writer wakes this often and drains the queue. Sleeping instead of blocking on the
/// queue means a request never pays for waking the writer thread.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// One request, as logged. Strings come from clients; serde_json escapes them.
#[derive(Serialize)]
pub struct AccessRecord<'a> {
    pub ts: String,
    pub request_id: &'a str,
    pub client_ip: &'a str,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub group: &'a str,
    pub rule: &'a str,
    pub reason: &'a str,
    pub upstream: Option<String>,
    pub bytes_sent: usize,
    pub duration_ms: f64,
    pub upstream_duration_ms: Option<f64>,
}

enum Message {
    Line(Vec<u8>),
    /// Flush now and acknowledge.
    Flush(SyncSender<()>),
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

/// Handle to the access log; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    sender: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
}

impl AccessLog {
    /// Opens the target and starts the writer thread.
    pub fn start(target: Target) -> std::io::Result<AccessLog> {
        let sink = open(&target)?;
        let (sender, receiver) = sync_channel(QUEUE_LINES);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = reopen.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(target, sink, receiver, flag))?;
        Ok(AccessLog { sender, reopen })
    }

    /// Queues one record; never blocks.
    pub fn log(&self, record: &AccessRecord<'_>) {
        let mut line = Vec::with_capacity(384);
        if serde_json::to_writer(&mut line, record).is_err() {
            return;
        }
        line.push(b'\n');
        match self.sender.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => METRICS.access_log_dropped.inc(),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Asks the writer to reopen the file (after logrotate moved it).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    /// Writes out everything queued so far, waiting at most `limit`.
    pub fn flush(&self, limit: Duration) {
        let (ack, done) = sync_channel(1);
        if self.sender.send(Message::Flush(ack)).is_ok() {
            done.recv_timeout(limit).ok();
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
