//! What the ACME task (state/acme/mod.rs) keeps in Redis with `gateway.store`, so one node orders
//! a certificate and every node serves it: the account, each certificate, the per-certificate
//! order lease and the pending challenges.
//!
//! Keys, under the store's `prefix` (a certificate's `{id}` is its names, sorted, joined by `,`):
//! - `acme:account` (string): the account's credentials and directory, as JSON; written once
//!   (`SET NX`), so nodes creating one at the same moment end up using the same;
//! - `acme:cert:{id}` (string): the certificate as JSON ([`CertRecord`]: chain, key, expiry,
//!   serial, when it was issued);
//! - `acme:lease:{id}` (string): the id of the node ordering that certificate now, with an
//!   expiry it renews while the order runs (`plan-lease`'s script);
//! - `acme:http-01` (hash): token → key authorization of every pending HTTP-01 challenge;
//! - `acme:tls-alpn-01` (hash): name → the key authorization's SHA-256 digest (base64) of every
//!   pending TLS-ALPN-01 challenge. Both hashes expire on their own after an order's longest
//!   time when nobody cleans them up.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use log::warn;
use serde::{Deserialize, Serialize};

use super::order::alpn_certificate;
use crate::config::acme::{update_live, AcmeChallenge};
use crate::state::store::Store;
use crate::state::StateError;

/// One certificate as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CertRecord {
    /// The names it was ordered for.
    pub(crate) names: Vec<String>,
    /// The PEM chain, leaf first.
    pub(crate) chain: String,
    /// The PEM private key.
    pub(crate) key: String,
    /// Expiry, seconds since the Unix epoch.
    pub(crate) not_after: i64,
    pub(crate) serial: String,
    /// When it was issued (seconds since the Unix epoch): no node orders the same names again
    /// within `gateway.acme.retry` of it.
    pub(crate) issued_at: i64,
}

/// What every node follows: the certificates (in the order asked) and the pending challenges.
#[derive(Debug, Default)]
pub(crate) struct AcmeShared {
    pub(crate) certificates: Vec<Option<CertRecord>>,
    pub(crate) tokens: HashMap<String, String>,
    pub(crate) alpn: HashMap<String, String>,
}

/// The id of a certificate in keys: its names, sorted (nodes whose files list them in
/// another order still share one lease and one certificate), joined by `,`.
pub(crate) fn certificate_id(names: &[String]) -> String {
    let mut sorted = names.to_vec();
    sorted.sort();
    sorted.join(",")
}

/// The lease key's name (under the prefix) of the certificate for `names`.
pub(crate) fn lease_name(names: &[String]) -> String {
    format!("acme:lease:{}", certificate_id(names))
}

fn cert_name(names: &[String]) -> String {
    format!("acme:cert:{}", certificate_id(names))
}

fn challenge_name(kind: AcmeChallenge) -> String {
    format!("acme:{}", kind.as_str())
}

