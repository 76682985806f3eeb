//! Compactions: the compaction thread runs the one `compaction::pick` chooses, [`Db::compact`]
//! compacts everything down; both merge tables into new ones and install them in one manifest
//! edit. One compaction runs at a time, under the compaction lock.

use std::sync::Arc;

use strata_fs::IoError;

use super::stats::bump;
use super::version::{TableHandle, open_table, reopen_table};
use super::{Db, Inner, State, oldest_reader};
use crate::compaction::{self, Plan};
use crate::error::Result;
use crate::manifest::{FileMeta, VersionEdit};

impl Db {
    /// Compacts every level down into the last non-empty one (or one below level 0), dropping
    /// every version no snapshot needs. Returns once done.
    ///
    /// # Errors
    ///
    /// A table or manifest error.
    pub fn compact(&self) -> Result<()> {
        self.inner.writable()?;
        let _one = self.inner.manual_compaction_lock();
        for level in 0..crate::manifest::LEVELS - 1 {
            let plan = {
                let state = self.inner.state.lock();
                let levels = &state.manifest_state.levels;
                let chosen: Vec<&FileMeta> = levels[level].iter().collect();
                if chosen.is_empty() {
                    continue;
                }
                // Stop at the deepest level holding data: below it there is nothing to merge.
                if levels[level + 1..].iter().all(Vec::is_empty) && level > 0 {
                    break;
                }
                compaction::plan_for(levels, level, chosen)
            };
            if let Some(plan) = plan
                && let Err(e) = self.inner.run_compaction(&plan, Vec::new(), None)
            {
                // A full disk while writing its tables leaves the store writable: their
                // partial output is gone and the inputs are in place.
                if !matches!(e, crate::Error::NoSpace { .. }) {
                    self.inner.fail(&e);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Blocks until the background thread has nothing left to do: every full memtable
    /// flushed, no compaction due, and the tables compactions replaced deleted unless a reader
    /// still holds them (RocksDB's `WaitForCompact`): the directory then holds the live tables
    /// and those being read, no more, until the next write. The active memtable is not
    /// flushed; call [`flush`](Self::flush) first for that. Writes made meanwhile can keep it
    /// waiting, so it is meant for a quiet store: before a backup, a benchmark's measurement,
    /// a test's check of the levels.
    ///
    /// # Errors
    ///
    /// [`Error::ReadOnly`](crate::Error::ReadOnly) if a background flush or compaction failed
    /// (it will not be retried until a reopen); [`Error::NoSpace`](crate::Error::NoSpace) if
    /// the last one found no room on the disk (it will be retried).
    pub fn wait_for_background(&self) -> Result<()> {
        if self.inner.read_only() {
            // No background work runs, and none is coming.
            return Ok(());
        }
        let mut state = self.inner.state.lock();
        loop {
            if let Some(cause) = &state.background_error {
                return Err(crate::Error::ReadOnly {
                    cause: cause.clone(),
                });
            }
            // A running compaction's inputs stay in the levels until it is installed, so the
            // compaction is still due until then; every flush and install wakes `changed`.
            if state.immutables.is_empty()
                && !self.inner.compaction_due(&state)
                && state.releasing == 0
            {
                return Ok(());
            }
            // Work is left, and the last try found no room for it (a `Db::flush` may have
            // done what the background thread could not since: then the loop above returned).
            if let Some((path, cause)) = &state.no_space {
                return Err(crate::Error::NoSpace {
                    path: path.clone(),
                    cause: cause.clone(),
                });
            }
            self.inner.changed.wait(&mut state);
        }
    }
}

impl Inner {
    pub(super) fn compaction_due(&self, state: &State) -> bool {
        compaction::pick(&state.manifest_state.levels, &self.options.compaction).is_some()
    }

    /// Takes the compaction lock for a caller other than the compaction thread; letting go
    /// wakes that thread, which may have found the lock taken.
    pub(super) fn manual_compaction_lock(&self) -> ManualCompaction<'_> {
        ManualCompaction {
            inner: self,
            guard: Some(self.compaction_lock.lock()),
        }
    }

    /// The compaction thread: runs the compaction `pick` chooses whenever one is due, at the
    /// priority `Options::compaction_nice` asks for.
    pub(super) fn compaction_loop(&self) {
        lower_thread_priority(self.options.compaction_nice);
        loop {
            let generation = {
                let mut state = self.state.lock();
                loop {
                    // A failed flush or compaction leaves the store read-only.
                    if state.closing || state.background_error.is_some() {
                        return;
                    }
                    if self.compaction_due(&state) {
                        break;
                    }
                    // Done by a manual compaction, say: nothing is held back any more.
                    state.compaction_no_space = None;
                    state.compaction_no_space_needs = None;
                    self.changed.wait(&mut state);
                }
                state.generation
            };
            match self.compact_once() {
                Ok(true) => {
                    // It ran, or none was due.
                    {
                        let mut state = self.state.lock();
                        state.compaction_no_space = None;
                        state.compaction_no_space_needs = None;
                    }
                    self.background_succeeded();
                }
                Ok(false) => {
                    // A manual compaction, ingest or checkpoint holds the compaction lock:
                    // wait until it changes something or lets go (`ManualCompaction` bumps the
                    // generation as it does).
                    let mut state = self.state.lock();
                    while state.generation == generation
                        && !state.closing
                        && state.background_error.is_none()
                    {
                        self.changed.wait(&mut state);
                    }
                }
                Err(crate::Error::NoSpace { path, cause }) => {
                    self.background_no_space(path, cause, true);
                }
                Err(e) => {
                    self.fail(&e);
                    return;
                }
            }
        }
    }

    /// Runs the compaction `pick` chooses, if any. False if the compaction lock was taken.
    pub(super) fn compact_once(&self) -> Result<bool> {
        let Some(_one) = self.compaction_lock.try_lock() else {
            return Ok(false);
        };
        let plan = {
            let state = self.state.lock();
            compaction::pick(&state.manifest_state.levels, &self.options.compaction)
        };
        if let Some(plan) = plan {
            match plan.trivial_move() {
                Some(table) => {
                    if let Err(e) = self.move_table(table, plan.output_level) {
                        // A move that fails (its manifest write) waits for no particular room:
                        // what an earlier held-back try needed is not this failure's.
                        self.state.lock().compaction_no_space_needs = None;
                        return Err(e);
                    }
                }
                None => {
                    self.room_for(&plan)?;
                    // Room now: nothing is held back while it runs (a large one takes a while,
                    // and a server would keep its writes refused meanwhile). Set again if it
                    // meets a full disk.
                    {
                        let mut state = self.state.lock();
                        state.compaction_no_space = None;
                        state.compaction_no_space_needs = None;
                    }
                    self.run_compaction(&plan, Vec::new(), None)?;
                }
            }
        }
        Ok(true)
    }

    /// [`Error::NoSpace`](crate::Error::NoSpace) when the disk has less free space than the
    /// plan's inputs hold, which its output may take before they are deleted (RocksDB's
    /// `SstFileManager` holds compactions back the same way): started, it would fail part-way
    /// after taking what a flush needs. A directory whose free space cannot be read is let be.
    fn room_for(&self, plan: &Plan) -> Result<()> {
        let needed: u64 = plan.inputs.iter().map(|f| f.size).sum();
        match strata_fs::available_bytes(&self.dir) {
            Ok(free) if free < needed => {
                // What the compaction thread's `compaction_no_space` will wait for.
                self.state.lock().compaction_no_space_needs = Some(needed);
                Err(crate::Error::NoSpace {
                    path: self.dir.clone(),
                    cause: format!(
                        "a compaction of {needed} bytes of tables held back: {free} bytes free"
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// Moves `table` down to `level` as it is: one manifest edit, no data rewritten. Called
    /// with the compaction lock held.
    fn move_table(&self, table: &FileMeta, level: u8) -> Result<()> {
        strata_fs::failpoint::check(crate::FP_COMPACTION)
            .map_err(IoError::with("compact tables in", &self.dir))?;
        let moved = FileMeta {
            level,
            ..table.clone()
        };
        // The same file, open again under its new level (captures record the level with it),
        // sharing the old handle's file: older versions still holding the old handle keep the
        // file on disk after a later compaction replaces the moved table.
        let file = {
            let state = self.state.lock();
            state.version.levels[usize::from(table.level)]
                .iter()
                .find(|h| h.meta.number == table.number)
                .map(|h| Arc::clone(&h.file))
        };
        // The plan was made from the current version under the compaction lock, so the table
        // is there; were it not, there is nothing to move.
        let Some(file) = file else {
            return Ok(());
        };
        let handle = reopen_table(&moved, &file)?;
        let manifest = self.manifest.lock();
        let edit = VersionEdit {
            added: vec![moved],
            deleted: vec![(table.level, table.number)],
            ..VersionEdit::default()
        };
        manifest.append(&edit)?;
        let mut state = self.state.lock();
        self.apply_edit(&mut state, &edit, 0)?;
        let mut levels = state.version.levels.clone();
        levels[usize::from(table.level)].retain(|h| h.meta.number != table.number);
        let output = &mut levels[usize::from(level)];
        let at = output.partition_point(|h| h.meta.smallest < handle.meta.smallest);
        output.insert(at, handle);
        bump(&self.counters.trivial_moves, 1);
        bump(&self.counters.trivial_moved_bytes, table.size);
        self.publish_version(state, levels, None, manifest)
    }

    /// Merges the plan's inputs (and `extra` tables not in the store: an ingest's) into new
    /// tables, records the change in the manifest (with `last_seq`, if given: an ingest's
    /// sequence number, made visible with the tables), and installs it; the inputs' files go
    /// when their last reader does. Returns the new tables. Called with the compaction lock
    /// held.
    pub(super) fn run_compaction(
        &self,
        plan: &Plan,
        extra: Vec<Arc<TableHandle>>,
        last_seq: Option<u64>,
    ) -> Result<Vec<FileMeta>> {
        strata_fs::failpoint::check(crate::FP_COMPACTION)
            .map_err(IoError::with("compact tables in", &self.dir))
            .map_err(|e| crate::Error::from(e).or_no_space(&self.dir))?;
        let (handles, oldest_snapshot) = {
            let state = self.state.lock();
            let mut handles: Vec<Arc<TableHandle>> = plan
                .inputs
                .iter()
                .filter_map(|meta| {
                    state.version.levels[usize::from(meta.level)]
                        .iter()
                        .find(|h| h.meta.number == meta.number)
                        .cloned()
                })
                .collect();
            handles.extend(extra);
            (handles, oldest_reader(&state))
        };
        let sources = handles
            .iter()
            .map(|h| compaction::table_source(&h.table))
            .collect();
        let outputs = compaction::run(
            sources,
            plan,
            oldest_snapshot,
            None,
            self.table_spec(),
            self.options.compaction.target_file_bytes,
            || self.new_table_number(),
        )
        // It removed the tables it wrote: nothing is changed yet. (A full disk later, in the
        // manifest append, is a failure: the manifest log is then poisoned.)
        .map_err(|e| e.or_no_space(&self.dir))?;
        bump(
            &self.counters.compaction_read_bytes,
            handles.iter().map(|h| h.meta.size).sum(),
        );
        // Let go of the inputs before the install: the version swap below then drops their
        // last handles (and deletes their files) under the state lock, so that
        // `wait_for_background`, woken by it, never returns with deletions still to come.
        drop(handles);
        bump(
            &self.counters.compaction_written_bytes,
            outputs.iter().map(|m| m.size).sum(),
        );
        let mut opened = Vec::with_capacity(outputs.len());
        for meta in &outputs {
            opened.push(open_table(&self.dir, meta, self.cache.as_ref())?);
        }
        let manifest = self.manifest.lock();
        let next_file_number = self.state.lock().manifest_state.next_file_number;
        // (The manifest guard is handed to `maybe_rewrite_manifest` at the end.)
        let edit = VersionEdit {
            next_file_number: Some(next_file_number),
            last_seq,
            added: outputs,
            deleted: plan.inputs.iter().map(|f| (f.level, f.number)).collect(),
            ..VersionEdit::default()
        };
        manifest.append(&edit)?;
        let mut state = self.state.lock();
        self.apply_edit(&mut state, &edit, 0)?;
        let mut levels = state.version.levels.clone();
        for (level, number) in &edit.deleted {
            levels[usize::from(*level)].retain(|h| {
                if h.meta.number == *number {
                    h.set_obsolete(true);
                    false
                } else {
                    true
                }
            });
        }
        let output_level = usize::from(plan.output_level);
        for handle in opened {
            let at =
                levels[output_level].partition_point(|h| h.meta.smallest < handle.meta.smallest);
            levels[output_level].insert(at, handle);
        }
        self.publish_version(state, levels, last_seq, manifest)?;
        Ok(edit.added)
    }
}

/// Lowers the calling thread's CPU priority by `nice` (its nice value goes up by that much, to
/// at most 19), on Linux, where a nice value is a thread's own; elsewhere, or at 0, nothing.
/// Best effort: a failure leaves the thread as it was.
fn lower_thread_priority(nice: u8) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        let tid = rustix::thread::gettid();
        if let Ok(current) = rustix::process::getpriority_process(Some(tid)) {
            let target = current.saturating_add(i32::from(nice)).min(19);
            let _ = rustix::process::setpriority_process(Some(tid), target);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The compaction lock held by a manual compaction, ingest or checkpoint.
pub(super) struct ManualCompaction<'a> {
    inner: &'a Inner,
    guard: Option<parking_lot::MutexGuard<'a, ()>>,
}

impl Drop for ManualCompaction<'_> {
    fn drop(&mut self) {
        // Release first, then wake the compaction thread: woken earlier, it could find the
        // lock still taken and wait for a change that never comes.
        drop(self.guard.take());
        self.inner.state.lock().generation += 1;
        self.inner.changed.notify_all();
    }
}
