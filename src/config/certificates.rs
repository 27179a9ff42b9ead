//! Certificate files into what rustls serves: a PEM chain and its key read and checked
//! (the key is the certificate's, the certificate has not expired), the names, expiry and
//! serial `/status` shows, and a listener's acceptor choosing among its certificates by SNI.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pingora_core::listeners::tls::Acceptor;
use rustls::crypto::ring as crypto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use x509_parser::prelude::{FromDer, X509Certificate, X509Version};

use super::pem::{dns_names, leaf_facts};
use super::{key_error, KeyError};
use crate::routing::names::pick_certificate;

/// A certificate expiring within this many days is a warning in the log and in `/status`.
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 14;

/// The oldest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsVersion {
    V1_2,
    V1_3,
}

/// What the gateway knows of one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Certificate {
    pub(crate) cert_file: PathBuf,
    /// Its DNS names (subject alternative names; the common name when it has none), lower case.
    pub(crate) names: Vec<String>,
    /// When it expires, in seconds since the Unix epoch.
    pub(crate) not_after: i64,
    /// Its serial number, in hex.
    pub(crate) serial: String,
    /// `RSA`, `ECDSA` or `Ed25519`.
    pub(crate) key_type: &'static str,
    /// Who issued it: the issuer's common name, with its organization when it has one.
    pub(crate) issuer: String,
}

/// The time now in seconds since the Unix epoch, as certificate expiry is kept.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Certificate {
    /// Whole days from `now` until the certificate expires (negative once it has).
    pub(crate) fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now) / 86_400
    }

    /// Days left when the certificate expires within [`EXPIRY_WARNING_DAYS`] of `now`.
    pub(crate) fn expires_soon(&self, now: i64) -> Option<i64> {
        let days = self.days_left(now);
        (days < EXPIRY_WARNING_DAYS).then_some(days)
    }

    /// A name to show it by: its first name, or its file.
    pub(crate) fn label(&self) -> String {
        self.names
            .first()
            .cloned()
            .unwrap_or_else(|| self.cert_file.display().to_string())
    }
}

/// A certificate file's chain and its key, read and checked.
pub(super) struct LoadedCertificate {
    /// The chain (leaf first) with its signing key, as rustls serves it.
    certified: Arc<CertifiedKey>,
    /// The chain and key as DER, for a client certificate.
    pub(super) chain: Vec<CertificateDer<'static>>,
    pub(super) key: PrivateKeyDer<'static>,
    pub(super) info: Certificate,
}

/// Reads a PEM certificate chain and its key, and checks that they belong together and that
/// the certificate has not expired. Errors name `cert_key` (the certificate file's key in the
/// config) or `key_key` (the key file's).
pub(super) fn load_certificate(
    cert_file: &Path,
    key_file: &Path,
    cert_key: &str,
    key_key: &str,
    now: i64,
) -> Result<LoadedCertificate, KeyError> {
    let (cert_key, key_key) = (cert_key.to_string(), key_key.to_string());
    let chain = read_chain(cert_file, &cert_key)?;
    let private_key = read_key(key_file, &key_key)?;
    let (_, leaf) = X509Certificate::from_der(&chain[0]).map_err(|e| {
        key_error(
            cert_key.clone(),
            format!(
                "{}: the first certificate does not parse ({e})",
                cert_file.display()
            ),
        )
    })?;
    let signing_key = crypto::default_provider()
        .key_provider
        .load_private_key(private_key.clone_key())
        .map_err(|e| {
            key_error(
                key_key.clone(),
                format!(
                    "{}: an unusable key ({e}); RSA, ECDSA (P-256, P-384) or Ed25519",
                    key_file.display()
                ),
            )
        })?;
    // rustls reads the leaf with webpki, which takes version 3 only: an older one (what
    // `openssl x509 -req` makes without `-extfile`) would fail the key check below as if the
    // key were another certificate's.
    if leaf.version() != X509Version::V3 {
        return Err(key_error(
            cert_key,
            format!(
                "{}: an X.509 version {} certificate, which rustls (webpki) does not accept; \
                 re-issue it as version 3, with extensions (`openssl x509 -req ... -extfile ...`)",
                cert_file.display(),
                leaf.version().0 + 1
            ),
        ));
    }
    let certified = CertifiedKey::new(chain.clone(), signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(key_error(
                key_key,
                format!(
                    "{} is not the key of the certificate in {}",
                    key_file.display(),
                    cert_file.display()
                ),
            ))
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(key_error(
                key_key,
                format!(
                    "{}: cannot tell whether it is the key of the certificate in {}",
                    key_file.display(),
                    cert_file.display()
                ),
            ))
        }
        // The certificate itself is what rustls refused.
        Err(e) => {
            return Err(key_error(
                cert_key,
                format!(
                    "{}: a certificate rustls cannot use ({e})",
                    cert_file.display()
                ),
            ))
        }
    }
    let not_after = leaf.validity().not_after.timestamp();
    if not_after <= now {
        return Err(key_error(
            cert_key,
            format!(
                "{} expired on {} (not after {})",
                cert_file.display(),
                leaf.validity().not_after,
                not_after
            ),
        ));
    }
    let facts = leaf_facts(&leaf);
    let info = Certificate {
        cert_file: cert_file.to_path_buf(),
        names: facts.names,
        not_after,
        serial: facts.serial,
        key_type: facts.key_type,
        issuer: facts.issuer,
    };
    Ok(LoadedCertificate {
        certified: Arc::new(certified),
        chain,
        key: private_key,
        info,
    })
}

