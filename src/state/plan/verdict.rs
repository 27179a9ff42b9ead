//! The judging rule of a running step — a pure function of the plan, the time in the step and
//! the step's figures: each check fails only when the canary is over its limit AND a test says
//! the difference is real at [`CONFIDENCE`]; over a limit but not yet significant waits for
//! more requests; too few requests wait. Table-tested below, with a seeded simulation.

use std::time::Duration;

use super::stats::{mann_whitney, proportion_above, two_proportions, Tested};
use crate::config::PlanConfig;
use crate::state::figures::{bucket_of, Figures, TestFigures};

/// The confidence every check asks before it fails a step: a fair step (canary no worse than
/// the baseline) is found significantly worse by one check at one look at most once in a
/// thousand, and it must be over the check's limit at the same time, which a fair sample of a
/// few hundred requests is only by a many-sigma accident (see the simulation test below).
pub(crate) const CONFIDENCE: f64 = 0.999;

/// The fewest baseline requests compared with (or `min_requests / 10`, when larger): below
/// this the baseline is thin (as at 100%), its error share counts as 0 and latency is not
/// compared; a rank test on fewer than 20 requests would not mean much.
pub(crate) const MIN_BASELINE: u64 = 20;

/// The judging rule's answer for a running step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Not enough time or requests yet, or a limit is broken but not yet significantly (why).
    Wait(String),
    /// The step passed: go to the next step, or complete after the last.
    Pass(String),
    /// A limit is broken, significantly: roll back or pause, as the plan says.
    Fail(String),
}

/// A verdict and the checks it rests on (shown in `/status` and kept with a plan's move).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Judgement {
    pub(crate) verdict: Verdict,
    pub(crate) tests: Vec<TestFigures>,
}

/// What one check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Pass,
    Wait,
    Fail,
}

impl Decision {
    /// Over the limit and significant fails; over but not significant waits.
    fn of(over_limit: bool, tested: &Tested) -> Decision {
        match (over_limit, tested.significant(CONFIDENCE)) {
            (false, _) => Decision::Pass,
            (true, false) => Decision::Wait,
            (true, true) => Decision::Fail,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Decision::Pass => "pass",
            Decision::Wait => "wait",
            Decision::Fail => "fail",
        }
    }
}

/// One check's outcome: its figures and its sentence.
struct Check {
    decision: Decision,
    text: String,
    figures: TestFigures,
}

/// What a check measured, before it is judged.
struct Measured<'a> {
    check: &'a str,
    test: &'a str,
    canary_n: u64,
    baseline_n: u64,
    statistic: f64,
    tested: Tested,
    effect: f64,
    limit: f64,
}

impl Measured<'_> {
    /// Judges the measurement (`over_limit` by the check's own rule) and words it.
    fn judge(self, over_limit: bool, what: String) -> Check {
        let decision = Decision::of(over_limit, &self.tested);
        let significance = if self.tested.enough {
            format!(
                "z {:.2}, p {:.1e} at {}% confidence",
                self.tested.z,
                self.tested.p_value,
                CONFIDENCE * 100.0
            )
        } else {
            "too few requests for the test yet".to_string()
        };
        let text = match decision {
            Decision::Pass => what,
            Decision::Wait => {
                format!("{what} is over the limit but not yet significant ({significance})")
            }
            Decision::Fail => format!("{what} is over the limit ({significance})"),
        };
        Check {
            decision,
            text,
            figures: TestFigures {
                check: self.check.to_string(),
                test: self.test.to_string(),
                canary_n: self.canary_n,
                baseline_n: self.baseline_n,
                statistic: self.statistic,
                z: self.tested.z,
                p_value: self.tested.p_value,
                confidence: CONFIDENCE,
                effect: self.effect,
                limit: self.limit,
                enough: self.tested.enough,
                decision: decision.as_str().to_string(),
            },
        }
    }
}

/// Judges a running step. With fewer than `min_requests` canary requests nothing is judged.
/// Then each check fails the step at once, before `hold` is over, when the canary is over its
/// limit and a one-sided test at [`CONFIDENCE`] says it is really worse:
/// - errors: the canary's error share minus the baseline's over `max_error_rate_increase`, by
///   the two-proportion z-test (against a thin baseline: the canary's share over the limit, by
///   the one-proportion test);
/// - latency tail: the canary's p99 ÷ the baseline's over `max_p99_ratio`, and more canary
///   than baseline requests slower than `max_p99_ratio` × the baseline's p99, by the
///   two-proportion z-test on those shares;
/// - latency shift (when the plan sets `max_median_ratio`): the canary's median ÷ the baseline's over it, by the
///   Mann–Whitney U rank test over the two histograms.
///
/// A check over its limit but not yet significant waits (more requests decide it), however
/// long the step has run. With every check passing and `hold` over, the step passes.
pub(crate) fn judge(
    plan: &PlanConfig,
    in_step: Duration,
    canary: &Figures,
    baseline: &Figures,
) -> Judgement {
    if canary.requests < plan.min_requests {
        return Judgement {
            verdict: Verdict::Wait(format!(
                "{} of {} canary requests",
                canary.requests, plan.min_requests
            )),
            tests: Vec::new(),
        };
    }
    let baseline_enough = baseline.requests >= (plan.min_requests / 10).max(MIN_BASELINE);
    let mut checks = vec![errors(plan, canary, baseline, baseline_enough)];
    if baseline_enough {
        checks.extend(latency_tail(plan, canary, baseline));
        checks.extend(latency_shift(plan, canary, baseline));
    }
    let sentence = |decision: Option<Decision>| {
        let mut texts: Vec<&str> = checks
            .iter()
            .filter(|c| decision.is_none_or(|d| c.decision == d))
            .map(|c| c.text.as_str())
            .collect();
        if !baseline_enough {
            texts.push("latency not compared: too few baseline requests");
        }
        texts.join("; ")
    };
    let has = |d: Decision| checks.iter().any(|c| c.decision == d);
    let verdict = if has(Decision::Fail) {
        // The failing checks, then those over their limit but not yet significant.
        let mut why = sentence(Some(Decision::Fail));
        if has(Decision::Wait) {
            why = format!("{why}; {}", sentence(Some(Decision::Wait)));
        }
        Verdict::Fail(why)
    } else if has(Decision::Wait) {
        Verdict::Wait(sentence(Some(Decision::Wait)))
    } else if in_step < plan.hold {
        Verdict::Wait(format!(
            "holding {:.0}s of {:.0}s; {}",
            in_step.as_secs_f64(),
            plan.hold.as_secs_f64(),
            sentence(None)
        ))
    } else {
        Verdict::Pass(sentence(None))
    };
    Judgement {
        verdict,
        tests: checks.into_iter().map(|c| c.figures).collect(),
    }
}

