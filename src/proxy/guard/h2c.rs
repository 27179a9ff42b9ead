//! Cleartext HTTP/2 beside HTTP/1.1 on one plaintext listener (`h2c: true`): a connection that
//! opens with the HTTP/2 connection preface speaks HTTP/2 (prior knowledge, RFC 9113 §3.3),
//! any other speaks HTTP/1.1.
//!
//! Pingora's own `h2c` server option peeks exactly 24 bytes, so an HTTP/1.1 request shorter
//! than the preface waits for bytes that never come; and it applies to every plaintext
//! listener of the app. Here the bytes are compared as they arrive and the first one that
//! differs from the preface settles it, for this listener only. What was read is handed back
//! in front of the rest of the connection, and an HTTP/2 connection reports `h2` as its
//! protocol, as ALPN would over TLS, so that Pingora serves it as HTTP/2.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::{Peek, Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::delegate::delegate_io;
use super::FIRST_BYTE_TIMEOUT;
use crate::proxy::connections::IdleWatch;

/// The client connection preface of HTTP/2.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection after its first bytes were read to tell HTTP/2 from HTTP/1.1: those bytes
/// come first out of it, and it says which protocol it speaks.
pub(crate) struct Sniffed {
    inner: Stream,
    /// What was read and not yet handed out.
    read: [u8; PREFACE.len()],
    start: usize,
    end: usize,
    h2: bool,
}

/// What the first bytes of a connection on an h2c listener said.
pub(crate) enum Protocol {
    /// The preface: HTTP/2 with prior knowledge.
    H2(Stream),
    /// Anything else: HTTP/1.1 (whose own checks judge the bytes).
    H1(Stream),
}

/// Reads a new connection's first bytes until they either are the HTTP/2 preface or differ
/// from it. Until its first byte a connection may stay silent for the first-byte timeout, and
/// `idle` (its listener's watch) may close it to make room, as a silent HTTP/1 connection may
/// be; once a byte is in, the rest of the preface must come within `header_timeout`, as the
/// rest of an HTTP/1 head must. `None` when the client closed, stayed silent or slow past
/// those, was closed for room, or the server began shutting down before the client said
/// anything.
pub(crate) async fn sniff(
    mut inner: Stream,
    shutdown: &ShutdownWatch,
    header_timeout: Duration,
    idle: Option<&IdleWatch>,
) -> Option<Protocol> {
    let mut read = [0u8; PREFACE.len()];
    let mut end = 0;
    let mut shutdown = shutdown.clone();
    let mut until = Instant::now() + FIRST_BYTE_TIMEOUT;
    let h2 = loop {
        let silent = end == 0;
        let watch = idle.filter(|_| silent);
        tokio::select! {
            biased;
            n = read_watched(&mut inner, &mut read[end..], watch) => match n {
                Ok(0) | Err(_) => return None,
                Ok(n) => end += n,
            },
            _ = tokio::time::sleep_until(until) => return None,
            _ = shutdown.changed(), if silent => return None,
        }
        if silent {
            until = Instant::now() + header_timeout;
        }
        if read[..end] != PREFACE[..end] {
            break false;
        }
        if end == PREFACE.len() {
            break true;
        }
    };
    let sniffed = Box::new(Sniffed {
        inner,
        read,
        start: 0,
        end,
        h2,
    });
    Some(if h2 {
        Protocol::H2(sniffed)
    } else {
        Protocol::H1(sniffed)
    })
}

/// One read into `buf`; while `idle` watches (the connection has sent nothing yet), waiting
/// counts as idle and a close for room ends the read as if the client had closed (`Ok(0)`).
async fn read_watched(
    inner: &mut Stream,
    buf: &mut [u8],
    idle: Option<&IdleWatch>,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *inner).poll_read(cx, &mut rb) {
            Poll::Pending => match idle {
                Some(idle) if idle.waiting(cx.waker()) => Poll::Ready(Ok(0)),
                _ => Poll::Pending,
            },
            Poll::Ready(Ok(())) => match idle {
                // Closed for room before its bytes could count.
                Some(idle) if !rb.filled().is_empty() && !idle.busy() => Poll::Ready(Ok(0)),
                _ => Poll::Ready(Ok(rb.filled().len())),
            },
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    })
    .await
}

