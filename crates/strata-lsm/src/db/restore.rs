//! Restores: the whole store replaced by a capture's file set ([`Db::restore`]), in one
//! manifest record, so that a crash at any step leaves the whole old state or the whole new one.
//!
//! The steps, and what a crash after each leaves:
//!
//! 1. Read and check the set's `lsm-snapshot` file and its tables' presence and sizes. Nothing
//!    in the store has changed.
//! 2. Hard-link each table into the store under a new number, fsync it, open it (which verifies
//!    its footer and index) and check its keys against the description; then fsync the store's
//!    directory once. The new files are in no manifest: after a crash, the next open removes
//!    them as unlisted tables (a failure removes them at once). The old state is whole.
//! 3. Append ONE manifest record that deletes every current table, adds every new one, moves
//!    the WAL's flushed LSN past every record written so far (the old memtables' contents), and
//!    sets the last sequence number and the snapshot's properties. The manifest is a
//!    `strata-wal` log with a checksum per record and a synced append, so after a crash the
//!    record is there whole or not at all: the old state (the new files then unlisted and
//!    removed) or the new one (the old tables then unlisted and removed, the old WAL records
//!    skipped as flushed). If the append reports a failure, the record may still have reached
//!    the disk: both sets of files stay, the store turns read-only, and the next open decides.
//! 4. Swap the in-memory state (version, memtables, last sequence number) under the state lock
//!    at once; the old tables are deleted when their last reader lets go. Then, as after any
//!    edit, a manifest rewrite if it has grown, and the removal of the old WAL segments; a
//!    failure there leaves the new state durable and the store read-only.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_fs::{IoError, hard_link, sync_dir, sync_file};

use super::version::{TableHandle, open_table};
use super::{Db, Inner, MemtableHandle};
use crate::error::{Error, Result};
use crate::manifest::{FileMeta, LEVELS, VersionEdit};
use crate::snapshot_file::{LSM_SNAPSHOT_FILE, SnapshotInfo, table_file_name};

impl Db {
    /// Replaces the whole store with the state a [`Capture`](crate::Capture) wrote into `dir`
    /// ([`Capture::write_to`](crate::Capture::write_to)), whose file names are `files` (as the
    /// capture returned them, or as a `strata-snapshot` transfer delivered them; other names
    /// are ignored). Keys the snapshot does not hold are gone afterwards; the snapshot's tables
    /// are hard-linked into the store (no copy; `dir` must be on the store's file system) and
    /// `dir` is left as it was. Returns what the `lsm-snapshot` file describes, with the tables
    /// as the store now names them; [`snapshot_properties`](Self::snapshot_properties) reports
    /// the properties from then on, across reopens.
    ///
    /// Atomic under a crash at any step: a reopen finds the whole old state or the whole new
    /// one, never a mix, and removes the other's files. The sequence number continues from
    /// the larger of the store's and the snapshot's.
    ///
    /// Concurrency: readers see the old state or the new one, never a mix (the swap is one
    /// step). A [`Snapshot`](crate::Snapshot) taken before the restore fails its reads with
    /// [`Error::Restored`] afterwards. Writes wait for the restore, then apply on top of the
    /// new state: the caller (the Raft apply path, the store's only writer) must not write
    /// concurrently if it wants exactly the snapshot's state. A forced flush waiting for a
    /// memtable the restore discards fails with [`Error::Restored`]. Captures taken before
    /// stay valid images of the old state.
    ///
    /// # Errors
    ///
    /// Refused with the store unchanged and still writable: [`Error::SnapshotFileMissing`] for
    /// an `lsm-snapshot` file or a table that is not in `files` or not in `dir`;
    /// [`Error::Corruption`] for a damaged, truncated or impossible `lsm-snapshot` file, or a
    /// table whose size or keys differ from its description; [`Error::Table`] for a table that
    /// does not open; I/O errors linking or syncing the new tables ([`Error::Fs`]).
    /// [`Error::ReadOnly`] if the store already is. A failure from the manifest append on makes
    /// the store read-only: reopen it, and it holds the whole old or the whole new state.
    pub fn restore<S: AsRef<str>>(&self, dir: &Path, files: &[S]) -> Result<SnapshotInfo> {
        self.inner.writable()?;
        let names: HashSet<&str> = files.iter().map(AsRef::as_ref).collect();
        let missing = |name: &str| Error::SnapshotFileMissing {
            name: name.to_owned(),
        };
        if !names.contains(LSM_SNAPSHOT_FILE) {
            return Err(missing(LSM_SNAPSHOT_FILE));
        }
        let mut info = SnapshotInfo::read(dir)?;
        for table in &info.tables {
            let name = table_file_name(table.number);
            if !names.contains(name.as_str()) {
                return Err(missing(&name));
            }
            let path = dir.join(&name);
            let size = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing(&name)),
                Err(e) => return Err(IoError::new("read the size of", path, e).into()),
            };
            if size != table.size {
                return Err(Error::Corruption {
                    path,
                    offset: size,
                    reason: "table size differs from the lsm-snapshot file's",
                });
            }
        }
        let inner = &self.inner;
        // Writes wait, and no compaction runs: the edit deletes every table and the WAL records
        // written so far. The write lock comes before the compaction lock, as everywhere.
        let _writer = inner.write_lock.lock();
        let _no_compaction = inner.manual_compaction_lock();
        if let Some(cause) = &inner.state.lock().background_error {
            return Err(Error::ReadOnly {
                cause: cause.clone(),
            });
        }
        let handles = inner.link_snapshot_tables(dir, &info.tables)?;
        let installed = inner.install_snapshot(&info, handles);
        if let Err(e) = &installed {
            inner.fail(e);
        }
        info.tables = installed?;
        Ok(info)
    }

    /// The properties of the snapshot the store was last restored from
    /// ([`restore`](Self::restore)), durable across reopens; empty if it never was.
    pub fn snapshot_properties(&self) -> BTreeMap<String, Vec<u8>> {
        self.inner.state.lock().manifest_state.properties.clone()
    }
}

