//! Parsers for the values the file writes as text: durations, server addresses, header names.

use std::net::SocketAddr;
use std::time::Duration;

use crate::routing::is_token_byte;
use crate::routing::routes::normalize_path;

/// Parses a duration with a unit: `250ms`, `2s`, `1m`, `1h`, `365d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 500ms, 2s or 1m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("{text:?} needs a unit: ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

/// A `max_connections` value: at least one connection.
pub(super) fn connection_count(value: Option<usize>) -> Result<Option<usize>, String> {
    match value {
        Some(0) => Err("0 would refuse every connection; at least 1".into()),
        other => Ok(other),
    }
}

pub(super) fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("{text:?} must be more than zero")),
        d => Ok(d),
    }
}

/// A group's server as written: an address (`ip:port`, `[v6]:port`), or `name:port` with a DNS
/// host name, which is looked up while the gateway runs (never here, so a name that does not
/// resolve yet still loads).
pub(super) enum ServerAddr {
    Addr(SocketAddr),
    Name(String, u16),
}

/// Parses a group's server (see [`ServerAddr`]); the error says what is wrong with it.
pub(super) fn parse_server(server: &str) -> Result<ServerAddr, String> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok(ServerAddr::Addr(addr));
    }
    let Some((host, port)) = server.rsplit_once(':') else {
        return Err(format!("{server:?} needs a port (host:port)"));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{server:?}: {port:?} is not a port (1..=65535)")),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let all_digits = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if host.is_empty() || host.len() > 253 || all_digits || !host.split('.').all(label_ok) {
        return Err(format!(
            "{server:?}: {host:?} is neither an IP address nor a DNS host name"
        ));
    }
    Ok(ServerAddr::Name(host.to_ascii_lowercase(), port))
}

/// The check of every name the file gives as a token (a route, an admin token, a cookie, a
/// user set, a header): non-empty, HTTP token characters only (RFC 9110 §5.6.2). `what` names
/// the kind of name in the error.
pub(crate) fn check_token(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(format!("{name:?} is not a valid {what} (a token)"));
    }
    Ok(())
}

/// Headers that carry the request itself or the gateway's own forwarding: a header rule may
/// not read its group from one (its header is removed before the request goes upstream), nor
/// may `upstream_header` overwrite one.
const REQUEST_HEADERS_KEPT: [&str; 16] = [
    "host",
    "cookie",
    "authorization",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "x-request-id",
];

/// A header name (lower-cased) that the gateway may remove from or set on the upstream
/// request: not one of the request's own headers or the forwarding headers.
pub(super) fn decision_header_name(name: &str) -> Result<String, String> {
    let name = header_name(name)?;
    if REQUEST_HEADERS_KEPT.contains(&name.as_str()) {
        return Err(format!(
            "{name:?} carries the request itself or its forwarding; name a header of its own"
        ));
    }
    Ok(name)
}

/// Validates an HTTP header name and returns it in lower case.
pub(super) fn header_name(name: &str) -> Result<String, String> {
    check_token(name, "header name")?;
    Ok(name.to_ascii_lowercase())
}

/// A path prefix (a route's, a rate limit's), normalized as request paths are.
pub(super) fn route_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') || path.contains(['?', '#']) {
        return Err(format!("{path:?} is not a path prefix starting with /"));
    }
    let mut out = Vec::new();
    normalize_path(path.as_bytes(), &mut out).map_err(|e| format!("{path:?}: {e}"))?;
    String::from_utf8(out).map_err(|_| format!("{path:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name is a non-empty HTTP token; the error quotes it and says which kind of name.
    #[test]
    fn names_are_tokens() {
        for good in ["canary_user", "x-route", "a.b~c!"] {
            assert_eq!(check_token(good, "route name"), Ok(()), "{good}");
        }
        let cases = [
            ("", "\"\" is not a valid cookie name (a token)"),
            ("da sh", "\"da sh\" is not a valid cookie name (a token)"),
            ("a:b", "\"a:b\" is not a valid cookie name (a token)"),
            ("é", "\"é\" is not a valid cookie name (a token)"),
        ];
        for (bad, error) in cases {
            assert_eq!(check_token(bad, "cookie name"), Err(error.to_string()));
        }
        assert_eq!(header_name("X-Route"), Ok("x-route".to_string()));
    }
}
