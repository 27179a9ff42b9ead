//! What operators touch: the admin API, its JSON views and the web page, the metrics endpoint, the access
//! log, signals and drain, and the demo origins. The top layer: it may import every other
//! layer and holds no state of its own that the proxy needs.

pub mod access_log;
pub mod admin;
pub mod demo;
pub mod descriptors;
pub mod lifecycle;
pub mod metrics;
pub mod ui;
pub mod views;

/// The one writer of whole responses, shared with the proxy's own answers.
pub(crate) use crate::proxy::http_response;