impl AsyncRead for Sniffed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.start < self.end {
            let n = (self.end - self.start).min(buf.remaining());
            let start = self.start;
            buf.put_slice(&self.read[start..start + n]);
            self.start += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Sniffed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
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

delegate_io!(Sniffed, h2, all_but_ssl);

impl pingora_core::protocols::Ssl for Sniffed {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<std::sync::Arc<pingora_core::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    /// `h2` for a connection that opened with the preface: Pingora serves a stream whose
    /// protocol is `h2` as HTTP/2.
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        if self.h2 {
            Some(ALPN::H2)
        } else {
            self.inner.selected_alpn_proto()
        }
    }
}

#[async_trait]
impl Peek for Sniffed {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.start == 0 && self.end >= buf.len() {
            buf.copy_from_slice(&self.read[..buf.len()]);
            return Ok(true);
        }
        // Not needed by the gateway (its apps do not peek past the guard): say no peek.
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn sniffed(sent: &'static [u8]) -> (bool, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let writer = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
            c.write_all(sent).await.expect("write");
            // Held open, so that a short HTTP/1.1 head must be told apart without EOF.
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        });
        let (accepted, _) = listener.accept().await.expect("accept");
        let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(accepted));
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let protocol = sniff(stream, &shutdown, Duration::from_secs(10), None)
            .await
            .expect("sniffed");
        let (h2, mut stream) = match protocol {
            Protocol::H2(s) => (true, s),
            Protocol::H1(s) => (false, s),
        };
        let mut out = vec![0u8; sent.len()];
        stream.read_exact(&mut out).await.expect("replayed");
        writer.abort();
        (h2, out)
    }

    /// The preface means HTTP/2 (reported as `h2`), and every byte read comes back out.
    #[tokio::test]
    async fn the_preface_is_http2() {
        let mut sent = PREFACE.to_vec();
        sent.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        let sent: &'static [u8] = Box::leak(sent.into_boxed_slice());
        let (h2, out) = sniffed(sent).await;
        assert!(h2);
        assert_eq!(out, sent);
    }

    /// An HTTP/1.1 head shorter than the preface is told apart at once, without waiting for
    /// 24 bytes, and replayed whole.
    #[tokio::test]
    async fn a_short_http1_head_is_http1() {
        let sent = b"GET / HTTP/1.0\r\n\r\n";
        let (h2, out) = sniffed(sent).await;
        assert!(!h2);
        assert_eq!(out, sent);
    }

    /// A start that matches the preface for a while, then differs, is HTTP/1.1.
    #[tokio::test]
    async fn a_near_preface_is_http1() {
        let sent = b"PRI * HTTP/1.1\r\nHost: x\r\n\r\n";
        let (h2, out) = sniffed(sent).await;
        assert!(!h2);
        assert_eq!(out, sent);
    }

    /// A start of the preface that stops short has the header timeout from its first byte,
    /// not the minute a silent connection gets.
    #[tokio::test]
    async fn a_stalled_preface_has_the_header_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"PRI * HTTP/2.0\r\n")
            .await
            .expect("write");
        let (accepted, _) = listener.accept().await.expect("accept");
        let stream: Stream = Box::new(pingora_core::protocols::l4::stream::Stream::from(accepted));
        let (_tx, shutdown) = tokio::sync::watch::channel(false);
        let sniffed = sniff(stream, &shutdown, Duration::from_millis(100), None).await;
        assert!(sniffed.is_none(), "given up on after the header timeout");
        drop(client);
    }
}
