//! The read path: point reads and scans across the memtables and the levels at one sequence
//! number, and [`Snapshot`]s that pin it.

use std::ops::Bound;
use std::sync::Arc;

use strata_memtable::ValueKind;

use super::version::{TableHandle, Version};
use super::{Db, MemtableHandle};
use crate::error::{Error, Result};
use crate::keys::{filter_key, internal_kind, seek_key, user_filter_key};
use crate::scan::{
    Direction, LevelSource, LevelTable, MemtableSource, Source, TableSource, merge, prefix_bounds,
};

/// What a read works on: its sequence number, the active and immutable memtables, the tables.
type View = (
    u64,
    Arc<MemtableHandle>,
    Vec<Arc<MemtableHandle>>,
    Arc<Version>,
);

impl Db {
    /// The newest value of `key`, or `None` if it is absent or deleted.
    ///
    /// # Errors
    ///
    /// A table read error (a damaged block is never returned as data).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_at(key, None)
    }

    /// A consistent view: reads through it see the store as of now (until a
    /// [`restore`](Self::restore) replaces the store, after which they fail with
    /// [`Error::Restored`]).
    pub fn snapshot(&self) -> Snapshot {
        let mut state = self.inner.state.lock();
        let seq = state.last_seq;
        *state.snapshots.entry(seq).or_insert(0) += 1;
        Snapshot {
            db: self.clone(),
            seq,
            restores: state.restores,
        }
    }

    /// A read's view: the sequence number (the latest, or a snapshot's) and the memtables and
    /// tables, taken together so that no compaction can drop a version the read needs between
    /// choosing the sequence number and pinning the tables.
    ///
    /// # Errors
    ///
    /// [`Error::Restored`] for a snapshot's read (`at`: its sequence number and restore count)
    /// once a restore has replaced the state it was taken of.
    fn view(&self, at: Option<(u64, u64)>) -> Result<View> {
        let state = self.inner.state.lock();
        if at.is_some_and(|(_, restores)| restores != state.restores) {
            return Err(Error::Restored);
        }
        Ok((
            at.map_or(state.last_seq, |(seq, _)| seq),
            Arc::clone(&state.active),
            state.immutables.clone(),
            Arc::clone(&state.version),
        ))
    }

    fn get_at(&self, key: &[u8], at: Option<(u64, u64)>) -> Result<Option<Vec<u8>>> {
        let (seq, active, immutables, version) = self.view(at)?;
        for memtable in std::iter::once(&active).chain(immutables.iter()) {
            if let Some(entry) = memtable.table.get(key, seq) {
                return Ok(match entry.kind {
                    ValueKind::Put => Some(entry.value.to_vec()),
                    ValueKind::Delete => None,
                });
            }
        }
        let filter = user_filter_key(key);
        // Hashed once for every table asked, not once per table.
        let probe = strata_sstable::FilterProbe::new(&filter);
        let target = seek_key(key, seq);
        for (level, files) in version.levels.iter().enumerate() {
            if level == 0 {
                // Level 0 tables may overlap: newest first, each whose range holds the key
                // may hold it.
                for handle in files {
                    let (smallest, largest) = (
                        filter_key(&handle.meta.smallest),
                        filter_key(&handle.meta.largest),
                    );
                    if filter.as_slice() < smallest || filter.as_slice() > largest {
                        continue;
                    }
                    if let Some(found) = table_get(handle, &filter, &probe, &target)? {
                        return Ok(found);
                    }
                }
            } else {
                // Below level 0 tables are disjoint and every version of a key is in one
                // table: the first whose largest key is not below the target.
                let at = files.partition_point(|h| h.meta.largest.as_slice() < target.as_slice());
                if let Some(handle) = files.get(at)
                    && let Some(found) = table_get(handle, &filter, &probe, &target)?
                {
                    return Ok(found);
                }
            }
        }
        Ok(None)
    }

    /// Calls `visit` with every live key within the bounds and its value, in `direction`
    /// order, until it returns false. Sees the store as of the call.
    ///
    /// # Errors
    ///
    /// A table read error.
    pub fn scan(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        direction: Direction,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.scan_at(None, None, lower, upper, direction, visit)
    }

    /// [`scan`](Self::scan) for bounds within which every key has the user-key prefix `prefix`
    /// (as [`Options::prefix_extractor`](crate::Options::prefix_extractor) gives it): the tables
    /// whose filters hold nothing under it are not read. Keys in the bounds without that prefix
    /// may be missed. Without an extractor, a plain scan.
    ///
    /// # Errors
    ///
    /// As [`scan`](Self::scan).
    pub fn scan_in_prefix(
        &self,
        prefix: &[u8],
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        direction: Direction,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.scan_at(None, Some(prefix), lower, upper, direction, visit)
    }

    /// [`scan`](Self::scan) over every key that starts with `prefix`.
    ///
    /// # Errors
    ///
    /// As [`scan`](Self::scan).
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
        direction: Direction,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let (lower, upper) = prefix_bounds(prefix);
        self.scan(as_ref(&lower), as_ref(&upper), direction, visit)
    }

    fn scan_at(
        &self,
        at: Option<(u64, u64)>,
        prefix: Option<&[u8]>,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        direction: Direction,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let (seq, active, immutables, version) = self.view(at)?;
        let owned = |b: Bound<&[u8]>| match b {
            Bound::Unbounded => Bound::Unbounded,
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        };
        let extractor = self.inner.options.prefix_extractor.as_ref();
        // What the tables' filters record for the prefix, if they can be asked, hashed once.
        let part = prefix
            .filter(|_| extractor.is_some())
            .map(crate::prefix::filter_part_of);
        let part = part.as_deref().map(strata_sstable::FilterProbe::new);
        let ruled_out = |handle: &TableHandle| {
            part.as_ref()
                .is_some_and(|probe| handle.rules_out_prefix(extractor, probe))
        };
        // The hash of the prefix as the memtables' filters record it.
        let memtable_part = prefix
            .filter(|_| extractor.is_some())
            .map(crate::prefix::prefix_hash);
        let mut sources: Vec<Box<dyn Source + '_>> = Vec::new();
        for memtable in std::iter::once(&active).chain(immutables.iter()) {
            if memtable_part.is_some_and(|hash| !memtable.may_hold_prefix(hash)) {
                super::stats::bump(&self.inner.counters.memtable_prefix_skips, 1);
                continue;
            }
            let range = memtable.table.range(lower, upper);
            match direction {
                Direction::Forward => sources.push(Box::new(MemtableSource::new(range))),
                Direction::Reverse => sources.push(Box::new(MemtableSource::new(range.rev()))),
            }
        }
        // The bounds as the tables' smallest and largest keys are compared with (filter keys),
        // made once for every level, and only if a table is asked.
        let filter_bounds = std::cell::OnceCell::new();
        let filter_bounds = || {
            let (lower, upper) = filter_bounds.get_or_init(|| {
                let filter_bound = |b: Bound<&[u8]>| match b {
                    Bound::Unbounded => Bound::Unbounded,
                    Bound::Included(k) => Bound::Included(user_filter_key(k)),
                    Bound::Excluded(k) => Bound::Excluded(user_filter_key(k)),
                };
                (filter_bound(lower), filter_bound(upper))
            });
            (as_ref(lower), as_ref(upper))
        };
        for (level, handles) in version.levels.iter().enumerate() {
            if level == 0 {
                // Level 0 tables overlap: each whose range meets the bounds is a source of
                // its own.
                for handle in handles {
                    // The filter first: it needs no allocation.
                    if ruled_out(handle) {
                        continue;
                    }
                    let (filter_lower, filter_upper) = filter_bounds();
                    if !range_meets(
                        &handle.meta.smallest,
                        &handle.meta.largest,
                        filter_lower,
                        filter_upper,
                    ) {
                        continue;
                    }
                    sources.push(Box::new(TableSource::new(
                        &handle.table,
                        direction,
                        owned(lower),
                        owned(upper),
                    )));
                }
            } else if !handles.is_empty() {
                // Within a prefix, the level's tables the bounds reach (a few at most) are
                // asked; one ruled out holds no key in the bounds, and the level reads on past
                // it.
                let reached = if part.is_some() {
                    let (lower, upper) = filter_bounds();
                    level_span(handles, lower, upper)
                } else {
                    handles.as_slice()
                };
                let tables: Vec<LevelTable<'_>> = reached
                    .iter()
                    .filter(|h| !ruled_out(h))
                    .map(|h| LevelTable {
                        table: &h.table,
                        smallest: &h.meta.smallest,
                        largest: &h.meta.largest,
                    })
                    .collect();
                if tables.is_empty() {
                    continue;
                }
                sources.push(Box::new(LevelSource::new(
                    tables,
                    direction,
                    owned(lower),
                    owned(upper),
                )));
            }
        }
        merge(sources, direction, seq, visit)
    }
}

