//! Prefix filters: with a [`PrefixExtractor`], every table's bloom filter also records the
//! prefix of each key, so that a seek within one prefix ([`Db::scan_in_prefix`]) skips the
//! tables that hold nothing under it, as RocksDB's `prefix_extractor` does. A store whose keys
//! are versions of a name (an MVCC store: name, then revision) finds a name's newest version
//! without reading every table whose range merely spans it.
//!
//! [`Db::scan_in_prefix`]: crate::Db::scan_in_prefix

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
