//! canary-gateway: an edge reverse proxy on Pingora that routes each user, by a cookie carrying
//! the user id, to an upstream group (stable, canary, ...) through ordered rules.
//!
//! `main` parses the command line and calls [`add_services`]; the end-to-end tests run the same
//! binary, so what they test is what operators run.

pub mod config;
pub mod demo;
pub mod proxy;
pub mod request_id;
pub mod routing;
pub mod upstreams;
pub mod userset;

use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::server::Server;

use crate::config::GatewayConfig;
use crate::proxy::{CanaryProxy, GatewayState};

/// Adds the proxy (and, when configured, the demo origins) to `server`. Returns the shared
/// state handle through which the routing can be swapped while serving.
pub fn add_services(
    server: &mut Server,
    gateway: &GatewayConfig,
) -> std::io::Result<Arc<ArcSwap<GatewayState>>> {
    let state = Arc::new(ArcSwap::from_pointee(GatewayState::from_config(gateway)?));
    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        CanaryProxy::new(state.clone()),
        "canary-gateway proxy",
    );
    for addr in &gateway.listen {
        proxy.add_tcp(addr);
    }
    server.add_service(proxy);
    server.add_service(pingora_core::services::background::background_service(
        "health checks",
        upstreams::HealthChecker::new(state.clone()),
    ));
    for origin in &gateway.demo_origins {
        server.add_service(demo::demo_origin_service(origin));
    }
    Ok(state)
}
