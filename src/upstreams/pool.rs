//! A group's servers at run time: the balancer, its health, and peers with the group's timeouts.

use std::net::SocketAddr;
use std::sync::Arc;

use pingora_core::upstreams::peer::HttpPeer;
use pingora_load_balancing::selection::{Consistent, RoundRobin};
use pingora_load_balancing::{Backend, Backends, LoadBalancer};

use super::names::{Discovery, NameState, Names};
use super::peer::server_peer;
use super::servers::{ServerMode, ServerUse, Servers};
use super::{GroupConfig, Protocol, Selection, UpstreamTls};

/// Gates per pool of an HTTP/2-only group; a server's is picked by its address's hash.
const CONNECT_GATES: usize = 8;

enum Balancer {
    RoundRobin(LoadBalancer<RoundRobin>),
    Consistent(LoadBalancer<Consistent>),
}

/// A group's servers at run time, with their health.
pub(crate) struct Pool {
    pub(crate) config: GroupConfig,
    balancer: Balancer,
    /// The group's server when it has exactly one (the common `upstream v1` / `v2` shape):
    /// selection is then a health lookup, without the balancer's iterator.
    single: Option<(Backend, SocketAddr)>,
    /// [`UpstreamTls::pool_key`] of the group's TLS settings, hashed once here rather than per
    /// request (it covers the CA and client certificate files).
    tls_pool_key: u64,
    /// The servers as discovered (address servers and names' last good addresses).
    names: Arc<Names>,
    /// For an HTTP/2-only group (`h2`, `h2c`): what a request holds from picking a server
    /// until it has a stream on a connection to it (see [`Pool::connect_gate`]).
    connect_gates: Vec<Arc<tokio::sync::Semaphore>>,
    /// Each configured server's mode (set from the control state) and requests in flight.
    servers: Servers,
}

/// Bound on the balancer's search for an acceptable server (Pingora's `max_iterations`).
const MAX_SELECT_ITERATIONS: usize = 256;

impl Pool {
    /// Builds the pool (all servers start healthy; the first health check corrects that).
    pub(crate) fn new(config: GroupConfig) -> Pool {
        let names = Names::new(&config);
        let backends = || Backends::new(Box::new(Discovery(names.clone())));
        let mut balancer = match config.selection {
            Selection::RoundRobin => Balancer::RoundRobin(LoadBalancer::from_backends(backends())),
            Selection::Consistent => Balancer::Consistent(LoadBalancer::from_backends(backends())),
        };
        // The discovery only reads the current set, so the first update completes at once.
        let updated = match &balancer {
            Balancer::RoundRobin(lb) => futures_now(lb.update()),
            Balancer::Consistent(lb) => futures_now(lb.update()),
        };
        debug_assert!(updated, "discovery completes immediately");
        let tls_pool_key = config.tls.as_ref().map_or(0, UpstreamTls::pool_key);
        if let Some(hc) = &config.health_check {
            let check = super::probe::health_check(hc, &config, tls_pool_key);
            match &mut balancer {
                Balancer::RoundRobin(lb) => lb.set_health_check(check),
                Balancer::Consistent(lb) => lb.set_health_check(check),
            }
        }
        let single = match config.servers.as_slice() {
            [only] if config.named.is_empty() => backends_of(&balancer)
                .get_backend()
                .iter()
                .next()
                .map(|backend| (backend.clone(), only.addr)),
            _ => None,
        };
        let connect_gates = match config.protocol {
            Protocol::H2 | Protocol::H2c => (0..CONNECT_GATES)
                .map(|_| Arc::new(tokio::sync::Semaphore::new(1)))
                .collect(),
            Protocol::H1 | Protocol::Auto => Vec::new(),
        };
        let servers = Servers::new(&config);
        Pool {
            servers,
            config,
            balancer,
            single,
            tls_pool_key,
            names,
            connect_gates,
        }
    }

    /// The gate a request to `addr` passes while Pingora finds it a stream, for HTTP/2-only
    /// groups. Pingora puts a new HTTP/2 connection in its pool only once its handshake is
    /// done, so requests arriving together would each open a connection of their own (100 at
    /// once: 100 connections of one stream each). Through the gate, one at a time per server
    /// takes a stream (at once on a pooled connection with a free stream, or after opening
    /// one), so a server gets about ⌈concurrent requests / max_streams_per_connection⌉
    /// connections. `None` for HTTP/1.1 and `auto` groups (an HTTP/1.1 connection serves one
    /// request; gating its connects would queue them).
    pub(crate) fn connect_gate(&self, addr: SocketAddr) -> Option<&Arc<tokio::sync::Semaphore>> {
        if self.connect_gates.is_empty() {
            return None;
        }
        let port = addr.port().to_be_bytes();
        let hash = match addr.ip() {
            std::net::IpAddr::V4(ip) => crate::routing::fnv1a64(&[&ip.octets(), &port]),
            std::net::IpAddr::V6(ip) => crate::routing::fnv1a64(&[&ip.octets(), &port]),
        };
        self.connect_gates
            .get((hash % CONNECT_GATES as u64) as usize)
    }

    /// The weight `addr` is served with (1 when it is not a server of the group).
    pub(crate) fn weight(&self, addr: SocketAddr) -> usize {
        self.backends()
            .get_backend()
            .iter()
            .find(|b| b.addr.as_inet() == Some(&addr))
            .map_or(1, |b| b.weight)
    }

    /// Whether the group has servers given by name (resolved by [`Pool::run_resolver`]).
    pub(crate) fn has_names(&self) -> bool {
        self.names.any()
    }

