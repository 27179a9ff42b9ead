//! Errors and the statuses they become: framing checks on the request head, the mapping
//! from a failed request to what the client is told (and whether it is told anything), and
//! the one writer of the answers the gateway makes itself (`<code> <reason>` bodies and whole
//! responses: the proxy's errors, the head guard's, the redirect listener's, and `ops`' admin
//! API, metrics endpoint and demo origins). A gRPC call gets its errors as gRPC statuses
//! (`grpc`).

use bytes::Bytes;
use http::header::HeaderMap;
use log::warn;
use pingora_core::protocols::http::ServerSession;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use std::sync::Arc;

use super::request_id::X_REQUEST_ID;
use crate::config::ErrorPage;

pub(crate) fn bad_request(why: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(400), why)
}

/// The error returned when a hook runs before `request_filter` made its decision; a bug, but
/// one that must fail the request, not the process.
pub(crate) fn no_decision() -> Box<Error> {
    Error::explain(ErrorType::InternalError, "routing decision missing")
}

/// Sends the gateway's own error response (`page`, the route's error page for `code`, else
/// `<code> <reason>` as text, with the request id and `extra`, a header such as a 401's
/// `WWW-Authenticate`). A response that cannot be written is logged: the client is gone.
pub(crate) async fn send_error_response(
    session: &mut Session,
    code: u16,
    request_id: &http::HeaderValue,
    log_id: &str,
    extra: Option<(http::HeaderName, http::HeaderValue)>,
    page: Option<Arc<ErrorPage>>,
) {
    if super::grpc::is_grpc(session.req_header()) {
        return send_grpc_error(session, code, request_id, log_id).await;
    }
    let mut response = ServerSession::generate_error(code);
    let (body, content_type) = match &page {
        Some(page) => (page.body.clone(), page.content_type),
        None => (Bytes::from(status_body(code, None)), "text/plain"),
    };
    let written = async {
        response.insert_header(http::header::CONTENT_TYPE, content_type)?;
        response.set_content_length(body.len())?;
        if !request_id.is_empty() {
            response.insert_header(X_REQUEST_ID, request_id.clone())?;
        }
        if let Some((name, value)) = extra {
            response.insert_header(name, value)?;
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

/// The gateway's own error for a gRPC call: a trailers-only answer (HTTP 200, the head
/// carrying `grpc-status` and ending the stream), with the request id. gRPC clients read the
/// status from it; an HTTP status other than 200 would be reported as a transport error.
async fn send_grpc_error(
    session: &mut Session,
    code: u16,
    request_id: &http::HeaderValue,
    log_id: &str,
) {
    if session.response_written().is_some() {
        // The origin's head is out: the stream ends (reset) without a status of ours.
        return;
    }
    let written = async {
        let mut response = super::grpc::trailers_only(code)?;
        if !request_id.is_empty() {
            response.insert_header(X_REQUEST_ID, request_id.clone())?;
        }
        match session.as_downstream_mut() {
            // The head with END_STREAM: Pingora's `write_response_header` never ends an HTTP/2
            // stream with its head, and an empty DATA frame after it would not be trailers-only.
            ServerSession::H2(h2) => h2.write_response_header(Box::new(response), true),
            downstream => {
                // HTTP/1.1 has no trailers-only form: an empty body, delimited. The request's
                // body may be unread: the connection closes after the answer, as for Pingora's
                // own error responses, so no body byte is read as the next request.
                downstream.set_keepalive(None);
                response.set_content_length(0)?;
                downstream.write_response_header(Box::new(response)).await?;
                downstream.finish_body().await
            }
        }
    }
    .await;
    if let Err(write_error) = written {
        warn!("request {log_id}: could not send the gRPC error for {code}: {write_error}");
    }
}

/// Rejects requests whose framing is ambiguous, so nothing ambiguous reaches an origin:
/// HTTP/1.1 without `Host`, `Content-Length` together with `Transfer-Encoding`; and bodies
/// announced over the size limit.
pub(crate) fn check_framing(request: &RequestHeader, max_body_bytes: u64) -> Result<()> {
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
pub(crate) fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The status the client gets for a failed request: 504 for upstream timeouts, 502 for other
/// upstream failures, 503 when no server is healthy, 400 for bad requests, 0 when the client
/// is gone.
pub(crate) fn error_status(e: &Error) -> u16 {
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

/// The body of a plain-text answer the gateway makes itself: `<code> <reason>\n`, or
/// `<code> <reason>: <detail>\n` (`400 Bad Request: unknown host`).
pub(crate) fn status_body(code: u16, detail: Option<&str>) -> String {
    let reason = reason_phrase(code);
    match detail {
        None => format!("{code} {reason}\n"),
        Some(detail) => format!("{code} {reason}: {detail}\n"),
    }
}

/// A whole plain-text answer ([`status_body`]) written straight to a client connection that is
/// then closed (HTTP/1.1, `Connection: close`): the head guard's answers, made before Pingora
/// has a session to answer through.
pub(crate) fn closing_response(code: u16) -> Vec<u8> {
    let body = status_body(code, None);
    format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason_phrase(code),
        body.len()
    )
    .into_bytes()
}

/// A whole response with its `Content-Type` and `Content-Length`: what the redirect listener,
/// the admin API, the metrics endpoint and the demo origins answer.
pub(crate) fn http_response(
    status: http::StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> http::Response<Vec<u8>> {
    let length = body.len();
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
    );
    response
}

/// The standard reason phrase of `code`, `Error` for a code without one.
fn reason_phrase(code: u16) -> &'static str {
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

    /// Every answer the gateway makes itself has the bytes it had before the writers were one.
    #[test]
    fn own_answers_keep_their_bytes() {
        assert_eq!(status_body(502, None), "502 Bad Gateway\n");
        assert_eq!(status_body(599, None), "599 Error\n");
        assert_eq!(status_body(308, None), "308 Permanent Redirect\n");
        assert_eq!(
            status_body(400, Some("unknown host")),
            "400 Bad Request: unknown host\n"
        );
        let closing: [(u16, &[u8]); 4] = [
            (400, b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\n400 Bad Request\n"),
            (408, b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\n408 Request Timeout\n"),
            (414, b"HTTP/1.1 414 URI Too Long\r\nContent-Type: text/plain\r\nContent-Length: 17\r\nConnection: close\r\n\r\n414 URI Too Long\n"),
            (431, b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 36\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large\n"),
        ];
        for (code, bytes) in closing {
            assert_eq!(closing_response(code), bytes, "{code}");
        }
        let response = http_response(http::StatusCode::OK, "text/plain", b"ok".to_vec());
        let headers: Vec<_> = response.headers().iter().collect();
        assert_eq!(
            headers,
            [
                (
                    &http::header::CONTENT_TYPE,
                    &http::HeaderValue::from_static("text/plain")
                ),
                (&http::header::CONTENT_LENGTH, &http::HeaderValue::from(2)),
            ]
        );
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
