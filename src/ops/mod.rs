//! What operators touch: the admin API and its JSON views, the metrics endpoint, the access
//! log, signals and drain, and the demo origins. The top layer: it may import every other
//! layer and holds no state of its own that the proxy needs.

pub mod access_log;
pub mod admin;
pub mod demo;
pub mod lifecycle;
pub mod metrics;
pub mod views;
