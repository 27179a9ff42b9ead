//! The Pingora `ProxyHttp` implementation. Each hook is a few named steps: `request_filter`
//! runs the request's steps once (`steps`: identify, match route, check policy, decide,
//! rewrite); the later hooks read the decision from the per-request context, pick a server
//! through the one fallback walk in `upstreams`, and set the forwarding headers.
//!
//! Above `state` (it reads the live [`GatewayState`]); below `ops`, which hands it an access
//! log through the [`RequestLog`] interface.

mod access;
mod compress;
pub(crate) mod connections;
mod ctx;
mod errors;
mod forwarding;
mod grpc;
pub(crate) mod guard;
mod headers;
mod identity;
mod limits;
pub(crate) mod redirect;
pub(crate) mod request_id;
mod steps;
pub(crate) mod tls;
mod tunnel;
pub(crate) mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use log::warn;
use pingora_core::connectors::TransportConnector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

pub(crate) use ctx::{InFlight, RequestCtx};
pub(crate) use errors::http_response;
use errors::{check_framing, error_status, has_body, send_error_response};
use request_id::X_REQUEST_ID;

use crate::config::ErrorPage;
use crate::routing::access::Refusal;
use crate::routing::IdSource;
use crate::state::metrics::{self, METRICS};
use crate::state::GatewayState;
use crate::upstreams::{self, HostHeader};

/// One request, as logged: one JSON object per line.
pub(crate) struct AccessRecord<'a> {
    pub(crate) ts: SystemTime,
    pub(crate) request_id: &'a str,
    pub(crate) client_ip: &'a str,
    pub(crate) method: &'a str,
    pub(crate) host: &'a str,
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    pub(crate) route: &'a str,
    pub(crate) group: &'a str,
    pub(crate) rule: &'a str,
    pub(crate) reason: &'a str,
    /// Which identity source gave the user id (`cookie`, …, `none`; empty when not decided).
    pub(crate) identity: &'a str,
    /// The user id, only with `access_log.user_id: true`.
    pub(crate) user_id: Option<&'a str>,
    /// The TLS version (`TLSv1.3`), `None` over plaintext.
    pub(crate) tls_version: Option<&'a str>,
    /// The protocol ALPN chose (`h2`, `http/1.1`), `None` over plaintext. A TLS client that
    /// offers no ALPN speaks HTTP/1.1 and is logged as `http/1.1`.
    pub(crate) alpn: Option<&'a str>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) bytes_sent: usize,
    pub(crate) duration: Duration,
    pub(crate) upstream_duration: Option<Duration>,
    /// The call's `grpc-status`, for gRPC requests that got one.
    pub(crate) grpc_status: Option<u16>,
}

/// Where the proxy sends a record of each request (the access log, in `ops`).
pub(crate) trait RequestLog: Send + Sync {
    /// Queues one record; must not block.
    fn log(&self, record: &AccessRecord<'_>);
}

/// The gateway's proxy logic.
pub(crate) struct CanaryProxy {
    state: Arc<ArcSwap<GatewayState>>,
    in_flight: InFlight,
    access_log: Option<Arc<dyn RequestLog>>,
    /// Connections for upgrade tunnels (Pingora's own pool serves every other request).
    tunnels: TransportConnector,
}

impl CanaryProxy {
    pub(crate) fn new(
        state: Arc<ArcSwap<GatewayState>>,
        in_flight: InFlight,
        access_log: Option<Arc<dyn RequestLog>>,
    ) -> Self {
        CanaryProxy {
            state,
            in_flight,
            access_log,
            tunnels: TransportConnector::new(None),
        }
    }
}

/// Upper bound on connection attempts for one request (each to another server or group).
const MAX_CONNECT_TRIES: usize = 8;

#[async_trait]
impl ProxyHttp for CanaryProxy {
    /// Boxed: Pingora moves each request's future twice per request, and the context (about
    /// 400 bytes) inline in it was copied each time and held by every parked connection.
    type CTX = Box<RequestCtx>;

