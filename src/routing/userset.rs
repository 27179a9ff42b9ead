//! A compact, immutable set of user ids with O(1) lookups, sized for millions of members.
//!
//! All ids live in one byte arena; an open-addressing table of `u32` indexes points into it.
//! A million 10-byte ids cost about 24 MB instead of the ~60 MB of a `HashSet<String>`.
//! Built once (from a users file or a list) and shared behind an `Arc`; a shared set is never
//! mutated. A change to a big set is a copy (a few memcpys) with the change applied: removed
//! members are marked, not moved, so a change costs O(change) after the copy.

use std::fmt;

/// Table slot meaning "empty"; occupied slots hold `member index + 1`.
const EMPTY: u32 = 0;

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The table's hash: 8 bytes at a time, then a murmur3 finaliser. Members come from the
/// operator's lists, so a fixed seed is fine: lookups of absent ids stop at the first empty
/// slot whatever they hash to.
fn table_hash(bytes: &[u8]) -> u64 {
    let mut h = MIX ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(MIX)
            .rotate_left(29);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mut word = [0u8; 8];
        word[..tail.len()].copy_from_slice(tail);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(MIX)
            .rotate_left(29);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// An immutable set of byte-string user ids.
#[derive(Clone, Default)]
pub struct UserSet {
    /// All member ids, back to back.
    arena: Vec<u8>,
    /// `ends[i]` is where member `i` ends in `arena`; it starts where member `i - 1` ends.
    ends: Vec<u32>,
    /// Open-addressing table (linear probing), a power of two in size, at most 70% full.
    slots: Vec<u32>,
    /// One bit per member, set when the member was removed after it was inserted. A removed
    /// member keeps its bytes and its table slot until the set is compacted.
    removed: Vec<u64>,
    removed_count: usize,
}

impl fmt::Debug for UserSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserSet({} users)", self.len())
    }
}

