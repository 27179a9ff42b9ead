//! What the ACME task does with the store (`gateway.store`): follows it — serving the
//! certificates other nodes stored and answering the challenges they published, and offering
//! a certificate from this node's folder that Redis lacks — and claims an order under the
//! certificate's lease, checking the store before and after taking it.

use std::collections::HashMap;

use log::{info, warn};
use tokio::time::Instant;

use super::schedule::replaces;
use super::shared::{follow_challenges, lease_name, CertRecord};
use super::{AcmeService, Claim, Shared, FOLLOW_INTERVAL, LEASE_TTL};
use crate::config::unix_now;

impl AcmeService {
    /// Serves a certificate read from the store when it replaces the served one; `true` when
    /// it does.
    fn take_from_store(&self, index: usize, record: &CertRecord) -> Result<bool, String> {
        if !replaces(self.served(index).as_ref(), record, unix_now()) {
            return Ok(false);
        }
        let served = self.install(index, &record.chain, &record.key, Some(record.issued_at))?;
        info!(
            "ACME: serving the certificate for {} from the store (serial {})",
            self.names(index).join(", "),
            served.serial
        );
        if let Err(e) = self.write_folder(record) {
            warn!("ACME: the local copy of the certificate was not written: {e}");
        }
        Ok(true)
    }

    /// Whether the store's certificate for set `index` is good and not due (it is then
    /// served), or whether it must be ordered.
    async fn stored_is_good(&self, index: usize, shared: &Shared) -> Result<bool, String> {
        let names = &self.names(index);
        let Some(record) = shared
            .store
            .acme_certificate(names)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        if let Err(e) = self.take_from_store(index, &record) {
            warn!(
                "ACME: the certificate for {} in the store is not usable ({e}); ordering one",
                names.join(", ")
            );
            return Ok(false);
        }
        let served = self.served(index);
        Ok(served.as_ref().is_some_and(|s| s.serial == record.serial)
            && !self.due_in(index).is_zero())
    }

    /// Asks the store whether this node orders set `index` now: the store's certificate is
    /// checked before and after taking the lease, so no node orders what another just stored.
    pub(super) async fn claim(&self, index: usize, shared: &Shared) -> Claim {
        let names = &self.names(index);
        let lease = lease_name(names);
        match self.stored_is_good(index, shared).await {
            Err(e) => return Claim::Unavailable(e),
            Ok(true) => return Claim::Served,
            Ok(false) => {}
        }
        match shared
            .store
            .take_named_lease(&lease, &shared.node, LEASE_TTL)
            .await
        {
            Err(e) => return Claim::Unavailable(e.to_string()),
            Ok(false) => {
                let holder = shared.store.lease_holder(&lease).await.ok().flatten();
                return Claim::Busy(holder.unwrap_or_else(|| "another node".into()));
            }
            Ok(true) => {}
        }
        let claim = match self.stored_is_good(index, shared).await {
            Err(e) => Claim::Unavailable(e),
            Ok(true) => Claim::Served,
            Ok(false) => return Claim::Order,
        };
        self.release(shared, names).await;
        claim
    }

    /// Gives the order lease of `names` up (it expires on its own if this fails).
    pub(super) async fn release(&self, shared: &Shared, names: &[String]) {
        if let Err(e) = shared
            .store
            .release_named_lease(&lease_name(names), &shared.node)
            .await
        {
            warn!("ACME: giving up the order lease (it expires on its own): {e}");
        }
    }

