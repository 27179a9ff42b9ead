//! What operators touch: the admin API, its JSON views and the web page, the metrics endpoint, the access
//! log, signals and drain, and the demo origins. The top layer: it may import every other
//! layer and holds no state of its own that the proxy needs.

pub mod access_log;
pub mod admin;
pub mod demo;
pub mod lifecycle;
pub mod metrics;
pub mod ui;
pub mod views;

/// A whole response with its `Content-Type` and `Content-Length`: what the admin API, the
/// metrics endpoint and the demo origins answer.
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
