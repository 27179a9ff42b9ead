//! Active health checks (and the lookups of servers given by name) as one background service.
//! Each pool's checks run as a task that
//! lives as long as the pool: a reload or an admin change that keeps a group's settings keeps
//! its pool (and so its task, its timing and its servers' health); a new or changed group gets
//! a new task, and a group that is gone has its task stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::info;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::task::JoinHandle;

use super::Pool;

/// Where the checker finds the pools now in service (the live state's, read on each poll).
pub(crate) type PoolSource = Arc<dyn Fn() -> Vec<Arc<Pool>> + Send + Sync>;

/// Background service that runs every pool's health checks at its group's interval.
pub(crate) struct HealthChecker {
    pools: PoolSource,
}

impl HealthChecker {
    pub(crate) fn new(pools: PoolSource) -> Self {
        HealthChecker { pools }
    }
}

/// How often the checker looks for pools swapped in or out.
const POOL_POLL: Duration = Duration::from_millis(250);

/// A running pool's check task. The pool is held so its address, the map's key, stays unique.
struct Running {
    _pool: Arc<Pool>,
    /// The health checks, then the name lookups (each when the group has them).
    tasks: Vec<JoinHandle<()>>,
}

/// Brings `running` in line with `pools`: starts tasks for new pools, stops those of pools that
/// are gone, leaves the others alone. Returns whether anything changed.
fn reconcile(running: &mut HashMap<usize, Running>, pools: &[Arc<Pool>]) -> bool {
    let key = |pool: &Arc<Pool>| Arc::as_ptr(pool) as usize;
    let before = running.len();
    let mut stopped = 0;
    running.retain(|id, r| {
        let keep = pools.iter().any(|p| key(p) == *id);
        if !keep {
            r.tasks.iter().for_each(JoinHandle::abort);
            stopped += 1;
        }
        keep
    });
    let mut started = 0;
    for pool in pools {
        let interval = pool.config.health_check.as_ref().map(|hc| hc.interval);
        if interval.is_none() && !pool.has_names() {
            continue;
        }
        running.entry(key(pool)).or_insert_with(|| {
            started += 1;
            let mut tasks = Vec::new();
            if let Some(interval) = interval {
                let checked = pool.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        checked.run_health_check().await;
                        tokio::time::sleep(interval).await;
                    }
                }));
            }
            if pool.has_names() {
                let resolved = pool.clone();
                tasks.push(tokio::spawn(async move { resolved.run_resolver().await }));
            }
            Running {
                _pool: pool.clone(),
                tasks,
            }
        });
    }
    let changed = started > 0 || stopped > 0;
    if changed {
        info!(
            "health checks: {started} started, {stopped} stopped, {} running (was {before})",
            running.len()
        );
    }
    changed
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut running: HashMap<usize, Running> = HashMap::new();
        loop {
            reconcile(&mut running, &(self.pools)());
            tokio::select! {
                _ = tokio::time::sleep(POOL_POLL) => {}
                _ = shutdown.changed() => break,
            }
        }
        running
            .values()
            .for_each(|r| r.tasks.iter().for_each(JoinHandle::abort));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstreams::{GroupConfig, HealthCheckConfig, HealthProbe};

    fn pool(port: u16) -> Arc<Pool> {
        Arc::new(Pool::new(GroupConfig {
            health_check: Some(HealthCheckConfig {
                probe: HealthProbe::Tcp,
                interval: Duration::from_secs(3600),
                timeout: Duration::from_millis(100),
                rise: 1,
                fall: 1,
            }),
            ..GroupConfig::for_test(&format!("g{port}"), &[port])
        }))
    }

    /// A pool that stays in service keeps its task; new pools get one; gone pools lose theirs.
    #[tokio::test]
    async fn tasks_follow_pools_not_state_swaps() {
        let (a, b, c) = (pool(1), pool(2), pool(3));
        let mut running = HashMap::new();
        assert!(reconcile(&mut running, &[a.clone(), b.clone()]));
        let task_a = running[&(Arc::as_ptr(&a) as usize)].tasks[0].id();
        assert!(
            !reconcile(&mut running, &[a.clone(), b.clone()]),
            "same pools: nothing restarts"
        );
        assert!(reconcile(&mut running, &[a.clone(), c.clone()]));
        assert_eq!(running.len(), 2);
        assert_eq!(
            running[&(Arc::as_ptr(&a) as usize)].tasks[0].id(),
            task_a,
            "the kept pool's task is the same task"
        );
        assert!(!running.contains_key(&(Arc::as_ptr(&b) as usize)));
        running
            .values()
            .for_each(|r| r.tasks.iter().for_each(JoinHandle::abort));
    }
}
