//! Request-head limits enforced on the client connection itself, before Pingora parses
//! anything: a total deadline for each request head (slowloris), the request-line length (414),
//! the head's size and its number of lines (431). A request over a limit gets a short canned
//! answer and the connection is closed; memory per connection stays bounded.
//!
//! The guard wraps the accepted stream, watches the bytes of each request head as they arrive,
//! and stops watching at the blank line that ends it. A response head written back
//! (`HTTP/1.x NNN`) marks the start of the next request; `101 Switching Protocols` turns the
//! guard off for the rest of the connection (websocket tunnels).
//!
//! A connection's first request head is read ahead of Pingora, and the connection counts as in
//! flight until that head is handed over: a connection accepted before a graceful shutdown
//! began still gets its first request answered (Pingora drops any connection still waiting in
//! `read_request` when it shuts down, and the drain would otherwise exit under it).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_core::apps::{HttpServerApp, ReusedHttpStream, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::ALPN;
use pingora_core::protocols::{Peek, Stream};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

mod delegate;
use delegate::delegate_io;
mod h2;
mod h2c;

pub(crate) use h2::{h2_options, H2Stream};

use super::connections::{Connections, IdleWatch};
use super::ctx::{InFlight, InFlightGuard};
use super::errors::closing_response;
pub(crate) use crate::config::HeadLimits;
use crate::routing::is_token_byte;
use crate::state::GatewayState;

/// The canned answers to a head over a limit, written once by the gateway's one writer.
static RESPONSE_400: LazyLock<Vec<u8>> = LazyLock::new(|| closing_response(400));
static RESPONSE_408: LazyLock<Vec<u8>> = LazyLock::new(|| closing_response(408));
static RESPONSE_414: LazyLock<Vec<u8>> = LazyLock::new(|| closing_response(414));
static RESPONSE_431: LazyLock<Vec<u8>> = LazyLock::new(|| closing_response(431));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: the next byte starts a request head.
    Idle,
    /// Inside a request head.
    Head,
    /// After the head (the body, or waiting for the response).
    AfterHead,
    /// Upgraded (101), or requests pipelined behind one another: the guard no longer knows
    /// where heads start and leaves the rest of the connection to Pingora's own limits.
    Unwatched,
}

/// How many bytes of each header line are kept to recognise its name.
const NAME_PREFIX: usize = 20;

/// How long a new connection may stay silent before its first request: the keep-alive timeout
/// Pingora applies to a connection's first request too (it closed such connections after 60 s
/// before the first head was read here).
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection that was accepted before a graceful shutdown, and is still silent when
/// the shutdown begins, may take to start its first request. Once its first byte is in, the
/// head has the usual `header_timeout`.
pub(crate) const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Room made for each read of the first head.
const FIRST_HEAD_READ: usize = 2048;

/// A client connection with request-head limits.
pub(crate) struct GuardedStream {
    inner: Stream,
    limits: HeadLimits,
    phase: Phase,
    deadline: Option<Pin<Box<Sleep>>>,
    head_bytes: usize,
    line_bytes: usize,
    lines: usize,
    /// The start of the current line, lower-cased, to recognise framing headers.
    line_start: [u8; NAME_PREFIX],
    seen_content_length: bool,
    seen_transfer_encoding: bool,
    /// Spaces seen so far in the request line (exactly two: `method SP target SP version`).
    request_line_spaces: u8,
    /// A canned answer being written before the connection is closed.
    rejection: Option<(&'static [u8], usize)>,
    /// What is left of the first request head, read ahead of Pingora
    /// ([`GuardedStream::read_first_head`]) for its first reads.
    first_head: Bytes,
    /// Counts the connection in flight until Pingora has read its first head.
    first_request: Option<InFlightGuard>,
    /// Its listener's view of it, so that a full listener can close it while it waits for its
    /// next request (HTTP/1 connections past their first head only).
    idle: Option<IdleWatch>,
    /// Bytes were read after the current request's head (its body, or Pingora's probe reads
    /// while the response is under way): Pingora may hold some of them for the next request.
    read_past_head: bool,
    /// The server marks where each request ends ([`GuardedStream::request_done`], from
    /// [`GuardedApp::serve_h1`]), so a response head going out does not mean the next bytes
    /// start a request: the request's body may still be arriving after an early answer.
    ends_marked: bool,
}

impl GuardedStream {
    pub(crate) fn new(inner: Stream, limits: HeadLimits) -> Self {
        GuardedStream {
            inner,
            limits,
            phase: Phase::Idle,
            deadline: None,
            head_bytes: 0,
            line_bytes: 0,
            lines: 0,
            line_start: [0; NAME_PREFIX],
            seen_content_length: false,
            seen_transfer_encoding: false,
            request_line_spaces: 0,
            rejection: None,
            first_head: Bytes::new(),
            first_request: None,
            idle: None,
            read_past_head: false,
            ends_marked: false,
        }
    }

