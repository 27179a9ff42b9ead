//! Servers given by name (`name:port`): a `pingora-load-balancing` discovery whose backends are
//! the group's address servers plus each name's last good addresses, and the lookups that
//! refresh them (`hickory-resolver`, against the group's `resolver` or the system's
//! configuration). A failed lookup keeps the name's last good addresses; it is logged and
//! counted. The balancer reads the discovered set through its own arc-swap, so requests never
//! wait on a lookup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use log::{info, warn};
use pingora_load_balancing::discovery::ServiceDiscovery;
use pingora_load_balancing::Backend;

use super::{GroupConfig, NamedServer, ResolveConfig};

/// Failed lookups of every group's names since the process started (for `/metrics`).
static FAILURES: AtomicU64 = AtomicU64::new(0);

/// Failed lookups of server names since the process started.
pub(crate) fn resolve_failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

/// Shortest wait between two lookups of a name, whatever the record's TTL says.
const MIN_RESOLVE_WAIT: Duration = Duration::from_secs(1);

/// What is known of one named server, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameState {
    /// `name:port` as configured.
    pub(crate) name: String,
    /// The last good addresses (empty until a lookup succeeds).
    pub(crate) addrs: Vec<SocketAddr>,
    /// Failed lookups of this name for this pool.
    pub(crate) failures: u64,
    /// The last lookup's error, if it failed.
    pub(crate) error: Option<String>,
}

/// The addresses a named server has when its pool is built, so that a new process (a start, a
/// hot restart) does not answer 503 until the first background lookup: the system's resolver
/// asked once, as nginx resolves its upstream names at start. Empty where a `resolver` is
/// configured (that server is asked in the background only) or the lookup fails (logged; the
/// background lookups go on).
fn first_lookup(server: &NamedServer, system_resolver: bool) -> Vec<SocketAddr> {
    if !system_resolver {
        return Vec::new();
    }
    match (server.host.as_str(), server.port).to_socket_addrs() {
        Ok(found) => {
            let mut addrs: Vec<SocketAddr> = found.collect();
            addrs.sort();
            addrs.dedup();
            addrs
        }
        Err(e) => {
            warn!(
                "{}:{} does not resolve yet ({e}); it is looked up again in the background",
                server.host, server.port
            );
            Vec::new()
        }
    }
}

/// A group's servers as discovered: the address servers and the named ones' last good addresses.
pub(super) struct Names {
    statics: Vec<(SocketAddr, usize)>,
    named: Vec<NamedServer>,
    resolve: ResolveConfig,
    /// What the balancer serves (read by [`Discovery`]).
    current: ArcSwap<BTreeSet<Backend>>,
    /// Per named server, in configuration order.
    states: ArcSwap<Vec<NameState>>,
}

impl Names {
    pub(super) fn new(config: &GroupConfig) -> Arc<Names> {
        let names = Names {
            statics: config.servers.iter().map(|s| (s.addr, s.weight)).collect(),
            named: config.named.clone(),
            resolve: config.resolve,
            current: ArcSwap::from_pointee(BTreeSet::new()),
            states: ArcSwap::from_pointee(
                config
                    .named
                    .iter()
                    .map(|n| NameState {
                        name: format!("{}:{}", n.host, n.port),
                        addrs: first_lookup(n, config.resolve.resolver.is_none()),
                        failures: 0,
                        error: None,
                    })
                    .collect(),
            ),
        };
        names.publish();
        Arc::new(names)
    }

    /// Whether the group has servers given by name.
    pub(super) fn any(&self) -> bool {
        !self.named.is_empty()
    }

    pub(super) fn states(&self) -> Vec<NameState> {
        self.states.load().as_ref().clone()
    }

