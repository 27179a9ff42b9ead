//! Where each ACME certificate stands, as `/status` shows it (`acme[]`): one list, replaced
//! by the ACME task (state/acme/mod.rs) whenever a certificate's state changes.

use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use serde::Serialize;

/// Where one certificate stands, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AcmeStatus {
    /// The names of the certificate (the listener's `tls.acme`).
    pub(crate) names: Vec<String>,
    /// `waiting` (none issued yet), `issued`, or `failing` (the last order failed; an issued
    /// certificate, if any, is still served).
    pub(crate) state: &'static str,
    /// The served certificate's expiry (seconds since the Unix epoch) and serial.
    pub(crate) not_after: Option<i64>,
    pub(crate) serial: Option<String>,
    /// Failed orders in a row, and the last one's error.
    pub(crate) failures: u32,
    pub(crate) last_error: Option<String>,
    /// Where the certificate is kept: `redis` (with `gateway.store`) or `folder`.
    pub(crate) storage: &'static str,
    /// With a store: this node's id, the name it holds an order lease under.
    pub(crate) node: Option<String>,
    /// Another node holding this certificate's order lease: it orders, this node serves the
    /// result as soon as it is stored.
    pub(crate) ordering_node: Option<String>,
    /// The storage's last error while it keeps this node from ordering (Redis does not
    /// answer) or keeps an issued certificate from being stored (retried; the certificate is
    /// served meanwhile). `None` when storage works.
    pub(crate) store_error: Option<String>,
}

pub(super) static STATUS: LazyLock<ArcSwap<Vec<AcmeStatus>>> = LazyLock::new(ArcSwap::default);

/// Every ACME certificate's status, in listener order.
pub(crate) fn statuses() -> Arc<Vec<AcmeStatus>> {
    STATUS.load_full()
}

pub(super) fn set_status(index: usize, status: AcmeStatus) {
    STATUS.rcu(|all| {
        let mut all = Vec::clone(all);
        if index < all.len() {
            all[index] = status.clone();
        }
        all
    });
}
