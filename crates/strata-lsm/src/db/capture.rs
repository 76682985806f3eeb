//! Captures: a Raft snapshot taken on the apply path ([`Db::capture`], which only pins what
//! makes up the store) and written out as a flat file set off it ([`Capture::write_to`]): the
//! pinned memtables flushed to tables, the pinned tables hard-linked, and one `lsm-snapshot`
//! file describing them (format in `docs/formats/lsm-snapshot.md`).

use std::path::Path;
use std::sync::Arc;

use strata_fs::{DEFAULT_FILE_MODE, hard_link, sync_dir, write_synced};

use super::flush::write_memtable;
use super::version::Version;
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
        let mut memtables = Vec::with_capacity(1 + state.immutables.len());
        memtables.push(Arc::clone(&state.active));
        memtables.extend(state.immutables.iter().cloned());
        Capture {
            inner: Arc::clone(&self.inner),
            seq: state.last_seq,
            memtables,
            version: Arc::clone(&state.version),
        }
    }
}

/// The store's state at one sequence number, pinned by [`Db::capture`] and written out by
/// [`write_to`](Self::write_to). `Send + 'static`: move it to a blocking thread. Dropping it
/// unwritten releases what it pins.
#[derive(Debug)]
pub struct Capture {
    inner: Arc<Inner>,
    /// Every write up to this sequence number, and none after it, is in the capture.
    seq: u64,
    /// The active memtable, then the immutable ones, newest first. The active one may take
    /// writes after the capture: only versions up to `seq` are written out.
    memtables: Vec<Arc<MemtableHandle>>,
    /// The tables. Holding their handles pins their files: a table a compaction replaces is
    /// deleted only when its last handle goes.
    version: Arc<Version>,
}

impl Capture {
    /// The sequence number the capture was taken at.
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Writes the captured state into `dir`, an existing directory on the store's file system,
    /// as a flat set of files, and returns their names (the [`LSM_SNAPSHOT_FILE`] last):
    ///
    /// - each memtable's versions up to the capture's sequence number (the newest of each
    ///   key), flushed to a new table `NNNNNN.sst`, numbered by the store so that no name
    ///   collides with a table's;
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
        for memtable in &self.memtables {
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
