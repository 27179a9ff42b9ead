//! How the admin API answers: the HTTP error it sends (and the one place a state error's kind
//! becomes an HTTP status), and the response an endpoint's answer is written as (JSON, or the
//! YAML of `GET /config`).

use http::{HeaderValue, Response, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::state::{ErrorKind, StateError};

/// A refused admin request: the status, the request's key at fault (if one is) and what the
/// client reads. Answered as `{"error": message, "field": field}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            field: None,
            message: message.into(),
        }
    }

    /// 400, naming the request's key at fault.
    pub(crate) fn bad_request(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// The answer: the error as JSON with its status.
    pub(crate) fn response(&self) -> Response<Vec<u8>> {
        json_response(
            self.status,
            &json!({ "error": self.message, "field": self.field }),
        )
    }
}

/// The HTTP status of each kind of state error: the one place the admin API decides it.
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        ApiError {
            status: status_of(e.kind),
            field: e.field,
            message: e.message,
        }
    }
}

/// A typed answer as the JSON an endpoint returns. Through a `Value`, so its keys come out
/// sorted as every answer's always have.
pub(crate) fn to_json(answer: &impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(answer).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the answer: {e}"),
        )
    })
}

/// What an endpoint answers with 200: JSON (every endpoint but one), or a YAML document.
pub(crate) enum Reply {
    Json(Value),
    /// A configuration file (`GET /config`).
    Yaml(String),
}

impl From<Value> for Reply {
    fn from(body: Value) -> Self {
        Reply::Json(body)
    }
}

impl Reply {
    /// The answer as a 200 response.
    pub(crate) fn response(self) -> Response<Vec<u8>> {
        match self {
            Reply::Json(body) => json_response(StatusCode::OK, &body),
            Reply::Yaml(text) => uncached(crate::ops::http_response(
                StatusCode::OK,
                "application/yaml",
                text.into_bytes(),
            )),
        }
    }
}

/// `body` as pretty JSON with `status`; never cached.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Vec<u8>> {
    uncached(crate::ops::http_response(
        status,
        "application/json",
        serde_json::to_vec_pretty(body).unwrap_or_default(),
    ))
}

/// `response` marked never to be cached: admin answers are the state of one moment.
fn uncached(mut response: Response<Vec<u8>>) -> Response<Vec<u8>> {
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind keeps the status clients have always seen for it.
    #[test]
    fn every_kind_has_its_status() {
        for (kind, status) in [
            (ErrorKind::Invalid, 400),
            (ErrorKind::NotFound, 404),
            (ErrorKind::Conflict, 409),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Internal, 500),
        ] {
            assert_eq!(status_of(kind).as_u16(), status, "{kind:?}");
        }
        let e = ApiError::from(StateError::invalid_field("group", "no such group"));
        assert_eq!(
            (e.status.as_u16(), e.field.as_deref()),
            (400, Some("group"))
        );
    }
}
