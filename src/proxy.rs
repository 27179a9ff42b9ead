//! The Pingora `ProxyHttp` implementation. Each hook is thin: `request_filter` collects the
//! request's facts and calls `routing::decide()` once; the other hooks read the decision from
//! the per-request context.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, COOKIE};
use log::warn;
use pingora_core::protocols::http::ServerSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::access_log::{AccessLog, AccessRecord};
use crate::cidr::Cidr;
use crate::config::{GatewayConfig, Limits};
use crate::metrics::{RequestMetrics, METRICS};
use crate::request_id;
use crate::routing::{Decision, GroupId, HeaderLookup, Router};
use crate::upstreams::Pool;

/// Everything a request needs to be routed, swapped as a whole when the configuration changes.
/// A request keeps the snapshot it started with until it ends.
pub struct GatewayState {
    pub router: Arc<Router>,
    /// One pool per group, indexed by `GroupId`.
    pub pools: Vec<Arc<Pool>>,
    /// Response header naming the chosen group, if enabled, as Pingora's case-keeping header
    /// name (a shared `Bytes`: cloning it per request copies nothing).
    decision_header: Option<Bytes>,
    /// Each group's name as a header value, indexed by `GroupId` (built once, cloned cheaply).
    group_values: Vec<HeaderValue>,
    /// Request counters and histograms resolved for this state's groups and rules.
    pub metrics: RequestMetrics,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    pub limits: Limits,
}

impl GatewayState {
    /// Assembles a state; fails only when the decision header name is not a valid header name
    /// (config validation already ensures it is).
    pub fn new(
        router: Arc<Router>,
        pools: Vec<Arc<Pool>>,
        config: &GatewayConfig,
    ) -> std::io::Result<Self> {
        let decision_header = config
            .decision_header
            .as_deref()
            .map(|name| http::HeaderName::from_bytes(name.as_bytes()))
            .transpose()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
            .map(|name| Bytes::copy_from_slice(name.as_str().as_bytes()));
        let group_values = router
            .group_names
            .iter()
            .map(|name| HeaderValue::from_maybe_shared(Bytes::copy_from_slice(name.as_bytes())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(GatewayState {
            group_values,
            trusted_proxies: config.trusted_proxies.clone(),
            limits: config.limits,
            metrics: RequestMetrics::new(&router),
            router,
            pools,
            decision_header,
        })
    }
}

/// Counts requests in progress, so a graceful shutdown can end as soon as they are done, and
/// carries the "closing" flag: once set, every response closes its client connection, so
/// keep-alive clients move to the new process during an upgrade instead of having an idle
/// connection dropped under them when the old process stops.
#[derive(Clone, Default)]
pub struct InFlight {
    requests: Arc<AtomicUsize>,
    closing: Arc<AtomicBool>,
}

impl InFlight {
    /// Requests now in progress.
    pub fn count(&self) -> usize {
        self.requests.load(Ordering::Acquire)
    }

    /// From now on, answer with `Connection: close`.
    pub fn start_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    fn enter(&self) -> InFlightGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.requests.clone())
    }
}

/// Marks one request in progress until dropped with its context.
struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The gateway's proxy logic.
pub struct CanaryProxy {
    state: Arc<ArcSwap<GatewayState>>,
    in_flight: InFlight,
    access_log: Option<AccessLog>,
}

impl CanaryProxy {
    pub fn new(
        state: Arc<ArcSwap<GatewayState>>,
        in_flight: InFlight,
        access_log: Option<AccessLog>,
    ) -> Self {
        CanaryProxy {
            state,
            in_flight,
            access_log,
        }
    }
}

