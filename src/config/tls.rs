//! Validation of `gateway.listen` (plaintext, redirect and TLS listeners) and of a group's
//! `tls`. A TLS listener's certificates are read and checked, and its acceptor built, once here
//! (`certificates`), so a listener that loads is one rustls will serve. Every error names its
//! key.

use std::path::Path;
use std::sync::Arc;

use http::HeaderValue;
use pingora_core::listeners::tls::Acceptor;
use pingora_core::utils::tls::{CertKey, WrappedX509};

use super::certificates::{build_acceptor, load_certificate, read_chain, Certificate, TlsVersion};
use super::parse::connection_count;
use super::spec::{ListenSpec, ListenerSpec, TlsSpec, UpstreamTlsSpec};
use super::{key_error, KeyError};
use crate::upstreams::UpstreamTls;

/// One proxy listener.
#[derive(Debug, Clone)]
pub struct Listener {
    /// `IP:port`, as Pingora binds it.
    pub addr: String,
    /// The port of `addr` (the HSTS header is chosen by the local port).
    pub(crate) port: u16,
    pub(crate) kind: ListenerKind,
    /// `gateway.listen[i].max_connections`, when set.
    pub(crate) max_connections: Option<usize>,
}

impl Listener {
    /// The address and what it speaks: `0.0.0.0:443 (tls)`, `0.0.0.0:80 (redirect to https)`.
    /// The names whose certificate this listener gets by ACME (none unless TLS).
    pub(crate) fn acme_names(&self) -> &[String] {
        match &self.kind {
            ListenerKind::Tls(tls) => &tls.acme_names,
            _ => &[],
        }
    }

    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            ListenerKind::Plain { h2c: false } => self.addr.clone(),
            ListenerKind::Plain { h2c: true } => format!("{} (h2c)", self.addr),
            ListenerKind::RedirectHttps { .. } => format!("{} (redirect to https)", self.addr),
            ListenerKind::Tls(_) => format!("{} (tls)", self.addr),
        }
    }
}

/// Every listener described, comma-separated, for logs and messages.
pub fn describe_listeners(listeners: &[Listener]) -> String {
    listeners
        .iter()
        .map(Listener::describe)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a listener speaks.
#[derive(Debug, Clone)]
pub(crate) enum ListenerKind {
    /// Plaintext HTTP/1.1; with `h2c`, also HTTP/2 with prior knowledge (a connection that
    /// starts with the HTTP/2 preface).
    Plain { h2c: bool },
    /// Plaintext HTTP/1.1 answering every request with a 308 to https; nothing is proxied.
    RedirectHttps {
        /// The port named in the `Location` (left out when 443).
        https_port: u16,
    },
    /// TLS, HTTP/2 and HTTP/1.1 by ALPN.
    Tls(Arc<TlsListener>),
}

/// A TLS listener, ready to serve: its acceptor and what `/status` shows of it.
pub(crate) struct TlsListener {
    /// The rustls acceptor: certificates chosen by the client's server name (SNI), session
    /// resumption by tickets and a session cache.
    pub(crate) acceptor: Acceptor,
    /// The certificates, in file order.
    pub(crate) certificates: Vec<Certificate>,
    /// Index of the certificate for clients without SNI or with an unknown name.
    pub(crate) default_certificate: usize,
    /// Names served with the certificate ACME issues (`tls.acme`), lower case.
    pub(crate) acme_names: Vec<String>,
    /// `Strict-Transport-Security` value for every response, when set.
    pub(crate) hsts: Option<HeaderValue>,
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("certificates", &self.certificates)
            .field("default_certificate", &self.default_certificate)
            .field("acme_names", &self.acme_names)
            .field("hsts", &self.hsts)
            .finish()
    }
}

/// A warning for each certificate of `listeners` that expires within `EXPIRY_WARNING_DAYS`
/// of `now` (seconds since the Unix epoch).
pub fn certificate_warnings(listeners: &[Listener], now: i64) -> Vec<String> {
    let mut warnings = Vec::new();
    for (i, listener) in listeners.iter().enumerate() {
        let ListenerKind::Tls(tls) = &listener.kind else {
            continue;
        };
        for (j, cert) in tls.certificates.iter().enumerate() {
            if let Some(days) = cert.expires_soon(now) {
                warnings.push(format!(
                    "gateway.listen[{i}].tls.certificates[{j}].cert: {} ({}) expires in {days} days",
                    cert.cert_file.display(),
                    cert.label()
                ));
            }
        }
    }
    warnings
}

