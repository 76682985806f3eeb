//! Flushes: full memtables written to level-0 tables, in the background (the flush thread) or
//! on demand, with properties a caller records in the table.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use strata_memtable::Memtable;
use strata_sstable::TableBuilder;

use super::stats::bump;
use super::version::{Version, open_table, table_path};
use super::{Db, Inner, MemtableHandle, oldest_reader};
use crate::error::{Error, Result};
use crate::keys::encode_internal_key;
use crate::manifest::{FileMeta, VersionEdit};
use crate::prefix::TableSpec;

impl Db {
    /// Switches to a new memtable and writes every full one to a level-0 table; returns the
    /// tables written, once they are durable and in the manifest.
    ///
    /// # Errors
    ///
    /// A write or manifest error.
    pub fn flush(&self) -> Result<Vec<FileMeta>> {
        self.flush_with_properties(&[])
    }

    /// [`flush`](Self::flush), recording `properties` in the table made from the memtable that
    /// is current at the call (the Raft layer records the last applied index and term there);
    /// [`live_files`](Self::live_files) reports them. Older full memtables flushed by the same
    /// call are returned too, without the properties: their data predates them. Names starting
    /// with `strata.` are reserved.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush).
    pub fn flush_with_properties(&self, properties: &[(&str, &[u8])]) -> Result<Vec<FileMeta>> {
        self.inner.flush_with_properties(properties)
    }
}

impl Inner {
    /// [`Db::flush_with_properties`], also run by a store without a WAL as it closes.
    pub(super) fn flush_with_properties(
        &self,
        properties: &[(&str, &[u8])],
    ) -> Result<Vec<FileMeta>> {
        self.writable()?;
        if properties
            .iter()
            .any(|(name, _)| name.starts_with("strata."))
        {
            return Err(strata_sstable::Error::ReservedProperty.into());
        }
        let target = {
            let _writer = self.write_lock.lock();
            let mut state = self.state.lock();
            if state.active.table.is_empty() {
                None
            } else {
                *state.active.properties.lock() = properties
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                    .collect();
                let target = Arc::clone(&state.active);
                self.rotate(&mut state);
                Some(target)
            }
        };
        self.flush_until(target.as_ref())
    }

    /// Flushes until `target`, a switched-out memtable, is a table (the background thread may
    /// flush some of the older ones, or even it, meanwhile); with `None`, until no memtable
    /// waits. Returns the tables this call wrote, and `target`'s.
    pub(super) fn flush_until(
        &self,
        target: Option<&Arc<MemtableHandle>>,
    ) -> Result<Vec<FileMeta>> {
        let mut written = Vec::new();
        loop {
            if let Some(target) = &target
                && let Some(meta) = target.flushed_as.lock().clone()
            {
                if !written.contains(&meta) {
                    written.push(meta);
                }
                return Ok(written);
            }
            match self.flush_oldest() {
                Ok(Some(meta)) => written.push(meta),
                Ok(None) if target.is_none() => return Ok(written),
                // Someone else is flushing the target: wait for them.
                Ok(None) => {
                    let mut state = self.state.lock();
                    let pending = target
                        .as_ref()
                        .is_some_and(|t| t.flushed_as.lock().is_none());
                    // A memtable leaves `immutables` only with `flushed_as` set (both under
                    // the state lock), or discarded whole by a restore: then it never will be.
                    if pending
                        && !target
                            .as_ref()
                            .is_some_and(|t| state.immutables.iter().any(|m| Arc::ptr_eq(m, t)))
                    {
                        return Err(Error::Restored);
                    }
                    if pending && state.background_error.is_none() {
                        self.changed.wait(&mut state);
                    }
                    if let Some(cause) = &state.background_error {
                        return Err(Error::ReadOnly {
                            cause: cause.clone(),
                        });
                    }
                }
                // The memtable is still there; the store stays writable.
                Err(e @ Error::NoSpace { .. }) => return Err(e),
                Err(e) => {
                    self.fail(&e);
                    return Err(e);
                }
            }
        }
    }

