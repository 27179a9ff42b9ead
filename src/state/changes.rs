//! Changes to the control state: percentages, overrides and rollout plans (user lists are in
//! `lists`), made through the admin API or by a plan. Each is one versioned change (see
//! [`Controller::change`]): with a store, Redis accepts it before any node applies it, so every
//! node moves together; while Redis is unreachable a change is refused as `Unavailable` and
//! changes nothing.

use log::info;

use super::audit::{AuditEntry, ACTOR_PLAN};
use super::controller::{find_rule_of_kind, Controller, Inner};
use super::figures::StepFigures;
use super::metrics::METRICS;
use super::overlay::{Maintenance, Overlay, OverlayMode, RouteOverlay};
use super::plan::{transition, PlanAction, PlanCommand, PlanEvent, PlanState, PlanStatus, Verdict};
use super::StateError;
use crate::config::PlanConfig;
use crate::routing::{Kind, Percent};

/// Tries at a change when other nodes keep writing first.
const CHANGE_TRIES: usize = 5;

/// What an applied change answers: the configuration generation and the control version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Changed {
    pub(crate) generation: u64,
    pub(crate) version: u64,
}

impl Controller {
    /// Applies one change to the control state: `edit` checks it against the file's
    /// configuration and makes it on a copy; the copy, one version up, is written to Redis
    /// when there is a store (if another node wrote first, its state is applied here and the
    /// edit made again on it), then applied here and written to the state file. `entry` says
    /// what changed, for the audit trail; `edit` may fill in what it moved from and to.
    pub(super) async fn change(
        &self,
        entry: AuditEntry,
        mut edit: impl FnMut(&Inner, &mut Overlay, &mut AuditEntry) -> Result<(), StateError>,
    ) -> Result<Changed, StateError> {
        let _one_at_a_time = self.change_lock.lock().await;
        for _ in 0..CHANGE_TRIES {
            let (next, entry) = {
                let inner = self.lock();
                let mut next = inner.overlay.shared();
                let mut entry = entry.clone();
                edit(&inner, &mut next, &mut entry)?;
                next.version = inner.overlay.version + 1;
                entry.version = next.version;
                (next, entry)
            };
            let version = next.version;
            if let Some(store) = &self.store {
                let newer = store
                    .write_control(&next, std::slice::from_ref(&entry))
                    .await;
                match newer {
                    Ok(None) => {}
                    Ok(Some(newer)) => {
                        self.apply_control(newer, &[], false)?;
                        continue;
                    }
                    Err(e) => {
                        return Err(StateError::unavailable(format!(
                            "the store is unavailable, nothing changed: {e}"
                        )))
                    }
                }
            }
            let generation =
                self.apply_control(next, std::slice::from_ref(&entry), self.store.is_none())?;
            info!(
                "{} change applied, version {version}: {}",
                entry.actor, entry.detail
            );
            self.announce(&entry, generation);
            return Ok(Changed {
                generation,
                version,
            });
        }
        Err(StateError::conflict(
            "other nodes kept changing the control state; try again",
        ))
    }

    /// `PUT /routes/{route}/rules/{rule}/percent`. Refused (`Conflict`) while a plan owns the rule.
    pub(crate) async fn set_percent(
        &self,
        actor: &str,
        route: &str,
        rule: &str,
        percent: Percent,
    ) -> Result<Changed, StateError> {
        let entry = AuditEntry::now(
            actor,
            Some(route),
            Some(rule),
            "percent",
            format!("percent set to {}", percent.as_f64()),
        );
        self.change(entry, |inner, overlay, entry| {
            find_rule_of_kind(&inner.base, route, rule, Kind::Percent)?;
            let before = live_percent(inner, overlay, route, rule);
            entry.moved("percent", format!("{before}%"), format!("{}%", percent.as_f64()));
            if let Some(plan) = overlay.plan(route, rule).filter(|p| p.status.is_active()) {
                return Err(StateError::conflict(format!(
                        "rule {rule:?} is driven by its rollout plan ({}); pause is not enough: abort the plan first",
                        plan.status.as_str()
                    ),
                ));
            }
            set_rule_percent(route_of(overlay, route), rule, percent, actor);
            Ok(())
        })
        .await
    }

