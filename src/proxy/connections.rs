//! Connection budgets: each listener keeps at most `max_connections` client connections open,
//! so a flood of connections on one port cannot take the descriptors that the other ports and
//! the admin API need. A connection over its listener's budget closes that listener's
//! longest-idle HTTP/1 keep-alive connection to make room, or, when none is idle, is closed as
//! soon as it is accepted, which frees its descriptor at once.
//!
//! Counting costs one atomic add when a connection is accepted and one subtract when it closes.
//! A request touches only its own connection's idle mark, and only on the read that finds the
//! connection waiting for its next request ([`IdleWatch`]); the list of a listener's
//! connections is locked when one opens, when one closes and when the listener is full.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::task::Waker;

use async_trait::async_trait;
use futures_util::task::AtomicWaker;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::ConnectionFilter;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use prometheus::IntCounter;

use crate::config::{GatewayConfig, ListenerKind};
use crate::state::metrics::METRICS;

/// Descriptors kept back from the proxy listeners' default budgets for everything else the
/// process opens: log and state files, the Redis store, Pingora's runtimes (an epoll and a
/// wake-up descriptor each) and whatever the system libraries need.
pub(crate) const RESERVED_DESCRIPTORS: u64 = 64;

/// Descriptors one proxied client connection may hold: its own, and the upstream connection
/// serving its request (kept for reuse after it).
pub(crate) const DESCRIPTORS_PER_CONNECTION: u64 = 2;

/// The least default budget of a proxy listener, however small the open-files limit.
pub(crate) const MIN_DEFAULT_CONNECTIONS: usize = 16;

/// The budget of the metrics listener (one scraper or a few).
pub(crate) const METRICS_MAX_CONNECTIONS: usize = 8;

/// What the default `max_connections` of the proxy listeners is derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DescriptorBudget {
    /// The open-files limit the process runs with.
    pub(crate) open_files: u64,
    /// Proxy workers (`threads`): each holds its own copy of every listening socket.
    pub(crate) workers: usize,
    /// Upstream servers of every group: a health check holds a connection to each.
    pub(crate) servers: usize,
    /// Idle upstream connections each worker keeps for reuse (Pingora's
    /// `upstream_keepalive_pool_size`); they may outlive the client connections they served.
    pub(crate) upstream_pool: usize,
    /// The budgets of the operators' listeners (admin API, metrics).
    pub(crate) operator_connections: usize,
    /// Each client listener's own `max_connections`, `None` where it takes the default.
    pub(crate) listeners: Vec<Option<usize>>,
}

impl DescriptorBudget {
    /// Descriptors that are not the proxy listeners' to share: [`RESERVED_DESCRIPTORS`], one
    /// per upstream server, each worker's pool of idle upstream connections, the listening
    /// sockets (each worker's copies too) and the runtimes' own, and the operators' listeners'
    /// budgets.
    pub(crate) fn reserved(&self) -> u64 {
        let workers = self.workers as u64;
        let sockets = (workers + 1) * (self.listeners.len() as u64 + 2);
        RESERVED_DESCRIPTORS
            + self.servers as u64
            + workers * self.upstream_pool as u64
            + sockets
            + self.operator_connections as u64
    }

    /// The default `max_connections` of each client listener that sets none: what the
    /// open-files limit leaves after [`Self::reserved`] and the listeners with a budget of
    /// their own, shared evenly, at [`DESCRIPTORS_PER_CONNECTION`] each; never below
    /// [`MIN_DEFAULT_CONNECTIONS`].
    pub(crate) fn default_share(&self) -> usize {
        let explicit: u64 = self
            .listeners
            .iter()
            .flatten()
            .map(|&n| n as u64 * DESCRIPTORS_PER_CONNECTION)
            .sum();
        let sharing = self.listeners.iter().filter(|l| l.is_none()).count() as u64;
        let left = self
            .open_files
            .saturating_sub(self.reserved())
            .saturating_sub(explicit);
        let share = left / (sharing.max(1) * DESCRIPTORS_PER_CONNECTION);
        usize::try_from(share)
            .unwrap_or(usize::MAX)
            .max(MIN_DEFAULT_CONNECTIONS)
    }

