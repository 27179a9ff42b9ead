//! The statistics a verdict rests on, as pure functions: the normal distribution's upper tail,
//! a one-sided test of two proportions (or of one proportion against a limit), and the
//! Mann–Whitney U rank test computed from two latency histograms (ties by bucket).

/// The fewest expected counts in every cell of a proportion test, and the fewest requests on
/// each side of a rank test, for the normal approximation to be trusted: with fewer, a test
/// never calls a difference significant (a broken limit waits for more requests). Two slow
/// requests among 63, against a baseline where 0.3% are that slow, would read as z ≈ 3.9 to
/// the z-test, while the exact chance of it is about 2%.
pub(crate) const MIN_EXPECTED: f64 = 5.0;

/// A one-sided test's outcome: the statistic as a standard normal `z`, its p-value (the
/// chance of a `z` at least this large if the canary were no worse), and whether the samples
/// are large enough for the normal approximation behind both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tested {
    pub(crate) z: f64,
    pub(crate) p_value: f64,
    pub(crate) enough: bool,
}

impl Tested {
    fn of(z: f64, enough: bool) -> Tested {
        Tested {
            z,
            p_value: upper_tail(z),
            enough,
        }
    }

    /// Whether the test rejects "no worse" at `confidence` (0.999: a fair sample is called
    /// worse at most once in a thousand); never on too few samples.
    pub(crate) fn significant(&self, confidence: f64) -> bool {
        self.enough && self.p_value <= 1.0 - confidence
    }
}

/// P(Z ≥ z) for a standard normal Z, accurate to about 1e-12 absolute and well under 1e-6
/// relative even far in the tail (so a p-value of 1e-9 reads as such).
pub(crate) fn upper_tail(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    if z < 0.0 {
        return 1.0 - upper_tail(-z);
    }
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function for `x ≥ 0`: its Taylor series below 3 (where it converges
/// quickly and cancellation costs a few digits at most), its continued fraction above (where
/// the series would cancel badly and the fraction converges in a few dozen terms).
fn erfc(x: f64) -> f64 {
    if x < 3.0 {
        // erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = x;
        let mut sum = x;
        let x2 = x * x;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(x) = e^(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))),
        // evaluated from the inside out at a depth where it has converged for x ≥ 3.
        let mut tail = x;
        for k in (1..=60).rev() {
            tail = x + (k as f64 / 2.0) / tail;
        }
        (-x * x).exp() / std::f64::consts::PI.sqrt() / tail
    }
}

/// Whether the canary's share of errors (`canary_errors` of `canary_n`) is higher than the
/// baseline's: the pooled two-proportion z-test, one-sided. `None` when a side has no
/// requests. With no errors (or only errors) on both sides there is no difference: `z = 0`.
pub(crate) fn two_proportions(
    canary_errors: u64,
    canary_n: u64,
    baseline_errors: u64,
    baseline_n: u64,
) -> Option<Tested> {
    if canary_n == 0 || baseline_n == 0 {
        return None;
    }
    let (n1, n2) = (canary_n as f64, baseline_n as f64);
    let (p1, p2) = (canary_errors as f64 / n1, baseline_errors as f64 / n2);
    let pooled = (canary_errors + baseline_errors) as f64 / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let z = if se > 0.0 { (p1 - p2) / se } else { 0.0 };
    let fewest = n1.min(n2) * pooled.min(1.0 - pooled);
    Some(Tested::of(z, fewest >= MIN_EXPECTED))
}

/// Whether the canary's share of errors is above `limit` (a baseline too thin to compare with
/// counts as 0 errors, so the limit is the canary's own share): the one-sample score test, its
/// standard error taken at the limit. With a limit of 0, any error is significant (the limit
/// says no error is tolerated).
pub(crate) fn proportion_above(errors: u64, n: u64, limit: f64) -> Option<Tested> {
    if n == 0 {
        return None;
    }
    let share = errors as f64 / n as f64;
    let se = (limit * (1.0 - limit) / n as f64).sqrt();
    let z = if se > 0.0 {
        (share - limit) / se
    } else if share > limit {
        f64::INFINITY
    } else {
        0.0
    };
    let n = n as f64;
    let enough = limit <= 0.0 || n * limit.min(1.0 - limit) >= MIN_EXPECTED;
    Some(Tested::of(z, enough))
}

/// The Mann–Whitney U test of "canary latencies tend to be higher than the baseline's",
/// one-sided, from two histograms with the same buckets: requests in one bucket are ties.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RankTest {
    /// U of the canary: the pairs (canary, baseline) where the canary was slower, ties half.
    pub(crate) u: f64,
    /// `u / (n_canary × n_baseline)`: the chance that a canary request is slower than a
    /// baseline one (ties half); 0.5 when neither is slower.
    pub(crate) slower_share: f64,
    pub(crate) tested: Tested,
}