    /// `POST /rollback|promote|resume` (`route: None`: every route; resuming clears every
    /// route's own override too) and `POST /routes/{route}/rollback|promote|resume`.
    pub(crate) async fn set_mode(
        &self,
        actor: &str,
        route: Option<&str>,
        mode: OverlayMode,
    ) -> Result<Changed, StateError> {
        let (action, detail) = match &mode {
            OverlayMode::Rules => ("resume", "rules run again".to_string()),
            OverlayMode::Rollback => ("rollback", "every user to the default group".to_string()),
            OverlayMode::Promote(group) => ("promote", format!("every user to group {group}")),
        };
        let entry = AuditEntry::now(actor, route, None, action, detail);
        self.change(entry, |inner, overlay, entry| {
            if let OverlayMode::Promote(group) = &mode {
                if !inner.base.groups.iter().any(|g| &g.name == group) {
                    let names: Vec<&str> =
                        inner.base.groups.iter().map(|g| g.name.as_str()).collect();
                    return Err(StateError::invalid_field(
                        "group",
                        format!("{group:?} is not a group (groups: {})", names.join(", ")),
                    ));
                }
            }
            let before = match route {
                Some(route) => overlay
                    .route(route)
                    .map_or(OverlayMode::Rules, |r| r.mode.clone()),
                None => overlay.mode.clone(),
            };
            entry.before = Some(mode_words(&before));
            entry.after = Some(mode_words(&mode));
            match route {
                Some(route) => route_of(overlay, route).mode = mode.clone(),
                None => {
                    if mode == OverlayMode::Rules {
                        overlay
                            .routes
                            .values_mut()
                            .for_each(|r| r.mode = OverlayMode::Rules);
                    }
                    overlay.mode = mode.clone();
                }
            }
            let moved = hold_or_release(overlay, actor, action);
            entry.detail = format!(
                "{}: {} → {}{}",
                entry.detail,
                mode_words(&before),
                mode_words(&mode),
                match moved {
                    (0, 0) => String::new(),
                    (held, 0) => format!("; {held} plan(s) held"),
                    (0, released) => format!("; {released} plan(s) released"),
                    (held, released) => format!("; {held} plan(s) held, {released} released"),
                }
            );
            Ok(())
        })
        .await
    }

    /// `POST /routes/{route}/maintenance`: `Some(seconds)` answers every request of the route
    /// (but the QA override's) 503 with that `Retry-After`; `None` serves it again.
    pub(crate) async fn set_maintenance(
        &self,
        actor: &str,
        route: &str,
        retry_after_secs: Option<u64>,
    ) -> Result<Changed, StateError> {
        let words = |m: Option<u64>| match m {
            Some(s) => format!("on (Retry-After {s}s)"),
            None => "off".to_string(),
        };
        let entry = AuditEntry::now(
            actor,
            Some(route),
            None,
            "maintenance",
            format!("maintenance {}", words(retry_after_secs)),
        );
        self.change(entry, |inner, overlay, entry| {
            if !inner.base.routes.iter().any(|r| r.name == route) {
                return Err(StateError::not_found(format!("no route named {route:?}")));
            }
            let before = overlay
                .route(route)
                .and_then(|r| r.maintenance)
                .map(|m| m.retry_after_secs);
            entry.moved("maintenance", words(before), words(retry_after_secs));
            route_of(overlay, route).maintenance =
                retry_after_secs.map(|retry_after_secs| Maintenance { retry_after_secs });
            Ok(())
        })
        .await
    }

