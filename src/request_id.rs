//! Request ids: keep a client's `X-Request-Id` when it is safe to log, otherwise make a new one.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::HeaderValue;

/// Longest client-sent request id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a client-sent request id may be kept: 1..=128 bytes of `[A-Za-z0-9._:-]`, so it
/// can go into logs and headers without escaping.
pub fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A new id, unique across processes and restarts: 32 lower-case hex digits, a random 64-bit
/// prefix chosen once per process followed by a per-process counter. Written by hand rather
/// than with `format!`, which costs more than the rest of the request id handling together.
pub fn generate() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS's randomness; hashing the pid and time adds no
    // dependency and keeps two processes started together apart.
    let prefix = *PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        RandomState::new().hash_one((std::process::id(), nanos))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut text = [0u8; 32];
    let (high, low) = text.split_at_mut(16);
    write_hex(prefix, high);
    write_hex(n, low);
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
    fn generated_ids_are_unique_and_acceptable() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(is_acceptable(a.as_bytes()));
        // The counter is the low half: consecutive ids differ by one there.
        let counter = |id: &HeaderValue| u64::from_str_radix(&id.to_str().unwrap()[16..], 16);
        assert_eq!(counter(&b).unwrap(), counter(&a).unwrap() + 1);
        assert_eq!(a.as_bytes()[..16], b.as_bytes()[..16]);
    }
}
