//! Opening a store: the manifest and its tables, the WAL (replayed into memtables past what the
//! tables hold), the removal of tables a crash left unlisted, and the flush and compaction
//! threads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::{Condvar, Mutex};
use strata_fs::IoError;
use strata_wal::{Durability, Wal, WalOptions};

use super::stats::Counters;
use super::version::{Version, open_table};
use super::write::WriteScratch;
use super::{
    Db, FlusherGuard, IMMUTABLE_MEMTABLES_MIN, Inner, L0_TRIGGER_MIN, MEMTABLE_BYTES_MIN,
    MemtableHandle, Options, State, batch_memory_bytes,
};
use crate::batch::WriteBatch;
use crate::cache::LruBlockCache;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, VersionState};

fn wal_options(first_lsn: u64, mapped_tail: bool) -> WalOptions {
    WalOptions {
        durability: Durability::NoSync,
        mapped_tail,
        first_lsn,
        ..WalOptions::default()
    }
}

/// Opens the WAL so that its next LSN is past `flushed_lsn`. A crash can leave the log ending
/// before records that a flush already put in tables (their WAL tail was never synced); new
/// records must not reuse those LSNs, or recovery would skip them as flushed. Everything in
/// such a log is in tables, so it is removed and started again past the flushed LSN.
fn open_wal(dir: &Path, flushed_lsn: u64, mapped_tail: bool) -> Result<Wal> {
    let wal_dir = dir.join("wal");
    let (wal, _) = Wal::open(&wal_dir, wal_options(flushed_lsn + 1, mapped_tail))?;
    if wal.next_lsn() > flushed_lsn {
        return Ok(wal);
    }
    drop(wal);
    std::fs::remove_dir_all(&wal_dir)
        .map_err(IoError::with("remove a fully flushed WAL", &wal_dir))?;
    strata_fs::sync_dir(dir)?;
    let (wal, _) = Wal::open(&wal_dir, wal_options(flushed_lsn + 1, mapped_tail))?;
    Ok(wal)
}

impl Db {
    /// Opens the store in `dir`, creating it if there is none (unless
    /// [`Options::create_if_missing`] is false): replays the manifest, opens its tables, and
    /// replays the WAL records not yet in tables into a memtable.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] for a damaged manifest, table or WAL; [`Error::NoStore`] for a
    /// missing store without `create_if_missing`; I/O errors.
    pub fn open(dir: &Path, mut options: Options) -> Result<Db> {
        normalize(&mut options);
        if !options.create_if_missing {
            no_store_check(dir)?;
        }
        std::fs::create_dir_all(dir).map_err(IoError::with("create store directory", dir))?;
        let (manifest, manifest_state) = match Manifest::open(dir)? {
            Some(opened) => opened,
            None => {
                let state = VersionState::default();
                (Manifest::create(dir, 1, &state)?, state)
            }
        };
        let cache = (options.block_cache_bytes > 0)
            .then(|| Arc::new(LruBlockCache::new(options.block_cache_bytes)));
        let version = open_tables(dir, &manifest_state, cache.as_ref())?;
        remove_unlisted_tables(dir, &manifest_state)?;
        let wal = open_wal(dir, manifest_state.wal_flushed_lsn, options.wal_mapped)?;
        let replay_from = (manifest_state.wal_flushed_lsn + 1).max(wal.first_lsn());
        let mut replay = Replay::new(&options, manifest_state.last_seq);
        if replay_from < wal.next_lsn() {
            for record in wal.read_from(replay_from)? {
                let (lsn, bytes) = record?;
                replay.record(dir, lsn, &bytes)?;
            }
        }
        let inner = assemble(
            dir,
            options,
            Some(wal),
            manifest,
            manifest_state,
            version,
            replay,
            cache,
        );
        // The guard first: if the second thread cannot start, dropping it stops the first.
        let guard = FlusherGuard {
            inner: Arc::clone(&inner),
            threads: Mutex::new(Vec::with_capacity(2)),
        };
        // Names of at most 15 bytes: Linux cuts a thread's name there (`top -H`, `perf`).
        for (name, run) in [
            ("strata-flush", Inner::flush_loop as fn(&Inner)),
            ("strata-compact", Inner::compaction_loop),
        ] {
            let thread_inner = Arc::clone(&inner);
            let thread = std::thread::Builder::new()
                .name(name.into())
                .spawn(move || run(&thread_inner))
                .map_err(IoError::with("start a background thread for", dir))?;
            guard.threads.lock().push(thread);
        }
        Ok(Db {
            _flusher: Arc::new(guard),
            inner,
        })
    }