    /// How many descriptors the budgets `budgets` of the client listeners may take together
    /// with everything reserved, to warn when that passes the open-files limit.
    pub(crate) fn needed(&self, budgets: &[usize]) -> u64 {
        self.reserved()
            + budgets
                .iter()
                .map(|&n| n as u64 * DESCRIPTORS_PER_CONNECTION)
                .sum::<u64>()
    }
}

/// One listener's connections: how many are open, its budget, and its HTTP/1 connections
/// with their idle marks.
pub(crate) struct Connections {
    addr: String,
    kind: &'static str,
    max: usize,
    open: AtomicUsize,
    /// The listener's watched connections, in no order; each mark knows its index here.
    watched: Mutex<Vec<Arc<IdleMark>>>,
    /// Where the next search for an idle connection starts in `watched`.
    search_from: AtomicUsize,
    refused: IntCounter,
    closed_idle: IntCounter,
}

/// Every listener's [`Connections`], for `/status` and the metrics endpoint.
static LISTENERS: LazyLock<Mutex<Vec<Weak<Connections>>>> = LazyLock::new(Mutex::default);

/// A poisoned lock only means a thread panicked while holding it; the lists stay consistent
/// (every change is one push or one swap-remove), so carry on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one listener shows in `/status` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerLoad {
    pub(crate) addr: String,
    /// `proxy`, `redirect`, `admin` or `metrics`.
    pub(crate) kind: &'static str,
    pub(crate) max_connections: usize,
    pub(crate) open: usize,
    /// HTTP/1 connections waiting for their next request (the ones a full listener may close).
    pub(crate) idle: usize,
    pub(crate) refused: u64,
    pub(crate) closed_idle: u64,
}

/// Every listener's budget and load, in the order they were made.
pub(crate) fn listener_loads() -> Vec<ListenerLoad> {
    let mut listeners = lock(&LISTENERS);
    listeners.retain(|l| l.strong_count() > 0);
    listeners
        .iter()
        .filter_map(Weak::upgrade)
        .map(|c| ListenerLoad {
            addr: c.addr.clone(),
            kind: c.kind,
            max_connections: c.max,
            open: c.open.load(Ordering::Relaxed),
            idle: c.idle_count(),
            refused: c.refused.get(),
            closed_idle: c.closed_idle.get(),
        })
        .collect()
}

impl Connections {
    /// The budget of the listener on `addr`: at most `max` connections open at once (at least
    /// one). `kind` names what it serves.
    pub(crate) fn new(addr: &str, kind: &'static str, max: usize) -> Arc<Self> {
        let m = &*METRICS;
        let connections = Arc::new(Connections {
            addr: addr.to_string(),
            kind,
            max: max.max(1),
            open: AtomicUsize::new(0),
            watched: Mutex::default(),
            search_from: AtomicUsize::new(0),
            refused: m.connections_refused.with_label_values(&[addr]),
            closed_idle: m.idle_connections_closed.with_label_values(&[addr]),
        });
        lock(&LISTENERS).push(Arc::downgrade(&connections));
        connections
    }

