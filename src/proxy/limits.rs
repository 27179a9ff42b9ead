//! The rate-limit step of `request_filter`: on a route with limits, counts the request by the
//! key each limit names (the client address `X-Real-IP` carries, the verified user, a header)
//! and answers 429 with `Retry-After` when one refuses; the request then never reaches an
//! origin. Routes without limits pay one `Option` check ([`refused`]).

use std::sync::Arc;

use pingora_core::Result;
use pingora_proxy::Session;

use super::ctx::RequestCtx;
use super::errors::{bad_request, no_decision, send_error_response};
use crate::routing::routes::normalize_path;
use crate::state::ratelimit::{retry_after_seconds, LimitFacts, LimitVerdict, RouteLimits};

/// Checks the route's rate limits, if it has any; `true` when the request was refused (the
/// 429 is sent). A route without limits pays one `Option` check here. The check itself is
/// boxed: its future (with a Redis step for shared limits) would otherwise enlarge every
/// request's future.
pub(super) async fn refused(session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
    match ctx.route_state().and_then(|r| r.limits.clone()) {
        None => Ok(false),
        Some(limits) => Box::pin(check(session, ctx, limits)).await,
    }
}

/// Checks `limits`; `true` when the request was refused (the 429 is sent). A request whose
/// credentials wait for their check (`access`) has no user id yet: a `user` limit counts it by
/// its client address.
async fn check(
    session: &mut Session,
    ctx: &mut RequestCtx,
    limits: Arc<RouteLimits>,
) -> Result<bool> {
    let state = ctx.state.clone().ok_or_else(no_decision)?;
    let mut path = Vec::new();
    if limits.by_path {
        normalize_path(session.req_header().raw_path(), &mut path)
            .map_err(|_| bad_request("the path climbs above /"))?;
    }
    let request = session.req_header();
    let facts = LimitFacts {
        path: &path,
        client_ip: ctx.client.ip,
        user: ctx.client.user.as_deref(),
        headers: &request.headers,
    };
    let verdict = limits
        .check(&facts, state.shared_limits.as_deref(), ctx.id())
        .await;
    match verdict {
        LimitVerdict::Admitted => Ok(false),
        LimitVerdict::Refused { retry_after, .. } => {
            ctx.error_status = Some(429);
            ctx.rate_limited = true;
            let seconds = retry_after_seconds(retry_after);
            let retry_after = (http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
            let page = ctx.error_page(429);
            send_error_response(
                session,
                429,
                &ctx.request_id,
                ctx.id(),
                Some(retry_after),
                page,
            )
            .await;
            Ok(true)
        }
    }
}