    /// Opens the store in `dir` for reading only: nothing in `dir` is created, changed or
    /// removed, and no background thread runs. Reads see what an [`open`](Self::open) would
    /// (the tables, and the WAL's records past them, replayed into memory; a torn tail is
    /// ignored rather than cut); writes, flushes, compactions, checkpoints, ingests and
    /// restores fail with [`Error::OpenedReadOnly`]. For tools that inspect a store, which
    /// must never make one where a path was mistyped. Another process may have the store
    /// open meanwhile: this one sees the state as of the open (or an error if a flush or
    /// compaction removed a file while it was being opened; open again).
    ///
    /// # Errors
    ///
    /// [`Error::NoStore`] if `dir` does not exist or has no `CURRENT`; as [`open`](Self::open)
    /// for damage.
    pub fn open_read_only(dir: &Path, mut options: Options) -> Result<Db> {
        normalize(&mut options);
        no_store_check(dir)?;
        let Some((manifest, manifest_state)) = Manifest::read(dir)? else {
            return Err(Error::NoStore {
                path: dir.to_path_buf(),
                reason: "the directory has no CURRENT file",
            });
        };
        let cache = (options.block_cache_bytes > 0)
            .then(|| Arc::new(LruBlockCache::new(options.block_cache_bytes)));
        let version = open_tables(dir, &manifest_state, cache.as_ref())?;
        let mut replay = Replay::new(&options, manifest_state.last_seq);
        let wal_dir = dir.join("wal");
        if wal_dir.is_dir() {
            let mut failure = None;
            strata_wal::scan_log(
                &wal_dir,
                |_, _| {},
                |lsn, bytes| {
                    if failure.is_none() && lsn > manifest_state.wal_flushed_lsn {
                        failure = replay.record(dir, lsn, bytes).err();
                    }
                },
            )?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
        let inner = assemble(
            dir,
            options,
            None,
            manifest,
            manifest_state,
            version,
            replay,
            cache,
        );
        Ok(Db {
            _flusher: Arc::new(FlusherGuard {
                inner: Arc::clone(&inner),
                threads: Mutex::new(Vec::new()),
            }),
            inner,
        })
    }
}

/// [`Error::NoStore`] unless `dir` is a directory with a `CURRENT` file.
fn no_store_check(dir: &Path) -> Result<()> {
    let reason = match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => "not a directory",
        Ok(_) if !dir.join(crate::manifest::CURRENT_FILE).exists() => {
            "the directory has no CURRENT file"
        }
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "the directory does not exist",
        Err(e) => return Err(IoError::new("read", dir.to_path_buf(), e).into()),
    };
    Err(Error::NoStore {
        path: dir.to_path_buf(),
        reason,
    })
}

/// Raises values that would wedge the store to the least that works.
fn normalize(options: &mut Options) {
    options.memtable_bytes = options.memtable_bytes.max(MEMTABLE_BYTES_MIN);
    options.immutable_memtables_max = options.immutable_memtables_max.max(IMMUTABLE_MEMTABLES_MIN);
    let c = &mut options.compaction;
    c.l0_trigger = c.l0_trigger.max(L0_TRIGGER_MIN);
    c.l0_slowdown_trigger = c.l0_slowdown_trigger.max(c.l0_trigger);
    c.l0_stop_trigger = c.l0_stop_trigger.max(c.l0_slowdown_trigger);
}

