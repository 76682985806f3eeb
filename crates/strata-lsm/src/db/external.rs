//! What crosses the store's boundary: checkpoints (a consistent copy by hard links), ingest
//! (another store's tables installed as the newest data), and the list of live files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_fs::{IoError, hard_link, sync_dir, sync_parent_dir};
use strata_sstable::{ReadOptions, Table};

use super::stats::bump;
use super::version::{TableHandle, open_table, table_path};
use super::{Db, Inner};
use crate::compaction::{self, Plan};
use crate::error::{Error, Result};
use crate::keys::filter_key;
use crate::manifest::{FileMeta, Manifest, VersionEdit};

impl Db {
    /// Exports a consistent copy of the store to `path` (which must not exist): flushes, then
    /// hard-links every live table and writes a manifest describing exactly them. The copy opens
    /// as a store of its own. Tables are immutable, so sharing them by links is safe.
    ///
    /// # Errors
    ///
    /// I/O errors (hard links need `path` on the same file system).
    pub fn checkpoint(&self, path: &Path) -> Result<()> {
        self.flush()?;
        // Compactions would delete tables while they are being linked: hold them off.
        let _no_compaction = self.inner.manual_compaction_lock();
        let state = self.inner.state.lock().manifest_state.clone();
        std::fs::create_dir(path).map_err(IoError::with("create checkpoint directory", path))?;
        for meta in state.levels.iter().flatten() {
            let from = table_path(&self.inner.dir, meta.number);
            let to = table_path(path, meta.number);
            // Not durable yet: one directory fsync below covers every link.
            hard_link(&from, &to)?;
        }
        let mut exported = state;
        // Everything is in tables: the copy's WAL starts empty, past what this one used.
        exported.wal_flushed_lsn = self.inner.wal()?.next_lsn().saturating_sub(1);
        drop(Manifest::create(path, 1, &exported)?);
        sync_dir(path)?;
        // And the checkpoint directory's own name, so that a checkpoint that returned `Ok`
        // survives a crash whole.
        sync_parent_dir(path)?;
        Ok(())
    }

    /// Installs the data of the tables at `files` at `level`, as newer than everything in the
    /// store: for each key they hold, their newest version becomes the store's (a tombstone
    /// in them deletes the key); other keys are untouched. Returns the tables installed.
    ///
    /// The files are Strata tables, as another store's flushes and compactions write them
    /// (see [`live_files`](Self::live_files) and [`checkpoint`](Self::checkpoint)); they may
    /// overlap and come from several levels. They are read, verified and rewritten into this
    /// store under one new sequence number (the inputs are left in place; their properties
    /// are not carried over), which makes the ingest atomic: a reader or snapshot sees all of
    /// it or none of it, and a crash leaves all of it or none of it. Before the install, the
    /// memtables are flushed and the levels above `level` that hold keys in the ingested range
    /// are compacted down, so that no older local version can shadow the ingested ones; at
    /// `level` the ingested tables are merged with the tables they overlap. Writes wait for
    /// the ingest to finish.
    ///
    /// # Errors
    ///
    /// [`Error::NoSuchLevel`]; a table that does not open, fails a checksum or holds keys that
    /// are not Strata's ([`Error::Table`], [`Error::Corruption`]), in which case nothing is
    /// installed and nothing is left behind; an I/O or manifest error, which makes the store
    /// read-only.
    ///
    /// If two inputs hold the same key at the same sequence number (tables from different
    /// stores can), the one listed first in `files` wins.
    pub fn ingest<P: AsRef<Path>>(&self, level: usize, files: &[P]) -> Result<Vec<FileMeta>> {
        self.inner.writable()?;
        let last = crate::manifest::LEVELS - 1;
        if level > last {
            return Err(Error::NoSuchLevel { level, last });
        }
        let inner = &self.inner;
        // Writes wait: the ingest takes the next sequence number, and nothing may reach the
        // memtable between its flush and the install. The write lock comes before the
        // compaction lock, as everywhere: a writer stalled at the level-0 stop trigger holds the
        // write lock and waits for the flusher's compaction, which needs the compaction lock.
        let _writer = inner.write_lock.lock();
        let _no_compaction = inner.manual_compaction_lock();
        let seq = {
            let state = inner.state.lock();
            if let Some(cause) = &state.background_error {
                return Err(Error::ReadOnly {
                    cause: cause.clone(),
                });
            }
            state.last_seq + 1
        };
        // Rewrite the inputs into tables of this store: verified, merged, one version per
        // key, every one at `seq`. They are not in the manifest: until installed they are
        // garbage (marked obsolete here, removed at the next open after a crash).
        let ingested = {
            let mut inputs = Vec::with_capacity(files.len());
            for file in files {
                inputs.push(Table::open(
                    file.as_ref(),
                    ReadOptions {
                        table_id: 0,
                        cache: None,
                        filter_key,
                    },
                )?);
            }
            let sources = inputs.iter().map(compaction::table_source).collect();
            let plan = Plan {
                inputs: Vec::new(),
                output_level: level as u8,
                bottom: false,
            };
            compaction::run(
                sources,
                &plan,
                u64::MAX,
                Some(seq),
                inner.table_spec(),
                inner.options.compaction.target_file_bytes,
                || inner.new_table_number(),
            )?
        };
        let mut handles = Vec::with_capacity(ingested.len());
        for meta in &ingested {
            match open_table(&inner.dir, meta, inner.cache.as_ref()) {
                Ok(handle) => {
                    handle.set_obsolete(true);
                    handles.push(handle);
                }
                Err(e) => {
                    // Nothing is installed: the opened tables go with their handles, the
                    // rest here.
                    drop(handles);
                    for meta in &ingested {
                        let _ = std::fs::remove_file(table_path(&inner.dir, meta.number));
                    }
                    return Err(e);
                }
            }
        }
        if handles.is_empty() {
            return Ok(Vec::new());
        }
        bump(
            &inner.counters.ingested_bytes,
            ingested.iter().map(|m| m.size).sum(),
        );
        let installed = inner.ingest_install(level, &ingested, handles, seq);
        if let Err(e) = &installed {
            inner.fail(e);
        }
        installed
    }