/// Per-request context: the state snapshot, the decision, the request id and what happened
/// upstream (fallback, failed servers, retries).
pub struct RequestCtx {
    _in_flight: InFlightGuard,
    state: Option<Arc<GatewayState>>,
    decision: Option<Decision>,
    /// The request id, as sent upstream and back to the client.
    request_id: HeaderValue,
    /// The group actually serving the request (differs from the decision after a fallback).
    served_group: Option<GroupId>,
    /// Servers that refused or timed out a connection for this request.
    failed_servers: Vec<SocketAddr>,
    /// Retries after the request had been sent upstream (at most one).
    resend_retries: u8,
    /// The server that failed after the request was sent: the retry avoids it when another
    /// server or a fallback group can take the request.
    resend_failed: Option<SocketAddr>,
    started: Instant,
    /// When the first upstream server was picked, and when its response header arrived.
    upstream_started: Option<Instant>,
    upstream_answered: Option<Instant>,
    /// The last upstream server tried.
    upstream_addr: Option<SocketAddr>,
    /// The status of an error response the gateway itself sent.
    error_status: Option<u16>,
    /// The client's address: the TCP peer, or behind trusted proxies the right-most
    /// untrusted `X-Forwarded-For` address.
    client_ip: Option<IpAddr>,
    /// `client_ip` as header text, for `X-Real-IP` (and `X-Forwarded-For` when it is the peer).
    client_ip_value: Option<HeaderValue>,
    /// Request body bytes received so far.
    body_bytes: u64,
}

/// Upper bound on connection attempts for one request (each to another server or group).
const MAX_CONNECT_TRIES: usize = 8;

const X_REQUEST_ID: &str = "x-request-id";
const X_REAL_IP: &str = "x-real-ip";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// Lets the router read Pingora's request headers without knowing their type.
struct Headers<'a>(&'a HeaderMap, Option<IpAddr>);

impl HeaderLookup for Headers<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|v| v.as_bytes())
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.1
    }
}

fn bad_request(why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(400), why)
}

/// The error returned when a hook runs before `request_filter` made its decision; a bug, but
/// one that must fail the request, not the process.
fn no_decision() -> Box<Error> {
    Error::explain(ErrorType::InternalError, "routing decision missing")
}

#[async_trait]
impl ProxyHttp for CanaryProxy {
    type CTX = RequestCtx;

