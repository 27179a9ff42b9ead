//! Rollout plans: where a plan stands (kept in the control state, so every node and the state
//! file agree), what moves it, and the judging rule — a pure function of the plan, the time in
//! the step and the step's figures, table-tested below.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::figures::{Figures, StepFigures};
use crate::config::PlanConfig;

/// Where a plan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStatus {
    Running,
    Paused,
    RolledBack,
    Completed,
}

impl PlanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PlanStatus::Running => "running",
            PlanStatus::Paused => "paused",
            PlanStatus::RolledBack => "rolled_back",
            PlanStatus::Completed => "completed",
        }
    }

    /// Running or paused: the plan owns the rule's percentage.
    pub fn is_active(self) -> bool {
        matches!(self, PlanStatus::Running | PlanStatus::Paused)
    }
}

/// One plan's state, part of the control state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanState {
    pub status: PlanStatus,
    /// Index into the plan's steps.
    pub step: usize,
    /// When the current step (or its window, after a resume) began, in Unix milliseconds.
    pub step_started_ms: u64,
    /// The plan's last move and why.
    pub last_action: PlanAction,
}

/// A move of a plan, as kept in its state and the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanAction {
    pub at_ms: u64,
    /// `start`, `advance`, `complete`, `pause`, `resume`, `rollback` or `abort`.
    pub action: String,
    pub why: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub figures: Option<StepFigures>,
}

/// What an operator (or the plan itself) asks of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanCommand {
    Start,
    Pause,
    Resume,
    Abort,
}

impl PlanCommand {
    pub fn parse(text: &str) -> Option<PlanCommand> {
        match text {
            "start" => Some(PlanCommand::Start),
            "pause" => Some(PlanCommand::Pause),
            "resume" => Some(PlanCommand::Resume),
            "abort" => Some(PlanCommand::Abort),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PlanCommand::Start => "start",
            PlanCommand::Pause => "pause",
            PlanCommand::Resume => "resume",
            PlanCommand::Abort => "abort",
        }
    }

    /// Whether the command applies to a plan in `status` (`None`: never started). Starting a
    /// running or paused plan is refused (409), as is pausing what does not run, resuming what
    /// is not paused, and aborting what is neither.
    pub fn allowed(self, status: Option<PlanStatus>) -> bool {
        match self {
            PlanCommand::Start => !status.is_some_and(PlanStatus::is_active),
            PlanCommand::Pause => status == Some(PlanStatus::Running),
            PlanCommand::Resume => status == Some(PlanStatus::Paused),
            PlanCommand::Abort => status.is_some_and(PlanStatus::is_active),
        }
    }
}

/// The judging rule's answer for a running step.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough time or requests yet (why).
    Wait(String),
    /// The step passed: go to the next step, or complete after the last.
    Pass(String),
    /// A limit is broken: roll back or pause, as the plan says.
    Fail(String),
}

