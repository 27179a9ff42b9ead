//! Deadlines on an HTTP/2 client connection: one with no stream open is sent away (GOAWAY,
//! then closed) after `keepalive_timeout`, and a header block (HEADERS and its CONTINUATION
//! frames) must end within `header_timeout`; and the HTTP/2 settings of the client side.
//!
//! The `h2` crate has neither deadline, and Pingora's `h2_idle_timeout` drops the connection
//! without a GOAWAY (and cannot see an unfinished header block, which is not a stream yet). So
//! the guard follows the frame heads going by in each direction (nine bytes a frame; payloads
//! are skipped, never copied) to know which streams are open and whether a header block is
//! unfinished. When a deadline passes it raises the connection's own shutdown signal, which
//! Pingora's accept loop answers with h2's graceful shutdown: a GOAWAY, after which h2 closes
//! the connection once its streams are done and the client has answered a PING. A client that
//! never answers would hold it, so once the GOAWAY is flushed the guard ends the connection
//! itself: at once after an unfinished header block, after [`GOAWAY_GRACE`] otherwise.
//!
//! Writes have a deadline too: a connection whose socket takes no byte for `send_timeout` (a
//! client that stopped reading) is ended, with what h2 and the streams held for it. (A stream
//! the client gives no window is Pingora's: its write timeout, set from the same limit, resets
//! the stream.) A connection h2 closes for the client's error lingers a moment, reading and
//! dropping what the client still sends, so that the GOAWAY is not overtaken by a reset.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::{Peek, Stream};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::delegate::delegate_io;
use super::HeadLimits;
use crate::proxy::connections::IdleWatch;

/// The HTTP/2 settings of the client side, bounded like HTTP/1: a request's header list is
/// held to `max_header_bytes` (HEADERS and CONTINUATION frames together, so a CONTINUATION
/// flood ends the connection), at most 100 streams run at once, each holding at most
/// [`H2_MAX_SEND_BUFFER`] of response bytes the client is not taking, and a client whose
/// streams the gateway has to reset again and again (rapid reset, MadeYouReset) is sent away.
/// The reset budgets are the `h2` crate's defaults, set here so they stay visible.
pub(crate) fn h2_options(limits: &HeadLimits) -> H2Options {
    let mut options = H2Options::new();
    options
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_send_buffer_size(H2_MAX_SEND_BUFFER)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(Some(H2_MAX_LOCAL_RESETS))
        .data_frame_budget(H2_DATA_FRAME_BUDGET);
    options
}

/// The budget of small DATA frames a client may have waiting for the gateway to read them
/// (h2 charges each frame under 256 bytes the difference, and sends a client past the budget
/// away with ENHANCE_YOUR_CALM). h2's default, half the connection window (32 KiB: about 130
/// one-message frames of a few bytes), sent gRPC clients streaming small messages away while
/// the origin was a moment behind; this allows about 4,000 such frames waiting per connection
/// (a few hundred KiB of h2's bookkeeping at most), still bounded.
pub(crate) const H2_DATA_FRAME_BUDGET: usize = 1 << 20;

/// Streams a client may have open at once on one HTTP/2 connection.
pub(crate) const H2_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Response bytes h2 holds for one stream beyond what the client's window lets it send
/// (the crate's default is 400 KiB): one read from the origin (Pingora reads 64 KiB at a time).
/// With at most [`H2_MAX_CONCURRENT_STREAMS`] streams, a connection whose client stops
/// reading holds at most 6.25 MiB here, for at most `limits.send_timeout`.
pub(crate) const H2_MAX_SEND_BUFFER: usize = 64 * 1024;
/// Streams reset by the client before the gateway took them up, beyond which the connection
/// is closed (rapid reset, CVE-2023-44487).
pub(crate) const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the gateway had to reset for the client's errors, beyond which the connection is
/// closed (MadeYouReset, CVE-2025-8671).
pub(crate) const H2_MAX_LOCAL_RESETS: usize = 1024;