impl UserSet {
    /// Builds a set from ids; duplicates are kept once. Empty ids are ignored.
    pub fn from_ids<'a, I>(ids: I) -> Self
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let ids = ids.into_iter();
        Self::build(ids.size_hint().0, 0, ids)
    }

    /// Parses a users file: one id per line; blank lines and lines starting with `#` are
    /// skipped; surrounding white space (including a CR before LF) is trimmed.
    pub fn from_lines(text: &[u8]) -> Self {
        let lines = text.split(|&b| b == b'\n').filter_map(|line| {
            let line = line.trim_ascii();
            (!line.is_empty() && !line.starts_with(b"#")).then_some(line)
        });
        // A line count is a cheap capacity hint that avoids rehashing big files.
        let hint = text.iter().filter(|&&b| b == b'\n').count() + 1;
        Self::build(hint, text.len(), lines)
    }

    /// A set of `ids`, with room for `members` ids totalling `bytes` reserved up front and the
    /// spare given back at the end.
    fn build<'a>(members: usize, bytes: usize, ids: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut set = UserSet::with_capacity(members, bytes);
        for id in ids {
            set.insert(id);
        }
        set.shrink_to_fit();
        set
    }

    /// An empty set with room for `members` ids totalling `bytes`, to be filled with
    /// [`UserSet::insert`] before it is shared (a shared set is never changed).
    pub(crate) fn with_capacity(members: usize, bytes: usize) -> Self {
        let mut set = UserSet {
            arena: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(members),
            ..UserSet::default()
        };
        set.resize_table(members);
        set
    }

    /// Makes room for `members` more ids totalling `bytes` (exactly, so a copied big set does
    /// not double its arena for a few additions).
    pub(crate) fn reserve(&mut self, members: usize, bytes: usize) {
        self.arena.reserve_exact(bytes);
        self.ends.reserve_exact(members);
        self.resize_table(self.ends.len() + members);
    }

    /// Gives back spare capacity once building is done.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.ends.len() - self.removed_count
    }

    /// True when the set has no members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Members removed since the set was built, whose bytes and slots are still held.
    pub(crate) fn removed_members(&self) -> usize {
        self.removed_count
    }

    /// The same members without the space removed ones still hold.
    pub(crate) fn compacted(&self) -> UserSet {
        Self::build(self.len(), self.arena.len(), self.iter())
    }

    /// A copy with `remove` taken out and then `add` put in: the one way list changes are
    /// applied (admin overlay and Redis store alike). O(size) for the copy, then O(change);
    /// removed members keep their space until more than half the set is removed, then the
    /// copy is compacted.
    pub(crate) fn with_changes<'a, A, R>(&self, add: A, remove: R) -> UserSet
    where
        A: IntoIterator<Item = &'a [u8]>,
        A::IntoIter: Clone,
        R: IntoIterator<Item = &'a [u8]>,
    {
        let mut next = self.clone();
        for id in remove {
            next.remove(id);
        }
        let add = add.into_iter();
        let (members, bytes) = add.clone().fold((0, 0), |(n, b), id| (n + 1, b + id.len()));
        next.reserve(members, bytes);
        for id in add {
            next.insert(id);
        }
        if next.removed_members() > next.len() / 2 {
            next = next.compacted();
        }
        next
    }

    /// Whether `id` is a member.
    pub(crate) fn contains(&self, id: &[u8]) -> bool {
        self.find(id).is_some()
    }

    /// The index of member `id`, if it is one (removed members are skipped: an id removed and
    /// added again has a second, live entry further along its probe chain).
    fn find(&self, id: &[u8]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut pos = (table_hash(id) as usize) & mask;
        loop {
            match self.slots[pos] {
                EMPTY => return None,
                slot if self.member(slot as usize - 1) == id
                    && !self.is_removed(slot as usize - 1) =>
                {
                    return Some(slot as usize - 1)
                }
                _ => pos = (pos + 1) & mask,
            }
        }
    }

    /// Removes `id`; returns whether it was a member.
    pub(crate) fn remove(&mut self, id: &[u8]) -> bool {
        let Some(index) = self.find(id) else {
            return false;
        };
        let words = self.ends.len().div_ceil(64);
        if self.removed.len() < words {
            self.removed.resize(words, 0);
        }
        if let Some(word) = self.removed.get_mut(index / 64) {
            *word |= 1 << (index % 64);
            self.removed_count += 1;
        }
        true
    }

    fn is_removed(&self, index: usize) -> bool {
        self.removed_count > 0
            && self
                .removed
                .get(index / 64)
                .is_some_and(|word| word >> (index % 64) & 1 == 1)
    }

    /// Iterates over the members in insertion order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.ends.len())
            .filter(|&i| !self.is_removed(i))
            .map(|i| self.member(i))
    }

    /// Approximate heap bytes held by this set.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + 4 * (self.ends.capacity() + self.slots.capacity())
            + 8 * self.removed.capacity()
    }

    fn member(&self, index: usize) -> &[u8] {
        let start = if index == 0 {
            0
        } else {
            self.ends[index - 1] as usize
        };
        &self.arena[start..self.ends[index] as usize]
    }

    /// Adds `id` (ignored when empty or already present).
    pub(crate) fn insert(&mut self, id: &[u8]) {
        if id.is_empty() || self.contains(id) {
            return;
        }
        // Removed members still take their slots: the load counts every entry.
        let entries = self.ends.len() + 1;
        if entries * 10 > self.slots.len() * 7 {
            self.resize_table(entries * 2);
        }
        self.arena.extend_from_slice(id);
        // Arena offsets are u32: 4 GiB of ids is far past any sane users list.
        self.ends.push(self.arena.len() as u32);
        let index = self.ends.len() as u32;
        self.place(index);
    }

    /// Places member `index` (1-based) into the table.
    fn place(&mut self, index: u32) {
        let mask = self.slots.len() - 1;
        let mut pos = (table_hash(self.member(index as usize - 1)) as usize) & mask;
        while self.slots[pos] != EMPTY {
            pos = (pos + 1) & mask;
        }
        self.slots[pos] = index;
    }

    /// Rebuilds the table with room for `members` at under 70% load.
    fn resize_table(&mut self, members: usize) {
        let wanted = (members.max(self.ends.len()) * 10 / 7 + 1)
            .next_power_of_two()
            .max(8);
        if wanted <= self.slots.len() {
            return;
        }
        self.slots = vec![EMPTY; wanted];
        for index in 1..=self.ends.len() as u32 {
            self.place(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership() {
        let set = UserSet::from_ids([&b"alice"[..], b"bob", b"alice", b""]);
        assert_eq!(set.len(), 2);
        assert!(set.contains(b"alice"));
        assert!(set.contains(b"bob"));
        assert!(!set.contains(b"carol"));
        assert!(!set.contains(b""));
        assert!(!set.contains(b"alic"));
        assert!(!UserSet::default().contains(b"alice"));
    }

    #[test]
    fn users_file_format() {
        let text = b"# VIPs\nalice\r\n\n  bob  \n#carol\ndave";
        let set = UserSet::from_lines(text);
        let members: Vec<&[u8]> = set.iter().collect();
        assert_eq!(members, vec![&b"alice"[..], b"bob", b"dave"]);
        assert!(!set.contains(b"carol"));
        assert!(!set.contains(b"#carol"));
    }

    #[test]
    fn grows_past_its_hint() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("id{i}")).collect();
        let set = UserSet::from_ids(ids.iter().map(|s| s.as_bytes()).take(1).chain(
            // An iterator with a size hint of 0 forces growth from the minimum table.
            ids.iter().skip(1).filter(|_| true).map(|s| s.as_bytes()),
        ));
        assert_eq!(set.len(), ids.len());
        assert!(ids.iter().all(|id| set.contains(id.as_bytes())));
        assert!(!set.contains(b"id10000"));
    }

    /// Random adds and removes (re-adding removed ids included) agree with a `HashSet`.
    #[test]
    fn removes_and_re_adds_match_a_hash_set() {
        use std::collections::HashSet;
        let mut set = UserSet::from_ids(
            (0..200)
                .map(|i| format!("u{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(|s| s.as_bytes()),
        );
        let mut model: HashSet<String> = (0..200).map(|i| format!("u{i}")).collect();
        // A fixed xorshift sequence: the same operations every run.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = format!("u{}", x % 300);
            if x.is_multiple_of(3) {
                assert_eq!(set.remove(id.as_bytes()), model.remove(&id), "remove {id}");
            } else {
                set.insert(id.as_bytes());
                model.insert(id);
            }
        }
        assert_eq!(set.len(), model.len());
        for i in 0..300 {
            let id = format!("u{i}");
            assert_eq!(set.contains(id.as_bytes()), model.contains(&id), "{id}");
        }
        let members: HashSet<String> = set
            .iter()
            .map(|id| String::from_utf8(id.to_vec()).expect("utf-8"))
            .collect();
        assert_eq!(members, model);
        assert!(set.removed_members() > 0, "the sequence removed something");
        let compact = set.compacted();
        assert_eq!(compact.removed_members(), 0);
        assert_eq!(compact.len(), model.len());
        assert!(compact.iter().all(|id| set.contains(id)));
        assert!(!set.remove(b"never-there"));
    }

    #[test]
    fn reserve_keeps_a_copied_set_tight() {
        let ids: Vec<String> = (0..100_000).map(|i| format!("user{i:06}")).collect();
        let set = UserSet::from_ids(ids.iter().map(|s| s.as_bytes()));
        let mut copy = set.clone();
        copy.reserve(1, 10);
        copy.insert(b"user100000");
        assert!(copy.contains(b"user100000") && copy.contains(b"user000000"));
        assert!(
            copy.heap_bytes() < set.heap_bytes() + 64,
            "{} vs {}",
            copy.heap_bytes(),
            set.heap_bytes()
        );
    }

    #[test]
    fn million_ids_are_compact() {
        let text: String = (0..1_000_000).map(|i| format!("user{i:06}\n")).collect();
        let set = UserSet::from_lines(text.as_bytes());
        assert_eq!(set.len(), 1_000_000);
        assert!(set.contains(b"user999999"));
        assert!(!set.contains(b"user1000000"));
        // 10-byte ids: arena 10 MB + ends 4 MB + table 8 MB.
        assert!(set.heap_bytes() < 32 << 20, "{} bytes", set.heap_bytes());
    }
}
