//! gRPC on the request path: telling a gRPC request (`content-type: application/grpc*`) from a
//! web one, the gRPC status of an error the gateway makes itself (written as a trailers-only
//! response, HTTP 200 with `grpc-status`, as Envoy does), and `grpc-timeout` as the deadline
//! towards the origin.

use std::time::Duration;

use http::HeaderValue;
use pingora_http::{RequestHeader, ResponseHeader};

/// `grpc-status` codes the gateway answers with (the gRPC status code table).
pub(crate) mod code {
    pub(crate) const UNKNOWN: u16 = 2;
    pub(crate) const DEADLINE_EXCEEDED: u16 = 4;
    pub(crate) const PERMISSION_DENIED: u16 = 7;
    pub(crate) const RESOURCE_EXHAUSTED: u16 = 8;
    pub(crate) const UNIMPLEMENTED: u16 = 12;
    pub(crate) const INTERNAL: u16 = 13;
    pub(crate) const UNAVAILABLE: u16 = 14;
    pub(crate) const UNAUTHENTICATED: u16 = 16;
}

/// Whether the request is a gRPC call: its `content-type` is `application/grpc`, or that with
/// a `+format` or parameters. (gRPC-Web, `application/grpc-web*`, carries its trailers in the
/// body and keeps HTTP statuses.)
pub(crate) fn is_grpc(request: &RequestHeader) -> bool {
    request
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';' | b' '))
}

/// The gRPC status for an HTTP status the gateway would answer a web request with: no route
/// (404) is `UNIMPLEMENTED`, no healthy server or a failed connection (503, 502) `UNAVAILABLE`,
/// an upstream timeout (504, and the client's own 408) `DEADLINE_EXCEEDED`, a rate limit (429)
/// or a body over the limit (413) `RESOURCE_EXHAUSTED`, access denied (403) `PERMISSION_DENIED`,
/// missing or wrong credentials (401) `UNAUTHENTICATED`.
pub(crate) fn status_for(http_status: u16) -> u16 {
    match http_status {
        404 => code::UNIMPLEMENTED,
        502 | 503 => code::UNAVAILABLE,
        504 | 408 => code::DEADLINE_EXCEEDED,
        429 | 413 => code::RESOURCE_EXHAUSTED,
        403 => code::PERMISSION_DENIED,
        401 => code::UNAUTHENTICATED,
        400 | 500 => code::INTERNAL,
        _ => code::UNKNOWN,
    }
}

/// The head of a trailers-only answer: HTTP 200, `content-type: application/grpc`,
/// `grpc-status` for `http_status` and a `grpc-message` saying what the gateway refused.
pub(crate) fn trailers_only(http_status: u16) -> pingora_core::Result<ResponseHeader> {
    let mut response = ResponseHeader::build(200, Some(5))?;
    response.insert_header(http::header::CONTENT_TYPE, "application/grpc")?;
    response.insert_header("grpc-status", status_for(http_status))?;
    let reason = http::StatusCode::from_u16(http_status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    // `grpc-message` is percent-encoded; the reason phrases are letters and spaces.
    let message = format!("gateway: {http_status} {reason}").replace(' ', "%20");
    response.insert_header("grpc-message", message)?;
    Ok(response)
}

/// The `grpc-status` of a header map (a trailers-only head or the trailers).
pub(crate) fn status_of(value: Option<&HeaderValue>) -> Option<u16> {
    let text = std::str::from_utf8(value?.as_bytes()).ok()?;
    text.trim().parse().ok()
}

/// The client's deadline from `grpc-timeout` (1 to 8 digits and a unit: `H`ours, `M`inutes,
/// `S`econds, `m`illiseconds, `u`icroseconds, `n`anoseconds); `None` when absent or malformed.
pub(crate) fn timeout(request: &RequestHeader) -> Option<Duration> {
    parse_timeout(request.headers.get("grpc-timeout")?.as_bytes())
}

fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gRPC's content types (any format, any case) are gRPC; gRPC-Web and others are not.
    #[test]
    fn grpc_requests_are_told_by_content_type() {
        for (value, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC; charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/grpc-web+proto", false),
            ("application/json", false),
            ("application/grp", false),
        ] {
            assert_eq!(is_grpc_content_type(value.as_bytes()), grpc, "{value}");
        }
    }

    /// Each error the gateway makes maps to the gRPC status the issue names.
    #[test]
    fn gateway_errors_map_to_grpc_statuses() {
        for (http, grpc) in [
            (404, 12),
            (503, 14),
            (502, 14),
            (504, 4),
            (429, 8),
            (403, 7),
            (401, 16),
            (400, 13),
            (418, 2),
        ] {
            assert_eq!(status_for(http), grpc, "{http}");
        }
    }

    /// A trailers-only head is 200 with the status and a percent-encoded message.
    #[test]
    fn trailers_only_heads_carry_the_status() {
        let head = trailers_only(503).expect("head");
        assert_eq!(head.status.as_u16(), 200);
        assert_eq!(status_of(head.headers.get("grpc-status")), Some(14));
        assert_eq!(
            head.headers.get("grpc-message").map(|v| v.as_bytes()),
            Some(&b"gateway:%20503%20Service%20Unavailable"[..])
        );
        assert_eq!(
            head.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/grpc"[..])
        );
    }

    /// `grpc-timeout` in each unit; malformed values are ignored.
    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"3M"), Some(Duration::from_secs(180)));
        assert_eq!(
            parse_timeout(b"99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [&b""[..], b"m", b"123456789m", b"12x", b"-1S", b"1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}
