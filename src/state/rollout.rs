//! The rollout service: every half second, for each running plan, it counts this node's share
//! of the step's figures, judges the step, and — on the one node that holds the plan lease —
//! acts on the verdict through the controller (a control change like any other, so every
//! node moves together).
//!
//! With a store, each node adds what it counted since its last tick to the step's sums in
//! Redis, and judges on the sums; the lease (`plan-lease`, renewed every tick, expiring after
//! [`LEASE_TTL`]) makes one node at a time act, and another takes over within seconds if that
//! node dies. Without a store the node judges its own traffic.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{debug, info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use super::audit::unix_ms;
use super::controller::{Controller, PlanReport, RunningPlan};
use super::figures::{group_stats, Figures, StepFigures};
use super::plan::{judge, Judgement, Verdict};
use super::{ErrorKind, StateError};

/// How often plans are judged and figures shared.
pub(crate) const TICK: Duration = Duration::from_millis(500);
/// How long the plan lease lasts without renewal.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(3);

/// Judges running plans and acts on them.
pub(crate) struct RolloutService {
    controller: Arc<Controller>,
}

impl RolloutService {
    pub(crate) fn new(controller: Arc<Controller>) -> Self {
        RolloutService { controller }
    }
}

/// This node's readings already counted for one step: (canary, baseline). With a store, what
/// was already added to Redis; without, the reading when the step was first seen.
type Counted = HashMap<String, (Figures, Figures)>;

impl RolloutService {
    /// One tick: share, judge and (as leader) act on every running plan.
    async fn tick(&self, counted: &mut Counted, was_leader: &mut bool) {
        let plans = self.controller.running_plans();
        let store = self.controller.store();
        counted.retain(|key, _| plans.iter().any(|p| step_key(p) == *key));
        if plans.is_empty() {
            self.controller.set_leader(false);
            *was_leader = false;
            return;
        }
        let leader = match &store {
            Some(store) => match store.take_lease(self.controller.node(), LEASE_TTL).await {
                Ok(held) => held,
                Err(e) => {
                    debug!("plan lease: {e}");
                    false
                }
            },
            None => true,
        };
        if leader != *was_leader {
            info!(
                "plans: this node {} the plan lease",
                if leader { "holds" } else { "does not hold" }
            );
            *was_leader = leader;
        }
        self.controller.set_leader(leader);
        for plan in plans {
            match self.figures(&plan, counted).await {
                Ok((canary, baseline)) => self.judge(&plan, leader, &canary, &baseline).await,
                // Redis down: the store service says so; the plan waits, nobody acts on it.
                Err(e) if e.kind == ErrorKind::Unavailable => {
                    debug!("plan {}/{}: no figures: {e}", plan.route, plan.rule)
                }
                Err(e) => warn!(
                    "plan {}/{}: cannot read its figures: {e}",
                    plan.route, plan.rule
                ),
            }
        }
    }

    /// The step's figures so far: summed over nodes in Redis, or this node's own.
    async fn figures(
        &self,
        plan: &RunningPlan,
        counted: &mut Counted,
    ) -> Result<(Figures, Figures), StateError> {
        let canary = group_stats(&plan.route, &plan.config.group).read();
        let baseline = group_stats(&plan.route, &plan.config.baseline).read();
        let key = step_key(plan);
        // Counting starts when this node first sees the step.
        let before = counted
            .entry(key)
            .or_insert_with(|| (canary.clone(), baseline.clone()));
        let (new_canary, new_baseline) = (canary.since(&before.0), baseline.since(&before.1));
        let Some(store) = self.controller.store() else {
            return Ok((new_canary, new_baseline));
        };
        let redis_key = store.figures_key(&plan.route, &plan.rule, plan.state.step_started_ms);
        if !(new_canary.is_empty() && new_baseline.is_empty()) {
            store
                .add_figures(&redis_key, &new_canary, &new_baseline)
                .await?;
            *before = (canary, baseline);
        }
        store.read_figures(&redis_key).await
    }

    async fn judge(&self, plan: &RunningPlan, leader: bool, canary: &Figures, baseline: &Figures) {
        let now = unix_ms();
        let in_step = Duration::from_millis(now.saturating_sub(plan.state.step_started_ms));
        let Judgement { verdict, tests } = judge(&plan.config, in_step, canary, baseline);
        let figures = StepFigures {
            canary: canary.summary(),
            baseline: baseline.summary(),
            tests,
        };
        let text = match &verdict {
            Verdict::Wait(why) => format!("waiting: {why}"),
            Verdict::Pass(why) => format!("passed: {why}"),
            Verdict::Fail(why) => format!("failed: {why}"),
        };
        self.controller.report(
            &plan.route,
            &plan.rule,
            PlanReport {
                at_ms: now,
                step_started_ms: plan.state.step_started_ms,
                figures: figures.clone(),
                verdict: text,
            },
        );
        if !leader || matches!(verdict, Verdict::Wait(_)) {
            return;
        }
        let step = (plan.state.step, plan.state.step_started_ms);
        if let Err(e) = self
            .controller
            .plan_verdict(&plan.route, &plan.rule, step, &verdict, figures)
            .await
        {
            // A conflict: another node moved the plan first; anything else is retried next tick.
            if e.kind == ErrorKind::Conflict {
                debug!("plan {}/{}: {e}", plan.route, plan.rule);
            } else {
                warn!("plan {}/{}: cannot act: {e}", plan.route, plan.rule);
            }
        }
    }
}

/// Names one step of one plan (a resumed step is a new window).
fn step_key(plan: &RunningPlan) -> String {
    format!(
        "{}\n{}\n{}",
        plan.route, plan.rule, plan.state.step_started_ms
    )
}

#[async_trait]
impl BackgroundService for RolloutService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut counted = Counted::new();
        let mut was_leader = false;
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.tick(&mut counted, &mut was_leader).await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