    /// No downstream modules: the gateway does not compress, and Pingora's default adds a
    /// (disabled) compression module whose filters would still run on every request.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _in_flight: self.in_flight.enter(),
            state: None,
            decision: None,
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
            client_ip: None,
            client_ip_value: None,
            body_bytes: 0,
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Bounds each read of the body; request_body_filter bounds the whole body.
        let body_timeout = self.state.load().limits.body_timeout;
        session.set_read_timeout(Some(body_timeout));
        // Serve pipelined requests in order, each routed on its own (RFC 9112 §9.3.2), rather
        // than dropping the later ones.
        session.set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let state = self.state.load_full();
        let peer = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip());
        let request = session.req_header();
        let headers = &request.headers;
        ctx.request_id = match headers.get(X_REQUEST_ID) {
            Some(id) if request_id::is_acceptable(id.as_bytes()) => id.clone(),
            _ => request_id::generate(),
        };
        ctx.client_ip = peer.map(|peer| client_ip(peer, headers, &state.trusted_proxies));
        ctx.client_ip_value = ctx.client_ip.map(ip_value);
        let cookies = headers.get_all(COOKIE).into_iter().map(|v| v.as_bytes());
        let user = match state.router.user_from_cookies_checked(cookies) {
            Ok(user) => user,
            Err(_) => {
                METRICS.bad_signatures.inc();
                None
            }
        };
        ctx.decision = Some(state.router.decide(user, &Headers(headers, ctx.client_ip)));
        ctx.state = Some(state);
        check_framing(request, ctx)?;
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(state) = &ctx.state else {
            return Ok(());
        };
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_bytes > state.limits.max_body_bytes {
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "request body over the limit",
            ));
        }
        if ctx.started.elapsed() > state.limits.body_timeout {
            return Err(Error::explain(
                ErrorType::HTTPStatus(408),
                "request body took too long",
            ));
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (state, decision) = ctx
            .state
            .as_ref()
            .zip(ctx.decision.as_ref())
            .ok_or_else(no_decision)?;
        let router = &state.router;
        // Follow the fallback chain (acyclic, checked at load) until a group has a healthy
        // server that has not failed this request. A server that failed mid-request is avoided
        // first, and used again (on a fresh connection) only when nothing else can serve.
        let key = |selection| match selection {
            crate::upstreams::Selection::Consistent => router
                .user_from_cookies(
                    session
                        .req_header()
                        .headers
                        .get_all(COOKIE)
                        .into_iter()
                        .map(|v| v.as_bytes()),
                )
                .unwrap_or_default(),
            crate::upstreams::Selection::RoundRobin => &[],
        };
        let mut avoid = ctx.failed_servers.clone();
        avoid.extend(ctx.resend_failed);
        let mut picked = None;
        for exclude in [&avoid, &ctx.failed_servers] {
            let mut group = decision.group;
            for _ in 0..state.pools.len() {
                let pool = state.pools.get(group.0).ok_or_else(no_decision)?;
                if let Some(addr) = pool.select(key(pool.config.selection), exclude) {
                    picked = Some((group, pool, addr));
                    break;
                }
                match pool.config.fallback {
                    Some(next) => group = next,
                    None => break,
                }
            }
            if picked.is_some() {
                break;
            }
        }
        if let Some((group, pool, addr)) = picked {
            ctx.served_group = Some(group);
            ctx.upstream_addr = Some(addr);
            ctx.upstream_started.get_or_insert_with(Instant::now);
            return Ok(Box::new(pool.peer(addr)));
        }
        let wanted = router.group_name(decision.group);
        if ctx.failed_servers.is_empty() {
            warn!("request {}: no healthy server for group {wanted}", ctx.id());
            Err(Error::explain(
                ErrorType::HTTPStatus(503),
                "no healthy upstream server",
            ))
        } else {
            warn!(
                "request {}: no server of group {wanted} (or its fallbacks) accepted a connection",
                ctx.id()
            );
            Err(Error::explain(
                ErrorType::HTTPStatus(502),
                "no upstream server accepted a connection",
            ))
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing was sent yet, so another server is safe for any method.
        if let Some(addr) = peer._address.as_inet() {
            ctx.failed_servers.push(*addr);
        }
        let retry = ctx.failed_servers.len() < MAX_CONNECT_TRIES;
        if let Some(group) = ctx.served_group_name() {
            METRICS.connect_errors.with_label_values(&[group]).inc();
            if retry {
                METRICS.retries.with_label_values(&[group]).inc();
            }
        }
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        // The request may have reached the origin: retry once, and only when repeating it is
        // harmless (RFC 9110 §9.2.2) and there is no body to replay. A timeout is not retried:
        // the client gets its 504 on time.
        let request = session.req_header();
        let retry = ctx.resend_retries == 0
            && !matches!(e.esource(), pingora_core::ErrorSource::Downstream)
            && request.method.is_idempotent()
            && !has_body(&request.headers)
            && !matches!(
                e.etype(),
                ErrorType::ReadTimedout | ErrorType::WriteTimedout
            );
        if retry {
            ctx.resend_retries += 1;
            ctx.resend_failed = peer._address.as_inet().copied();
            if let Some(group) = ctx.served_group_name() {
                METRICS.retries.with_label_values(&[group]).inc();
            }
        }
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = error_status(e);
        ctx.error_status = Some(code);
        if code > 0 {
            let mut response = ServerSession::generate_error(code);
            let body = Bytes::from(format!("{code} {}\n", error_text(code)));
            let written = async {
                response.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
                response.set_content_length(body.len())?;
                if !ctx.request_id.is_empty() {
                    response.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
                }
                session
                    .as_downstream_mut()
                    .write_error_response(response, body)
                    .await
            }
            .await;
            if let Err(write_error) = written {
                warn!(
                    "request {}: could not send the {code} response: {write_error}",
                    ctx.id()
                );
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip());
        // nginx's $proxy_add_x_forwarded_for appends the TCP peer; X-Real-IP is the client
        // (the same address unless the peer is a trusted proxy).
        let peer_value = match peer {
            Some(peer) if Some(peer) == ctx.client_ip => ctx.client_ip_value.clone(),
            peer => peer.map(ip_value),
        };
        let forwarded_for = forwarded_for(&upstream_request.headers, peer_value);
        match &ctx.client_ip_value {
            Some(value) => upstream_request.insert_header(X_REAL_IP, value.clone())?,
            None => {
                upstream_request.remove_header(X_REAL_IP);
            }
        }
        match forwarded_for {
            Some(value) => upstream_request.insert_header(X_FORWARDED_FOR, value)?,
            None => {
                upstream_request.remove_header(X_FORWARDED_FOR);
            }
        }
        let tls = session
            .digest()
            .is_some_and(|digest| digest.ssl_digest.is_some());
        upstream_request.insert_header(X_FORWARDED_PROTO, if tls { "https" } else { "http" })?;
        upstream_request.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_answered.get_or_insert_with(Instant::now);
        Ok(())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let (Some(state), Some(decision)) = (ctx.state.as_ref(), ctx.decision.as_ref()) else {
            return;
        };
        let router = &state.router;
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.error_status)
            .unwrap_or(0);
        let served = ctx.served_group.unwrap_or(decision.group);
        let elapsed = ctx.started.elapsed();
        state.metrics.record(
            served.0,
            decision.rule.map(|r| r.0),
            status,
            elapsed.as_secs_f64(),
        );
        let fell_back = served != decision.group;
        if fell_back {
            METRICS
                .fallbacks
                .with_label_values(&[router.group_name(decision.group), router.group_name(served)])
                .inc();
        }
        if let Some(log) = &self.access_log {
            let request = session.req_header();
            let host = request
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| request.uri.host())
                .unwrap_or("");
            let path = String::from_utf8_lossy(request.raw_path());
            let upstream_duration = ctx
                .upstream_started
                .zip(ctx.upstream_answered)
                .map(|(start, end)| end.saturating_duration_since(start));
            log.log(&AccessRecord {
                ts: std::time::SystemTime::now(),
                request_id: ctx.id(),
                client_ip: ctx
                    .client_ip_value
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default(),
                method: request.method.as_str(),
                host,
                path: &path,
                status,
                group: router.group_name(served),
                rule: router.rule_name(decision),
                reason: if fell_back {
                    "fallback"
                } else {
                    decision.reason.as_str()
                },
                upstream: ctx.upstream_addr,
                bytes_sent: session.body_bytes_sent(),
                duration: elapsed,
                upstream_duration,
            });
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.in_flight.is_closing() {
            session.set_keepalive(None);
        }
        upstream_response.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        if let Some((state, decision)) = ctx.state.as_ref().zip(ctx.decision.as_ref()) {
            if let Some(name) = &state.decision_header {
                let router = &state.router;
                let served = ctx.served_group.unwrap_or(decision.group);
                if let (true, Some(value)) =
                    (served == decision.group, state.group_values.get(served.0))
                {
                    upstream_response.insert_header(name.clone(), value.clone())?;
                } else {
                    let value = format!(
                        "{}; reason=fallback; from={}",
                        router.group_name(served),
                        router.group_name(decision.group)
                    );
                    upstream_response.insert_header(name.clone(), value)?;
                }
            }
        }
        Ok(())
    }
}

