//! The per-request context and the in-flight count that graceful shutdown waits on.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;
use pingora_core::Result;

use super::compress::Encoder;
use super::errors::no_decision;
use crate::config::ErrorPage;
use crate::routing::access::Refusal;
use crate::routing::routes::RouteId;
use crate::routing::{Decision, GroupId, IdSource};
use crate::state::{GatewayState, RouteState};

/// Counts requests in progress, so a graceful shutdown can end as soon as they are done, and
/// carries the "closing" flag: once set, every response closes its client connection, so
/// keep-alive clients move to the new process during an upgrade instead of having an idle
/// connection dropped under them when the old process stops.
#[derive(Clone, Default)]
pub(crate) struct InFlight {
    requests: Arc<AtomicUsize>,
    closing: Arc<AtomicBool>,
}

impl InFlight {
    /// Requests now in progress.
    pub(crate) fn count(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    /// From now on, answer with `Connection: close`.
    pub(crate) fn start_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Marks one request in progress until the returned guard is dropped.
    pub(crate) fn enter(&self) -> InFlightGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.requests.clone())
    }
}

/// Marks one request in progress until dropped with its context.
pub(crate) struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Who the client is, worked out once in `request_filter` and read by every later step.
#[derive(Default)]
pub(crate) struct Client {
    /// The TCP peer's address (a trusted proxy, or the client itself): who sent the headers,
    /// which an identity `header` source's `from` is checked against.
    pub(crate) peer: Option<IpAddr>,
    /// The client's address: the TCP peer, or behind trusted proxies the right-most
    /// untrusted `X-Forwarded-For` address.
    pub(crate) ip: Option<IpAddr>,
    /// `ip` as header text, for `X-Real-IP` and the access log.
    pub(crate) ip_value: Option<HeaderValue>,
    /// The TCP peer as header text when it is not the client (a trusted proxy); `None` when
    /// the peer is the client, whose `ip_value` then stands for it in `X-Forwarded-For`.
    pub(crate) proxy_value: Option<HeaderValue>,
    /// The verified user id (from the route's identity sources), kept (only) when a group
    /// selects servers by user, a rate limit of the route counts by user, or the access log
    /// writes it (`access_log.user_id`), so it is resolved once per request.
    pub(crate) user: Option<Box<[u8]>>,
}

/// Per-request context: the state snapshot, the decision, the request id and what happened
/// upstream (fallback, failed servers, retries).
pub(crate) struct RequestCtx {
    pub(super) _in_flight: InFlightGuard,
    pub(super) state: Option<Arc<GatewayState>>,
    /// The route serving the request (`None` before routing, or when no route matched).
    pub(super) route: Option<RouteId>,
    /// The target sent upstream when the route strips its prefix (`None`: the client's).
    pub(super) upstream_target: Option<Box<http::Uri>>,
    pub(super) decision: Option<Decision>,
    pub(super) client: Client,
    /// The request id, as sent upstream and back to the client.
    pub(super) request_id: HeaderValue,
    /// The group actually serving the request (differs from the decision after a fallback).
    pub(super) served_group: Option<GroupId>,
    /// Servers that refused or timed out a connection for this request.
    pub(super) failed_servers: Vec<SocketAddr>,
    /// Retries after the request had been sent upstream (at most one).
    pub(super) resend_retries: u8,
    /// The server that failed after the request was sent: the retry avoids it when another
    /// server or a fallback group can take the request.
    pub(super) resend_failed: Option<SocketAddr>,
    pub(super) started: Instant,
    /// When the first upstream server was picked, and when its response header arrived.
    pub(super) upstream_started: Option<Instant>,
    pub(super) upstream_answered: Option<Instant>,
    /// The last upstream server tried.
    pub(super) upstream_addr: Option<SocketAddr>,
    /// The status of an error response the gateway itself sent.
    pub(super) error_status: Option<u16>,
    /// Request body bytes received so far.
    pub(super) body_bytes: u64,
    /// Why the route's access control refused the request (`None`: it did not).
    pub(super) refused: Option<Refusal>,
    /// The route checks basic credentials: `Authorization` is not sent upstream.
    pub(super) strip_authorization: bool,
    /// Refused by a rate limit (429): no group served it.
    pub(super) rate_limited: bool,
    /// The response's encoder when the route compresses it (`None` on every other response).
    pub(super) compress: Option<Box<Encoder>>,
    /// The error page replacing the origin's body (`intercept_errors`): its chunks are
    /// dropped and the page sent at the end.
    pub(super) replacing_body: Option<Arc<ErrorPage>>,
    /// Answered 503 by the route's maintenance switch: no group served it.
    pub(super) maintenance: bool,
    /// The `grpc-status` of the origin's trailers (a trailers-only answer carries it in its
    /// head instead, which `logging` reads).
    pub(super) grpc_status: Option<u16>,
    /// Held from picking a server of an HTTP/2-only group until a stream to it is had
    /// (`Pool::connect_gate`).
    pub(super) connect_permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Which identity source gave the user id (`None` before the decision).
    pub(super) id_source: Option<IdSource>,
    /// The `Set-Cookie` of a new visitor id (`assign`), added to the response.
    pub(super) set_cookie: Option<HeaderValue>,
    /// The server this request is counted in flight on (its group in `state` and its slot in
    /// that pool, see `upstreams::Pool::begin_request`): uncounted when another server is
    /// picked and when the context is dropped, whichever way the request ended.
    counted_on: Option<(GroupId, usize)>,
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        self.uncount();
    }
}

