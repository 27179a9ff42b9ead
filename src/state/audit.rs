//! The audit trail: every change to the control state — by an operator through the admin API
//! or by a rollout plan — with when, who, what and the figures a plan acted on. Bounded to the
//! last [`AUDIT_LIMIT`] entries; kept in the state file, and with a store in Redis for every
//! node.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::figures::StepFigures;

/// Entries kept, newest first, in the state file and in Redis.
pub(crate) const AUDIT_LIMIT: usize = 1000;

/// The actor of a plan's own moves (an admin change's actor is its token's name).
pub(crate) const ACTOR_PLAN: &str = "plan";

/// One change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditEntry {
    /// Unix milliseconds.
    pub(crate) at_ms: u64,
    /// The control-state version the change produced (list changes in the store keep it).
    pub(crate) version: u64,
    /// The admin token's name (`admin` for `gateway.admin.token`), or `plan`.
    pub(crate) actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rule: Option<String>,
    /// `percent`, `users`, `rollback`, `promote`, `resume`, `plan_start`, `plan_advance`, ...
    pub(crate) action: String,
    /// What changed, in words (with the old and new values, e.g. `percent 10 → 25`).
    pub(crate) detail: String,
    /// The value before the change, in words (`10%`, `rules`, `step 1 of 3 (10%)`, `3 users`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) before: Option<String>,
    /// The value after the change, in the same words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) figures: Option<StepFigures>,
}

impl AuditEntry {
    /// An entry made now (the version is filled in when the change is applied).
    pub(crate) fn now(
        actor: &str,
        route: Option<&str>,
        rule: Option<&str>,
        action: &str,
        detail: String,
    ) -> Self {
        AuditEntry {
            at_ms: unix_ms(),
            version: 0,
            actor: actor.to_string(),
            route: route.map(str::to_string),
            rule: rule.map(str::to_string),
            action: action.to_string(),
            detail,
            before: None,
            after: None,
            figures: None,
        }
    }

    /// Sets what the change moved from and to; the detail says it too (`what before → after`).
    pub(crate) fn moved(&mut self, what: &str, before: String, after: String) {
        self.detail = format!("{what} {before} → {after}");
        self.before = Some(before);
        self.after = Some(after);
    }
}

/// Which entries `GET /audit` answers: each given field must match exactly (`before`: entries
/// made before that Unix millisecond, for paging back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AuditFilter {
    pub(crate) route: Option<String>,
    pub(crate) rule: Option<String>,
    pub(crate) actor: Option<String>,
    pub(crate) before_ms: Option<u64>,
}

impl AuditFilter {
    /// Whether `entry` is one the filter keeps.
    pub(crate) fn keeps(&self, entry: &AuditEntry) -> bool {
        let same = |want: &Option<String>, got: &Option<String>| {
            want.as_ref().is_none_or(|w| got.as_ref() == Some(w))
        };
        same(&self.route, &entry.route)
            && same(&self.rule, &entry.rule)
            && self.actor.as_ref().is_none_or(|a| *a == entry.actor)
            && self.before_ms.is_none_or(|b| entry.at_ms < b)
    }
}

/// Adds entries (oldest first) to a trail kept newest first, dropping the oldest past the limit.
pub(crate) fn append(trail: &mut VecDeque<AuditEntry>, entries: &[AuditEntry]) {
    for entry in entries {
        trail.push_front(entry.clone());
    }
    trail.truncate(AUDIT_LIMIT);
}

/// The time now in Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each field of the filter must match; `before` pages back by time.
    #[test]
    fn the_filter_keeps_what_matches_every_field() {
        let entry = |actor: &str, route: Option<&str>, rule: Option<&str>, at_ms| AuditEntry {
            at_ms,
            ..AuditEntry::now(actor, route, rule, "percent", String::new())
        };
        let a = entry("alice", Some("web"), Some("rollout"), 100);
        let global = entry("bob", None, None, 200);
        let all = AuditFilter::default();
        assert!(all.keeps(&a) && all.keeps(&global));
        let web = AuditFilter {
            route: Some("web".into()),
            ..Default::default()
        };
        assert!(web.keeps(&a) && !web.keeps(&global));
        let bob = AuditFilter {
            actor: Some("bob".into()),
            ..Default::default()
        };
        assert!(!bob.keeps(&a) && bob.keeps(&global));
        let rule = AuditFilter {
            rule: Some("rollout".into()),
            route: Some("web".into()),
            ..Default::default()
        };
        assert!(rule.keeps(&a) && !rule.keeps(&global));
        let older = AuditFilter {
            before_ms: Some(200),
            ..Default::default()
        };
        assert!(older.keeps(&a) && !older.keeps(&global), "strictly before");
    }

    #[test]
    fn the_trail_is_bounded_and_newest_first() {
        let mut trail = VecDeque::new();
        let entries: Vec<AuditEntry> = (0..AUDIT_LIMIT + 5)
            .map(|i| {
                let mut e = AuditEntry::now("admin", None, None, "percent", format!("{i}"));
                e.version = i as u64;
                e
            })
            .collect();
        append(&mut trail, &entries[..3]);
        assert_eq!(trail[0].version, 2, "newest first");
        append(&mut trail, &entries[3..]);
        assert_eq!(trail.len(), AUDIT_LIMIT);
        assert_eq!(trail[0].version, (AUDIT_LIMIT + 4) as u64);
        assert_eq!(trail[AUDIT_LIMIT - 1].version, 5, "the oldest dropped");
    }
}