    /// `POST /routes/{route}/rules/{rule}/plan/{start|pause|resume|abort}`: `NotFound` when the
    /// rule has no plan, `Conflict` when the command does not apply to the plan's state (see
    /// [`transition`]: nothing starts or resumes while a rollback or promote covers the route),
    /// and `Conflict` naming both percentages when starting would lower the rule's percentage
    /// and `allow_decrease` is not set.
    pub(crate) async fn plan_command(
        &self,
        actor: &str,
        route: &str,
        rule: &str,
        command: PlanCommand,
        allow_decrease: bool,
    ) -> Result<Changed, StateError> {
        let action = format!("plan_{}", command.as_str());
        let why = format!("{} by {actor} through the admin API", command.as_str());
        let entry = AuditEntry::now(actor, Some(route), Some(rule), &action, why.clone());
        self.change(entry, |inner, overlay, entry| {
            let plan = plan_config(inner, route, rule)?;
            let overridden = is_overridden(overlay, route);
            let current = overlay.plan(route, rule);
            let before = plan_words(plan, current);
            let status = current.map(|p| p.status);
            let next = transition(status, PlanEvent::Command(command), overridden).map_err(|e| {
                StateError::conflict(format!("the plan of rule {rule:?} cannot {}: {e}", command.as_str()))
            })?;
            let next = next.unwrap_or(PlanStatus::RolledBack);
            let now = super::audit::unix_ms();
            let step = match command {
                PlanCommand::Start => 0,
                _ => current.map_or(0, |p| p.step),
            };
            let percent = match command {
                PlanCommand::Start => {
                    let first = plan.steps[0];
                    let live = live_percent(inner, overlay, route, rule);
                    if live > first.as_f64() && !allow_decrease {
                        return Err(StateError::conflict(format!(
                            "the plan of rule {rule:?} starts at {}% but the rule is at {live}% now: starting would move users back from the canary; send {{\"allow_decrease\": true}} to start anyway",
                            first.as_f64()
                        )));
                    }
                    Some(first)
                }
                PlanCommand::Pause => None,
                PlanCommand::Resume => plan.steps.get(step).copied(),
                PlanCommand::Abort => Some(zero()),
            };
            // A pause keeps the step's window; everything else opens a new one.
            let started = match current {
                Some(p) if command == PlanCommand::Pause => p.step_started_ms,
                _ => now,
            };
            let live = live_percent(inner, overlay, route, rule);
            entry.before = Some(before.clone());
            entry.after = Some(step_words(plan, next, step));
            entry.detail = format!(
                "{why}: {before} → {}{}",
                step_words(plan, next, step),
                percent.map_or(String::new(), |p| format!("; percent {live}% → {}%", p.as_f64()))
            );
            let changes = route_of(overlay, route);
            changes.plans.insert(
                rule.to_string(),
                PlanState {
                    status: next,
                    step,
                    step_started_ms: started,
                    last_action: PlanAction {
                        at_ms: now,
                        action: command.as_str().to_string(),
                        why: why.clone(),
                        figures: None,
                    },
                },
            );
            if let Some(percent) = percent {
                set_rule_percent(changes, rule, percent, ACTOR_PLAN);
            }
            Ok(())
        })
        .await
        .inspect(|_| count_action(route, rule, command.as_str()))
    }

    /// A plan's judgement of its running step (made by the node holding the lease): a pass
    /// moves to the next step (or completes the plan after the last), a failure rolls back or
    /// pauses as the plan says. `step` and `started_ms` name the step judged; if the plan has
    /// moved since, nothing changes (`Conflict`).
    pub(crate) async fn plan_verdict(
        &self,
        route: &str,
        rule: &str,
        (step, started_ms): (usize, u64),
        verdict: &Verdict,
        figures: StepFigures,
    ) -> Result<Changed, StateError> {
        let why = match verdict {
            Verdict::Wait(_) => return Err(StateError::conflict("nothing to do while waiting")),
            Verdict::Pass(why) | Verdict::Fail(why) => why.clone(),
        };
        let planned = {
            let inner = self.lock();
            verdict_move(plan_config(&inner, route, rule)?, step, verdict)
        };
        let entry = AuditEntry {
            figures: Some(figures.clone()),
            ..AuditEntry::now(
                ACTOR_PLAN,
                Some(route),
                Some(rule),
                &format!("plan_{}", planned.action),
                why.clone(),
            )
        };
        let changed = self
            .change(entry, |inner, overlay, entry| {
                let plan = plan_config(inner, route, rule)?;
                let now = super::audit::unix_ms();
                let live = live_percent(inner, overlay, route, rule);
                let changes = route_of(overlay, route);
                let Some(state) = changes.plans.get_mut(rule).filter(|p| {
                    p.status == PlanStatus::Running
                        && p.step == step
                        && p.step_started_ms == started_ms
                }) else {
                    return Err(StateError::conflict(
                        "the plan has moved since it was judged",
                    ));
                };
                let m = verdict_move(plan, step, verdict);
                let (before, after) = (
                    step_words(plan, PlanStatus::Running, step),
                    step_words(plan, m.status, m.step),
                );
                entry.detail = format!(
                    "{why}: {before} → {after}{}",
                    m.percent.map_or(String::new(), |p| format!(
                        "; percent {live}% → {}%",
                        p.as_f64()
                    ))
                );
                entry.before = Some(before);
                entry.after = Some(after);
                *state = PlanState {
                    status: m.status,
                    step: m.step,
                    step_started_ms: if m.step != step { now } else { started_ms },
                    last_action: PlanAction {
                        at_ms: now,
                        action: m.action.to_string(),
                        why: why.clone(),
                        figures: Some(figures.clone()),
                    },
                };
                if let Some(percent) = m.percent {
                    set_rule_percent(changes, rule, percent, ACTOR_PLAN);
                }
                Ok(())
            })
            .await?;
        count_action(route, rule, planned.action);
        let percent = planned
            .percent
            .map_or(String::new(), |p| format!(" to {}%", p.as_f64()));
        info!(
            "plan {route}/{rule}: {}{percent}; {why}; canary {:?}, baseline {:?}",
            planned.action, figures.canary, figures.baseline
        );
        Ok(changed)
    }
}

