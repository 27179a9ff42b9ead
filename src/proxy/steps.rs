//! `request_filter`'s steps, in order: **identify** the request (its id and client address),
//! **match** its route, **check** the route's policy, **decide** its group, **rewrite** what
//! the upstream gets. Each step reads what the ones before left in the [`RequestCtx`]; the
//! later hooks only read the context. A new per-request job is a new step here.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{HeaderMap, COOKIE};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::ctx::RequestCtx;
use super::{access, errors, forwarding, identity, request_id};
use crate::routing::routes::RouteId;
use crate::routing::{find_cookie, HeaderLookup, IdSource, RequestFacts, Router};
use crate::state::metrics::METRICS;
use crate::state::{GatewayState, RouteScratch};

/// Works out, once per request, what every later hook reads from the context: the request id,
/// the client, the route (404 when none matches), the access check (403, 401), the decision
/// and the upstream's target. `Ok(Some(_))`: the credentials must be checked first
/// ([`access::verify`]), then [`resume`] finishes the steps.
pub(super) fn route(
    session: &Session,
    ctx: &mut RequestCtx,
    state: Arc<GatewayState>,
) -> Result<Option<Box<Paused>>> {
    identify(session, ctx, &state);
    let request = session.req_header();
    let mut scratch = RouteScratch::default();
    let Some((route, prefix_len)) = match_route(&state, request, &mut scratch)? else {
        ctx.state = Some(state);
        return Err(Error::explain(
            ErrorType::HTTPStatus(404),
            "no route for this host and path",
        ));
    };
    ctx.route = Some(route);
    match check_policy(&state, route, request, ctx) {
        Ok(None) => {}
        Ok(Some(unverified)) => {
            ctx.state = Some(state);
            // Boxed: only this rare path pays for carrying the steps' state.
            return Ok(Some(Box::new(Paused {
                unverified,
                scratch,
                prefix_len,
            })));
        }
        Err(e) => {
            ctx.state = Some(state);
            return Err(e);
        }
    }
    decide(session, &state, route, ctx);
    rewrite(&state, route, &scratch, prefix_len, request, ctx)?;
    ctx.state = Some(state);
    Ok(None)
}

/// The steps stopped at the access check while credentials are verified: what the rest of
/// them needs.
pub(super) struct Paused {
    unverified: access::Unverified,
    scratch: RouteScratch,
    prefix_len: usize,
}

/// Finishes the steps after the credentials were verified: decide and rewrite.
pub(super) fn resume(
    session: &Session,
    ctx: &mut RequestCtx,
    scratch: &RouteScratch,
    prefix_len: usize,
) -> Result<()> {
    let (Some(state), Some(route)) = (ctx.state.clone(), ctx.route) else {
        return Err(errors::no_decision());
    };
    decide(session, &state, route, ctx);
    rewrite(
        &state,
        route,
        scratch,
        prefix_len,
        session.req_header(),
        ctx,
    )
}

/// Verifies the paused request's credentials off the event loop (a 401 when wrong), then
/// finishes its steps.
pub(super) async fn verify_and_resume(
    session: &Session,
    ctx: &mut RequestCtx,
    paused: Box<Paused>,
) -> Result<()> {
    let Paused {
        unverified,
        scratch,
        prefix_len,
    } = *paused;
    access::verify(unverified, ctx).await?;
    resume(session, ctx, &scratch, prefix_len)
}

/// Identify: the request id (the client's, when well formed, or a new one) and the client's
/// address (the peer, or `X-Forwarded-For` from a trusted proxy). The user id is read in
/// [`decide`], since each route names its own cookie and signing keys.
fn identify(session: &Session, ctx: &mut RequestCtx, state: &GatewayState) {
    let peer = session
        .client_addr()
        .and_then(|addr| addr.as_inet())
        .map(|addr| addr.ip());
    let headers = &session.req_header().headers;
    ctx.request_id = request_id::from_request(headers);
    ctx.client = forwarding::client(peer, headers, &state.trusted_proxies);
}

/// Match route: the route for the request's host (`Host`, or the target's authority) and path
/// (normalized into `scratch`), with the length of the matched prefix; `None` when no route
/// serves them; a path that climbs above `/` is a 400.
fn match_route(
    state: &GatewayState,
    request: &RequestHeader,
    scratch: &mut RouteScratch,
) -> Result<Option<(RouteId, usize)>> {
    if state.table.is_none() {
        return Ok(Some((RouteId(0), 0)));
    }
    state
        .find_route(
            forwarding::request_host(request),
            request.raw_path(),
            scratch,
        )
        .map_err(|_| errors::bad_request("the path climbs above /"))
}

