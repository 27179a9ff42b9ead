//! Percentage rules' arithmetic: the validated share ([`Percent`]) and the fixed, documented
//! hash that puts each user in a stable bucket.

use super::RoutingError;

/// Parts-per-million scale of percentage rules: `percent: 0.5` is 5_000 ppm.
pub(crate) const PERCENT_SCALE_PPM: u32 = 1_000_000;

/// A share of users, validated once (0–100, decimals allowed) and kept in parts per million.
/// The YAML, the admin API and the state file all go through [`Percent::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Deserialize)]
#[serde(try_from = "f64")]
pub struct Percent(u32);

impl Percent {
    /// Validates `percent` (0–100, `-0` read as 0) at the resolution it is kept in: one part
    /// per million (0.0001 percent). A value finer than that (`1e-9`, `12.34567`) is refused
    /// rather than silently rounded — `1e-9` would otherwise become 0 and send nobody.
    pub fn new(percent: f64) -> Result<Percent, RoutingError> {
        if !(0.0..=100.0).contains(&percent) || percent.is_nan() {
            return Err(RoutingError::PercentOutOfRange(percent));
        }
        let scaled = percent * 10_000.0;
        let ppm = scaled.round();
        // The tolerance absorbs the float error of a decimal written with four places or
        // fewer (12.3457 × 10,000 is 123456.99999999999), a few thousand ulps at most.
        if (scaled - ppm).abs() > scaled * 1e-12 {
            return Err(RoutingError::PercentTooFine(percent));
        }
        Ok(Percent(ppm as u32))
    }

    /// The share in parts per million (`0..=1_000_000`).
    pub(crate) fn ppm(self) -> u32 {
        self.0
    }

    /// The share as a percentage, as the file and the API write it.
    pub(crate) fn as_f64(self) -> f64 {
        f64::from(self.0) * 100.0 / f64::from(PERCENT_SCALE_PPM)
    }

    /// Whether a user in `bucket` (see [`percent_bucket`]) is inside this share.
    pub fn includes(self, bucket: u32) -> bool {
        bucket < self.0
    }
}

impl TryFrom<f64> for Percent {
    type Error = RoutingError;
    fn try_from(percent: f64) -> Result<Self, Self::Error> {
        Percent::new(percent)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a over the concatenation of `parts`.
pub(crate) fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_OFFSET;
    for part in parts {
        for &b in *part {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    }
    hash
}

/// A user's bucket for a percentage rule, in `0..1_000_000`:
/// `FNV-1a-64(seed ++ ":" ++ user_id) mod 1_000_000`. A user is in a rule of `p` percent when
/// the bucket is below `p × 10_000`, so raising `p` only ever adds users. Fixed and documented
/// so that every node, every restart and the application's own code agree.
pub fn percent_bucket(seed: &[u8], user_id: &[u8]) -> u32 {
    // The modulus is below 2^32, so the remainder always fits.
    (fnv1a64(&[seed, b":", user_id]) % u64::from(PERCENT_SCALE_PPM)) as u32
}

/// Converts a percentage (0–100, decimals allowed) to parts per million, rounding to the nearest.
#[cfg(test)]
pub(crate) fn percent_to_ppm(percent: f64) -> Option<u32> {
    Percent::new(percent).ok().map(Percent::ppm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_edges_zero_hundred_and_half() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("u{i}")).collect();
        let share = |percent: f64| {
            let ppm = percent_to_ppm(percent).expect("in range");
            ids.iter()
                .filter(|u| percent_bucket(b"seed", u.as_bytes()) < ppm)
                .count()
        };
        assert_eq!(share(0.0), 0, "0% takes nobody");
        assert_eq!(share(100.0), ids.len(), "100% takes everybody");
        let half = share(0.5);
        assert!(
            (60..=140).contains(&half),
            "0.5% of 20k is ~100, got {half}"
        );
        let ten = share(10.0);
        assert!(
            (1_800..=2_200).contains(&ten),
            "10% of 20k within 9–11%, got {ten}"
        );
    }

    /// The same user gets the same bucket every time, and the hash is the documented one.
    #[test]
    fn percent_bucket_is_stable_and_documented() {
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(
            percent_bucket(b"seed", b"alice"),
            (fnv1a64(&[b"seed:alice"]) % 1_000_000) as u32
        );
        let first = percent_bucket(b"2026-11-release", b"user-42");
        for _ in 0..10 {
            assert_eq!(percent_bucket(b"2026-11-release", b"user-42"), first);
        }
    }

    /// Raising the percentage only adds users: everyone inside 10% is inside 20%.
    #[test]
    fn ramp_is_monotonic() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("u{i}")).collect();
        let inside = |percent: f64| -> Vec<&String> {
            let ppm = percent_to_ppm(percent).expect("in range");
            ids.iter()
                .filter(|u| percent_bucket(b"ramp", u.as_bytes()) < ppm)
                .collect()
        };
        let ten = inside(10.0);
        let twenty = inside(20.0);
        assert!(twenty.len() > ten.len());
        for u in ten {
            assert!(twenty.contains(&u), "{u} left the rollout when it grew");
        }
    }

    #[test]
    fn different_seeds_pick_different_users() {
        let ppm = percent_to_ppm(10.0).expect("in range");
        let pick = |seed: &[u8]| -> Vec<usize> {
            (0..20_000)
                .filter(|i| percent_bucket(seed, format!("u{i}").as_bytes()) < ppm)
                .collect()
        };
        let a = pick(b"release-a");
        let b = pick(b"release-b");
        let common = a.iter().filter(|i| b.binary_search(i).is_ok()).count();
        // Independent 10% samples share ~1% of users; the same seed would share all 10%.
        assert!(
            common < a.len() / 4,
            "seeds overlap too much: {common} of {}",
            a.len()
        );
    }

    /// Percentages are kept in parts per million: a finer value is refused, not rounded away.
    #[test]
    fn percent_resolution() {
        assert_eq!(percent_to_ppm(0.0001), Some(1));
        assert_eq!(percent_to_ppm(12.3457), Some(123_457));
        assert_eq!(percent_to_ppm(33.3333), Some(333_333));
        assert_eq!(percent_to_ppm(-0.0), Some(0), "-0 is 0");
        for fine in [1e-9, 1e-12, 0.00005, 12.34567, 99.99999] {
            assert_eq!(
                Percent::new(fine),
                Err(RoutingError::PercentTooFine(fine)),
                "{fine}"
            );
        }
        // Every stored share reads back through `as_f64` and is accepted again unchanged.
        for ppm in [1, 7, 333_333, 123_457, 999_999, 1_000_000] {
            let p = Percent(ppm);
            assert_eq!(Percent::new(p.as_f64()), Ok(p), "{ppm}");
        }
        assert_eq!(
            RoutingError::PercentTooFine(1e-9).to_string(),
            "0.000000001 is finer than the resolution of 0.0001 (percentages are kept in parts per million)"
        );
    }

    #[test]
    fn percent_to_ppm_bounds() {
        assert_eq!(percent_to_ppm(0.0), Some(0));
        assert_eq!(percent_to_ppm(0.5), Some(5_000));
        assert_eq!(percent_to_ppm(100.0), Some(1_000_000));
        assert_eq!(percent_to_ppm(100.1), None);
        assert_eq!(percent_to_ppm(-1.0), None);
        assert_eq!(percent_to_ppm(f64::NAN), None);
    }
}
