//! The credentials a route has verified, so that bcrypt's cost (tens of milliseconds by
//! design) is paid once per user and password, not per request.
//!
//! Bounded and lock-free: a fixed table of [`SLOTS`] slots, each an `ArcSwapOption` holding
//! one digest. A lookup is one atomic load and a constant-time compare; an insert (after a
//! successful slow check only, so wrong passwords never fill it) replaces whatever held the
//! slot. The digest is HMAC-SHA-256 of `user:password` under a key drawn at random for each
//! table, so neither the password nor an unsalted hash of it is kept. A table lives as long
//! as the configuration it was loaded with: a reload (which re-reads the htpasswd file)
//! starts an empty one.

use std::hash::BuildHasher;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Slots in a table: a power of two. Verified pairs beyond this share slots, the later
/// replacing the earlier, which then pays the slow check once more.
pub(crate) const SLOTS: usize = 1024;

/// HMAC-SHA-256 of a `user:password` under the table's key.
pub(crate) type CredentialDigest = [u8; 32];

/// A bounded table of verified credentials (see the module doc).
pub(crate) struct VerifiedCache {
    key: [u8; 32],
    slots: Box<[ArcSwapOption<CredentialDigest>]>,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifiedCache")
    }
}

impl VerifiedCache {
    /// An empty table with a fresh random key (from the OS's randomness, through std's
    /// `RandomState`).
    pub(crate) fn new() -> Self {
        let mut key = [0u8; 32];
        for (i, chunk) in key.chunks_mut(8).enumerate() {
            let part = std::collections::hash_map::RandomState::new().hash_one(i);
            chunk.copy_from_slice(&part.to_le_bytes());
        }
        VerifiedCache {
            key,
            slots: (0..SLOTS).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    /// The digest of a decoded `user:password`.
    pub(crate) fn digest(&self, pair: &[u8]) -> CredentialDigest {
        // A key of any length is accepted by HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(pair);
        mac.finalize().into_bytes().into()
    }

    fn slot(&self, digest: &CredentialDigest) -> &ArcSwapOption<CredentialDigest> {
        let index = usize::from(u16::from_le_bytes([digest[0], digest[1]])) % SLOTS;
        &self.slots[index]
    }

    /// Whether these credentials were verified before.
    pub(crate) fn contains(&self, digest: &CredentialDigest) -> bool {
        self.slot(digest)
            .load()
            .as_deref()
            .is_some_and(|held| bool::from(held.ct_eq(digest)))
    }

    /// Records verified credentials.
    pub(crate) fn insert(&self, digest: &CredentialDigest) {
        self.slot(digest).store(Some(Arc::new(*digest)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_pairs_are_found_and_others_are_not() {
        let cache = VerifiedCache::new();
        let alice = cache.digest(b"alice:pw");
        assert!(!cache.contains(&alice), "empty at first");
        cache.insert(&alice);
        assert!(cache.contains(&alice));
        assert!(!cache.contains(&cache.digest(b"alice:pW")));
        assert!(!cache.contains(&cache.digest(b"alic:epw")));
    }

    /// The digest is keyed: two tables digest the same pair differently, so nothing computed
    /// outside the process matches an entry.
    #[test]
    fn digests_are_keyed_per_table() {
        let (a, b) = (VerifiedCache::new(), VerifiedCache::new());
        assert_ne!(a.digest(b"alice:pw"), b.digest(b"alice:pw"));
        assert_eq!(a.digest(b"alice:pw"), a.digest(b"alice:pw"));
    }

    /// However many pairs are verified, the table holds at most `SLOTS` of them.
    #[test]
    fn the_table_is_bounded() {
        let cache = VerifiedCache::new();
        let digests: Vec<_> = (0..4 * SLOTS)
            .map(|i| cache.digest(format!("user{i}:pw").as_bytes()))
            .collect();
        digests.iter().for_each(|d| cache.insert(d));
        let held = digests.iter().filter(|d| cache.contains(d)).count();
        assert!(held <= SLOTS, "{held} held");
        assert!(
            digests[4 * SLOTS - 1..].iter().all(|d| cache.contains(d)),
            "the latest is held"
        );
    }
}