    /// The budget.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Counts a newly accepted connection in, if the budget allows or an idle connection of
    /// the listener could be told to close to make room (the count then passes the budget until
    /// it has closed). `None`: the listener is full; close the connection.
    pub(crate) fn admit(&self) -> Option<Permit<'_>> {
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        let permit = Permit(self);
        if before < self.max {
            return Some(permit);
        }
        if self.close_longest_idle() {
            self.closed_idle.inc();
            return Some(permit);
        }
        self.refused.inc();
        None
    }

    /// How many watched connections wait for their next request.
    fn idle_count(&self) -> usize {
        lock(&self.watched)
            .iter()
            .filter(|mark| !matches!(mark.state.load(Ordering::Relaxed), BUSY | CLOSING))
            .count()
    }

    /// Watches a connection of this listener, so that it can be closed while idle.
    pub(crate) fn watch(self: &Arc<Self>) -> IdleWatch {
        let mark = Arc::new(IdleMark {
            state: AtomicU64::new(BUSY),
            waker: AtomicWaker::new(),
            index: AtomicUsize::new(0),
        });
        let mut watched = lock(&self.watched);
        mark.index.store(watched.len(), Ordering::Relaxed);
        watched.push(mark.clone());
        drop(watched);
        IdleWatch {
            connections: self.clone(),
            mark,
        }
    }

    /// The connection that has waited longest for its next request among the next
    /// [`SEARCHED`] of the listener's watched connections (all of them on a listener with no
    /// more), and since when it has waited; the search goes on where the last one stopped, so
    /// the cost of a full listener stays the same however many connections it holds.
    fn longest_idle(&self, watched: &[Arc<IdleMark>]) -> Option<(u64, Arc<IdleMark>)> {
        let len = watched.len();
        if len == 0 {
            return None;
        }
        let count = len.min(SEARCHED);
        let from = self.search_from.fetch_add(count, Ordering::Relaxed) % len;
        (0..count)
            .map(|i| &watched[(from + i) % len])
            .filter_map(|mark| {
                let since = mark.state.load(Ordering::Acquire);
                (since != BUSY && since != CLOSING).then_some((since, mark))
            })
            .min_by_key(|(since, _)| *since)
            .map(|(since, mark)| (since, mark.clone()))
    }

    /// Whether one of the watched connections searched next is waiting for a request.
    fn any_idle(&self) -> bool {
        self.longest_idle(&lock(&self.watched)).is_some()
    }

    /// Tells the connection that has waited longest for its next request ([`Self::longest_idle`])
    /// to close; false when none waits.
    fn close_longest_idle(&self) -> bool {
        let watched = lock(&self.watched);
        // A few tries: each failure is a connection that started a request meanwhile.
        for _ in 0..4 {
            let Some((since, mark)) = self.longest_idle(&watched) else {
                return false;
            };
            if mark
                .state
                .compare_exchange(since, CLOSING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                mark.waker.wake();
                return true;
            }
        }
        false
    }
}

/// How many watched connections a full listener looks at to find the longest-idle one.
const SEARCHED: usize = 64;

/// A connection counted in its listener's budget, until dropped.
pub(crate) struct Permit<'a>(&'a Connections);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `IdleMark::state` of a connection busy with a request (or not yet waiting for one).
const BUSY: u64 = 0;
/// `IdleMark::state` of a connection told to close.
const CLOSING: u64 = u64::MAX;

/// Now on the monotonic clock, in nanoseconds (plus one, so never [`BUSY`]), read straight
/// from `clock_gettime`: `Instant::elapsed`'s arithmetic cost about 130 instructions a request
/// more.
fn idle_clock() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to fill; the clock exists on Linux, and
    // on failure `now` stays zero, which only makes this wait look the oldest.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let nanos = (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64);
    nanos.min(CLOSING - 2) + 1
}

/// One watched connection's state, shared with its listener.
struct IdleMark {
    /// [`BUSY`], [`CLOSING`], or since when it has waited for its next request
    /// ([`idle_clock`]).
    state: AtomicU64,
    /// Wakes the connection's task when it is told to close.
    waker: AtomicWaker,
    /// Its place in the listener's list; changed only under the list's lock.
    index: AtomicUsize,
}

/// A watched HTTP/1 connection's handle on its idle mark; dropping it takes the connection
/// off its listener's list.
pub(crate) struct IdleWatch {
    connections: Arc<Connections>,
    mark: Arc<IdleMark>,
}

