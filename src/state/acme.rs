//! The ACME task: for each TLS listener's `tls.acme` names, one certificate ordered from the
//! CA in `gateway.acme` (instant-acme speaks the protocol; rcgen makes the keys and CSRs),
//! answered by HTTP-01 or TLS-ALPN-01 through the live ACME material the listeners read
//! (config/acme.rs), stored in the storage folder, served as soon as it is issued and renewed
//! when it expires within `renew_before`. Failed orders are retried with a doubling wait,
//! logged, counted (`gateway_acme_orders_total{result="failed"}`) and shown in `/status`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::{Deserialize, Serialize};

use crate::config::acme::{update_live, AcmeChallenge, AcmeConfig, MAX_RETRY};
use crate::config::unix_now;
use crate::config::{issued_from_pem, validation_certificate};
use crate::state::metrics::METRICS;

/// The longest one order may take, from the account to the stored certificate; past it the
/// order counts as failed and is retried.
const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

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
}

static STATUS: LazyLock<ArcSwap<Vec<AcmeStatus>>> = LazyLock::new(ArcSwap::default);

/// Every ACME certificate's status, in listener order.
pub(crate) fn statuses() -> Arc<Vec<AcmeStatus>> {
    STATUS.load_full()
}

fn set_status(index: usize, status: AcmeStatus) {
    STATUS.rcu(|all| {
        let mut all = Vec::clone(all);
        if index < all.len() {
            all[index] = status.clone();
        }
        all
    });
}

/// The account as stored: the credentials and the directory they belong to.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The background service ordering and renewing the certificates.
pub(crate) struct AcmeService {
    config: AcmeConfig,
    /// One name set per certificate.
    certificates: Vec<Vec<String>>,
    /// The stored certificate of each set (expiry, serial), served from the start.
    stored: Vec<Option<(i64, String)>>,
}

/// One certificate's progress.
struct Slot {
    /// When to look at it next.
    due: tokio::time::Instant,
    /// The wait after the next failure.
    backoff: Duration,
    status: AcmeStatus,
}

impl AcmeService {
    /// The service for `certificates` (one name set each). Stored certificates are read and
    /// served here, before the listeners start, so a restart serves them from its first
    /// handshake.
    pub(crate) fn new(config: AcmeConfig, certificates: Vec<Vec<String>>) -> Self {
        let mut service = AcmeService {
            config,
            certificates,
            stored: Vec::new(),
        };
        service.stored = service
            .certificates
            .iter()
            .map(|names| service.load_stored(names))
            .collect();
        STATUS.store(Arc::new(
            (0..service.certificates.len())
                .map(|i| service.initial_status(i))
                .collect(),
        ));
        service
    }

    fn initial_status(&self, index: usize) -> AcmeStatus {
        let stored = self.stored[index].clone();
        AcmeStatus {
            names: self.certificates[index].clone(),
            state: if stored.is_some() {
                "issued"
            } else {
                "waiting"
            },
            not_after: stored.as_ref().map(|s| s.0),
            serial: stored.map(|s| s.1),
            failures: 0,
            last_error: None,
        }
    }

    fn chain_file(&self, names: &[String]) -> PathBuf {
        self.config.storage.join(format!("{}.crt", names[0]))
    }

    fn key_file(&self, names: &[String]) -> PathBuf {
        self.config.storage.join(format!("{}.key", names[0]))
    }

    /// Serves `chain` and `key` for every name; returns (expiry, serial).
    fn serve(&self, names: &[String], chain: &[u8], key: &[u8]) -> Result<(i64, String), String> {
        let issued = issued_from_pem(chain, key)?;
        for name in names {
            if !issued.names.iter().any(|n| n == name) {
                return Err(format!("the certificate does not name {name}"));
            }
        }
        let certified = issued.certified.clone();
        update_live(|live| {
            for name in names {
                live.certificates.insert(name.clone(), certified.clone());
            }
        });
        Ok((issued.not_after, issued.serial))
    }

    /// When a certificate expiring at `not_after` is due for renewal, in seconds from now.
    fn renew_in(&self, not_after: i64) -> i64 {
        not_after - self.config.renew_before.as_secs() as i64 - unix_now()
    }

