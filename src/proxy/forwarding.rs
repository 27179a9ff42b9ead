//! The client's address, the host it asked for, and nginx's forwarding headers: `X-Real-IP`,
//! `X-Forwarded-For` (`$proxy_add_x_forwarded_for`), `X-Forwarded-Proto`.

use std::cell::RefCell;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora_core::Result;
use pingora_http::RequestHeader;

use super::ctx::Client;
use super::errors::bad_request;
use super::headers::{edit_request, set_or_remove};
use super::request_id::X_REQUEST_ID;
use crate::routing::{is_token_byte, Cidr};

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded as they came.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];
/// Headers a client may not nominate for removal in `Connection`: the gateway sets them.
const PROTECTED: [&str; 4] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];
/// Most names one request may nominate in `Connection` (a bound on the work per request).
const MAX_NOMINATIONS: usize = 9;

const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Works out the client once per request: its address (believing `X-Forwarded-For` only from
/// `trusted` peers) and both addresses as header text.
pub(crate) fn client(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[Cidr]) -> Client {
    let Some(peer) = peer else {
        return Client::default();
    };
    let ip = client_ip(peer, headers, trusted);
    Client {
        peer: Some(peer),
        ip: Some(ip),
        ip_value: Some(ip_value(ip)),
        proxy_value: (ip != peer).then(|| ip_value(peer)),
        user: None,
    }
}

/// The host a request names, as sent: its `Host` header, else its target's host (an
/// absolute-form target, or HTTP/2's `:authority`, without user info or port); empty when it
/// names none. A `Host` keeps its port and case: the route lookup and the redirect listener
/// normalize it (`routing::routes::normalize_host`), the access log records it as sent.
pub(crate) fn request_host(request: &RequestHeader) -> &[u8] {
    request
        .headers
        .get(http::header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| request.uri.host().map(str::as_bytes))
        .unwrap_or_default()
}

/// Whether a request asks for a WebSocket (`Upgrade: websocket` over HTTP/1.1): the only
/// upgrade the gateway passes on, as Pingora's default policy does for every other request.
pub(crate) fn is_websocket_upgrade(request: &RequestHeader) -> bool {
    request.version == http::Version::HTTP_11
        && request
            .headers
            .get(http::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
}

/// Prepares a WebSocket handshake for the origin as the proxy prepares every request: headers
/// the client nominated in `Connection` and the hop-by-hop headers are removed (nominating a
/// protected header, more than a few, or something that is not a token is a 400), then the
/// handshake's own `Connection: Upgrade` and `Upgrade: websocket` are set again.
pub(crate) fn sanitize_websocket_request(request: &mut RequestHeader) -> Result<()> {
    let mut nominated: Vec<http::HeaderName> = Vec::new();
    for token in request
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
    {
        let name = http::HeaderName::from_bytes(token)
            .ok()
            .filter(|_| token.iter().all(|&b| is_token_byte(b)))
            .ok_or_else(|| bad_request("a Connection option that is not a token"))?;
        if PROTECTED.contains(&name.as_str()) {
            return Err(bad_request("a protected header nominated by Connection"));
        }
        if nominated.len() == MAX_NOMINATIONS {
            return Err(bad_request("too many Connection options"));
        }
        nominated.push(name);
    }
    for name in &nominated {
        request.remove_header(name);
    }
    for name in HOP_BY_HOP {
        request.remove_header(name);
    }
    request.insert_header(http::header::CONNECTION, "Upgrade")?;
    request.insert_header(http::header::UPGRADE, "websocket")?;
    Ok(())
}

/// Sets the forwarding headers and the request id on the request that goes upstream, and
/// runs `more` (the decision's headers) in the same edit of the header map.
pub(crate) fn set_forwarding_headers(
    upstream_request: &mut RequestHeader,
    client: &Client,
    tls: bool,
    request_id: &HeaderValue,
    more: impl FnOnce(&mut http::HeaderMap) -> std::result::Result<(), http::header::MaxSizeReached>,
) -> Result<()> {
    let peer_value = client.proxy_value.as_ref().or(client.ip_value.as_ref());
    let forwarded_for = forwarded_for(&upstream_request.headers, peer_value.cloned());
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    edit_request(upstream_request, 5, |headers| {
        set_or_remove(headers, X_REAL_IP, client.ip_value.clone())?;
        set_or_remove(headers, X_FORWARDED_FOR, forwarded_for)?;
        headers.try_insert(X_FORWARDED_PROTO, proto)?;
        headers.try_insert(X_REQUEST_ID, request_id.clone())?;
        more(headers)
    })
}

/// The client address: `peer`, or when `peer` is a trusted proxy, the right-most
/// `X-Forwarded-For` address that is not (the left-most one when all are trusted).
fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    let lines: Vec<&HeaderValue> = headers.get_all(&X_FORWARDED_FOR).iter().collect();
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

/// `X-Forwarded-For` as nginx's `$proxy_add_x_forwarded_for` builds it: the client's values (all
/// header lines, joined with ", ") with the peer's address appended.
fn forwarded_for(headers: &HeaderMap, peer: Option<HeaderValue>) -> Option<HeaderValue> {
    let mut lines = headers
        .get_all(&X_FORWARDED_FOR)
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

/// An address as header text, written without the formatting machinery (see `text`). The
/// last one written on this thread is kept: a keep-alive connection's requests, and a busy
/// client's connections, all come from one address, and a kept value is shared, not copied.
fn ip_value(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match &*last {
            Some((kept, value)) if *kept == ip => value.clone(),
            _ => {
                let mut text = Vec::with_capacity(15);
                crate::text::push_ip(&mut text, ip);
                let value = HeaderValue::from_maybe_shared(Bytes::from(text))
                    .unwrap_or_else(|_| HeaderValue::from_static(""));
                *last = Some((ip, value.clone()));
                value
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Host` wins (port and case as sent); without it the target's host (absolute form or
    /// HTTP/2 `:authority`), without user info or port; without either, nothing.
    #[test]
    fn the_request_host_is_the_host_header_else_the_targets() {
        let request = |target: &str, host: Option<&str>| {
            let mut r = RequestHeader::build("GET", b"/", None).expect("request");
            r.set_uri(target.parse().expect("uri"));
            if let Some(host) = host {
                r.insert_header("host", host).expect("host");
            }
            r
        };
        let cases: [(&str, Option<&str>, &[u8]); 6] = [
            ("/a", Some("Shop.Example:8080"), b"Shop.Example:8080"),
            (
                "http://other.example/a",
                Some("shop.example"),
                b"shop.example",
            ),
            ("http://Shop.Example:8080/a", None, b"Shop.Example"),
            ("https://user@shop.example/a", None, b"shop.example"),
            ("http://[::1]:8080/a", None, b"[::1]"),
            ("/a", None, b""),
        ];
        for (target, host, expected) in cases {
            assert_eq!(
                request_host(&request(target, host)),
                expected,
                "{target} with Host {host:?}"
            );
        }
    }

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

    fn handshake(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/socket", None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn websocket_handshakes_are_sanitized() {
        let mut r = handshake(&[
            ("host", "a"),
            ("connection", "keep-alive, Upgrade, X-Secret"),
            ("upgrade", "WebSocket"),
            ("x-secret", "drop"),
            ("keep-alive", "300"),
            ("te", "trailers"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_websocket_upgrade(&r));
        sanitize_websocket_request(&mut r).expect("sanitized");
        let h = &r.headers;
        assert_eq!(h.get("connection").expect("connection"), "Upgrade");
        assert_eq!(h.get("upgrade").expect("upgrade"), "websocket");
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert!(h.get("te").is_none());
        assert_eq!(h.get("sec-websocket-key").expect("kept"), "k");
        assert_eq!(h.get("host").expect("kept"), "a");
        for bad in [
            "Upgrade, Host",
            "Upgrade, X-Forwarded-For",
            "Upgrade, \"x\"",
        ] {
            let mut r = handshake(&[("connection", bad), ("upgrade", "websocket")]);
            assert!(sanitize_websocket_request(&mut r).is_err(), "{bad}");
        }
        let many = (0..10)
            .map(|i| format!("x-{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut r = handshake(&[("connection", &many), ("upgrade", "websocket")]);
        assert!(sanitize_websocket_request(&mut r).is_err(), "too many");
        assert!(!is_websocket_upgrade(&handshake(&[("upgrade", "h2c")])));
        assert!(!is_websocket_upgrade(&handshake(&[])));
    }

    #[test]
    fn ip_values_are_the_address_text() {
        for text in ["127.0.0.1", "10.200.30.4", "2001:db8::7"] {
            let ip: IpAddr = text.parse().expect("ip");
            assert_eq!(ip_value(ip), text);
        }
    }
}
