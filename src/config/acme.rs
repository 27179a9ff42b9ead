//! `gateway.acme` validated into [`AcmeConfig`], and the live ACME material the TLS
//! listeners and the HTTP-01 answer read: issued certificates and pending challenges by name,
//! behind one arc-swap that only the ACME task (state/acme/) replaces. It lives here, below
//! the state layer, because a listener's certificate resolver (built at validation) reads it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

use super::parse::parse_duration;
use super::spec::AcmeSpec;
use super::{key_error, KeyError};

/// The ALPN protocol of a TLS-ALPN-01 validation (RFC 8737).
pub(crate) const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The path prefix of an HTTP-01 validation request (RFC 8555 §8.3).
pub(crate) const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";

/// How the CA checks that the gateway serves a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// A token served over plaintext HTTP on port 80.
    Http01,
    /// A self-signed certificate served by the TLS listener for the `acme-tls/1` protocol.
    TlsAlpn01,
}

impl AcmeChallenge {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// `gateway.acme`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    pub(crate) directory: String,
    pub(crate) email: Option<String>,
    pub(crate) challenge: AcmeChallenge,
    /// Renew when the certificate expires within this.
    pub(crate) renew_before: Duration,
    /// Extra roots for the directory's TLS.
    pub(crate) ca_file: Option<PathBuf>,
    /// The first wait after a failure (doubled up to [`MAX_RETRY`]); the least time between
    /// two orders for the same names.
    pub(crate) retry: Duration,
    /// The folder holding the account key and the certificates.
    pub(crate) storage: PathBuf,
}

/// The longest wait between two tries of a failing order.
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(3600);

/// Validates `gateway.acme`. `state_file` is `gateway.admin.state_file` (resolved), whose
/// folder holds `acme/` by default; `base` is the configuration file's folder.
pub(super) fn validate_acme(
    spec: &AcmeSpec,
    base: &Path,
    state_file: Option<&Path>,
) -> Result<AcmeConfig, KeyError> {
    let key = "gateway.acme";
    if !(spec.directory.starts_with("https://") || spec.directory.starts_with("http://")) {
        return Err(key_error(
            format!("{key}.directory"),
            format!("{:?} is not an http(s) URL", spec.directory),
        ));
    }
    if !spec.accept_terms {
        return Err(key_error(
            format!("{key}.accept_terms"),
            "must be true: ordering a certificate agrees to the CA's terms of service".into(),
        ));
    }
    if let Some(email) = &spec.email {
        if !email.contains('@') || email.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err(key_error(
                format!("{key}.email"),
                format!("{email:?} is not an email address"),
            ));
        }
    }
    let challenge = match spec.challenge.as_deref() {
        None | Some("http-01") => AcmeChallenge::Http01,
        Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
        Some(other) => {
            return Err(key_error(
                format!("{key}.challenge"),
                format!("{other:?} is not http-01 or tls-alpn-01"),
            ))
        }
    };
    let renew_before = match &spec.renew_before {
        None => Duration::from_secs(30 * 86_400),
        Some(text) => {
            parse_duration(text).map_err(|m| key_error(format!("{key}.renew_before"), m))?
        }
    };
    let retry = match &spec.retry {
        None => Duration::from_secs(10),
        Some(text) => parse_duration(text).map_err(|m| key_error(format!("{key}.retry"), m))?,
    };
    if retry.is_zero() || retry > MAX_RETRY {
        return Err(key_error(
            format!("{key}.retry"),
            "must be more than 0 and at most 1h".into(),
        ));
    }
    // Read and checked as a PEM chain by the caller (gateway.rs).
    let ca_file = spec.ca_file.as_ref().map(|p| base.join(p));
    let storage = match &spec.storage {
        Some(path) => base.join(path),
        None => state_file
            .and_then(Path::parent)
            .unwrap_or(base)
            .join("acme"),
    };
    Ok(AcmeConfig {
        directory: spec.directory.clone(),
        email: spec.email.clone(),
        challenge,
        renew_before,
        ca_file,
        retry,
        storage,
    })
}