/// Where a judged step takes its plan.
struct Move {
    status: PlanStatus,
    step: usize,
    /// The rule's new percentage, if it changes.
    percent: Option<Percent>,
    /// `advance`, `complete`, `pause` or `rollback`.
    action: &'static str,
}

/// A pass moves to the next step, or completes the plan after the last; a failure pauses or
/// rolls back (percent 0), as the plan says — the state machine's answer for a running plan.
fn verdict_move(plan: &PlanConfig, step: usize, verdict: &Verdict) -> Move {
    let next = plan.steps.get(step + 1).copied();
    let event = match verdict {
        Verdict::Pass(_) => PlanEvent::Pass {
            last: next.is_none(),
        },
        _ => PlanEvent::Fail(plan.on_failure),
    };
    let status = match transition(Some(PlanStatus::Running), event, false) {
        Ok(Some(status)) => status,
        // A running plan always moves on a verdict; were it refused, it would stop safely.
        _ => PlanStatus::Paused,
    };
    match status {
        PlanStatus::Running => Move {
            status,
            step: step + 1,
            percent: next,
            action: "advance",
        },
        PlanStatus::Completed => Move {
            status,
            step,
            percent: None,
            action: "complete",
        },
        PlanStatus::RolledBack => Move {
            status,
            step,
            percent: Some(zero()),
            action: "rollback",
        },
        _ => Move {
            status,
            step,
            percent: None,
            action: "pause",
        },
    }
}

/// Whether a rollback or promote covers `route` now (its own, or every route's).
fn is_overridden(overlay: &Overlay, route: &str) -> bool {
    overlay.mode != OverlayMode::Rules
        || overlay
            .route(route)
            .is_some_and(|r| r.mode != OverlayMode::Rules)
}

/// After an override changed: holds every running plan a rollback or promote now covers (its
/// step clock stops) and releases every held plan no override covers any more, with a new
/// window for its step (its clock restarts and its figures start from nothing).
/// Answers how many plans it held and how many it released.
fn hold_or_release(overlay: &mut Overlay, actor: &str, action: &str) -> (usize, usize) {
    let now = super::audit::unix_ms();
    let (mut held, mut released) = (0, 0);
    let routes: Vec<String> = overlay.routes.keys().cloned().collect();
    for route in routes {
        let event = if is_overridden(overlay, &route) {
            PlanEvent::Override
        } else {
            PlanEvent::Release
        };
        let Some(changes) = overlay.routes.get_mut(&route) else {
            continue;
        };
        for plan in changes.plans.values_mut() {
            let Ok(Some(next)) = transition(Some(plan.status), event, event == PlanEvent::Override)
            else {
                continue;
            };
            if next == plan.status {
                continue;
            }
            let (moved, why) = if event == PlanEvent::Override {
                (
                    "hold",
                    format!("held by {actor}'s {action}: its step clock stops"),
                )
            } else {
                (
                    "release",
                    format!(
                        "released by {actor}'s {action}: the step starts again with new figures"
                    ),
                )
            };
            plan.status = next;
            if next == PlanStatus::Running {
                plan.step_started_ms = now;
                released += 1;
            } else {
                held += 1;
            }
            plan.last_action = PlanAction {
                at_ms: now,
                action: moved.to_string(),
                why,
                figures: None,
            };
        }
    }
    (held, released)
}

