//! Where each ACME certificate stands, as `/status` shows it (`acme[]`): one list, replaced
//! by the ACME task (state/acme/mod.rs) whenever a certificate's state changes.

use std::sync::LazyLock;

use arc_swap::ArcSwap;
use serde::Serialize;

/// Where one certificate stands, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AcmeStatus {
    /// The names of the certificate (the listener's `tls.acme`, or an API request's).
    pub(crate) names: Vec<String>,
    /// A listener's `tls.acme` names it.
    #[serde(skip)]
    pub(crate) listener: bool,
    /// The admin API's requests for it, by request name (`PUT /config/certificates/{name}`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) requests: Vec<String>,
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

/// Every ACME certificate's status that a listener or a request wants: the listeners' in
/// listener order, then the requested ones.
pub(crate) fn statuses() -> Vec<AcmeStatus> {
    STATUS
        .load()
        .iter()
        .filter(|s| s.listener || !s.requests.is_empty())
        .cloned()
        .collect()
}

/// Replaces certificate `index`'s status, keeping who wants it (which only
/// [`set_wanted`] changes).
pub(super) fn set_status(index: usize, status: AcmeStatus) {
    STATUS.rcu(|all| {
        let mut all = Vec::clone(all);
        if let Some(old) = all.get_mut(index) {
            let (listener, requests) = (old.listener, std::mem::take(&mut old.requests));
            *old = AcmeStatus {
                listener,
                requests,
                ..status.clone()
            };
        }
        all
    });
}

/// Sets who wants each certificate (`(listener, requests)` by index), adding the statuses of
/// new certificates from `initial`.
pub(super) fn set_wanted(wanted: &[(bool, Vec<String>)], initial: impl Fn(usize) -> AcmeStatus) {
    STATUS.rcu(|all| {
        let mut all = Vec::clone(all);
        while all.len() < wanted.len() {
            all.push(initial(all.len()));
        }
        for (status, (listener, requests)) in all.iter_mut().zip(wanted) {
            status.listener = *listener;
            status.requests = requests.clone();
        }
        all
    });
}