    /// The flush thread: writes full memtables to level-0 tables, oldest first, as they come.
    /// Compactions run on their own thread ([`Inner::compaction_loop`]), so a long one never
    /// holds a flush back (writers wait for flushes once `immutable_memtables_max` memtables
    /// are full).
    pub(super) fn flush_loop(&self) {
        loop {
            {
                let mut state = self.state.lock();
                loop {
                    // A failed flush or compaction leaves the store read-only: nothing more is
                    // written until a reopen.
                    if state.closing || state.background_error.is_some() {
                        return;
                    }
                    if !state.immutables.is_empty() {
                        break;
                    }
                    self.changed.wait(&mut state);
                }
            }
            match self.flush_oldest() {
                Ok(_) => self.background_succeeded(),
                // Nothing changed; a second later, perhaps with room again.
                Err(Error::NoSpace { path, cause }) => self.background_no_space(path, cause, false),
                Err(e) => {
                    self.fail(&e);
                    return;
                }
            }
        }
    }

    /// A background flush or compaction succeeded: the disk had room.
    pub(super) fn background_succeeded(&self) {
        let mut state = self.state.lock();
        if state.no_space.is_some() {
            state.no_space = None;
        }
    }

    /// A background flush or compaction found no room on the disk: records it (a compaction's
    /// also in `compaction_no_space`), wakes `wait_for_background`, which reports it, and
    /// waits [`crate::NO_SPACE_RETRY`] (or until the store closes) before the next try.
    pub(super) fn background_no_space(
        &self,
        path: std::path::PathBuf,
        cause: String,
        compaction: bool,
    ) {
        bump(&self.counters.no_space_retries, 1);
        let until = std::time::Instant::now() + crate::NO_SPACE_RETRY;
        let mut state = self.state.lock();
        if compaction {
            state.compaction_no_space = Some(cause.clone());
        }
        state.no_space = Some((path, cause));
        self.changed.notify_all();
        while !state.closing && !self.changed.wait_until(&mut state, until).timed_out() {}
    }

    /// Writes the oldest full memtable to a level-0 table, records it in the manifest, and
    /// drops the memtable and the WAL segments it covered. `None` if there was nothing to do.
    pub(super) fn flush_oldest(&self) -> Result<Option<FileMeta>> {
        // One flush at a time (the background thread and `Db::flush` may both try).
        let manifest = self.manifest.lock();
        let (memtable, number, last_seq, oldest_reader) = {
            let mut state = self.state.lock();
            let Some(memtable) = state.immutables.last().cloned() else {
                return Ok(None);
            };
            let number = state.manifest_state.next_file_number;
            state.manifest_state.next_file_number += 1;
            (memtable, number, state.last_seq, oldest_reader(&state))
        };
        let path = table_path(&self.dir, number);
        let properties = memtable.properties.lock().clone();
        let meta = write_memtable(
            &memtable.table,
            number,
            &path,
            self.table_spec(),
            &properties,
            u64::MAX,
            oldest_reader,
        )
        .map_err(|e| match e.or_no_space(&path) {
            // In no manifest: the memtable is still there to be written again.
            e @ Error::NoSpace { .. } => {
                let _ = std::fs::remove_file(&path);
                e
            }
            e => e,
        })?
        // Only memtables holding something are switched out, so none is flushed empty.
        .expect("a switched-out memtable holds at least one version");
        // A flushed table holds only committed writes: every sequence number in it is visible.
        debug_assert!(meta.largest_seq <= last_seq);
        bump(&self.counters.flush_bytes, meta.size);
        // The WAL records this memtable holds, if any (without a WAL, none; after a reopen
        // without one, the replayed records of the earlier run).
        let flushed_lsn = memtable.wal_lsn_max.load(Ordering::Acquire);
        let covers_wal = flushed_lsn > self.state.lock().manifest_state.wal_flushed_lsn;
        let edit = VersionEdit {
            wal_flushed_lsn: covers_wal.then_some(flushed_lsn),
            next_file_number: Some(number + 1),
            last_seq: Some(last_seq.max(meta.largest_seq)),
            added: vec![meta.clone()],
            ..VersionEdit::default()
        };
        manifest.append(&edit)?;
        let handle = open_table(&self.dir, &meta, self.cache.as_ref())?;
        {
            let mut state = self.state.lock();
            // Flushed WAL records only grow: this memtable's follow those already in tables.
            debug_assert!(!covers_wal || flushed_lsn > state.manifest_state.wal_flushed_lsn);
            self.apply_edit(&mut state, &edit, number)?;
            let mut levels = state.version.levels.clone();
            // Level 0 is newest first: a flushed memtable is newer than every table there.
            debug_assert!(
                levels[0]
                    .first()
                    .is_none_or(|newest| newest.meta.largest_seq < meta.smallest_seq)
            );
            levels[0].insert(0, handle);
            state.version = Arc::new(Version { levels });
            state.generation += 1;
            let flushed = state.immutables.pop();
            // Flushes run one at a time, oldest memtable first: the one written is the one
            // that goes.
            debug_assert!(flushed.is_some_and(|m| Arc::ptr_eq(&m, &memtable)));
            *memtable.flushed_as.lock() = Some(meta.clone());
            self.changed.notify_all();
        }
        let snapshot = self.state.lock().manifest_state.clone();
        self.maybe_rewrite_manifest(manifest, &snapshot)?;
        if covers_wal {
            self.wal()?.purge_before(flushed_lsn + 1)?;
        }
        Ok(Some(meta))
    }
}

