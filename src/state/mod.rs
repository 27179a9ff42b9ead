//! The live state the data path reads, and the control plane that changes it: the controller
//! (reload, admin changes), the overlay and its state file, the Redis store and the metrics
//! registry. Requests read [`GatewayState`] through `arc-swap` and never take a lock.
//!
//! Above `routing`, `upstreams` and `config`; below `proxy` and `ops`, which reach it through
//! the controller's methods. The store reaches the controller only through a callback.

pub mod controller;
mod error;
pub mod metrics;
pub mod overlay;
pub mod store;

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;

pub use controller::{ConfigSource, Controller, Explanation, View};
pub use error::StateError;
pub use overlay::{Overlay, OverlayMode, UsersDelta};

use crate::config::{Cidr, GatewayConfig, Limits};
use crate::routing::Router;
use crate::upstreams::{Pool, Selection};
use metrics::RequestMetrics;

/// Everything a request needs to be routed, swapped as a whole when the configuration changes.
/// A request keeps the snapshot it started with until it ends.
pub struct GatewayState {
    pub router: Arc<Router>,
    /// One pool per group, indexed by `GroupId`.
    pub pools: Vec<Arc<Pool>>,
    /// Response header naming the chosen group, if enabled, as Pingora's case-keeping header
    /// name (a shared `Bytes`: cloning it per request copies nothing).
    pub decision_header: Option<Bytes>,
    /// Each group's name as a header value, indexed by `GroupId` (built once, cloned cheaply).
    pub group_values: Vec<HeaderValue>,
    /// Request counters and histograms resolved for this state's groups and rules.
    pub metrics: RequestMetrics,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    pub limits: Limits,
    /// Whether any group picks servers by user (consistent hashing), so the proxy keeps the
    /// user id for server selection; otherwise it is not copied out of the request.
    pub selects_by_user: bool,
}

impl GatewayState {
    /// Assembles a state; fails only when the decision header name is not a valid header name
    /// (config validation already ensures it is).
    pub fn new(
        router: Arc<Router>,
        pools: Vec<Arc<Pool>>,
        config: &GatewayConfig,
    ) -> Result<Self, StateError> {
        let invalid = |e: &dyn std::fmt::Display| StateError::internal(e.to_string());
        let decision_header = config
            .decision_header
            .as_deref()
            .map(|name| http::HeaderName::from_bytes(name.as_bytes()))
            .transpose()
            .map_err(|e| invalid(&e))?
            .map(|name| Bytes::copy_from_slice(name.as_str().as_bytes()));
        let group_values = router
            .group_names
            .iter()
            .map(|name| HeaderValue::from_maybe_shared(Bytes::copy_from_slice(name.as_bytes())))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        let selects_by_user = pools
            .iter()
            .any(|pool| pool.config.selection == Selection::Consistent);
        Ok(GatewayState {
            selects_by_user,
            group_values,
            trusted_proxies: config.trusted_proxies.clone(),
            limits: config.limits,
            metrics: RequestMetrics::new(&router),
            router,
            pools,
            decision_header,
        })
    }
}