    /// Serves the stored certificate of `names` when there is a usable one.
    fn load_stored(&self, names: &[String]) -> Option<(i64, String)> {
        let chain = std::fs::read(self.chain_file(names)).ok()?;
        let key = std::fs::read(self.key_file(names)).ok()?;
        match self.serve(names, &chain, &key) {
            Ok((not_after, serial)) if not_after > unix_now() => {
                info!(
                    "ACME: serving the stored certificate for {} (serial {serial})",
                    names.join(", ")
                );
                Some((not_after, serial))
            }
            Ok(_) => None,
            Err(e) => {
                warn!(
                    "ACME: the stored certificate for {} is not usable: {e}",
                    names.join(", ")
                );
                None
            }
        }
    }

    /// The account: the stored one for this directory, else a new one (stored).
    async fn account(&self) -> Result<Account, String> {
        let file = self.config.storage.join("account.json");
        let builder = || match &self.config.ca_file {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        if let Ok(text) = std::fs::read(&file) {
            match serde_json::from_slice::<StoredAccount>(&text) {
                Ok(stored) if stored.directory == self.config.directory => {
                    return builder()
                        .map_err(|e| format!("ACME client: {e}"))?
                        .from_credentials(stored.credentials)
                        .await
                        .map_err(|e| format!("restoring the account: {e}"));
                }
                Ok(_) => info!("ACME: the stored account is another directory's; creating one"),
                Err(e) => warn!(
                    "ACME: {} is not readable ({e}); creating an account",
                    file.display()
                ),
            }
        }
        let contact = self.config.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder()
            .map_err(|e| format!("ACME client: {e}"))?
            .create(
                &NewAccount {
                    contact: &contacts,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.config.directory.clone(),
                None,
            )
            .await
            .map_err(|e| format!("creating the account: {e}"))?;
        let stored = StoredAccount {
            directory: self.config.directory.clone(),
            credentials,
        };
        let text = serde_json::to_vec_pretty(&stored).map_err(|e| e.to_string())?;
        write_private(&file, &text)?;
        info!("ACME: account {} created", account.id());
        Ok(account)
    }

    /// Orders a certificate for `names`, answers its challenges, stores and serves it.
    async fn order(&self, names: &[String]) -> Result<(i64, String), String> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let mut tokens = Vec::new();
        let mut authorizations = order.authorizations();
        let answered = async {
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(format!("authorization is {other:?}")),
                }
                let kind = match self.config.challenge {
                    AcmeChallenge::Http01 => ChallengeType::Http01,
                    AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
                };
                let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                    format!(
                        "the CA offers no {} challenge",
                        self.config.challenge.as_str()
                    )
                })?;
                let name = challenge.identifier().to_string();
                let key_authorization = challenge.key_authorization();
                match self.config.challenge {
                    AcmeChallenge::Http01 => {
                        let token = challenge.token.clone();
                        let answer = key_authorization.as_str().to_string();
                        tokens.push(token.clone());
                        update_live(|live| {
                            live.tokens.insert(token.clone(), answer.clone());
                        });
                    }
                    AcmeChallenge::TlsAlpn01 => {
                        let certified =
                            alpn_certificate(&name, key_authorization.digest().as_ref())?;
                        update_live(|live| {
                            live.alpn.insert(name.clone(), certified.clone());
                        });
                    }
                }
                info!(
                    "ACME: answering the {} challenge for {name}",
                    self.config.challenge.as_str()
                );
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| format!("challenge for {name}: {e}"))?;
            }
            Ok::<(), String>(())
        }
        .await;
        let issued = match answered {
            Ok(()) => self.finish(&mut order, names).await,
            Err(e) => Err(e),
        };
        // The challenges are answered only while their order is open.
        update_live(|live| {
            for token in &tokens {
                live.tokens.remove(token);
            }
            for name in names {
                live.alpn.remove(name);
            }
        });
        issued
    }

    /// Waits for the order to be ready, finalizes it with a new key's CSR, and stores and
    /// serves the certificate.
    async fn finish(
        &self,
        order: &mut instant_acme::Order,
        names: &[String],
    ) -> Result<(i64, String), String> {
        let polling = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(90));
        let status = order
            .poll_ready(&polling)
            .await
            .map_err(|e| format!("waiting for validation: {e}"))?;
        if status != OrderStatus::Ready {
            let detail = order
                .state()
                .error
                .as_ref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default();
            return Err(format!("the order is {status:?}{detail}"));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
        let params =
            rcgen::CertificateParams::new(names.to_vec()).map_err(|e| format!("CSR: {e}"))?;
        let csr = params
            .serialize_request(&key)
            .map_err(|e| format!("CSR: {e}"))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain = order
            .poll_certificate(&polling)
            .await
            .map_err(|e| format!("waiting for the certificate: {e}"))?;
        let key_pem = key.serialize_pem();
        let served = self.serve(names, chain.as_bytes(), key_pem.as_bytes())?;
        std::fs::create_dir_all(&self.config.storage)
            .map_err(|e| format!("{}: {e}", self.config.storage.display()))?;
        write_private(&self.key_file(names), key_pem.as_bytes())?;
        write_private(&self.chain_file(names), chain.as_bytes())?;
        Ok(served)
    }

    /// Looks at one certificate: serves the stored one at first, orders when due.
    async fn visit(&self, index: usize, slot: &mut Slot) {
        let names = &self.certificates[index];
        let now = tokio::time::Instant::now();
        info!("ACME: ordering a certificate for {}", names.join(", "));
        let ordered = tokio::time::timeout(ORDER_TIMEOUT, self.order(names))
            .await
            .unwrap_or_else(|_| Err(format!("no answer from the CA within {ORDER_TIMEOUT:?}")));
        match ordered {
            Ok((not_after, serial)) => {
                METRICS.acme_orders.with_label_values(&["ok"]).inc();
                info!(
                    "ACME: certificate for {} issued (serial {serial}), serving it",
                    names.join(", ")
                );
                slot.status.state = "issued";
                slot.status.not_after = Some(not_after);
                slot.status.serial = Some(serial);
                slot.status.failures = 0;
                slot.status.last_error = None;
                slot.backoff = self.config.retry;
                // Never sooner than `retry`: a renew_before longer than the CA's certificates
                // live would otherwise order without pause.
                let wait = Duration::from_secs(self.renew_in(not_after).max(0) as u64);
                slot.due = now + wait.max(self.config.retry);
            }
            Err(e) => {
                METRICS.acme_orders.with_label_values(&["failed"]).inc();
                warn!(
                    "ACME: ordering a certificate for {} failed (retrying in {:?}): {e}",
                    names.join(", "),
                    slot.backoff
                );
                if slot.status.state == "issued" {
                    slot.status.state = "failing";
                }
                slot.status.failures += 1;
                slot.status.last_error = Some(e);
                slot.due = now + slot.backoff;
                slot.backoff = (slot.backoff * 2).min(MAX_RETRY);
            }
        }
        set_status(index, slot.status.clone());
    }
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let now = tokio::time::Instant::now();
        // A stored certificate is due when it expires within renew_before; none: at once.
        let mut slots: Vec<Slot> = (0..self.certificates.len())
            .map(|index| Slot {
                due: match &self.stored[index] {
                    Some((not_after, _)) => {
                        now + Duration::from_secs(self.renew_in(*not_after).max(0) as u64)
                    }
                    None => now,
                },
                backoff: self.config.retry,
                status: self.initial_status(index),
            })
            .collect();
        loop {
            let now = tokio::time::Instant::now();
            for (index, slot) in slots.iter_mut().enumerate() {
                if slot.due <= now {
                    tokio::select! {
                        _ = self.visit(index, slot) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
            let next = slots.iter().map(|s| s.due).min().unwrap_or(now + MAX_RETRY);
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The TLS-ALPN-01 validation certificate for `name` with the key authorization's digest.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| format!("validation certificate: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("validation certificate: {e}"))?;
    validation_certificate(cert.der().to_vec(), key.serialize_der())
}

/// Writes a file readable by its owner only (keys and the account), through a temporary
/// file renamed over it, so a crash never leaves half a key.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    // `mode` applies only when the file is created: a `.tmp` left by an earlier run keeps
    // its own mode unless it is set here, before the key is written.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A key file is written 0600 even over a `.tmp` an earlier run left readable.
    #[test]
    fn private_files_are_0600_over_a_leftover_tmp() {
        let dir = std::env::temp_dir().join(format!("canary-acme-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("example.com.key");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, b"old").expect("leftover");
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&path, b"secret").expect("written");
        let meta = std::fs::metadata(&path).expect("metadata");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
        std::fs::remove_dir_all(&dir).ok();
    }
}
