//! A redirect listener (`redirect_https: true`): every request gets a 308 to the same host and
//! target over https; nothing is proxied. Only hosts that some route or certificate (a file's,
//! ACME's or an uploaded one) names are redirected (others get a 400), so a hostile `Host`
//! cannot make the gateway send a client to another site.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{header, HeaderValue, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;

use super::errors::{http_response, status_body};
use crate::routing::routes::normalize_host;
use crate::state::GatewayState;

/// Answers every request on a redirect listener.
pub(crate) struct Redirector {
    state: Arc<ArcSwap<GatewayState>>,
    /// The port named in `Location` (left out when 443).
    https_port: u16,
}

impl Redirector {
    pub(crate) fn new(state: Arc<ArcSwap<GatewayState>>, https_port: u16) -> Self {
        Redirector { state, https_port }
    }
}

/// Where a request for `host` (the `Host` value) and `target` (its request target) goes:
/// `Some(location)` when the host is known, `None` when the request must be refused.
pub(crate) fn location(
    known: &crate::routing::names::KnownHosts,
    host: &[u8],
    target: &[u8],
    https_port: u16,
) -> Option<String> {
    let mut scratch = Vec::new();
    let host = std::str::from_utf8(normalize_host(host, &mut scratch)?).ok()?;
    if !known.contains(host) {
        return None;
    }
    // An absolute-form target (`http://host/path`) keeps only its path and query.
    let target = std::str::from_utf8(target).ok()?;
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return None;
    }
    Some(if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    })
}

/// A plain-text answer (`<code> <reason>`, with `detail`), and `Location` when redirecting.
fn answer(status: StatusCode, location: Option<String>, detail: Option<&str>) -> Response<Vec<u8>> {
    let body = status_body(status.as_u16(), detail).into_bytes();
    let mut response = http_response(status, "text/plain", body);
    if let Some(location) = location {
        match HeaderValue::try_from(location) {
            Ok(value) => {
                response.headers_mut().insert(header::LOCATION, value);
            }
            // `location` refuses targets with control characters, so this is not reached;
            // a redirect without its `Location` would be worse than a refusal.
            Err(_) => return answer(StatusCode::BAD_REQUEST, None, Some("unknown host")),
        }
    }
    response
}

/// The answer to an ACME HTTP-01 validation (`/.well-known/acme-challenge/TOKEN`): the key
/// authorization of a pending order's token, else a 404; `None` for any other path.
pub(crate) fn acme_answer(path: &str) -> Option<Response<Vec<u8>>> {
    if !path.starts_with(crate::config::acme::HTTP01_PREFIX) {
        return None;
    }
    Some(match crate::config::acme::http01_answer(path) {
        Some(key_authorization) => http_response(
            StatusCode::OK,
            "application/octet-stream",
            key_authorization.into_bytes(),
        ),
        None => answer(StatusCode::NOT_FOUND, None, Some("unknown ACME token")),
    })
}

#[async_trait]
impl ServeHttp for Redirector {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let state = self.state.load();
        super::guard::keep_alive_for(session, &state.limits.head);
        let request = session.req_header();
        if let Some(answer) = acme_answer(request.uri.path()) {
            return answer;
        }
        let host = super::forwarding::request_host(request);
        let target = request.raw_path();
        // The file's route hosts and certificate names, then the uploaded certificates'.
        let to = location(&state.known_hosts, host, target, self.https_port).or_else(|| {
            let uploaded = crate::config::uploaded::uploaded().load();
            location(&uploaded.known_hosts, host, target, self.https_port)
        });
        match to {
            Some(to) => answer(StatusCode::PERMANENT_REDIRECT, Some(to), None),
            None => answer(StatusCode::BAD_REQUEST, None, Some("unknown host")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::names::KnownHosts;

    fn known() -> KnownHosts {
        KnownHosts {
            route_hosts: vec!["shop.example.com".into()],
            certificate_names: vec!["*.example.org".into()],
        }
    }

    /// Same host (port dropped, case folded) and target; the https port only when not 443.
    #[test]
    fn known_hosts_keep_host_and_target() {
        let k = known();
        assert_eq!(
            location(&k, b"Shop.Example.com:80", b"/a/b?c=1", 443).as_deref(),
            Some("https://shop.example.com/a/b?c=1")
        );
        assert_eq!(
            location(&k, b"www.example.org", b"/", 8443).as_deref(),
            Some("https://www.example.org:8443/")
        );
        assert_eq!(
            location(&k, b"www.example.org", b"http://www.example.org/x", 443).as_deref(),
            Some("https://www.example.org/x")
        );
    }

    /// Unknown hosts, hosts that are not DNS names and targets that are not paths are refused.
    #[test]
    fn hostile_hosts_and_targets_are_refused() {
        let k = known();
        assert_eq!(location(&k, b"evil.com", b"/", 443), None);
        assert_eq!(location(&k, b"evil.com/x.example.org", b"/", 443), None);
        assert_eq!(location(&k, b"", b"/", 443), None);
        assert_eq!(location(&k, b"shop.example.com", b"*", 443), None);
        assert_eq!(
            location(&k, b"shop.example.com", b"//evil.com/", 443).as_deref(),
            Some("https://shop.example.com//evil.com/")
        );
    }
}