    /// The request is done (Pingora hands the connection back for the next one): the next
    /// bytes read start a request head, unless the connection is no longer watched.
    fn request_done(&mut self) {
        if self.phase != Phase::Unwatched {
            self.phase = Phase::Idle;
            self.deadline = None;
        }
    }

    /// Reads the connection's first request head (through the guard's checks) and keeps it for
    /// Pingora's first reads, so that Pingora finds the head complete at once even if a
    /// shutdown has begun meanwhile. `in_flight` counts the connection until then. False when
    /// the connection is done: closed, answered for a limit, or silent past
    /// [`FIRST_BYTE_TIMEOUT`] (or, once `shutdown` fires, past [`FIRST_REQUEST_GRACE`]).
    async fn read_first_head(&mut self, in_flight: &InFlight, shutdown: &ShutdownWatch) -> bool {
        self.first_request = Some(in_flight.enter());
        let mut shutdown = shutdown.clone();
        let mut shutting_down = *shutdown.borrow();
        let grace = || Instant::now() + FIRST_REQUEST_GRACE;
        let mut silent_until = if shutting_down {
            grace()
        } else {
            Instant::now() + FIRST_BYTE_TIMEOUT
        };
        let mut head = BytesMut::new();
        while matches!(self.phase, Phase::Idle | Phase::Head) {
            head.reserve(FIRST_HEAD_READ);
            // Silence is timed until the first byte; after it, the head's own deadline runs
            // inside `poll_read` (a 408 comes back here as an error).
            let silent = self.phase == Phase::Idle;
            tokio::select! {
                biased;
                read = self.read_buf(&mut head) => match read {
                    Ok(0) | Err(_) => return false,
                    Ok(_) => {}
                },
                _ = tokio::time::sleep_until(silent_until), if silent => return false,
                _ = shutdown.changed(), if silent && !shutting_down => {
                    shutting_down = true;
                    silent_until = silent_until.min(grace());
                }
            }
        }
        self.first_head = head.freeze();
        true
    }

    /// Hands out what is left of the read-ahead first head; true if anything was.
    fn take_first_head(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.first_head.is_empty() {
            return false;
        }
        let n = self.first_head.len().min(buf.remaining());
        buf.put_slice(&self.first_head.split_to(n));
        if self.first_head.is_empty() {
            // Pingora has the whole head and counts the request itself from here. (The empty
            // remainder still shares the buffer: let it go.)
            self.first_head = Bytes::new();
            self.first_request = None;
        }
        true
    }

    fn start_head(&mut self) {
        self.phase = Phase::Head;
        self.read_past_head = false;
        self.head_bytes = 0;
        self.line_bytes = 0;
        self.lines = 0;
        self.seen_content_length = false;
        self.seen_transfer_encoding = false;
        self.request_line_spaces = 0;
    }

    /// Checks request-line bytes as they arrive: the method is a token (RFC 9110 §9.1) and the
    /// line holds no other space and no control byte (RFC 9112 §3), so junk before the method
    /// or a space inside the target is refused instead of being re-encoded and forwarded.
    fn request_line_ok(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            match REQUEST_LINE_BYTES[usize::from(b)] {
                TOKEN => {}
                SPACE => {
                    self.request_line_spaces += 1;
                    if self.request_line_spaces > 2 {
                        return false;
                    }
                }
                VISIBLE if self.request_line_spaces > 0 => {}
                // A control byte anywhere, or a non-token byte in the method. (Line ends are
                // CRLF; the CR is classed as a token byte and a CR elsewhere is Pingora's to
                // refuse.)
                _ => return false,
            }
        }
        true
    }