    /// Renews the order lease of `names` while an order runs; returns why the order must
    /// stop: another node took the lease, or the store did not answer for a lease's life.
    pub(super) async fn keep_lease(&self, shared: &Shared, names: &[String]) -> String {
        let lease = lease_name(names);
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(LEASE_TTL / 3).await;
            match shared
                .store
                .take_named_lease(&lease, &shared.node, LEASE_TTL)
                .await
            {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return "another node took the order lease".into(),
                Err(e) if renewed.elapsed() + LEASE_TTL / 3 >= LEASE_TTL => {
                    return format!("the order lease could not be renewed: {e}")
                }
                Err(e) => warn!("ACME: renewing the order lease: {e}"),
            }
        }
    }

    /// Stores in Redis, when it holds none for set `index`, the certificate this node serves
    /// from its folder (ordered before `gateway.store` was configured), so the other nodes
    /// serve it instead of ordering one. `offered`: the serial offered last time.
    async fn offer(&self, index: usize, shared: &Shared, offered: &mut Option<String>) {
        let Some(served) = self.served(index) else {
            return;
        };
        if offered.as_ref() == Some(&served.serial) {
            return;
        }
        *offered = Some(served.serial.clone());
        let names = &self.names(index);
        let (Ok(chain), Ok(key)) = (
            std::fs::read_to_string(self.chain_file(names)),
            std::fs::read_to_string(self.key_file(names)),
        ) else {
            return;
        };
        // Only the very certificate served (an issued one waiting to be stored is not in the
        // folder yet, and is stored by the order loop).
        match self.check(index, &chain, &key) {
            Ok(checked) if checked.serial == served.serial && checked.not_after > unix_now() => {}
            _ => return,
        }
        let record = CertRecord {
            names: names.clone(),
            chain,
            key,
            not_after: served.not_after,
            serial: served.serial.clone(),
            issued_at: served.issued_at.unwrap_or(0),
        };
        match shared.store.offer_acme_certificate(&record).await {
            Ok(true) => info!(
                "ACME: the certificate for {} in this node's folder is now in the store (serial {})",
                names.join(", "),
                record.serial
            ),
            Ok(false) => {}
            Err(e) => {
                // Tried again at the next look.
                *offered = None;
                warn!("ACME: offering the certificate to the store: {e}");
            }
        }
    }

    /// With a store: every [`FOLLOW_INTERVAL`], serves the certificates other nodes stored and
    /// answers the challenges they published. Redis down: what is served stays (logged once).
    pub(super) async fn follow(&self, shared: &Shared) {
        let mut tokens: HashMap<String, String> = HashMap::new();
        let mut alpn: HashMap<String, String> = HashMap::new();
        let mut unusable: Vec<String> = Vec::new();
        // The serial this node last offered for each set (see `offer`), so each is read once.
        let mut offered: Vec<Option<String>> = Vec::new();
        let mut down = false;
        loop {
            // The sets as they are now (requests come and go); those nobody wants are skipped.
            let (sets, wanted): (Vec<Vec<String>>, Vec<bool>) = self
                .sets()
                .iter()
                .map(|set| (set.names.clone(), set.wanted()))
                .unzip();
            offered.resize(sets.len(), None);
            match shared.store.acme_shared(&sets).await {
                Ok(state) => {
                    if down {
                        info!("ACME: the store answers again");
                        down = false;
                    }
                    let mut changed = false;
                    for (index, record) in state.certificates.iter().enumerate() {
                        if !wanted[index] {
                            continue;
                        }
                        let Some(record) = record else {
                            self.offer(index, shared, &mut offered[index]).await;
                            continue;
                        };
                        if unusable.contains(&record.serial) {
                            continue;
                        }
                        match self.take_from_store(index, record) {
                            Ok(taken) => changed |= taken,
                            Err(e) => {
                                warn!(
                                    "ACME: the certificate for {} in the store is not usable: {e}",
                                    record.names.join(", ")
                                );
                                unusable.push(record.serial.clone());
                            }
                        }
                    }
                    if changed {
                        self.changed.notify_one();
                    }
                    follow_challenges(&mut tokens, state.tokens, &mut alpn, state.alpn);
                }
                Err(e) => {
                    if !down {
                        warn!("ACME: the store does not answer ({e}); the certificates served stay, ordering waits");
                        down = true;
                    }
                }
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    }
}
