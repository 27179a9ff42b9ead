//! A bounded in-memory history of how each group does on each route: every
//! [`BUCKET_SECONDS`] a sampler takes the difference of the request counters (see `figures`)
//! and keeps requests, errors, p50 and p99 for the last hour ([`SLOTS`] buckets per route and
//! group). `GET /stats/history` serves it to the web page, so no Prometheus is needed to watch
//! a canary.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::Serialize;

use super::audit::unix_ms;
use super::figures::{all_stats, Figures, StatsKey};

/// Length of one bucket.
pub(crate) const BUCKET_SECONDS: u64 = 10;
/// Buckets kept per route and group: one hour.
pub(crate) const SLOTS: usize = 360;

/// One bucket of one (route, group).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Point {
    /// When the bucket began, Unix milliseconds.
    pub(crate) start_ms: u64,
    /// How long it lasted (the live bucket: so far).
    pub(crate) seconds: f64,
    pub(crate) requests: u64,
    /// Requests answered 5xx or that their group could not serve.
    pub(crate) errors: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
}

impl Point {
    fn new(start_ms: u64, end_ms: u64, f: &Figures) -> Point {
        Point {
            start_ms,
            seconds: end_ms.saturating_sub(start_ms) as f64 / 1000.0,
            requests: f.requests,
            errors: f.errors,
            p50_ms: f.quantile_ms(50),
            p99_ms: f.quantile_ms(99),
        }
    }
}

/// One (route, group)'s buckets and the counters' reading at the last sample.
struct Series {
    points: VecDeque<Point>,
    last: Figures,
    last_ms: u64,
}

/// The history of every (route, group) that served requests.
#[derive(Default)]
pub(crate) struct History {
    series: Mutex<BTreeMap<StatsKey, Series>>,
    /// When the last sample was taken.
    last_sample_ms: Mutex<Option<u64>>,
}

/// What `GET /stats/history` serves for one (route, group): the closed buckets, oldest first,
/// and the live one since the last sample.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SeriesView {
    pub(crate) route: String,
    pub(crate) group: String,
    pub(crate) points: Vec<Point>,
    pub(crate) live: Point,
}

impl History {
    /// Closes a bucket of every series from the counters' `readings` at `now_ms`; a series
    /// keeps at most [`SLOTS`] buckets. Counters appear on their first request, so a series
    /// not seen before counted everything since the last sample.
    pub(crate) fn sample(&self, now_ms: u64, readings: Vec<(StatsKey, Figures)>) {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut last_sample = self
            .last_sample_ms
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let since = last_sample.unwrap_or(now_ms);
        for (key, reading) in readings {
            let s = series.entry(key).or_insert_with(|| Series {
                points: VecDeque::with_capacity(SLOTS),
                last: Figures::default(),
                last_ms: since,
            });
            let point = Point::new(s.last_ms, now_ms, &reading.since(&s.last));
            if s.points.len() == SLOTS {
                s.points.pop_front();
            }
            s.points.push_back(point);
            s.last = reading;
            s.last_ms = now_ms;
        }
        *last_sample = Some(now_ms);
    }

    /// Every series with its live bucket (from `readings` at `now_ms`).
    pub(crate) fn view(&self, now_ms: u64, readings: &[(StatsKey, Figures)]) -> Vec<SeriesView> {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        readings
            .iter()
            .map(|((route, group), reading)| {
                let (points, live) = match series.get(&(route.clone(), group.clone())) {
                    Some(s) => (
                        s.points.iter().cloned().collect(),
                        Point::new(s.last_ms, now_ms, &reading.since(&s.last)),
                    ),
                    // Not sampled yet: everything it counted is live.
                    None => {
                        let last = *self
                            .last_sample_ms
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        (
                            Vec::new(),
                            Point::new(last.unwrap_or(now_ms), now_ms, reading),
                        )
                    }
                };
                SeriesView {
                    route: route.clone(),
                    group: group.clone(),
                    points,
                    live,
                }
            })
            .collect()
    }
}

/// The counters of every (route, group) now.
pub(crate) fn readings() -> Vec<(StatsKey, Figures)> {
    all_stats()
        .into_iter()
        .map(|(key, stats)| (key, stats.read()))
        .collect()
}

/// Closes a bucket every [`BUCKET_SECONDS`].
pub(crate) struct HistoryService {
    history: Arc<History>,
}

impl HistoryService {
    pub(crate) fn new(history: Arc<History>) -> Self {
        HistoryService { history }
    }
}

