//! One ACME order, spoken by instant-acme: the account (restored from storage or created),
//! the challenges answered through the live ACME material (and, with `gateway.store`,
//! published in Redis so every node answers them), the CSR made by rcgen, and the issued
//! chain with its key. What to do with the result (serve it, store it) is the ACME task's
//! (state/acme/mod.rs).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::config::acme::{update_live, AcmeChallenge, AcmeConfig};
use crate::config::validation_certificate;
use crate::state::store::Store;

/// The longest one order may take, from the account to the issued certificate; past it the
/// order counts as failed and is retried.
pub(super) const ORDER_TIMEOUT: Duration = Duration::from_secs(300);

/// With a store: how long the ordering node waits after publishing a challenge before the CA
/// is told to validate, so every node has read it (each reads the store every second:
/// state/acme/mod.rs `FOLLOW_INTERVAL`).
pub(super) const PROPAGATION: Duration = Duration::from_secs(2);

/// What an order needs: the ACME settings and, with `gateway.store`, the store holding the
/// account and receiving the challenges for the other nodes.
pub(super) struct Orderer<'a> {
    pub(super) config: &'a AcmeConfig,
    pub(super) store: Option<&'a Store>,
}

/// The account as stored: the credentials and the directory they belong to.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The challenges an order answers on this node; dropped when the order ends, finished or
/// cancelled (a lost lease, the order's time limit), which stops answering them: they are
/// answered only while their order is open.
struct Answering<'a> {
    /// HTTP-01 tokens.
    tokens: Vec<String>,
    /// The names, whose TLS-ALPN-01 validation certificates these are.
    names: &'a [String],
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        update_live(|live| {
            for token in &self.tokens {
                live.tokens.remove(token);
            }
            for name in self.names {
                live.alpn.remove(name);
            }
        });
    }
}

/// An issued certificate, not yet served or stored.
pub(super) struct Issued {
    /// The PEM chain, leaf first.
    pub(super) chain: String,
    /// The PEM key of the leaf.
    pub(super) key: String,
}

impl Orderer<'_> {
    /// The account: the stored one for this directory (in Redis with a store, else in the
    /// folder), else a new one, stored.
    async fn account(&self) -> Result<Account, String> {
        let file = self.config.storage.join("account.json");
        let builder = || match &self.config.ca_file {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        };
        let stored = match self.store {
            Some(store) => store
                .acme_account()
                .await
                .map_err(|e| format!("reading the account from the store: {e}"))?
                .map(String::into_bytes),
            None => std::fs::read(&file).ok(),
        };
        // An account of another directory, or one that does not parse, is replaced.
        let mut replace = false;
        if let Some(text) = stored {
            match serde_json::from_slice::<StoredAccount>(&text) {
                Ok(stored) if stored.directory == self.config.directory => {
                    return builder()
                        .map_err(|e| format!("ACME client: {e}"))?
                        .from_credentials(stored.credentials)
                        .await
                        .map_err(|e| format!("restoring the account: {e}"));
                }
                Ok(_) => {
                    replace = true;
                    info!("ACME: the stored account is another directory's; creating one")
                }
                Err(e) => {
                    replace = true;
                    warn!("ACME: the stored account is not readable ({e}); creating one")
                }
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
        let text = serde_json::to_string_pretty(&stored).map_err(|e| e.to_string())?;
        match self.store {
            Some(store) => {
                let written = store
                    .put_acme_account(&text, replace)
                    .await
                    .map_err(|e| format!("storing the account: {e}"))?;
                if !written {
                    // Another node stored one a moment before: every node uses that one (the
                    // account made here stays unused).
                    info!("ACME: another node stored an account first; using it");
                    return Box::pin(self.account()).await;
                }
            }
            None => write_private(&file, text.as_bytes())?,
        }
        info!("ACME: account {} created", account.id());
        Ok(account)
    }

    /// Orders a certificate for `names` and answers its challenges; returns the issued chain
    /// and key (neither served nor stored yet).
    pub(super) async fn order(&self, names: &[String]) -> Result<Issued, String> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let kind = self.config.challenge;
        let mut answering = Answering {
            tokens: Vec::new(),
            names,
        };
        // What was published in Redis: HTTP-01 tokens or TLS-ALPN-01 names.
        let mut published = Vec::new();
        let mut authorizations = order.authorizations();
        let answered = async {
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(format!("authorization is {other:?}")),
                }
                let challenge_type = match kind {
                    AcmeChallenge::Http01 => ChallengeType::Http01,
                    AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
                };
                let mut challenge = authz
                    .challenge(challenge_type)
                    .ok_or_else(|| format!("the CA offers no {} challenge", kind.as_str()))?;
                let name = challenge.identifier().to_string();
                let key_authorization = challenge.key_authorization();
                // The field and value other nodes answer from (state/acme/shared.rs).
                let (field, value) = match kind {
                    AcmeChallenge::Http01 => {
                        let token = challenge.token.clone();
                        let answer = key_authorization.as_str().to_string();
                        answering.tokens.push(token.clone());
                        update_live(|live| {
                            live.tokens.insert(token.clone(), answer.clone());
                        });
                        (token, answer)
                    }
                    AcmeChallenge::TlsAlpn01 => {
                        let digest = key_authorization.digest();
                        let certified = alpn_certificate(&name, digest.as_ref())?;
                        update_live(|live| {
                            live.alpn.insert(name.clone(), certified.clone());
                        });
                        let encoded =
                            base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
                        (name.clone(), encoded)
                    }
                };
                if let Some(store) = self.store {
                    store
                        .publish_challenge(kind, &field, &value, ORDER_TIMEOUT)
                        .await
                        .map_err(|e| format!("publishing the challenge for {name}: {e}"))?;
                    published.push(field);
                    // The CA may ask any node behind the name: each reads the store every
                    // FOLLOW_INTERVAL, so the CA is told only once they all could have.
                    tokio::time::sleep(PROPAGATION).await;
                }
                info!("ACME: answering the {} challenge for {name}", kind.as_str());
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
        drop(answering);
        if let Some(store) = self.store {
            if let Err(e) = store.withdraw_challenges(kind, &published).await {
                // They expire on their own after ORDER_TIMEOUT.
                warn!("ACME: withdrawing the challenges from the store: {e}");
            }
        }
        issued
    }

    /// Waits for the order to be ready and finalizes it with a new key's CSR.
    async fn finish(
        &self,
        order: &mut instant_acme::Order,
        names: &[String],
    ) -> Result<Issued, String> {
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
        Ok(Issued {
            chain,
            key: key.serialize_pem(),
        })
    }
}

/// The TLS-ALPN-01 validation certificate for `name` with the key authorization's digest.
pub(super) fn alpn_certificate(
    name: &str,
    digest: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
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
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
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
