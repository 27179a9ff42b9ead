//! User segments in Redis, shared by every gateway node. Each node keeps an in-memory snapshot
//! of each store-backed set (a compact [`UserSet`]); requests only ever read the snapshot.
//!
//! A background service loads every set with SSCAN when it connects, follows the pub/sub channel
//! on which every admin write is announced, and re-reads everything at `resync_interval` to heal
//! anything missed. When Redis is down or slow the last snapshot keeps serving; the service
//! reconnects with backoff and `/status` and `/metrics` show how stale each set is.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use log::{error, info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::{Deserialize, Serialize};

use super::audit::AuditEntry;
use super::overlay::ControlMessage;
use super::ratelimit::SharedLimits;
use super::StateError;
use crate::config::StoreConfig;
use crate::routing::UserSet;

/// One change announced on the channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) set: String,
    #[serde(default)]
    pub(crate) add: Vec<String>,
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

#[derive(Default)]
struct SetState {
    snapshot: Option<Arc<UserSet>>,
    /// When the snapshot was last known to match Redis.
    synced_at: Option<Instant>,
}

/// The snapshots of every store-backed set, and the connection state.
pub(crate) struct Store {
    pub(crate) config: StoreConfig,
    client: redis::Client,
    sets: Mutex<BTreeMap<String, SetState>>,
    connected: AtomicBool,
    /// The connection the ACME task reads the store through every second (state/acme/), kept
    /// between reads and dropped after an error.
    pub(super) acme_connection: Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// The connection the shared rate limits count through (its own, kept by its service).
    pub(crate) rate_limits: Arc<SharedLimits>,
}