/// An override in the audit trail's words.
fn mode_words(mode: &OverlayMode) -> String {
    match mode {
        OverlayMode::Rules => "rules".to_string(),
        OverlayMode::Rollback => "rollback".to_string(),
        OverlayMode::Promote(group) => format!("promote {group}"),
    }
}

/// Where a plan stands, in the audit trail's words: `running, step 2 of 3 (50%)`.
fn plan_words(plan: &PlanConfig, state: Option<&PlanState>) -> String {
    match state {
        None => "not started".to_string(),
        Some(s) => step_words(plan, s.status, s.step),
    }
}

fn step_words(plan: &PlanConfig, status: PlanStatus, step: usize) -> String {
    let percent = plan.steps.get(step).map_or(0.0, |p| p.as_f64());
    format!(
        "{}, step {} of {} ({percent}%)",
        status.as_str().replace('_', " "),
        step + 1,
        plan.steps.len()
    )
}

/// The rule's percentage now: the control state's, else the file's (0 when it is no percent
/// rule, which `plan_config` has ruled out).
fn live_percent(inner: &Inner, overlay: &Overlay, route: &str, rule: &str) -> f64 {
    if let Some(p) = overlay.route(route).and_then(|r| r.percent.get(rule)) {
        return *p;
    }
    inner
        .base
        .route(route)
        .and_then(|r| r.router.rule(rule))
        .and_then(|r| r.share())
        .map_or(0.0, |share| share.as_f64())
}

/// The plan of `route`'s rule `rule` (`NotFound` when there is none).
fn plan_config<'a>(
    inner: &'a Inner,
    route: &str,
    rule: &str,
) -> Result<&'a PlanConfig, StateError> {
    let route_config = inner
        .base
        .route(route)
        .ok_or_else(|| StateError::not_found(format!("no route named {route:?}")))?;
    route_config
        .plans
        .get(rule)
        .ok_or_else(|| StateError::not_found(format!("rule {rule:?} has no rollout plan")))
}

/// The overlay of `route`, made when missing.
pub(super) fn route_of<'a>(overlay: &'a mut Overlay, route: &str) -> &'a mut RouteOverlay {
    overlay.routes.entry(route.to_string()).or_default()
}

/// The one way a rule's percentage is set, with who set it.
fn set_rule_percent(changes: &mut RouteOverlay, rule: &str, percent: Percent, by: &str) {
    changes.percent.insert(rule.to_string(), percent.as_f64());
    changes.percent_by.insert(rule.to_string(), by.to_string());
}

fn zero() -> Percent {
    Percent::new(0.0).expect("0 is in 0..=100")
}