impl RequestCtx {
    pub(super) fn new(in_flight: &InFlight) -> Self {
        RequestCtx {
            _in_flight: in_flight.enter(),
            state: None,
            route: None,
            upstream_target: None,
            decision: None,
            client: Client::default(),
            request_id: HeaderValue::from_static(""),
            served_group: None,
            failed_servers: Vec::new(),
            resend_retries: 0,
            resend_failed: None,
            started: Instant::now(),
            upstream_started: None,
            upstream_answered: None,
            upstream_addr: None,
            error_status: None,
            body_bytes: 0,
            refused: None,
            strip_authorization: false,
            rate_limited: false,
            compress: None,
            replacing_body: None,
            maintenance: false,
            grpc_status: None,
            connect_permit: None,
            id_source: None,
            set_cookie: None,
            counted_on: None,
        }
    }

    /// Counts the request in flight on `addr` of `group` (the server just picked), and no
    /// longer on the one picked before, if any.
    pub(super) fn count_on(&mut self, group: GroupId, addr: SocketAddr) {
        self.uncount();
        let Some(state) = &self.state else {
            return;
        };
        if let Some(slot) = state.pools.get(group.0).and_then(|p| p.begin_request(addr)) {
            self.counted_on = Some((group, slot));
        }
    }

    /// Ends the in-flight count [`RequestCtx::count_on`] started. `state` is the snapshot the
    /// request started with and is never replaced, so this is the pool that counted it.
    fn uncount(&mut self) {
        if let Some(((group, slot), state)) = self.counted_on.take().zip(self.state.as_ref()) {
            if let Some(pool) = state.pools.get(group.0) {
                pool.end_request(slot);
            }
        }
    }

    /// The state and decision `request_filter` stored; an error if a hook runs before it.
    pub(super) fn routed(&self) -> Result<(&Arc<GatewayState>, &Decision)> {
        self.state
            .as_ref()
            .zip(self.decision.as_ref())
            .ok_or_else(no_decision)
    }

    /// The route serving the request, once routed.
    pub(super) fn route_state(&self) -> Option<&RouteState> {
        self.state.as_ref()?.routes.get(self.route?.0)
    }

    /// The error page for `status`: the route's, or with no route `gateway.error_pages`.
    pub(super) fn error_page(&self, status: u16) -> Option<Arc<ErrorPage>> {
        let state = self.state.as_ref()?;
        let pages = match self.route {
            Some(route) => state.routes.get(route.0)?.error_pages.as_ref()?,
            None => state.error_pages.as_ref()?,
        };
        pages.get(status).cloned()
    }

    /// The request id as text, for logs (it is always ASCII).
    pub(super) fn id(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }

    pub(super) fn served_group_name(&self) -> Option<&str> {
        let state = self.state.as_ref()?;
        Some(state.group_name(self.served_group?))
    }
}
