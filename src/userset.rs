//! A compact, immutable set of user ids with O(1) lookups, sized for millions of members.
//!
//! All ids live in one byte arena; an open-addressing table of `u32` indexes points into it.
//! A million 10-byte ids cost about 24 MB instead of the ~60 MB of a `HashSet<String>`.
//! Built once (from a users file or a list) and shared behind an `Arc`; never mutated.

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
        let mut set = UserSet::with_capacity(ids.size_hint().0, 0);
        for id in ids {
            set.insert(id);
        }
        set.shrink_to_fit();
        set
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
        let mut set = UserSet::with_capacity(hint, text.len());
        for id in lines {
            set.insert(id);
        }
        set.shrink_to_fit();
        set
    }

    /// An empty set with room for `members` ids totalling `bytes`, to be filled with
    /// [`UserSet::insert`] before it is shared (a shared set is never changed).
    pub fn with_capacity(members: usize, bytes: usize) -> Self {
        let mut set = UserSet {
            arena: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(members),
            slots: Vec::new(),
        };
        set.resize_table(members);
        set
    }

    /// Gives back spare capacity once building is done.
    pub fn shrink_to_fit(&mut self) {
        self.arena.shrink_to_fit();
        self.ends.shrink_to_fit();
    }

    /// Bytes of all member ids together.
    pub fn id_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when the set has no members.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: &[u8]) -> bool {
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut pos = (table_hash(id) as usize) & mask;
        loop {
            match self.slots[pos] {
                EMPTY => return false,
                slot if self.member(slot as usize - 1) == id => return true,
                _ => pos = (pos + 1) & mask,
            }
        }
    }

    /// Iterates over the members in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.member(i))
    }

    /// Approximate heap bytes held by this set.
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + 4 * (self.ends.capacity() + self.slots.capacity())
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
    pub fn insert(&mut self, id: &[u8]) {
        if id.is_empty() || self.contains(id) {
            return;
        }
        if (self.len() + 1) * 10 > self.slots.len() * 7 {
            self.resize_table((self.len() + 1) * 2);
        }
        self.arena.extend_from_slice(id);
        // Arena offsets are u32: 4 GiB of ids is far past any sane users list.
        self.ends.push(self.arena.len() as u32);
        let index = self.len() as u32;
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
        let wanted = (members.max(self.len()) * 10 / 7 + 1)
            .next_power_of_two()
            .max(8);
        if wanted <= self.slots.len() {
            return;
        }
        self.slots = vec![EMPTY; wanted];
        for index in 1..=self.len() as u32 {
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