impl RequestCtx {
    /// The request id as text, for logs (it is always ASCII).
    fn id(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }

    fn served_group_name(&self) -> Option<&str> {
        let state = self.state.as_ref()?;
        Some(state.router.group_name(self.served_group?))
    }
}

/// The client address: `peer`, or when `peer` is a trusted proxy, the right-most
/// `X-Forwarded-For` address that is not (the left-most one when all are trusted).
fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let lines: Vec<&HeaderValue> = headers.get_all(X_FORWARDED_FOR).iter().collect();
    for line in lines.iter().rev() {
        let Ok(line) = line.to_str() else {
            return client;
        };
        for hop in line.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !is_trusted(ip) {
                        return ip;
                    }
                }
                // An unparsable hop ends the trusted chain; keep the last good address.
                Err(_) => return client,
            }
        }
    }
    client
}

/// Rejects requests whose framing is ambiguous, so nothing ambiguous reaches an origin:
/// HTTP/1.1 without `Host`, `Content-Length` together with `Transfer-Encoding`; and bodies
/// announced over the size limit.
fn check_framing(request: &RequestHeader, ctx: &RequestCtx) -> Result<()> {
    let headers = &request.headers;
    if request.version == http::Version::HTTP_11 && !headers.contains_key(http::header::HOST) {
        return Err(bad_request("HTTP/1.1 request without Host"));
    }
    if headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.contains_key(http::header::CONTENT_LENGTH)
    {
        return Err(bad_request("both Content-Length and Transfer-Encoding"));
    }
    let limit = ctx
        .state
        .as_ref()
        .map_or(u64::MAX, |s| s.limits.max_body_bytes);
    let announced = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit) {
        return Err(Error::explain(
            ErrorType::HTTPStatus(413),
            "request body over the limit",
        ));
    }
    Ok(())
}

