//! Shared rate limits: one GCRA step per request in Redis (`gateway.store`), a Lua script run
//! by `EVALSHA`, so every node counts against the same limit. While Redis does not answer, each
//! node counts on its own local limiter (said in `/status` and in the log); a request is never
//! refused because Redis is down. A background service (re)connects; the request path only
//! ever borrows the connection it made.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use redis::aio::MultiplexedConnection;

use crate::config::StoreConfig;
use crate::state::metrics::METRICS;

/// GCRA in microseconds of Redis's own clock (so nodes' clocks need not agree). `KEYS[1]`: the
/// key's theoretical arrival time; `ARGV[1]`: the emission interval; `ARGV[2]`: the burst.
/// Answers `{1, 0}` (admitted, counted) or `{0, µs to wait}`. The key expires once the limit
/// is fully replenished, so Redis holds only keys seen within the last `(burst + 1)` intervals.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return {0, wait} end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {1, 0}
";

/// The longest a request waits for its Redis step (or `gateway.store.timeout`, if shorter);
/// past it the request is counted locally and the node falls back until Redis answers again.
pub(crate) const SHARED_STEP_TIMEOUT: Duration = Duration::from_millis(100);

/// How often the service tries to reach Redis while the shared limits fall back.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// What one shared step said.
pub(crate) enum SharedAnswer {
    Admitted,
    /// Refused; the time until the key may send again.
    Refused(Duration),
    /// Redis did not answer: count locally.
    Unavailable,
}

/// The Redis connection the shared limits use, and whether they fall back.
pub(crate) struct SharedLimits {
    client: redis::Client,
    prefix: String,
    redacted_url: String,
    timeout: Duration,
    script: redis::Script,
    /// The connection, while Redis answers; `None` while the limits fall back.
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Whether the first connection was made (before it, "connecting", not "fallback").
    ever_connected: AtomicBool,
    /// Whether a route has a shared limit (else the service makes no connection).
    wanted: AtomicBool,
}

impl SharedLimits {
    pub(crate) fn new(config: &StoreConfig) -> Result<SharedLimits, String> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| format!("{}: {e}", config.redacted_url()))?;
        Ok(SharedLimits {
            wanted: AtomicBool::new(false),
            client,
            prefix: format!("{}ratelimit:", config.prefix),
            redacted_url: config.redacted_url(),
            timeout: config.timeout.min(SHARED_STEP_TIMEOUT),
            script: redis::Script::new(GCRA_SCRIPT),
            conn: ArcSwapOption::const_empty(),
            ever_connected: AtomicBool::new(false),
        })
    }

    /// The Redis key for a limit's key: `<prefix>ratelimit:<route>:<limit>:<hash of the key>`
    /// (hashed, so user ids and header values are not stored and the key size is bounded).
    pub(crate) fn redis_key(&self, route: &str, limit: &str, key: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        use std::fmt::Write;
        let digest = Sha256::digest(key);
        let mut out = format!("{}{route}:{limit}:", self.prefix);
        for b in &digest[..16] {
            // Writing to a String cannot fail.
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// Says whether a route of the state in force has a shared limit.
    pub(crate) fn set_wanted(&self, wanted: bool) {
        if wanted && !self.wanted.swap(true, Ordering::AcqRel) && !self.is_up() {
            METRICS.rate_limit_fallback.set(1);
        }
        if !wanted {
            self.wanted.store(false, Ordering::Release);
            METRICS.rate_limit_fallback.set(0);
        }
    }

    /// Whether the shared limits count in Redis now (`false`: each node counts locally).
    pub(crate) fn is_up(&self) -> bool {
        self.conn.load().is_some()
    }

    /// `redis` while Redis counts, `local fallback` while it does not answer, `connecting`
    /// before the first connection.
    pub(crate) fn mode(&self) -> &'static str {
        if self.is_up() {
            "redis"
        } else if self.ever_connected.load(Ordering::Acquire) {
            "local fallback"
        } else {
            "connecting (local)"
        }
    }

    /// One GCRA step for `redis_key`, bounded by the step timeout. An error or no answer
    /// drops the connection (the service makes a new one) and answers `Unavailable`.
    pub(crate) async fn step(
        &self,
        redis_key: &str,
        interval: Duration,
        burst: u32,
    ) -> SharedAnswer {
        let Some(conn) = self.conn.load_full() else {
            return SharedAnswer::Unavailable;
        };
        let mut conn = MultiplexedConnection::clone(&conn);
        let interval_us = interval.as_micros().max(1) as u64;
        let mut invocation = self.script.key(redis_key);
        invocation.arg(interval_us).arg(burst);
        let answer = tokio::time::timeout(
            self.timeout,
            invocation.invoke_async::<(i64, i64)>(&mut conn),
        )
        .await;
        match answer {
            Ok(Ok((1, _))) => SharedAnswer::Admitted,
            Ok(Ok((_, wait_us))) => {
                SharedAnswer::Refused(Duration::from_micros(wait_us.max(0) as u64))
            }
            Ok(Err(e)) => {
                self.fall_back(&e.to_string());
                SharedAnswer::Unavailable
            }
            Err(_) => {
                self.fall_back(&format!("no answer within {:?}", self.timeout));
                SharedAnswer::Unavailable
            }
        }
    }

    /// Drops the connection (once: concurrent failures log one line).
    fn fall_back(&self, why: &str) {
        if self.conn.swap(None).is_some() {
            METRICS.rate_limit_fallback.set(1);
            warn!(
                "rate limits: Redis {} unavailable ({why}); shared limits are counted by each node on its own until it answers",
                self.redacted_url
            );
        }
    }

    /// Connects and loads the script; on success the shared limits count in Redis again.
    async fn connect(&self) -> Result<(), String> {
        let connect = async {
            let mut conn = self.client.get_multiplexed_async_connection().await?;
            self.script.prepare_invoke().load_async(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        match tokio::time::timeout(Duration::from_secs(2), connect).await {
            Ok(Ok(conn)) => {
                self.conn.store(Some(Arc::new(conn)));
                if self.wanted.load(Ordering::Acquire) {
                    METRICS.rate_limit_fallback.set(0);
                }
                let first = !self.ever_connected.swap(true, Ordering::AcqRel);
                info!(
                    "rate limits: shared limits counted in Redis {}{}",
                    self.redacted_url,
                    if first { "" } else { " again" }
                );
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 2s".into()),
        }
    }
}

/// Keeps the shared limits' Redis connection: connects at start and again after each failure,
/// every [`RECONNECT_EVERY`].
pub(crate) struct SharedLimitsService {
    shared: Arc<SharedLimits>,
}

impl SharedLimitsService {
    pub(crate) fn new(shared: Arc<SharedLimits>) -> Self {
        SharedLimitsService { shared }
    }
}

#[async_trait]
impl BackgroundService for SharedLimitsService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut warned_at: Option<Instant> = None;
        loop {
            if self.shared.wanted.load(Ordering::Acquire) && !self.shared.is_up() {
                if let Err(e) = self.shared.connect().await {
                    // One line a minute while Redis stays away.
                    if warned_at.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                        warn!(
                            "rate limits: cannot reach Redis {} ({e}); shared limits counted locally",
                            self.shared.redacted_url
                        );
                        warned_at = Some(Instant::now());
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(RECONNECT_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