    /// No downstream modules: Pingora's default adds a (disabled) compression module whose
    /// filters would still run on every request; the routes that set `compress` are served by
    /// `compress` from `response_filter` and `response_body_filter` instead.
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx::new(&self.in_flight))
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        let limits = &self.state.load().limits;
        // Bounds each read of the body; request_body_filter bounds the whole body.
        session.set_read_timeout(Some(limits.body_timeout));
        // Bounds each wait for the client to take response bytes: an HTTP/1.1 connection is
        // closed, an HTTP/2 stream reset (the stream's flow-control window, not the socket,
        // is what a stalled HTTP/2 client holds shut).
        session.set_write_timeout(Some(limits.head.send_timeout));
        guard::keep_alive_for(session, &limits.head);
        // Serve pipelined requests in order, each routed on its own (RFC 9112 §9.3.2), rather
        // than dropping the later ones.
        session.set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<bool> {
        // An ACME HTTP-01 validation of a pending order is answered on any listener, before
        // routing: the CA asks for the name being validated, which may have no route yet.
        if session
            .req_header()
            .uri
            .path()
            .starts_with(crate::config::acme::HTTP01_PREFIX)
        {
            if let Some(answer) =
                crate::config::acme::http01_answer(session.req_header().uri.path())
            {
                let mut head = pingora_http::ResponseHeader::build(200, Some(2))?;
                head.insert_header(http::header::CONTENT_TYPE, "application/octet-stream")?;
                head.set_content_length(answer.len())?;
                session.write_response_header(Box::new(head), false).await?;
                session
                    .write_response_body(Some(bytes::Bytes::from(answer)), true)
                    .await?;
                return Ok(true);
            }
        }
        let state = self.state.load_full();
        let limits = state.limits;
        let paused = steps::route(session, ctx, state)?;
        let counted = paused.is_some();
        if let Some(paused) = paused {
            // Rate limits first, as nginx's limit_req runs before auth_basic: a client guessing
            // passwords is held to the limit before each slow password check.
            if limits::refused(session, ctx).await? {
                return Ok(true);
            }
            // Only for credentials not verified yet: boxed, so the common path's future stays small.
            Box::pin(steps::verify_and_resume(session, ctx, paused)).await?;
        }
        // The maintenance switch: one `Option` check for a route in service.
        if let Some(retry_after) = ctx.route_state().and_then(|r| r.maintenance.clone()) {
            if steps::in_maintenance(ctx) {
                ctx.error_status = Some(503);
                ctx.maintenance = true;
                let page = ctx
                    .error_page(503)
                    .or_else(|| Some(MAINTENANCE_PAGE.clone()));
                let retry_after = Some((http::header::RETRY_AFTER, retry_after));
                send_error_response(session, 503, &ctx.request_id, ctx.id(), retry_after, page)
                    .await;
                return Ok(true);
            }
        }
        check_framing(session.req_header(), limits.max_body_bytes)?;
        if !counted && limits::refused(session, ctx).await? {
            return Ok(true);
        }
        if session.is_upgrade_req() && forwarding::is_websocket_upgrade(session.req_header()) {
            let closing = self.in_flight.is_closing();
            // Boxed: the tunnel's future is large, and inline it would enlarge (and cost)
            // every request's `request_filter` future.
            Box::pin(tunnel::serve(
                &self.tunnels,
                session,
                ctx,
                limits.tunnel_idle_timeout,
                closing,
            ))
            .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        let received = body.as_ref().map_or(0, |b| b.len() as u64);
        check_body(session, ctx, received)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Box<HttpPeer>> {
        let (mut peer, gate) = next_peer(ctx)?;
        if let Some(gate) = gate {
            // Released once Pingora has a stream for the request (`connected_to_upstream`),
            // or when the connection fails; closed only if the pool is gone, then no wait.
            ctx.connect_permit = gate.acquire_owned().await.ok();
        }
        // A gRPC client's deadline bounds the wait for the origin when it is the shorter one:
        // past it, the client gets DEADLINE_EXCEEDED from the gateway (and the origin's
        // stream is reset) rather than a late answer it no longer wants.
        if let Some(deadline) = grpc::timeout(session.req_header()) {
            let left = deadline
                .saturating_sub(ctx.started.elapsed())
                .max(Duration::from_millis(1));
            if peer.options.read_timeout.is_none_or(|read| left < read) {
                peer.options.read_timeout = Some(left);
            }
        }
        Ok(peer)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        ctx.connect_permit = None;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Box<RequestCtx>,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.connect_permit = None;
        let retry = connect_failed(ctx, peer);
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Box<RequestCtx>,
        _client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let retry = may_resend(ctx, session.req_header(), &e);
        if retry {
            ctx.resend_retries += 1;
            ctx.resend_failed = peer._address.as_inet().copied();
        }
        count_retry(ctx, retry, false);
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Box<RequestCtx>,
    ) -> FailToProxy {
        let code = error_status(e);
        ctx.error_status = Some(code);
        if code > 0 {
            let challenge = challenge(ctx, code);
            let page = ctx.error_page(code);
            send_error_response(session, code, &ctx.request_id, ctx.id(), challenge, page).await;
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
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        let tls = session
            .digest()
            .is_some_and(|digest| digest.ssl_digest.is_some());
        forwarding::set_forwarding_headers(
            upstream_request,
            &ctx.client,
            tls,
            &ctx.request_id,
            upstream_decision(ctx),
        )?;
        rewrite_for_upstream(upstream_request, ctx)
    }

    fn upstream_response_trailer_filter(
        &self,
        _session: &mut Session,
        trailers: &mut http::HeaderMap,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        ctx.grpc_status = grpc::status_of(trailers.get("grpc-status"));
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        ctx.upstream_answered.get_or_insert_with(Instant::now);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<()> {
        // `intercept_errors`: one `Option` check for a route without error pages. A replaced
        // response is the page as it is, never compressed.
        if let Some(pages) = ctx.route_state().and_then(|r| r.error_pages.as_ref()) {
            if pages.intercept {
                if let Some(page) = pages.get(upstream_response.status.as_u16()) {
                    let page = page.clone();
                    replace_with_page(upstream_response, &page)?;
                    ctx.replacing_body = Some(page);
                }
            }
        }
        if ctx.replacing_body.is_none() {
            if let Some(config) = ctx.route_state().and_then(|r| r.compress.clone()) {
                ctx.compress = compress::start(&config, session.req_header(), upstream_response)?;
            }
        }
        identity::set_visitor_cookie(upstream_response, ctx)?;
        set_response_headers(session, upstream_response, ctx, self.in_flight.is_closing())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Box<RequestCtx>,
    ) -> Result<Option<Duration>> {
        if let Some(page) = &ctx.replacing_body {
            // The origin's body is discarded; the page goes out once, at its end.
            *body = end_of_stream.then(|| page.body.clone());
            if end_of_stream {
                ctx.replacing_body = None;
            }
        } else if let Some(encoder) = ctx.compress.as_mut() {
            encoder.encode(body, end_of_stream)?;
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Box<RequestCtx>) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.error_status)
            .unwrap_or(0);
        let elapsed = ctx.started.elapsed();
        let grpc_status = grpc_status(session, ctx);
        if let (Some(code), Some(route)) = (grpc_status, ctx.route_state()) {
            let group = match (&ctx.state, ctx.served_group) {
                (Some(state), Some(group)) if !ctx.rate_limited => state.group_name(group),
                _ => "",
            };
            METRICS
                .grpc_responses
                .with_label_values(&[&route.name, group, &code.to_string()])
                .inc();
        }
        match (ctx.route_state(), ctx.decision.as_ref()) {
            // A rate limit refused the request (429): as an access refusal, by route and
            // status only, since no group served it (nor is it in a group's latency or figures).
            // So is a route in maintenance (503).
            (Some(route), _) if ctx.rate_limited || ctx.maintenance => {
                metrics::record_refused(&route.name, status)
            }
            (Some(route), Some(decision)) => {
                let served = ctx.served_group.unwrap_or(decision.group);
                route.metrics.record(
                    served.0,
                    decision.group.0,
                    decision.rule.map(|r| r.0),
                    status,
                    elapsed.as_secs_f64(),
                );
                if served != decision.group {
                    if let Some(state) = &ctx.state {
                        METRICS
                            .fallbacks
                            .with_label_values(&[
                                &route.name,
                                state.group_name(decision.group),
                                state.group_name(served),
                            ])
                            .inc();
                    }
                }
            }
            // The route's access control refused the request (403, 401).
            (Some(route), None) if ctx.refused.is_some() => {
                metrics::record_refused(&route.name, status)
            }
            // Routing itself answered: no route (404) or a path above `/` (400).
            _ if ctx.state.is_some() => metrics::record_unrouted(status),
            _ => return,
        }
        if let Some(log) = &self.access_log {
            log_request(log.as_ref(), session, ctx, status, elapsed, grpc_status);
        }
    }
}

/// What the decision changes in the request's headers on the way upstream, run inside the
/// forwarding headers' one edit of the map: none of the headers the route's header rules read
/// (a QA override and its secret, a lane, stay at the gateway), and the served group in
/// `routing.upstream_header` (any value the client sent replaced). No name or value is built
/// per request: the names are the route's, the value the group's, both made at load.
pub(super) fn upstream_decision(
    ctx: &RequestCtx,
) -> impl FnOnce(&mut http::HeaderMap) -> std::result::Result<(), http::header::MaxSizeReached> + '_
{
    move |headers| {
        let (Some(state), Some(route)) = (&ctx.state, ctx.route_state()) else {
            return Ok(());
        };
        for header in route.override_headers.iter() {
            headers.remove(header);
        }
        if let Some(name) = &route.upstream_header {
            let value = ctx
                .served_group
                .and_then(|group| state.group_values.get(group.0))
                .cloned();
            headers::set_or_remove(headers, name.clone(), value)?;
        }
        Ok(())
    }
}

/// What the route and the serving group change in the request the upstream gets: the path
/// without the route's prefix (`strip_prefix`), no `Authorization` when the route checked
/// basic credentials, and the group's `host_header`.
fn rewrite_for_upstream(request: &mut RequestHeader, ctx: &RequestCtx) -> Result<()> {
    if let Some(target) = &ctx.upstream_target {
        request.set_uri(http::Uri::clone(target));
    }
    if ctx.strip_authorization {
        request.remove_header(&http::header::AUTHORIZATION);
    }
    let (Some(state), Some(group)) = (&ctx.state, ctx.served_group) else {
        return Ok(());
    };
    match state.pools.get(group.0).map(|p| &p.config.host_header) {
        Some(HostHeader::Server) => {
            if let Some(addr) = ctx.upstream_addr {
                request.insert_header(http::header::HOST, addr.to_string())?;
            }
        }
        Some(HostHeader::Name(name)) => request.insert_header(http::header::HOST, name.clone())?,
        Some(HostHeader::Client) | None => {}
    }
    Ok(())
}

/// Counts a piece of the request body against the limits: 413 over `max_body_bytes`, 408 once
/// the body deadline (`body_timeout` from the end of the head) has passed. Each read may take
/// only what is left of the deadline, so a client that trickles bytes is cut off on time.
fn check_body(session: &mut Session, ctx: &mut RequestCtx, received: u64) -> Result<()> {
    let Some(state) = &ctx.state else {
        return Ok(());
    };
    ctx.body_bytes += received;
    if ctx.body_bytes > state.limits.max_body_bytes {
        return Err(Error::explain(
            ErrorType::HTTPStatus(413),
            "request body over the limit",
        ));
    }
    let left = state
        .limits
        .body_timeout
        .saturating_sub(ctx.started.elapsed());
    if left.is_zero() {
        return Err(Error::explain(
            ErrorType::HTTPStatus(408),
            "request body took too long",
        ));
    }
    session.set_read_timeout(Some(left));
    Ok(())
}

/// Whether a request that failed after it was sent may be sent again: once, and only when
/// repeating it is harmless (RFC 9110 §9.2.2) and there is no body to replay. A timeout is not
/// retried: the client gets its 504 on time. This is the only retry after a request was sent,
/// and it never follows a request body (`has_body`) or an upgrade (upgrades never reach
/// Pingora's loop: `tunnel` sends each handshake once), so no byte of a body or of a tunnel is
/// ever sent upstream twice.
fn may_resend(ctx: &RequestCtx, request: &RequestHeader, e: &Error) -> bool {
    ctx.resend_retries == 0
        // An HTTP/2 request's body has no length header: what was read of it says it has one.
        && ctx.body_bytes == 0
        && !matches!(e.esource(), pingora_core::ErrorSource::Downstream)
        && request.method.is_idempotent()
        && !has_body(&request.headers)
        && !matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        )
}

/// The next server for the request: the fallback walk over the decided group, skipping servers
/// that failed this request, with the server's connect gate when its group has one. Used for
/// every connection attempt, upgrades included.
fn next_peer(ctx: &mut RequestCtx) -> Result<(Box<HttpPeer>, Option<Arc<tokio::sync::Semaphore>>)> {
    let (state, decision) = ctx.routed()?;
    let key = ctx.client.user.as_deref().unwrap_or_default();
    let picked = upstreams::pick(
        &state.pools,
        decision.group,
        key,
        &ctx.failed_servers,
        ctx.resend_failed,
    )
    .map(|pick| {
        let gate = pick.pool.connect_gate(pick.addr).cloned();
        (pick.group, pick.addr, pick.pool.peer(pick.addr), gate)
    });
    let Some((group, addr, peer, gate)) = picked else {
        return Err(no_server(ctx));
    };
    ctx.served_group = Some(group);
    ctx.upstream_addr = Some(addr);
    ctx.count_on(group, addr);
    ctx.upstream_started.get_or_insert_with(Instant::now);
    Ok((Box::new(peer), gate))
}

/// Records a server that refused (or timed out) a connection; whether to try another. Nothing
/// was sent to it, so another server is safe for any method.
fn connect_failed(ctx: &mut RequestCtx, peer: &HttpPeer) -> bool {
    if let Some(addr) = peer._address.as_inet() {
        ctx.failed_servers.push(*addr);
    }
    let retry = ctx.failed_servers.len() < MAX_CONNECT_TRIES;
    count_retry(ctx, retry, true);
    retry
}

/// The headers the gateway adds to every response: the request id and the decision; and
/// `Connection: close` while the process hands over to a new one.
fn set_response_headers(
    session: &mut Session,
    response: &mut ResponseHeader,
    ctx: &RequestCtx,
    closing: bool,
) -> Result<()> {
    if closing {
        session.set_keepalive(None);
    }
    let hsts = hsts(session, ctx);
    let decision = decision_header(ctx);
    headers::edit_response(response, 3, |headers| {
        headers.try_insert(X_REQUEST_ID, ctx.request_id.clone())?;
        if let Some(hsts) = hsts {
            headers.try_insert(http::header::STRICT_TRANSPORT_SECURITY, hsts)?;
        }
        if let Some((name, value)) = decision {
            headers.try_insert(name, value)?;
        }
        Ok(())
    })
}

/// The page a route in maintenance answers when it has no 503 page of its own.
static MAINTENANCE_PAGE: std::sync::LazyLock<Arc<ErrorPage>> = std::sync::LazyLock::new(|| {
    Arc::new(ErrorPage {
        body: Bytes::from_static(
            b"<!doctype html>\n<html><head><title>Down for maintenance</title></head>\n<body><h1>Down for maintenance</h1><p>This service is down for maintenance. Please try again later.</p></body></html>\n",
        ),
        content_type: "text/html; charset=utf-8",
        file: String::new(),
    })
});

/// Turns the origin's response head into the error page's (`intercept_errors`): its type and
/// length, and none of the origin's body framing, encoding or validators.
fn replace_with_page(response: &mut ResponseHeader, page: &ErrorPage) -> Result<()> {
    for name in [
        http::header::CONTENT_ENCODING,
        http::header::TRANSFER_ENCODING,
        http::header::ETAG,
        http::header::LAST_MODIFIED,
        http::header::CONTENT_RANGE,
        http::header::ACCEPT_RANGES,
    ] {
        response.remove_header(&name);
    }
    response.insert_header(http::header::CONTENT_TYPE, page.content_type)?;
    response.insert_header(http::header::CONTENT_LENGTH, page.body.len())?;
    Ok(())
}

/// The `Strict-Transport-Security` value of the TLS listener that took the request, if it
/// sets one (plaintext requests never get it).
fn hsts(session: &Session, ctx: &RequestCtx) -> Option<HeaderValue> {
    let state = ctx.state.as_ref()?;
    if state.hsts.is_empty() {
        return None;
    }
    let digest = session.digest()?;
    digest.ssl_digest.as_ref()?;
    let port = digest
        .socket_digest
        .as_ref()?
        .local_addr()?
        .as_inet()?
        .port();
    state.hsts_for(port).cloned()
}

/// `WWW-Authenticate` for a `401` the route's basic authentication answered.
fn challenge(ctx: &RequestCtx, code: u16) -> Option<(HeaderName, HeaderValue)> {
    if code != 401 || ctx.refused != Some(Refusal::Credentials) {
        return None;
    }
    let basic = ctx.route_state()?.access.as_ref()?.basic()?;
    let value = HeaderValue::from_str(basic.challenge()).ok()?;
    Some((http::header::WWW_AUTHENTICATE, value))
}

/// The error for a request that no server can take: 503 when no server of the group (or its
/// fallbacks) is healthy, 502 when the healthy ones all refused a connection.
fn no_server(ctx: &RequestCtx) -> Box<Error> {
    let wanted = ctx
        .routed()
        .map(|(state, decision)| state.group_name(decision.group))
        .unwrap_or("?");
    if ctx.failed_servers.is_empty() {
        warn!("request {}: no healthy server for group {wanted}", ctx.id());
        Error::explain(ErrorType::HTTPStatus(503), "no healthy upstream server")
    } else {
        warn!(
            "request {}: no server of group {wanted} (or its fallbacks) accepted a connection",
            ctx.id()
        );
        Error::explain(
            ErrorType::HTTPStatus(502),
            "no upstream server accepted a connection",
        )
    }
}

/// Counts a failed connection (`connect`) and a retry, by the group that was being tried.
fn count_retry(ctx: &RequestCtx, retry: bool, connect: bool) {
    if let Some(group) = ctx.served_group_name() {
        if connect {
            METRICS.connect_errors.with_label_values(&[group]).inc();
        }
        if retry {
            METRICS.retries.with_label_values(&[group]).inc();
        }
    }
}

/// The decision header: the serving group's name, or after a fallback
/// `<served>; reason=fallback; from=<decided>`.
fn decision_header(ctx: &RequestCtx) -> Option<(HeaderName, HeaderValue)> {
    let (state, decision) = ctx.routed().ok()?;
    let name = state.decision_header.clone()?;
    let served = ctx.served_group.unwrap_or(decision.group);
    let value = match state.group_values.get(served.0) {
        Some(value) if served == decision.group => value.clone(),
        _ => {
            let value = format!(
                "{}; reason=fallback; from={}",
                state.group_name(served),
                state.group_name(decision.group)
            );
            HeaderValue::from_str(&value).ok()?
        }
    };
    Some((name, value))
}

/// The TLS version as OpenSSL and nginx name it (`TLSv1.3`); rustls says `TLSv1_3`.
fn tls_version_name(version: &str) -> &str {
    match version {
        "TLSv1_3" => "TLSv1.3",
        "TLSv1_2" => "TLSv1.2",
        other => other,
    }
}

/// Hands the request's record to the access log.
fn log_request(
    log: &dyn RequestLog,
    session: &Session,
    ctx: &RequestCtx,
    status: u16,
    elapsed: Duration,
    grpc_status: Option<u16>,
) {
    let Some(state) = &ctx.state else {
        return;
    };
    let route = ctx.route_state();
    let decision = ctx.decision.as_ref();
    let served = ctx.served_group.or(decision.map(|d| d.group));
    let request = session.req_header();
    let host = std::str::from_utf8(forwarding::request_host(request)).unwrap_or_default();
    let path = String::from_utf8_lossy(request.raw_path());
    let upstream_duration = ctx
        .upstream_started
        .zip(ctx.upstream_answered)
        .map(|(start, end)| end.saturating_duration_since(start));
    let tls = session.digest().and_then(|d| d.ssl_digest.as_ref());
    log.log(&AccessRecord {
        tls_version: tls.map(|t| tls_version_name(&t.version)),
        alpn: tls.map(|_| if session.is_http2() { "h2" } else { "http/1.1" }),
        ts: SystemTime::now(),
        request_id: ctx.id(),
        client_ip: ctx
            .client
            .ip_value
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default(),
        method: request.method.as_str(),
        host,
        path: &path,
        status,
        route: route.map_or(metrics::NO_ROUTE, |r| r.name.as_str()),
        group: match served {
            Some(g) if !ctx.rate_limited => state.group_name(g),
            _ => "",
        },
        rule: route.zip(decision).map_or("", |(r, d)| r.rule_name(d)),
        reason: match decision {
            _ if ctx.rate_limited => "rate_limited",
            Some(d) if served != Some(d.group) => "fallback",
            Some(d) => d.reason.as_str(),
            None => ctx.refused.map_or("no_route", Refusal::as_str),
        },
        identity: ctx.id_source.map_or("", IdSource::as_str),
        user_id: if state.log_user_id {
            ctx.client
                .user
                .as_deref()
                .map(|u| std::str::from_utf8(u).unwrap_or_default())
        } else {
            None
        },
        upstream: ctx.upstream_addr,
        bytes_sent: session.body_bytes_sent(),
        duration: elapsed,
        upstream_duration,
        grpc_status,
    });
}

/// The `grpc-status` a gRPC call ended with: the origin's trailers, else the head of a
/// trailers-only answer (the origin's or the gateway's own error). `None` for other requests.
fn grpc_status(session: &Session, ctx: &RequestCtx) -> Option<u16> {
    if !grpc::is_grpc(session.req_header()) {
        return None;
    }
    ctx.grpc_status.or_else(|| {
        let head = session.response_written()?;
        grpc::status_of(head.headers.get("grpc-status"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::ErrorSource;

    /// A request that failed after it was sent is sent again only when that is harmless: once,
    /// idempotent, without a body, not after a timeout, not for a client-side failure.
    #[test]
    fn resending_is_limited_to_harmless_requests() {
        let ctx = RequestCtx::new(&InFlight::default());
        let request = |method: &str, headers: &[(&str, &str)]| {
            let mut r = RequestHeader::build(method, b"/", None).expect("request");
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).expect("header");
            }
            r
        };
        let upstream = |etype| Error::create(etype, ErrorSource::Upstream, None, None);
        let reset = upstream(ErrorType::ConnectionClosed);
        assert!(may_resend(&ctx, &request("GET", &[]), &reset));
        assert!(
            may_resend(&ctx, &request("PUT", &[]), &reset),
            "PUT is idempotent"
        );
        assert!(!may_resend(&ctx, &request("POST", &[]), &reset));
        let with_body = request("GET", &[("content-length", "3")]);
        assert!(
            !may_resend(&ctx, &with_body, &reset),
            "a body is never replayed"
        );
        let chunked = request("PUT", &[("transfer-encoding", "chunked")]);
        assert!(!may_resend(&ctx, &chunked, &reset));
        let timeout = upstream(ErrorType::ReadTimedout);
        assert!(
            !may_resend(&ctx, &request("GET", &[]), &timeout),
            "504 on time"
        );
        let client_gone = Error::create(
            ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
            None,
            None,
        );
        assert!(!may_resend(&ctx, &request("GET", &[]), &client_gone));
        let mut again = RequestCtx::new(&InFlight::default());
        again.resend_retries = 1;
        assert!(
            !may_resend(&again, &request("GET", &[]), &reset),
            "at most once"
        );
    }
}