pub(super) fn read_chain(file: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, KeyError> {
    let pem = std::fs::read(file).map_err(|e| {
        key_error(
            key.to_string(),
            format!("cannot read {}: {e}", file.display()),
        )
    })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            key_error(
                key.to_string(),
                format!("{} is not a PEM certificate chain ({e})", file.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(key_error(
            key.to_string(),
            format!("{} holds no certificate", file.display()),
        ));
    }
    for (i, cert) in chain.iter().enumerate() {
        X509Certificate::from_der(cert).map_err(|e| {
            key_error(
                key.to_string(),
                format!(
                    "{} is not a PEM certificate chain (certificate {i}: {e})",
                    file.display()
                ),
            )
        })?;
    }
    Ok(chain)
}

fn read_key(file: &Path, key: &str) -> Result<PrivateKeyDer<'static>, KeyError> {
    let pem = std::fs::read(file).map_err(|e| {
        key_error(
            key.to_string(),
            format!("cannot read {}: {e}", file.display()),
        )
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        key_error(
            key.to_string(),
            format!("{} is not a PEM private key ({e})", file.display()),
        )
    })
}

/// Chooses a certificate by the client's server name (SNI): exact names before wildcards,
/// among several for one name the first whose key the client can verify (RSA beside ECDSA),
/// the default for no name or an unknown one.
///
/// A name in `acme`, or requested through the admin API, is served the certificate ACME
/// issued for it (the live ACME material, read without a lock), and a TLS-ALPN-01 validation
/// (ALPN `acme-tls/1` offered alone) its validation certificate; until one is issued such a
/// name falls back to the other certificates, and with none, the handshake fails (logged
/// once).
///
/// Certificates uploaded through the admin API (the live set of `uploaded`, read without a
/// lock) are tried before the files' for the same kind of match: an exact name of either
/// beats a wildcard of either; among equals, an upload beats a file.
#[derive(Debug)]
struct SniResolver {
    names: Vec<Vec<String>>,
    keys: Vec<Arc<CertifiedKey>>,
    default: usize,
    acme: Vec<String>,
    /// Set once a handshake failed for want of an ACME certificate (logged once).
    waiting_logged: AtomicBool,
}

/// Whether a client's ALPN offer asks for a TLS-ALPN-01 validation: `acme-tls/1` as its only
/// protocol (RFC 8737 §3: the CA offers it alone). A client offering it among others is an
/// ordinary client and gets the ordinary certificate.
fn asks_for_validation<'a>(offered: Option<impl Iterator<Item = &'a [u8]>>) -> bool {
    let Some(mut offered) = offered else {
        return false;
    };
    offered.next() == Some(super::acme::ACME_TLS_ALPN) && offered.next().is_none()
}

impl SniResolver {
    /// The ACME certificate (or validation certificate) for `name`, when it is an ACME name:
    /// this listener's `tls.acme`, or a name requested through the admin API (served on every
    /// listener).
    fn acme_certificate(&self, hello: &ClientHello<'_>, name: &str) -> Option<Arc<CertifiedKey>> {
        if !self.acme.iter().any(|n| n == name)
            && !super::acme::requested().load().names.contains(name)
        {
            return None;
        }
        let live = super::acme::live().load();
        let validating = asks_for_validation(hello.alpn());
        let found = if validating {
            live.alpn.get(name).cloned()
        } else {
            live.certificates.get(name).cloned()
        };
        if found.is_none() && !validating && !self.waiting_logged.swap(true, Ordering::Relaxed) {
            log::warn!("TLS handshake for {name}: its ACME certificate is not issued yet");
        }
        found
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(str::to_ascii_lowercase);
        if let Some(name) = &name {
            if let Some(found) = self.acme_certificate(&hello, name) {
                return Some(found);
            }
        }
        // The uploaded certificates come before the files' in one list, so that for a name
        // both cover the same way (exact or wildcard) the upload wins, while an exact name
        // of either still beats a wildcard of the other.
        let uploaded = super::uploaded::uploaded().load();
        let up = &uploaded.served;
        let key = |i: usize| match i.checked_sub(up.len()) {
            None => up.get(i).map(|u| &u.certified),
            Some(file) => self.keys.get(file),
        };
        let schemes = hello.signature_schemes();
        let usable = |i: usize| key(i).is_some_and(|k| k.key.choose_scheme(schemes).is_some());
        let names = up.iter().map(|u| &u.facts.names).chain(self.names.iter());
        let chosen = name.and_then(|name| pick_certificate(names, &name, usable));
        match chosen {
            Some(i) => key(i).cloned(),
            None => self.keys.get(self.default).cloned(),
        }
    }
}

