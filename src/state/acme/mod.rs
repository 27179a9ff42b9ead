//! The ACME task: for each TLS listener's `tls.acme` names, one certificate ordered from the
//! CA in `gateway.acme` (the order itself: state/acme/order.rs), served as soon as it is
//! issued and renewed when it expires within `renew_before`. Failed orders are retried with a
//! doubling wait, logged, counted (`gateway_acme_orders_total{result="failed"}`) and shown in
//! `/status`.
//!
//! Without a store the account and the certificates live in the storage folder. With
//! `gateway.store` they live in Redis (keys: state/acme/shared.rs; following the store and
//! claiming an order: state/acme/cluster.rs): a node orders a certificate only
//! under that certificate's lease, after checking that Redis holds none that is still good;
//! every node reads Redis every [`FOLLOW_INTERVAL`] and serves what another node stored, and
//! answers the challenges another node published. The folder then is a local copy. A
//! certificate that was issued is never ordered again because storing it failed: it is served
//! from memory and its storage retried.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::time::Instant;

mod cluster;
mod order;
mod requests;
mod schedule;
mod shared;
mod status;

use order::{write_private, Orderer, ORDER_TIMEOUT};
pub(crate) use requests::install_requests;
use schedule::{due_in, Served};
use shared::{lease_name, CertRecord};
use status::{set_status, STATUS};
pub(crate) use status::{statuses, AcmeStatus};

use crate::config::acme::{update_live, AcmeConfig, MAX_RETRY};
use crate::config::issued_from_pem;
use crate::config::unix_now;
use crate::state::metrics::METRICS;
use crate::state::store::Store;

/// With a store: how often each node reads the certificates and challenges Redis holds.
pub(crate) const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// With a store: how long an order lease lasts unless renewed (it is renewed every third of
/// this while the order runs, and the order stops when it cannot be).
const LEASE_TTL: Duration = Duration::from_secs(30);

/// The wait before looking again when another node holds the lease, the store does not
/// answer, or an issued certificate is not stored yet.
const STORE_RETRY: Duration = Duration::from_secs(2);

/// A certificate checked for its name set.
struct Checked {
    certified: Arc<rustls::sign::CertifiedKey>,
    not_after: i64,
    serial: String,
}

/// With `gateway.store`: the store and this node's id (the lease holder's name).
struct Shared {
    store: Arc<Store>,
    node: String,
}

/// One certificate's name set and who wants it.
#[derive(Debug, Clone)]
struct CertSet {
    names: Vec<String>,
    /// A listener's `tls.acme` names it (for the process's life).
    listener: bool,
    /// The admin API's requests naming it, by request name (the control state's, changing).
    requests: Vec<String>,
}

impl CertSet {
    /// Whether it is ordered and renewed: a listener or a request wants it. A set nobody
    /// wants any more keeps its index (indices never move) and waits to be requested again.
    fn wanted(&self) -> bool {
        self.listener || !self.requests.is_empty()
    }
}

/// The background service ordering and renewing the certificates.
pub(crate) struct AcmeService {
    config: AcmeConfig,
    /// One name set per certificate: the listeners' first, then those requested through the
    /// admin API, appended as they come (never removed, so indices stay).
    certificates: RwLock<Vec<CertSet>>,
    /// The certificate served for each set, changed by orders here and by the store.
    served: Mutex<Vec<Option<Served>>>,
    shared: Option<Shared>,
    /// Wakes the order loop when a certificate from the store is served.
    changed: tokio::sync::Notify,
}

/// One certificate's progress in the order loop.
struct Slot {
    /// When set, the next visit (after a failure, or while waiting for the store or another
    /// node); otherwise the served certificate's renewal decides.
    retry_at: Option<Instant>,
    /// The wait after the next failure.
    backoff: Duration,
    /// An issued certificate whose storage failed: stored at the next visit, never ordered
    /// again.
    unsaved: Option<CertRecord>,
    /// The served certificate as the status last showed it.
    seen: Option<Served>,
    status: AcmeStatus,
}

/// What the store says about ordering a certificate now.
enum Claim {
    /// This node holds the lease and the store has no good certificate: order.
    Order,
    /// The store holds a certificate that is not due; it is served.
    Served,
    /// Another node holds the lease.
    Busy(String),
    /// The store did not answer.
    Unavailable(String),
}