fn count_action(route: &str, rule: &str, action: &str) {
    METRICS
        .rollout_actions
        .with_label_values(&[route, rule, action])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::state::figures::FigureSummary;
    use crate::state::ConfigSource;
    use crate::state::ErrorKind;

    const ACTOR: &str = "alice";

    fn controller() -> Controller {
        let loaded = config::load_demo().expect("demo");
        Controller::new(ConfigSource::Demo, loaded.spec, loaded.gateway).expect("controller")
    }

    /// The demo with a plan on its rollout rule.
    fn controller_with_plan(on_failure: &str) -> Controller {
        let text = format!(
            "gateway:\n  listen: [\"127.0.0.1:1\"]\n  groups:\n    stable: {{ servers: [\"127.0.0.1:2\"] }}\n    canary: {{ servers: [\"127.0.0.1:3\"] }}\n  routing:\n    default: stable\n    rules:\n      - name: rollout\n        percent: 1\n        group: canary\n        plan: {{ steps: [1, 5, 100], hold: 1s, min_requests: 10, baseline: stable, on_failure: {on_failure} }}\n"
        );
        let loaded =
            config::load_str(&text, "plan.yaml", std::path::Path::new(".")).expect("valid");
        Controller::new(ConfigSource::Demo, loaded.spec, loaded.gateway).expect("controller")
    }

    fn percent_of(c: &Controller, rule: &str) -> f64 {
        let view = c.view();
        let rule = view.state.routes[0].router.rule(rule).expect("rule");
        rule.share().expect("a percent rule").as_f64()
    }

    fn figures() -> StepFigures {
        let none = FigureSummary {
            requests: 0,
            errors: 0,
            error_rate: 0.0,
            p99_ms: None,
            median_ms: None,
        };
        StepFigures {
            canary: none.clone(),
            baseline: none,
            tests: Vec::new(),
        }
    }

    /// Audit entries say what a change moved from and to, and a plan's step by name.
    #[tokio::test]
    async fn audit_entries_carry_before_and_after() {
        let c = controller_with_plan("rollback");
        c.set_percent(ACTOR, "default", "rollout", Percent::new(0.5).expect("ok"))
            .await
            .expect("by hand");
        c.set_mode(ACTOR, None, OverlayMode::Rollback)
            .await
            .expect("rollback");
        c.set_mode(ACTOR, None, OverlayMode::Rules)
            .await
            .expect("resume");
        c.plan_command(ACTOR, "default", "rollout", PlanCommand::Start, false)
            .await
            .expect("start");
        let plan = c.running_plans().pop().expect("running");
        let step = (plan.state.step, plan.state.step_started_ms);
        c.plan_verdict(
            "default",
            "rollout",
            step,
            &Verdict::Pass("fine".into()),
            figures(),
        )
        .await
        .expect("advance");
        let trail = c.local_audit(10);
        let said: Vec<(&str, &str, Option<&str>, Option<&str>)> = trail
            .iter()
            .rev()
            .map(|e| {
                (
                    e.action.as_str(),
                    e.detail.as_str(),
                    e.before.as_deref(),
                    e.after.as_deref(),
                )
            })
            .collect();
        assert_eq!(said[0].0, "percent");
        assert_eq!(said[0].1, "percent 1% → 0.5%");
        assert_eq!(said[1].2..=said[1].3, Some("rules")..=Some("rollback"));
        assert_eq!(said[2].2..=said[2].3, Some("rollback")..=Some("rules"));
        assert_eq!(
            (said[3].0, said[3].2, said[3].3),
            (
                "plan_start",
                Some("not started"),
                Some("running, step 1 of 3 (1%)")
            )
        );
        assert!(said[3].1.contains("percent 0.5% → 1%"), "{}", said[3].1);
        assert_eq!(
            (said[4].0, said[4].2, said[4].3),
            (
                "plan_advance",
                Some("running, step 1 of 3 (1%)"),
                Some("running, step 2 of 3 (5%)")
            )
        );
        assert!(
            said[4].1.starts_with(
                "fine: running, step 1 of 3 (1%) → running, step 2 of 3 (5%); percent 1% → 5%"
            ),
            "{}",
            said[4].1
        );
    }

    #[tokio::test]
    async fn api_errors_name_the_field() {
        let c = controller();
        let five = Percent::new(5.0).expect("in range");
        let err = c
            .set_percent(ACTOR, "default", "vip", five)
            .await
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("name"));
        assert_eq!(
            c.set_percent(ACTOR, "default", "nope", five)
                .await
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            c.set_percent(ACTOR, "nope", "rollout", five)
                .await
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            c.route_name(Some("nope")).unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(c.route_name(None).expect("the one route"), "default");
        let bad = c
            .change_users(ACTOR, "default", "vip", vec!["has space".into()], vec![])
            .await
            .unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("add"));
        let bad = c
            .set_mode(ACTOR, None, OverlayMode::Promote("nope".into()))
            .await
            .unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("group"));
        assert_eq!(c.generation(), 1, "failed changes apply nothing");
        assert!(c.local_audit(10).is_empty(), "nor enter the trail");
        let err = c
            .plan_command(ACTOR, "default", "vip", PlanCommand::Start, false)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound, "the vip rule has no plan");
    }

    /// start → 1%, a pass → 5%, a manual percent refused while the plan owns the rule, pause
    /// and resume, a pass → 100%, a pass at the last step completes; the commands that do not
    /// fit the state answer 409.
    #[tokio::test]
    async fn a_plan_walks_its_steps() {
        let c = controller_with_plan("rollback");
        let cmd = |command| c.plan_command(ACTOR, "default", "rollout", command, false);
        assert_eq!(
            cmd(PlanCommand::Pause).await.unwrap_err().kind,
            ErrorKind::Conflict
        );
        cmd(PlanCommand::Start).await.expect("start");
        assert_eq!(percent_of(&c, "rollout"), 1.0);
        assert_eq!(
            cmd(PlanCommand::Start).await.unwrap_err().kind,
            ErrorKind::Conflict,
            "already running"
        );
        let plan = c.running_plans().pop().expect("running");
        let step = (plan.state.step, plan.state.step_started_ms);
        let pass = Verdict::Pass("fine".into());
        c.plan_verdict("default", "rollout", step, &pass, figures())
            .await
            .expect("advance");
        assert_eq!(percent_of(&c, "rollout"), 5.0);
        let again = c
            .plan_verdict("default", "rollout", step, &pass, figures())
            .await;
        assert_eq!(
            again.unwrap_err().kind,
            ErrorKind::Conflict,
            "a step is judged once"
        );
        let manual = c
            .set_percent(ACTOR, "default", "rollout", Percent::new(50.0).expect("ok"))
            .await;
        assert_eq!(
            manual.unwrap_err().kind,
            ErrorKind::Conflict,
            "the plan owns the percentage"
        );
        cmd(PlanCommand::Pause).await.expect("pause");
        assert!(c.running_plans().is_empty());
        cmd(PlanCommand::Resume).await.expect("resume");
        let plan = c.running_plans().pop().expect("running again");
        assert_eq!(plan.state.step, 1);
        let step = (plan.state.step, plan.state.step_started_ms);
        c.plan_verdict("default", "rollout", step, &pass, figures())
            .await
            .expect("to 100");
        assert_eq!(percent_of(&c, "rollout"), 100.0);
        let plan = c.running_plans().pop().expect("running at the last step");
        let step = (plan.state.step, plan.state.step_started_ms);
        c.plan_verdict("default", "rollout", step, &pass, figures())
            .await
            .expect("complete");
        let view = c.view();
        let state = view.overlay.plan("default", "rollout").expect("state");
        assert_eq!(state.status, PlanStatus::Completed);
        assert_eq!(state.last_action.action, "complete");
        assert_eq!(
            percent_of(&c, "rollout"),
            100.0,
            "completed stays at the last step"
        );
        let actions: Vec<String> = c
            .local_audit(20)
            .into_iter()
            .rev()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            [
                "plan_start",
                "plan_advance",
                "plan_pause",
                "plan_resume",
                "plan_advance",
                "plan_complete"
            ]
        );
        c.set_percent(ACTOR, "default", "rollout", Percent::new(50.0).expect("ok"))
            .await
            .expect("a finished plan no longer owns the percentage");
    }

    /// A failed step rolls back to 0% (on_failure: rollback) or holds it (pause).
    #[tokio::test]
    async fn a_failed_step_rolls_back_or_pauses() {
        let fail = Verdict::Fail("too many errors".into());
        for (on_failure, status, percent) in [
            ("rollback", PlanStatus::RolledBack, 0.0),
            ("pause", PlanStatus::Paused, 1.0),
        ] {
            let c = controller_with_plan(on_failure);
            c.plan_command(ACTOR, "default", "rollout", PlanCommand::Start, false)
                .await
                .expect("start");
            let plan = c.running_plans().pop().expect("running");
            let step = (plan.state.step, plan.state.step_started_ms);
            c.plan_verdict("default", "rollout", step, &fail, figures())
                .await
                .expect("acted");
            let view = c.view();
            let state = view.overlay.plan("default", "rollout").expect("state");
            assert_eq!(state.status, status, "{on_failure}");
            assert_eq!(state.last_action.why, "too many errors");
            assert_eq!(percent_of(&c, "rollout"), percent, "{on_failure}");
        }
        let c = controller_with_plan("rollback");
        c.plan_command(ACTOR, "default", "rollout", PlanCommand::Start, false)
            .await
            .expect("start");
        c.plan_command(ACTOR, "default", "rollout", PlanCommand::Abort, false)
            .await
            .expect("abort");
        assert_eq!(
            percent_of(&c, "rollout"),
            0.0,
            "abort sends the canary's users back"
        );
        c.plan_command(ACTOR, "default", "rollout", PlanCommand::Start, false)
            .await
            .expect("start again");
        assert_eq!(percent_of(&c, "rollout"), 1.0);
    }

    fn plan_state(c: &Controller) -> PlanState {
        c.view()
            .overlay
            .plan("default", "rollout")
            .expect("started")
            .clone()
    }

    /// A rollback holds the running plan (its clock stops; verdicts on the old window are
    /// refused); resuming the rules releases it with a new window; a plan cannot start or
    /// resume under an override; a route override and the global one both hold, and only
    /// when neither covers the route is the plan released.
    #[tokio::test]
    async fn an_override_holds_the_plan_and_resume_releases_it() {
        let c = controller_with_plan("rollback");
        let cmd = |command| c.plan_command(ACTOR, "default", "rollout", command, false);
        cmd(PlanCommand::Start).await.expect("start");
        let before = plan_state(&c);
        let step = (before.step, before.step_started_ms);
        c.set_mode(ACTOR, None, OverlayMode::Rollback)
            .await
            .expect("rollback");
        let held = plan_state(&c);
        assert_eq!(held.status, PlanStatus::Held);
        assert_eq!(held.last_action.action, "hold");
        assert_eq!(held.step_started_ms, before.step_started_ms);
        assert!(c.running_plans().is_empty(), "a held plan is not judged");
        let pass = Verdict::Pass("fine".into());
        let late = c
            .plan_verdict("default", "rollout", step, &pass, figures())
            .await;
        assert_eq!(late.unwrap_err().kind, ErrorKind::Conflict);
        assert_eq!(
            cmd(PlanCommand::Resume).await.unwrap_err().kind,
            ErrorKind::Conflict,
            "held: only resuming the rules releases it"
        );
        c.set_mode(
            ACTOR,
            Some("default"),
            OverlayMode::Promote("canary".into()),
        )
        .await
        .expect("promote the route too");
        c.set_mode(ACTOR, Some("default"), OverlayMode::Rules)
            .await
            .expect("resume the route");
        assert_eq!(
            plan_state(&c).status,
            PlanStatus::Held,
            "the global rollback still covers the route"
        );
        // A new window must be later than the old one's start.
        while super::super::audit::unix_ms() <= before.step_started_ms {
            tokio::task::yield_now().await;
        }
        c.set_mode(ACTOR, None, OverlayMode::Rules)
            .await
            .expect("resume everywhere");
        let released = plan_state(&c);
        assert_eq!(released.status, PlanStatus::Running);
        assert_eq!(released.last_action.action, "release");
        assert_eq!(released.step, before.step);
        assert!(released.step_started_ms > before.step_started_ms);
        assert_eq!(c.running_plans().len(), 1);
        cmd(PlanCommand::Abort).await.expect("abort");
        c.set_mode(ACTOR, None, OverlayMode::Rollback)
            .await
            .expect("rollback");
        assert_eq!(
            cmd(PlanCommand::Start).await.unwrap_err().kind,
            ErrorKind::Conflict,
            "nothing starts under an override"
        );
        assert_eq!(plan_state(&c).status, PlanStatus::RolledBack, "not held");
    }

    /// Starting below the rule's live percentage is refused naming both, unless allowed.
    #[tokio::test]
    async fn a_start_does_not_silently_lower_the_percentage() {
        let c = controller_with_plan("rollback");
        c.set_percent(ACTOR, "default", "rollout", Percent::new(25.0).expect("ok"))
            .await
            .expect("by hand");
        let refused = c
            .plan_command(ACTOR, "default", "rollout", PlanCommand::Start, false)
            .await
            .unwrap_err();
        assert_eq!(refused.kind, ErrorKind::Conflict);
        assert!(
            refused.message.contains("1%") && refused.message.contains("25%"),
            "{}",
            refused.message
        );
        assert_eq!(percent_of(&c, "rollout"), 25.0, "nothing changed");
        c.plan_command(ACTOR, "default", "rollout", PlanCommand::Start, true)
            .await
            .expect("allowed");
        assert_eq!(percent_of(&c, "rollout"), 1.0);
    }
}