/// The error check: against the baseline when it has enough requests, else against 0.
fn errors(plan: &PlanConfig, canary: &Figures, baseline: &Figures, baseline_enough: bool) -> Check {
    let limit = plan.max_error_rate_increase;
    let baseline_rate = if baseline_enough {
        baseline.error_rate()
    } else {
        0.0
    };
    let increase = canary.error_rate() - baseline_rate;
    let (test, tested) = if baseline_enough {
        let tested = two_proportions(
            canary.errors,
            canary.requests,
            baseline.errors,
            baseline.requests,
        );
        ("two_proportion_z", tested)
    } else {
        let tested = proportion_above(canary.errors, canary.requests, limit);
        ("one_proportion_z", tested)
    };
    // `canary.requests >= min_requests >= 1`, and a baseline compared with has requests.
    let tested = tested.unwrap_or(Tested {
        z: 0.0,
        p_value: 1.0,
        enough: false,
    });
    let what = format!(
        "canary errors {:.2}% vs baseline {:.2}% (+{:.2} points, limit {:.2})",
        canary.error_rate() * 100.0,
        baseline_rate * 100.0,
        increase * 100.0,
        limit * 100.0
    );
    Measured {
        check: "errors",
        test,
        canary_n: canary.requests,
        baseline_n: baseline.requests,
        statistic: tested.z,
        tested,
        effect: increase,
        limit,
    }
    // A hair of slack, so a share exactly at the limit (2% − 1% against 0.01) passes despite
    // floating-point rounding.
    .judge(increase > limit + 1e-9, what)
}

/// The tail check: the p99 ratio against its limit, made significant by comparing how many
/// requests of each side are slower than the limit times the baseline's p99.
fn latency_tail(plan: &PlanConfig, canary: &Figures, baseline: &Figures) -> Option<Check> {
    let (c, b) = (canary.p99_ms()?, baseline.p99_ms()?);
    let ratio = c / b;
    // The requests in the bucket holding `limit × baseline p99` and above: a canary p99 over
    // the limit lies there, so the canary has at least 1% of its requests there.
    let edge = bucket_of(b * plan.max_p99_ratio / 1000.0);
    let slow = |f: &Figures| f.buckets.iter().skip(edge).sum::<u64>();
    let (cn, bn) = (canary.buckets.iter().sum(), baseline.buckets.iter().sum());
    let tested = two_proportions(slow(canary), cn, slow(baseline), bn)?;
    let what = format!(
        "p99 {c:.1} ms vs {b:.1} ms ({ratio:.2}x, limit {:.2}x)",
        plan.max_p99_ratio
    );
    Some(
        Measured {
            check: "latency_tail",
            test: "two_proportion_z",
            canary_n: cn,
            baseline_n: bn,
            statistic: tested.z,
            tested,
            effect: ratio,
            limit: plan.max_p99_ratio,
        }
        .judge(ratio > plan.max_p99_ratio, what),
    )
}

/// The shift check, when the plan sets `max_median_ratio`: the median ratio against it, made
/// significant by the Mann–Whitney U test over the two histograms.
fn latency_shift(plan: &PlanConfig, canary: &Figures, baseline: &Figures) -> Option<Check> {
    let limit = plan.max_median_ratio?;
    let (c, b) = (canary.median_ms()?, baseline.median_ms()?);
    let rank = mann_whitney(&canary.buckets, &baseline.buckets)?;
    let ratio = c / b;
    let what = format!(
        "median {c:.1} ms vs {b:.1} ms ({ratio:.2}x, limit {limit:.2}x; canary slower in {:.0}% of pairs)",
        rank.slower_share * 100.0
    );
    Some(
        Measured {
            check: "latency_shift",
            test: "mann_whitney_u",
            canary_n: canary.buckets.iter().sum(),
            baseline_n: baseline.buckets.iter().sum(),
            statistic: rank.u,
            tested: rank.tested,
            effect: ratio,
            limit,
        }
        .judge(ratio > limit, what),
    )
}

#[cfg(test)]
mod tests;