/// Check the route's policy: its access control (an error ends the request with its status;
/// `Some` asks for the slow password check). A route without `access` pays one `Option` check.
/// Rate limits run after the decision, in `limits` (they may wait on Redis and count by user).
#[inline]
fn check_policy(
    state: &GatewayState,
    route: RouteId,
    request: &RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<Option<access::Unverified>> {
    match &state.routes[route.0].access {
        None => Ok(None),
        Some(policy) => access::check(policy, ctx.client.ip, &request.headers, ctx),
    }
}

/// Decide: the user id (from the route's cookie alone, or through its identity sources), the
/// request's facts, and the route's decision; the user id is kept for server selection when a
/// group picks servers by user, for rate limits by user and for the access log's `user_id`.
fn decide(session: &Session, state: &GatewayState, route: RouteId, ctx: &mut RequestCtx) {
    let request = session.req_header();
    let route_state = &state.routes[route.0];
    let router = &route_state.router;
    let head = Head(request);
    let (user, source) = match router.identity() {
        // The cookie alone: nothing is paid for the other sources.
        None => {
            let user = user_id(router, &request.headers);
            let source = if user.is_some() {
                IdSource::Cookie
            } else {
                IdSource::None
            };
            (user.map(Cow::Borrowed), source)
        }
        Some(sources) => {
            let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
            let resolved = identity::resolve(sources, router, &head, ctx, tls);
            for _ in 0..resolved.bad_signatures {
                METRICS.bad_signatures.inc();
            }
            route_state.metrics.count_jwt_invalid(resolved.jwt_invalid);
            (resolved.user, resolved.source)
        }
    };
    route_state.metrics.count_identity(source);
    ctx.id_source = Some(source);
    let facts = RequestFacts::new(&head)
        .with_method(request.method.as_str())
        .with_client(ctx.client.ip)
        .with_user(user.as_deref());
    ctx.decision = Some(router.decide(&facts));
    let limits_by_user = route_state.limits.as_ref().is_some_and(|l| l.by_user);
    if state.selects_by_user || limits_by_user || state.log_user_id {
        ctx.client.user = user.map(|u| Box::from(&*u));
    }
}

/// Rewrite: what the route changes in the request the upstream gets — with `strip_prefix`,
/// the target without the matched prefix, from the path normalized for the lookup.
fn rewrite(
    state: &GatewayState,
    route: RouteId,
    scratch: &RouteScratch,
    prefix_len: usize,
    request: &RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<()> {
    if state.routes[route.0].strip_prefix && prefix_len > 0 {
        let target = stripped_target(&scratch.path, prefix_len, request.raw_path())?;
        ctx.upstream_target = Some(Box::new(target));
    }
    Ok(())
}

/// Lets the router read Pingora's request head without knowing its type; nothing is copied.
struct Head<'a>(&'a RequestHeader);

impl HeaderLookup for Head<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.headers.get(name).map(|v| v.as_bytes())
    }

    fn single_header(&self, name: &str) -> Option<&[u8]> {
        let mut values = self.0.headers.get_all(name).into_iter();
        let first = values.next()?;
        values.next().is_none().then_some(first.as_bytes())
    }

    fn cookie(&self, name: &[u8]) -> Option<&[u8]> {
        let values = self.0.headers.get_all(COOKIE).into_iter();
        find_cookie(values.map(|v| v.as_bytes()), name)
    }

    fn target(&self) -> Option<&[u8]> {
        Some(self.0.raw_path())
    }
}

/// The verified user id from the routing cookie; a bad signature is counted and treated as
/// anonymous.
fn user_id<'a>(router: &Router, headers: &'a HeaderMap) -> Option<&'a [u8]> {
    let cookies = headers.get_all(COOKIE).into_iter().map(|v| v.as_bytes());
    match router.user_from_cookies_checked(cookies) {
        Ok(user) => user,
        Err(_) => {
            METRICS.bad_signatures.inc();
            None
        }
    }
}

/// The target without the first `prefix_len` bytes of the normalized path (the matched route
/// prefix), always starting with `/`, the query of the `raw` target kept: `/api/x?q` with
/// `/api/` → `/x?q`.
fn stripped_target(normalized: &[u8], prefix_len: usize, raw: &[u8]) -> Result<http::Uri> {
    let rest = normalized.get(prefix_len..).unwrap_or_default();
    let mut target = Vec::with_capacity(rest.len() + 1);
    if !rest.starts_with(b"/") {
        target.push(b'/');
    }
    target.extend_from_slice(rest);
    if let Some(query) = raw.iter().position(|&b| b == b'?') {
        target.extend_from_slice(&raw[query..]);
    }
    http::Uri::try_from(target)
        .map_err(|_| Error::explain(ErrorType::InternalError, "stripped target is not a URI"))
}

/// Whether a request of a route in maintenance is answered 503: every request but those the
/// route's QA override (a `header` rule) sends to its group, and those not decided yet.
pub(super) fn in_maintenance(ctx: &RequestCtx) -> bool {
    !ctx.decision
        .as_ref()
        .is_some_and(|d| d.reason == crate::routing::Reason::Header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::routes::normalize_path;

    #[test]
    fn prefixes_are_stripped_from_the_normalized_path() {
        let strip = |raw: &str, len| {
            let mut normalized = Vec::new();
            normalize_path(raw.as_bytes(), &mut normalized).expect("normal path");
            stripped_target(&normalized, len, raw.as_bytes())
                .expect("uri")
                .to_string()
        };
        assert_eq!(strip("/api/x?q=1", 5), "/x?q=1");
        assert_eq!(strip("/api/x", 4), "/x");
        assert_eq!(strip("/api", 4), "/");
        assert_eq!(strip("/api/", 5), "/");
        assert_eq!(strip("/x/../api/y", 5), "/y");
    }
}
