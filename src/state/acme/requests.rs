//! Certificates requested through the admin API (`PUT /config/certificates/{name}`
//! `{"acme": [...]}`): the controller installs the control state's requests here whenever
//! they change, and the ACME task takes them up at its next pass — a new name set is served
//! from storage when it is there and ordered otherwise; a set no request (and no listener)
//! wants any more is neither renewed nor served for its names.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, LazyLock};

use log::info;
use tokio::sync::Notify;

use super::shared::certificate_id;
use super::status::set_wanted;
use super::{AcmeService, CertSet};
use crate::config::acme::{requested, AcmeRequested};
use crate::state::overlay::AcmeRequest;

/// Wakes the ACME task when the requests change.
static CHANGED: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Makes the control state's `requests` the requested certificates: every TLS listener
/// serves their names by SNI once issued, and the ACME task orders them at its next pass.
pub(crate) fn install_requests(requests: &BTreeMap<String, AcmeRequest>) {
    let sets: Vec<(String, Vec<String>)> = requests
        .iter()
        .map(|(name, r)| (name.clone(), r.names.clone()))
        .collect();
    let names: HashSet<String> = sets.iter().flat_map(|(_, n)| n.iter().cloned()).collect();
    let next = AcmeRequested { sets, names };
    if **requested().load() != next {
        requested().store(Arc::new(next));
        CHANGED.notify_one();
    }
}

/// Resolves when the requests changed (at once when they changed since the last call).
pub(super) async fn changed() {
    CHANGED.notified().await
}

impl AcmeService {
    /// Takes up the installed requests: each is given to the set of its names (sorted, as
    /// the store names a certificate), a new set appended and served from storage when a
    /// certificate is there. Returns whether anything changed.
    pub(super) fn take_requests(&self) -> bool {
        let installed = requested().load_full();
        let (wanted, added) = {
            let mut sets = self.certificates.write().unwrap_or_else(|p| p.into_inner());
            let before: Vec<Vec<String>> = sets.iter().map(|s| s.requests.clone()).collect();
            let known = sets.len();
            for set in sets.iter_mut() {
                set.requests.clear();
            }
            for (request, names) in &installed.sets {
                let id = certificate_id(names);
                match sets.iter_mut().find(|s| certificate_id(&s.names) == id) {
                    Some(set) => set.requests.push(request.clone()),
                    None => sets.push(CertSet {
                        names: names.clone(),
                        listener: false,
                        requests: vec![request.clone()],
                    }),
                }
            }
            let changed = sets.len() != known
                || sets
                    .iter()
                    .zip(&before)
                    .any(|(set, old)| &set.requests != old);
            if !changed {
                return false;
            }
            for (index, set) in sets.iter().enumerate() {
                let old = before.get(index).is_some_and(|r| !r.is_empty());
                match (old, set.requests.is_empty()) {
                    (false, false) => info!(
                        "ACME: certificate for {} requested through the API ({})",
                        set.names.join(", "),
                        set.requests.join(", ")
                    ),
                    (true, true) if !set.listener => info!(
                        "ACME: certificate for {} no longer requested; not renewed or served",
                        set.names.join(", ")
                    ),
                    _ => {}
                }
            }
            let wanted: Vec<(bool, Vec<String>)> = sets
                .iter()
                .map(|s| (s.listener, s.requests.clone()))
                .collect();
            (wanted, known..sets.len())
        };
        {
            let mut served = self.lock();
            served.resize(wanted.len(), None);
        }
        for index in added {
            if let Some(served) = self.load_folder(index) {
                self.lock()[index] = Some(served);
            }
        }
        set_wanted(&wanted, |index| self.initial_status(index));
        true
    }
}
