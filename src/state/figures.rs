//! What a rollout plan judges on: per route and group, the requests, the 5xx answers and a
//! latency histogram, counted with atomics on the request path and compared as differences
//! between two readings ([`Figures`]).
//!
//! The histogram has fixed buckets, the same on every node, so nodes can add their buckets
//! together (in Redis) and a p99 can be read from the sum: bucket `i` holds latencies up to
//! `1 ms × 2^(i/4)`, the last one everything above ~2.9 min. A p99 is read as its bucket's upper
//! edge, so two p99s compare to within a factor of 2^(1/4) ≈ 1.19, and nothing is faster
//! than 1 ms (sub-millisecond noise cannot make a ratio).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use serde::{Deserialize, Serialize};

/// Number of latency buckets.
pub(crate) const BUCKETS: usize = 72;

/// The upper edge of bucket `i`, in milliseconds (the last bucket has none).
pub(crate) fn bucket_upper_ms(i: usize) -> f64 {
    2f64.powf(i as f64 / 4.0)
}

/// The bucket of a latency.
pub(crate) fn bucket_of(seconds: f64) -> usize {
    let ms = seconds * 1000.0;
    if ms.is_nan() || ms <= 1.0 {
        return 0;
    }
    // The smallest i with ms <= 2^(i/4).
    let i = (4.0 * ms.log2()).ceil();
    (i as usize).min(BUCKETS - 1)
}