/// A pinned view of the store; see [`Db::snapshot`]. Compactions keep the versions it reads
/// until it is dropped.
#[derive(Debug)]
pub struct Snapshot {
    db: Db,
    seq: u64,
    /// The store's restore count when it was taken.
    restores: u64,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        let mut state = self.db.inner.state.lock();
        if let Some(count) = state.snapshots.get_mut(&self.seq) {
            *count -= 1;
            if *count == 0 {
                state.snapshots.remove(&self.seq);
            }
        }
    }
}

impl Snapshot {
    /// The value of `key` as of the snapshot.
    ///
    /// # Errors
    ///
    /// As [`Db::get`]; [`Error::Restored`] if [`Db::restore`] replaced the store since the
    /// snapshot was taken.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_at(key, Some((self.seq, self.restores)))
    }

    /// [`Db::scan`] as of the snapshot.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn scan(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        direction: Direction,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.db.scan_at(
            Some((self.seq, self.restores)),
            None,
            lower,
            upper,
            direction,
            visit,
        )
    }

    /// [`Db::scan_in_prefix`] as of the snapshot.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn scan_in_prefix(
        &self,
        prefix: &[u8],
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        direction: Direction,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.db.scan_at(
            Some((self.seq, self.restores)),
            Some(prefix),
            lower,
            upper,
            direction,
            visit,
        )
    }

    /// The sequence number the snapshot reads at.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// The tables of a level below 0 (sorted, disjoint) whose ranges meet the bounds: a run of