    /// Which named server (its index in configuration order) `addr` is one of the addresses
    /// of, without copying the states.
    pub(super) fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.states
            .load()
            .iter()
            .position(|s| s.addrs.contains(&addr))
    }

    /// Rebuilds the served set from the address servers and the names' last good addresses (an
    /// address listed twice keeps its first weight).
    fn publish(&self) {
        let states = self.states.load();
        let mut weights: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for &(addr, weight) in &self.statics {
            weights.entry(addr).or_insert(weight);
        }
        for (server, state) in self.named.iter().zip(states.iter()) {
            for &addr in &state.addrs {
                weights.entry(addr).or_insert(server.weight);
            }
        }
        let backends = weights
            .into_iter()
            .filter_map(|(addr, weight)| {
                let mut backend = Backend::new_with_weight(&addr.to_string(), weight).ok()?;
                backend.weight = weight;
                Some(backend)
            })
            .collect();
        self.current.store(Arc::new(backends));
    }

    /// The resolver this group's lookups use.
    pub(super) fn resolver(&self) -> Result<TokioResolver, String> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = match self.resolve.resolver {
            Some(server) => {
                let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut ns.connections {
                    connection.port = server.port();
                }
                let mut builder = TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    provider,
                );
                builder.options_mut().use_hosts_file = ResolveHosts::Never;
                builder
            }
            None => TokioResolver::builder(provider).map_err(|e| e.to_string())?,
        };
        let options = builder.options_mut();
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        if self.resolve.resolver.is_none() {
            // The system's resolver: looked up every interval, so no answer is kept longer.
            options.positive_max_ttl = Some(self.resolve.interval);
        }
        options.negative_max_ttl = Some(self.resolve.interval);
        builder.build().map_err(|e| e.to_string())
    }

    /// Looks every name up once; a failure keeps the name's last good addresses. Returns
    /// whether the served set changed and how long to wait before the next round.
    pub(super) async fn resolve_once(
        &self,
        group: &str,
        resolver: &TokioResolver,
    ) -> (bool, Duration) {
        let before = self.states.load_full();
        let mut states = before.as_ref().clone();
        let mut wait = self.resolve.interval;
        for (server, state) in self.named.iter().zip(states.iter_mut()) {
            let found = match resolver.lookup_ip(server.host.as_str()).await {
                Ok(lookup) => {
                    if self.resolve.resolver.is_some() {
                        let ttl = lookup
                            .valid_until()
                            .saturating_duration_since(Instant::now());
                        wait = wait.min(ttl);
                    }
                    let mut addrs: Vec<SocketAddr> = lookup
                        .iter()
                        .map(|ip| SocketAddr::new(ip, server.port))
                        .collect();
                    addrs.sort();
                    addrs.dedup();
                    if addrs.is_empty() {
                        Err("no address".to_string())
                    } else {
                        Ok(addrs)
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            match found {
                Ok(addrs) => {
                    if addrs != state.addrs {
                        info!(
                            "group {group}: {} now resolves to {addrs:?} (was {:?})",
                            state.name, state.addrs
                        );
                        state.addrs = addrs;
                    }
                    state.error = None;
                }
                Err(error) => {
                    FAILURES.fetch_add(1, Ordering::Relaxed);
                    state.failures += 1;
                    warn!(
                        "group {group}: looking up {} failed ({error}); keeping {:?}",
                        state.name, state.addrs
                    );
                    state.error = Some(error);
                }
            }
        }
        let changed = states
            .iter()
            .zip(before.iter())
            .any(|(now, was)| now.addrs != was.addrs);
        self.states.store(Arc::new(states));
        if changed {
            self.publish();
        }
        (changed, wait.max(MIN_RESOLVE_WAIT))
    }
}

/// The discovery the group's balancer runs on `update()`: the current set, never a lookup.
pub(super) struct Discovery(pub(super) Arc<Names>);

#[async_trait]
impl ServiceDiscovery for Discovery {
    async fn discover(&self) -> pingora_core::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        Ok((self.0.current.load().as_ref().clone(), HashMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstreams::NamedServer;

    fn names(resolver: SocketAddr) -> Arc<Names> {
        names_of("app.internal", Some(resolver))
    }

    fn names_of(host: &str, resolver: Option<SocketAddr>) -> Arc<Names> {
        Names::new(&GroupConfig {
            named: vec![NamedServer {
                host: host.into(),
                port: 8080,
                weight: 3,
            }],
            resolve: ResolveConfig {
                resolver,
                interval: Duration::from_secs(5),
            },
            ..GroupConfig::for_test("g", &[9])
        })
    }

    fn served(names: &Names) -> Vec<(SocketAddr, usize)> {
        names
            .current
            .load()
            .iter()
            .filter_map(|b| Some((*b.addr.as_inet()?, b.weight)))
            .collect()
    }

    /// With the system's resolver a name is looked up once as its pool is built, so a new
    /// process serves it at once; with a configured resolver it waits for the background.
    #[test]
    fn the_system_resolver_is_asked_once_at_build() {
        let built = names_of("localhost", None);
        assert!(
            served(&built).contains(&(([127, 0, 0, 1], 8080).into(), 3)),
            "localhost served from the start: {:?}",
            served(&built)
        );
        let unresolved = names_of("localhost", Some(([127, 0, 0, 1], 9).into()));
        assert_eq!(served(&unresolved), vec![(([127, 0, 0, 1], 9).into(), 1)]);
    }

    /// Before any lookup only the address servers are served; a name's addresses join with the
    /// name's weight, and an address that is also a listed server keeps the listed weight.
    #[test]
    fn the_served_set_is_the_servers_and_the_names_addresses() {
        let names = names(([127, 0, 0, 1], 53).into());
        assert_eq!(served(&names), vec![(([127, 0, 0, 1], 9).into(), 1)]);
        let mut states = names.states();
        states[0].addrs = vec![([127, 0, 0, 1], 9).into(), ([10, 0, 0, 7], 8080).into()];
        names.states.store(Arc::new(states));
        names.publish();
        assert_eq!(
            served(&names),
            vec![
                (([10, 0, 0, 7], 8080).into(), 3),
                (([127, 0, 0, 1], 9).into(), 1)
            ]
        );
    }

    /// A lookup that fails (nothing listens where the resolver should be) keeps the last good
    /// addresses, records the error and counts the failure.
    #[tokio::test]
    async fn a_failed_lookup_keeps_the_last_good_addresses() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a port");
        let names = names(closed);
        let mut states = names.states();
        let good: SocketAddr = ([10, 0, 0, 7], 8080).into();
        states[0].addrs = vec![good];
        names.states.store(Arc::new(states));
        names.publish();
        let failures = resolve_failures();
        let resolver = names.resolver().expect("resolver");
        let (changed, wait) = names.resolve_once("g", &resolver).await;
        assert!(!changed);
        assert!(wait >= MIN_RESOLVE_WAIT);
        let state = &names.states()[0];
        assert_eq!(state.addrs, vec![good]);
        assert_eq!(state.failures, 1);
        assert!(state.error.is_some());
        assert!(resolve_failures() > failures);
        assert!(served(&names).iter().any(|(a, _)| *a == good));
    }
}