impl Store {
    /// A store for `sets` (the set names the rules use). Nothing is contacted yet.
    pub(crate) fn new(config: StoreConfig, sets: &[String]) -> Result<Store, StateError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| StateError::internal(format!("store: {}: {e}", config.redacted_url())))?;
        let sets = sets
            .iter()
            .map(|s| (s.clone(), SetState::default()))
            .collect();
        let rate_limits = SharedLimits::new(&config).map_err(StateError::internal)?;
        Ok(Store {
            rate_limits: Arc::new(rate_limits),
            config,
            client,
            sets: Mutex::new(sets),
            connected: AtomicBool::new(false),
            acme_connection: Mutex::new(None),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, SetState>> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current snapshot of `set`, once one was loaded from Redis.
    pub(crate) fn snapshot(&self, set: &str) -> Option<Arc<UserSet>> {
        self.lock().get(set).and_then(|s| s.snapshot.clone())
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Seconds since each set was last known to match Redis (`None`: never loaded). While the
    /// channel is up, sets are current.
    pub(crate) fn staleness(&self) -> Vec<(String, Option<f64>, usize)> {
        let connected = self.is_connected();
        self.lock()
            .iter()
            .map(|(name, s)| {
                let stale = s.synced_at.map(|at| {
                    if connected {
                        0.0
                    } else {
                        at.elapsed().as_secs_f64()
                    }
                });
                (
                    name.clone(),
                    stale,
                    s.snapshot.as_ref().map_or(0, |u| u.len()),
                )
            })
            .collect()
    }

    fn set_snapshot(&self, set: &str, users: UserSet) {
        let mut sets = self.lock();
        let state = sets.entry(set.to_string()).or_default();
        state.snapshot = Some(Arc::new(users));
        state.synced_at = Some(Instant::now());
    }

    /// Applies a change to the local snapshot (idempotent). Returns whether the set is known.
    pub(crate) fn apply(&self, change: &Change) -> bool {
        let mut sets = self.lock();
        let Some(state) = sets.get_mut(&change.set) else {
            return false;
        };
        let Some(current) = &state.snapshot else {
            // Not loaded yet: the next full load includes the change.
            return false;
        };
        // A copy with the change applied: O(change) after the copy, where rebuilding a
        // 1,000,000-member set took a few hundred milliseconds per change.
        let next = current.with_changes(
            change.add.iter().map(String::as_bytes),
            change.remove.iter().map(String::as_bytes),
        );
        state.snapshot = Some(Arc::new(next));
        true
    }

    pub(super) async fn timed<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        match tokio::time::timeout(self.config.timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StateError::unavailable(format!("{what}: {e}"))),
            Err(_) => Err(StateError::unavailable(format!(
                "{what}: no answer within {:?}",
                self.config.timeout
            ))),
        }
    }

    pub(super) async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, StateError> {
        self.timed("connect", self.client.get_multiplexed_async_connection())
            .await
    }

    /// Writes a change to Redis (SADD / SREM), adds `audit` to the shared trail and announces
    /// the change on the channel, in one transaction.
    pub(crate) async fn write(
        &self,
        change: &Change,
        audit: &AuditEntry,
    ) -> Result<(), StateError> {
        let mut conn = self.connection().await?;
        let key = self.config.set_key(&change.set);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if !change.add.is_empty() {
            pipe.cmd("SADD").arg(&key).arg(&change.add).ignore();
        }
        if !change.remove.is_empty() {
            pipe.cmd("SREM").arg(&key).arg(&change.remove).ignore();
        }
        self.push_audit(&mut pipe, audit)?;
        let message =
            serde_json::to_string(change).map_err(|e| StateError::internal(e.to_string()))?;
        pipe.cmd("PUBLISH")
            .arg(self.config.channel())
            .arg(message)
            .ignore();
        self.timed("write", pipe.query_async::<()>(&mut conn)).await
    }

    /// Whether each of `ids` is in `set` now, as Redis holds it (one round trip).
    pub(crate) async fn members(&self, set: &str, ids: &[&str]) -> Result<Vec<bool>, StateError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.connection().await?;
        let key = self.config.set_key(set);
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("SISMEMBER").arg(&key).arg(*id);
        }
        self.timed("SISMEMBER", pipe.query_async(&mut conn)).await
    }

    /// Reads a whole set with SSCAN.
    async fn load(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        set: &str,
    ) -> Result<UserSet, StateError> {
        let key = self.config.set_key(set);
        // Sized from SCARD up front, so a million members are not copied through growing buffers.
        let members: usize = self
            .timed("SCARD", redis::cmd("SCARD").arg(&key).query_async(conn))
            .await?;
        let mut users = UserSet::with_capacity(members, members * 16);
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = self
                .timed(
                    "SSCAN",
                    redis::cmd("SSCAN")
                        .arg(&key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(10_000)
                        .query_async(conn),
                )
                .await?;
            for id in &batch {
                users.insert(id);
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        users.shrink_to_fit();
        Ok(users)
    }

    /// The set names the store keeps (fixed at start).
    pub(crate) fn set_names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Whether the store keeps `set`.
    pub(crate) fn has_set(&self, set: &str) -> bool {
        self.lock().contains_key(set)
    }
}

/// What the store service calls after the snapshots changed (the controller's rebuild of the
/// routing); a narrow handle so the store needs nothing else of the controller.
pub(crate) type OnChange = Arc<dyn Fn() + Send + Sync>;

/// What the store service calls with a control state read from Redis or announced on the
/// channel (the controller applies it when it is newer than its own).
pub(crate) type OnControl = Arc<dyn Fn(ControlMessage) + Send + Sync>;

/// One message on the events channel: a new control state or a change to a user set.
#[derive(Deserialize)]
#[serde(untagged)]
enum Event {
    // Boxed: the control state is far larger than a set change.
    Control(Box<ControlMessage>),
    Set(Change),
}

/// Keeps the snapshots and the control state current and has the routing rebuilt when they
/// change.
pub(crate) struct StoreService {
    store: Arc<Store>,
    on_change: OnChange,
    on_control: OnControl,
}

impl StoreService {
    pub(crate) fn new(store: Arc<Store>, on_change: OnChange, on_control: OnControl) -> Self {
        StoreService {
            store,
            on_change,
            on_control,
        }
    }

    /// Loads every set and the control state; each is swapped into the routing.
    async fn full_sync(&self) -> Result<(), StateError> {
        if let Some(control) = self.store.read_control().await? {
            (self.on_control)(ControlMessage {
                control,
                changes: Vec::new(),
            });
        }
        let mut conn = self.store.connection().await?;
        for set in self.store.set_names() {
            let started = Instant::now();
            let users = self.store.load(&mut conn, &set).await?;
            let count = users.len();
            self.store.set_snapshot(&set, users);
            info!(
                "store: loaded set {set} ({count} users) in {:?}",
                started.elapsed()
            );
        }
        (self.on_change)();
        Ok(())
    }

    /// One connected session: subscribe, load, then follow the channel and resync until the
    /// connection fails or the server shuts down. Returns true on shutdown.
    async fn session(&self, shutdown: &mut ShutdownWatch) -> Result<bool, StateError> {
        let mut pubsub = self
            .store
            .timed("subscribe", self.store.client.get_async_pubsub())
            .await?;
        self.store
            .timed("subscribe", pubsub.subscribe(self.store.config.channel()))
            .await?;
        // Subscribed before loading, so no change between the two is lost.
        self.full_sync().await?;
        self.store.connected.store(true, Ordering::Release);
        info!(
            "store: connected to {}, following {}",
            self.store.config.redacted_url(),
            self.store.config.channel()
        );
        let mut messages = pubsub.into_on_message();
        let mut resync = tokio::time::interval(self.store.config.resync_interval);
        resync.tick().await;
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        return Err(StateError::unavailable("the channel closed"));
                    };
                    match serde_json::from_slice::<Event>(message.get_payload_bytes()) {
                        Ok(Event::Set(change)) => {
                            if self.store.apply(&change) {
                                (self.on_change)();
                            }
                        }
                        Ok(Event::Control(control)) => (self.on_control)(*control),
                        Err(e) => warn!("store: ignoring a malformed change message: {e}"),
                    }
                }
                _ = resync.tick() => self.full_sync().await?,
                _ = shutdown.changed() => return Ok(true),
            }
        }
    }
}

