//! Prefix filters: with a [`PrefixExtractor`], every table's bloom filter also records the
//! prefix of each key, so that a seek within one prefix ([`Db::scan_in_prefix`]) skips the
//! tables that hold nothing under it, as RocksDB's `prefix_extractor` does. A store whose keys
//! are versions of a name (an MVCC store: name, then revision) finds a name's newest version
//! without reading every table whose range merely spans it.
//!
//! [`Db::scan_in_prefix`]: crate::Db::scan_in_prefix

use std::sync::atomic::{AtomicU64, Ordering};

use crate::keys::escaped_len;

/// Says which part of a user key is its prefix. Named: each table records the name of the
/// extractor its filter was built with (the property [`PREFIX_PROPERTY`]), and a seek trusts a
/// table's filter for a prefix only when that name is the store's extractor's. Give a new name
/// to any change of `prefix_len`, or tables built with the old one would be ruled out wrongly.
#[derive(Debug, Clone, Copy)]
pub struct PrefixExtractor {
    /// Recorded in every table built with it.
    pub name: &'static str,
    /// The length of the prefix of a user key, at most its length; `None` for a key that has
    /// none (only its whole key is in the filter, as without an extractor).
    pub prefix_len: fn(&[u8]) -> Option<usize>,
}

/// The table property naming the extractor a table's filter was built with.
pub const PREFIX_PROPERTY: &str = "strata-lsm.prefix-extractor";

impl PrefixExtractor {
    /// What the filter records for the entry `internal_key` of `user_key`: its prefix, as it
    /// begins the internal key (escaped).
    pub(crate) fn filter_part<'k>(
        &self,
        user_key: &[u8],
        internal_key: &'k [u8],
    ) -> Option<&'k [u8]> {
        let prefix = user_key.get(..(self.prefix_len)(user_key)?)?;
        internal_key.get(..escaped_len(prefix))
    }
}

/// How the store writes a table: the table options, and the prefix extractor whose parts its
/// filter records (named in the table's properties).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TableSpec<'a> {
    pub options: &'a strata_sstable::TableOptions,
    pub prefix: Option<&'a PrefixExtractor>,
}

impl TableSpec<'_> {
    /// A builder for a new table at `path`, its extractor's name recorded.
    pub(crate) fn create(
        &self,
        path: &std::path::Path,
    ) -> crate::Result<strata_sstable::TableBuilder> {
        let mut builder = strata_sstable::TableBuilder::create(path, self.options.clone())?;
        if let Some(prefix) = self.prefix {
            builder.set_property(PREFIX_PROPERTY, prefix.name.as_bytes())?;
        }
        Ok(builder)
    }

    /// Adds the entry `internal_key` (of `user_key`) to `builder`, and its prefix to the
    /// filter.
    pub(crate) fn add(
        &self,
        builder: &mut strata_sstable::TableBuilder,
        internal_key: &[u8],
        value: &[u8],
        user_key: &[u8],
    ) -> strata_sstable::Result<()> {
        match self
            .prefix
            .and_then(|p| p.filter_part(user_key, internal_key))
        {
            Some(part) => builder.add_with_filter_part(internal_key, value, part.len()),
            None => builder.add(internal_key, value),
        }
    }
}

/// `prefix` as the filters record it: escaped, as it begins the internal keys under it.
pub(crate) fn filter_part_of(prefix: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::keys::push_escaped(&mut out, prefix);
    out
}

/// Bytes of a memtable's prefix filter per byte the memtable may hold: a 64 MiB memtable
/// gets a 1 MiB filter, ample for entries of a few hundred bytes and still useful (a few
/// percent of false positives) for entries of a few dozen.
const MEMTABLE_FILTER_RATIO: usize = 64;

/// Bits set per prefix, all within one 512-bit block.
const MEMTABLE_FILTER_PROBES: u32 = 6;

/// A memtable's prefix filter: a blocked bloom filter of the prefixes of the keys written to
/// it, so that a seek within one prefix ([`Db::scan_in_prefix`](crate::Db::scan_in_prefix))
/// skips a memtable that holds nothing under it instead of searching its skiplist, as
/// RocksDB's `memtable_prefix_bloom_size_ratio` does. A write to a new key (an MVCC store's
/// put of a new name looks for the name's newest version first) then costs a hash instead of a
/// skiplist search in each memtable.
///
/// One writer at a time (the memtable's), any number of readers: a reader that sees a write
/// (the state lock orders the write's publication before the reader's view) sees its bits.
#[derive(Debug)]
pub(crate) struct MemtablePrefixes {
    /// 8 words (512 bits) per block.
    words: Box<[AtomicU64]>,
    blocks: u64,
}

