//! The skiplist: nodes in the arena, linked by `u32` offsets, inserted lock-free.
//!
//! A node at offset `n` (8-aligned):
//!
//! | offset | size | field |
//! |---|---|---|
//! | n | 8 | trailer: `seq << 8 | kind` |
//! | n+8 | 4 | value length |
//! | n+12 | 2 | key length |
//! | n+14 | 1 | height |
//! | n+15 | 1 | padding |
//! | n+16 | 8 per level | tower: a link to the next node at each level (see below) |
//! | then | key length | user key |
//! | then | value length | value |
//!
//! Order: user key ascending, then sequence number descending (newest first).
//!
//! A link is a `u64`: the next node's offset in the low 32 bits (0 = none) and the next node's
//! first four key bytes (zero-padded, big-endian) in the high 32 bits. A search can then often decide that the
//! next node is past its target without touching that node: one cache miss fewer per level.

use std::cmp::Ordering as CmpOrdering;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::arena::Arena;
use crate::error::{Error, Result};

/// The tallest tower. With a branching factor of 2 this indexes 2^20 (1M) entries at full
/// speed and degrades gently beyond.
const HEIGHT_MAX: usize = 20;
const HEADER_BYTES: u32 = 16;
/// The smallest arena: room for the head node's full tower and a little more.
const CAPACITY_BYTES_MIN: usize = 4096;
/// The longest user key (its length is stored in 16 bits).
pub const KEY_BYTES_MAX: usize = u16::MAX as usize;
/// The largest sequence number (it shares a `u64` with the kind byte).
pub const SEQ_MAX: u64 = (1 << 56) - 1;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// A tombstone: the key was deleted at this sequence number.
    Delete = 0,
    /// A value.
    Put = 1,
}

impl ValueKind {
    fn from_byte(b: u8) -> Self {
        if b == 0 {
            ValueKind::Delete
        } else {
            ValueKind::Put
        }
    }
}

/// One version of a key, borrowed from the memtable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The user key.
    pub user_key: &'a [u8],
    /// The sequence number of this version.
    pub seq: u64,
    /// Put or delete.
    pub kind: ValueKind,
    /// The value (empty for a delete).
    pub value: &'a [u8],
}

/// A concurrent, ordered, multi-version map from user keys to values, in one arena.
///
/// Inserts are lock-free; reads never block and never see a half-inserted entry; memory is
/// freed all at once when the memtable is dropped (after the LSM has flushed it). The arena has
/// a fixed capacity: an insert that does not fit fails with [`Error::Full`], the signal to
/// switch to a new memtable.
#[derive(Debug)]
pub struct Memtable {
    arena: Arena,
    head: u32,
    height: AtomicU32,
    len: AtomicUsize,
    immutable: AtomicBool,
    /// Inserts between their frozen check and their last link; `freeze` waits for zero.
    writers: AtomicUsize,
}

impl Memtable {
    /// A memtable whose arena holds `capacity_bytes` (at most 4 GiB).
    pub fn with_capacity(capacity_bytes: usize) -> Self {
        // Room for the head node at least; a memtable this small holds almost nothing.
        let arena = Arena::new(capacity_bytes.max(CAPACITY_BYTES_MIN));
        const HEAD_BYTES: usize = HEADER_BYTES as usize + 8 * HEIGHT_MAX;
        let head = arena
            .alloc(HEAD_BYTES)
            .expect("the arena always has room for the head node");
        // A reused arena holds its last memtable's bytes: the head's towers start empty.
        arena.write(head, &[0; HEAD_BYTES]);
        arena.write(head + 14, &[HEIGHT_MAX as u8]);
        Self {
            arena,
            head,
            height: AtomicU32::new(1),
            len: AtomicUsize::new(0),
            immutable: AtomicBool::new(false),
            writers: AtomicUsize::new(0),
        }
    }

    /// Entries inserted.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// True if nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Arena bytes in use: what the memtable costs in memory (its capacity is reserved up
    /// front).
    pub fn approximate_bytes(&self) -> usize {
        self.arena.used()
    }

    /// The arena's capacity.
    pub fn capacity_bytes(&self) -> usize {
        self.arena.capacity()
    }