impl IdleWatch {
    /// The connection found no request to read and will wait for one (`waker` wakes it): it
    /// is idle from now, unless it already was. True when it has been told to close.
    pub(crate) fn waiting(&self, waker: &Waker) -> bool {
        self.mark.waker.register(waker);
        match self.mark.state.load(Ordering::Acquire) {
            CLOSING => true,
            // The clock is read once per wait, not on each poll of it.
            BUSY => {
                let since = idle_clock();
                self.mark
                    .state
                    .compare_exchange(BUSY, since, Ordering::AcqRel, Ordering::Acquire)
                    .is_err_and(|state| state == CLOSING)
            }
            _ => false,
        }
    }

    /// The connection has bytes of a new request: it is busy from now. False when it was told
    /// to close first (the bytes are then dropped with the connection, as a keep-alive
    /// connection closed by its timeout would).
    pub(crate) fn busy(&self) -> bool {
        let mut state = self.mark.state.load(Ordering::Acquire);
        loop {
            match state {
                BUSY => return true,
                CLOSING => return false,
                since => {
                    match self.mark.state.compare_exchange(
                        since,
                        BUSY,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return true,
                        Err(now) => state = now,
                    }
                }
            }
        }
    }

    /// Whether the connection has been told to close.
    #[cfg(test)]
    pub(crate) fn closing(&self) -> bool {
        self.mark.state.load(Ordering::Acquire) == CLOSING
    }
}

impl Drop for IdleWatch {
    fn drop(&mut self) {
        let mut watched = lock(&self.connections.watched);
        let index = self.mark.index.load(Ordering::Relaxed);
        if watched
            .get(index)
            .is_some_and(|m| Arc::ptr_eq(m, &self.mark))
        {
            watched.swap_remove(index);
            if let Some(moved) = watched.get(index) {
                moved.index.store(index, Ordering::Relaxed);
            }
        }
    }
}

/// The check Pingora makes as it accepts each connection, before the connection gets a task of
/// its own: on a full listener with no idle connection to close, the connection is closed
/// there and then; with one, the accept loop lets the others run first. Without it, the accept loop takes in a burst of connections (up to Tokio's
/// budget of 128 a turn) before any of them is counted, and a flood on one listener could
/// still run the process out of descriptors for a moment. The count itself is kept by
/// [`Limited`], so a connection Pingora accepts without asking (when it cannot read the
/// peer's address) is still counted.
#[derive(Debug)]
pub(crate) struct AcceptGate(Arc<Connections>, AtomicUsize);

/// How many connections a full listener's accept loop takes in (each making room by closing an
/// idle one) before it lets the other tasks run.
const ACCEPTS_BEFORE_YIELD: usize = 16;

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("addr", &self.addr)
            .field("max", &self.max)
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish()
    }
}

impl AcceptGate {
    pub(crate) fn new(connections: Arc<Connections>) -> Arc<Self> {
        Arc::new(AcceptGate(connections, AtomicUsize::new(0)))
    }
}

#[async_trait]
impl ConnectionFilter for AcceptGate {
    async fn should_accept(&self, _addr: Option<&std::net::SocketAddr>) -> bool {
        let c = &self.0;
        if c.open.load(Ordering::Relaxed) < c.max {
            return true;
        }
        if !c.any_idle() {
            c.refused.inc();
            return false;
        }
        // Full, but an idle connection can make room. Every few such connections, let the ones
        // accepted before be counted and the ones told to close go before accepting more, so
        // the count passes the budget by a few connections, not by a whole burst (Tokio lets
        // an accept loop take 128 at a turn).
        if self
            .1
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(ACCEPTS_BEFORE_YIELD)
        {
            tokio::task::yield_now().await;
        }
        true
    }
}

/// An application behind a listener's budget: each accepted connection is counted while it is
/// served, or closed at once when the listener is full ([`Connections::admit`]).
pub(crate) struct Limited<A> {
    inner: Arc<A>,
    connections: Arc<Connections>,
}