    /// Starts the head's deadline unless it runs already. Called only when a head did not
    /// arrive whole in one read, so a request whose head comes in one read never touches the
    /// timer. The head's first byte came in the read that armed it, so the deadline still counts
    /// from that byte.
    fn arm_deadline(&mut self) -> &mut Pin<Box<Sleep>> {
        let timeout = self.limits.header_timeout;
        self.deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)))
    }

    /// Scans newly read head bytes a line at a time; returns a canned answer when a limit is
    /// passed or the framing is ambiguous (`Content-Length` together with `Transfer-Encoding`).
    fn scan(&mut self, bytes: &[u8]) -> Option<&'static [u8]> {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.phase == Phase::Idle {
                self.start_head();
            }
            let newline = memchr::memchr(b'\n', rest);
            let segment = &rest[..newline.unwrap_or(rest.len())];
            rest = &rest[newline.map_or(rest.len(), |at| at + 1)..];
            self.head_bytes += segment.len() + usize::from(newline.is_some());
            if self.head_bytes > self.limits.max_header_bytes {
                return Some(if self.lines == 0 {
                    &RESPONSE_414[..]
                } else {
                    &RESPONSE_431[..]
                });
            }
            // The usual case is a whole line in one read, with no CR before its end: its name
            // is read in place. Any other line keeps its first bytes, lower-cased and without
            // CRs, to recognise its name; the rest is only counted.
            let body = segment.strip_suffix(b"\r").unwrap_or(segment);
            let whole_line =
                self.line_bytes == 0 && newline.is_some() && memchr::memchr(b'\r', body).is_none();
            if whole_line {
                self.line_bytes = body.len();
            } else {
                let mut prefix_end = 0;
                while let (Some(slot), Some(&b)) = (
                    self.line_start.get_mut(self.line_bytes),
                    segment.get(prefix_end),
                ) {
                    prefix_end += 1;
                    if b != b'\r' {
                        *slot = b.to_ascii_lowercase();
                        self.line_bytes += 1;
                    }
                }
                let tail = &segment[prefix_end..];
                self.line_bytes += tail.len() - memchr::memchr_iter(b'\r', tail).count();
            }
            if self.lines == 0 {
                if self.line_bytes > self.limits.max_request_line {
                    return Some(&RESPONSE_414[..]);
                }
                if !self.request_line_ok(segment) {
                    return Some(&RESPONSE_400[..]);
                }
            }
            if newline.is_none() {
                break;
            }
            if self.lines == 0 && self.line_bytes > 0 && self.request_line_spaces != 2 {
                return Some(&RESPONSE_400[..]);
            }
            if self.line_bytes == 0 {
                if self.lines > 0 {
                    // The blank line: the head is complete. Bytes after it in the same read
                    // are a body or a pipelined request; the guard cannot tell which.
                    self.phase = if rest.is_empty() {
                        Phase::AfterHead
                    } else {
                        Phase::Unwatched
                    };
                    self.deadline = None;
                    return None;
                }
                // Blank lines before the request line are ignored (RFC 9112 §2.2).
                continue;
            }
            if self.lines > 0 {
                let name = if whole_line {
                    &segment[..segment.len().min(NAME_PREFIX)]
                } else {
                    &self.line_start[..self.line_bytes.min(NAME_PREFIX)]
                };
                self.seen_content_length |= starts_with_name(name, b"content-length:");
                self.seen_transfer_encoding |= starts_with_name(name, b"transfer-encoding:");
                if self.seen_content_length && self.seen_transfer_encoding {
                    return Some(&RESPONSE_400[..]);
                }
            }
            self.lines += 1;
            self.line_bytes = 0;
            if self.lines > self.limits.max_headers + 1 {
                return Some(&RESPONSE_431[..]);
            }
        }
        None
    }

    /// Writes the pending canned answer; `Ready` once written (or the write failed).
    fn poll_rejection(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        while let Some((bytes, written)) = self.rejection {
            if written >= bytes.len() {
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                Poll::Ready(Ok(n)) => self.rejection = Some((bytes, written + n)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if Pin::new(&mut self.inner).poll_flush(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(io::Error::new(
            io::ErrorKind::InvalidData,
            "request head over a limit; answered and closing",
        ))
    }

    /// Notes a response head going out: a 101 ends the watch (the connection is a tunnel
    /// now); any other final answer means the next bytes read start a new request, unless
    /// the server marks the ends of requests itself ([`GuardedStream::request_done`]): an
    /// answer may go out before the request's body is in, and that body is not a head.
    fn saw_write(&mut self, buf: &[u8]) {
        if self.phase == Phase::Unwatched || !buf.starts_with(b"HTTP/1.") {
            return;
        }
        match buf.get(9..12) {
            Some(b"101") => {
                self.phase = Phase::Unwatched;
                self.deadline = None;
            }
            // Other informational answers (100 Continue) come before the body.
            Some([b'1', _, _]) => {}
            _ if self.ends_marked => {}
            _ => self.phase = Phase::Idle,
        }
    }
}

/// Whether a header line starts with `name` (lower-case, with its colon), in any case.
fn starts_with_name(line: &[u8], name: &[u8]) -> bool {
    line.get(..name.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(name))
}

/// Classes of request-line bytes, looked up per byte (one table load instead of a chain of
/// comparisons): a token byte (RFC 9110 `tchar`), the space, another byte allowed in a target
/// (visible ASCII and obs-text), or a forbidden control byte.
const TOKEN: u8 = 0;
const SPACE: u8 = 1;
const VISIBLE: u8 = 2;
const CONTROL: u8 = 3;

static REQUEST_LINE_BYTES: [u8; 256] = {
    let mut table = [VISIBLE; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c == b' ' {
            SPACE
        } else if c == b'\r' {
            TOKEN
        } else if c < 0x20 || c == 0x7f {
            CONTROL
        } else if is_token_byte(c) {
            TOKEN
        } else {
            VISIBLE
        };
        b += 1;
    }
    table
};

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.take_first_head(buf) {
            return Poll::Ready(Ok(()));
        }
        if this.rejection.is_some() {
            return this.poll_rejection(cx).map(Err);
        }
        if this.phase == Phase::Head {
            if let Some(deadline) = &mut this.deadline {
                if deadline.as_mut().poll(cx).is_ready() {
                    this.rejection = Some((&RESPONSE_408[..], 0));
                    return this.poll_rejection(cx).map(Err);
                }
            }
        }
        let before = buf.filled().len();
        // Pingora reads a request head into a buffer with room for one; while a response is
        // under way it probes the connection with one-byte reads, which must not count as
        // waiting.
        let awaiting_head = this.phase == Phase::Idle && buf.remaining() > 1;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(idle) = this.idle.as_ref().filter(|_| awaiting_head) {
            match &result {
                // Told to close by its full listener: the end of the connection.
                Poll::Pending if idle.waiting(cx.waker()) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) if buf.filled().len() > before && !idle.busy() => {
                    buf.set_filled(before);
                    return Poll::Ready(Ok(()));
                }
                _ => {}
            }
        }
        if let Poll::Ready(Ok(())) = result {
            if this.phase == Phase::AfterHead && buf.filled().len() > before {
                this.read_past_head = true;
            }
            if matches!(this.phase, Phase::Idle | Phase::Head) {
                if let Some(answer) = this.scan(&buf.filled()[before..]) {
                    buf.set_filled(before);
                    this.rejection = Some((answer, 0));
                    return this.poll_rejection(cx).map(Err);
                }
                // A head still incomplete after this read: from now on it has a deadline.
                if this.phase == Phase::Head && this.deadline.is_none() {
                    // Polled once so the timer wakes this task; a zero timeout answers at once.
                    if this.arm_deadline().as_mut().poll(cx).is_ready() {
                        buf.set_filled(before);
                        this.rejection = Some((&RESPONSE_408[..], 0));
                        return this.poll_rejection(cx).map(Err);
                    }
                }
            }
        }
        result
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.saw_write(buf);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.saw_write(first);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

delegate_io!(GuardedStream, phase);

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.first_head.is_empty() {
            return self.inner.try_peek(buf).await;
        }
        let n = self.first_head.len().min(buf.len());
        buf[..n].copy_from_slice(&self.first_head[..n]);
        Ok(n == buf.len())
    }
}