    /// Refuses further inserts, and returns once every insert already under way has finished,
    /// so that what a flush then reads is everything that will ever be in the memtable.
    /// Readers are not affected.
    pub fn freeze(&self) {
        // SeqCst here and in `insert`: either the insert sees the flag, or this sees the
        // insert's count (a store-load pair that Release/Acquire alone does not order).
        self.immutable.store(true, Ordering::SeqCst);
        while self.writers.load(Ordering::SeqCst) != 0 {
            // An insert finishes within a few microseconds: yield rather than sleep.
            std::thread::yield_now();
        }
    }

    /// True after [`freeze`](Self::freeze).
    pub fn is_frozen(&self) -> bool {
        self.immutable.load(Ordering::Acquire)
    }

    // ---- node accessors -------------------------------------------------------------------

    fn trailer(&self, node: u32) -> u64 {
        self.arena.read_u64(node)
    }

    fn value_len(&self, node: u32) -> u32 {
        self.arena.read_u32(node + 8)
    }

    fn key_len(&self, node: u32) -> u32 {
        let b = self.arena.bytes(node + 12, 2);
        u32::from(u16::from_ne_bytes([b[0], b[1]]))
    }

    fn height(&self, node: u32) -> u32 {
        u32::from(self.arena.bytes(node + 14, 1)[0])
    }

    fn key(&self, node: u32) -> &[u8] {
        let key_at = node + HEADER_BYTES + 8 * self.height(node);
        self.arena.bytes(key_at, self.key_len(node))
    }

    fn value(&self, node: u32) -> &[u8] {
        let key_len = self.key_len(node);
        let value_at = node + HEADER_BYTES + 8 * self.height(node) + key_len;
        self.arena.bytes(value_at, self.value_len(node))
    }

    fn tower(&self, node: u32, level: usize) -> &AtomicU64 {
        self.arena
            .atomic_u64(node + HEADER_BYTES + 8 * level as u32)
    }

    /// The link at `level`: offset and prefix of the next node.
    fn link(&self, node: u32, level: usize) -> u64 {
        self.tower(node, level).load(Ordering::Acquire)
    }

    /// The offset of the next node at `level` (0 = none).
    fn next(&self, node: u32, level: usize) -> u32 {
        self.link(node, level) as u32
    }

    /// True if the node `link` points to sorts before the target: decided from the prefix in
    /// the link when it can be, else by visiting the node.
    fn link_is_before(&self, link: u64, user_key: &[u8], prefix: u32, seq: u64) -> bool {
        let node = link as u32;
        if node == 0 {
            return false;
        }
        let link_prefix = (link >> 32) as u32;
        let target_prefix = prefix;
        if link_prefix != target_prefix {
            return link_prefix < target_prefix;
        }
        self.compare(node, user_key, seq) == CmpOrdering::Less
    }