    /// Every table in the store: its level and metadata, and the properties recorded in it.
    pub fn live_files(&self) -> Vec<LiveFile> {
        let state = self.inner.state.lock();
        state
            .version
            .levels
            .iter()
            .flatten()
            .map(|h| LiveFile {
                meta: h.meta.clone(),
                path: h.path.clone(),
                properties: h
                    .table
                    .properties()
                    .user
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_vec()))
                    .collect(),
            })
            .collect()
    }
}

/// A table as [`Db::live_files`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFile {
    /// Its level, number, size, key and sequence ranges.
    pub meta: FileMeta,
    /// Where the table is. The file stays as long as the store lists it (a compaction may
    /// remove it after that).
    pub path: PathBuf,
    /// The properties recorded by [`Db::flush_with_properties`].
    pub properties: BTreeMap<String, Vec<u8>>,
}

impl std::ops::Deref for LiveFile {
    type Target = FileMeta;

    fn deref(&self) -> &FileMeta {
        &self.meta
    }
}

impl Inner {
    /// The second half of [`Db::ingest`], once the ingested tables are written: flush, clear
    /// the levels above, install. Called with the write and compaction locks held.
    fn ingest_install(
        &self,
        level: usize,
        ingested: &[FileMeta],
        handles: Vec<Arc<TableHandle>>,
        seq: u64,
    ) -> Result<Vec<FileMeta>> {
        {
            let mut state = self.state.lock();
            if !state.active.table.is_empty() {
                self.rotate(&mut state);
            }
        }
        while self.flush_oldest()?.is_some() {}
        for above in 0..level {
            let plan = {
                let state = self.state.lock();
                let levels = &state.manifest_state.levels;
                // Level 0 tables may overlap one another: all of them go down together, or
                // an older one could end up above a newer one.
                let chosen = if above == 0 {
                    levels[0].iter().collect()
                } else {
                    compaction::overlapping(levels, above, ingested)
                };
                if chosen.is_empty() {
                    continue;
                }
                compaction::plan_for(levels, above, chosen)
            };
            if let Some(plan) = plan {
                self.run_compaction(&plan, Vec::new(), None)?;
            }
        }
        let plan = {
            let state = self.state.lock();
            compaction::plan_ingest(&state.manifest_state.levels, level, ingested)
        };
        if !plan.inputs.is_empty() {
            // Merge with the level's overlapping tables; the ingested ones are then spent.
            return self.run_compaction(&plan, handles, Some(seq));
        }
        let manifest = self.manifest.lock();
        let edit = VersionEdit {
            next_file_number: Some(self.state.lock().manifest_state.next_file_number),
            last_seq: Some(seq),
            added: ingested.to_vec(),
            ..VersionEdit::default()
        };
        // From the append on, the edit may be in the manifest even if the append reports a
        // failure (a failed fsync): the files must stay. If the edit did not make it, the
        // next open removes them as unlisted.
        for handle in &handles {
            handle.set_obsolete(false);
        }
        manifest.append(&edit)?;
        let mut state = self.state.lock();
        self.apply_edit(&mut state, &edit, 0)?;
        let mut levels = state.version.levels.clone();
        for handle in handles {
            if level == 0 {
                // Newest first: the ingested data is the newest there is.
                levels[0].insert(0, handle);
            } else {
                let at = levels[level].partition_point(|h| h.meta.smallest < handle.meta.smallest);
                levels[level].insert(at, handle);
            }
        }
        self.publish_version(state, levels, Some(seq), manifest)?;
        Ok(edit.added)
    }
}
