//! Listener certificates uploaded through the admin API: stored in the control state (so with
//! a store every node gets them, and the state file keeps them), checked before they are
//! accepted, installed as the listeners' live uploaded set whenever the control state's
//! certificates change, and listed beside the files' and ACME's certificates.

use serde::Serialize;

use super::audit::{unix_ms, AuditEntry};
use super::changes::Changed;
use super::controller::Controller;
use super::overlay::UploadedCertificate;
use super::StateError;
use crate::config::uploaded::{check_upload, uploaded};
use crate::config::{facts_of_der, rfc3339, unix_now, CertificateFacts};

/// The longest upload name.
const MAX_NAME: usize = 100;

/// One certificate the gateway serves, as `GET /config/certificates` lists it. Never holds a
/// key.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CertificateRow {
    /// The upload's name (`api`), the certificate file (`file`), the first name (`acme` of a
    /// listener) or the request's name (`acme` requested through the API).
    pub(crate) name: String,
    /// `file`, `acme` or `api`.
    pub(crate) source: &'static str,
    /// Its DNS names, lower case (wildcards as `*.example.com`).
    pub(crate) names: Vec<String>,
    /// The issuer's common name (and organization); `None` until an ACME one is issued.
    pub(crate) issuer: Option<String>,
    /// The serial, hex.
    pub(crate) serial: Option<String>,
    /// Its expiry (RFC 3339) and whole days until then (negative once past).
    pub(crate) not_after: Option<String>,
    pub(crate) days_left: Option<i64>,
    /// `file`: the TLS listener's address, and whether it is that listener's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) listener: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) default: Option<bool>,
    /// `acme`: `waiting`, `issued` or `failing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) state: Option<&'static str>,
    /// `api`, `acme` requested through the API: who uploaded or requested it and when (Unix
    /// milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) at_ms: Option<u64>,
    /// `api`: why it is not served (it no longer parses), when it is not; `acme` requested
    /// through the API: the last order's (or storage's) error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl CertificateRow {
    pub(super) fn new(
        name: String,
        source: &'static str,
        facts: Option<&CertificateFacts>,
    ) -> Self {
        let now = unix_now();
        CertificateRow {
            name,
            source,
            names: facts.map(|f| f.names.clone()).unwrap_or_default(),
            issuer: facts.map(|f| f.issuer.clone()),
            serial: facts.map(|f| f.serial.clone()),
            not_after: facts.map(|f| rfc3339(f.not_after)),
            days_left: facts.map(|f| f.days_left(now)),
            listener: None,
            default: None,
            state: None,
            by: None,
            at_ms: None,
            error: None,
        }
    }
}