/// How long an idle connection sent away may take to close by itself (the client answering
/// h2's PING, a request it sent before it saw the GOAWAY finishing) before the guard closes it.
pub(crate) const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// How long a connection closed for the client's error keeps reading (and dropping) what the
/// client still sends. Closing a socket with unread bytes sends a TCP reset, which may
/// overtake the GOAWAY and makes the client's writes fail before it reads it; reading on for a
/// moment (nginx's lingering close) lets the GOAWAY and the end of the stream arrive in order.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// Room for each read while lingering.
const LINGER_READ: usize = 16 * 1024;

/// Open streams tracked at most; past this many (the client opening streams faster than they
/// are refused) the connection simply counts as busy until some end.
const MAX_TRACKED_STREAMS: usize = 2 * H2_MAX_CONCURRENT_STREAMS as usize;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const NO_ERROR: u32 = 0x0;
const END_HEADERS: u8 = 0x4;
const PREFACE_LEN: usize = 24;

/// A frame's nine-byte head (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHead {
    kind: u8,
    flags: u8,
    stream: u32,
}

/// Follows frame boundaries in one direction of a connection.
#[derive(Debug, Default)]
struct Frames {
    /// Bytes of the client's connection preface still to pass (the reading side only).
    preface: usize,
    head: [u8; 9],
    /// Bytes of `head` collected so far.
    have: usize,
    /// Payload bytes of the current frame still to pass, and its whole length.
    payload: usize,
    length: usize,
    /// The current frame's type, and whether a GOAWAY has passed whole.
    kind: u8,
    goaway_passed: bool,
    /// The error code of the last GOAWAY that passed whole (`NO_ERROR` if none has), and the
    /// one passing now.
    goaway_error: u32,
    passing_error: [u8; 4],
}

impl Frames {
    fn after_preface() -> Self {
        Frames::default()
    }

    fn before_preface() -> Self {
        Frames {
            preface: PREFACE_LEN,
            ..Frames::default()
        }
    }

    /// Passes `bytes`, calling `on_head` for each frame head completed in them.
    fn pass(&mut self, mut bytes: &[u8], mut on_head: impl FnMut(FrameHead)) {
        while !bytes.is_empty() {
            if self.preface > 0 {
                let n = self.preface.min(bytes.len());
                self.preface -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.payload > 0 {
                let n = self.payload.min(bytes.len());
                if self.kind == GOAWAY {
                    self.keep_error_code(&bytes[..n]);
                }
                self.payload -= n;
                bytes = &bytes[n..];
                self.frame_passed();
                continue;
            }
            let n = (self.head.len() - self.have).min(bytes.len());
            self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == self.head.len() {
                self.have = 0;
                let h = self.head;
                self.payload = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                self.length = self.payload;
                self.kind = h[3];
                self.passing_error = [0; 4];
                on_head(FrameHead {
                    kind: h[3],
                    flags: h[4],
                    stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                });
                self.frame_passed();
            }
        }
    }

    /// Keeps the bytes of a GOAWAY's error code (payload bytes 4 to 7: RFC 9113 §6.8) among
    /// `bytes`, the next ones of its payload.
    fn keep_error_code(&mut self, bytes: &[u8]) {
        let at = self.length - self.payload;
        for (i, &b) in bytes.iter().enumerate().take(8usize.saturating_sub(at)) {
            if let Some(slot) = (at + i)
                .checked_sub(4)
                .and_then(|k| self.passing_error.get_mut(k))
            {
                *slot = b;
            }
        }
    }

    fn frame_passed(&mut self) {
        if self.payload == 0 && self.have == 0 && self.kind == GOAWAY {
            self.goaway_passed = true;
            self.goaway_error = u32::from_be_bytes(self.passing_error);
        }
    }
}

/// Which deadline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// Streams are open: none.
    Busy,
    /// No stream open: `keepalive_timeout`.
    Idle,
    /// A header block is unfinished: `header_timeout`.
    HeaderBlock,
    /// Sent away after an idle time: [`GOAWAY_GRACE`] once the GOAWAY is out.
    GoneIdle,
    /// Sent away over an unfinished header block: closed once the GOAWAY is out.
    GoneHeaderBlock,
    /// The GOAWAY is out and the guard has ended the connection.
    Closed,
    /// h2 closed the connection after a GOAWAY for an error: what the client still sends is
    /// read and dropped until it closes its side or [`LINGER`] passes.
    Lingering,
}

