//! Captures: a Raft snapshot taken on the apply path ([`Db::capture`], which only pins what
//! makes up the store) and written out as a flat file set off it ([`Capture::write_to`]): the
//! pinned memtables flushed to tables, the pinned tables hard-linked, and one `lsm-snapshot`
//! file describing them (format in `docs/formats/lsm-snapshot.md`). [`Db::capture_switching`]
//! and [`Capture::flush`] make the memtables the store's own tables first, and those are linked.

use std::path::Path;
use std::sync::Arc;

use strata_fs::{DEFAULT_FILE_MODE, hard_link, sync_dir, write_synced};

use super::flush::write_memtable;
use super::version::{Version, table_path};
use super::{Db, Inner, MemtableHandle};
use crate::error::{Error, Result};
use crate::snapshot_file::{
    LSM_SNAPSHOT_FILE, PROPERTIES_BYTES_MAX, SnapshotInfo, properties_bytes, table_file_name,
};

impl Db {
    /// Captures the store as it is now, for a Raft snapshot: pins the tables and the memtables
    /// and notes the last sequence number, so that [`Capture::write_to`] can write exactly this
    /// state out later, on another thread, whatever writes, flushes and compactions happen
    /// meanwhile. Writes after the capture are not in it.
    ///
    /// Cheap enough for the apply path, between two applied batches: no I/O, and O(number of
    /// memtables) under the state lock (the tables are pinned with their version, as one
    /// reference). What it pins stays until the capture is written or dropped: up to
    /// `1 + immutable_memtables_max` memtables of memory, and the files of tables that
    /// compactions replace meanwhile. The capture also keeps the store open (its directory
    /// lock included) until then.
    pub fn capture(&self) -> Capture {
        let state = self.inner.state.lock();
        self.capture_locked(&state, None)
    }

    /// [`capture`](Self::capture), also switching out the active memtable (if it holds
    /// anything), as a flush would: every captured memtable then holds only versions up to the
    /// capture's sequence number, so that once [`Capture::flush`] has made them tables,
    /// [`Capture::write_to`] hard-links those tables rather than writing the memtables out a
    /// second time. For a store whose snapshot must also be durable in its own tables (one
    /// without a WAL, whose log is compacted behind the snapshot): capture this way, then
    /// `flush` and `write_to` off the apply path.
    ///
    /// Still no I/O: the memtable switched out is flushed by the flush thread (or by
    /// `flush`), and writes go on into a new one. Waits for a write in progress to finish, as
    /// [`Db::flush`] does.
    pub fn capture_switching(&self) -> Capture {
        let _writer = self.inner.write_lock.lock();
        let mut state = self.inner.state.lock();
        let switched = (!state.active.table.is_empty()).then(|| {
            let active = Arc::clone(&state.active);
            self.inner.rotate(&mut state);
            active
        });
        self.capture_locked(&state, switched)
    }

    /// A capture of `state`: its memtables (`switched`, the active memtable just switched out,
    /// is among the immutable ones) and tables.
    fn capture_locked(
        &self,
        state: &super::State,
        switched: Option<Arc<MemtableHandle>>,
    ) -> Capture {
        let mut memtables = Vec::with_capacity(1 + state.immutables.len());
        // An empty active memtable holds nothing of the capture: whatever it takes is newer.
        if switched.is_none() && !state.active.table.is_empty() {
            memtables.push(Captured {
                frozen: false,
                memtable: Arc::clone(&state.active),
            });
        }
        memtables.extend(state.immutables.iter().map(|memtable| Captured {
            frozen: true,
            memtable: Arc::clone(memtable),
        }));
        Capture {
            inner: Arc::clone(&self.inner),
            seq: state.last_seq,
            memtables,
            version: Arc::clone(&state.version),
        }
    }
}

/// A memtable a capture pinned.
#[derive(Debug)]
struct Captured {
    /// Switched out before the capture: every version in it is in the capture, and the table
    /// it is flushed to holds exactly those.
    frozen: bool,
    memtable: Arc<MemtableHandle>,
}

/// The store's state at one sequence number, pinned by [`Db::capture`] and written out by
/// [`write_to`](Self::write_to). `Send + 'static`: move it to a blocking thread. Dropping it
/// unwritten releases what it pins.
#[derive(Debug)]
pub struct Capture {
    inner: Arc<Inner>,
    /// Every write up to this sequence number, and none after it, is in the capture.
    seq: u64,
    /// The active memtable (unless the capture switched it out, or it was empty), then the
    /// immutable ones, newest first. The active one may take writes after the capture: only
    /// versions up to `seq` are written out.
    memtables: Vec<Captured>,
    /// The tables. Holding their handles pins their files: a table a compaction replaces is
    /// deleted only when its last handle goes.
    version: Arc<Version>,
}