/// Checks a listener's `tls.acme` names (or an API request's `acme`): DNS names (no wildcards: HTTP-01 and TLS-ALPN-01
/// cannot prove one), lower-cased, each once.
pub(crate) fn validate_acme_names(names: &[String], key: &str) -> Result<Vec<String>, KeyError> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let lower = name.trim().to_ascii_lowercase();
        let valid = !lower.is_empty()
            && lower.len() <= 253
            && lower.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(key_error(
                format!("{key}[{i}]"),
                format!(
                    "{name:?} is not a DNS name (wildcards need DNS-01, which is not supported)"
                ),
            ));
        }
        if out.contains(&lower) {
            return Err(key_error(
                format!("{key}[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
        out.push(lower);
    }
    Ok(out)
}

/// What the ACME task has made available to the listeners.
#[derive(Default)]
pub(crate) struct AcmeLive {
    /// Issued certificates by name.
    pub(crate) certificates: HashMap<String, Arc<CertifiedKey>>,
    /// TLS-ALPN-01 validation certificates by name, while their order is pending.
    pub(crate) alpn: HashMap<String, Arc<CertifiedKey>>,
    /// HTTP-01 key authorizations by token, while their order is pending.
    pub(crate) tokens: HashMap<String, String>,
}

static LIVE: LazyLock<ArcSwap<AcmeLive>> = LazyLock::new(ArcSwap::default);

/// The certificates requested through the admin API (`PUT /config/certificates/{name}`
/// `{"acme": [...]}`), as the controller last installed them from the control state.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AcmeRequested {
    /// Each request's name and its names (validated, lower case), by request name.
    pub(crate) sets: Vec<(String, Vec<String>)>,
    /// Every requested name: served its issued ACME certificate on every TLS listener.
    pub(crate) names: std::collections::HashSet<String>,
}

static REQUESTED: LazyLock<ArcSwap<AcmeRequested>> = LazyLock::new(ArcSwap::default);

/// The certificates requested through the admin API (one set per process: the controller's).
pub(crate) fn requested() -> &'static ArcSwap<AcmeRequested> {
    &REQUESTED
}

/// The live ACME material (the process has one ACME task, so one of these).
pub(crate) fn live() -> &'static ArcSwap<AcmeLive> {
    &LIVE
}

/// Replaces the live ACME material with `change` applied to a copy of it.
pub(crate) fn update_live(change: impl Fn(&mut AcmeLive)) {
    LIVE.rcu(|current| {
        let mut next = AcmeLive {
            certificates: current.certificates.clone(),
            alpn: current.alpn.clone(),
            tokens: current.tokens.clone(),
        };
        change(&mut next);
        next
    });
}

/// The HTTP-01 answer for a request `path`: the key authorization of a pending token.
pub(crate) fn http01_answer(path: &str) -> Option<String> {
    let token = path.strip_prefix(HTTP01_PREFIX)?;
    LIVE.load().tokens.get(token).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AcmeSpec {
        AcmeSpec {
            directory: "https://ca.test/dir".into(),
            email: Some("ops@example.com".into()),
            accept_terms: true,
            challenge: None,
            renew_before: None,
            ca_file: None,
            retry: None,
            storage: None,
        }
    }

    /// Defaults: HTTP-01, 30 days, 10 s, `acme/` beside the state file.
    #[test]
    fn defaults() {
        let c = validate_acme(
            &spec(),
            Path::new("/etc/gw"),
            Some(Path::new("/var/gw/s.json")),
        )
        .expect("valid");
        assert_eq!(c.challenge, AcmeChallenge::Http01);
        assert_eq!(c.renew_before, Duration::from_secs(30 * 86_400));
        assert_eq!(c.retry, Duration::from_secs(10));
        assert_eq!(c.storage, PathBuf::from("/var/gw/acme"));
        let c = validate_acme(&spec(), Path::new("/etc/gw"), None).expect("valid");
        assert_eq!(c.storage, PathBuf::from("/etc/gw/acme"));
    }

    /// Each wrong value is refused under its own key.
    #[test]
    fn errors_name_the_key() {
        type Change = fn(&mut AcmeSpec);
        let cases: Vec<(Change, &str)> = vec![
            (|s| s.accept_terms = false, "gateway.acme.accept_terms"),
            (
                |s| s.challenge = Some("dns-01".into()),
                "gateway.acme.challenge",
            ),
            (
                |s| s.renew_before = Some("30 days".into()),
                "gateway.acme.renew_before",
            ),
            (|s| s.directory = "ca.test".into(), "gateway.acme.directory"),
            (|s| s.email = Some("ops".into()), "gateway.acme.email"),
            (|s| s.retry = Some("0s".into()), "gateway.acme.retry"),
        ];
        for (change, key) in cases {
            let mut s = spec();
            change(&mut s);
            let e = validate_acme(&s, Path::new("/"), None).expect_err(key);
            assert_eq!(e.key, key, "{}", e.message);
        }
    }

    /// Names are lower-cased; wildcards, bad labels and repeats are refused.
    #[test]
    fn names() {
        let ok = validate_acme_names(&["WWW.Example.com".into(), "localhost".into()], "k")
            .expect("valid");
        assert_eq!(ok, vec!["www.example.com", "localhost"]);
        for bad in ["*.example.com", "a..b", "-a.b", "a b", ""] {
            let e = validate_acme_names(&["ok.test".into(), bad.into()], "k").expect_err(bad);
            assert_eq!(e.key, "k[1]");
        }
        let e = validate_acme_names(&["a.test".into(), "A.test".into()], "k").expect_err("twice");
        assert_eq!(e.key, "k[1]");
    }
}