/// Checks an upload's name: 1 to [`MAX_NAME`] letters, digits, `-`, `_` and `.`.
pub(super) fn check_name(name: &str) -> Result<(), StateError> {
    let fits = (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if fits {
        Ok(())
    } else {
        Err(StateError::invalid_field(
            "name",
            format!(
                "{name:?} is not a certificate name (1-{MAX_NAME} letters, digits, '-', '_', '.')"
            ),
        ))
    }
}

/// How an audit entry describes a certificate: its names, expiry and serial (never its key).
fn describe(facts: &CertificateFacts) -> String {
    format!(
        "names {}; expires {}; serial {}; issuer {}",
        facts.names.join(", "),
        rfc3339(facts.not_after),
        facts.serial,
        facts.issuer
    )
}

impl Controller {
    /// `PUT /config/certificates/{name}`: checks the chain and key (`Invalid` naming `chain`
    /// or `key`: not PEM, not the leaf's key, expired) and stores them under `name`, replacing
    /// an upload of that name. Every TLS listener serves it by SNI once applied.
    pub(crate) async fn put_certificate(
        &self,
        actor: &str,
        name: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<Changed, StateError> {
        check_name(name)?;
        let facts = check_upload(chain_pem, key_pem, unix_now())
            .map_err(|e| StateError::invalid_field(e.field, e.message))?;
        let upload = UploadedCertificate {
            chain_pem: chain_pem.to_string(),
            key_pem: key_pem.to_string(),
            by: actor.to_string(),
            at_ms: unix_ms(),
        };
        let entry = AuditEntry::now(
            actor,
            None,
            None,
            "certificate_upload",
            format!("certificate {name:?} uploaded: {}", describe(&facts)),
        );
        self.change(entry, |_, overlay, entry| {
            if overlay.acme_requests.contains_key(name) {
                return Err(StateError::conflict(format!(
                    "{name:?} is an ACME request; delete it first or choose another name"
                )));
            }
            let before = overlay
                .certificates
                .get(name)
                .map(|old| describe_stored(name, old));
            if let Some(before) = &before {
                entry.action = "certificate_replace".into();
                entry.detail = format!("certificate {name:?} replaced: {}", describe(&facts));
                entry.before = Some(before.clone());
            }
            entry.after = Some(describe(&facts));
            overlay
                .certificates
                .insert(name.to_string(), upload.clone());
            Ok(())
        })
        .await
    }

    /// `DELETE /config/certificates/{name}`: an upload, or an ACME request (no longer
    /// renewed, and its names no longer served its certificate unless a listener's
    /// `tls.acme` names them). `NotFound` when there is neither.
    pub(crate) async fn delete_certificate(
        &self,
        actor: &str,
        name: &str,
    ) -> Result<Changed, StateError> {
        let entry = AuditEntry::now(
            actor,
            None,
            None,
            "certificate_delete",
            format!("certificate {name:?} deleted"),
        );
        self.change(entry, |_, overlay, entry| {
            if let Some(old) = overlay.acme_requests.remove(name) {
                let before = format!("ACME for {}", old.names.join(", "));
                entry.action = "certificate_acme_delete".into();
                entry.detail = format!("ACME certificate {name:?} deleted ({before})");
                entry.before = Some(before);
                return Ok(());
            }
            let Some(old) = overlay.certificates.remove(name) else {
                return Err(StateError::not_found(format!(
                    "no certificate named {name:?}"
                )));
            };
            let before = describe_stored(name, &old);
            entry.detail = format!("certificate {name:?} deleted ({before})");
            entry.before = Some(before);
            Ok(())
        })
        .await
    }

    /// Every certificate the gateway serves: the TLS listeners' files (per listener), the ACME
    /// ones, then the uploaded ones by name.
    pub(crate) fn certificate_rows(&self) -> Vec<CertificateRow> {
        let mut rows = Vec::new();
        let state = self.state().load_full();
        for (addr, listener) in &state.tls {
            for (i, cert) in listener.certificates.iter().enumerate() {
                let facts = CertificateFacts {
                    names: cert.names.clone(),
                    not_after: cert.not_after,
                    serial: cert.serial.clone(),
                    key_type: cert.key_type,
                    issuer: cert.issuer.clone(),
                };
                let mut row =
                    CertificateRow::new(cert.cert_file.display().to_string(), "file", Some(&facts));
                row.listener = Some(addr.clone());
                row.default = Some(i == listener.default_certificate);
                rows.push(row);
            }
        }
        let acme = crate::config::acme::live().load();
        // The listeners' (the requests' are listed below, under their request names).
        for status in super::acme::statuses().iter().filter(|s| s.listener) {
            let first = status.names.first().cloned().unwrap_or_default();
            let issued = acme
                .certificates
                .get(&first)
                .and_then(|c| c.cert.first())
                .and_then(|leaf| facts_of_der(leaf));
            let mut row = CertificateRow::new(first, "acme", issued.as_ref());
            // The names ordered, whether or not one is issued yet.
            row.names = status.names.clone();
            row.state = Some(status.state);
            rows.push(row);
        }
        rows.extend(self.acme_request_rows(None));
        rows.extend(self.uploaded_rows(None));
        rows
    }

    /// The uploaded certificates (only `name`, when given), as listed.
    pub(crate) fn uploaded_rows(&self, name: Option<&str>) -> Vec<CertificateRow> {
        // Read together under the controller's lock, which every install happens under.
        let (stored, live) = {
            let inner = self.lock();
            let stored: Vec<(String, String, u64)> = inner
                .overlay
                .certificates
                .iter()
                .filter(|(n, _)| name.is_none_or(|want| want == n.as_str()))
                .map(|(n, c)| (n.clone(), c.by.clone(), c.at_ms))
                .collect();
            (stored, uploaded().load_full())
        };
        stored
            .into_iter()
            .map(|(name, by, at_ms)| {
                let served = live.get(&name);
                let mut row = CertificateRow::new(name.clone(), "api", served.map(|s| &s.facts));
                row.by = Some(by);
                row.at_ms = Some(at_ms);
                if served.is_none() {
                    row.error = Some(
                        live.refused
                            .iter()
                            .find(|(n, _)| *n == name)
                            .map_or("not served".to_string(), |(_, why)| why.clone()),
                    );
                }
                row
            })
            .collect()
    }
}

/// A stored upload in audit words (its names and expiry when it parses).
fn describe_stored(name: &str, stored: &UploadedCertificate) -> String {
    match check_upload(&stored.chain_pem, &stored.key_pem, i64::MIN) {
        Ok(facts) => describe(&facts),
        Err(_) => format!("{name}: a certificate that does not parse"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are tokens: no slashes, spaces or empty names.
    #[test]
    fn upload_names_are_tokens() {
        for good in ["shop", "shop.example.com", "a_b-c", &"x".repeat(MAX_NAME)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "a b", "é", &"x".repeat(MAX_NAME + 1)] {
            let e = check_name(bad).expect_err(bad);
            assert_eq!(e.field.as_deref(), Some("name"));
        }
    }
}