/// Bounds the wait for the connection's next request by `keepalive_timeout`, when the request
/// leaves the connection open. (Pingora bounds only the wait for a connection's first request;
/// after it, an HTTP/1.1 request turns the wait into an unbounded one. HTTP/2 ignores this: its
/// idle connections are the head guard's.)
pub(crate) fn keep_alive_for(
    session: &mut pingora_core::protocols::http::ServerSession,
    limits: &HeadLimits,
) {
    if session.get_keepalive().is_some() {
        session.set_keepalive(Some(limits.keepalive_timeout.as_secs()));
    }
}

/// Wraps an application so every accepted connection gets the request-head guard, and its
/// first request head is read ahead while the connection counts in `in_flight`.
pub(crate) struct GuardedApp<A> {
    inner: Arc<A>,
    limits: HeadLimits,
    in_flight: InFlight,
    /// The listener's budget, whose full listener may close this app's idle connections.
    connections: Option<Arc<Connections>>,
    /// A plaintext listener that also takes HTTP/2 with prior knowledge (`h2c: true`).
    h2c: bool,
    /// Where the keep-alive timeout in force is read, for an app whose requests set it from
    /// `limits.keepalive_timeout` ([`keep_alive_for`]): its HTTP/1 connections wait for their
    /// next request here, holding none of Pingora's per-request state ([`serve_h1`]).
    /// Without it, Pingora's own keep-alive loop serves them.
    ///
    /// [`serve_h1`]: GuardedApp::serve_h1
    keepalive: Option<Arc<ArcSwap<GatewayState>>>,
}