/// An HTTP/2 client connection with its idle and header-block deadlines.
pub(crate) struct H2Stream {
    inner: Stream,
    limits: HeadLimits,
    from_client: Frames,
    to_client: Frames,
    /// Streams the client opened that have not ended (the gateway ended its side, or either
    /// side reset them).
    open: Vec<u32>,
    /// The highest stream id the client has opened.
    highest: u32,
    /// A HEADERS frame without END_HEADERS came, and its last CONTINUATION has not.
    header_block: bool,
    deadline: Deadline,
    timer: Pin<Box<Sleep>>,
    /// Raised to have Pingora send the GOAWAY (it watches this as its shutdown signal).
    go_away: Arc<watch::Sender<bool>>,
    /// Where bytes read while lingering go (allocated only then).
    scratch: Vec<u8>,
    /// The send deadline: made the first time the socket takes nothing, running while
    /// `send_blocked`.
    send_timer: Option<Pin<Box<Sleep>>>,
    send_blocked: bool,
    /// The connection's mark on its listener's budget: with no stream open it is idle, and a
    /// full listener may send it away to make room (as nginx reuses an idle HTTP/2
    /// connection).
    idle: Option<IdleWatch>,
}

impl H2Stream {
    /// Wraps `inner`, whose idle deadline starts now; also returns the shutdown signal to hand
    /// Pingora for this connection and its sender, which the caller raises when the server's
    /// own `shutdown` does.
    pub(crate) fn new(
        inner: Stream,
        limits: HeadLimits,
        shutdown: &ShutdownWatch,
        idle: Option<IdleWatch>,
    ) -> (Self, ShutdownWatch, Arc<watch::Sender<bool>>) {
        let (go_away, watch) = watch::channel(*shutdown.borrow());
        let go_away = Arc::new(go_away);
        let stream = H2Stream {
            inner,
            limits,
            from_client: Frames::before_preface(),
            to_client: Frames::after_preface(),
            open: Vec::new(),
            highest: 0,
            header_block: false,
            deadline: Deadline::Idle,
            timer: Box::pin(tokio::time::sleep(limits.keepalive_timeout)),
            go_away: go_away.clone(),
            scratch: Vec::new(),
            send_timer: None,
            send_blocked: false,
            idle,
        };
        (stream, watch, go_away)
    }

    fn client_sent(&mut self, head: FrameHead) {
        match head.kind {
            HEADERS => {
                if head.stream > self.highest {
                    self.highest = head.stream;
                    if self.open.len() < MAX_TRACKED_STREAMS {
                        self.open.push(head.stream);
                    }
                }
                self.header_block = head.flags & END_HEADERS == 0;
            }
            CONTINUATION => self.header_block = head.flags & END_HEADERS == 0,
            RST_STREAM => self.ended(head.stream),
            _ => {}
        }
    }

    fn gateway_sent(&mut self, head: FrameHead) {
        let ends = match head.kind {
            DATA | HEADERS => head.flags & END_STREAM != 0,
            RST_STREAM => true,
            _ => false,
        };
        if ends {
            self.ended(head.stream);
        }
    }

    fn ended(&mut self, stream: u32) {
        if let Some(at) = self.open.iter().position(|&s| s == stream) {
            self.open.swap_remove(at);
        }
    }

    /// Moves to the deadline the connection's state calls for; a deadline already running for
    /// the same reason keeps its time (frames other than a stream's start or end, PINGs
    /// included, do not put it off).
    fn update_deadline(&mut self) {
        if !matches!(
            self.deadline,
            Deadline::Busy | Deadline::Idle | Deadline::HeaderBlock
        ) {
            return;
        }
        let wanted = if self.header_block {
            Deadline::HeaderBlock
        } else if self.open.is_empty() {
            Deadline::Idle
        } else {
            Deadline::Busy
        };
        if wanted != self.deadline {
            self.deadline = wanted;
            match wanted {
                Deadline::Idle => self.start_timer(self.limits.keepalive_timeout),
                Deadline::HeaderBlock => self.start_timer(self.limits.header_timeout),
                _ => {}
            }
        }
    }