/// The rank test over `canary` and `baseline` bucket counts (`None` when a side is empty). The
/// variance is corrected for ties, `Σ(t³ − t)` over each bucket's `t` requests, and `z` has a
/// continuity correction of ½; when every request ties, `z = 0`. Trusted with at least
/// [`MIN_EXPECTED`] × 4 (20) requests on each side.
pub(crate) fn mann_whitney(canary: &[u64], baseline: &[u64]) -> Option<RankTest> {
    let n1: u64 = canary.iter().sum();
    let n2: u64 = baseline.iter().sum();
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let buckets = canary.len().max(baseline.len());
    let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0) as f64;
    let (mut u, mut below, mut ties) = (0.0, 0.0, 0.0);
    for i in 0..buckets {
        let (c, b) = (at(canary, i), at(baseline, i));
        u += c * (below + 0.5 * b);
        below += b;
        let t = c + b;
        ties += t * t * t - t;
    }
    let (n1, n2) = (n1 as f64, n2 as f64);
    let n = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let z = if variance > 0.0 {
        // The continuity correction moves U half a step towards the mean, never past it.
        let diff = u - mean;
        (diff - 0.5 * diff.signum()).abs().copysign(diff) / variance.sqrt()
    } else {
        0.0
    };
    Some(RankTest {
        u,
        slower_share: u / (n1 * n2),
        tested: Tested::of(z, n1.min(n2) >= 4.0 * MIN_EXPECTED),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    /// The tail against known values, on both sides of the switch at x = 3 (z ≈ 4.24).
    #[test]
    fn normal_tail_matches_known_values() {
        let known = [
            (0.0, 0.5),
            (1.0, 0.158_655_253_931_457),
            (1.959_963_984_540, 0.025),
            (2.326_347_874_040, 0.01),
            (3.090_232_306_168, 0.001),
            (4.0, 3.167_124_183_311_99e-5),
            (4.264_890_793_923, 1e-5),
            (5.0, 2.866_515_718_791_94e-7),
            (6.0, 9.865_876_450_377e-10),
            (8.0, 6.220_960_574_271_78e-16),
        ];
        for (z, p) in known {
            assert!(
                close(upper_tail(z), p, 1e-6),
                "z {z}: {} vs {p}",
                upper_tail(z)
            );
        }
        assert!(close(upper_tail(-1.0), 1.0 - 0.158_655_253_931_457, 1e-9));
        assert_eq!(upper_tail(f64::INFINITY), 0.0);
        assert_eq!(upper_tail(f64::NAN), 1.0);
    }

    /// Equal shares are not significant; 20% against 1% over a few hundred requests is.
    #[test]
    fn two_proportions_by_example() {
        let same = two_proportions(5, 500, 50, 5_000).expect("both sides");
        assert!(same.z.abs() < 1e-9 && !same.significant(0.99), "{same:?}");
        let worse = two_proportions(40, 200, 8, 800).expect("both sides");
        assert!(worse.significant(0.999_999), "{worse:?}");
        // The case above the constant: z reads 3.9, but 0.2 expected slow canary requests
        // are too few to trust it.
        let rare = two_proportions(2, 63, 15, 5_000).expect("both sides");
        assert!(
            rare.z > 3.5 && !rare.enough && !rare.significant(0.9),
            "{rare:?}"
        );
        let better = two_proportions(0, 200, 80, 800).expect("both sides");
        assert!(better.z < 0.0 && !better.significant(0.5), "{better:?}");
        let none = two_proportions(0, 100, 0, 100).expect("both sides");
        assert_eq!(none.z, 0.0);
        assert_eq!(two_proportions(1, 10, 0, 0), None);
    }

    /// The canary's own share against a limit: over it by chance on a few requests is not
    /// significant, far over it on many is; a limit of 0 makes any error significant.
    #[test]
    fn one_proportion_against_a_limit() {
        let few = proportion_above(30, 100, 0.01).expect("requests");
        assert!(
            !few.significant(0.9),
            "one error expected at the limit: too few: {few:?}"
        );
        let small = proportion_above(6, 500, 0.01).expect("requests");
        assert!(!small.significant(0.99), "1.2% against 1%: {small:?}");
        let large = proportion_above(60, 500, 0.01).expect("requests");
        assert!(large.significant(0.999_999), "12% against 1%: {large:?}");
        assert!(proportion_above(1, 500, 0.0)
            .expect("requests")
            .significant(0.999_999));
        assert_eq!(proportion_above(0, 500, 0.0).expect("requests").z, 0.0);
        assert_eq!(proportion_above(0, 0, 0.1), None);
    }

    /// U counts the slower pairs with ties half: against a hand count.
    #[test]
    fn mann_whitney_counts_pairs() {
        // canary: one in bucket 1, one in bucket 3; baseline: one in bucket 1, two in bucket 2.
        let canary = [0, 1, 0, 1];
        let baseline = [0, 1, 2, 0];
        let test = mann_whitney(&canary, &baseline).expect("both sides");
        // bucket 1 against (1 tie) = 0.5; bucket 3 against all three = 3.
        assert_eq!(test.u, 3.5);
        assert!(close(test.slower_share, 3.5 / 6.0, 1e-12));
        assert_eq!(mann_whitney(&[0, 0], &[1, 2]), None);
    }

    /// Every request in one bucket: all ties, no evidence either way.
    #[test]
    fn mann_whitney_all_ties() {
        let test = mann_whitney(&[500], &[5_000]).expect("both sides");
        assert_eq!(test.tested.z, 0.0);
        assert_eq!(test.slower_share, 0.5);
        assert!(!test.tested.significant(0.9));
    }
}