impl<A> GuardedApp<A> {
    pub(crate) fn new(inner: A, limits: HeadLimits, in_flight: InFlight) -> Self {
        GuardedApp {
            inner: Arc::new(inner),
            limits,
            in_flight,
            connections: None,
            h2c: false,
            keepalive: None,
        }
    }

    /// The same application and limits for one listener, whose full budget may close this
    /// app's idle HTTP/1 connections.
    pub(crate) fn for_listener(&self, connections: Arc<Connections>) -> Self {
        GuardedApp {
            inner: self.inner.clone(),
            limits: self.limits,
            in_flight: self.in_flight.clone(),
            connections: Some(connections),
            h2c: false,
            keepalive: self.keepalive.clone(),
        }
    }

    /// The same, waiting itself for each HTTP/1 connection's next request, for as long as
    /// `state`'s `limits.keepalive_timeout` says (the app's requests set that timeout:
    /// [`keep_alive_for`]).
    pub(crate) fn waiting_between_requests(mut self, state: Arc<ArcSwap<GatewayState>>) -> Self {
        self.keepalive = Some(state);
        self
    }

    /// The same, also taking cleartext HTTP/2 with prior knowledge (an h2c listener).
    pub(crate) fn accepting_h2c(mut self) -> Self {
        self.h2c = true;
        self
    }

    /// Serves an HTTP/2 connection with its deadlines. Pingora gets the connection's own
    /// shutdown signal, which the guard raises to send the client away and which follows the
    /// server's.
    async fn serve_h2(self: &Arc<Self>, session: Stream, shutdown: &ShutdownWatch) -> Option<Stream>
    where
        A: HttpServerApp + Send + Sync + 'static,
    {
        let idle = self.connections.as_ref().map(Connections::watch);
        let (stream, own_shutdown, go_away) = H2Stream::new(session, self.limits, shutdown, idle);
        let serve = self.inner.process_new(Box::new(stream), &own_shutdown);
        tokio::pin!(serve);
        let mut server_shutdown = shutdown.clone();
        let mut following = true;
        loop {
            tokio::select! {
                served = &mut serve => return served,
                changed = server_shutdown.changed(), if following => {
                    following = false;
                    if changed.is_ok() {
                        go_away.send_replace(true);
                    }
                }
            }
        }
    }