impl Capture {
    /// The sequence number the capture was taken at.
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Makes the store's tables hold everything in the capture: flushes the captured memtables
    /// (switching out the active one first if the capture did not, as [`Db::flush`] does), or
    /// waits for the flush thread to, and returns once those tables are durable and in
    /// the manifest. After [`Db::capture_switching`], [`write_to`](Self::write_to) then
    /// hard-links the tables made here instead of writing the memtables again.
    ///
    /// # Errors
    ///
    /// As [`Db::flush`]; [`Error::Restored`] if the store was restored meanwhile (what the
    /// capture holds is no longer the store's).
    pub fn flush(&self) -> Result<()> {
        self.inner.writable()?;
        // Flushes run oldest first: once the newest captured memtable is a table, so is every
        // older one.
        let Some(Captured { frozen, memtable }) = self.memtables.first() else {
            return Ok(());
        };
        if !frozen {
            let _writer = self.inner.write_lock.lock();
            let mut state = self.inner.state.lock();
            if Arc::ptr_eq(&state.active, memtable) {
                self.inner.rotate(&mut state);
            }
        }
        self.inner.flush_until(Some(memtable)).map(|_| ())
    }

    /// Writes the captured state into `dir`, an existing directory on the store's file system,
    /// as a flat set of files, and returns their names (the [`LSM_SNAPSHOT_FILE`] last):
    ///
    /// - each memtable's versions up to the capture's sequence number (the newest of each
    ///   key), flushed to a new table `NNNNNN.sst`, numbered by the store so that no name
    ///   collides with a table's; or, for a memtable switched out before (or by) the capture and
    ///   flushed to the store since (by its flush thread, [`Db::flush`] or
    ///   [`flush`](Self::flush)), the table it became, hard-linked;
    /// - each pinned table hard-linked as `NNNNNN.sst` (through `strata_fs::hard_link`), so
    ///   it costs no copy;
    /// - [`LSM_SNAPSHOT_FILE`], listing the tables with their levels, key and sequence ranges,
    ///   the last sequence number and `properties` (the Raft layer's last included index and
    ///   term, as opaque bytes), under a checksum.
    ///
    /// Every file and its name is durable (fsync, then one directory fsync) when this returns.
    /// Plain names only, none called `meta`: the set is what a `strata-snapshot` transfer
    /// ships, and [`Db::restore`] installs it. Memory: one key at a time besides the
    /// `lsm-snapshot` file's bytes.
    ///
    /// # Errors
    ///
    /// [`Error::PropertiesTooLarge`] before anything is written; a table write, link or sync
    /// error (hard links need `dir` on the store's file system; a file of the same name
    /// already in `dir` fails the link), after which the files written so far are removed. The
    /// store itself is never affected.
    pub fn write_to(self, dir: &Path, properties: &[(&str, &[u8])]) -> Result<Vec<String>> {
        let bytes = properties_bytes(properties.iter().copied());
        if bytes > PROPERTIES_BYTES_MAX {
            return Err(Error::PropertiesTooLarge {
                bytes,
                max: PROPERTIES_BYTES_MAX,
            });
        }
        let mut written = Vec::with_capacity(self.memtables.len() + 1);
        let result = self.write_files(dir, properties, &mut written);
        if result.is_err() {
            // Best effort: the set is incomplete, so none of it is of use.
            for name in &written {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
        result.map(|()| written)
    }

    /// The body of [`write_to`](Self::write_to); pushes each name to `written` once the file is
    /// there (and the flat file's before it is written), for the cleanup of a failure.
    fn write_files(
        &self,
        dir: &Path,
        properties: &[(&str, &[u8])],
        written: &mut Vec<String>,
    ) -> Result<()> {
        let mut tables = Vec::new();
        // Memtables first: they are newer than every table, and level 0 lists newest first.
        for Captured { frozen, memtable } in &self.memtables {
            // Switched out before the capture and flushed since (`flush`): its table holds
            // exactly its versions, every one in the capture. Linked, unless it is gone (a
            // compaction replaced it meanwhile): then written out as any memtable is.
            let flushed = frozen.then(|| memtable.flushed_as.lock().clone()).flatten();
            if let Some(meta) = flushed {
                let name = table_file_name(meta.number);
                // Not durable yet: one directory fsync below covers every name.
                if hard_link(&table_path(&self.inner.dir, meta.number), &dir.join(&name)).is_ok() {
                    written.push(name);
                    tables.push(meta);
                    continue;
                }
            }
            // A number of the store's own: never one of a pinned table, all of which were
            // numbered before the capture. (The store skips it; numbers are not reused.)
            let (number, _) = self.inner.new_table_number();
            let name = table_file_name(number);
            let meta = write_memtable(
                &memtable.table,
                number,
                &dir.join(&name),
                self.inner.table_spec(),
                &[],
                self.seq,
                self.seq,
            )?;
            if let Some(meta) = meta {
                written.push(name);
                tables.push(meta);
            }
        }
        for handle in self.version.levels.iter().flatten() {
            let name = table_file_name(handle.meta.number);
            // Not durable yet: one directory fsync below covers every name.
            hard_link(&handle.path, &dir.join(&name))?;
            written.push(name);
            tables.push(handle.meta.clone());
        }
        let info = SnapshotInfo {
            last_seq: self.seq,
            tables,
            properties: properties
                .iter()
                .map(|(name, value)| ((*name).to_owned(), value.to_vec()))
                .collect(),
        };
        // What restore will check, checked on the way out too: a capture is always a store.
        debug_assert!(SnapshotInfo::decode(&info.encode()).as_ref() == Ok(&info));
        written.push(LSM_SNAPSHOT_FILE.to_owned());
        let encoded = info.encode();
        write_synced(&dir.join(LSM_SNAPSHOT_FILE), DEFAULT_FILE_MODE, |w| {
            w.write_all(&encoded)
        })?;
        sync_dir(dir)?;
        Ok(())
    }
}
