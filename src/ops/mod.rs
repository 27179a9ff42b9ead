//! What operators touch: the admin API, its JSON views and the web page, the metrics endpoint, the access
//! log, webhook notices, signals and drain, and the demo origins. The top layer: it may import every other
//! layer and holds no state of its own that the proxy needs.

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod demo;
pub(crate) mod descriptors;
pub mod import;
pub(crate) mod lifecycle;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod ui;
pub(crate) mod views;

/// The one writer of whole responses, shared with the proxy's own answers.
pub(crate) use crate::proxy::http_response;
