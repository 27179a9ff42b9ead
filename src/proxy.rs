//! The Pingora `ProxyHttp` implementation. Each hook is thin: `request_filter` collects the
//! request's facts and calls `routing::decide()` once; the other hooks read the decision from
//! the per-request context.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::header::{HeaderMap, COOKIE};
use log::warn;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::LoadBalancer;
use pingora_proxy::{ProxyHttp, Session};

use crate::config::GatewayConfig;
use crate::request_id;
use crate::routing::{Decision, HeaderLookup, Router};

/// Everything a request needs to be routed, swapped as a whole when the configuration changes.
/// A request keeps the snapshot it started with until it ends.
pub struct GatewayState {
    pub router: Arc<Router>,
    /// One pool per group, indexed by `GroupId`.
    pub pools: Vec<Arc<LoadBalancer<RoundRobin>>>,
    /// Response header naming the chosen group, if enabled.
    pub decision_header: Option<http::HeaderName>,
}

impl GatewayState {
    /// Builds the runtime state from a validated configuration.
    pub fn from_config(config: &GatewayConfig) -> std::io::Result<Self> {
        let pools = config
            .groups
            .iter()
            .map(|group| LoadBalancer::try_from_iter(group.servers.iter().copied()).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        let decision_header = config
            .decision_header
            .as_deref()
            .map(|name| http::HeaderName::from_bytes(name.as_bytes()))
            .transpose()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(GatewayState {
            router: config.router.clone(),
            pools,
            decision_header,
        })
    }
}

/// The gateway's proxy logic.
pub struct CanaryProxy {
    state: Arc<ArcSwap<GatewayState>>,
}

impl CanaryProxy {
    pub fn new(state: Arc<ArcSwap<GatewayState>>) -> Self {
        CanaryProxy { state }
    }
}

/// Per-request context: the state snapshot, the decision and the request id.
#[derive(Default)]
pub struct RequestCtx {
    state: Option<Arc<GatewayState>>,
    decision: Option<Decision>,
    request_id: String,
}

const X_REQUEST_ID: &str = "x-request-id";
const X_REAL_IP: &str = "x-real-ip";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";

/// Lets the router read Pingora's request headers without knowing their type.
struct Headers<'a>(&'a HeaderMap);

impl HeaderLookup for Headers<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(|v| v.as_bytes())
    }
}

/// The error returned when a hook runs before `request_filter` made its decision; a bug, but
/// one that must fail the request, not the process.
fn no_decision() -> Box<Error> {
    Error::explain(ErrorType::InternalError, "routing decision missing")
}

#[async_trait]
impl ProxyHttp for CanaryProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let state = self.state.load_full();
        let headers = &session.req_header().headers;
        let cookies = headers.get_all(COOKIE).into_iter().map(|v| v.as_bytes());
        let user = state.router.user_from_cookies(cookies);
        ctx.decision = Some(state.router.decide(user, &Headers(headers)));
        ctx.request_id = match headers.get(X_REQUEST_ID) {
            Some(id) if request_id::is_acceptable(id.as_bytes()) => {
                String::from_utf8_lossy(id.as_bytes()).into_owned()
            }
            _ => request_id::generate(),
        };
        ctx.state = Some(state);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (state, decision) = ctx
            .state
            .as_ref()
            .zip(ctx.decision.as_ref())
            .ok_or_else(no_decision)?;
        let pool = state.pools.get(decision.group.0).ok_or_else(no_decision)?;
        let backend = pool.select(b"", 256).ok_or_else(|| {
            warn!(
                "request {}: group {} has no server to select",
                ctx.request_id,
                state.router.group_name(decision.group)
            );
            Error::explain(ErrorType::HTTPStatus(503), "no server available in group")
        })?;
        Ok(Box::new(HttpPeer::new(backend.addr, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let client_ip = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip());
        let forwarded_for = forwarded_for(&upstream_request.headers, client_ip);
        if let Some(ip) = client_ip {
            upstream_request.insert_header(X_REAL_IP, ip.to_string())?;
        } else {
            upstream_request.remove_header(X_REAL_IP);
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
        upstream_request.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream_response.insert_header(X_REQUEST_ID, ctx.request_id.as_str())?;
        if let Some((state, decision)) = ctx.state.as_ref().zip(ctx.decision.as_ref()) {
            if let Some(name) = &state.decision_header {
                upstream_response
                    .insert_header(name.clone(), state.router.group_name(decision.group))?;
            }
        }
        Ok(())
    }
}

/// `X-Forwarded-For` as nginx's `$proxy_add_x_forwarded_for` builds it: the client's values (all
/// header lines, joined with ", ") with the client address appended.
fn forwarded_for(headers: &HeaderMap, client_ip: Option<IpAddr>) -> Option<String> {
    let mut value = String::new();
    for line in headers.get_all(X_FORWARDED_FOR) {
        let Ok(line) = line.to_str() else { continue };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(line);
    }
    if let Some(ip) = client_ip {
        if !value.is_empty() {
            value.push_str(", ");
        }
        value.push_str(&ip.to_string());
    }
    (!value.is_empty()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_client() {
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let mut headers = HeaderMap::new();
        assert_eq!(
            forwarded_for(&headers, Some(ip)).as_deref(),
            Some("192.0.2.7")
        );
        headers.append(X_FORWARDED_FOR, "10.0.0.1".parse().expect("value"));
        headers.append(
            X_FORWARDED_FOR,
            " 10.0.0.2, 10.0.0.3 ".parse().expect("value"),
        );
        assert_eq!(
            forwarded_for(&headers, Some(ip)).as_deref(),
            Some("10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7")
        );
        assert_eq!(
            forwarded_for(&headers, None).as_deref(),
            Some("10.0.0.1, 10.0.0.2, 10.0.0.3")
        );
        assert_eq!(forwarded_for(&HeaderMap::new(), None), None);
    }
}
