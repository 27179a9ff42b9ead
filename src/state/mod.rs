//! The live state the data path reads, and the control plane that changes it: the controller
//! (reload, admin changes), the overlay and its state file, the Redis store and the metrics
//! registry. Requests read [`GatewayState`] through `arc-swap` and never take a lock.
//!
//! Above `routing`, `upstreams` and `config`; below `proxy` and `ops`, which reach it through
//! the controller's methods. The store reaches the controller only through a callback.

pub(crate) mod acme;
mod acme_requests;
pub(crate) mod audit;
mod certificates;
mod changes;
pub(crate) mod cluster;
pub(crate) mod controller;
mod error;
mod explain;
pub(crate) mod figures;
mod files;
pub(crate) mod history;
mod lists;
pub(crate) mod metrics;
pub(crate) mod notice;
pub(crate) mod objects;
pub(crate) mod overlay;
pub(crate) mod plan;
pub(crate) mod ratelimit;
pub(crate) mod rollout;
mod servers;
pub(crate) mod store;

use std::sync::Arc;

use http::HeaderValue;

pub(crate) use certificates::CertificateRow;
pub(crate) use changes::Changed;
pub use controller::ConfigSource;
pub(crate) use controller::{Controller, View};
pub(crate) use error::{ErrorKind, StateError};
pub(crate) use explain::{ExplainQuery, Explanation, EXPLAIN_METHOD};
pub(crate) use lists::UsersChanged;
pub(crate) use overlay::OverlayMode;
pub(crate) use servers::server_views;

use crate::config::{
    Cidr, CompressConfig, ErrorPages, GatewayConfig, Limits, ListenerKind, TlsListener,
};
use crate::routing::access::Access;
use crate::routing::names::KnownHosts;
use crate::routing::routes::{normalize_host, normalize_path, RouteId, RouteTable};
use crate::routing::{GroupId, Router, RoutingError};
use crate::upstreams::{Pool, Selection};
use metrics::RequestMetrics;
use ratelimit::{RouteLimits, SharedLimits};

/// Everything a request needs to be routed, swapped as a whole when the configuration changes.
/// A request keeps the snapshot it started with until it ends.
pub(crate) struct GatewayState {
    /// The routes, indexed by `RouteId`.
    pub(crate) routes: Vec<RouteState>,
    /// `gateway.error_pages`: the pages of requests no route serves; `None`: none.
    pub(crate) error_pages: Option<Arc<ErrorPages>>,
    /// Host and path → route (built once per configuration load); `None` when the one route
    /// serves every host and path, so a request needs no lookup.
    pub(crate) table: Option<Arc<RouteTable>>,
    /// One pool per group, indexed by `GroupId`.
    pub(crate) pools: Vec<Arc<Pool>>,
    /// Response header naming the chosen group, if enabled (parsed once; a clone per request
    /// copies nothing).
    pub(crate) decision_header: Option<http::HeaderName>,
    /// Each group's name as a header value, indexed by `GroupId` (built once, cloned cheaply).
    pub(crate) group_values: Vec<HeaderValue>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<Cidr>,
    pub(crate) limits: Limits,
    /// Whether any group picks servers by user (consistent hashing), so the proxy keeps the
    /// user id for server selection; otherwise it is not copied out of the request.
    pub(crate) selects_by_user: bool,
    /// `access_log.user_id`: the request keeps its user id for the access log.
    pub(crate) log_user_id: bool,
    /// The TLS listeners by address, with their acceptors (certificates change on reload).
    pub(crate) tls: Vec<(String, Arc<TlsListener>)>,
    /// `Strict-Transport-Security` by local port, for the TLS listeners that set one.
    pub(crate) hsts: Vec<(u16, HeaderValue)>,
    /// The hosts a redirect listener sends on to https.
    pub(crate) known_hosts: Arc<KnownHosts>,
    /// Where `shared` rate limits count (the store's Redis); `None` without `gateway.store`.
    pub(crate) shared_limits: Option<Arc<SharedLimits>>,
}

/// One route at run time.
pub(crate) struct RouteState {
    pub(crate) name: String,
    pub(crate) router: Arc<Router>,
    pub(crate) strip_prefix: bool,
    /// Who may use the route; `None`: anyone (the request pays one `Option` check).
    pub(crate) access: Option<Arc<Access>>,
    /// Request counters and histograms of this route's groups and rules.
    pub(crate) metrics: RequestMetrics,
    /// The route's rate limits; `None` when it has none (nothing is checked).
    pub(crate) limits: Option<Arc<RouteLimits>>,
    /// How the route's responses are compressed; `None`: not at all (one `Option` check).
    pub(crate) compress: Option<Arc<CompressConfig>>,
    /// The route's error pages; `None` when it has none.
    pub(crate) error_pages: Option<Arc<ErrorPages>>,
    /// The route is in maintenance: its `Retry-After` (seconds); `None`: serving.
    pub(crate) maintenance: Option<HeaderValue>,
    /// The header that tells the origin the served group; `None`: not sent.
    pub(crate) upstream_header: Option<http::HeaderName>,
    /// The headers the route's header rules read (QA overrides, lanes), made once per state
    /// from the router's rules: removed from every request before it goes upstream.
    pub(crate) override_headers: Box<[http::HeaderName]>,
}