/// Judges a running step. With fewer than `min_requests` canary requests nothing is judged.
/// Then a broken limit fails the step at once, before `hold` is over:
/// - the canary's error share (5xx, and requests its group could not serve) minus the
///   baseline's must not exceed `max_error_rate_increase`;
/// - the canary's p99 ÷ the baseline's must not exceed `max_p99_ratio`.
///
/// A baseline with fewer than `max(1, min_requests / 10)` requests in the step (at 100% it
/// gets few) is too thin to compare with: its error share counts as 0 and the p99 is not
/// judged. With every limit kept and `hold` over, the step passes.
pub fn judge(
    plan: &PlanConfig,
    in_step: Duration,
    canary: &Figures,
    baseline: &Figures,
) -> Verdict {
    if canary.requests < plan.min_requests {
        return Verdict::Wait(format!(
            "{} of {} canary requests",
            canary.requests, plan.min_requests
        ));
    }
    let baseline_enough = baseline.requests >= (plan.min_requests / 10).max(1);
    let baseline_rate = if baseline_enough {
        baseline.error_rate()
    } else {
        0.0
    };
    let increase = canary.error_rate() - baseline_rate;
    let errors = format!(
        "canary errors {:.2}% vs baseline {:.2}%",
        canary.error_rate() * 100.0,
        baseline_rate * 100.0
    );
    // A hair of slack, so a share exactly at the limit (2% − 1% against 0.01) passes despite
    // floating-point rounding.
    if increase > plan.max_error_rate_increase + 1e-9 {
        return Verdict::Fail(format!(
            "{errors}: +{:.2} points is over the limit of {:.2}",
            increase * 100.0,
            plan.max_error_rate_increase * 100.0
        ));
    }
    let latency = match (canary.p99_ms(), baseline.p99_ms()) {
        (Some(c), Some(b)) if baseline_enough => {
            let ratio = c / b;
            let text = format!("p99 {c:.1} ms vs {b:.1} ms ({ratio:.2}x)");
            if ratio > plan.max_p99_ratio {
                return Verdict::Fail(format!(
                    "{text} is over the limit of {:.2}x",
                    plan.max_p99_ratio
                ));
            }
            text
        }
        _ => "p99 not compared: too few baseline requests".to_string(),
    };
    if in_step < plan.hold {
        return Verdict::Wait(format!(
            "holding {:.0}s of {:.0}s; {errors}, {latency}",
            in_step.as_secs_f64(),
            plan.hold.as_secs_f64()
        ));
    }
    Verdict::Pass(format!("{errors}, {latency}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OnFailure;
    use crate::routing::Percent;

    fn plan() -> PlanConfig {
        PlanConfig {
            steps: [1.0, 5.0, 25.0, 50.0, 100.0]
                .iter()
                .map(|p| Percent::new(*p).expect("in range"))
                .collect(),
            hold: Duration::from_secs(600),
            min_requests: 500,
            group: "canary".into(),
            baseline: "stable".into(),
            max_error_rate_increase: 0.01,
            max_p99_ratio: 1.5,
            on_failure: OnFailure::Rollback,
        }
    }

    const HELD: Duration = Duration::from_secs(600);

    fn is_wait(v: &Verdict) -> bool {
        matches!(v, Verdict::Wait(_))
    }
    fn is_pass(v: &Verdict) -> bool {
        matches!(v, Verdict::Pass(_))
    }
    fn is_fail(v: &Verdict) -> bool {
        matches!(v, Verdict::Fail(_))
    }

    /// Too few canary requests: wait, however bad the figures and however long the step.
    #[test]
    fn too_few_requests_wait() {
        let v = judge(
            &plan(),
            HELD,
            &Figures::at(499, 499, 900.0),
            &Figures::at(10_000, 0, 5.0),
        );
        assert_eq!(v, Verdict::Wait("499 of 500 canary requests".into()));
    }

    /// Enough requests, limits kept, hold over: pass.
    #[test]
    fn healthy_step_passes_after_hold() {
        let v = judge(
            &plan(),
            HELD,
            &Figures::at(500, 5, 10.0),
            &Figures::at(5_000, 50, 10.0),
        );
        assert!(is_pass(&v), "{v:?}");
    }

    /// Limits kept but the hold not over: wait.
    #[test]
    fn healthy_step_waits_for_hold() {
        let v = judge(
            &plan(),
            Duration::from_secs(599),
            &Figures::at(5_000, 0, 10.0),
            &Figures::at(5_000, 0, 10.0),
        );
        assert!(is_wait(&v), "{v:?}");
    }

    /// The error share may grow by the limit and no more (1 point here).
    #[test]
    fn error_rate_increase_at_the_limit() {
        let base = Figures::at(10_000, 100, 10.0); // 1%
        assert!(
            is_pass(&judge(&plan(), HELD, &Figures::at(1_000, 20, 10.0), &base)),
            "2% = +1 point"
        );
        let v = judge(&plan(), HELD, &Figures::at(1_000, 21, 10.0), &base);
        assert!(is_fail(&v), "2.1% = +1.1 points: {v:?}");
    }

    /// A broken limit fails the step at once, before the hold is over.
    #[test]
    fn breach_fails_before_hold() {
        let v = judge(
            &plan(),
            Duration::from_secs(1),
            &Figures::at(500, 100, 10.0),
            &Figures::at(5_000, 0, 10.0),
        );
        assert!(is_fail(&v), "{v:?}");
    }

    /// The p99 ratio may reach the limit and no more; bucket edges make 10 → 16 ms read as
    /// 11.3 → 16.0 ms (1.41x) and 10 → 17 ms as 11.3 → 19.0 ms (1.68x).
    #[test]
    fn p99_ratio_at_the_limit() {
        let base = Figures::at(5_000, 0, 10.0);
        assert!(is_pass(&judge(
            &plan(),
            HELD,
            &Figures::at(500, 0, 16.0),
            &base
        )));
        let v = judge(&plan(), HELD, &Figures::at(500, 0, 17.0), &base);
        assert!(is_fail(&v), "{v:?}");
    }

    /// A thin baseline (fewer than min_requests / 10) is not compared: its error share counts
    /// as 0 and its p99 is not judged.
    #[test]
    fn thin_baseline_is_not_compared() {
        let slow_thin_base = Figures::at(49, 49, 1.0);
        let v = judge(&plan(), HELD, &Figures::at(500, 0, 900.0), &slow_thin_base);
        assert!(is_pass(&v), "{v:?}");
        let v = judge(&plan(), HELD, &Figures::at(500, 6, 10.0), &slow_thin_base);
        assert!(is_fail(&v), "1.2% against 0: {v:?}");
        let v = judge(
            &plan(),
            HELD,
            &Figures::at(500, 0, 900.0),
            &Figures::at(50, 0, 1.0),
        );
        assert!(is_fail(&v), "50 baseline requests are enough: {v:?}");
    }

    /// Which commands apply in which state.
    #[test]
    fn commands_by_state() {
        use PlanCommand::*;
        use PlanStatus::*;
        let states = [
            None,
            Some(Running),
            Some(Paused),
            Some(RolledBack),
            Some(Completed),
        ];
        let table = [
            (Start, [true, false, false, true, true]),
            (Pause, [false, true, false, false, false]),
            (Resume, [false, false, true, false, false]),
            (Abort, [false, true, true, false, false]),
        ];
        for (command, expected) in table {
            for (state, want) in states.iter().zip(expected) {
                assert_eq!(command.allowed(*state), want, "{command:?} in {state:?}");
            }
            assert_eq!(PlanCommand::parse(command.as_str()), Some(command));
        }
        assert_eq!(PlanCommand::parse("go"), None);
    }
}
