//! Errors and the statuses they become: framing checks on the request head, and the mapping
//! from a failed request to what the client is told (and whether it is told anything).

use bytes::Bytes;
use http::header::HeaderMap;
use log::warn;
use pingora_core::protocols::http::ServerSession;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::request_id::X_REQUEST_ID;

pub fn bad_request(why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(400), why)
}

/// The error returned when a hook runs before `request_filter` made its decision; a bug, but
/// one that must fail the request, not the process.
pub fn no_decision() -> Box<Error> {
    Error::explain(ErrorType::InternalError, "routing decision missing")
}

/// Sends the gateway's own error response (`<code> <reason>` as text, with the request id).
/// A response that cannot be written is logged: the client is gone.
pub async fn send_error_response(
    session: &mut Session,
    code: u16,
    request_id: &http::HeaderValue,
    log_id: &str,
) {
    let mut response = ServerSession::generate_error(code);
    let body = Bytes::from(format!("{code} {}\n", error_text(code)));
    let written = async {
        response.insert_header(http::header::CONTENT_TYPE, "text/plain")?;
        response.set_content_length(body.len())?;
        if !request_id.is_empty() {
            response.insert_header(X_REQUEST_ID, request_id.clone())?;
        }
        session
            .as_downstream_mut()
            .write_error_response(response, body)
            .await
    }
    .await;
    if let Err(write_error) = written {
        warn!("request {log_id}: could not send the {code} response: {write_error}");
    }
}

/// Rejects requests whose framing is ambiguous, so nothing ambiguous reaches an origin:
/// HTTP/1.1 without `Host`, `Content-Length` together with `Transfer-Encoding`; and bodies
/// announced over the size limit.
pub fn check_framing(request: &RequestHeader, max_body_bytes: u64) -> Result<()> {
    let headers = &request.headers;
    if request.version == http::Version::HTTP_11 && !headers.contains_key(http::header::HOST) {
        return Err(bad_request("HTTP/1.1 request without Host"));
    }
    if headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.contains_key(http::header::CONTENT_LENGTH)
    {
        return Err(bad_request("both Content-Length and Transfer-Encoding"));
    }
    let limit = max_body_bytes;
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
pub fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The status the client gets for a failed request: 504 for upstream timeouts, 502 for other
/// upstream failures, 503 when no server is healthy, 400 for bad requests, 0 when the client
/// is gone.
pub fn error_status(e: &Error) -> u16 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::ErrorSource;

    fn error(etype: ErrorType, source: ErrorSource) -> Box<Error> {
        Error::create(etype, source, None, None)
    }

    /// Each kind of failure maps to the status nginx users expect, or to none when the client
    /// is gone.
    #[test]
    fn errors_map_to_statuses() {
        use ErrorSource::*;
        let cases = [
            (ErrorType::HTTPStatus(413), Internal, 413),
            (ErrorType::ReadTimedout, Upstream, 504),
            (ErrorType::WriteTimedout, Upstream, 504),
            (ErrorType::ConnectRefused, Upstream, 502),
            (ErrorType::ConnectionClosed, Upstream, 502),
            (ErrorType::ReadTimedout, Downstream, 408),
            (ErrorType::WriteError, Downstream, 0),
            (ErrorType::ReadError, Downstream, 0),
            (ErrorType::ConnectionClosed, Downstream, 0),
            (ErrorType::InvalidHTTPHeader, Downstream, 400),
            (ErrorType::InternalError, Internal, 500),
            (ErrorType::InternalError, Unset, 500),
        ];
        for (etype, source, status) in cases {
            let e = error(etype.clone(), source.clone());
            assert_eq!(error_status(&e), status, "{etype:?} from {source:?}");
        }
    }

    #[test]
    fn framing_is_checked() {
        let request = |headers: &[(&str, &str)]| {
            let mut r = RequestHeader::build("POST", b"/", None).expect("request");
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).expect("header");
            }
            r
        };
        let status = |r: Result<()>| r.err().map(|e| error_status(&e));
        let host = ("host", "a");
        assert_eq!(status(check_framing(&request(&[host]), 10)), None);
        assert_eq!(
            status(check_framing(&request(&[]), 10)),
            Some(400),
            "no Host"
        );
        let both = request(&[
            host,
            ("content-length", "1"),
            ("transfer-encoding", "chunked"),
        ]);
        assert_eq!(status(check_framing(&both, 10)), Some(400));
        let big = request(&[host, ("content-length", "11")]);
        assert_eq!(status(check_framing(&big, 10)), Some(413));
        assert!(has_body(&big.headers));
        assert!(!has_body(
            &request(&[host, ("content-length", "0")]).headers
        ));
    }
}
