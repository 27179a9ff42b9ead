//! Header edits on Pingora's request and response heads, made on their `http::HeaderMap`
//! directly.
//!
//! Pingora's `insert_header` parses the name again on every call (allocating it when it is not
//! a standard one), inserts it into two maps (the values and the names' original case), and
//! grows both maps one header at a time: about 1.7k instructions a header, a third of what
//! the gateway adds to a request. Here a head is taken apart into its `http` parts, room is
//! reserved once, the pre-parsed names go in, and the head is put back together.
//!
//! The price: a head put back together has no record of the case its header names arrived in,
//! so they go out lower-case (Pingora title-cases a few standard ones: `Host`,
//! `Content-Type`…) — as HTTP/2 always sends them, and as HAProxy and Envoy send HTTP/1.1.
//! Header names are case-insensitive (RFC 9110 §5.1). Everything else is kept: method, target
//! (also one the URI does not reproduce byte for byte), version, extensions, status and a
//! reason phrase other than the standard one.

use http::header::{HeaderMap, HeaderName, HeaderValue, MaxSizeReached};
use pingora_core::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};

/// Runs `edit` on the request's header map, with room for `extra` more headers.
pub(crate) fn edit_request<R>(
    request: &mut RequestHeader,
    extra: usize,
    edit: impl FnOnce(&mut HeaderMap) -> Result<R, MaxSizeReached>,
) -> Result<R> {
    // A target the URI does not reproduce (absolute-form, or not UTF-8) is kept aside and put
    // back; the common origin-form target is the URI's own text.
    let target = request.uri.path_and_query().map(|p| p.as_str().as_bytes());
    let raw_target = (target != Some(request.raw_path())).then(|| request.raw_path().to_vec());
    let end_stream = request.send_end_stream();
    let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(request, empty));
    let result = with_room(&mut parts.headers, extra, edit);
    *request = RequestHeader::from(parts);
    if let Some(raw) = raw_target {
        request.set_raw_path(&raw)?;
    }
    if let Some(end_stream) = end_stream {
        request.set_send_end_stream(end_stream);
    }
    result.map_err(too_many)
}

/// Runs `edit` on the response's header map, with room for `extra` more headers.
pub(crate) fn edit_response<R>(
    response: &mut ResponseHeader,
    extra: usize,
    edit: impl FnOnce(&mut HeaderMap) -> Result<R, MaxSizeReached>,
) -> Result<R> {
    let reason = response
        .get_reason_phrase()
        .filter(|r| Some(*r) != response.status.canonical_reason())
        .map(str::to_owned);
    let empty = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(response, empty));
    let result = with_room(&mut parts.headers, extra, edit);
    *response = ResponseHeader::from(parts);
    if reason.is_some() {
        response.set_reason_phrase(reason.as_deref())?;
    }
    result.map_err(too_many)
}

/// Makes room for `extra` more headers at once (one growth, not one per insert), then edits.
fn with_room<R>(
    headers: &mut HeaderMap,
    extra: usize,
    edit: impl FnOnce(&mut HeaderMap) -> Result<R, MaxSizeReached>,
) -> Result<R, MaxSizeReached> {
    headers.try_reserve(extra)?;
    edit(headers)
}

/// Sets `name` to `value`, or removes it when there is no value.
pub(crate) fn set_or_remove(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: Option<HeaderValue>,
) -> Result<(), MaxSizeReached> {
    match value {
        Some(value) => headers.try_insert(name, value).map(drop),
        None => {
            headers.remove(name);
            Ok(())
        }
    }
}

/// A head at `http`'s limit of 32,768 headers (Pingora refuses far fewer when it parses one).
fn too_many(_: MaxSizeReached) -> Box<Error> {
    Error::explain(ErrorType::InvalidHTTPHeader, "too many headers")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(request: &RequestHeader) -> String {
        let mut buf = Vec::new();
        request.header_to_h1_wire(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[test]
    fn a_request_keeps_all_but_the_names_case() {
        let mut request = RequestHeader::build("POST", b"/a/b?q=1", None).expect("head");
        request.append_header("Cookie", "a=1").expect("header");
        request.append_header("X-Multi", "one").expect("header");
        request.append_header("X-Multi", "two").expect("header");
        request
            .insert_header("X-Real-IP", "9.9.9.9")
            .expect("header");
        edit_request(&mut request, 2, |headers| {
            set_or_remove(headers, HeaderName::from_static("x-real-ip"), None)?;
            headers.try_insert(
                HeaderName::from_static("x-added"),
                HeaderValue::from_static("yes"),
            )?;
            Ok(())
        })
        .expect("edit");
        assert_eq!(request.method, http::Method::POST);
        assert_eq!(request.raw_path(), b"/a/b?q=1");
        assert_eq!(request.headers["cookie"], "a=1");
        let multi: Vec<_> = request.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"]);
        assert!(request.headers.get("x-real-ip").is_none());
        assert_eq!(request.headers["x-added"], "yes");
        assert!(!request.has_case(), "the names' case is not kept");
        assert!(
            wire(&request).contains("cookie: a=1\r\n"),
            "{}",
            wire(&request)
        );
    }

    #[test]
    fn a_target_the_uri_does_not_reproduce_is_kept() {
        for target in [&b"http://example.test/x?y"[..], b"/caf\xe9?x=\xff"] {
            let mut request = RequestHeader::build("GET", target, None).expect("head");
            let before = (request.raw_path().to_vec(), request.raw_path_is_utf8());
            edit_request(&mut request, 1, |_| Ok(())).expect("edit");
            assert_eq!(
                (request.raw_path().to_vec(), request.raw_path_is_utf8()),
                before
            );
        }
    }

    #[test]
    fn a_response_keeps_its_status_and_reason() {
        let mut response = ResponseHeader::build(299, None).expect("head");
        response
            .set_reason_phrase(Some("Fine By Me"))
            .expect("reason");
        response.append_header("Server", "origin").expect("header");
        edit_response(&mut response, 1, |headers| {
            headers.try_insert(
                HeaderName::from_static("x-request-id"),
                HeaderValue::from_static("r1"),
            )?;
            Ok(())
        })
        .expect("edit");
        assert_eq!(response.status.as_u16(), 299);
        assert_eq!(response.get_reason_phrase(), Some("Fine By Me"));
        assert_eq!(response.headers["server"], "origin");
        assert_eq!(response.headers["x-request-id"], "r1");

        let mut ok = ResponseHeader::build(200, None).expect("head");
        edit_response(&mut ok, 1, |_| Ok(())).expect("edit");
        assert_eq!(ok.get_reason_phrase(), Some("OK"));
    }
}
