//! Request rate limits (nginx's `limit_req` with `nodelay`), per route: each limit counts the
//! requests of a key (client address, user, a header) with GCRA, locally through `governor`
//! over a fixed-capacity key table, or for `shared` limits in Redis (`shared`). Built once per
//! configuration load and kept across the state rebuilds of admin changes, so counts survive
//! them; a route without limits has none of this (`GatewayState::routes[i].limits` is `None`).

mod shared;
mod table;

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, MonotonicClock};
use governor::{Quota, RateLimiter};
use http::HeaderMap;
use log::warn;
use prometheus::IntCounter;

use super::metrics::METRICS;
use crate::config::{LimitKey, RateLimitConfig};
pub(crate) use shared::{SharedAnswer, SharedLimits, SharedLimitsService};
use table::KeyTable;
pub(crate) use table::SLOTS as KEYS_PER_LIMIT;

/// A refused request's wait, rounded up to whole seconds (`Retry-After`), at least 1.
pub(crate) fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// What a request is counted by, as read from it once for all of a route's limits.
pub(crate) struct LimitFacts<'a> {
    /// The normalized path (`/a/../b` → `/b`) the limits' `paths` are matched against.
    pub(crate) path: &'a [u8],
    /// The client address, resolved through `trusted_proxies`.
    pub(crate) client_ip: Option<IpAddr>,
    /// The verified user id from the route's cookie.
    pub(crate) user: Option<&'a [u8]>,
    pub(crate) headers: &'a HeaderMap,
}

/// The outcome of a route's limits for one request.
pub(crate) enum LimitVerdict {
    Admitted,
    /// Refused; the key may pass again after `retry_after`.
    Refused {
        retry_after: Duration,
    },
}

/// One limit at run time: its count (local table, Redis key space) and log throttle. A limit of
/// `gateway.rate_limits` is one `Limit` shared by every route that inherits it.
pub(crate) struct Limit {
    pub(crate) config: RateLimitConfig,
    local: RateLimiter<u64, KeyTable, MonotonicClock>,
    /// The limiter's table, shared with it (for `/status`).
    table: KeyTable,
    /// The seed of the local key hash (this process's own: a client cannot aim keys at one
    /// bucket of the table).
    hasher: std::hash::RandomState,
    log: LogThrottle,
}

impl Limit {
    fn new(config: RateLimitConfig) -> Limit {
        let capacity = NonZeroU32::new(config.burst.saturating_add(1)).unwrap_or(NonZeroU32::MIN);
        // The interval is at least 1 µs (config::ratelimit caps the rate), so the quota exists;
        // `Quota::per_second(MAX)` stands in only if that invariant were broken.
        let quota = Quota::with_period(config.interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(capacity);
        let table = KeyTable::default();
        Limit {
            local: RateLimiter::new(quota, table.clone(), MonotonicClock),
            table,
            hasher: std::hash::RandomState::new(),
            log: LogThrottle::default(),
            config,
        }
    }

    fn applies_to(&self, path: &[u8]) -> bool {
        self.config.paths.is_empty()
            || self
                .config
                .paths
                .iter()
                .any(|p| path.starts_with(p.as_bytes()))
    }

    /// The local GCRA step for `key`: `None` admitted, else the wait.
    fn check_local(&self, key: &[u8]) -> Option<Duration> {
        let hash = self.hasher.hash_one(key);
        match self.local.check_key(&hash) {
            Ok(_) => None,
            Err(not_until) => Some(not_until.wait_time_from(self.local.clock().now())),
        }
    }

    /// Keys now held by the local table (for `/status`).
    pub(crate) fn local_keys(&self) -> usize {
        self.table.keys_in_use()
    }

    /// The route part of its Redis keys: the route's name, `*` for a gateway-wide limit.
    fn scope<'a>(&self, route: &'a str) -> &'a str {
        if self.config.gateway_wide {
            "*"
        } else {
            route
        }
    }
}

/// One of a route's limits: the limit (perhaps shared with other routes) and the route's own
/// `gateway_rate_limited_total{route,limit}` series.
pub(crate) struct RouteLimit {
    pub(crate) limit: Arc<Limit>,
    refused: IntCounter,
}

/// The gateway-wide limits (`gateway.rate_limits`) built so far for one state: every route
/// that inherits them gets the same `Arc<Limit>`, and one that did not change since the last
/// state is kept with its counts.
#[derive(Default)]
pub(crate) struct GatewayWide(Vec<Arc<Limit>>);

impl GatewayWide {
    /// Starts from the previous state's gateway-wide limits (`limits`: every route's).
    pub(crate) fn from_previous<'a>(limits: impl Iterator<Item = &'a RouteLimits>) -> Self {
        let mut kept: Vec<Arc<Limit>> = Vec::new();
        for route in limits {
            for l in route.limits.iter() {
                if l.limit.config.gateway_wide && !kept.iter().any(|k| Arc::ptr_eq(k, &l.limit)) {
                    kept.push(l.limit.clone());
                }
            }
        }
        GatewayWide(kept)
    }

    fn get(&mut self, config: &RateLimitConfig) -> Arc<Limit> {
        if let Some(limit) = self.0.iter().find(|l| l.config == *config) {
            return limit.clone();
        }
        let limit = Arc::new(Limit::new(config.clone()));
        self.0.push(limit.clone());
        limit
    }
}

