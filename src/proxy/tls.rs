//! TLS termination on a listener: the handshake with the listener's acceptor as it stands in
//! the live state (so a reload's new certificates serve the next handshake while established
//! connections keep theirs), under the head deadline, counted by result; then the connection
//! goes to the proxy as any other, HTTP/2 or HTTP/1.1 as ALPN chose. The connection counts
//! in flight during its handshake, so a graceful shutdown waits for it (the guard then counts
//! it until its first request head is read).
//!
//! The gateway runs the handshake itself rather than through Pingora's listener settings: so
//! a certificate change needs no new listener, a failed or stalled handshake is counted, and
//! one acceptor (its session cache and ticket keys) serves every worker, so a session resumes
//! on whichever worker the client reaches next.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::{debug, error};
use pingora_core::apps::ServerApp;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::tls::server::handshake;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use prometheus::IntCounter;

use super::ctx::InFlight;
use crate::config::TlsListener;
use crate::state::metrics::METRICS;
use crate::state::GatewayState;

/// A TLS listener's connection handler in front of `inner` (the guarded proxy).
pub(crate) struct TlsApp<A> {
    inner: Arc<A>,
    addr: String,
    /// The settings the process started with, used should the live state lose this listener
    /// (a reload that removed it: listeners change on restart only).
    initial: Arc<TlsListener>,
    state: Arc<ArcSwap<GatewayState>>,
    handshake_timeout: Duration,
    in_flight: InFlight,
    /// `gateway_tls_handshakes_total` by result, resolved once (no label lookup, and so no
    /// lock inside the metrics library, per connection).
    handshakes: Handshakes,
}

struct Handshakes {
    ok: IntCounter,
    failed: IntCounter,
    timeout: IntCounter,
}

impl<A> TlsApp<A> {
    pub(crate) fn new(
        inner: Arc<A>,
        addr: String,
        initial: Arc<TlsListener>,
        state: Arc<ArcSwap<GatewayState>>,
        handshake_timeout: Duration,
        in_flight: InFlight,
    ) -> Self {
        let counter = |result: &str| METRICS.tls_handshakes.with_label_values(&[result]);
        TlsApp {
            inner,
            addr,
            initial,
            state,
            handshake_timeout,
            in_flight,
            handshakes: Handshakes {
                ok: counter("ok"),
                failed: counter("failed"),
                timeout: counter("timeout"),
            },
        }
    }

    /// The listener's settings now in force.
    fn settings(&self) -> Arc<TlsListener> {
        self.state
            .load()
            .tls_listener(&self.addr)
            .cloned()
            .unwrap_or_else(|| self.initial.clone())
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for TlsApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Ok(tcp) = stream.into_any().downcast::<L4Stream>() else {
            error!(
                "TLS listener {}: the accepted connection is not a TCP stream",
                self.addr
            );
            return None;
        };
        let handshaking = self.in_flight.enter();
        let settings = self.settings();
        // Boxed: this future lives as long as the connection, and would otherwise be as large
        // as the handshake's state machine (rustls's) all that time.
        let handshake = Box::pin(handshake(&settings.acceptor, *tcp));
        let tls = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                self.handshakes.failed.inc();
                debug!("TLS handshake on {} failed: {e}", self.addr);
                return None;
            }
            Err(_) => {
                self.handshakes.timeout.inc();
                debug!("TLS handshake on {} timed out", self.addr);
                return None;
            }
        };
        self.handshakes.ok.inc();
        drop(settings);
        // The guard takes over counting the connection as soon as it is polled, within the
        // drain's quiet period.
        drop(handshaking);
        self.inner.process_new(Box::new(tls), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}
