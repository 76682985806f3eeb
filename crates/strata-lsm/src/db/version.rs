//! The tables that make up the store: a [`Version`] of open [`TableHandle`]s, and the manifest
//! edits that change it (table numbers, applying an edit, starting a new manifest generation).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use strata_sstable::{BlockCache, ReadOptions, Table};

use super::{Inner, State};
use crate::cache::LruBlockCache;
use crate::error::{Error, Result};
use crate::keys::filter_key;
use crate::manifest::{FileMeta, Manifest, VersionEdit, VersionState};

/// The manifest is rewritten as a new generation once its edits exceed this.
const MANIFEST_REWRITE_BYTES: u64 = 4 * 1024 * 1024;

/// A table in the store, open.
#[derive(Debug)]
pub(super) struct TableHandle {
    pub(super) meta: FileMeta,
    pub(super) table: Table,
    pub(super) path: PathBuf,
    /// The file's life, shared by every handle of it: a trivial move opens the same file
    /// again under its new level, and the file must outlive the older versions (captures,
    /// snapshots, scans) that still hold the handle of before.
    pub(super) file: Arc<TableFile>,
    /// The name of the prefix extractor its filter was built with, if any.
    pub(super) prefix_extractor: Option<Vec<u8>>,
}

/// One table file on disk, for as long as any handle of it is held.
#[derive(Debug)]
pub(super) struct TableFile {
    number: u64,
    path: PathBuf,
    /// Set when a compaction replaced the table: the file is deleted when the last reader
    /// (a version, scan or snapshot read holding a handle of it) lets go.
    pub(super) obsolete: AtomicBool,
    /// The shared cache, whose blocks of an obsolete table must go with it (they would keep
    /// its mapping, and the deleted file's disk space, alive).
    cache: Option<Arc<LruBlockCache>>,
}

impl TableHandle {
    /// Whether the table holds nothing under a prefix whose filter part is `probe`, as its
    /// filter (built with `extractor`, the store's) says; false when it cannot tell.
    pub(super) fn rules_out_prefix(
        &self,
        extractor: Option<&crate::PrefixExtractor>,
        probe: &strata_sstable::FilterProbe<'_>,
    ) -> bool {
        extractor.is_some_and(|e| self.prefix_extractor.as_deref() == Some(e.name.as_bytes()))
            && !self.table.may_contain_probe(probe)
    }

    /// Marks (or, for an install that is undone, unmarks) the file as replaced.
    pub(super) fn set_obsolete(&self, obsolete: bool) {
        self.file.obsolete.store(obsolete, Ordering::Release);
    }
}

impl Drop for TableFile {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            if let Some(cache) = &self.cache {
                cache.evict_table(self.number);
            }
            // Best effort: a leftover file is only garbage, removed by the next open.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub(super) fn open_table(
    dir: &Path,
    meta: &FileMeta,
    cache: Option<&Arc<LruBlockCache>>,
) -> Result<Arc<TableHandle>> {
    let path = table_path(dir, meta.number);
    let file = Arc::new(TableFile {
        number: meta.number,
        path,
        obsolete: AtomicBool::new(false),
        cache: cache.cloned(),
    });
    open_file(meta, file)
}

/// `file` open again as the table `meta` describes (the same number; another level).
pub(super) fn reopen_table(meta: &FileMeta, file: &Arc<TableFile>) -> Result<Arc<TableHandle>> {
    open_file(meta, Arc::clone(file))
}

fn open_file(meta: &FileMeta, file: Arc<TableFile>) -> Result<Arc<TableHandle>> {
    let options = ReadOptions {
        table_id: meta.number,
        cache: file
            .cache
            .as_ref()
            .map(|c| Arc::clone(c) as Arc<dyn strata_sstable::BlockCache>),
        filter_key,
    };
    let table = Table::open(&file.path, options)?;
    let prefix_extractor = table
        .properties()
        .user
        .get(crate::PREFIX_PROPERTY)
        .map(|name| name.to_vec());
    Ok(Arc::new(TableHandle {
        prefix_extractor,
        meta: meta.clone(),
        table,
        path: file.path.clone(),
        file,
    }))
}