/// Counters of one (route, group), shared by every state built while the process runs so a
/// reload or an admin change does not reset them.
pub(crate) struct GroupStats {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl GroupStats {
    fn new() -> Self {
        GroupStats {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one finished request; `error`: a 5xx, or a request its group could not serve.
    pub(crate) fn record(&self, error: bool, seconds: f64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.buckets[bucket_of(seconds)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub(crate) fn read(&self) -> Figures {
        Figures {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// (route, group).
pub(crate) type StatsKey = (String, String);

static STATS: LazyLock<Mutex<HashMap<StatsKey, Arc<GroupStats>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Every (route, group) counted so far, with its counters.
pub(crate) fn all_stats() -> Vec<(StatsKey, Arc<GroupStats>)> {
    let stats = STATS.lock().unwrap_or_else(|p| p.into_inner());
    stats.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The counters of `group` on `route` (made on first use, then the same for the process).
pub(crate) fn group_stats(route: &str, group: &str) -> Arc<GroupStats> {
    let mut stats = STATS.lock().unwrap_or_else(|p| p.into_inner());
    stats
        .entry((route.to_string(), group.to_string()))
        .or_insert_with(|| Arc::new(GroupStats::new()))
        .clone()
}

/// Counts of one group over some span: requests, errors and the latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Figures {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// `BUCKETS` counts (empty when there were no requests).
    #[serde(default)]
    pub(crate) buckets: Vec<u64>,
}

impl Figures {
    /// What was counted between `earlier` and `self` (a reading minus an older one).
    pub(crate) fn since(&self, earlier: &Figures) -> Figures {
        Figures {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            buckets: (0..self.buckets.len())
                .map(|i| {
                    let before = earlier.buckets.get(i).copied().unwrap_or(0);
                    self.buckets[i].saturating_sub(before)
                })
                .collect(),
        }
    }

    /// Adds another node's counts.
    #[cfg(test)]
    pub(crate) fn add(&mut self, other: &Figures) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.requests == 0 && self.errors == 0 && self.buckets.iter().all(|&b| b == 0)
    }

    /// The share of requests that failed (0 with no requests).
    pub(crate) fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The 99th percentile latency in milliseconds (see [`Figures::quantile_ms`]).
    pub(crate) fn p99_ms(&self) -> Option<f64> {
        self.quantile_ms(99)
    }

    /// The `percent`th percentile latency in milliseconds, as the upper edge of the bucket that
    /// holds it (`None` with no requests; the last bucket reads as its lower edge).
    pub(crate) fn quantile_ms(&self, percent: u64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // The smallest bucket by which at least `percent`% of requests are counted.
        let rank = (total * percent).div_ceil(100).max(1);
        let mut seen = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_upper_ms(i.min(BUCKETS - 2)));
            }
        }
        Some(bucket_upper_ms(BUCKETS - 2))
    }

    /// The median latency in milliseconds, read between its bucket's edges (log-linear, by
    /// where the middle request falls among the bucket's requests), so medians compare finer
    /// than the 19% of a bucket; 1 ms when it lies in the first bucket (`None` with no requests).
    pub(crate) fn median_ms(&self) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let middle = total as f64 / 2.0;
        let mut seen = 0.0;
        for (i, &count) in self.buckets.iter().enumerate() {
            let count = count as f64;
            if count > 0.0 && seen + count >= middle {
                if i == 0 {
                    return Some(1.0);
                }
                let fraction = ((middle - seen) / count).clamp(0.0, 1.0);
                let position = if i >= BUCKETS - 1 { 0.0 } else { fraction };
                return Some(2f64.powf((i as f64 - 1.0 + position) / 4.0));
            }
            seen += count;
        }
        Some(bucket_upper_ms(BUCKETS - 2))
    }

    /// `requests` requests, `errors` of them failed, every one taking `ms` milliseconds (a
    /// fixture for the tests of what reads figures).
    #[cfg(test)]
    pub(crate) fn at(requests: u64, errors: u64, ms: f64) -> Figures {
        let mut buckets = vec![0; BUCKETS];
        buckets[bucket_of(ms / 1000.0)] = requests;
        Figures {
            requests,
            errors,
            buckets,
        }
    }

    /// What the status, the log and the audit trail show of these figures.
    pub(crate) fn summary(&self) -> FigureSummary {
        FigureSummary {
            requests: self.requests,
            errors: self.errors,
            error_rate: self.error_rate(),
            p99_ms: self.p99_ms(),
            median_ms: self.median_ms(),
        }
    }
}

/// A step's figures for one group, as shown (no histogram).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FigureSummary {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) error_rate: f64,
    pub(crate) p99_ms: Option<f64>,
    /// Read between bucket edges (see [`Figures::median_ms`]).
    #[serde(default)]
    pub(crate) median_ms: Option<f64>,
}

/// The canary's and the baseline's figures over a step, and the tests judged on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepFigures {
    pub(crate) canary: FigureSummary,
    pub(crate) baseline: FigureSummary,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tests: Vec<TestFigures>,
}

/// One statistical check of a step, as shown in `/status`, the audit trail and the log: what
/// it compares, on how many requests, the statistic, the p-value, the confidence asked and the
/// effect against its limit, and what it decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TestFigures {
    /// `errors`, `latency_shift` or `latency_tail`.
    pub(crate) check: String,
    /// `two_proportion_z`, `one_proportion_z` or `mann_whitney_u`.
    pub(crate) test: String,
    pub(crate) canary_n: u64,
    pub(crate) baseline_n: u64,
    /// The test's statistic (U for the rank test), and its standard normal z.
    pub(crate) statistic: f64,
    pub(crate) z: f64,
    /// One-sided: the chance of a result this bad if the canary were no worse.
    pub(crate) p_value: f64,
    pub(crate) confidence: f64,
    /// The measured effect (error points, median ratio, p99 ratio) and its limit.
    pub(crate) effect: f64,
    pub(crate) limit: f64,
    /// Whether the samples are large enough to trust the test (else it is never significant).
    pub(crate) enough: bool,
    /// `pass`, `wait` (over the limit but not yet significant) or `fail`.
    pub(crate) decision: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bucket edges: 1 ms and below is bucket 0; each bucket holds up to 2^(1/4) times the one
    /// before; a latency on an edge belongs to the bucket that ends there.
    #[test]
    fn buckets_at_their_edges() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(0.000_3), 0);
        assert_eq!(bucket_of(0.001), 0);
        assert_eq!(bucket_of(0.001_01), 1);
        assert_eq!(bucket_of(0.002), 4, "2 ms is the upper edge of bucket 4");
        assert_eq!(bucket_of(0.002_001), 5);
        assert_eq!(bucket_of(1e9), BUCKETS - 1);
        assert_eq!(bucket_of(f64::NAN), 0);
        for i in 1..BUCKETS - 1 {
            let edge = bucket_upper_ms(i) / 1000.0;
            assert_eq!(bucket_of(edge * 0.999_999), i, "just below edge {i}");
            assert_eq!(bucket_of(edge * 1.000_001), i + 1, "just above edge {i}");
        }
    }

    #[test]
    fn p99_reads_the_bucket_holding_the_99th_percentile() {
        let stats = GroupStats::new();
        for _ in 0..990 {
            stats.record(false, 0.0005);
        }
        assert_eq!(stats.read().p99_ms(), Some(1.0), "990 of 1000 at ≤1 ms");
        for _ in 0..10 {
            stats.record(true, 0.1);
        }
        let f = stats.read();
        assert_eq!(
            f.p99_ms(),
            Some(1.0),
            "the 990th of 1,000 is the 99th percentile"
        );
        stats.record(true, 0.1);
        let f2 = stats.read();
        let p99 = f2.p99_ms().expect("requests");
        assert!((100.0..=120.0).contains(&p99), "{p99}");
        assert_eq!(f2.errors, 11);
        assert!((f2.error_rate() - 11.0 / 1001.0).abs() < 1e-12);
        assert_eq!(Figures::default().p99_ms(), None);
        assert_eq!(Figures::default().error_rate(), 0.0);
    }

    #[test]
    fn differences_and_sums() {
        let stats = GroupStats::new();
        stats.record(false, 0.003);
        let before = stats.read();
        stats.record(true, 0.05);
        stats.record(false, 0.05);
        let step = stats.read().since(&before);
        assert_eq!((step.requests, step.errors), (2, 1));
        assert_eq!(step.buckets.iter().sum::<u64>(), 2);
        assert_eq!(step.buckets[bucket_of(0.05)], 2);
        let mut total = Figures::default();
        total.add(&step);
        total.add(&step);
        assert_eq!((total.requests, total.errors), (4, 2));
        assert_eq!(total.buckets[bucket_of(0.05)], 4);
        assert!(Figures::default().is_empty() && !total.is_empty());
        assert!(before.since(&before).is_empty());
    }

    #[test]
    fn stats_are_shared_by_route_and_group() {
        let a = group_stats("figures-test", "canary");
        let b = group_stats("figures-test", "canary");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &group_stats("figures-test", "stable")));
    }
}