    fn entry(&self, node: u32) -> Entry<'_> {
        let trailer = self.trailer(node);
        Entry {
            user_key: self.key(node),
            seq: trailer >> 8,
            kind: ValueKind::from_byte(trailer as u8),
            value: self.value(node),
        }
    }

    fn seq(&self, node: u32) -> u64 {
        self.trailer(node) >> 8
    }

    /// Compares `node` with the target `(user_key, seq)`: user key ascending, then sequence
    /// number descending. The kind takes no part: `(user_key, seq)` identifies an entry.
    fn compare(&self, node: u32, user_key: &[u8], seq: u64) -> CmpOrdering {
        self.key(node)
            .cmp(user_key)
            .then_with(|| seq.cmp(&self.seq(node)))
    }

    // ---- search ----------------------------------------------------------------------------

    /// The nodes around the target at level 0: the last node before it (0 if none) and the
    /// first at or after it (0 if none).
    fn find(&self, user_key: &[u8], seq: u64) -> (u32, u32) {
        let prefix = key_prefix(user_key);
        let mut node = self.head;
        let mut level = self.height.load(Ordering::Acquire) as usize;
        loop {
            level -= 1;
            let mut link = self.link(node, level);
            while self.link_is_before(link, user_key, prefix, seq) {
                node = link as u32;
                link = self.link(node, level);
            }
            if level == 0 {
                let before = if node == self.head { 0 } else { node };
                return (before, link as u32);
            }
        }
    }

    /// The first node at or after the target, or 0.
    fn seek_ge(&self, user_key: &[u8], seq: u64) -> u32 {
        self.find(user_key, seq).1
    }

    /// The last node before the target, or 0 if none.
    fn seek_lt(&self, user_key: &[u8], seq: u64) -> u32 {
        self.find(user_key, seq).0
    }

    fn last(&self) -> u32 {
        let mut node = self.head;
        let mut level = self.height.load(Ordering::Acquire) as usize;
        loop {
            level -= 1;
            let mut next = self.next(node, level);
            while next != 0 {
                node = next;
                next = self.next(node, level);
            }
            if level == 0 {
                return if node == self.head { 0 } else { node };
            }
        }
    }

    // ---- insert ----------------------------------------------------------------------------

    /// Inserts one version of `user_key`. Sequence numbers must be unique per key.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] if the arena has no room (switch memtables); [`Error::KeyTooLarge`] over
    /// [`KEY_BYTES_MAX`]; [`Error::Frozen`] after
    /// [`freeze`](Self::freeze); [`Error::Duplicate`] if `(user_key, seq)` is already there;
    /// [`Error::SeqTooLarge`] above [`SEQ_MAX`].
    pub fn insert(&self, user_key: &[u8], seq: u64, kind: ValueKind, value: &[u8]) -> Result<()> {
        self.writers.fetch_add(1, Ordering::SeqCst);
        let result = if self.immutable.load(Ordering::SeqCst) {
            Err(Error::Frozen)
        } else {
            self.insert_unfrozen(user_key, seq, kind, value)
        };
        self.writers.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn insert_unfrozen(
        &self,
        user_key: &[u8],
        seq: u64,
        kind: ValueKind,
        value: &[u8],
    ) -> Result<()> {
        if seq > SEQ_MAX {
            return Err(Error::SeqTooLarge { seq });
        }
        let value = if kind == ValueKind::Delete {
            &[][..]
        } else {
            value
        };
        let Ok(key_len) = u16::try_from(user_key.len()) else {
            return Err(Error::KeyTooLarge {
                len: user_key.len(),
            });
        };
        let Ok(value_len) = u32::try_from(value.len()) else {
            return Err(Error::Full);
        };
        let trailer = (seq << 8) | kind as u64;
        let height = random_height();
        let size = HEADER_BYTES as usize + 8 * height + user_key.len() + value.len();
        let node = self.arena.alloc(size).ok_or(Error::Full)?;
        // Fill the node before anyone can see it (arena rule 2 and 3).
        let prefix = key_prefix(user_key);
        self.arena.write_u64(node, trailer);
        self.arena.write_u32(node + 8, value_len);
        self.arena.write(node + 12, &key_len.to_ne_bytes());
        self.arena.write(node + 14, &[height as u8]);
        let key_at = node + HEADER_BYTES + 8 * height as u32;
        self.arena.write(key_at, user_key);
        self.arena.write(key_at + u32::from(key_len), value);

        // Raise the list's height if this node is taller.
        let mut current = self.height.load(Ordering::Acquire);
        while (height as u32) > current {
            match self.height.compare_exchange_weak(
                current,
                height as u32,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }

        // Find the splice (predecessor and successor) at every level, top down.
        // The link to this node that predecessors will hold.
        let link_to_node = u64::from(node) | (u64::from(prefix) << 32);
        let mut prev = [self.head; HEIGHT_MAX];
        let mut next = [0u64; HEIGHT_MAX];
        let top = self.height.load(Ordering::Acquire) as usize;
        let mut node_at = self.head;
        for level in (0..top).rev() {
            let (p, n) = self.splice(node_at, level, user_key, prefix, seq)?;
            prev[level] = p;
            next[level] = n;
            node_at = p;
        }

        // Link bottom up: once linked at level 0 the entry is in the map; upper levels only
        // speed up searches.
        for level in 0..height {
            loop {
                self.tower(node, level)
                    .store(next[level], Ordering::Relaxed);
                match self.tower(prev[level], level).compare_exchange(
                    next[level],
                    link_to_node,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(_) => {
                        // Another insert got in between: search again from the old
                        // predecessor, which still precedes us.
                        let (p, n) = self.splice(prev[level], level, user_key, prefix, seq)?;
                        prev[level] = p;
                        next[level] = n;
                    }
                }
            }
        }
        self.len.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// From `start` (which precedes the target), the node before the target and the link to
    /// the node after it, at `level`.
    fn splice(
        &self,
        start: u32,
        level: usize,
        user_key: &[u8],
        prefix: u32,
        seq: u64,
    ) -> Result<(u32, u64)> {
        let mut prev = start;
        loop {
            let link = self.link(prev, level);
            let next = link as u32;
            if next == 0 {
                return Ok((prev, 0));
            }
            if ((link >> 32) as u32) > prefix {
                // Past the target by the prefix alone: no need to visit the node.
                return Ok((prev, link));
            }
            match self.compare(next, user_key, seq) {
                CmpOrdering::Less => prev = next,
                CmpOrdering::Equal => return Err(Error::Duplicate),
                CmpOrdering::Greater => return Ok((prev, link)),
            }
        }
    }

    // ---- reads -----------------------------------------------------------------------------

    /// The newest version of `user_key` with a sequence number at most `at_seq` (a tombstone
    /// comes back as an entry of kind [`ValueKind::Delete`]), or `None`.
    pub fn get(&self, user_key: &[u8], at_seq: u64) -> Option<Entry<'_>> {
        let node = self.seek_ge(user_key, at_seq);
        (node != 0 && self.key(node) == user_key).then(|| self.entry(node))
    }

    /// The first node at or after the lower bound (0 if none).
    fn first_in(&self, lower: Bound<&[u8]>) -> u32 {
        match lower {
            Bound::Unbounded => self.next(self.head, 0),
            // (k, u64::MAX) sorts before every version of k (sequence numbers stop at SEQ_MAX).
            Bound::Included(k) => self.seek_ge(k, u64::MAX),
            Bound::Excluded(k) => {
                // (k, 0) sorts at or after every version of k; skip any left.
                let mut n = self.seek_ge(k, 0);
                while n != 0 && self.key(n) == k {
                    n = self.next(n, 0);
                }
                n
            }
        }
    }

    /// The last node at or before the upper bound (0 if none).
    fn last_in(&self, upper: Bound<&[u8]>) -> u32 {
        match upper {
            Bound::Unbounded => self.last(),
            Bound::Included(k) => {
                // The last node before (k, 0), then forward over the versions of k.
                let mut last = self.seek_lt(k, 0);
                let mut cursor = if last == 0 {
                    self.next(self.head, 0)
                } else {
                    self.next(last, 0)
                };
                while cursor != 0 && self.key(cursor) == k {
                    last = cursor;
                    cursor = self.next(cursor, 0);
                }
                last
            }
            Bound::Excluded(k) => self.seek_lt(k, u64::MAX),
        }
    }

    /// A cursor over every version, in order; see [`MemtableIter`].
    pub fn iter(&self) -> MemtableIter<'_> {
        self.iter_range(Bound::Unbounded, Bound::Unbounded)
    }

    /// A cursor confined to user keys within the bounds: it becomes invalid when it moves or
    /// seeks past either bound.
    pub fn iter_range<'a>(
        &'a self,
        lower: Bound<&'a [u8]>,
        upper: Bound<&'a [u8]>,
    ) -> MemtableIter<'a> {
        MemtableIter {
            table: self,
            node: 0,
            lower,
            upper,
        }
    }

    /// Every version of every user key within the bounds, in order (newest version first within
    /// a key); reversible.
    pub fn range<'a>(&'a self, lower: Bound<&[u8]>, upper: Bound<&'a [u8]>) -> Range<'a> {
        let front = self.first_in(lower);
        let back = self.last_in(upper);
        let empty = front == 0
            || back == 0
            || self.compare(front, self.key(back), self.seq(back)) == CmpOrdering::Greater;
        Range {
            table: self,
            front: if empty { 0 } else { front },
            back: if empty { 0 } else { back },
        }
    }
}

