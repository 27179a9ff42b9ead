//! Prometheus metrics: request counts and latency per group, upstream errors, retries,
//! fallbacks, server health, config generation, reloads and list sizes. The registry lives
//! here, beside the state that fills it; `ops::metrics` serves it on `gateway.metrics.listen`.
//!
//! The request path only touches pre-resolved counters and histograms (atomics); label lookups
//! in the `prometheus` crate's maps happen when a state is built, on rare events (errors,
//! fallbacks, unusual status codes) and at scrape time.

use std::sync::{Arc, LazyLock, OnceLock};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use super::figures::{group_stats, GroupStats};
use crate::routing::{IdSource, Router};

/// Every metric the gateway exports, in its own registry.
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: IntCounterVec,
    pub(crate) duration: HistogramVec,
    pub(crate) connect_errors: IntCounterVec,
    pub(crate) retries: IntCounterVec,
    pub(crate) fallbacks: IntCounterVec,
    pub(crate) healthy: IntGaugeVec,
    /// Requests in flight per configured server (as written in its group).
    pub(crate) in_flight: IntGaugeVec,
    /// 1 for each configured server's current mode (`enabled`, `draining`, `drained`,
    /// `disabled`).
    pub(crate) server_mode: IntGaugeVec,
    /// Failed lookups of `name:port` servers (mirrors `upstreams::resolve_failures`).
    pub(crate) resolve_failures: IntCounter,
    pub(crate) generation: IntGauge,
    pub(crate) reloads: IntCounterVec,
    pub(crate) users: IntGaugeVec,
    pub(crate) access_log_dropped: IntCounter,
    pub(crate) bad_signatures: IntCounter,
    pub(crate) identity: IntCounterVec,
    pub(crate) store_staleness: prometheus::GaugeVec,
    pub(crate) store_connected: IntGauge,
    pub(crate) control_version: IntGauge,
    pub(crate) rollout_step: IntGaugeVec,
    pub(crate) rollout_actions: IntCounterVec,
    pub(crate) tls_handshakes: IntCounterVec,
    pub(crate) acme_orders: IntCounterVec,
    pub(crate) acme_store_errors: IntCounter,
    pub(crate) certificate_expiry: IntGaugeVec,
    pub(crate) notifications: IntCounterVec,
    pub(crate) notification_retries: IntCounterVec,
    pub(crate) connections: IntGaugeVec,
    pub(crate) connection_limit: IntGaugeVec,
    pub(crate) connections_refused: IntCounterVec,
    pub(crate) idle_connections_closed: IntCounterVec,
    pub(crate) rate_limited: IntCounterVec,
    pub(crate) rate_limit_fallback: IntGauge,
    pub(crate) grpc_responses: IntCounterVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "gateway_requests_total",
            "Proxied requests by route, serving group, deciding rule and status sent",
        ),
        &["route", "group", "rule", "status"],
    )?;
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "gateway_request_duration_seconds",
            "Request start to last byte sent, by route and serving group",
        )
        .buckets(vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        &["route", "group"],
    )?;
    let connect_errors = IntCounterVec::new(
        Opts::new(
            "gateway_upstream_connect_errors_total",
            "Failed connection attempts to a group's servers",
        ),
        &["group"],
    )?;
    let retries = IntCounterVec::new(
        Opts::new("gateway_retries_total", "Requests sent upstream again"),
        &["group"],
    )?;
    let fallbacks = IntCounterVec::new(
        Opts::new(
            "gateway_fallbacks_total",
            "Requests served by a fallback group because their group had no server",
        ),
        &["route", "from", "to"],
    )?;
    let healthy = IntGaugeVec::new(
        Opts::new(
            "gateway_upstream_healthy",
            "1 when the server passes its health check",
        ),
        &["group", "server"],
    )?;
    let in_flight = IntGaugeVec::new(
        Opts::new(
            "gateway_upstream_in_flight",
            "Requests sent to the server that have not finished",
        ),
        &["group", "server"],
    )?;
    let server_mode = IntGaugeVec::new(
        Opts::new(
            "gateway_upstream_server_mode",
            "1 for the server's mode: enabled, draining, drained or disabled",
        ),
        &["group", "server", "mode"],
    )?;
    let generation = IntGauge::new(
        "gateway_config_generation",
        "Configuration generation (+1 per reload or admin change)",
    )?;
    let reloads = IntCounterVec::new(
        Opts::new("gateway_reloads_total", "Reloads by result (ok, error)"),
        &["result"],
    )?;
    let users = IntGaugeVec::new(
        Opts::new("gateway_users", "Users on each list rule, by route"),
        &["route", "rule"],
    )?;
    let access_log_dropped = IntCounter::new(
        "gateway_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind",
    )?;
    let resolve_failures = IntCounter::new(
        "gateway_upstream_resolve_failures_total",
        "Failed DNS lookups of upstream servers given by name (the last good addresses were kept)",
    )?;
    let bad_signatures = IntCounter::new(
        "gateway_cookie_signature_invalid_total",
        "Requests whose user cookie had a missing or wrong signature (treated as anonymous)",
    )?;
    let identity = IntCounterVec::new(
        Opts::new(
            "gateway_identity_total",
            "Requests by route and the identity source that gave the user id (cookie, header, \
             jwt, assigned, assigned_new, none), and tokens that failed verification (jwt_invalid)",
        ),
        &["route", "source"],
    )?;
    let store_staleness = prometheus::GaugeVec::new(
        Opts::new(
            "gateway_store_staleness_seconds",
            "Seconds since each store-backed set was last known to match Redis (-1: never loaded)",
        ),
        &["set"],
    )?;
    let store_connected = IntGauge::new(
        "gateway_store_connected",
        "1 while the Redis store is connected and followed",
    )?;
    let control_version = IntGauge::new(
        "gateway_control_version",
        "Version of the control state (percentages, overrides, lists, plans) this node applied",
    )?;
    let rollout_step = IntGaugeVec::new(
        Opts::new(
            "gateway_rollout_step",
            "Step of each rollout plan, counted from 1 (0 after a rollback)",
        ),
        &["route", "rule"],
    )?;
    let rollout_actions = IntCounterVec::new(
        Opts::new(
            "gateway_rollout_actions_total",
            "Rollout plan actions taken on this node (start, pause, resume, abort, advance, complete, rollback)",
        ),
        &["route", "rule", "action"],
    )?;
    let notifications = IntCounterVec::new(
        Opts::new(
            "gateway_notifications_total",
            "Webhook notices by webhook (its index in gateway.notify) and result (sent, failed after every retry, dropped from a full queue)",
        ),
        &["webhook", "result"],
    )?;
    let notification_retries = IntCounterVec::new(
        Opts::new(
            "gateway_notification_retries_total",
            "Webhook delivery attempts after a failed one, by webhook",
        ),
        &["webhook"],
    )?;
    let rate_limited = IntCounterVec::new(
        Opts::new(
            "gateway_rate_limited_total",
            "Requests refused with 429 by a route's rate limit, by route and limit name",
        ),
        &["route", "limit"],
    )?;
    let grpc_responses = IntCounterVec::new(
        Opts::new(
            "gateway_grpc_responses_total",
            "gRPC calls by route, serving group and grpc-status (the origin's, or the gateway's own for the errors it makes)",
        ),
        &["route", "group", "grpc_status"],
    )?;
    let rate_limit_fallback = IntGauge::new(
        "gateway_rate_limit_fallback",
        "1 while shared rate limits are counted by this node alone because Redis does not answer",
    )?;
    let tls_handshakes = IntCounterVec::new(
        Opts::new(
            "gateway_tls_handshakes_total",
            "TLS handshakes on the client listeners by result (ok, failed, timeout)",
        ),
        &["result"],
    )?;
    let acme_orders = IntCounterVec::new(
        Opts::new(
            "gateway_acme_orders_total",
            "ACME certificate orders by result (ok, failed)",
        ),
        &["result"],
    )?;
    let acme_store_errors = IntCounter::new(
        "gateway_acme_store_errors_total",
        "Times the ACME task could not read or write Redis (gateway.store): an order waited, or an issued certificate waited to be stored",
    )?;
    let certificate_expiry = IntGaugeVec::new(
        Opts::new(
            "gateway_certificate_expiry_seconds",
            "When each served certificate expires, in seconds since the Unix epoch (subtract time() for the time left)",
        ),
        &["name"],
    )?;
    let connections = IntGaugeVec::new(
        Opts::new(
            "gateway_connections",
            "Client connections open on each listener (proxy, redirect, admin, metrics)",
        ),
        &["listener"],
    )?;
    let connection_limit = IntGaugeVec::new(
        Opts::new(
            "gateway_connection_limit",
            "Most client connections each listener keeps open at once (max_connections)",
        ),
        &["listener"],
    )?;
    let connections_refused = IntCounterVec::new(
        Opts::new(
            "gateway_connections_refused_total",
            "Connections closed as soon as accepted because their listener was full and had no idle connection to close",
        ),
        &["listener"],
    )?;
    let idle_connections_closed = IntCounterVec::new(
        Opts::new(
            "gateway_idle_connections_closed_total",
            "Idle connections (HTTP/1 keep-alive or new and silent, HTTP/2 with no stream) closed to make room for a new connection on a full listener",
        ),
        &["listener"],
    )?;
    registry.register(Box::new(connections.clone()))?;
    registry.register(Box::new(connection_limit.clone()))?;
    registry.register(Box::new(connections_refused.clone()))?;
    registry.register(Box::new(idle_connections_closed.clone()))?;
    registry.register(Box::new(rate_limited.clone()))?;
    registry.register(Box::new(grpc_responses.clone()))?;
    registry.register(Box::new(rate_limit_fallback.clone()))?;
    registry.register(Box::new(tls_handshakes.clone()))?;
    registry.register(Box::new(acme_orders.clone()))?;
    registry.register(Box::new(acme_store_errors.clone()))?;
    registry.register(Box::new(notifications.clone()))?;
    registry.register(Box::new(notification_retries.clone()))?;
    registry.register(Box::new(certificate_expiry.clone()))?;
    registry.register(Box::new(control_version.clone()))?;
    registry.register(Box::new(rollout_step.clone()))?;
    registry.register(Box::new(rollout_actions.clone()))?;
    registry.register(Box::new(store_staleness.clone()))?;
    registry.register(Box::new(store_connected.clone()))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    registry.register(Box::new(connect_errors.clone()))?;
    registry.register(Box::new(retries.clone()))?;
    registry.register(Box::new(fallbacks.clone()))?;
    registry.register(Box::new(healthy.clone()))?;
    registry.register(Box::new(in_flight.clone()))?;
    registry.register(Box::new(server_mode.clone()))?;
    registry.register(Box::new(resolve_failures.clone()))?;
    registry.register(Box::new(generation.clone()))?;
    registry.register(Box::new(reloads.clone()))?;
    registry.register(Box::new(users.clone()))?;
    registry.register(Box::new(access_log_dropped.clone()))?;
    registry.register(Box::new(bad_signatures.clone()))?;
    registry.register(Box::new(identity.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        duration,
        connect_errors,
        retries,
        fallbacks,
        healthy,
        in_flight,
        server_mode,
        resolve_failures,
        generation,
        reloads,
        users,
        access_log_dropped,
        bad_signatures,
        identity,
        store_staleness,
        store_connected,
        control_version,
        rollout_step,
        rollout_actions,
        tls_handshakes,
        acme_orders,
        acme_store_errors,
        certificate_expiry,
        notifications,
        notification_retries,
        connections,
        connection_limit,
        connections_refused,
        idle_connections_closed,
        rate_limited,
        rate_limit_fallback,
        grpc_responses,
    })
}

