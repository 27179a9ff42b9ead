//! What the nodes share through Redis besides user sets: the control state (one versioned
//! document, written by compare-and-set and announced on the events channel), the audit trail,
//! the lease that lets one node at a time act on rollout plans, and the step figures every
//! node adds to.
//!
//! Keys, under the store's `prefix`:
//! - `control` (hash): `version` and `doc`, the control state as JSON;
//! - `audit` (list): audit entries as JSON, newest first, at most `AUDIT_LIMIT`;
//! - `plan-lease` (string): the id of the node that judges plans, with an expiry;
//! - `acme:*`: ACME's account, certificates, order leases and challenges (see state/acme/shared.rs);
//! - `figures:{route}:{rule}:{step start}` (hash): the step's counts summed over nodes, kept a day.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::audit::{AuditEntry, AUDIT_LIMIT};
use super::figures::{Figures, BUCKETS};
use super::overlay::{ControlMessage, Overlay};
use crate::state::store::Store;
use crate::state::StateError;

/// Writes the control state if Redis holds an older version: the state, the audit entries and
/// the announcement go in one step. Returns the newer state Redis holds instead, if any.
const WRITE_CONTROL: &str = r"
local stored = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if stored >= tonumber(ARGV[1]) then
  return redis.call('HGET', KEYS[1], 'doc') or ''
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'doc', ARGV[2])
for i = 6, #ARGV do redis.call('LPUSH', KEYS[2], ARGV[i]) end
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[5]) - 1)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return false
";

/// Takes the lease when it is free or already ours, for ARGV[2] milliseconds.
const TAKE_LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// Gives a lease up when it is still ours (a lease that expired and was taken by another
/// node is left alone).
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How long the step figures stay in Redis after their last update.
const FIGURES_TTL_MS: u64 = 24 * 3600 * 1000;

fn json<T: Serialize>(value: &T) -> Result<String, StateError> {
    serde_json::to_string(value).map_err(|e| StateError::internal(e.to_string()))
}