/// them. The bounds are filter keys ([`user_filter_key`]), which order as their user keys do.
fn level_span<'h>(
    handles: &'h [Arc<TableHandle>],
    lower: Bound<&[u8]>,
    upper: Bound<&[u8]>,
) -> &'h [Arc<TableHandle>] {
    let start = match lower {
        Bound::Unbounded => 0,
        Bound::Included(k) => handles.partition_point(|h| filter_key(&h.meta.largest) < k),
        Bound::Excluded(k) => handles.partition_point(|h| filter_key(&h.meta.largest) <= k),
    };
    let rest = &handles[start..];
    let end = match upper {
        Bound::Unbounded => rest.len(),
        Bound::Included(k) => rest.partition_point(|h| filter_key(&h.meta.smallest) <= k),
        Bound::Excluded(k) => rest.partition_point(|h| filter_key(&h.meta.smallest) < k),
    };
    &rest[..end]
}

/// Whether a table whose internal keys run from `smallest` to `largest` may hold a user key
/// within the bounds, filter keys as for [`level_span`].
fn range_meets(smallest: &[u8], largest: &[u8], lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    let below_lower = match lower {
        Bound::Unbounded => false,
        Bound::Included(k) => filter_key(largest) < k,
        Bound::Excluded(k) => filter_key(largest) <= k,
    };
    let above_upper = match upper {
        Bound::Unbounded => false,
        Bound::Included(k) => filter_key(smallest) > k,
        Bound::Excluded(k) => filter_key(smallest) >= k,
    };
    !below_lower && !above_upper
}

/// Looks a user key up in one table, given its filter key (and that key's probe of the
/// tables' filters) and the internal key to seek: `Some(Some(v))` found, `Some(None)`
/// deleted, `None` absent.
fn table_get(
    handle: &TableHandle,
    filter: &[u8],
    probe: &strata_sstable::FilterProbe<'_>,
    target: &[u8],
) -> Result<Option<Option<Vec<u8>>>> {
    if !handle.table.may_contain_probe(probe) {
        return Ok(None);
    }
    let mut iter = handle.table.iter();
    iter.seek(target);
    if let Some(e) = iter.take_error() {
        return Err(e.into());
    }
    if !iter.valid() {
        return Ok(None);
    }
    // The first entry at or after the target is a version of the key if it shares the key's
    // filter key (its escaped user key and terminator).
    if filter_key(iter.key()) != filter {
        return Ok(None);
    }
    let kind = internal_kind(iter.key()).ok_or_else(|| Error::Corruption {
        path: handle.table.path().to_path_buf(),
        offset: 0,
        reason: "table key is not an internal key",
    })?;
    Ok(Some(match kind {
        ValueKind::Put => Some(iter.value_slice().to_vec()),
        ValueKind::Delete => None,
    }))
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
    }
}