/// Opens the tables the manifest lists.
fn open_tables(
    dir: &Path,
    state: &VersionState,
    cache: Option<&Arc<LruBlockCache>>,
) -> Result<Version> {
    let mut version = Version {
        levels: vec![Vec::new(); state.levels.len()],
    };
    for (level, files) in state.levels.iter().enumerate() {
        for meta in files {
            version.levels[level].push(open_table(dir, meta, cache)?);
        }
    }
    Ok(version)
}

/// WAL records past the tables, replayed into memtables. What the WAL holds beyond the tables
/// can exceed one memtable (a crash while flushes lagged): replay fills as many as it takes;
/// the full ones are flushed once the store is running.
struct Replay {
    active: Arc<MemtableHandle>,
    /// Full memtables, newest first.
    immutables: Vec<Arc<MemtableHandle>>,
    last_seq: u64,
    memtable_bytes: usize,
    /// The store's options, for each new memtable.
    options: Options,
}

impl Replay {
    fn new(options: &Options, last_seq: u64) -> Self {
        Self {
            active: Arc::new(MemtableHandle::new(options)),
            immutables: Vec::new(),
            last_seq,
            memtable_bytes: options.memtable_bytes,
            options: options.clone(),
        }
    }

    /// Replays the WAL record `lsn` of the store in `dir`.
    fn record(&mut self, dir: &Path, lsn: u64, bytes: &[u8]) -> Result<()> {
        let batch = WriteBatch::decode(bytes).map_err(|reason| Error::Corruption {
            path: dir.join("wal"),
            offset: lsn,
            reason,
        })?;
        if self.active.table.approximate_bytes() + batch_memory_bytes(&batch) > self.memtable_bytes
            && !self.active.table.is_empty()
        {
            self.active.table.freeze();
            let full = std::mem::replace(
                &mut self.active,
                Arc::new(MemtableHandle::new(&self.options)),
            );
            self.immutables.insert(0, full);
        }
        let first_seq = batch.first_seq();
        for (i, op) in batch.ops().enumerate() {
            let seq = first_seq + i as u64;
            self.active.insert(op.0, seq, op.1, op.2)?;
            self.last_seq = self.last_seq.max(seq);
        }
        self.active.wal_lsn_max.store(lsn, Ordering::Release);
        Ok(())
    }
}

/// The store's shared state, from what an open found.
#[allow(clippy::too_many_arguments)]
fn assemble(
    dir: &Path,
    options: Options,
    wal: Option<Wal>,
    manifest: Manifest,
    manifest_state: VersionState,
    version: Version,
    replay: Replay,
    cache: Option<Arc<LruBlockCache>>,
) -> Arc<Inner> {
    Arc::new(Inner {
        dir: dir.to_path_buf(),
        options,
        wal,
        state: Mutex::new(State {
            active: replay.active,
            immutables: replay.immutables,
            version: Arc::new(version),
            last_seq: replay.last_seq,
            manifest_state,
            background_error: None,
            no_space: None,
            compaction_no_space: None,
            compaction_no_space_needs: None,
            closing: false,
            snapshots: BTreeMap::new(),
            generation: 0,
            restores: 0,
            releasing: 0,
        }),
        changed: Condvar::new(),
        write_lock: Mutex::new(WriteScratch::default()),
        queue: Mutex::new(std::collections::VecDeque::new()),
        queue_changed: Condvar::new(),
        manifest: Mutex::new(manifest),
        compaction_lock: Mutex::new(()),
        cache,
        counters: Counters::default(),
    })
}

/// Deletes `.sst` files the manifest does not list: outputs of a flush or compaction a crash
/// interrupted before its edit, and inputs whose deletion a crash interrupted.
fn remove_unlisted_tables(dir: &Path, state: &VersionState) -> Result<()> {
    let live: std::collections::HashSet<u64> =
        state.levels.iter().flatten().map(|f| f.number).collect();
    let entries = std::fs::read_dir(dir).map_err(IoError::with("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(IoError::with("list", dir))?;
        let name = entry.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.strip_suffix(".sst"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number
            && !live.contains(&number)
        {
            std::fs::remove_file(entry.path())
                .map_err(|e| IoError::new("remove unlisted table", entry.path(), e))?;
        }
    }
    Ok(())
}