impl Store {
    pub(super) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.config.prefix)
    }

    /// Writes `control` (with the entries of the change that made it) when Redis holds an
    /// older version. `Ok(None)`: written and announced; `Ok(Some(newer))`: another node wrote
    /// this version or a later one first, and nothing was written.
    pub(crate) async fn write_control(
        &self,
        control: &Overlay,
        changes: &[AuditEntry],
    ) -> Result<Option<Overlay>, StateError> {
        let shared = control.shared();
        let doc = json(&shared)?;
        let message = json(&ControlMessage {
            control: shared,
            changes: changes.to_vec(),
        })?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(WRITE_CONTROL)
            .arg(2)
            .arg(self.key("control"))
            .arg(self.key("audit"))
            .arg(control.version)
            .arg(doc)
            .arg(self.config.channel())
            .arg(message)
            .arg(AUDIT_LIMIT);
        for entry in changes {
            cmd.arg(json(entry)?);
        }
        let mut conn = self.connection().await?;
        let newer: Option<String> = self
            .timed("write control", cmd.query_async(&mut conn))
            .await?;
        newer.as_deref().map(parse_control).transpose()
    }

    /// The control state Redis holds (`None`: no change was ever written).
    pub(crate) async fn read_control(&self) -> Result<Option<Overlay>, StateError> {
        let mut conn = self.connection().await?;
        let doc: Option<String> = self
            .timed(
                "read control",
                redis::cmd("HGET")
                    .arg(self.key("control"))
                    .arg("doc")
                    .query_async(&mut conn),
            )
            .await?;
        doc.as_deref().map(parse_control).transpose()
    }

    /// The audit trail, newest first, at most `limit` entries (entries that do not parse are
    /// left out).
    pub(crate) async fn read_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StateError> {
        let mut conn = self.connection().await?;
        let entries: Vec<String> = self
            .timed(
                "read audit",
                redis::cmd("LRANGE")
                    .arg(self.key("audit"))
                    .arg(0)
                    .arg(limit.saturating_sub(1))
                    .query_async(&mut conn),
            )
            .await?;
        Ok(entries
            .iter()
            .filter_map(|e| serde_json::from_str(e).ok())
            .collect())
    }

    /// Adds an audit entry to the shared trail within a pipeline (list changes).
    pub(super) fn push_audit(
        &self,
        pipe: &mut redis::Pipeline,
        entry: &AuditEntry,
    ) -> Result<(), StateError> {
        let key = self.key("audit");
        pipe.cmd("LPUSH").arg(&key).arg(json(entry)?).ignore();
        pipe.cmd("LTRIM")
            .arg(&key)
            .arg(0)
            .arg(AUDIT_LIMIT - 1)
            .ignore();
        Ok(())
    }

    /// Takes or renews the plan lease for `node`; `true` while this node holds it.
    pub(crate) async fn take_lease(&self, node: &str, ttl: Duration) -> Result<bool, StateError> {
        self.take_named_lease("plan-lease", node, ttl).await
    }

    /// Takes or renews the lease stored at `name` (under the prefix) for `node`, expiring
    /// after `ttl` unless renewed; `true` while this node holds it.
    pub(crate) async fn take_named_lease(
        &self,
        name: &str,
        node: &str,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let mut conn = self.connection().await?;
        let held: i64 = self
            .timed(
                name,
                redis::cmd("EVAL")
                    .arg(TAKE_LEASE)
                    .arg(1)
                    .arg(self.key(name))
                    .arg(node)
                    .arg(ttl.as_millis() as u64)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(held == 1)
    }

    /// Gives up the lease at `name` if `node` holds it.
    pub(crate) async fn release_named_lease(
        &self,
        name: &str,
        node: &str,
    ) -> Result<(), StateError> {
        let mut conn = self.connection().await?;
        self.timed(
            name,
            redis::cmd("EVAL")
                .arg(RELEASE_LEASE)
                .arg(1)
                .arg(self.key(name))
                .arg(node)
                .query_async::<i64>(&mut conn),
        )
        .await
        .map(|_| ())
    }

    /// The node holding the lease at `name`, if any.
    pub(crate) async fn lease_holder(&self, name: &str) -> Result<Option<String>, StateError> {
        let mut conn = self.connection().await?;
        self.timed(
            name,
            redis::cmd("GET").arg(self.key(name)).query_async(&mut conn),
        )
        .await
    }

    /// The Redis key of one step's figures.
    pub(crate) fn figures_key(&self, route: &str, rule: &str, step_started_ms: u64) -> String {
        self.key(&format!("figures:{route}:{rule}:{step_started_ms}"))
    }

    /// Adds this node's new counts of a step (canary `c.`, baseline `b.`) to the sums.
    pub(crate) async fn add_figures(
        &self,
        key: &str,
        canary: &Figures,
        baseline: &Figures,
    ) -> Result<(), StateError> {
        let mut pipe = redis::pipe();
        for (side, f) in [("c", canary), ("b", baseline)] {
            let fields = [("req", f.requests), ("err", f.errors)]
                .into_iter()
                .map(|(name, n)| (format!("{side}.{name}"), n))
                .chain(
                    f.buckets
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (format!("{side}.{i}"), *n)),
                );
            for (field, n) in fields.filter(|(_, n)| *n > 0) {
                pipe.cmd("HINCRBY").arg(key).arg(field).arg(n).ignore();
            }
        }
        pipe.cmd("PEXPIRE").arg(key).arg(FIGURES_TTL_MS).ignore();
        let mut conn = self.connection().await?;
        self.timed("add figures", pipe.query_async::<()>(&mut conn))
            .await
    }

    /// A step's counts summed over every node: (canary, baseline).
    pub(crate) async fn read_figures(&self, key: &str) -> Result<(Figures, Figures), StateError> {
        let mut conn = self.connection().await?;
        let fields: HashMap<String, u64> = self
            .timed(
                "read figures",
                redis::cmd("HGETALL").arg(key).query_async(&mut conn),
            )
            .await?;
        Ok((figures_from(&fields, "c"), figures_from(&fields, "b")))
    }
}

/// The control state as Redis stores it.
fn parse_control(doc: &str) -> Result<Overlay, StateError> {
    serde_json::from_str(doc).map_err(|e| {
        StateError::internal(format!("the control state in Redis does not parse: {e}"))
    })
}

/// One side's figures from a figures hash.
fn figures_from(fields: &HashMap<String, u64>, side: &str) -> Figures {
    let get = |name: &str| fields.get(&format!("{side}.{name}")).copied().unwrap_or(0);
    Figures {
        requests: get("req"),
        errors: get("err"),
        buckets: (0..BUCKETS).map(|i| get(&i.to_string())).collect(),
    }
}
