//! WebSocket upgrades proxied by the gateway itself instead of Pingora's proxy
//! loop: the handshake goes to one server picked by the same fallback walk, the origin's answer
//! comes back, and after a `101` the two connections are spliced until either side closes or
//! nothing has moved either way for `tunnel_idle_timeout`.
//!
//! Why not Pingora's loop (0.9): it tears a tunnel down when the origin's `101` is read before
//! the upgrade request's empty body has been handed over (cloudflare/pingora#946: a reset right
//! after the handshake, more often on a busy machine); it counts tunnel bytes against the
//! request-body limits; it may retry a broken tunnel, replaying the client's frames to a new
//! connection; and its per-read timeouts close a quiet socket after the body timeout. Here a
//! request is sent upstream once: a server that refuses the connection is replaced (nothing was
//! sent), and once the handshake has been written nothing is ever sent again.

use std::time::{Duration, Instant};

use log::{debug, warn};
use pingora_core::connectors::TransportConnector;
use pingora_core::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::ctx::RequestCtx;
use super::errors::{bad_request, has_body};
use super::{
    connect_failed, forwarding, next_peer, rewrite_for_upstream, set_response_headers,
    upstream_decision,
};

/// How a tunnel ended, for the log.
#[derive(Debug, PartialEq, Eq)]
enum Closed {
    Client,
    Origin,
    Idle,
}

/// Serves an upgrade request from handshake to close. `Err` only before anything was written
/// to the client (the caller answers with an error status); once the origin's answer is on its
/// way, failures end the connection and are logged.
pub(super) async fn serve(
    connector: &TransportConnector,
    session: &mut Session,
    ctx: &mut RequestCtx,
    idle: Duration,
    closing: bool,
) -> Result<()> {
    // An upgrade handshake has no body (RFC 6455 §4.1); one with a body would have to be
    // forwarded before the switch, which nothing here relays.
    if has_body(&session.req_header().headers) {
        return Err(bad_request("an upgrade request with a body"));
    }
    let mut request = session.req_header().clone();
    forwarding::sanitize_websocket_request(&mut request)?;
    let mut upstream = connect(connector, ctx).await?;
    // After the connection: the serving group (and its `host_header`) is known only now.
    let tls = session
        .digest()
        .is_some_and(|digest| digest.ssl_digest.is_some());
    forwarding::set_forwarding_headers(
        &mut request,
        &ctx.client,
        tls,
        &ctx.request_id,
        upstream_decision(ctx),
    )?;
    rewrite_for_upstream(&mut request, ctx)?;
    // From here on the handshake may have reached the origin: nothing is retried.
    upstream
        .write_request_header(Box::new(request))
        .await
        .map_err(|e| e.into_up())?;
    upstream.read_response().await.map_err(|e| e.into_up())?;
    ctx.upstream_answered.get_or_insert_with(Instant::now);
    let mut response: ResponseHeader = upstream
        .resp_header()
        .cloned()
        .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no response header"))?;
    set_response_headers(session, &mut response, ctx, closing)?;
    if upstream.was_upgraded() {
        session
            .write_response_header(Box::new(response), false)
            .await?;
        upstream.maybe_upgrade_body_writer();
        // The tunnel's only bound is its idle time: no per-read timeouts on either side.
        session.set_read_timeout(None);
        upstream.read_timeout = None;
        let closed = splice(session, &mut upstream, idle).await;
        debug!("request {}: tunnel closed ({closed:?})", ctx.id());
    } else {
        relay(session, &mut upstream, response, ctx).await;
    }
    Ok(())
}

/// A connection to a server of the decided group (or its fallbacks); a server that refuses is
/// marked failed for this request and the next one is tried, as for any other request.
async fn connect(connector: &TransportConnector, ctx: &mut RequestCtx) -> Result<UpstreamSession> {
    loop {
        let (mut peer, _) = next_peer(ctx)?;
        // A tunnel is an HTTP/1.1 upgrade, also to a group that speaks h2 to its servers.
        peer.options.set_http_version(1, 1);
        match connector.new_stream(&*peer).await {
            Ok(stream) => {
                let mut upstream = UpstreamSession::new_with_options(stream, &*peer);
                upstream.read_timeout = peer.options.read_timeout;
                upstream.write_timeout = peer.options.write_timeout;
                return Ok(upstream);
            }
            Err(mut e) => {
                e.as_up();
                if !connect_failed(ctx, &peer) {
                    return Err(e);
                }
                warn!("request {}: upgrade: {e}; trying another server", ctx.id());
            }
        }
    }
}

/// The origin refused the upgrade: its answer is passed on as it is.
async fn relay(
    session: &mut Session,
    upstream: &mut UpstreamSession,
    response: ResponseHeader,
    ctx: &RequestCtx,
) {
    let relayed = async {
        session
            .write_response_header(Box::new(response), false)
            .await?;
        while let Some(bytes) = upstream.read_body_bytes().await? {
            session.write_response_body(Some(bytes), false).await?;
        }
        session.write_response_body(None, true).await
    }
    .await;
    if let Err(e) = relayed {
        warn!("request {}: relaying the refused upgrade: {e}", ctx.id());
        session.set_keepalive(None);
    }
}

/// Moves bytes both ways until either side closes or fails, or nothing moved for `idle`.
async fn splice(session: &mut Session, upstream: &mut UpstreamSession, idle: Duration) -> Closed {
    loop {
        // Re-armed on every pass, so traffic either way keeps the tunnel open.
        tokio::select! {
            read = session.read_request_body() => match read {
                Ok(Some(bytes)) => {
                    if upstream.write_body(&bytes).await.is_err() {
                        return Closed::Origin;
                    }
                }
                Ok(None) | Err(_) => {
                    let _ = upstream.finish_body().await;
                    return Closed::Client;
                }
            },
            read = upstream.read_body_bytes() => match read {
                Ok(Some(bytes)) => {
                    if session.write_response_body(Some(bytes), false).await.is_err() {
                        return Closed::Client;
                    }
                }
                Ok(None) | Err(_) => {
                    let _ = session.write_response_body(None, true).await;
                    return Closed::Origin;
                }
            },
            _ = tokio::time::sleep(idle) => return Closed::Idle,
        }
    }
}