impl AcmeService {
    /// The service for the listeners' `certificates` (one name set each) and the requests
    /// the controller installed. Certificates in the storage folder are read and served here,
    /// before the listeners start, so a restart serves them from its first handshake.
    pub(crate) fn new(config: AcmeConfig, certificates: Vec<Vec<String>>) -> Self {
        let service = AcmeService {
            config,
            served: Mutex::new(vec![None; certificates.len()]),
            certificates: RwLock::new(
                certificates
                    .into_iter()
                    .map(|names| CertSet {
                        names,
                        listener: true,
                        requests: Vec::new(),
                    })
                    .collect(),
            ),
            shared: None,
            changed: tokio::sync::Notify::new(),
        };
        for index in 0..service.count() {
            if let Some(served) = service.load_folder(index) {
                service.lock()[index] = Some(served);
            }
        }
        service.publish_statuses();
        service.take_requests();
        service
    }

    /// The name sets, read.
    fn sets(&self) -> std::sync::RwLockReadGuard<'_, Vec<CertSet>> {
        self.certificates.read().unwrap_or_else(|p| p.into_inner())
    }

    /// How many name sets there are (wanted or not).
    fn count(&self) -> usize {
        self.sets().len()
    }

    /// The names of set `index`.
    fn names(&self, index: usize) -> Vec<String> {
        self.sets()
            .get(index)
            .map(|s| s.names.clone())
            .unwrap_or_default()
    }

    /// Whether set `index` is wanted (see [`CertSet::wanted`]).
    fn wanted(&self, index: usize) -> bool {
        self.sets().get(index).is_some_and(CertSet::wanted)
    }

    /// Keeps the account and certificates in `store` (`gateway.store`), ordering under leases
    /// named after `node`.
    pub(crate) fn with_store(mut self, store: Option<Arc<Store>>, node: &str) -> Self {
        self.shared = store.map(|store| Shared {
            store,
            node: node.to_string(),
        });
        self.publish_statuses();
        self
    }

    fn publish_statuses(&self) {
        STATUS.store(Arc::new(
            (0..self.count()).map(|i| self.initial_status(i)).collect(),
        ));
    }

    fn orderer(&self) -> Orderer<'_> {
        Orderer {
            config: &self.config,
            store: self.shared.as_ref().map(|s| &*s.store),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Option<Served>>> {
        self.served.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn served(&self, index: usize) -> Option<Served> {
        self.lock().get(index).cloned().flatten()
    }

    fn initial_status(&self, index: usize) -> AcmeStatus {
        let served = self.served(index);
        let set = self.sets().get(index).cloned();
        AcmeStatus {
            names: set.as_ref().map(|s| s.names.clone()).unwrap_or_default(),
            listener: set.as_ref().is_some_and(|s| s.listener),
            requests: set.map(|s| s.requests).unwrap_or_default(),
            state: if served.is_some() {
                "issued"
            } else {
                "waiting"
            },
            not_after: served.as_ref().map(|s| s.not_after),
            serial: served.map(|s| s.serial),
            failures: 0,
            last_error: None,
            storage: if self.shared.is_some() {
                "redis"
            } else {
                "folder"
            },
            node: self.shared.as_ref().map(|s| s.node.clone()),
            ordering_node: None,
            store_error: None,
        }
    }

    fn chain_file(&self, names: &[String]) -> PathBuf {
        self.config.storage.join(format!("{}.crt", names[0]))
    }

    fn key_file(&self, names: &[String]) -> PathBuf {
        self.config.storage.join(format!("{}.key", names[0]))
    }

    fn due_in(&self, index: usize) -> Duration {
        due_in(
            self.served(index).as_ref(),
            self.config.renew_before,
            self.config.retry,
            unix_now(),
        )
    }

    /// Checks that `chain` and `key` make a certificate for every name of set `index`;
    /// returns what rustls serves, its expiry and serial.
    fn check(&self, index: usize, chain: &str, key: &str) -> Result<Checked, String> {
        let issued = issued_from_pem(chain.as_bytes(), key.as_bytes())?;
        for name in &self.names(index) {
            if !issued.names.iter().any(|n| n == name) {
                return Err(format!("the certificate does not name {name}"));
            }
        }
        Ok(Checked {
            certified: issued.certified,
            not_after: issued.not_after,
            serial: issued.serial,
        })
    }

    /// Serves `chain` and `key` for every name of set `index` and records it as served.
    fn install(
        &self,
        index: usize,
        chain: &str,
        key: &str,
        issued_at: Option<i64>,
    ) -> Result<Served, String> {
        let names = &self.names(index);
        let issued = self.check(index, chain, key)?;
        let certified = issued.certified.clone();
        update_live(|live| {
            for name in names {
                live.certificates.insert(name.clone(), certified.clone());
            }
        });
        let served = Served {
            not_after: issued.not_after,
            serial: issued.serial,
            issued_at,
        };
        self.lock()[index] = Some(served.clone());
        Ok(served)
    }

    /// Serves the certificate of set `index` in the folder when there is a usable one.
    fn load_folder(&self, index: usize) -> Option<Served> {
        let names = &self.names(index);
        let chain = std::fs::read_to_string(self.chain_file(names)).ok()?;
        let key = std::fs::read_to_string(self.key_file(names)).ok()?;
        // An expired one is not served (and is ordered anew).
        let usable = self.check(index, &chain, &key).and_then(|checked| {
            match checked.not_after > unix_now() {
                true => self.install(index, &chain, &key, None).map(Some),
                false => Ok(None),
            }
        });
        match usable {
            Ok(served) => {
                if let Some(served) = &served {
                    info!(
                        "ACME: serving the stored certificate for {} (serial {})",
                        names.join(", "),
                        served.serial
                    );
                }
                served
            }
            Err(e) => {
                warn!(
                    "ACME: the stored certificate for {} is not usable: {e}",
                    names.join(", ")
                );
                None
            }
        }
    }

    /// Writes a certificate to the folder.
    fn write_folder(&self, record: &CertRecord) -> Result<(), String> {
        write_private(&self.key_file(&record.names), record.key.as_bytes())?;
        write_private(&self.chain_file(&record.names), record.chain.as_bytes())
    }

    /// Stores an issued certificate: in Redis with a store (the folder copy is best effort),
    /// else in the folder.
    async fn store_record(&self, record: &CertRecord) -> Result<(), String> {
        match &self.shared {
            Some(shared) => {
                shared
                    .store
                    .put_acme_certificate(record)
                    .await
                    .map_err(|e| format!("storing the certificate in the store: {e}"))?;
                if let Err(e) = self.write_folder(record) {
                    warn!("ACME: the local copy of the certificate was not written: {e}");
                }
                Ok(())
            }
            None => self.write_folder(record),
        }
    }

    /// Records a storage error in the status and the metrics; logged when it starts.
    fn storage_failed(&self, slot: &mut Slot, error: String, meanwhile: &str) {
        METRICS.acme_store_errors.inc();
        if slot.status.store_error.is_none() {
            warn!(
                "ACME: storage for {}: {error}; {meanwhile}",
                slot.status.names.join(", ")
            );
        }
        slot.status.store_error = Some(error);
        slot.retry_at = Some(Instant::now() + STORE_RETRY);
    }

    /// Stores an issued certificate, or keeps it to store at the next visit.
    async fn store_issued(&self, slot: &mut Slot, record: CertRecord) {
        match self.store_record(&record).await {
            Ok(()) => {
                if slot.status.store_error.take().is_some() {
                    info!(
                        "ACME: the certificate for {} is stored (serial {})",
                        record.names.join(", "),
                        record.serial
                    );
                }
                slot.retry_at = None;
                if let Some(shared) = &self.shared {
                    self.release(shared, &record.names).await;
                }
            }
            Err(e) => {
                if let Some(shared) = &self.shared {
                    // Held while the certificate waits to be stored, so no node orders it.
                    let lease = lease_name(&record.names);
                    let _ = shared
                        .store
                        .take_named_lease(&lease, &shared.node, LEASE_TTL)
                        .await;
                }
                self.storage_failed(
                    slot,
                    e,
                    "the issued certificate is served and storing it is retried",
                );
                slot.unsaved = Some(record);
            }
        }
    }

    /// Shows in the status a certificate served since the status last looked (one from the
    /// store, or this node's own).
    fn take_news(&self, index: usize, slot: &mut Slot) {
        let served = self.served(index);
        if served == slot.seen {
            return;
        }
        slot.seen = served.clone();
        if let Some(served) = served {
            slot.status.state = "issued";
            slot.status.not_after = Some(served.not_after);
            slot.status.serial = Some(served.serial);
            slot.status.failures = 0;
            slot.status.last_error = None;
            slot.status.ordering_node = None;
            if slot.unsaved.is_none() {
                // Served from the store, or this node's own order, stored: the storage
                // answers.
                slot.status.store_error = None;
                slot.retry_at = None;
                slot.backoff = self.config.retry;
            }
            set_status(index, slot.status.clone());
        }
    }

    /// Looks at one certificate when it is due: stores a certificate waiting to be stored,
    /// else (with a store) serves the store's or waits for the node ordering it, else orders.
    async fn visit(&self, index: usize, slot: &mut Slot) {
        let names = &self.names(index);
        if let Some(record) = slot.unsaved.take() {
            self.store_issued(slot, record).await;
            set_status(index, slot.status.clone());
            return;
        }
        if let Some(shared) = &self.shared {
            match self.claim(index, shared).await {
                Claim::Order => slot.status.ordering_node = None,
                Claim::Served => {
                    slot.status.store_error = None;
                    slot.retry_at = None;
                    self.take_news(index, slot);
                    set_status(index, slot.status.clone());
                    return;
                }
                Claim::Busy(holder) => {
                    if slot.status.ordering_node.as_ref() != Some(&holder) {
                        info!(
                            "ACME: {holder} is ordering the certificate for {}; serving it once stored",
                            names.join(", ")
                        );
                    }
                    slot.status.ordering_node = Some(holder);
                    slot.status.store_error = None;
                    slot.retry_at = Some(Instant::now() + STORE_RETRY);
                    set_status(index, slot.status.clone());
                    return;
                }
                Claim::Unavailable(e) => {
                    self.storage_failed(slot, e, "ordering waits for the store");
                    set_status(index, slot.status.clone());
                    return;
                }
            }
            slot.status.store_error = None;
        }
        info!("ACME: ordering a certificate for {}", names.join(", "));
        let orderer = self.orderer();
        let order = async {
            match &self.shared {
                None => orderer.order(names).await,
                Some(shared) => tokio::select! {
                    issued = orderer.order(names) => issued,
                    stop = self.keep_lease(shared, names) => Err(stop),
                },
            }
        };
        let issued_at = unix_now();
        let ordered = tokio::time::timeout(ORDER_TIMEOUT, order)
            .await
            .unwrap_or_else(|_| Err(format!("no answer from the CA within {ORDER_TIMEOUT:?}")))
            .and_then(|issued| {
                let checked = self.check(index, &issued.chain, &issued.key)?;
                Ok(CertRecord {
                    names: names.clone(),
                    chain: issued.chain,
                    key: issued.key,
                    not_after: checked.not_after,
                    serial: checked.serial,
                    issued_at,
                })
            });
        match ordered {
            Ok(record) => {
                METRICS.acme_orders.with_label_values(&["ok"]).inc();
                info!(
                    "ACME: certificate for {} issued (serial {}), serving it",
                    names.join(", "),
                    record.serial
                );
                slot.backoff = self.config.retry;
                // Stored before it is served, so a node stopped right after serving it does
                // not order it again; when storing fails it is served all the same.
                let (chain, key) = (record.chain.clone(), record.key.clone());
                self.store_issued(slot, record).await;
                if let Err(e) = self.install(index, &chain, &key, Some(issued_at)) {
                    // `check` passed on the same chain and key above.
                    warn!("ACME: serving the issued certificate: {e}");
                }
                self.take_news(index, slot);
            }
            Err(e) => {
                if let Some(shared) = &self.shared {
                    self.release(shared, names).await;
                }
                METRICS.acme_orders.with_label_values(&["failed"]).inc();
                warn!(
                    "ACME: ordering a certificate for {} failed (retrying in {:?}): {e}",
                    names.join(", "),
                    slot.backoff
                );
                if slot.status.state == "issued" {
                    slot.status.state = "failing";
                }
                slot.status.failures += 1;
                slot.status.last_error = Some(e);
                slot.retry_at = Some(Instant::now() + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(MAX_RETRY);
            }
        }
        set_status(index, slot.status.clone());
    }

    /// Orders and renews every certificate when due, until shutdown.
    async fn run_orders(&self, shutdown: &mut ShutdownWatch) {
        let mut slots: Vec<Slot> = (0..self.count()).map(|index| self.slot(index)).collect();
        loop {
            // Requests added or removed through the admin API since the last pass.
            self.take_requests();
            while slots.len() < self.count() {
                slots.push(self.slot(slots.len()));
            }
            for (index, slot) in slots.iter_mut().enumerate() {
                if !self.wanted(index) {
                    continue;
                }
                self.take_news(index, slot);
                let now = Instant::now();
                let due = slot.retry_at.unwrap_or_else(|| now + self.due_in(index));
                if due <= now {
                    tokio::select! {
                        _ = self.visit(index, slot) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
            let now = Instant::now();
            let next = slots
                .iter()
                .enumerate()
                .filter(|(index, _)| self.wanted(*index))
                .map(|(index, slot)| slot.retry_at.unwrap_or_else(|| now + self.due_in(index)))
                .min()
                .unwrap_or(now + MAX_RETRY)
                .min(now + MAX_RETRY);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = self.changed.notified() => {}
                _ = requests::changed() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// A new slot for set `index`, from what it serves.
    fn slot(&self, index: usize) -> Slot {
        Slot {
            retry_at: None,
            backoff: self.config.retry,
            unsaved: None,
            seen: self.served(index),
            status: self.initial_status(index),
        }
    }
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        match &self.shared {
            Some(shared) => tokio::select! {
                _ = self.follow(shared) => {}
                _ = self.run_orders(&mut shutdown) => {}
            },
            None => self.run_orders(&mut shutdown).await,
        }
    }
}
