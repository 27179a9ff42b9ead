//! Request ids: keep a client's `X-Request-Id` when it is safe to log, otherwise make a new one
//! that reveals nothing (not the process, not how many requests came before it).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-sent request id that is kept.
pub(crate) const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client-sent request id may be kept: 1..=128 bytes of `[A-Za-z0-9._:-]`, so it
/// can go into logs and headers without escaping.
pub(crate) fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// The request's id: the client's when acceptable, else a new one.
pub(crate) fn from_request(headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_REQUEST_ID) {
        Some(id) if is_acceptable(id.as_bytes()) => id.clone(),
        _ => generate(),
    }
}

/// Speck128/128 (Beaulieu et al., 2013), a 128-bit block cipher of 32 add-rotate-xor rounds:
/// a keyed permutation, so distinct counters give distinct ids, and without the key the ids
/// look random. The round keys are expanded once; a block costs about two hundred instructions.
struct Permutation {
    round_keys: [u64; 32],
}

impl Permutation {
    /// Expands the key `(l0, k0)` into the round keys.
    fn new(l0: u64, k0: u64) -> Self {
        let mut round_keys = [0u64; 32];
        let (mut l, mut k) = (l0, k0);
        for (i, slot) in round_keys.iter_mut().enumerate() {
            *slot = k;
            l = k.wrapping_add(l.rotate_right(8)) ^ i as u64;
            k = k.rotate_left(3) ^ l;
        }
        Permutation { round_keys }
    }

    /// A key drawn from the OS's randomness (through std's `RandomState`).
    fn random() -> Self {
        let key = RandomState::new();
        Self::new(key.hash_one(0u8), key.hash_one(1u8))
    }

    /// Encrypts the block `(x, y)`.
    fn apply(&self, (mut x, mut y): (u64, u64)) -> (u64, u64) {
        for &k in &self.round_keys {
            x = x.rotate_right(8).wrapping_add(y) ^ k;
            y = y.rotate_left(3) ^ x;
        }
        (x, y)
    }
}

/// A new id: 32 lower-case hex digits, a per-process counter through a keyed permutation.
/// Unique within the process (a permutation of distinct counters), unpredictable to anyone
/// without the key (so two responses say nothing about the traffic between them), and, with
/// a fresh key per process, different across processes and restarts. No allocation.
pub(crate) fn generate() -> HeaderValue {
    static PERMUTATION: OnceLock<Permutation> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let permutation = PERMUTATION.get_or_init(Permutation::random);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let (high, low) = permutation.apply((0, n));
    let mut text = [0u8; 32];
    let (first, second) = text.split_at_mut(16);
    write_hex(high, first);
    write_hex(low, second);
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Writes `value` as lower-case hex digits, most significant first, filling `out`.
fn write_hex(mut value: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn acceptable_ids() {
        assert!(is_acceptable(b"abc-123_X.y:z"));
        assert!(is_acceptable("a".repeat(128).as_bytes()));
        assert!(!is_acceptable("a".repeat(129).as_bytes()));
        assert!(!is_acceptable(b""));
        for bad in [&b"a b"[..], b"a\nb", b"a\"b", b"a/b", b"\xff"] {
            assert!(!is_acceptable(bad), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_unique_acceptable_and_reveal_no_counter() {
        let ids: Vec<HeaderValue> = (0..10_000).map(|_| generate()).collect();
        let distinct: HashSet<&HeaderValue> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "unique");
        for id in &ids {
            assert_eq!(id.len(), 32);
            assert!(is_acceptable(id.as_bytes()));
        }
        // Consecutive ids share no prefix and no fixed difference: on average half the bits
        // of two consecutive ids differ (a counter would change a few low bits).
        let value =
            |id: &HeaderValue| u128::from_str_radix(id.to_str().expect("ascii"), 16).expect("hex");
        let differing: u32 = ids
            .windows(2)
            .map(|w| (value(&w[0]) ^ value(&w[1])).count_ones())
            .sum();
        let mean = f64::from(differing) / (ids.len() - 1) as f64;
        assert!((60.0..68.0).contains(&mean), "mean differing bits {mean}");
        assert_ne!(ids[0].as_bytes()[..16], ids[1].as_bytes()[..16]);
    }

    /// The test vector of the Speck paper (Speck128/128, appendix C).
    #[test]
    fn speck_test_vector() {
        let cipher = Permutation::new(0x0f0e0d0c0b0a0908, 0x0706050403020100);
        assert_eq!(
            cipher.apply((0x6c61766975716520, 0x7469206564616d20)),
            (0xa65d985179783265, 0x7860fedf5c570d18)
        );
    }

    #[test]
    fn the_permutation_is_keyed() {
        let (a, b) = (Permutation::random(), Permutation::random());
        assert_ne!(a.apply((0, 1)), b.apply((0, 1)));
        assert_eq!(a.apply((0, 1)), a.apply((0, 1)));
        assert_ne!(a.apply((0, 1)), a.apply((0, 2)));
    }
}
