//! Certificates uploaded through the admin API (`PUT /config/certificates/{name}`): a PEM
//! chain and key checked into what rustls serves, and the live set every TLS listener's
//! resolver reads by SNI — one process-wide arc-swap that the controller replaces when the
//! control state's certificates change, so a handshake never parses PEM or takes a lock. It
//! lives here, below the state layer, because the listeners' resolvers (built at validation)
//! read it.

use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

use crate::routing::names::KnownHosts;

use super::pem::{certified_from_pem, rfc3339, CertificateFacts, PemError};

/// One uploaded certificate, ready to serve: its name in the API, what it says of itself and
/// its chain with the signing key.
pub(crate) struct UploadedServed {
    /// The name it was uploaded under (`/config/certificates/{name}`).
    pub(crate) name: String,
    pub(crate) facts: CertificateFacts,
    pub(crate) certified: Arc<CertifiedKey>,
}

/// Every uploaded certificate the listeners serve, by upload name, and those of the control
/// state that could not be served (with why).
#[derive(Default)]
pub(crate) struct UploadedLive {
    /// In upload-name order: among uploads for the same name, the first by name wins.
    pub(crate) served: Vec<UploadedServed>,
    /// `(name, why)` for each upload that no longer parses (warned about, not served).
    pub(crate) refused: Vec<(String, String)>,
    /// The served uploads' names, which a redirect listener sends on to https like the
    /// files' certificate names.
    pub(crate) known_hosts: KnownHosts,
}

impl UploadedLive {
    /// Checks each `(name, chain PEM, key PEM)` into a live set. One that does not parse or
    /// whose key is not its leaf's is left out and reported in `refused`; an expired one is
    /// still served (the listing shows it with its negative days left), as a file's would be
    /// until the next reload.
    pub(crate) fn build<'a>(
        uploads: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Self {
        let mut live = UploadedLive::default();
        for (name, chain, key) in uploads {
            match certified_from_pem(chain.as_bytes(), key.as_bytes()) {
                Ok((certified, facts)) => live.served.push(UploadedServed {
                    name: name.to_string(),
                    facts,
                    certified,
                }),
                Err(e) => live.refused.push((name.to_string(), e.message)),
            }
        }
        live.known_hosts.certificate_names = live
            .served
            .iter()
            .flat_map(|u| u.facts.names.iter().cloned())
            .collect();
        live
    }

    /// The one uploaded under `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&UploadedServed> {
        self.served.iter().find(|u| u.name == name)
    }
}

static LIVE: LazyLock<ArcSwap<UploadedLive>> = LazyLock::new(ArcSwap::default);

/// The uploaded certificates the listeners serve now (one set per process: the controller's).
pub(crate) fn uploaded() -> &'static ArcSwap<UploadedLive> {
    &LIVE
}

/// Makes the uploads `(name, chain PEM, key PEM)` the set every listener serves from its next
/// handshake on (parsed and checked here, once per change of the control state, never per
/// handshake). One that no longer parses is warned about and left out; the others are served.
pub(crate) fn install_uploaded<'a>(uploads: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) {
    let live = UploadedLive::build(uploads);
    for (name, why) in &live.refused {
        log::warn!("uploaded certificate {name:?} is not served: {why}");
    }
    LIVE.store(Arc::new(live));
}

/// A warning for each upload that is not served (it no longer parses), for `/status`.
pub(crate) fn uploaded_warnings() -> Vec<String> {
    LIVE.load()
        .refused
        .iter()
        .map(|(name, why)| format!("uploaded certificate {name:?} is not served: {why}"))
        .collect()
}

/// An upload checked for the admin API: the chain parses (field `chain`), the key parses and
/// is the leaf's (field `key`), and the leaf names a DNS name and has not expired at `now`
/// (field `chain`).
/// Returns what the certificate says of itself.
pub(crate) fn check_upload(
    chain_pem: &str,
    key_pem: &str,
    now: i64,
) -> Result<CertificateFacts, PemError> {
    let (_, facts) = certified_from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
    if facts.names.is_empty() {
        return Err(PemError {
            field: "chain",
            message: "the certificate names no DNS name (no DNS subject alternative name, no \
                      common name), so no client's server name could select it"
                .into(),
        });
    }
    if facts.not_after <= now {
        return Err(PemError {
            field: "chain",
            message: format!(
                "the certificate expired on {} (not after {})",
                rfc3339(facts.not_after),
                facts.not_after
            ),
        });
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names` and its key, as PEM (made at test time);
    /// `expired`: its validity ended in 2001.
    fn self_signed(names: &[&str], expired: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Issuer");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Canary Tests");
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params.self_signed(&key).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// A good upload gives its names (wildcards too), issuer and expiry.
    #[test]
    fn a_good_upload_says_what_it_is() {
        let (chain, key) = self_signed(&["Shop.Example.com", "*.example.net"], false);
        let facts = check_upload(&chain, &key, crate::config::unix_now()).expect("valid");
        assert_eq!(facts.names, ["shop.example.com", "*.example.net"]);
        assert_eq!(facts.issuer, "Test Issuer (Canary Tests)");
        assert!(
            facts.days_left(crate::config::unix_now()) > 300,
            "{facts:?}"
        );
    }

    /// Each bad upload is refused naming its field: garbage and an expired certificate are
    /// the chain's fault, garbage and another certificate's key the key's.
    #[test]
    fn bad_uploads_name_the_field() {
        let now = crate::config::unix_now();
        let (chain, key) = self_signed(&["a.test"], false);
        let (_, other_key) = self_signed(&["b.test"], false);
        let (old_chain, old_key) = self_signed(&["a.test"], true);
        let cases = [
            ("garbage", key.as_str(), "chain"),
            ("", key.as_str(), "chain"),
            (chain.as_str(), "garbage", "key"),
            (chain.as_str(), other_key.as_str(), "key"),
            (old_chain.as_str(), old_key.as_str(), "chain"),
        ];
        for (chain, key, field) in cases {
            let e = check_upload(chain, key, now).expect_err(field);
            assert_eq!(e.field, field, "{}", e.message);
        }
        // Only an IP address and no common name: nothing SNI could select.
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
        let cert = params.self_signed(&key).expect("certificate");
        let e = check_upload(&cert.pem(), &key.serialize_pem(), now).expect_err("no name");
        assert_eq!(e.field, "chain");
        assert!(e.message.contains("no DNS name"), "{}", e.message);
        let e = check_upload(&old_chain, &old_key, now).expect_err("expired");
        assert!(e.message.contains("expired on 2001-01-01"), "{}", e.message);
    }

    /// The live set serves what parses and reports the rest by name.
    #[test]
    fn the_live_set_keeps_what_parses() {
        let (chain, key) = self_signed(&["a.test"], false);
        let live = UploadedLive::build([("good", chain.as_str(), key.as_str()), ("bad", "x", "y")]);
        assert_eq!(live.served.len(), 1);
        assert_eq!(
            live.get("good").map(|u| u.facts.names.clone()),
            Some(vec!["a.test".to_string()])
        );
        assert_eq!(live.refused.len(), 1);
        assert_eq!(live.refused[0].0, "bad");
        assert!(live.known_hosts.contains("a.test"));
        assert!(!live.known_hosts.contains("b.test"));
    }
}
