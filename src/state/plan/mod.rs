//! Rollout plans: where a plan stands (kept in the control state, so every node and the state
//! file agree) and the one state machine that moves it — operators' commands, the judging
//! rule's verdicts ([`verdict`], on the tests of [`stats`]) and operator overrides — table-tested
//! in `tests.rs`.

pub(crate) mod stats;
pub(crate) mod verdict;

use serde::{Deserialize, Serialize};

use super::figures::StepFigures;
use crate::config::OnFailure;

pub(crate) use verdict::{judge, Judgement, Verdict};

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PlanStatus {
    Running,
    Paused,
    /// Stopped by an operator override (a rollback or promote covering its route): its step
    /// clock stands still until the override is lifted, when it runs again with a new window.
    Held,
    RolledBack,
    Completed,
}

impl PlanStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Running => "running",
            PlanStatus::Paused => "paused",
            PlanStatus::Held => "held",
            PlanStatus::RolledBack => "rolled_back",
            PlanStatus::Completed => "completed",
        }
    }

    /// Running, paused or held: the plan owns the rule's percentage.
    pub(crate) fn is_active(self) -> bool {
        matches!(
            self,
            PlanStatus::Running | PlanStatus::Paused | PlanStatus::Held
        )
    }
}

/// One plan's state, part of the control state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanState {
    pub(crate) status: PlanStatus,
    /// Index into the plan's steps.
    pub(crate) step: usize,
    /// When the current step (or its window, after a resume) began, in Unix milliseconds.
    pub(crate) step_started_ms: u64,
    /// The plan's last move and why.
    pub(crate) last_action: PlanAction,
}

/// A move of a plan, as kept in its state and the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanAction {
    pub(crate) at_ms: u64,
    /// `start`, `advance`, `complete`, `pause`, `resume`, `rollback`, `abort`, `hold` (an
    /// override stopped it) or `release` (the override was lifted).
    pub(crate) action: String,
    pub(crate) why: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) figures: Option<StepFigures>,
}

/// What an operator (or the plan itself) asks of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlanCommand {
    Start,
    Pause,
    Resume,
    Abort,
}

impl PlanCommand {
    pub(crate) fn parse(text: &str) -> Option<PlanCommand> {
        match text {
            "start" => Some(PlanCommand::Start),
            "pause" => Some(PlanCommand::Pause),
            "resume" => Some(PlanCommand::Resume),
            "abort" => Some(PlanCommand::Abort),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PlanCommand::Start => "start",
            PlanCommand::Pause => "pause",
            PlanCommand::Resume => "resume",
            PlanCommand::Abort => "abort",
        }
    }
}

/// What happens to a plan: an operator's command, a verdict on its running step, or an
/// operator override beginning or ending on its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlanEvent {
    Command(PlanCommand),
    /// The running step passed (`last`: it was the plan's last step).
    Pass {
        last: bool,
    },
    /// The running step failed: the plan does what its `on_failure` says.
    Fail(OnFailure),
    /// A rollback or promote (of the route or of every route) now covers the plan's route.
    Override,
    /// No override covers the route any more.
    Release,
}

/// Where `event` takes a plan in `status` (`None`: never started): its new status, the same
/// status when the event does not concern it (an override of a paused plan), or why it is
/// refused (`Err`, answered `409`). `overridden`: whether a rollback or promote covers the
/// plan's route now — a plan cannot start or resume under one.
///
/// | status | start | pause | resume | abort | pass | fail | override | release |
/// |---|---|---|---|---|---|---|---|---|
/// | not started, rolled back, completed | running¹ | – | – | – | – | – | same | same |
/// | running | – | paused | – | rolled back | running / completed | rolled back / paused | held | same |
/// | paused | – | – | running¹ | rolled back | – | – | same | same |
/// | held | – | paused | – | rolled back | – | – | same | running, new window |
///
/// –: refused; ¹: refused while an override covers the route.
pub(crate) fn transition(
    status: Option<PlanStatus>,
    event: PlanEvent,
    overridden: bool,
) -> Result<Option<PlanStatus>, String> {
    use PlanStatus::*;
    let state = status.map_or("not started", PlanStatus::as_str);
    let under_override =
        || Err("a rollback or promote holds its route: resume the route's rules first".to_string());
    let next = match (event, status) {
        (PlanEvent::Command(command), _) => {
            let to = match (command, status) {
                (PlanCommand::Start, s) if !s.is_some_and(PlanStatus::is_active) => Running,
                (PlanCommand::Pause, Some(Running | Held)) => Paused,
                (PlanCommand::Resume, Some(Paused)) => Running,
                (PlanCommand::Resume, Some(Held)) => {
                    return Err("it is held by a rollback or promote: resume the route's rules (POST /resume) to release it".to_string())
                }
                (PlanCommand::Abort, Some(s)) if s.is_active() => RolledBack,
                _ => return Err(format!("it is {state}: it cannot {}", command.as_str())),
            };
            if to == Running && overridden {
                return under_override();
            }
            to
        }
        (PlanEvent::Pass { last }, Some(Running)) => {
            if last {
                Completed
            } else {
                Running
            }
        }
        (PlanEvent::Fail(OnFailure::Rollback), Some(Running)) => RolledBack,
        (PlanEvent::Fail(OnFailure::Pause), Some(Running)) => Paused,
        (PlanEvent::Pass { .. } | PlanEvent::Fail(_), _) => {
            return Err(format!("it is {state}: the verdict no longer applies"))
        }
        (PlanEvent::Override, Some(Running)) => Held,
        (PlanEvent::Release, Some(Held)) => Running,
        (PlanEvent::Override | PlanEvent::Release, status) => return Ok(status),
    };
    Ok(Some(next))
}

#[cfg(test)]
mod tests;