    /// What counts the connections this guard is reading first heads for.
    pub(crate) fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for GuardedApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Watched from the start: a connection that has sent nothing yet may be closed to make
        // room on a full listener, as an idle keep-alive one may (nginx's "reusable"
        // connections); one that has begun a head may not.
        let mut idle = None;
        if self.h2c {
            idle = self.connections.as_ref().map(Connections::watch);
            let sniffed = h2c::sniff(session, shutdown, self.limits.header_timeout, idle.as_ref());
            session = match sniffed.await? {
                h2c::Protocol::H2(stream) => {
                    // HTTP/2 watches its idle time itself.
                    drop(idle);
                    return self.serve_h2(stream, shutdown).await;
                }
                h2c::Protocol::H1(stream) => stream,
            };
        }
        // HTTP/2 (chosen by ALPN on a TLS listener, or by its preface on an h2c one) has no
        // HTTP/1 heads to watch: its frames are bounded by the HTTP/2 settings (header list
        // size, concurrent streams) and its idle and header-block deadlines by `H2Stream`.
        let alpn = session.selected_alpn_proto();
        if matches!(alpn, Some(ALPN::H2)) {
            return self.serve_h2(session, shutdown).await;
        }
        let mut guarded = GuardedStream::new(session, self.limits);
        guarded.idle = idle.or_else(|| self.connections.as_ref().map(Connections::watch));
        if !guarded.read_first_head(&self.in_flight, shutdown).await {
            return None;
        }
        match &self.keepalive {
            Some(state) if alpn.is_none() || matches!(alpn, Some(ALPN::H1)) => {
                guarded.ends_marked = true;
                self.serve_h1(Box::new(guarded), state, shutdown).await
            }
            _ => self.inner.process_new(Box::new(guarded), shutdown).await,
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> GuardedApp<A> {
    /// Serves an HTTP/1 connection request after request, as Pingora's own keep-alive loop
    /// does (`ServerApp for HttpServerApp`), except for the wait between requests: Pingora
    /// waits inside the next request's future (the whole proxy state machine, ~13 KB, and the
    /// 4 KiB head buffer it allocates first), which a keep-alive connection would hold for as
    /// long as it is idle. Here the wait holds the connection and its persistent settings
    /// only, and the first bytes read go to Pingora as the start of the next request.
    async fn serve_h1(
        self: &Arc<Self>,
        stream: Stream,
        state: &Arc<ArcSwap<GatewayState>>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        // As Pingora's loop starts a connection: keep-alive unless the server is shutting
        // down (each request then sets the configured timeout), and its request limit.
        session.set_keepalive((!*shutdown.borrow()).then_some(60));
        session.set_keepalive_reuses_remaining(
            self.inner
                .server_options()
                .and_then(|options| options.keepalive_request_limit),
        );
        let mut served = self.inner.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = served.map(ReusedHttpStream::consume) {
            // Pingora hands back the stream it was given: the guarded one.
            let Ok(mut guarded) = stream.into_any().downcast::<GuardedStream>() else {
                log::error!("an HTTP/1 connection came back from a request unguarded; closing it");
                return None;
            };
            guarded.request_done();
            // The guard knows whether Pingora can have read into the next request (bytes read
            // after the head, or a head followed by more in one read): then Pingora's own read
            // must come first, and it waits as before.
            let waits_here = guarded.phase == Phase::Idle && !guarded.read_past_head;
            let mut stream: Stream = guarded;
            let start = if waits_here {
                let timeout = state.load().limits.head.keepalive_timeout;
                Some(next_request_start(&mut stream, timeout, shutdown).await?)
            } else {
                None
            };
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            if let Some(start) = start {
                session.set_pipelined_prefix(start);
            }
            served = self.inner.process_new_http(session, shutdown).await;
        }
        None
    }
}

/// Room for each read of a request head, as much as Pingora's first read of one
/// (`INIT_HEADER_BUF_SIZE`).
const HEAD_READ: usize = 4096;

/// Waits for the first bytes of a keep-alive connection's next request, through the guard's
/// checks, for up to `keepalive` (whole seconds, as Pingora applies it; zero: no limit), and
/// returns them in a buffer with room for the rest of the head. While it waits nothing is
/// allocated: each poll reads into a buffer on the stack. None when the connection is done:
/// closed, answered for a limit, silent past the timeout, or the server is shutting down
/// (Pingora drops its waiting keep-alive connections then).
async fn next_request_start(
    stream: &mut Stream,
    keepalive: Duration,
    shutdown: &ShutdownWatch,
) -> Option<BytesMut> {
    if *shutdown.borrow() {
        return None;
    }
    let read = std::future::poll_fn(|cx| {
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); HEAD_READ];
        let mut buf = ReadBuf::uninit(&mut scratch);
        match Pin::new(&mut **stream).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                let mut start = BytesMut::with_capacity(HEAD_READ);
                start.extend_from_slice(buf.filled());
                Poll::Ready(Some(start))
            }
            Poll::Ready(_) => Poll::Ready(None),
        }
    });
    let mut shutdown = shutdown.clone();
    let ended = async move {
        while shutdown.changed().await.is_ok() {
            if *shutdown.borrow() {
                return;
            }
        }
        // The server's shutdown signal is gone: nothing will end the wait but the client.
        std::future::pending::<()>().await
    };
    let limit = Duration::from_secs(keepalive.as_secs());
    tokio::select! {
        biased;
        start = read => start,
        _ = tokio::time::sleep(limit), if !limit.is_zero() => None,
        _ = ended => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(limits: HeadLimits, input: &[u8]) -> (Option<&'static [u8]>, Phase) {
        let (client, _server) = tokio::io::duplex(64);
        let mut g = GuardedStream::new(Box::new(client), limits);
        let answer = g.scan(input);
        (answer, g.phase)
    }

    fn limits() -> HeadLimits {
        HeadLimits {
            header_timeout: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
            max_request_line: 32,
            max_header_bytes: 128,
            max_headers: 3,
        }
    }

    #[tokio::test]
    async fn head_scanning() {
        let ok = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan_all(limits(), ok), (None, Phase::AfterHead));
        let leading_blank = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(scan_all(limits(), leading_blank), (None, Phase::AfterHead));
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(40));
        assert_eq!(
            scan_all(limits(), long_line.as_bytes()).0,
            Some(&RESPONSE_414[..])
        );
        let many = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n";
        assert_eq!(scan_all(limits(), many).0, Some(&RESPONSE_431[..]));
        let three = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        assert_eq!(scan_all(limits(), three).0, None);
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(200));
        assert_eq!(
            scan_all(limits(), big.as_bytes()).0,
            Some(&RESPONSE_431[..])
        );
        let partial = b"GET / HTTP/1.1\r\nHost";
        assert_eq!(scan_all(limits(), partial), (None, Phase::Head));
        let both = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-encoding: chunked\r\n\r\n";
        assert_eq!(scan_all(limits(), both).0, Some(&RESPONSE_400[..]));
        let pipelined = b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
        assert_eq!(scan_all(limits(), pipelined), (None, Phase::Unwatched));
    }

    /// A request line is `method SP target SP version` with a token method; anything else is
    /// answered 400 before Pingora parses (and would re-encode) it.
    #[tokio::test]
    async fn malformed_request_lines_are_refused() {
        for good in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"M-SEARCH * HTTP/1.1\r\n\r\n",
            b"OPTIONS /a?b=c%20d HTTP/1.0\r\n\r\n",
        ] {
            assert_eq!(scan_all(limits(), good).0, None, "{good:?}");
        }
        for bad in [
            &b"Extra lineGET / HTTP/1.1\r\n\r\n"[..],
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GE(T / HTTP/1.1\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
            b"GET /\tx HTTP/1.1\r\n\r\n",
            b"GET /\r\n\r\n",
        ] {
            assert_eq!(
                scan_all(limits(), bad).0,
                Some(&RESPONSE_400[..]),
                "{bad:?}"
            );
        }
    }

    /// The answer and phase do not depend on how the head is cut into reads.
    #[tokio::test]
    async fn scanning_is_independent_of_read_boundaries() {
        let long_name = format!(
            "GET / HTTP/1.1\r\nx-a-very-long-header-name-{}: 1\r\n\r\n",
            "n".repeat(30)
        );
        let inputs: Vec<&[u8]> = vec![
            b"GET / HTTP/1.1\r\nHost: a\r\nCookie: theme=dark; canary_user=user-1\r\n\r\n",
            b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nCont\rent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n",
            b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
            long_name.as_bytes(),
        ];
        for input in inputs {
            let (whole_answer, whole_phase) = scan_all(limits(), input);
            for cut in 1..input.len() {
                let (client, _server) = tokio::io::duplex(64);
                let mut g = GuardedStream::new(Box::new(client), limits());
                let answer = g.scan(&input[..cut]).or_else(|| g.scan(&input[cut..]));
                // Bytes after the blank line in the same read leave the head unwatched; a cut
                // at the very end of the head cannot produce that, so compare answers only then.
                assert_eq!(answer, whole_answer, "{input:?} cut at {cut}");
                if whole_answer.is_none() {
                    assert_eq!(g.phase, whole_phase, "{input:?} cut at {cut}");
                }
            }
        }
        // Both framing headers seen although each name was split across reads.
        let (client, _server) = tokio::io::duplex(64);
        let mut g = GuardedStream::new(Box::new(client), limits());
        let parts: [&[u8]; 4] = [
            b"POST / HTTP/1.1\r\nconte",
            b"nt-length: 5\r\ntransfer-enc",
            b"oding: chunked\r",
            b"\n\r\n",
        ];
        let answer = parts.iter().find_map(|part| g.scan(part));
        assert_eq!(answer, Some(&RESPONSE_400[..]));
    }

    #[tokio::test]
    async fn responses_move_the_phase() {
        let (client, _server) = tokio::io::duplex(64);
        let mut g = GuardedStream::new(Box::new(client), limits());
        g.scan(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(g.phase, Phase::AfterHead);
        g.saw_write(b"HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(
            g.phase,
            Phase::AfterHead,
            "100 Continue comes before the body"
        );
        g.saw_write(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(g.phase, Phase::Idle);
        g.scan(b"GET / HTTP/1.1\r\n\r\n");
        g.saw_write(b"HTTP/1.1 101 Switching Protocols\r\n");
        assert_eq!(g.phase, Phase::Unwatched);
        g.saw_write(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(g.phase, Phase::Unwatched, "a tunnel stays a tunnel");
    }

    /// Where the server marks the ends of requests, an answer does not end the request: body
    /// bytes read after it are not scanned as a head; the end mark starts the next head.
    #[tokio::test]
    async fn marked_ends_keep_the_body_after_an_early_answer() {
        let (client, _server) = tokio::io::duplex(64);
        let mut g = GuardedStream::new(Box::new(client), limits());
        g.ends_marked = true;
        g.scan(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n");
        g.saw_write(b"HTTP/1.1 200 OK\r\n");
        assert_eq!(g.phase, Phase::AfterHead, "the body may still come");
        g.request_done();
        assert_eq!(g.phase, Phase::Idle);
        g.scan(b"GET / HTTP/1.1\r\n\r\n");
        g.saw_write(b"HTTP/1.1 101 Switching Protocols\r\n");
        assert_eq!(g.phase, Phase::Unwatched);
        g.request_done();
        assert_eq!(g.phase, Phase::Unwatched, "a tunnel stays a tunnel");
    }

    /// A guarded stream, the client's end of it, a connection count and a shutdown that has
    /// not begun (the sender is returned so it stays open).
    fn read_ahead_fixture() -> (
        GuardedStream,
        tokio::io::DuplexStream,
        InFlight,
        (tokio::sync::watch::Sender<bool>, ShutdownWatch),
    ) {
        let (client, peer) = tokio::io::duplex(4096);
        let g = GuardedStream::new(Box::new(client), limits());
        (
            g,
            peer,
            InFlight::default(),
            tokio::sync::watch::channel(false),
        )
    }

    /// The first head is read ahead across several writes and handed to the reader whole and
    /// in order, with the body bytes behind it; the connection counts in flight until the
    /// reader has all of it.
    #[tokio::test]
    async fn the_first_head_is_read_ahead_and_handed_over() {
        use tokio::io::AsyncWriteExt;
        let (mut g, mut peer, in_flight, (_tx, shutdown)) = read_ahead_fixture();
        let writer = tokio::spawn(async move {
            for part in [
                &b"POST / HT"[..],
                b"TP/1.1\r\nContent-Le",
                b"ngth: 2\r\n\r\nok",
            ] {
                peer.write_all(part).await.expect("write");
                tokio::task::yield_now().await;
            }
            peer
        });
        assert!(g.read_first_head(&in_flight, &shutdown).await);
        let _peer = writer.await.expect("writer");
        assert_eq!(
            in_flight.count(),
            1,
            "counted until the reader has the head"
        );
        let sent = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok";
        let mut got = vec![0u8; sent.len()];
        // Small reads, as a reader with little room would make.
        for chunk in got.chunks_mut(7) {
            g.read_exact(chunk).await.expect("read");
        }
        assert_eq!(got, sent);
        assert_eq!(in_flight.count(), 0, "Pingora counts the request from here");
    }

    /// Over a limit while reading ahead: the canned answer goes out, the connection is done
    /// and no longer counted.
    #[tokio::test]
    async fn a_first_head_over_a_limit_is_answered_while_reading_ahead() {
        use tokio::io::AsyncWriteExt;
        let (mut g, mut peer, in_flight, (_tx, shutdown)) = read_ahead_fixture();
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(40));
        peer.write_all(long.as_bytes()).await.expect("write");
        assert!(!g.read_first_head(&in_flight, &shutdown).await);
        drop(g);
        assert_eq!(in_flight.count(), 0);
        let mut answer = Vec::new();
        peer.read_to_end(&mut answer).await.expect("read");
        assert_eq!(answer, &RESPONSE_414[..]);
    }

    /// A connection that closes before sending a whole head is done, and not counted.
    #[tokio::test]
    async fn a_connection_closed_before_its_first_head_is_done() {
        use tokio::io::AsyncWriteExt;
        let (mut g, mut peer, in_flight, (_tx, shutdown)) = read_ahead_fixture();
        peer.write_all(b"GET / HTTP/1.1\r\n").await.expect("write");
        drop(peer);
        assert!(!g.read_first_head(&in_flight, &shutdown).await);
        drop(g);
        assert_eq!(in_flight.count(), 0);
    }
}