/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[async_trait]
impl BackgroundService for StoreService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = BACKOFF_MIN;
        let mut warned = false;
        loop {
            let started = Instant::now();
            match self.session(&mut shutdown).await {
                Ok(_) => return,
                Err(e) => {
                    self.store.connected.store(false, Ordering::Release);
                    if !warned || started.elapsed() > BACKOFF_MAX {
                        error!(
                            "store: {} unavailable ({e}); routing keeps the last snapshot; retrying",
                            self.store.config.redacted_url()
                        );
                        warned = true;
                    }
                }
            }
            if started.elapsed() > BACKOFF_MAX * 2 {
                backoff = BACKOFF_MIN;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_redaction() {
        let config = StoreConfig {
            url: "redis://user:secret@10.0.0.1:6379/0".into(),
            prefix: "canary:".into(),
            resync_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
        };
        assert_eq!(config.set_key("vip"), "canary:users:vip");
        assert_eq!(config.channel(), "canary:events");
        assert_eq!(config.redacted_url(), "redis://***@10.0.0.1:6379/0");
        let plain = StoreConfig {
            url: "redis://127.0.0.1/".into(),
            ..config
        };
        assert_eq!(plain.redacted_url(), "redis://127.0.0.1/");
    }

    #[test]
    fn changes_apply_idempotently() {
        let config = StoreConfig {
            url: "redis://127.0.0.1:1/".into(),
            prefix: "t:".into(),
            resync_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(1),
        };
        let store = Store::new(config, &["vip".into()]).expect("store");
        let change = Change {
            set: "vip".into(),
            add: vec!["zed".into()],
            remove: vec!["alice".into()],
        };
        assert!(!store.apply(&change), "nothing loaded yet");
        store.set_snapshot("vip", UserSet::from_ids([&b"alice"[..], b"bob"]));
        assert!(store.apply(&change));
        assert!(store.apply(&change));
        let snapshot = store.snapshot("vip").expect("snapshot");
        assert_eq!(snapshot.len(), 2);
        assert!(snapshot.contains(b"zed") && snapshot.contains(b"bob"));
        assert!(!snapshot.contains(b"alice"));
        assert!(!store.apply(&Change {
            set: "other".into(),
            add: vec![],
            remove: vec![]
        }));
    }
}