/// The first 4 bytes of `key`, zero-padded, as a big-endian integer. If two keys' prefixes
/// differ, they order as their prefixes do: at the first differing position either both keys
/// have a byte there, or the shorter key has ended, is a prefix of the other, and sorts first,
/// as its zero padding does.
fn key_prefix(key: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    let n = key.len().min(4);
    bytes[..n].copy_from_slice(&key[..n]);
    u32::from_be_bytes(bytes)
}

fn random_height() -> usize {
    use std::cell::Cell;
    thread_local! {
        // A per-thread xorshift: heights need speed and independence, not cryptography.
        static STATE: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
    }
    let bits = STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    });
    // Branching factor 2: each extra level with probability 1/2. (A factor of 4 saves three
    // bytes of tower per entry but measured slower: more nodes are visited per level, and each
    // visit is a cache miss.)
    (1 + bits.trailing_zeros() as usize).min(HEIGHT_MAX)
}

/// A cursor over a memtable's entries, movable both ways. Inserts made while it exists may or
/// may not be seen, but every entry it returns is complete.
#[derive(Debug, Clone)]
pub struct MemtableIter<'a> {
    table: &'a Memtable,
    node: u32,
    lower: Bound<&'a [u8]>,
    upper: Bound<&'a [u8]>,
}