/// The limits of one route.
pub(crate) struct RouteLimits {
    pub(crate) route: String,
    pub(crate) limits: Box<[RouteLimit]>,
    /// Whether a limit counts by user, so the proxy keeps the verified user id.
    pub(crate) by_user: bool,
    /// Whether a limit matches `paths`, so the proxy gives it the normalized path.
    pub(crate) by_path: bool,
}

impl RouteLimits {
    /// The route's limits, `None` when it has none (then nothing is checked at all); its
    /// gateway-wide ones come from (or go into) `wide`.
    pub(crate) fn build(
        route: &str,
        configs: &[RateLimitConfig],
        wide: &mut GatewayWide,
    ) -> Option<Arc<RouteLimits>> {
        if configs.is_empty() {
            return None;
        }
        Some(Arc::new(RouteLimits {
            route: route.to_string(),
            by_user: configs.iter().any(|c| c.key == LimitKey::User),
            by_path: configs.iter().any(|c| !c.paths.is_empty()),
            limits: configs
                .iter()
                .map(|c| RouteLimit {
                    limit: if c.gateway_wide {
                        wide.get(c)
                    } else {
                        Arc::new(Limit::new(c.clone()))
                    },
                    refused: METRICS
                        .rate_limited
                        .with_label_values(&[route, c.name.as_str()]),
                })
                .collect(),
        }))
    }

    /// Whether these limits were built from `configs` (kept across rebuilds if so).
    pub(crate) fn same_as(&self, route: &str, configs: &[RateLimitConfig]) -> bool {
        self.route == route
            && self.limits.len() == configs.len()
            && self
                .limits
                .iter()
                .zip(configs)
                .all(|(l, c)| l.limit.config == *c)
    }

    /// Counts the request against each limit that applies, in order; the first that refuses
    /// ends the check, is counted in `gateway_rate_limited_total` and logged (at most one line
    /// a second per limit). `shared`: the Redis step for `shared` limits; without it, or while
    /// Redis does not answer, they count locally.
    pub(crate) async fn check(
        &self,
        facts: &LimitFacts<'_>,
        shared: Option<&SharedLimits>,
        request_id: &str,
    ) -> LimitVerdict {
        let mut key_buf = Vec::new();
        for RouteLimit { limit, refused } in self.limits.iter() {
            if !limit.applies_to(facts.path) {
                continue;
            }
            key_of(&limit.config.key, facts, &mut key_buf);
            let mut wait = None;
            let mut counted = false;
            if let (true, Some(shared)) = (limit.config.shared, shared) {
                let scope = limit.scope(&self.route);
                let redis_key = shared.redis_key(scope, &limit.config.name, &key_buf);
                match shared
                    .step(&redis_key, limit.config.interval, limit.config.burst)
                    .await
                {
                    SharedAnswer::Admitted => counted = true,
                    SharedAnswer::Refused(w) => {
                        wait = Some(w);
                        counted = true;
                    }
                    SharedAnswer::Unavailable => {}
                }
            }
            if !counted {
                wait = limit.check_local(&key_buf);
            }
            if let Some(wait) = wait {
                refused.inc();
                limit
                    .log
                    .refused(&self.route, &limit.config.name, request_id, facts.client_ip);
                return LimitVerdict::Refused { retry_after: wait };
            }
        }
        LimitVerdict::Admitted
    }
}

/// The bytes a request is counted by under `key` (tagged by kind, so a user named like an
/// address is not that address); a request without a user or the header is counted by its
/// client address.
fn key_of(key: &LimitKey, facts: &LimitFacts<'_>, out: &mut Vec<u8>) {
    out.clear();
    let own = match key {
        LimitKey::ClientIp => None,
        LimitKey::User => facts.user.map(|u| (&b"u:"[..], u)),
        LimitKey::Header(name) => facts.headers.get(name).map(|v| (&b"h:"[..], v.as_bytes())),
    };
    match own {
        Some((tag, value)) => {
            out.extend_from_slice(tag);
            out.extend_from_slice(value);
        }
        None => {
            out.extend_from_slice(b"ip:");
            match facts.client_ip {
                Some(IpAddr::V4(ip)) => out.extend_from_slice(&ip.octets()),
                Some(IpAddr::V6(ip)) => out.extend_from_slice(&ip.octets()),
                None => {}
            }
        }
    }
}

/// When the process started, the reference of [`LogThrottle`]'s seconds.
static STARTED: LazyLock<Instant> = LazyLock::new(Instant::now);

/// At most one log line a second per limit, saying how many were refused since the last one,
/// so a flood of refused requests does not flood the log.
#[derive(Default)]
struct LogThrottle {
    /// The second (since [`STARTED`]) after which the next line may be written.
    next: AtomicU64,
    /// Refusals since the last line.
    unlogged: AtomicU64,
}

impl LogThrottle {
    fn refused(&self, route: &str, limit: &str, request_id: &str, client: Option<IpAddr>) {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let now = STARTED.elapsed().as_secs();
        let next = self.next.load(Ordering::Relaxed);
        if now < next
            || self
                .next
                .compare_exchange(next, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // At least this refusal, even if another thread's line took the count meanwhile.
        let count = self.unlogged.swap(0, Ordering::Relaxed).max(1);
        let client = client.map_or_else(|| "?".to_string(), |ip| ip.to_string());
        warn!(
            "rate limit {route}/{limit}: request {request_id} from {client} refused (429); {count} refused since the last line"
        );
    }
}