/// The process's metrics. Building them cannot fail (fixed names and labels); if it ever did,
/// that is a programming error caught by the first test.
pub(crate) static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| build().expect("metric names and labels are valid and unique"));

/// Status codes whose request counters are resolved ahead of time.
const COMMON_STATUSES: [u16; 16] = [
    200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 408, 413, 500, 502, 503, 504,
];

/// The route label of requests no route matched.
pub(crate) const NO_ROUTE: &str = "none";

/// One route's request counters and histograms, resolved on first use per (group, rule) and
/// then kept: a request only touches atomics. (Resolving every combination up front would cost
/// routes × groups × rules × statuses label lookups on every state change.)
pub(crate) struct RequestMetrics {
    route: String,
    /// `[group × rule slot]`: the counters of the common statuses; rule slot `rules.len()` is
    /// "default" (no rule).
    counters: Vec<OnceLock<Box<[IntCounter]>>>,
    histograms: Vec<OnceLock<Histogram>>,
    /// Per group: what rollout plans judge on (see `figures`).
    stats: Vec<OnceLock<Arc<GroupStats>>>,
    group_names: Vec<String>,
    rule_names: Vec<String>,
    /// `gateway_identity_total` of this route: one counter per [`IdSource`], then
    /// `jwt_invalid`.
    identity: OnceLock<Box<[IntCounter]>>,
}