    fn start_timer(&mut self, after: Duration) {
        self.timer.as_mut().reset(Instant::now() + after);
    }

    /// Polls the running deadline: past it, raises the GOAWAY (or, with the GOAWAY out,
    /// closes). True once the guard has closed the connection.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let timed = matches!(
            self.deadline,
            Deadline::Idle | Deadline::HeaderBlock | Deadline::GoneIdle
        );
        if !timed || self.timer.as_mut().poll(cx).is_pending() {
            return self.deadline == Deadline::Closed;
        }
        match self.deadline {
            Deadline::Idle => {
                self.deadline = Deadline::GoneIdle;
                // Timed again once the GOAWAY is out.
                self.start_timer(Duration::from_secs(86_400));
                self.go_away.send_replace(true);
            }
            Deadline::HeaderBlock => {
                self.deadline = Deadline::GoneHeaderBlock;
                self.go_away.send_replace(true);
            }
            // A request sent before the client saw the GOAWAY may still be answered.
            Deadline::GoneIdle if !self.open.is_empty() => {
                self.start_timer(GOAWAY_GRACE);
                let _ = self.timer.as_mut().poll(cx);
            }
            _ => self.deadline = Deadline::Closed,
        }
        self.deadline == Deadline::Closed
    }

    /// Called once written bytes are flushed: a GOAWAY that h2 sent is now out.
    fn flushed(&mut self, cx: &mut Context<'_>) {
        if !self.to_client.goaway_passed {
            return;
        }
        match self.deadline {
            Deadline::GoneHeaderBlock => {
                self.deadline = Deadline::Closed;
                // h2 reads again and finds the connection ended.
                cx.waker().wake_by_ref();
            }
            Deadline::GoneIdle => {
                self.to_client.goaway_passed = false;
                self.start_timer(GOAWAY_GRACE);
                let _ = self.timer.as_mut().poll(cx);
            }
            _ => {}
        }
    }

    /// The socket took no bytes: starts the send deadline unless it runs already; once past it,
    /// the error that ends the connection.
    fn write_blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.limits.send_timeout;
        let timer = self
            .send_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !self.send_blocked {
            self.send_blocked = true;
            timer.as_mut().reset(Instant::now() + timeout);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no response bytes within send_timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Passes on a write's `result`: `Pending` runs the send deadline, anything else stops it.
    fn timed_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => self.write_blocked(cx).map(Err),
            done => {
                self.send_blocked = false;
                done
            }
        }
    }

    /// After the stream below is shut down: lingers (reading and dropping the client's bytes)
    /// if the last GOAWAY h2 sent was for an error. `Ready` once done.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.deadline != Deadline::Lingering {
            if self.to_client.goaway_error == NO_ERROR {
                return Poll::Ready(());
            }
            self.deadline = Deadline::Lingering;
            self.start_timer(LINGER);
            self.scratch = vec![0; LINGER_READ];
        }
        loop {
            if self.timer.as_mut().poll(cx).is_ready() {
                break;
            }
            let mut buf = ReadBuf::new(&mut self.scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                Poll::Ready(_) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        self.scratch = Vec::new();
        Poll::Ready(())
    }

    /// Tells the listener's budget whether the connection is idle (no stream open, no header
    /// block under way) or busy; told to make room while idle, it is sent away as its
    /// `keepalive_timeout` would have sent it (GOAWAY, then closed).
    fn follow_budget(&mut self, cx: &mut Context<'_>) {
        let Some(idle) = &self.idle else {
            return;
        };
        let told_to_close = match self.deadline {
            Deadline::Idle => idle.waiting(cx.waker()),
            Deadline::Busy | Deadline::HeaderBlock => !idle.busy(),
            // Already on its way out.
            _ => false,
        };
        if told_to_close {
            // As the idle deadline passing does (a stream the client opened before it saw
            // the GOAWAY gets `GOAWAY_GRACE`).
            self.idle = None;
            self.deadline = Deadline::GoneIdle;
            self.start_timer(Duration::from_secs(86_400));
            self.go_away.send_replace(true);
        }
    }

    /// Follows bytes h2 has written (accepted by the stream below).
    fn wrote(&mut self, bytes: &[u8]) {
        let mut frames = std::mem::take(&mut self.to_client);
        frames.pass(bytes, |head| self.gateway_sent(head));
        self.to_client = frames;
        self.update_deadline();
    }

    /// Follows bytes read from the client.
    fn read(&mut self, bytes: &[u8]) {
        let mut frames = std::mem::take(&mut self.from_client);
        frames.pass(bytes, |head| self.client_sent(head));
        self.from_client = frames;
        self.update_deadline();
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.follow_budget(cx);
        if this.poll_deadline(cx) {
            // The end of the connection, as h2 sees it.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.read(&buf.filled()[before..]);
            this.follow_budget(cx);
            // A deadline started by this read must wake this task when it passes.
            if this.poll_deadline(cx) {
                buf.set_filled(before);
            }
        }
        result
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.wrote(&buf[..n]);
        }
        self.timed_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = result {
            for buf in bufs {
                if n == 0 {
                    break;
                }
                let taken = n.min(buf.len());
                self.wrote(&buf[..taken]);
                n -= taken;
            }
        }
        self.timed_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = result {
            self.flushed(cx);
        }
        self.timed_write(cx, result)
    }

    /// Shuts the stream below down (its end goes out after the GOAWAY), then lingers after an
    /// error (see [`LINGER`]).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.deadline != Deadline::Lingering {
            let result = Pin::new(&mut self.inner).poll_shutdown(cx);
            if let Err(e) = ready!(self.timed_write(cx, result)) {
                return Poll::Ready(Err(e));
            }
        }
        self.poll_linger(cx).map(Ok)
    }
}