impl Inner {
    /// Step 2 of a restore: links `tables` (a snapshot's, in `dir`) into the store under new
    /// numbers, syncs and opens them, and returns their handles, marked obsolete until the
    /// manifest names them. On failure nothing is left behind.
    fn link_snapshot_tables(
        &self,
        dir: &Path,
        tables: &[FileMeta],
    ) -> Result<Vec<Arc<TableHandle>>> {
        let mut linked: Vec<PathBuf> = Vec::with_capacity(tables.len());
        let mut handles = Vec::with_capacity(tables.len());
        let result = (|| {
            for table in tables {
                let (number, path) = self.new_table_number();
                hard_link(&dir.join(table_file_name(table.number)), &path)?;
                linked.push(path.clone());
                // The set's files may never have been synced (a transfer's writer may count on
                // the installer); the link shares their inode, so one fsync covers both names'
                // data. Cheap when they were.
                let file = std::fs::File::open(&path)
                    .map_err(IoError::with("open a restored table", &path))?;
                sync_file(&file, &path)?;
                drop(file);
                let meta = FileMeta {
                    number,
                    ..table.clone()
                };
                let handle = open_table(&self.dir, &meta, self.cache.as_ref())?;
                // Garbage until the manifest names it: deleted with its handle on failure.
                handle.set_obsolete(true);
                let properties = handle.table.properties();
                if properties.first_key.as_deref() != Some(meta.smallest.as_slice())
                    || properties.last_key.as_deref() != Some(meta.largest.as_slice())
                {
                    return Err(Error::Corruption {
                        path,
                        offset: 0,
                        reason: "table keys differ from the lsm-snapshot file's",
                    });
                }
                handles.push(handle);
            }
            // One directory fsync for every new name, before the manifest may name them.
            sync_dir(&self.dir)?;
            Ok(())
        })();
        if let Err(e) = result {
            // Obsolete handles remove their files as they go; the rest are removed here. A
            // crash first leaves them unlisted, for the next open to remove.
            drop(handles);
            for path in &linked {
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
        Ok(handles)
    }

    /// Steps 3 and 4 of a restore: one manifest record swaps every table for `handles` (the
    /// tables of `info`, in its order), then the in-memory state follows. Returns the tables
    /// as installed. Called with the write and compaction locks held.
    fn install_snapshot(
        &self,
        info: &SnapshotInfo,
        handles: Vec<Arc<TableHandle>>,
    ) -> Result<Vec<FileMeta>> {
        let manifest = self.manifest.lock();
        let edit = {
            let state = self.state.lock();
            let mut added: Vec<FileMeta> = handles.iter().map(|h| h.meta.clone()).collect();
            // Applying adds puts each level-0 table in front: oldest first rebuilds newest
            // first. (Deeper levels are sorted by the apply.)
            let level0 = added.iter().take_while(|f| f.level == 0).count();
            added[..level0].reverse();
            VersionEdit {
                // Every WAL record so far belongs to the old state: none may be replayed. No
                // writer can add one meanwhile (the write lock is held).
                wal_flushed_lsn: Some(self.wal()?.next_lsn().saturating_sub(1)),
                next_file_number: Some(state.manifest_state.next_file_number),
                last_seq: Some(state.last_seq.max(info.last_seq)),
                added,
                deleted: state
                    .manifest_state
                    .levels
                    .iter()
                    .flatten()
                    .map(|f| (f.level, f.number))
                    .collect(),
                properties: Some(info.properties.clone()),
            }
        };
        // From the append on the record may be durable even if the append reports a failure:
        // the new files must stay. If it did not make it, the next open removes them.
        for handle in &handles {
            handle.set_obsolete(false);
        }
        manifest.append(&edit)?;
        let mut state = self.state.lock();
        self.apply_edit(&mut state, &edit, 0)?;
        for old in state.version.levels.iter().flatten() {
            // Deleted when the last reader, scan or capture holding it lets go.
            old.set_obsolete(true);
        }
        let mut levels = vec![Vec::new(); LEVELS];
        for handle in handles {
            levels[usize::from(handle.meta.level)].push(handle);
        }
        // The version and the manifest's view agree, table for table.
        debug_assert!(
            levels
                .iter()
                .zip(&state.manifest_state.levels)
                .all(|(handles, metas)| handles.iter().map(|h| &h.meta).eq(metas.iter()))
        );
        let installed = levels.iter().flatten().map(|h| h.meta.clone()).collect();
        // The old memtables' writes are gone with the old tables; nothing is writing into them
        // (the write lock is held) and no flush holds them (the manifest lock is held).
        state.active = Arc::new(MemtableHandle::new(&self.options));
        state.immutables.clear();
        let last_seq = edit
            .last_seq
            .expect("the restore record carries the last sequence number");
        // Sequence numbers only grow, across a restore too.
        debug_assert!(last_seq >= state.last_seq);
        state.last_seq = last_seq;
        state.restores += 1;
        self.publish_version(state, levels, None, manifest)?;
        if let Some(flushed_lsn) = edit.wal_flushed_lsn {
            self.wal()?.purge_before(flushed_lsn + 1)?;
        }
        Ok(installed)
    }
}
