//! Opening a store: the manifest and its tables, the WAL (replayed into memtables past what the
//! tables hold), the removal of tables a crash left unlisted, and the flush thread.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::{Condvar, Mutex};
use strata_fs::IoError;
use strata_wal::{Durability, Wal, WalOptions};

use super::stats::Counters;
use super::version::{Version, open_table};
use super::write::{WriteScratch, insert};
use super::{
    Db, FlusherGuard, IMMUTABLE_MEMTABLES_MIN, Inner, L0_TRIGGER_MIN, MEMTABLE_BYTES_MIN,
    MemtableHandle, Options, State, batch_memory_bytes, memtable_capacity,
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
    /// Opens (creating if needed) the store in `dir`: replays the manifest, opens its tables,
    /// and replays the WAL records not yet in tables into a memtable.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] for a damaged manifest, table or WAL; I/O errors.
    pub fn open(dir: &Path, mut options: Options) -> Result<Db> {
        // Values that would wedge the store are raised to the least that works.
        options.memtable_bytes = options.memtable_bytes.max(MEMTABLE_BYTES_MIN);
        options.immutable_memtables_max =
            options.immutable_memtables_max.max(IMMUTABLE_MEMTABLES_MIN);
        let c = &mut options.compaction;
        c.l0_trigger = c.l0_trigger.max(L0_TRIGGER_MIN);
        c.l0_slowdown_trigger = c.l0_slowdown_trigger.max(c.l0_trigger);
        c.l0_stop_trigger = c.l0_stop_trigger.max(c.l0_slowdown_trigger);
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
        let mut version = Version {
            levels: vec![Vec::new(); manifest_state.levels.len()],
        };
        for (level, files) in manifest_state.levels.iter().enumerate() {
            for meta in files {
                version.levels[level].push(open_table(dir, meta, cache.as_ref())?);
            }
        }
        remove_unlisted_tables(dir, &manifest_state)?;
        let wal = open_wal(dir, manifest_state.wal_flushed_lsn, options.wal_mapped)?;
        let active = Arc::new(MemtableHandle::new(memtable_capacity(&options)));
        let mut last_seq = manifest_state.last_seq;
        // What the WAL holds beyond the tables can exceed one memtable (a crash while flushes
        // lagged): replay into as many as it takes; the full ones are flushed once the store
        // is running.
        let mut active = active;
        let mut recovered_immutables: Vec<Arc<MemtableHandle>> = Vec::new();
        let replay_from = (manifest_state.wal_flushed_lsn + 1).max(wal.first_lsn());
        if replay_from < wal.next_lsn() {
            for record in wal.read_from(replay_from)? {
                let (lsn, bytes) = record?;
                let batch = WriteBatch::decode(&bytes).map_err(|reason| Error::Corruption {
                    path: dir.join("wal"),
                    offset: lsn,
                    reason,
                })?;
                if active.table.approximate_bytes() + batch_memory_bytes(&batch)
                    > options.memtable_bytes
                    && !active.table.is_empty()
                {
                    active.table.freeze();
                    let full = std::mem::replace(
                        &mut active,
                        Arc::new(MemtableHandle::new(memtable_capacity(&options))),
                    );
                    recovered_immutables.insert(0, full);
                }
                let first_seq = batch.first_seq();
                for (i, op) in batch.ops().enumerate() {
                    let seq = first_seq + i as u64;
                    insert(&active.table, op.0, seq, op.1, op.2)?;
                    last_seq = last_seq.max(seq);
                }
                active.wal_lsn_max.store(lsn, Ordering::Release);
            }
        }
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            options,
            wal,
            state: Mutex::new(State {
                active,
                immutables: recovered_immutables,
                version: Arc::new(version),
                last_seq,
                manifest_state,
                background_error: None,
                closing: false,
                snapshots: BTreeMap::new(),
                generation: 0,
                restores: 0,
            }),
            changed: Condvar::new(),
            write_lock: Mutex::new(WriteScratch::default()),
            queue: Mutex::new(std::collections::VecDeque::new()),
            queue_changed: Condvar::new(),
            manifest: Mutex::new(manifest),
            compaction_lock: Mutex::new(()),
            cache,
            counters: Counters::default(),
        });
        let flusher_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("strata-lsm-flush".into())
            .spawn(move || flusher_inner.flush_loop())
            .map_err(IoError::with("start the flush thread for", dir))?;
        Ok(Db {
            _flusher: Arc::new(FlusherGuard {
                inner: Arc::clone(&inner),
                thread: Mutex::new(Some(thread)),
            }),
            inner,
        })
    }
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