/// An immutable view of the tables.
#[derive(Debug, Default)]
pub(super) struct Version {
    /// Per level; level 0 newest first.
    pub(super) levels: Vec<Vec<Arc<TableHandle>>>,
}

pub(super) fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.sst"))
}

impl Inner {
    /// Applies a durable edit to the in-memory manifest state; an edit that contradicts it is
    /// corruption (`offset`: the table concerned, or 0).
    pub(super) fn apply_edit(
        &self,
        state: &mut State,
        edit: &VersionEdit,
        offset: u64,
    ) -> Result<()> {
        // A table's number is handed out (and `next_file_number` moved past it) before the table
        // is written, so every table an edit adds is numbered below `next_file_number`.
        debug_assert!(
            edit.added
                .iter()
                .all(|f| f.number < state.manifest_state.next_file_number)
        );
        state
            .manifest_state
            .apply(edit)
            .map_err(|reason| Error::Corruption {
                path: self.dir.clone(),
                offset,
                reason,
            })
    }

    /// How this store writes its tables.
    pub(super) fn table_spec(&self) -> crate::prefix::TableSpec<'_> {
        crate::prefix::TableSpec {
            options: &self.options.table,
            prefix: self.options.prefix_extractor.as_ref(),
        }
    }

    /// A number (and path) for a new table.
    pub(super) fn new_table_number(&self) -> (u64, PathBuf) {
        let mut state = self.state.lock();
        let number = state.manifest_state.next_file_number;
        state.manifest_state.next_file_number += 1;
        (number, table_path(&self.dir, number))
    }

    /// Ends every edit that changes the tables (a compaction, an ingest, a restore): `levels`
    /// becomes the current version, `last_seq` (an ingest's) the last sequence number, readers
    /// waiting for a change are woken, and the manifest is rewritten if it has grown past its
    /// limit.
    pub(super) fn publish_version(
        &self,
        mut state: parking_lot::MutexGuard<'_, State>,
        levels: Vec<Vec<Arc<TableHandle>>>,
        last_seq: Option<u64>,
        manifest: parking_lot::MutexGuard<'_, Manifest>,
    ) -> Result<()> {
        let replaced = std::mem::replace(&mut state.version, Arc::new(Version { levels }));
        state.releasing += 1;
        state.generation += 1;
        if let Some(seq) = last_seq {
            // Sequence numbers only grow: an ingest's is newer than every write (writes wait).
            debug_assert!(seq > state.last_seq);
            state.last_seq = state.last_seq.max(seq);
        }
        self.changed.notify_all();
        let snapshot = state.manifest_state.clone();
        drop(state);
        // Outside the state lock, so that reads and writes do not wait on the file system: if
        // no reader holds the version replaced, the tables only it held are unlinked (and
        // their blocks evicted) as it goes.
        drop(replaced);
        self.state.lock().releasing -= 1;
        self.changed.notify_all();
        self.maybe_rewrite_manifest(manifest, &snapshot)
    }

    /// Starts a new manifest generation (a snapshot of the state, then a `CURRENT` swap) once
    /// the live one has grown past [`MANIFEST_REWRITE_BYTES`], so that reopening stays fast and
    /// the manifest's size stays bounded.
    pub(super) fn maybe_rewrite_manifest(
        &self,
        mut manifest: parking_lot::MutexGuard<'_, Manifest>,
        state: &VersionState,
    ) -> Result<()> {
        if manifest.bytes() > MANIFEST_REWRITE_BYTES {
            let next = manifest.generation() + 1;
            *manifest = Manifest::create(&self.dir, next, state)?;
        }
        Ok(())
    }
}