    /// Each named server with its last good addresses.
    pub(crate) fn names(&self) -> Vec<NameState> {
        self.names.states()
    }

    /// Resolves the group's names for as long as the pool is in service: each round that
    /// changes an address updates the balancer (kept addresses keep their health).
    pub(crate) async fn run_resolver(&self) {
        let group = &self.config.name;
        let resolver = loop {
            match self.names.resolver() {
                Ok(resolver) => break resolver,
                Err(e) => {
                    log::warn!("group {group}: no resolver ({e}); trying again");
                    tokio::time::sleep(self.config.resolve.interval).await;
                }
            }
        };
        loop {
            let (changed, wait) = self.names.resolve_once(group, &resolver).await;
            if changed {
                let updated = match &self.balancer {
                    Balancer::RoundRobin(lb) => lb.update().await,
                    Balancer::Consistent(lb) => lb.update().await,
                };
                if let Err(e) = updated {
                    log::warn!("group {group}: updating the servers failed: {e}");
                }
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// A healthy server that takes requests (not draining or disabled) and is neither in
    /// `failed` nor `avoid`. `key` (the user id) matters for consistent groups only; round
    /// robin ignores it.
    pub(crate) fn select(
        &self,
        key: &[u8],
        failed: &[SocketAddr],
        avoid: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        let excluded = |a: &SocketAddr| failed.contains(a) || Some(*a) == avoid;
        // One relaxed load while every server is enabled (the usual case); the mode lookup
        // only while an operator holds some server back.
        let all_enabled = self.servers.all_enabled();
        let takes = |a: SocketAddr| all_enabled || self.takes_requests(a);
        if let Some((backend, addr)) = &self.single {
            // What the balancer would do for one server: usable when healthy and not excluded.
            let usable = !excluded(addr) && takes(*addr) && self.backends().ready(backend);
            return usable.then_some(*addr);
        }
        let accept = |b: &Backend, healthy: bool| {
            healthy && b.addr.as_inet().is_some_and(|a| !excluded(a) && takes(*a))
        };
        let backend = match &self.balancer {
            Balancer::RoundRobin(lb) => lb.select_with(&[], MAX_SELECT_ITERATIONS, accept),
            Balancer::Consistent(lb) => lb.select_with(key, MAX_SELECT_ITERATIONS, accept),
        }?;
        backend.addr.as_inet().copied()
    }

    /// Whether any server is currently healthy and takes requests (a group whose servers are
    /// all down, draining or disabled is served by its fallback).
    pub(crate) fn any_healthy(&self) -> bool {
        self.health()
            .iter()
            .any(|(addr, healthy)| *healthy && self.takes_requests(*addr))
    }

    /// Whether `addr` takes new requests: not an operator's draining or disabled server.
    pub(crate) fn takes_requests(&self, addr: SocketAddr) -> bool {
        self.slot(addr)
            .is_none_or(|slot| self.servers.takes_requests(slot))
    }

    /// The configured server (its slot) that `addr` is, or is an address of.
    fn slot(&self, addr: SocketAddr) -> Option<usize> {
        self.servers.slot_of(addr, |a| {
            if self.names.any() {
                self.names.index_of(a)
            } else {
                None
            }
        })
    }

    /// Sets each configured server's mode (`mode_of` the server as written; `None`: enabled).
    /// Takes effect for the next selection, in every state that holds this pool.
    pub(crate) fn set_modes(&self, mode_of: impl Fn(&str) -> Option<ServerMode>) {
        self.servers.set_modes(mode_of);
    }

    /// Whether `written` (a server as written in the group) is one of the group's servers.
    pub(crate) fn has_server(&self, written: &str) -> bool {
        self.servers.has(written)
    }

    /// Counts a request sent to `addr` (one atomic add); the returned slot goes back to
    /// [`Pool::end_request`] when the request is done. `None`: not a configured server.
    pub(crate) fn begin_request(&self, addr: SocketAddr) -> Option<usize> {
        let slot = self.slot(addr)?;
        self.servers.begin(slot);
        Some(slot)
    }

    /// Counts the end of a request [`Pool::begin_request`] counted.
    pub(crate) fn end_request(&self, slot: usize) {
        self.servers.end(slot);
    }

    /// Each configured server's mode and requests in flight, in configuration order.
    pub(crate) fn server_uses(&self) -> Vec<ServerUse> {
        self.servers.uses()
    }

    /// Each server with its current health.
    pub(crate) fn health(&self) -> Vec<(SocketAddr, bool)> {
        let backends = self.backends();
        backends
            .get_backend()
            .iter()
            .filter_map(|b| Some((*b.addr.as_inet()?, backends.ready(b))))
            .collect()
    }

    /// A peer for `addr` with this group's timeouts.
    pub(crate) fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let mut peer = server_peer(
            addr,
            self.config.tls.as_ref(),
            self.tls_pool_key,
            self.config.protocol,
            self.config.max_streams,
        );
        let t = &self.config.timeouts;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        peer
    }

    /// Runs one health-check pass over every server, in parallel.
    pub(crate) async fn run_health_check(&self) {
        self.backends().run_health_check(true).await;
    }

    fn backends(&self) -> &Backends {
        backends_of(&self.balancer)
    }
}

fn backends_of(balancer: &Balancer) -> &Backends {
    match balancer {
        Balancer::RoundRobin(lb) => lb.backends(),
        Balancer::Consistent(lb) => lb.backends(),
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