impl RequestMetrics {
    pub(crate) fn new(route: &str, router: &Router) -> Self {
        let mut rule_names: Vec<String> = router
            .rules()
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        rule_names.push("default".into());
        let groups = router.group_names().len();
        RequestMetrics {
            route: route.to_string(),
            counters: (0..groups * rule_names.len())
                .map(|_| OnceLock::new())
                .collect(),
            histograms: (0..groups).map(|_| OnceLock::new()).collect(),
            stats: (0..groups).map(|_| OnceLock::new()).collect(),
            group_names: router.group_names().to_vec(),
            rule_names,
            identity: OnceLock::new(),
        }
    }

    fn identity_counters(&self) -> &[IntCounter] {
        self.identity.get_or_init(|| {
            IdSource::ALL
                .iter()
                .map(|s| s.as_str())
                .chain(["jwt_invalid"])
                .map(|source| METRICS.identity.with_label_values(&[&self.route, source]))
                .collect()
        })
    }

    /// Counts the source that gave a request's user id.
    pub(crate) fn count_identity(&self, source: IdSource) {
        if let Some(c) = self.identity_counters().get(source.index()) {
            c.inc();
        }
    }

    /// Counts tokens that failed verification (none: nothing is touched).
    pub(crate) fn count_jwt_invalid(&self, tokens: u32) {
        if tokens > 0 {
            if let Some(c) = self.identity_counters().get(IdSource::ALL.len()) {
                c.inc_by(u64::from(tokens));
            }
        }
    }