/// Whether a request carries a body (a non-zero Content-Length or any Transfer-Encoding).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The status the client gets for a failed request: 504 for upstream timeouts, 502 for other
/// upstream failures, 503 when no server is healthy, 400 for bad requests, 0 when the client
/// is gone.
fn error_status(e: &Error) -> u16 {
    use pingora_core::ErrorSource;
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if matches!(e.esource(), ErrorSource::Upstream) =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                ErrorType::ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

fn error_text(code: u16) -> &'static str {
    http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// `X-Forwarded-For` as nginx's `$proxy_add_x_forwarded_for` builds it: the client's values (all
/// header lines, joined with ", ") with the peer's address appended.
fn forwarded_for(headers: &HeaderMap, peer: Option<HeaderValue>) -> Option<HeaderValue> {
    let mut lines = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .peekable();
    if lines.peek().is_none() {
        // The common case: no proxy in front, the value is the peer's address as it is.
        return peer;
    }
    let mut value = String::new();
    for line in lines.chain(peer.as_ref().and_then(|p| p.to_str().ok())) {
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(line);
    }
    HeaderValue::from_str(&value).ok()
}

/// An address as header text, written without the formatting machinery (see `text`).
fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut text = Vec::with_capacity(15);
    crate::text::push_ip(&mut text, ip);
    HeaderValue::from_maybe_shared(Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_behind_trusted_proxies() {
        let trusted = [
            Cidr::parse("10.0.0.0/8").expect("cidr"),
            Cidr::parse("192.168.1.1").expect("cidr"),
        ];
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, "6.6.6.6, 203.0.113.5".parse().expect("v"));
        headers.append(X_FORWARDED_FOR, "10.1.1.1".parse().expect("v"));
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            client_ip(ip("198.51.100.9"), &headers, &trusted),
            ip("198.51.100.9")
        );
        // Through trusted hops, the right-most untrusted address; spoofed entries to its left are ignored.
        assert_eq!(
            client_ip(ip("192.168.1.1"), &headers, &trusted),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_ip(ip("10.9.9.9"), &HeaderMap::new(), &trusted),
            ip("10.9.9.9")
        );
        let mut all_trusted = HeaderMap::new();
        all_trusted.append(X_FORWARDED_FOR, "10.0.0.2, 10.0.0.3".parse().expect("v"));
        assert_eq!(
            client_ip(ip("10.0.0.4"), &all_trusted, &trusted),
            ip("10.0.0.2")
        );
        let mut garbage = HeaderMap::new();
        garbage.append(X_FORWARDED_FOR, "nonsense, 10.0.0.3".parse().expect("v"));
        assert_eq!(
            client_ip(ip("10.0.0.4"), &garbage, &trusted),
            ip("10.0.0.3")
        );
        assert_eq!(
            client_ip(ip("10.0.0.4"), &headers, &[]),
            ip("10.0.0.4"),
            "no trusted proxies"
        );
    }

    #[test]
    fn forwarded_for_appends_the_peer() {
        let peer = || Some(HeaderValue::from_static("192.0.2.7"));
        let mut headers = HeaderMap::new();
        assert_eq!(forwarded_for(&headers, peer()), peer());
        headers.append(X_FORWARDED_FOR, "10.0.0.1".parse().expect("value"));
        headers.append(
            X_FORWARDED_FOR,
            " 10.0.0.2, 10.0.0.3 ".parse().expect("value"),
        );
        headers.append(X_FORWARDED_FOR, "  ".parse().expect("value"));
        assert_eq!(
            forwarded_for(&headers, peer()),
            Some(HeaderValue::from_static(
                "10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7"
            ))
        );
        assert_eq!(
            forwarded_for(&headers, None),
            Some(HeaderValue::from_static("10.0.0.1, 10.0.0.2, 10.0.0.3"))
        );
        assert_eq!(forwarded_for(&HeaderMap::new(), None), None);
    }

    #[test]
    fn ip_values_are_the_address_text() {
        for text in ["127.0.0.1", "10.200.30.4", "2001:db8::7"] {
            let ip: IpAddr = text.parse().expect("ip");
            assert_eq!(ip_value(ip), text);
        }
    }
}