impl<A> Limited<A> {
    pub(crate) fn new(inner: A, connections: Arc<Connections>) -> Self {
        Limited {
            inner: Arc::new(inner),
            connections,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Limited<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let Some(_permit) = self.connections.admit() else {
            // Closing it frees the descriptor now; the client sees the connection closed.
            drop(session);
            return None;
        };
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// Every listener's budget of connections: the client listeners' in `gateway.listen` order,
/// then the admin API's and the metrics endpoint's.
pub(crate) struct Budgets {
    pub(crate) listeners: Vec<Arc<Connections>>,
    pub(crate) admin: Option<Arc<Connections>>,
    pub(crate) metrics: Option<Arc<Connections>>,
}

/// Sizes each listener's `max_connections`: the value set for it, else
/// `gateway.limits.max_connections`, else an even share of the open-files limit
/// ([`DescriptorBudget`]), `open_files` being the process's limit; logs them, and warns when they add up to more descriptors than the
/// limit allows.
impl Budgets {
    pub(crate) fn new(
        gateway: &GatewayConfig,
        workers: usize,
        upstream_pool: usize,
        open_files: u64,
    ) -> Budgets {
        let admin_max = gateway.admin.as_ref().map(|a| a.max_connections);
        let budget = DescriptorBudget {
            open_files,
            workers,
            servers: gateway
                .groups
                .iter()
                .map(|g| g.servers.len() + g.named.len())
                .sum(),
            upstream_pool,
            operator_connections: admin_max.unwrap_or(0)
                + gateway
                    .metrics_listen
                    .map_or(0, |_| METRICS_MAX_CONNECTIONS),
            listeners: gateway
                .listen
                .iter()
                .map(|l| l.max_connections.or(gateway.limits.max_connections))
                .collect(),
        };
        let share = budget.default_share();
        let maxes: Vec<usize> = budget
            .listeners
            .iter()
            .map(|max| max.unwrap_or(share))
            .collect();
        let listeners: Vec<Arc<Connections>> = gateway
            .listen
            .iter()
            .zip(&maxes)
            .map(|(listener, &max)| {
                let kind = match listener.kind {
                    ListenerKind::RedirectHttps { .. } => "redirect",
                    _ => "proxy",
                };
                Connections::new(&listener.addr, kind, max)
            })
            .collect();
        let needed = budget.needed(&maxes);
        let described: Vec<String> = listeners
            .iter()
            .zip(&gateway.listen)
            .map(|(c, l)| format!("{} {}", l.addr, c.max()))
            .collect();
        log::info!(
            "max_connections: {} ({} descriptors of {open_files} with the reserve)",
            described.join(", "),
            needed
        );
        if needed > open_files {
            log::warn!(
            "max_connections: the listeners' budgets need about {needed} descriptors, more than the open-files limit of {open_files}; a flood can still run the process out of descriptors (docs/operations.md#connection-budgets)"
        );
        }
        Budgets {
            listeners,
            admin: gateway
                .admin
                .as_ref()
                .map(|a| Connections::new(&a.listen.to_string(), "admin", a.max_connections)),
            metrics: gateway
                .metrics_listen
                .map(|m| Connections::new(&m.to_string(), "metrics", METRICS_MAX_CONNECTIONS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn flag() -> (Arc<Flag>, Waker) {
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        (flag.clone(), Waker::from(flag))
    }

    /// Up to the budget every connection is admitted; past it, one is refused and counted,
    /// and a closed connection makes room again.
    #[test]
    fn the_budget_admits_up_to_max_then_refuses() {
        let c = Connections::new("127.0.0.1:1", "proxy", 2);
        let a = c.admit().expect("first");
        let _b = c.admit().expect("second");
        assert!(c.admit().is_none(), "third refused");
        assert_eq!(c.refused.get(), 1);
        assert_eq!(c.open.load(Ordering::Relaxed), 2);
        drop(a);
        assert!(c.admit().is_some(), "room again");
    }

    /// A full listener tells its longest-idle connection to close (and wakes it), not a busy
    /// one nor one idle for less time.
    #[test]
    fn a_full_listener_closes_its_longest_idle_connection() {
        let c = Connections::new("127.0.0.1:2", "proxy", 3);
        let permits: Vec<_> = (0..3).map(|_| c.admit().expect("room")).collect();
        let (busy, older, newer) = (c.watch(), c.watch(), c.watch());
        let (older_flag, older_waker) = flag();
        let (newer_flag, newer_waker) = flag();
        assert!(!older.waiting(&older_waker));
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(!newer.waiting(&newer_waker));
        let extra = c.admit().expect("room made by closing an idle connection");
        assert!(older.closing() && older_flag.0.load(Ordering::SeqCst));
        assert!(!newer.closing() && !newer_flag.0.load(Ordering::SeqCst));
        assert!(!busy.closing());
        assert!(!older.busy(), "a request after the close is not served");
        assert_eq!(c.closed_idle.get(), 1);
        // The newer one starts a request: nothing is idle, the next is refused.
        assert!(newer.busy());
        drop(older);
        assert!(c.admit().is_none());
        assert_eq!(c.refused.get(), 1);
        drop((extra, permits, busy, newer));
        assert_eq!(c.open.load(Ordering::Relaxed), 0);
        assert!(lock(&c.watched).is_empty());
    }

    /// On a listener with more than [`SEARCHED`] watched connections a search looks at that
    /// many, the next search at the following ones: an idle connection is found in turn.
    #[test]
    fn the_search_for_an_idle_connection_is_bounded_and_moves_on() {
        let c = Connections::new("127.0.0.1:4", "proxy", 1);
        let watches: Vec<_> = (0..100).map(|_| c.watch()).collect();
        let (_, waker) = flag();
        assert!(!watches[70].waiting(&waker));
        assert!(
            !c.close_longest_idle(),
            "the first 64 hold no idle connection"
        );
        assert!(c.close_longest_idle(), "the next ones do");
        assert!(!watches[70].busy(), "told to close");
        assert!(!c.close_longest_idle() && !c.close_longest_idle());
    }

    /// Connections leave the list in any order and the indexes stay right.
    #[test]
    fn watched_connections_leave_in_any_order() {
        let c = Connections::new("127.0.0.1:3", "proxy", 10);
        let mut watches: Vec<_> = (0..5).map(|_| c.watch()).collect();
        watches.remove(1);
        watches.remove(0);
        for (i, mark) in lock(&c.watched).iter().enumerate() {
            assert_eq!(mark.index.load(Ordering::Relaxed), i);
        }
        drop(watches);
        assert!(lock(&c.watched).is_empty());
        assert!(listener_loads().iter().any(|l| l.addr == "127.0.0.1:3"));
    }

    /// The default share: reserve, explicit budgets and two descriptors per connection.
    #[test]
    fn default_share_follows_the_descriptor_budget() {
        let budget = DescriptorBudget {
            open_files: 256,
            workers: 1,
            servers: 1,
            upstream_pool: 16,
            operator_connections: 32 + 8,
            listeners: vec![None, None],
        };
        // 64 + 1 + 16 + (1 + 1) × (2 + 2) + 40 = 129 reserved; (256 − 129) / (2 × 2) = 31.
        assert_eq!(budget.reserved(), 129);
        assert_eq!(budget.default_share(), 31);
        let with_explicit = DescriptorBudget {
            listeners: vec![Some(20), None],
            ..budget.clone()
        };
        // (256 − 129 − 40) / 2 = 43.
        assert_eq!(with_explicit.default_share(), 43);
        let tiny = DescriptorBudget {
            open_files: 64,
            ..budget.clone()
        };
        assert_eq!(tiny.default_share(), MIN_DEFAULT_CONNECTIONS);
        let large = DescriptorBudget {
            open_files: 1 << 20,
            ..budget
        };
        assert_eq!(large.default_share(), ((1 << 20) - 129) / 4);
        assert_eq!(large.needed(&[35, 35]), 129 + 140);
    }
}
