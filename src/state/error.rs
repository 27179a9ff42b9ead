//! The state layer's one error: a change, reload or store operation that was refused, with
//! what kind of refusal it is and the field at fault. The admin API (in `ops/`) picks the HTTP
//! status from the kind; this layer knows nothing of HTTP.

/// What kind of refusal a [`StateError`] is: what a caller may do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The request is wrong: a value out of range, a rule of another kind, a configuration
    /// file that does not validate. [`StateError::field`] names the key when there is one.
    Invalid,
    /// What the request names (a route, a rule, a plan) does not exist.
    NotFound,
    /// The request does not fit the state it met: a plan owns the rule, the plan moved, other
    /// nodes kept changing the control state. Asking again later may work.
    Conflict,
    /// The shared store (Redis) did not answer or refused: nothing changed, try again later.
    Unavailable,
    /// Something that should not fail did (serializing, the state file, a store document).
    Internal,
}

/// A refused change or failed operation. `message` is what users see (`/status`, the admin
/// API's `{"error", "field"}` answer, logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct StateError {
    pub(crate) kind: ErrorKind,
    /// The request's key at fault (only for [`ErrorKind::Invalid`]).
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

impl StateError {
    fn of(kind: ErrorKind, message: impl Into<String>) -> Self {
        StateError {
            kind,
            field: None,
            message: message.into(),
        }
    }

    /// A wrong request that no single key is to blame for (a configuration that does not load).
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::Invalid, message)
    }

    /// A wrong request, naming the key at fault.
    pub(crate) fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        StateError {
            field: Some(field.to_string()),
            ..Self::invalid(message)
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::NotFound, message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::Conflict, message)
    }

    /// The Redis store did not answer or refused (try again later).
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::Unavailable, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::of(ErrorKind::Internal, message)
    }
}