/// A record that does not parse counts as absent (and is logged by the caller's next order).
fn parse_record(text: Option<String>) -> Option<CertRecord> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl Store {
    fn lock_acme_connection(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<redis::aio::MultiplexedConnection>> {
        self.acme_connection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The kept connection for the every-second read (one new connection a second per node
    /// would churn Redis's connections), made when there is none.
    async fn acme_connection(&self) -> Result<redis::aio::MultiplexedConnection, StateError> {
        if let Some(conn) = self.lock_acme_connection().clone() {
            return Ok(conn);
        }
        let conn = self.connection().await?;
        *self.lock_acme_connection() = Some(conn.clone());
        Ok(conn)
    }

    /// The certificates for each of `sets` and the pending challenges, in one round trip.
    pub(crate) async fn acme_shared(&self, sets: &[Vec<String>]) -> Result<AcmeShared, StateError> {
        let mut conn = self.acme_connection().await?;
        let mut pipe = redis::pipe();
        for names in sets {
            pipe.cmd("GET").arg(self.key(&cert_name(names)));
        }
        pipe.cmd("HGETALL")
            .arg(self.key(&challenge_name(AcmeChallenge::Http01)));
        pipe.cmd("HGETALL")
            .arg(self.key(&challenge_name(AcmeChallenge::TlsAlpn01)));
        let read = self.timed("ACME state", pipe.query_async(&mut conn)).await;
        if read.is_err() {
            // Made again at the next read: the connection may be the one that failed.
            *self.lock_acme_connection() = None;
        }
        let mut values: Vec<redis::Value> = read?;
        let alpn = values.pop().unwrap_or(redis::Value::Nil);
        let tokens = values.pop().unwrap_or(redis::Value::Nil);
        let map = |v: redis::Value| -> Result<HashMap<String, String>, StateError> {
            redis::from_redis_value(v).map_err(|e| StateError::internal(e.to_string()))
        };
        let certificates = values
            .into_iter()
            .map(|v| {
                redis::from_redis_value::<Option<String>>(v)
                    .map(parse_record)
                    .map_err(|e| StateError::internal(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AcmeShared {
            certificates,
            tokens: map(tokens)?,
            alpn: map(alpn)?,
        })
    }

    /// The certificate Redis holds for `names`.
    pub(crate) async fn acme_certificate(
        &self,
        names: &[String],
    ) -> Result<Option<CertRecord>, StateError> {
        let mut conn = self.connection().await?;
        let text: Option<String> = self
            .timed(
                "ACME certificate",
                redis::cmd("GET")
                    .arg(self.key(&cert_name(names)))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(parse_record(text))
    }

    /// Stores a certificate (replacing the one before it).
    pub(crate) async fn put_acme_certificate(&self, record: &CertRecord) -> Result<(), StateError> {
        self.set_acme_certificate(record, false).await.map(|_| ())
    }

    /// Stores a certificate when Redis holds none for its names; `true` when written.
    pub(crate) async fn offer_acme_certificate(
        &self,
        record: &CertRecord,
    ) -> Result<bool, StateError> {
        self.set_acme_certificate(record, true).await
    }

    async fn set_acme_certificate(
        &self,
        record: &CertRecord,
        only_if_absent: bool,
    ) -> Result<bool, StateError> {
        let text =
            serde_json::to_string(record).map_err(|e| StateError::internal(e.to_string()))?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&cert_name(&record.names))).arg(text);
        if only_if_absent {
            cmd.arg("NX");
        }
        let mut conn = self.connection().await?;
        let written: Option<String> = self
            .timed("ACME certificate", cmd.query_async(&mut conn))
            .await?;
        Ok(written.is_some())
    }

    /// The stored account (JSON), if any.
    pub(crate) async fn acme_account(&self) -> Result<Option<String>, StateError> {
        let mut conn = self.connection().await?;
        self.timed(
            "ACME account",
            redis::cmd("GET")
                .arg(self.key("acme:account"))
                .query_async(&mut conn),
        )
        .await
    }

    /// Stores the account: `replace` overwrites (an account of another directory), else it is
    /// written only when none is stored. `true` when written.
    pub(crate) async fn put_acme_account(
        &self,
        text: &str,
        replace: bool,
    ) -> Result<bool, StateError> {
        let mut conn = self.connection().await?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("acme:account")).arg(text);
        if !replace {
            cmd.arg("NX");
        }
        let written: Option<String> = self
            .timed("ACME account", cmd.query_async(&mut conn))
            .await?;
        Ok(written.is_some())
    }

    /// Publishes a pending challenge's answer for every node: `field` is the HTTP-01 token or
    /// the TLS-ALPN-01 name. The hash expires after `ttl` unless another answer is added.
    pub(crate) async fn publish_challenge(
        &self,
        kind: AcmeChallenge,
        field: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let key = self.key(&challenge_name(kind));
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("HSET").arg(&key).arg(field).arg(value).ignore();
        pipe.cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl.as_millis() as u64)
            .ignore();
        let mut conn = self.connection().await?;
        self.timed("ACME challenge", pipe.query_async::<()>(&mut conn))
            .await
    }

    /// Withdraws challenges whose order is over.
    pub(crate) async fn withdraw_challenges(
        &self,
        kind: AcmeChallenge,
        fields: &[String],
    ) -> Result<(), StateError> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection().await?;
        self.timed(
            "ACME challenge",
            redis::cmd("HDEL")
                .arg(self.key(&challenge_name(kind)))
                .arg(fields)
                .query_async::<i64>(&mut conn),
        )
        .await
        .map(|_| ())
    }
}

/// Answers the challenges published in the store (`next_*`) and stops answering those
/// withdrawn since the last look (`seen_*`, which become the new ones). This node's own
/// challenges are answered by its order whether or not the store has them.
pub(super) fn follow_challenges(
    seen_tokens: &mut HashMap<String, String>,
    next_tokens: HashMap<String, String>,
    seen_alpn: &mut HashMap<String, String>,
    next_alpn: HashMap<String, String>,
) {
    if *seen_tokens == next_tokens && *seen_alpn == next_alpn {
        return;
    }
    let mut certified = Vec::new();
    for (name, digest) in &next_alpn {
        if seen_alpn.get(name) == Some(digest) {
            continue;
        }
        let made = base64::engine::general_purpose::STANDARD
            .decode(digest)
            .map_err(|e| e.to_string())
            .and_then(|digest| alpn_certificate(name, &digest));
        match made {
            Ok(cert) => certified.push((name.clone(), cert)),
            Err(e) => warn!("ACME: the published tls-alpn-01 challenge for {name}: {e}"),
        }
    }
    update_live(|live| {
        for token in seen_tokens.keys() {
            if !next_tokens.contains_key(token) {
                live.tokens.remove(token);
            }
        }
        for (token, answer) in &next_tokens {
            live.tokens.insert(token.clone(), answer.clone());
        }
        for name in seen_alpn.keys() {
            if !next_alpn.contains_key(name) {
                live.alpn.remove(name);
            }
        }
        for (name, cert) in &certified {
            live.alpn.insert(name.clone(), cert.clone());
        }
    });
    *seen_tokens = next_tokens;
    *seen_alpn = next_alpn;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys name the certificate by all its names, so two name sets sharing a first name
    /// never share a certificate or a lease.
    #[test]
    fn keys_name_the_whole_set() {
        let names = vec!["example.com".to_string(), "www.example.com".to_string()];
        assert_eq!(lease_name(&names), "acme:lease:example.com,www.example.com");
        assert_eq!(cert_name(&names), "acme:cert:example.com,www.example.com");
        assert_ne!(lease_name(&names[..1]), lease_name(&names));
        let reversed: Vec<String> = names.iter().rev().cloned().collect();
        assert_eq!(
            cert_name(&reversed),
            cert_name(&names),
            "order does not matter"
        );
        assert_eq!(challenge_name(AcmeChallenge::TlsAlpn01), "acme:tls-alpn-01");
    }

    /// A record round-trips through its JSON; one that does not parse counts as absent.
    #[test]
    fn records_round_trip() {
        let record = CertRecord {
            names: vec!["a.test".into()],
            chain: "CHAIN".into(),
            key: "KEY".into(),
            not_after: 2_000_000_000,
            serial: "1F".into(),
            issued_at: 1_700_000_000,
        };
        let text = serde_json::to_string(&record).expect("json");
        assert_eq!(parse_record(Some(text)), Some(record));
        assert_eq!(parse_record(Some("{".into())), None);
        assert_eq!(parse_record(None), None);
    }

    /// Published challenges are answered; withdrawn ones stop being answered, and a token this
    /// node's own order added (never seen in the store) is left alone.
    #[test]
    fn challenges_follow_the_store() {
        update_live(|live| {
            live.tokens.insert("own-token".into(), "own".into());
        });
        let (mut tokens, mut alpn) = (HashMap::new(), HashMap::new());
        let digest = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        follow_challenges(
            &mut tokens,
            HashMap::from([("t1".to_string(), "answer1".to_string())]),
            &mut alpn,
            HashMap::from([("follow.test".to_string(), digest)]),
        );
        let live = crate::config::acme::live().load();
        assert_eq!(live.tokens.get("t1").map(String::as_str), Some("answer1"));
        assert!(live.alpn.contains_key("follow.test"));
        follow_challenges(&mut tokens, HashMap::new(), &mut alpn, HashMap::new());
        let live = crate::config::acme::live().load();
        assert!(!live.tokens.contains_key("t1"));
        assert!(!live.alpn.contains_key("follow.test"));
        assert_eq!(
            live.tokens.get("own-token").map(String::as_str),
            Some("own")
        );
        update_live(|live| {
            live.tokens.remove("own-token");
        });
    }
}
