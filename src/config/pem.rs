//! A certificate's PEM read into what rustls serves, and what its leaf says of itself (names,
//! expiry, serial, key type, issuer): shared by the certificate files, ACME and the uploads.

use std::sync::Arc;

use rustls::crypto::ring as crypto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;
use x509_parser::oid_registry::{
    OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Version};

/// What a leaf certificate says of itself, as the listings show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertificateFacts {
    /// Its DNS names (subject alternative names; the common name when it has none), lower case.
    pub(crate) names: Vec<String>,
    /// When it expires, in seconds since the Unix epoch.
    pub(crate) not_after: i64,
    /// Its serial number, in hex.
    pub(crate) serial: String,
    /// `RSA`, `ECDSA`, `Ed25519` or `other`.
    pub(crate) key_type: &'static str,
    /// The issuer's common name, with its organization when it has one.
    pub(crate) issuer: String,
}

impl CertificateFacts {
    /// Whole days from `now` until the certificate expires (negative once it has).
    pub(crate) fn days_left(&self, now: i64) -> i64 {
        (self.not_after - now) / 86_400
    }
}

/// The facts of a parsed leaf.
pub(super) fn leaf_facts(leaf: &X509Certificate<'_>) -> CertificateFacts {
    let algorithm = &leaf.public_key().algorithm.algorithm;
    let key_type = if *algorithm == OID_PKCS1_RSAENCRYPTION {
        "RSA"
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        "ECDSA"
    } else if *algorithm == OID_SIG_ED25519 {
        "Ed25519"
    } else {
        "other"
    };
    CertificateFacts {
        names: dns_names(leaf),
        not_after: leaf.validity().not_after.timestamp(),
        serial: format!("{:X}", leaf.serial),
        key_type,
        issuer: issuer_words(leaf),
    }
}

/// The issuer as people name it: `CN (O)`, `CN`, `O`, or the whole name when it has neither.
fn issuer_words(leaf: &X509Certificate<'_>) -> String {
    let issuer = leaf.issuer();
    let cn = issuer
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let org = issuer
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    match (cn, org) {
        (Some(cn), Some(org)) if cn != org => format!("{cn} ({org})"),
        (Some(cn), _) => cn,
        (None, Some(org)) => org,
        (None, None) => issuer.to_string(),
    }
}

/// The certificate facts of the first certificate of a DER chain, when it parses.
pub(crate) fn facts_of_der(leaf: &[u8]) -> Option<CertificateFacts> {
    X509Certificate::from_der(leaf)
        .ok()
        .map(|(_, leaf)| leaf_facts(&leaf))
}

/// `secs` (since the Unix epoch) as an RFC 3339 time, for messages.
pub(crate) fn rfc3339(secs: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A PEM chain and key that cannot be served, and which of the two is at fault (`chain` or
/// `key`, the admin API's field names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PemError {
    pub(crate) field: &'static str,
    pub(crate) message: String,
}

/// Reads a PEM chain (leaf first) and its PEM key into what rustls serves, checking each
/// certificate parses, the leaf is X.509 version 3 and the key is the leaf's. Errors name the
/// field at fault. Expiry is the caller's to judge.
pub(crate) fn certified_from_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Arc<CertifiedKey>, CertificateFacts), PemError> {
    let chain_error = |message: String| PemError {
        field: "chain",
        message,
    };
    let key_error = |message: String| PemError {
        field: "key",
        message,
    };
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| chain_error(format!("not a PEM certificate chain ({e})")))?;
    let Some(first) = chain.first() else {
        return Err(chain_error(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    };
    let (_, leaf) = X509Certificate::from_der(first)
        .map_err(|e| chain_error(format!("the first certificate does not parse ({e})")))?;
    for (i, cert) in chain.iter().enumerate().skip(1) {
        X509Certificate::from_der(cert)
            .map_err(|e| chain_error(format!("certificate {i} does not parse ({e})")))?;
    }
    if leaf.version() != X509Version::V3 {
        return Err(chain_error(format!(
            "an X.509 version {} certificate, which rustls (webpki) does not accept; re-issue it as version 3",
            leaf.version().0 + 1
        )));
    }
    let facts = leaf_facts(&leaf);
    let private_key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| key_error(format!("not a PEM private key ({e})")))?;
    let signing_key = crypto::default_provider()
        .key_provider
        .load_private_key(private_key)
        .map_err(|e| {
            key_error(format!(
                "an unusable key ({e}); RSA, ECDSA (P-256, P-384) or Ed25519"
            ))
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok((Arc::new(certified), facts)),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(key_error(
            "is not the key of the chain's first certificate".into(),
        )),
        Err(rustls::Error::InconsistentKeys(_)) => Err(key_error(
            "cannot tell whether it is the key of the chain's first certificate".into(),
        )),
        Err(e) => Err(chain_error(format!(
            "a certificate rustls cannot use ({e})"
        ))),
    }
}

/// The certificate's DNS names in lower case: its subject alternative names, or its common
/// name when it has none.
pub(super) fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok().map(str::to_ascii_lowercase))
            .collect();
    }
    names
}