#[async_trait]
impl BackgroundService for HistoryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticks = tokio::time::interval(Duration::from_secs(BUCKET_SECONDS));
        loop {
            tokio::select! {
                _ = ticks.tick() => self.history.sample(unix_ms(), readings()),
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::figures::{bucket_of, BUCKETS};

    fn key() -> StatsKey {
        ("web".to_string(), "canary".to_string())
    }

    #[test]
    fn buckets_hold_the_difference_between_samples() {
        let h = History::default();
        h.sample(0, vec![]);
        let other = ("web".to_string(), "stable".to_string());
        let live = h.view(4_000, &[(other.clone(), Figures::at(7, 0, 5.0))]);
        assert_eq!(
            live[0].live.requests, 7,
            "counted before its first sample: live"
        );
        assert_eq!(live[0].live.seconds, 4.0);
        h.sample(0, vec![(key(), Figures::at(100, 1, 5.0))]);
        h.sample(10_000, vec![(key(), Figures::at(300, 11, 5.0))]);
        let view = h.view(15_000, &[(key(), Figures::at(350, 11, 5.0))]);
        let s = &view[0];
        assert_eq!(
            s.points.len(),
            2,
            "a new series counted since the last sample"
        );
        assert_eq!(s.points[0].requests, 100);
        let p = &s.points[1];
        assert_eq!((p.start_ms, p.seconds), (0, 10.0));
        assert_eq!((p.requests, p.errors), (200, 10));
        assert_eq!(
            p.requests as f64 / p.seconds,
            20.0,
            "20 requests per second"
        );
        assert_eq!((s.live.start_ms, s.live.seconds), (10_000, 5.0));
        assert_eq!((s.live.requests, s.live.errors), (50, 0));
    }

    /// Adds `n` requests at `ms` milliseconds to a cumulative reading.
    fn with(mut f: Figures, n: u64, ms: f64) -> Figures {
        f.buckets.resize(BUCKETS, 0);
        f.buckets[bucket_of(ms / 1000.0)] += n;
        f.requests += n;
        f
    }

    /// A latency on a bucket's edge reads as that edge; just past it, as the next one.
    #[test]
    fn quantiles_at_bucket_edges() {
        let h = History::default();
        h.sample(0, vec![(key(), Figures::default())]);
        let skip = 1; // the empty first bucket
                      // 50 requests at exactly 2 ms (an edge), 49 at exactly 4 ms, 1 just over 4 ms.
        let first = with(with(with(Figures::default(), 50, 2.0), 49, 4.0), 1, 4.01);
        h.sample(10_000, vec![(key(), first.clone())]);
        // Then 100 requests just over 4 ms.
        let second = with(first.clone(), 100, 4.01);
        h.sample(20_000, vec![(key(), second.clone())]);
        assert!(h.view(20_000, &[]).is_empty(), "only the series asked for");
        let view = h.view(20_000, &[(key(), second)]);
        let points = &view[0].points[skip..];
        assert_eq!(points[0].p50_ms, Some(2.0), "the 50th of 100 is at 2 ms");
        assert_eq!(points[0].p99_ms, Some(4.0), "the 99th of 100 is at 4 ms");
        let next_edge = 2f64.powf(9.0 / 4.0);
        assert_eq!(points[1].requests, 100);
        assert_eq!(
            points[1].p50_ms,
            Some(next_edge),
            "just past 4 ms: the next edge"
        );
        assert_eq!(points[1].p99_ms, Some(next_edge));
        assert_eq!(view[0].live.requests, 0);
        assert_eq!(view[0].live.p99_ms, None, "no requests, no quantile");
    }

    #[test]
    fn an_hour_is_kept_and_no_more() {
        let h = History::default();
        for i in 0..(SLOTS as u64 + 50) {
            h.sample(i * 10_000, vec![(key(), Figures::at(i * 10, 0, 1.0))]);
        }
        let view = h.view(0, &[(key(), Figures::default())]);
        let points = &view[0].points;
        assert_eq!(points.len(), SLOTS);
        assert_eq!(
            points[0].start_ms,
            49 * 10_000,
            "409 closed, the oldest 49 dropped"
        );
        assert!(points.iter().all(|p| p.requests == 10));
        let series = h.series.lock().expect("lock");
        assert!(
            series[&key()].points.capacity() <= SLOTS + 1,
            "bounded memory"
        );
    }
}