impl<'a> MemtableIter<'a> {
    fn within(&self, key: &[u8]) -> bool {
        let above = match self.lower {
            Bound::Unbounded => true,
            Bound::Included(l) => key >= l,
            Bound::Excluded(l) => key > l,
        };
        let below = match self.upper {
            Bound::Unbounded => true,
            Bound::Included(u) => key <= u,
            Bound::Excluded(u) => key < u,
        };
        above && below
    }

    /// Leaves the cursor invalid if it is outside the bounds.
    fn clamp(&mut self) {
        if self.node != 0 && !self.within(self.table.key(self.node)) {
            self.node = 0;
        }
    }

    /// True if on an entry.
    pub fn valid(&self) -> bool {
        self.node != 0
    }

    /// The current entry, or `None` when not [`valid`](Self::valid).
    pub fn entry(&self) -> Option<Entry<'a>> {
        (self.node != 0).then(|| self.table.entry(self.node))
    }

    /// Positions on the first entry within the bounds.
    pub fn seek_to_first(&mut self) {
        self.node = self.table.first_in(self.lower);
        self.clamp();
    }

    /// Positions on the last entry within the bounds.
    pub fn seek_to_last(&mut self) {
        self.node = self.table.last_in(self.upper);
        self.clamp();
    }

    /// Positions on the first entry at or after `(user_key, seq)`: the newest version of
    /// `user_key` not newer than `seq`, or the next key's; a target below the lower bound
    /// starts at the bound.
    pub fn seek(&mut self, user_key: &[u8], seq: u64) {
        let below_lower = match self.lower {
            Bound::Unbounded => false,
            Bound::Included(l) => user_key < l,
            Bound::Excluded(l) => user_key <= l,
        };
        if below_lower {
            self.seek_to_first();
        } else {
            self.node = self.table.seek_ge(user_key, seq);
            self.clamp();
        }
    }

    /// Moves to the next entry.
    pub fn next(&mut self) {
        if self.node != 0 {
            self.node = self.table.next(self.node, 0);
            self.clamp();
        }
    }

    /// Moves to the previous entry (a search: O(log n)).
    pub fn prev(&mut self) {
        if self.node != 0 {
            let key = self.table.key(self.node);
            let seq = self.table.seq(self.node);
            self.node = self.table.seek_lt(key, seq);
            self.clamp();
        }
    }
}

/// The entries within a range, from [`Memtable::range`].
#[derive(Debug, Clone)]
pub struct Range<'a> {
    table: &'a Memtable,
    /// The next entry from the front, and from the back (inclusive); 0 when exhausted.
    front: u32,
    back: u32,
}

impl<'a> Iterator for Range<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        if self.front == 0 {
            return None;
        }
        let node = self.front;
        if node == self.back {
            self.front = 0;
            self.back = 0;
        } else {
            self.front = self.table.next(node, 0);
        }
        Some(self.table.entry(node))
    }
}

impl<'a> DoubleEndedIterator for Range<'a> {
    fn next_back(&mut self) -> Option<Entry<'a>> {
        if self.back == 0 {
            return None;
        }
        let node = self.back;
        if node == self.front {
            self.front = 0;
            self.back = 0;
        } else {
            let key = self.table.key(node);
            let seq = self.table.seq(node);
            self.back = self.table.seek_lt(key, seq);
        }
        Some(self.table.entry(node))
    }
}
