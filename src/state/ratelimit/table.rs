//! A fixed-capacity key table for `governor`'s GCRA: the state store behind each local rate
//! limit. Its memory is allocated once (`SLOTS` × 16 bytes) and never grows, whatever number of
//! keys clients send: a key flood evicts old keys instead of adding memory.

use std::sync::atomic::{AtomicU64, Ordering};

use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, StateStore};

/// Slots per table: 65,536 keys (1 MiB) per limit. Slots come in pairs (two-way buckets).
pub(crate) const SLOTS: usize = 1 << 16;

/// One key's GCRA state (its theoretical arrival time, kept by `governor`) and the tag of the
/// key that owns it (0: never used).
#[derive(Default)]
struct Slot {
    tag: AtomicU64,
    state: InMemoryState,
}

/// Keys (already hashed to a `u64`) → GCRA state, in `slots.len() / 2` two-way buckets. A new
/// key takes the bucket's slot with the older arrival time (an unused or fully replenished
/// key loses nothing by it); the key it evicts starts afresh if it comes back, so eviction can
/// only admit more, never refuse a request wrongly. Every step is an atomic load, store or
/// compare-and-swap: no lock.
/// A clone shares the slots (so `/status` can count keys while `governor` owns the store).
#[derive(Clone)]
pub(crate) struct KeyTable {
    slots: std::sync::Arc<[Slot]>,
}

impl KeyTable {
    /// A table of `slots` slots (a power of two, at least 2).
    pub(crate) fn new(slots: usize) -> KeyTable {
        debug_assert!(slots.is_power_of_two() && slots >= 2);
        KeyTable {
            slots: (0..slots).map(|_| Slot::default()).collect(),
        }
    }

    /// Keys that hold a slot (for `/status`): a scan, not for the request path.
    pub(crate) fn keys_in_use(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.tag.load(Ordering::Relaxed) != 0)
            .count()
    }
}

impl Default for KeyTable {
    fn default() -> Self {
        KeyTable::new(SLOTS)
    }
}

/// A slot's arrival time, read without changing it (0: unused).
fn arrival(slot: &Slot) -> u64 {
    let read = slot
        .state
        .measure_and_replace(&NotKeyed::NonKey, Err::<((), Nanos), _>);
    read.err().flatten().map_or(0, Nanos::as_u64)
}

impl StateStore for KeyTable {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let tag = *key | 1;
        let first = (*key as usize) & (self.slots.len() - 1) & !1;
        let (a, b) = (&self.slots[first], &self.slots[first + 1]);
        for slot in [a, b] {
            if slot.tag.load(Ordering::Acquire) == tag {
                return slot.state.measure_and_replace(&NotKeyed::NonKey, f);
            }
        }
        let victim = if arrival(a) <= arrival(b) { a } else { b };
        victim.tag.store(tag, Ordering::Release);
        // A new key: whatever the evicted key left is not its history.
        victim
            .state
            .measure_and_replace(&NotKeyed::NonKey, |_| f(None))
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;
    use governor::middleware::NoOpMiddleware;
    use governor::{Quota, RateLimiter};

    use super::*;

    type Limiter = RateLimiter<u64, KeyTable, FakeRelativeClock, NoOpMiddleware<Nanos>>;

    fn limiter(table: &KeyTable) -> Limiter {
        let quota = Quota::with_period(Duration::from_millis(100))
            .expect("period")
            .allow_burst(NonZeroU32::new(3).expect("3"));
        RateLimiter::new(quota, table.clone(), FakeRelativeClock::default())
    }

    /// GCRA through the table: `burst` at once, then one per period, each key on its own.
    #[test]
    fn keys_are_limited_separately() {
        let l = limiter(&KeyTable::new(64));
        for _ in 0..3 {
            assert!(l.check_key(&7).is_ok());
        }
        assert!(l.check_key(&7).is_err(), "the fourth at once is refused");
        assert!(l.check_key(&8).is_ok(), "another key has its own burst");
        l.clock().advance(Duration::from_millis(100));
        assert!(l.check_key(&7).is_ok(), "one more after one period");
        assert!(l.check_key(&7).is_err());
    }

    /// A flood of new keys never grows the table; the keys it evicts start afresh (more is
    /// admitted, nothing wrongly refused).
    #[test]
    fn a_key_flood_stays_in_the_table() {
        let table = KeyTable::new(16);
        let l = limiter(&table);
        for _ in 0..3 {
            assert!(l.check_key(&1).is_ok());
        }
        assert!(l.check_key(&1).is_err());
        for key in 2..10_000u64 {
            let key = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(l.check_key(&key).is_ok(), "a new key is admitted");
        }
        assert_eq!(table.slots.len(), 16);
        assert_eq!(table.keys_in_use(), 16);
    }
}