/// Sessions kept for resumption by session id (TLS 1.2 clients without tickets).
const SESSION_CACHE_ENTRIES: usize = 10_000;

/// The listener's acceptor: TLS 1.2 (unless `min_version` is 1.3) and 1.3 with rustls's
/// cipher suites (ECDHE with AES-GCM or ChaCha20-Poly1305, the "intermediate" profile without
/// its CBC and DHE suites), certificates by SNI, ALPN, session tickets (keys rotated by
/// rustls) and a session cache. `acme_configured`: `gateway.acme` is set, so the listener
/// offers `acme-tls/1` (last) for the names requested through the admin API.
pub(super) fn build_acceptor(
    certificates: &[LoadedCertificate],
    acme: &[String],
    acme_configured: bool,
    default: usize,
    min_version: TlsVersion,
    http2: bool,
) -> Result<Acceptor, rustls::Error> {
    let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let resolver = SniResolver {
        names: certificates.iter().map(|c| c.info.names.clone()).collect(),
        keys: certificates.iter().map(|c| c.certified.clone()).collect(),
        default,
        acme: acme.to_vec(),
        waiting_logged: AtomicBool::new(false),
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(crypto::default_provider()))
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    // Last, so a client offering it beside others never gets it; a CA validating
    // TLS-ALPN-01 offers it alone. Every listener offers it when `gateway.acme` is set:
    // names requested through the admin API are validated on any of them.
    if acme_configured || !acme.is_empty() {
        config
            .alpn_protocols
            .push(super::acme::ACME_TLS_ALPN.to_vec());
    }
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    config.ticketer = crypto::Ticketer::new()?;
    Ok(Acceptor::from_server_config(Arc::new(config)))
}

/// An issued certificate as the ACME task keeps it: what rustls serves, its expiry (seconds
/// since the Unix epoch) and serial (hex).
pub(crate) struct IssuedCertificate {
    pub(crate) certified: Arc<CertifiedKey>,
    pub(crate) not_after: i64,
    pub(crate) serial: String,
    pub(crate) names: Vec<String>,
}

/// Reads a PEM chain (leaf first) and its PEM key into what rustls serves, checking that the
/// key is the leaf's.
pub(crate) fn issued_from_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<IssuedCertificate, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate chain ({e})"))?;
    let leaf = chain.first().ok_or("no certificate in the chain")?;
    let (_, parsed) =
        X509Certificate::from_der(leaf).map_err(|e| format!("the leaf does not parse ({e})"))?;
    let not_after = parsed.validity().not_after.timestamp();
    let serial = format!("{:X}", parsed.serial);
    let names = dns_names(&parsed);
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("not a PEM key ({e})"))?;
    let signing_key = crypto::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("an unusable key ({e})"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| format!("the key is not the certificate's ({e})"))?;
    Ok(IssuedCertificate {
        certified: Arc::new(certified),
        not_after,
        serial,
        names,
    })
}

/// A TLS-ALPN-01 validation certificate (RFC 8737) from its DER and key DER (PKCS#8).
pub(crate) fn validation_certificate(
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
) -> Result<Arc<CertifiedKey>, String> {
    let key = PrivateKeyDer::Pkcs8(key_der.into());
    let signing_key = crypto::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("an unusable key ({e})"))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(cert_der)],
        signing_key,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(protocols: &[&'static [u8]]) -> bool {
        asks_for_validation(Some(protocols.iter().copied()))
    }

    /// Only `acme-tls/1` offered alone asks for the validation certificate (RFC 8737 §3); a
    /// client offering it beside other protocols, in any position, or offering no ALPN, gets
    /// the ordinary certificate.
    #[test]
    fn validation_only_for_acme_tls_alone() {
        let acme: &'static [u8] = super::super::acme::ACME_TLS_ALPN;
        assert!(offer(&[acme]));
        assert!(!offer(&[b"h2", acme]));
        assert!(!offer(&[acme, b"http/1.1"]));
        assert!(!offer(&[b"h2", b"http/1.1"]));
        assert!(!offer(&[]));
        assert!(!asks_for_validation(None::<std::iter::Empty<&[u8]>>));
    }
}
