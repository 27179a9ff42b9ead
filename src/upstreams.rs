//! Upstream groups as pools of servers: one `pingora-load-balancing` balancer per group
//! (weighted round robin or consistent hashing by user id), active health checks (TCP or HTTP),
//! per-group timeouts and a fallback group for when no server is healthy.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::info;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType};
use pingora_http::RequestHeader;
use pingora_load_balancing::discovery::Static;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::{Consistent, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use crate::proxy::GatewayState;
use crate::routing::GroupId;

/// How a group picks a server for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Weighted round robin.
    RoundRobin,
    /// Consistent (ketama) hashing of the user id, so a user keeps hitting the same server.
    Consistent,
}

/// What an active health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProbe {
    /// A TCP connect.
    Tcp,
    /// `GET path` with `Host: host`, healthy when the status is `expect_status`.
    Http {
        path: String,
        host: String,
        expect_status: u16,
    },
}

/// An active health check of every server in a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub probe: HealthProbe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that mark an unhealthy server healthy.
    pub rise: usize,
    /// Consecutive failures that mark a healthy server unhealthy.
    pub fall: usize,
}

/// Timeouts towards a group's servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(60),
            write: Duration::from_secs(60),
            idle: Duration::from_secs(60),
        }
    }
}

/// One server of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub weight: usize,
}

/// One upstream group, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    pub name: String,
    pub servers: Vec<ServerConfig>,
    pub selection: Selection,
    /// `None` turns active health checks off: every server is always considered healthy.
    pub health_check: Option<HealthCheckConfig>,
    pub timeouts: Timeouts,
    /// Where this group's users go while none of its servers is healthy.
    pub fallback: Option<GroupId>,
}

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Consistent(LoadBalancer<Consistent>),
}

/// A group's servers at run time, with their health.
pub struct Pool {
    pub config: GroupConfig,
    balancer: Balancer,
}

/// Bound on the balancer's search for an acceptable server (Pingora's `max_iterations`).
const MAX_SELECT_ITERATIONS: usize = 256;

impl Pool {
    /// Builds the pool (all servers start healthy; the first health check corrects that).
    pub fn new(config: GroupConfig) -> Pool {
        let backends: BTreeSet<Backend> = config
            .servers
            .iter()
            .map(|s| {
                let mut backend = Backend::new_with_weight(&s.addr.to_string(), s.weight)
                    .expect("a SocketAddr always formats to a parsable address");
                backend.weight = s.weight;
                backend
            })
            .collect();
        let backends = || Backends::new(Static::new(backends.clone()));
        let mut balancer = match config.selection {
            Selection::RoundRobin => Balancer::RoundRobin(LoadBalancer::from_backends(backends())),
            Selection::Consistent => Balancer::Consistent(LoadBalancer::from_backends(backends())),
        };
        // Static discovery never blocks, so the first update completes at once.
        let updated = match &balancer {
            Balancer::RoundRobin(lb) => futures_now(lb.update()),
            Balancer::Consistent(lb) => futures_now(lb.update()),
        };
        debug_assert!(updated, "static discovery completes immediately");
        if let Some(hc) = &config.health_check {
            let check = build_health_check(hc);
            match &mut balancer {
                Balancer::RoundRobin(lb) => lb.set_health_check(check),
                Balancer::Consistent(lb) => lb.set_health_check(check),
            }
        }
        Pool { config, balancer }
    }

    /// A healthy server not in `exclude`; `key` (the user id) matters for consistent groups.
    pub fn select(&self, key: &[u8], exclude: &[SocketAddr]) -> Option<SocketAddr> {
        let accept = |b: &Backend, healthy: bool| {
            healthy && b.addr.as_inet().is_some_and(|a| !exclude.contains(a))
        };
        let backend = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        }?;
        backend.addr.as_inet().copied()
    }

    /// Whether any server is currently healthy.
    pub fn any_healthy(&self) -> bool {
        self.health().iter().any(|(_, healthy)| *healthy)
    }

    /// Each server with its current health.
    pub fn health(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| Some((*b.addr.as_inet()?, backends.ready(b))))
            .collect()
    }

    /// A peer for `addr` with this group's timeouts.
    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = HttpPeer::new(addr, false, String::new());
        let t = &self.config.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        peer
    }

    /// Runs one health-check pass over every server, in parallel.
    pub async fn run_health_check(&self) {
        self.backends().run_health_check(true).await;
    }

    fn backends(&self) -> &Backends {
        match &self.balancer {
            Balancer::RoundRobin(lb) => lb.backends(),
            Balancer::Consistent(lb) => lb.backends(),
        }
    }
}

/// Polls a future that is known to complete without waiting; false if it did not.
fn futures_now<F: std::future::Future<Output = pingora_core::Result<()>>>(future: F) -> bool {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    matches!(
        future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop())),
        Poll::Ready(Ok(()))
    )
}

fn build_health_check(config: &HealthCheckConfig) -> Box<dyn HealthCheck + Send + Sync> {
    match &config.probe {
        HealthProbe::Tcp => {
            let mut check = TcpHealthCheck::new();
            check.consecutive_success = config.rise;
            check.consecutive_failure = config.fall;
            check.peer_template.options.connection_timeout = Some(config.timeout);
            check
        }
        HealthProbe::Http {
            path,
            host,
            expect_status,
        } => {
            let mut check = HttpHealthCheck::new(host, false);
            check.consecutive_success = config.rise;
            check.consecutive_failure = config.fall;
            check.peer_template.options.connection_timeout = Some(config.timeout);
            check.peer_template.options.read_timeout = Some(config.timeout);
            if let Ok(mut req) = RequestHeader::build("GET", path.as_bytes(), None) {
                if req.insert_header("Host", host.as_str()).is_ok() {
                    check.req = req;
                }
            }
            let expect = *expect_status;
            check.validator = Some(Box::new(move |response| {
                if response.status.as_u16() == expect {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode("health check status", response.status.as_u16()),
                        format!("expected status {expect}"),
                    )
                }
            }));
            Box::new(check)
        }
    }
}

/// Background service that runs every group's health checks at that group's interval. It
/// follows the live state, so pools swapped in by a reload are checked from then on.
pub struct HealthChecker {
    state: Arc<ArcSwap<GatewayState>>,
}

impl HealthChecker {
    pub fn new(state: Arc<ArcSwap<GatewayState>>) -> Self {
        HealthChecker { state }
    }
}

/// How often the checker looks for a swapped state.
const STATE_POLL: Duration = Duration::from_millis(250);

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut running: Option<(Arc<GatewayState>, Vec<tokio::task::JoinHandle<()>>)> = None;
        loop {
            let state = self.state.load_full();
            if running
                .as_ref()
                .is_none_or(|(current, _)| !Arc::ptr_eq(current, &state))
            {
                if let Some((_, tasks)) = running.take() {
                    tasks.iter().for_each(|t| t.abort());
                }
                let tasks = state
                    .pools
                    .iter()
                    .filter_map(|pool| {
                        let interval = pool.config.health_check.as_ref()?.interval;
                        let pool = pool.clone();
                        Some(tokio::spawn(async move {
                            loop {
                                pool.run_health_check().await;
                                tokio::time::sleep(interval).await;
                            }
                        }))
                    })
                    .collect();
                info!("health checks running for {} group(s)", state.pools.len());
                running = Some((state, tasks));
            }
            tokio::select! {
                _ = tokio::time::sleep(STATE_POLL) => {}
                _ = shutdown.changed() => break,
            }
        }
        if let Some((_, tasks)) = running {
            tasks.iter().for_each(|t| t.abort());
        }
    }
}
