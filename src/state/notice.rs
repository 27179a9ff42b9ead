//! Notices: what the controller tells the world after a change it made to the control state
//! (an operator's through the admin API, or a plan's own move), for the webhooks of
//! `gateway.notify`. The controller hands each one to a sink that `ops` installs; the sink
//! only queues it, so a slow or dead webhook never holds a change back.
//!
//! A notice is sent by the node that made the change: the other nodes apply it from the store
//! without a notice, so a change is announced once however many nodes there are.

use std::sync::Arc;

use serde::Serialize;

use super::audit::{AuditEntry, ACTOR_PLAN};
use super::figures::StepFigures;
use crate::config::NotifyEvent;

/// One change, as announced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Notice {
    /// The event a webhook's `events` is matched against first (see [`events_of`]).
    pub(crate) event: &'static str,
    /// The audit trail's action: `plan_advance`, `rollback`, `percent`, ...
    pub(crate) action: String,
    /// `None` for a change of every route (a global rollback).
    pub(crate) route: Option<String>,
    pub(crate) rule: Option<String>,
    /// The admin token's name, or `plan` for a plan's own move.
    pub(crate) actor: String,
    /// What changed, in words (as in the audit trail).
    pub(crate) detail: String,
    /// The step's figures and tests a plan acted on.
    pub(crate) figures: Option<StepFigures>,
    /// The control-state version the change produced.
    pub(crate) version: u64,
    /// This node's configuration generation after the change.
    pub(crate) generation: u64,
    /// When the change was made, in Unix milliseconds.
    pub(crate) at_ms: u64,
    /// The node that made it.
    pub(crate) node: String,
    #[serde(skip)]
    pub(crate) events: Vec<NotifyEvent>,
}

/// Where the controller hands its notices: it must return at once (queue, never send).
pub(crate) type NoticeSink = Arc<dyn Fn(Notice) + Send + Sync>;

impl Notice {
    /// The notice of an applied audit entry.
    pub(crate) fn of(entry: &AuditEntry, generation: u64, node: &str) -> Notice {
        let events = events_of(&entry.actor, &entry.action);
        Notice {
            event: events.first().map_or("manual", |e| e.as_str()),
            action: entry.action.clone(),
            route: entry.route.clone(),
            rule: entry.rule.clone(),
            actor: entry.actor.clone(),
            detail: entry.detail.clone(),
            figures: entry.figures.clone(),
            version: entry.version,
            generation,
            at_ms: entry.at_ms,
            node: node.to_string(),
            events,
        }
    }

    /// Whether a webhook asking for `wanted` is told about this notice.
    pub(crate) fn matches(&self, wanted: &[NotifyEvent]) -> bool {
        self.events.iter().any(|e| wanted.contains(e))
    }
}

/// The events a change counts as, the most specific first: a plan's moves are `advance`,
/// `pause`, `rollback` or `complete`; every operator change is `manual`, and an operator's
/// rollback (of a route, of every route, or a plan's abort) is `rollback` too, as is a plan's
/// pause by an operator `pause`.
pub(crate) fn events_of(actor: &str, action: &str) -> Vec<NotifyEvent> {
    let own = match action {
        "plan_advance" => Some(NotifyEvent::Advance),
        "plan_complete" => Some(NotifyEvent::Complete),
        "plan_pause" => Some(NotifyEvent::Pause),
        "plan_rollback" | "plan_abort" | "rollback" => Some(NotifyEvent::Rollback),
        _ => None,
    };
    let mut events: Vec<NotifyEvent> = own.into_iter().collect();
    if actor != ACTOR_PLAN {
        events.push(NotifyEvent::Manual);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use NotifyEvent::*;

    /// Who made which change → the events it counts as.
    #[test]
    fn every_change_counts_as_its_events() {
        let table: [(&str, &str, &[NotifyEvent]); 10] = [
            ("plan", "plan_advance", &[Advance]),
            ("plan", "plan_complete", &[Complete]),
            ("plan", "plan_pause", &[Pause]),
            ("plan", "plan_rollback", &[Rollback]),
            ("alice", "plan_pause", &[Pause, Manual]),
            ("alice", "plan_abort", &[Rollback, Manual]),
            ("alice", "rollback", &[Rollback, Manual]),
            ("alice", "promote", &[Manual]),
            ("alice", "percent", &[Manual]),
            ("alice", "plan_start", &[Manual]),
        ];
        for (actor, action, events) in table {
            assert_eq!(events_of(actor, action), events, "{actor} {action}");
        }
    }

    #[test]
    fn a_notice_names_its_first_event_and_matches_any() {
        let mut entry = AuditEntry::now("alice", None, None, "rollback", "every user".into());
        entry.version = 7;
        let notice = Notice::of(&entry, 9, "node-1");
        assert_eq!(notice.event, "rollback");
        assert_eq!((notice.version, notice.generation), (7, 9));
        assert!(notice.matches(&[Manual]));
        assert!(notice.matches(&[Rollback, Advance]));
        assert!(!notice.matches(&[Advance, Complete, Pause]));
    }
}