    /// Counts one finished request: `group` served it, `decided` is the group its rules chose
    /// (they differ after a fallback), `rule` the rule index or `None` for no rule. A plan's
    /// figures count the request for the decided group, as an error when it got a 5xx or its
    /// group could not serve it.
    pub(crate) fn record(
        &self,
        group: usize,
        decided: usize,
        rule: Option<usize>,
        status: u16,
        seconds: f64,
    ) {
        let m = &*METRICS;
        let slot = rule.unwrap_or(self.rule_names.len() - 1);
        let group_name = self.group_names.get(group).map_or("?", String::as_str);
        let rule_name = self.rule_names.get(slot).map_or("?", String::as_str);
        let row = self
            .counters
            .get(group * self.rule_names.len() + slot)
            .map(|row| {
                row.get_or_init(|| {
                    COMMON_STATUSES
                        .iter()
                        .map(|s| {
                            m.requests.with_label_values(&[
                                &self.route,
                                group_name,
                                rule_name,
                                &s.to_string(),
                            ])
                        })
                        .collect()
                })
            });
        let counter = COMMON_STATUSES
            .iter()
            .position(|s| *s == status)
            .and_then(|i| row?.get(i));
        match counter {
            Some(c) => c.inc(),
            None => m
                .requests
                .with_label_values(&[&self.route, group_name, rule_name, &status.to_string()])
                .inc(),
        }
        if let Some(h) = self.histograms.get(group) {
            h.get_or_init(|| m.duration.with_label_values(&[&self.route, group_name]))
                .observe(seconds);
        }
        if let Some(stats) = self.stats.get(decided) {
            let decided_name = self.group_names.get(decided).map_or("?", String::as_str);
            stats
                .get_or_init(|| group_stats(&self.route, decided_name))
                .record(status >= 500 || group != decided, seconds);
        }
    }
}

/// Counts a request a route's access control (403, 401) or rate limit (429) refused: by route
/// and status, with no group or rule, since no group served it.
pub(crate) fn record_refused(route: &str, status: u16) {
    METRICS
        .requests
        .with_label_values(&[route, "", "", &status.to_string()])
        .inc();
}

/// Counts a request that no route matched (its status, usually 404).
pub(crate) fn record_unrouted(status: u16) {
    METRICS
        .requests
        .with_label_values(&[NO_ROUTE, "", "", &status.to_string()])
        .inc();
}