impl MemtablePrefixes {
    /// A filter for a memtable of `capacity_bytes`.
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        let blocks = (capacity_bytes / MEMTABLE_FILTER_RATIO / 64).max(1);
        Self {
            words: (0..blocks * 8).map(|_| AtomicU64::new(0)).collect(),
            blocks: blocks as u64,
        }
    }

    /// Records `hash` (a [`prefix_hash`]).
    pub(crate) fn insert(&self, hash: u64) {
        let (block, mut bits) = self.locate(hash);
        for _ in 0..MEMTABLE_FILTER_PROBES {
            let bit = bits & 511;
            bits >>= 9;
            self.words[block + (bit >> 6) as usize].fetch_or(1 << (bit & 63), Ordering::Relaxed);
        }
    }

    /// False only if no prefix with `hash` was recorded.
    pub(crate) fn may_contain(&self, hash: u64) -> bool {
        let (block, mut bits) = self.locate(hash);
        for _ in 0..MEMTABLE_FILTER_PROBES {
            let bit = bits & 511;
            bits >>= 9;
            if self.words[block + (bit >> 6) as usize].load(Ordering::Relaxed) & (1 << (bit & 63))
                == 0
            {
                return false;
            }
        }
        true
    }

    /// The first word of `hash`'s block, and the bits that choose its probes.
    fn locate(&self, hash: u64) -> (usize, u64) {
        // The upper half picks the block (a multiply, not a modulo); a second mix of the
        // whole hash gives six 9-bit positions within it.
        let block = ((hash >> 32) * self.blocks) >> 32;
        let bits = hash.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        (block as usize * 8, bits)
    }
}

/// The hash a memtable's prefix filter records for a key's prefix (unescaped, as the user
/// key begins): the tables' filter hash ([`strata_sstable::key_hash`], eight bytes at a time).
/// The memtable's filter lives in memory only, so nothing on disk depends on this choice.
pub(crate) fn prefix_hash(prefix: &[u8]) -> u64 {
    strata_sstable::key_hash(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::internal_key;
    use proptest::prelude::*;
    use strata_memtable::ValueKind;

    fn all_but_last_two(key: &[u8]) -> Option<usize> {
        key.len().checked_sub(2)
    }

    proptest! {
        /// A memtable's prefix filter never rules out a prefix it recorded (whatever the
        /// filter's size, however full).
        #[test]
        fn a_memtable_filter_keeps_every_prefix_it_recorded(
            prefixes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..400),
            capacity in 0usize..200_000,
        ) {
            let filter = MemtablePrefixes::new(capacity);
            for p in &prefixes {
                filter.insert(prefix_hash(p));
            }
            for p in &prefixes {
                prop_assert!(filter.may_contain(prefix_hash(p)));
            }
        }
    }

    /// A filter sized for its memtable rules out most prefixes it never saw.
    #[test]
    fn a_memtable_filter_rules_out_most_prefixes_it_never_saw() {
        // A 64 MiB memtable of 1 KiB entries: about 65,000 prefixes.
        let filter = MemtablePrefixes::new(64 << 20);
        for i in 0..65_000u32 {
            filter.insert(prefix_hash(format!("recorded/{i:08}").as_bytes()));
        }
        let false_positives = (0..100_000u32)
            .filter(|i| filter.may_contain(prefix_hash(format!("absent/{i:08}").as_bytes())))
            .count();
        assert!(false_positives < 100, "{false_positives} of 100,000");
        // The same filter with 40-byte entries: about 1.7 million prefixes, still well under
        // one in three.
        let small = MemtablePrefixes::new(64 << 20);
        for i in 0..1_700_000u32 {
            small.insert(prefix_hash(&i.to_le_bytes()));
        }
        let false_positives = (1_700_000..1_800_000u32)
            .filter(|i| small.may_contain(prefix_hash(&i.to_le_bytes())))
            .count();
        assert!(false_positives < 33_000, "{false_positives} of 100,000");
    }

    proptest! {
        /// The part recorded at write time for a key is the part a seek computes from the
        /// key's prefix alone.
        #[test]
        fn the_written_part_is_the_part_a_seek_looks_for(
            key in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff), any::<u8>()], 0..12),
            seq in 0u64..1000,
        ) {
            let extractor = PrefixExtractor { name: "test", prefix_len: all_but_last_two };
            let encoded = internal_key(&key, seq, ValueKind::Put);
            match extractor.filter_part(&key, &encoded) {
                Some(part) => prop_assert_eq!(part, &filter_part_of(&key[..key.len() - 2])[..]),
                None => prop_assert!(key.len() < 2),
            }
        }
    }
}