delegate_io!(H2Stream, deadline);

#[async_trait]
impl Peek for H2Stream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload_len: usize) -> Vec<u8> {
        let len = payload_len as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.resize(out.len() + payload_len, 0xaa);
        out
    }

    /// The frame heads found, whether a GOAWAY passed whole and its error code, do not depend
    /// on how the bytes are cut into reads; the preface and payloads are passed over.
    #[test]
    fn frame_heads_are_found_across_any_cut() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(HEADERS, 0, 1, 20));
        bytes.extend(frame(CONTINUATION, END_HEADERS, 1, 3));
        bytes.extend(frame(DATA, END_STREAM, 1, 0));
        // Last stream 1, ENHANCE_YOUR_CALM, four bytes of debug data.
        let mut goaway = frame(GOAWAY, 0, 0, 12);
        goaway[9..17].copy_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0xb]);
        bytes.extend(goaway);
        let expected = vec![
            FrameHead {
                kind: HEADERS,
                flags: 0,
                stream: 1,
            },
            FrameHead {
                kind: CONTINUATION,
                flags: END_HEADERS,
                stream: 1,
            },
            FrameHead {
                kind: DATA,
                flags: END_STREAM,
                stream: 1,
            },
            FrameHead {
                kind: GOAWAY,
                flags: 0,
                stream: 0,
            },
        ];
        for cut in 0..bytes.len() {
            let mut frames = Frames::before_preface();
            let mut seen = Vec::new();
            frames.pass(&bytes[..cut], |h| seen.push(h));
            assert!(!frames.goaway_passed || cut == bytes.len(), "cut at {cut}");
            frames.pass(&bytes[cut..], |h| seen.push(h));
            assert_eq!(seen, expected, "cut at {cut}");
            assert!(frames.goaway_passed, "cut at {cut}");
            assert_eq!(frames.goaway_error, 0xb, "cut at {cut}");
        }
    }
}
