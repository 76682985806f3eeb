//! The newest version of recently written keys, without values: what a put needs of the
//! version it replaces (its create revision, version and lease). Without it every put to an
//! existing key seeks the key's versions in the LSM; with 10,000 keys written in turn that
//! seek was a seventh of a member's CPU.
//!
//! Only the writer reads or changes it (the live batch, under the store's writer lock), and a
//! commit writes every key it changed into it after the LSM write succeeded, so an entry is
//! always the committed store's newest version of its key. Readers at a revision never use it.
//!
//! A key enters it when a commit overwrites it (a version created before the batch): a key
//! written once, as most are under a load of new keys, costs the cache nothing but two
//! lookups. A key in it is updated by every commit that changes it (deletions included).
//!
//! Bounded by two generations of `bytes / 2` each: entries go to the current one, a hit in the
//! previous one moves the entry to the current one, and a full current one becomes the previous
//! one (the old previous one is dropped). Keys written or read again stay; the others leave
//! within two generations.

use std::collections::HashMap;

use crate::api::KeyValue;

/// What an entry costs beyond its key's bytes: the map's slot, the key's allocation header,
/// the version's fields.
const ENTRY_OVERHEAD_BYTES: usize = 80;

/// A key's newest version without its value; `None` in the cache: the key has none (deleted,
/// or never written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Newest {
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

impl Newest {
    pub(crate) fn of(kv: &KeyValue) -> Self {
        Self {
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }

    /// The version as the store reads it without its value.
    pub(crate) fn key_value(self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: Vec::new(),
            lease: self.lease,
        }
    }
}

/// Keyed by user keys, which clients choose: seeded per map.
type Map = HashMap<Vec<u8>, Option<Newest>, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
pub(crate) struct LatestCache {
    current: Map,
    previous: Map,
    current_bytes: usize,
    generation_bytes: usize,
}

impl LatestCache {
    /// A cache of at most about `bytes` (0: holds nothing).
    pub(crate) fn new(bytes: usize) -> Self {
        Self {
            generation_bytes: bytes / 2,
            ..Self::default()
        }
    }

    /// `key`'s newest version if the cache knows it: `Some(None)` if the key has none.
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<Option<Newest>> {
        if let Some(&state) = self.current.get(key) {
            return Some(state);
        }
        let (key, state) = self.previous.remove_entry(key)?;
        self.insert(key, state);
        Some(state)
    }

    /// Records `key`'s newest version, committed: always if the cache holds the key, else only
    /// if `enter`.
    pub(crate) fn set(&mut self, key: &[u8], state: Option<Newest>, enter: bool) {
        if let Some(slot) = self.current.get_mut(key) {
            *slot = state;
            return;
        }
        // A stale entry there would come back if this one left first.
        let held = self.previous.remove(key).is_some();
        if held || enter {
            self.insert(key.to_vec(), state);
        }
    }

    fn insert(&mut self, key: Vec<u8>, state: Option<Newest>) {
        let bytes = key.len() + ENTRY_OVERHEAD_BYTES;
        if bytes > self.generation_bytes {
            return;
        }
        if self.current_bytes + bytes > self.generation_bytes {
            self.previous = std::mem::take(&mut self.current);
            self.current_bytes = 0;
        }
        self.current_bytes += bytes;
        self.current.insert(key, state);
    }

    /// Forgets every entry (a restore replaced the store, or a batch deleted a range whose
    /// keys it did not list).
    pub(crate) fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
        self.current_bytes = 0;
    }

    /// Bounds the cache to about `bytes` from now on; forgets every entry.
    pub(crate) fn resize(&mut self, bytes: usize) {
        *self = Self::new(bytes);
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(rev: i64) -> Option<Newest> {
        Some(Newest {
            create_revision: 1,
            mod_revision: rev,
            version: rev,
            lease: 0,
        })
    }

    #[test]
    fn an_entry_set_is_read_back_and_a_deletion_reads_as_no_version() {
        let mut cache = LatestCache::new(1 << 20);
        assert_eq!(cache.get(b"k"), None);
        cache.set(b"k", version(2), false);
        assert_eq!(
            cache.get(b"k"),
            None,
            "a key not held enters only when told"
        );
        cache.set(b"k", version(2), true);
        assert_eq!(cache.get(b"k"), Some(version(2)));
        // Held: updated whatever `enter` says.
        cache.set(b"k", None, false);
        assert_eq!(cache.get(b"k"), Some(None));
    }

    #[test]
    fn the_cache_stays_within_two_generations_and_keeps_what_is_used() {
        // Room for four entries of one-byte keys per generation.
        let mut cache = LatestCache::new(2 * 4 * (1 + ENTRY_OVERHEAD_BYTES));
        for k in 0..100u8 {
            cache.set(&[k], version(i64::from(k)), true);
            // Key 0 read after every write stays.
            assert_eq!(cache.get(&[0]), Some(version(0)), "after {k}");
            assert!(cache.entries() <= 8, "{} entries", cache.entries());
        }
        assert_eq!(cache.get(&[1]), None, "an old key unread leaves");
        assert_eq!(cache.get(&[99]), Some(version(99)));
    }

    #[test]
    fn a_newer_entry_is_not_shadowed_by_an_older_one_in_the_previous_generation() {
        let mut cache = LatestCache::new(2 * 2 * (1 + ENTRY_OVERHEAD_BYTES));
        cache.set(b"a", version(1), true);
        cache.set(b"b", version(2), true);
        // `a` and `b` move to the previous generation.
        cache.set(b"c", version(3), true);
        // Held in the previous generation: updated though not told to enter.
        cache.set(b"a", version(4), false);
        // A rotation now must not bring back `a` at 1.
        cache.set(b"d", version(5), true);
        cache.set(b"e", version(6), true);
        assert_eq!(cache.get(b"a"), Some(version(4)));
        assert_eq!(cache.get(b"e"), Some(version(6)));
    }

    #[test]
    fn a_cache_of_no_bytes_holds_nothing() {
        let mut cache = LatestCache::new(0);
        cache.set(b"k", version(2), true);
        assert_eq!(cache.get(b"k"), None);
    }
}