impl GatewayState {
    /// Assembles a state from the routes' routers (in `config.routes` order, overlay and store
    /// applied). It only reads values that config validation parsed and checked.
    /// `limits`: each route's rate limits (in `config.routes` order), kept from the previous
    /// state where unchanged; `shared_limits`: the store's connection for shared limits.
    pub(crate) fn new(
        routers: Vec<Arc<Router>>,
        pools: Vec<Arc<Pool>>,
        limits: Vec<Option<Arc<RouteLimits>>>,
        shared_limits: Option<Arc<SharedLimits>>,
        config: &GatewayConfig,
    ) -> Self {
        let selects_by_user = pools
            .iter()
            .any(|pool| pool.config.selection == Selection::Consistent);
        let routes = config
            .routes
            .iter()
            .zip(routers)
            .zip(limits)
            .map(|((route, router), limits)| RouteState {
                name: route.name.clone(),
                metrics: RequestMetrics::new(&route.name, &router),
                strip_prefix: route.strip_prefix,
                access: route.access.clone(),
                limits,
                compress: route.compress.clone(),
                error_pages: route.error_pages.clone(),
                maintenance: None,
                upstream_header: route.upstream_header.clone(),
                // Validated names (config checks each rule's header), so none is dropped here.
                override_headers: router
                    .override_headers()
                    .filter_map(|name| http::HeaderName::from_bytes(name.as_bytes()).ok())
                    .collect(),
                router,
            })
            .collect();
        let mut tls = Vec::new();
        let mut hsts = Vec::new();
        let mut known_hosts = KnownHosts::default();
        for route in &config.routes {
            known_hosts
                .route_hosts
                .extend(route.matching.hosts.iter().cloned());
        }
        for listener in &config.listen {
            let ListenerKind::Tls(settings) = &listener.kind else {
                continue;
            };
            tls.push((listener.addr.clone(), settings.clone()));
            for cert in &settings.certificates {
                known_hosts
                    .certificate_names
                    .extend(cert.names.iter().cloned());
            }
            known_hosts
                .certificate_names
                .extend(settings.acme_names.iter().cloned());
            if let Some(value) = &settings.hsts {
                hsts.push((listener.port, value.clone()));
            }
        }
        GatewayState {
            shared_limits,
            tls,
            hsts,
            known_hosts: Arc::new(known_hosts),
            selects_by_user,
            log_user_id: config.log_user_id && config.access_log.is_some(),
            group_values: config.group_values.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            limits: config.limits,
            routes,
            error_pages: config.error_pages.clone(),
            table: config.route_table.clone(),
            pools,
            decision_header: config.decision_header.clone(),
        }
    }

    /// The TLS settings now in force for the listener on `addr`.
    pub(crate) fn tls_listener(&self, addr: &str) -> Option<&Arc<TlsListener>> {
        self.tls.iter().find(|(a, _)| a == addr).map(|(_, t)| t)
    }

    /// The `Strict-Transport-Security` value of the TLS listener on local `port`, if set.
    pub(crate) fn hsts_for(&self, port: u16) -> Option<&HeaderValue> {
        self.hsts.iter().find(|(p, _)| *p == port).map(|(_, v)| v)
    }

    /// The name of a group.
    pub(crate) fn group_name(&self, group: GroupId) -> &str {
        self.pools
            .get(group.0)
            .map_or("?", |p| p.config.name.as_str())
    }

    /// The route for a request's host and target (see `routing::routes`) with the length of
    /// the matched path prefix (for `strip_prefix`; the normalized path is left in `scratch`):
    /// `Ok(None)` when no route matches, an error when the path climbs above `/`.
    pub(crate) fn find_route(
        &self,
        host: &[u8],
        target: &[u8],
        scratch: &mut RouteScratch,
    ) -> Result<Option<(RouteId, usize)>, RoutingError> {
        let Some(table) = &self.table else {
            return Ok(Some((RouteId(0), 0)));
        };
        normalize_path(target, &mut scratch.path)?;
        // No usable host: only the routes for any host can match.
        let host = normalize_host(host, &mut scratch.host).unwrap_or_default();
        Ok(table.find(host, &scratch.path))
    }
}

/// Buffers for normalizing a request's host and path (kept by the caller between uses).
#[derive(Default)]
pub(crate) struct RouteScratch {
    pub(crate) host: Vec<u8>,
    /// The normalized path of the last lookup.
    pub(crate) path: Vec<u8>,
}

impl RouteState {
    /// The route's rules' name, for a decision made on this route.
    pub(crate) fn rule_name(&self, decision: &crate::routing::Decision) -> &str {
        self.router.rule_name(decision)
    }
}
