//! Certificates requested from the ACME CA through the admin API
//! (`PUT /config/certificates/{name}` `{"acme": [...]}`): checked (`gateway.acme` is
//! configured, the names are DNS names, the name is no upload's), stored in the control state
//! (so with a store every node serves them and one orders them; the state file keeps them),
//! and listed with the ACME task's progress.

use super::audit::{unix_ms, AuditEntry};
use super::certificates::{check_name, CertificateRow};
use super::changes::Changed;
use super::controller::Controller;
use super::overlay::AcmeRequest;
use super::StateError;
use crate::config::acme::validate_acme_names;
use crate::config::facts_of_der;

impl Controller {
    /// `PUT /config/certificates/{name}` `{"acme": names}`: records (or replaces) a request
    /// for one ACME certificate naming `names`. `Invalid` naming `acme` without
    /// `gateway.acme` or with a name that is no DNS name (`acme[i]`); `Conflict` when `name`
    /// is an uploaded certificate's.
    pub(crate) async fn put_acme_request(
        &self,
        actor: &str,
        name: &str,
        names: &[String],
    ) -> Result<Changed, StateError> {
        check_name(name)?;
        if self.lock().base.acme.is_none() {
            return Err(StateError::invalid_field(
                "acme",
                "configure gateway.acme first (the CA and account the certificate is ordered from)",
            ));
        }
        if names.is_empty() {
            return Err(StateError::invalid_field("acme", "names no DNS name"));
        }
        let names = validate_acme_names(names, "acme")
            .map_err(|e| StateError::invalid_field(&e.key, e.message))?;
        // One certificate per name: a listener's set is shared whole or not at all.
        for (i, listener) in self.lock().base.listen.iter().enumerate() {
            overlapping(&names, listener.acme_names()).map_err(|shared| {
                StateError::invalid_field(
                    "acme",
                    format!(
                        "{shared} is in gateway.listen[{i}].tls.acme with other names; \
                         request the same names or share none"
                    ),
                )
            })?;
        }
        let request = AcmeRequest {
            names: names.clone(),
            by: actor.to_string(),
            at_ms: unix_ms(),
        };
        let entry = AuditEntry::now(
            actor,
            None,
            None,
            "certificate_acme_request",
            format!(
                "ACME certificate {name:?} requested for {}",
                names.join(", ")
            ),
        );
        self.change(entry, |_, overlay, entry| {
            for (other, request) in overlay.acme_requests.iter().filter(|(n, _)| *n != name) {
                overlapping(&names, &request.names).map_err(|shared| {
                    StateError::invalid_field(
                        "acme",
                        format!(
                            "{shared} is in the ACME request {other:?} with other names; \
                             request the same names or share none"
                        ),
                    )
                })?;
            }
            if overlay.certificates.contains_key(name) {
                return Err(StateError::conflict(format!(
                    "{name:?} is an uploaded certificate; delete it first or choose another name"
                )));
            }
            if let Some(old) = overlay.acme_requests.get(name) {
                entry.action = "certificate_acme_replace".into();
                entry.before = Some(format!("ACME for {}", old.names.join(", ")));
            }
            entry.after = Some(format!("ACME for {}", names.join(", ")));
            overlay
                .acme_requests
                .insert(name.to_string(), request.clone());
            Ok(())
        })
        .await
    }

    /// The ACME requests (only `name`, when given), as listed: their names, and from the
    /// ACME task their state (`waiting` until it has taken the request up), the issued
    /// certificate's issuer, expiry and days left, and the last error.
    pub(crate) fn acme_request_rows(&self, name: Option<&str>) -> Vec<CertificateRow> {
        let (requests, configured): (Vec<(String, AcmeRequest)>, bool) = {
            let inner = self.lock();
            let requests = inner
                .overlay
                .acme_requests
                .iter()
                .filter(|(n, _)| name.is_none_or(|want| want == n.as_str()))
                .map(|(n, r)| (n.clone(), r.clone()))
                .collect();
            (requests, inner.base.acme.is_some())
        };
        let statuses = super::acme::statuses();
        let live = crate::config::acme::live().load();
        requests
            .into_iter()
            .map(|(name, request)| {
                let status = statuses.iter().find(|s| s.requests.contains(&name));
                let issued = status
                    .filter(|s| s.serial.is_some())
                    .and_then(|_| live.certificates.get(request.names.first()?))
                    .and_then(|c| c.cert.first())
                    .and_then(|leaf| facts_of_der(leaf));
                let mut row = CertificateRow::new(name, "acme", issued.as_ref());
                row.names = request.names.clone();
                row.state = Some(status.map_or("waiting", |s| s.state));
                row.by = Some(request.by);
                row.at_ms = Some(request.at_ms);
                row.error = match status {
                    Some(s) => s.last_error.clone().or_else(|| s.store_error.clone()),
                    None if !configured => Some(
                        "gateway.acme is not configured: the certificate is not ordered".into(),
                    ),
                    None => None,
                };
                row
            })
            .collect()
    }
}

/// `Err(name)` when `a` and `b` share `name` but are not the same set: two certificates would
/// then fight over that name (and its files in the storage).
fn overlapping(a: &[String], b: &[String]) -> Result<(), String> {
    let (mut x, mut y) = (a.to_vec(), b.to_vec());
    x.sort();
    y.sort();
    match a.iter().find(|n| b.contains(n)) {
        Some(shared) if x != y => Err(shared.clone()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    /// The same set (in any order) or disjoint sets are fine; a partial overlap names the
    /// shared name.
    #[test]
    fn acme_requests_share_a_set_whole_or_not_at_all() {
        let shop = set(&["shop.test", "www.shop.test"]);
        assert_eq!(
            overlapping(&shop, &set(&["www.shop.test", "shop.test"])),
            Ok(())
        );
        assert_eq!(overlapping(&shop, &set(&["other.test"])), Ok(()));
        assert_eq!(overlapping(&shop, &[]), Ok(()));
        assert_eq!(
            overlapping(&shop, &set(&["www.shop.test"])),
            Err("www.shop.test".to_string())
        );
    }
}