/// Writes the versions in `memtable` at or below `seq_max` to a new level-0 table numbered
/// `number` at `path`, recording `properties` in it, but for those no reader can see: every
/// reader reads at `oldest_reader` or later, so of the versions of a key at or below it only the
/// newest is written (a tombstone included: older tables may hold the key). A flush passes its
/// oldest snapshot; a capture, whose table is only ever read as of `seq_max`, passes `seq_max`
/// and so writes only each key's newest version. `None`, and no file, if no version qualifies.
///
/// Streams from the memtable into the table builder: nothing is copied but one key at a time.
/// The memtable may take inserts meanwhile (a capture's active memtable does); versions above
/// `seq_max` are skipped, and every one at or below it was inserted before it became visible.
pub(super) fn write_memtable(
    memtable: &Memtable,
    number: u64,
    path: &Path,
    spec: TableSpec<'_>,
    properties: &[(String, Vec<u8>)],
    seq_max: u64,
    oldest_reader: u64,
) -> Result<Option<FileMeta>> {
    let mut builder: Option<TableBuilder> = None;
    let mut key = Vec::new();
    let (mut smallest_seq, mut largest_seq) = (u64::MAX, 0);
    let mut smallest = None;
    // The previous version written: its user key and sequence number.
    let mut previous: Option<(&[u8], u64)> = None;
    for entry in memtable.range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded) {
        if entry.seq > seq_max {
            continue;
        }
        // Versions come newest first within a key: once one at or below the oldest reader's
        // sequence number is written, every older one is shadowed for every reader.
        if previous.is_some_and(|(key, seq)| key == entry.user_key && seq <= oldest_reader) {
            continue;
        }
        previous = Some((entry.user_key, entry.seq));
        let out = match &mut builder {
            Some(out) => out,
            None => {
                let mut created = spec.create(path)?;
                for (name, value) in properties {
                    created.set_property(name, value)?;
                }
                builder.insert(created)
            }
        };
        key.clear();
        encode_internal_key(&mut key, entry.user_key, entry.seq, entry.kind);
        spec.add(out, &key, entry.value, entry.user_key)?;
        smallest.get_or_insert_with(|| key.clone());
        smallest_seq = smallest_seq.min(entry.seq);
        largest_seq = largest_seq.max(entry.seq);
    }
    let (Some(builder), Some(smallest)) = (builder, smallest) else {
        return Ok(None);
    };
    let summary = builder.finish()?;
    Ok(Some(FileMeta {
        number,
        level: 0,
        size: summary.file_bytes,
        smallest,
        largest: key,
        smallest_seq,
        largest_seq,
    }))
}
