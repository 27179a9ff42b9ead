//! `GET /metrics` on `gateway.metrics.listen`: the gauges that mirror live state are refreshed
//! from the controller, then the registry is encoded as Prometheus text.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use prometheus::{Encoder, TextEncoder};

use crate::config::HeadLimits;
use crate::proxy::connections::{listener_loads, AcceptGate, Connections, Limited};
use crate::proxy::guard::GuardedApp;
use crate::proxy::InFlight;
use crate::state::metrics::METRICS;
use crate::state::{server_views, Controller};

/// Refreshes the gauges that mirror live state (health, generation, list sizes).
fn refresh(controller: &Controller) {
    let m = &*METRICS;
    let state = controller.state().load_full();
    m.healthy.reset();
    for pool in &state.pools {
        for (addr, healthy) in pool.health() {
            m.healthy
                .with_label_values(&[&pool.config.name, &addr.to_string()])
                .set(i64::from(healthy));
        }
    }
    m.in_flight.reset();
    m.server_mode.reset();
    for pool in &state.pools {
        for server in server_views(pool) {
            let labels = [pool.config.name.as_str(), server.server.as_str()];
            m.in_flight
                .with_label_values(&labels)
                .set(i64::try_from(server.in_flight).unwrap_or(i64::MAX));
            m.server_mode
                .with_label_values(&[labels[0], labels[1], server.mode])
                .set(1);
        }
    }
    // The count lives in upstreams (below the metrics); catch the counter up with it.
    let failures = crate::upstreams::resolve_failures();
    m.resolve_failures
        .inc_by(failures.saturating_sub(m.resolve_failures.get()));
    m.generation.set(controller.generation() as i64);
    if let Some(store) = controller.store() {
        m.store_connected.set(i64::from(store.is_connected()));
        for (set, stale, _) in store.staleness() {
            m.store_staleness
                .with_label_values(&[&set])
                .set(stale.unwrap_or(-1.0));
        }
    }
    m.certificate_expiry.reset();
    for (_, listener) in &state.tls {
        for cert in &listener.certificates {
            m.certificate_expiry
                .with_label_values(&[&cert.label()])
                .set(cert.not_after);
        }
    }
    // Uploaded certificates (`PUT /config/certificates/{name}`), by first name like the files'.
    for upload in &crate::config::uploaded::uploaded().load().served {
        let label = upload.facts.names.first().unwrap_or(&upload.name);
        m.certificate_expiry
            .with_label_values(&[label])
            .set(upload.facts.not_after);
    }
    m.connections.reset();
    m.connection_limit.reset();
    for listener in listener_loads() {
        let label = [listener.addr.as_str()];
        m.connections
            .with_label_values(&label)
            .set(listener.open as i64);
        m.connection_limit
            .with_label_values(&label)
            .set(listener.max_connections as i64);
    }
    m.users.reset();
    for route in &state.routes {
        for rule in route.router.rules() {
            if let Some(users) = rule.user_set() {
                m.users
                    .with_label_values(&[&route.name, rule.name()])
                    .set(users.len() as i64);
            }
        }
    }
}

/// Serves `GET /metrics`.
pub(crate) struct MetricsApp {
    controller: Arc<Controller>,
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let (status, content_type, body) = if session.req_header().uri.path() != "/metrics" {
            (
                StatusCode::NOT_FOUND,
                "text/plain",
                b"try /metrics\n".to_vec(),
            )
        } else {
            refresh(&self.controller);
            let mut body = Vec::new();
            let encoder = TextEncoder::new();
            match encoder.encode(&METRICS.registry.gather(), &mut body) {
                Ok(()) => (StatusCode::OK, "text/plain; version=0.0.4", body),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("cannot encode metrics: {e}\n").into_bytes(),
                ),
            }
        };
        // A body sent with the request is not read through to reach a next request: the
        // connection closes after the answer.
        if !session.is_body_done() {
            session.set_keepalive(None);
        }
        super::http_response(status, content_type, body)
    }
}

/// A listening service for `/metrics`, behind the proxy's request-head guard with `limits`
/// (its connections counted apart from the proxy's).
pub(crate) fn metrics_service(
    controller: Arc<Controller>,
    listen: &str,
    limits: HeadLimits,
    connections: Arc<Connections>,
) -> Service<Limited<GuardedApp<HttpServer<MetricsApp>>>> {
    let mut service = Service::new(
        "canary-gateway metrics".to_string(),
        Limited::new(
            GuardedApp::new(
                HttpServer::new_app(MetricsApp { controller }),
                limits,
                InFlight::default(),
            )
            .for_listener(connections.clone()),
            connections.clone(),
        ),
    );
    service.set_connection_filter(AcceptGate::new(connections));
    // Operators' traffic: one thread is plenty, whatever `threads` says.
    service.threads = Some(1);
    service.add_tcp(listen);
    service
}
