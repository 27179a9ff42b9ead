//! The state layer's one error: a change, reload or store operation that was refused, with the
//! HTTP status the admin API answers with and the field at fault.

/// A refused change or failed operation. `message` is what users see (`/status`, the admin
/// API's `{"error", "field"}` answer, logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StateError {
    pub status: u16,
    pub field: Option<String>,
    pub message: String,
}

impl StateError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        StateError {
            status,
            field: None,
            message: message.into(),
        }
    }

    /// 400, naming the field at fault.
    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        StateError {
            status: 400,
            field: Some(field.to_string()),
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }

    /// The Redis store did not answer or refused (503: try again later).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
}