/// Validates `gateway.listen`; `acme_configured`: `gateway.acme` is set (every TLS listener
/// then answers TLS-ALPN-01 for the names requested through the admin API).
pub(super) fn validate_listeners(
    listen: &[ListenSpec],
    base: &Path,
    now: i64,
    acme_configured: bool,
) -> Result<Vec<Listener>, KeyError> {
    if listen.is_empty() {
        return Err(key_error(
            "gateway.listen".into(),
            "needs at least one address".into(),
        ));
    }
    let mut listeners: Vec<Listener> = Vec::with_capacity(listen.len());
    for (i, entry) in listen.iter().enumerate() {
        let key = format!("gateway.listen[{i}]");
        let listener = match entry {
            ListenSpec::Addr(addr) => {
                let (addr, port) = socket_addr(addr, &key)?;
                Listener {
                    addr,
                    port,
                    kind: ListenerKind::Plain { h2c: false },
                    max_connections: None,
                }
            }
            ListenSpec::Listener(l) => validate_listener(l, &key, base, now, acme_configured)?,
        };
        if listeners.iter().any(|other| other.addr == listener.addr) {
            return Err(key_error(key, format!("{} is listed twice", listener.addr)));
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

/// An `IP:port` listener address: its canonical text and its port.
fn socket_addr(addr: &str, key: &str) -> Result<(String, u16), KeyError> {
    addr.parse::<std::net::SocketAddr>()
        .map(|a| (a.to_string(), a.port()))
        .map_err(|e| {
            key_error(
                key.to_string(),
                format!("{addr:?} is not an IP:port address ({e})"),
            )
        })
}

fn validate_listener(
    l: &ListenerSpec,
    key: &str,
    base: &Path,
    now: i64,
    acme_configured: bool,
) -> Result<Listener, KeyError> {
    let (addr, port) = socket_addr(&l.addr, &format!("{key}.addr"))?;
    let redirect = l.redirect_https.unwrap_or(false);
    if l.https_port.is_some() && !redirect {
        return Err(key_error(
            format!("{key}.https_port"),
            "only a redirect_https listener names an https port".into(),
        ));
    }
    let kind = match (&l.tls, redirect) {
        (Some(_), true) => {
            return Err(key_error(
                format!("{key}.redirect_https"),
                "a TLS listener cannot also redirect to https".into(),
            ))
        }
        (Some(_), false) if l.h2c.is_some() => {
            return Err(key_error(
                format!("{key}.h2c"),
                "a TLS listener chooses HTTP/2 by ALPN (http2:); h2c is for plaintext ones".into(),
            ))
        }
        (Some(tls), false) => {
            let hsts = l
                .hsts
                .as_ref()
                .map(|v| header_value(v, &format!("{key}.hsts")))
                .transpose()?;
            let tls = validate_tls(
                tls,
                l.http2.unwrap_or(true),
                hsts,
                key,
                base,
                now,
                acme_configured,
            )?;
            ListenerKind::Tls(Arc::new(tls))
        }
        (None, redirect) => {
            if l.h2c == Some(true) && redirect {
                return Err(key_error(
                    format!("{key}.h2c"),
                    "a redirect_https listener proxies nothing; h2c is for proxy listeners".into(),
                ));
            }
            for (set, name) in [(l.http2.is_some(), "http2"), (l.hsts.is_some(), "hsts")] {
                if set {
                    return Err(key_error(
                        format!("{key}.{name}"),
                        "needs a TLS listener (tls:)".into(),
                    ));
                }
            }
            if redirect {
                let https_port = l.https_port.unwrap_or(443);
                if https_port == 0 {
                    return Err(key_error(
                        format!("{key}.https_port"),
                        "0 is not a port".into(),
                    ));
                }
                ListenerKind::RedirectHttps { https_port }
            } else {
                ListenerKind::Plain {
                    h2c: l.h2c.unwrap_or(false),
                }
            }
        }
    };
    let max_connections = connection_count(l.max_connections)
        .map_err(|m| key_error(format!("{key}.max_connections"), m))?;
    Ok(Listener {
        addr,
        port,
        kind,
        max_connections,
    })
}

fn header_value(value: &str, key: &str) -> Result<HeaderValue, KeyError> {
    let invalid = || {
        key_error(
            key.to_string(),
            format!("{value:?} is not a valid header value"),
        )
    };
    if value.is_empty() || !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(invalid());
    }
    HeaderValue::from_str(value).map_err(|_| invalid())
}

#[allow(clippy::too_many_arguments)]
fn validate_tls(
    tls: &TlsSpec,
    http2: bool,
    hsts: Option<HeaderValue>,
    listener_key: &str,
    base: &Path,
    now: i64,
    acme_configured: bool,
) -> Result<TlsListener, KeyError> {
    let key = format!("{listener_key}.tls");
    let acme_names = super::acme::validate_acme_names(&tls.acme, &format!("{key}.acme"))?;
    if tls.certificates.is_empty() && acme_names.is_empty() {
        return Err(key_error(
            format!("{key}.certificates"),
            "needs at least one certificate (or names in tls.acme)".into(),
        ));
    }
    let min_version = match tls.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::V1_2,
        Some("1.3") => TlsVersion::V1_3,
        Some(other) => {
            return Err(key_error(
                format!("{key}.min_version"),
                format!("{other:?} is not \"1.2\" or \"1.3\""),
            ))
        }
    };
    let mut loaded = Vec::with_capacity(tls.certificates.len());
    for (i, pair) in tls.certificates.iter().enumerate() {
        let cert_key = format!("{key}.certificates[{i}]");
        loaded.push(load_certificate(
            &base.join(&pair.cert),
            &base.join(&pair.key),
            &format!("{cert_key}.cert"),
            &format!("{cert_key}.key"),
            now,
        )?);
    }
    let default_certificate = match &tls.default_certificate {
        None => 0,
        Some(path) => {
            let path = base.join(path);
            loaded
                .iter()
                .position(|c| c.info.cert_file == path)
                .ok_or_else(|| {
                    key_error(
                        format!("{key}.default_certificate"),
                        format!("{} is not one of the certificates", path.display()),
                    )
                })?
        }
    };
    let acceptor = build_acceptor(
        &loaded,
        &acme_names,
        acme_configured,
        default_certificate,
        min_version,
        http2,
    )
    .map_err(|e| key_error(key.clone(), format!("rustls refused the settings: {e}")))?;
    Ok(TlsListener {
        acceptor,
        certificates: loaded.into_iter().map(|c| c.info).collect(),
        default_certificate,
        acme_names,
        hsts,
    })
}

/// Validates a group's `tls`: the server name, verification, the CA file and the client
/// certificate (both files or neither).
pub(super) fn validate_upstream_tls(
    tls: &UpstreamTlsSpec,
    key: &str,
    base: &Path,
    now: i64,
) -> Result<UpstreamTls, KeyError> {
    let sni = tls.sni.clone().unwrap_or_default();
    let verify = tls.verify.unwrap_or(true);
    if verify && sni.is_empty() {
        return Err(key_error(
            format!("{key}.sni"),
            "verification (the default) needs the server name to check the certificate against"
                .into(),
        ));
    }
    let ca = tls
        .ca
        .as_ref()
        .map(|path| read_chain(&base.join(path), &format!("{key}.ca")))
        .transpose()?;
    let client = match (&tls.client_cert, &tls.client_key) {
        (None, None) => None,
        (Some(cert), Some(client_key)) => {
            let loaded = load_certificate(
                &base.join(cert),
                &base.join(client_key),
                &format!("{key}.client_cert"),
                &format!("{key}.client_key"),
                now,
            )?;
            Some((
                loaded.chain.iter().map(|c| c.to_vec()).collect::<Vec<_>>(),
                loaded.key.secret_der().to_vec(),
            ))
        }
        (Some(_), None) => {
            return Err(key_error(
                format!("{key}.client_key"),
                "client_cert needs client_key".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(key_error(
                format!("{key}.client_cert"),
                "client_key needs client_cert".into(),
            ))
        }
    };
    // What was read, as the identity of these settings (a reload that changes a file changes
    // the group).
    let mut source = Vec::new();
    for cert in ca.iter().flatten() {
        source.extend_from_slice(cert);
    }
    if let Some((chain, client_key)) = &client {
        chain.iter().for_each(|c| source.extend_from_slice(c));
        source.extend_from_slice(client_key);
    }
    Ok(UpstreamTls {
        sni,
        verify,
        ca: ca.map(|chain| {
            chain
                .iter()
                .map(|c| WrappedX509::new(c.to_vec(), pingora_core::utils::tls::parse_x509))
                .collect::<Arc<[WrappedX509]>>()
        }),
        client: client.map(|(chain, key)| Arc::new(CertKey::new(chain, key))),
        http2: tls.http2.unwrap_or(false),
        source,
    })
}
