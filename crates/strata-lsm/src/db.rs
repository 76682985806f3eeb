//! [`Db`]: writes through the WAL into memtables, reads across memtables and tables, flushes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use strata_memtable::{Memtable, ValueKind};
use strata_sstable::{BlockCache, ReadOptions, Table, TableBuilder, TableOptions};
use strata_wal::{Durability, Wal, WalOptions};

use crate::batch::{Logged, WriteBatch};
use crate::cache::LruBlockCache;
use crate::compaction::{self, CompactionOptions, Plan};
use crate::error::{Error, Result};
use crate::keys::{encode_internal_key, filter_key, parse_internal_key, seek_key, user_filter_key};
use crate::manifest::{FileMeta, Manifest, VersionEdit, VersionState};
use crate::scan::{
    Direction, LevelSource, LevelTable, MemtableSource, Source, TableSource, merge, prefix_bounds,
};

/// Options for [`Db::open`].
#[derive(Debug, Clone)]
pub struct Options {
    /// A memtable is switched for a new one (and flushed) once it holds this many bytes.
    /// Memory use is about this times (1 + `immutable_memtables_max`). Default 64 MiB.
    pub memtable_bytes: usize,
    /// How many full memtables may wait for their flush before writes wait too
    /// (backpressure). Default 2.
    pub immutable_memtables_max: usize,
    /// Options of the tables flushes and compactions write.
    pub table: TableOptions,
    /// When and how levels are compacted.
    pub compaction: CompactionOptions,
    /// Bytes of decoded data blocks kept in the shared LRU cache (0: no cache). Default 32 MiB.
    pub block_cache_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            memtable_bytes: 64 * 1024 * 1024,
            immutable_memtables_max: 2,
            table: TableOptions {
                filter_key,
                ..TableOptions::default()
            },
            compaction: CompactionOptions::default(),
            block_cache_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Options for one write.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Return only once the write is durable (`fdatasync`). Without it, a write survives a
    /// process crash but not a power cut.
    pub sync: bool,
}

/// The smallest memtable: below this, per-memtable overheads dominate.
const MEMTABLE_BYTES_MIN: usize = 64 * 1024;

/// A memtable's arena: its nominal size plus the most one admitted group can add beyond it
/// (`make_room` only lets a group in if it fits below the nominal size... plus a quarter of
/// headroom for the node overhead estimate).
fn memtable_capacity(options: &Options) -> usize {
    options.memtable_bytes + options.memtable_bytes / 4
}

/// An upper bound on the arena bytes a batch takes in a memtable: each operation costs its key
/// and value plus a node (header and tower, at most 16 + 8 * 20 bytes; 64 is ample on average,
/// and the quarter of headroom in the arena absorbs the rest).
fn batch_memory_bytes(batch: &WriteBatch) -> usize {
    batch.data_bytes() + 64 * batch.len()
}

/// The manifest is rewritten as a new generation once its edits exceed this.
const MANIFEST_REWRITE_BYTES: u64 = 4 * 1024 * 1024;

/// At most this many queued batches are committed together.
const GROUP_BATCHES_MAX: usize = 256;

/// A batch waiting in the write queue.
#[derive(Debug)]
struct Pending {
    batch: Mutex<Option<WriteBatch>>,
    sync: bool,
    /// Set by the leader that committed it: the batch's last sequence number, or the failure.
    result: Mutex<Option<std::result::Result<u64, String>>>,
}

/// The committing leader's buffers, kept between commits so that a commit allocates nothing.
#[derive(Debug, Default)]
struct WriteScratch {
    group: Vec<Arc<Pending>>,
    batches: Vec<Logged>,
    last_seqs: Vec<u64>,
}

/// A memtable and the highest WAL LSN whose records it holds.
#[derive(Debug)]
struct MemtableHandle {
    table: Memtable,
    max_wal_lsn: AtomicU64,
    /// Properties a forced flush asked to record in this memtable's table (whichever thread
    /// ends up flushing it), and the table it became.
    properties: Mutex<Vec<(String, Vec<u8>)>>,
    flushed_as: Mutex<Option<FileMeta>>,
}

impl MemtableHandle {
    fn new(capacity_bytes: usize) -> Self {
        Self {
            table: Memtable::with_capacity(capacity_bytes),
            max_wal_lsn: AtomicU64::new(0),
            properties: Mutex::new(Vec::new()),
            flushed_as: Mutex::new(None),
        }
    }
}

/// A table in the store, open.
#[derive(Debug)]
struct TableHandle {
    meta: FileMeta,
    table: Table,
    path: PathBuf,
    /// Set when a compaction replaced the table: the file is deleted when the last reader
    /// (a version, scan or snapshot read holding this handle) lets go.
    obsolete: AtomicBool,
    /// The shared cache, whose blocks of an obsolete table must go with it (they would keep
    /// its mapping, and the deleted file's disk space, alive).
    cache: Option<Arc<LruBlockCache>>,
}

impl Drop for TableHandle {
    fn drop(&mut self) {
        if self.obsolete.load(Ordering::Acquire) {
            if let Some(cache) = &self.cache {
                cache.evict_table(self.meta.number);
            }
            // Best effort: a leftover file is only garbage, removed by the next open.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn open_table(
    dir: &Path,
    meta: &FileMeta,
    cache: Option<&Arc<LruBlockCache>>,
) -> Result<Arc<TableHandle>> {
    let path = table_path(dir, meta.number);
    let options = ReadOptions {
        table_id: meta.number,
        cache: cache.map(|c| Arc::clone(c) as Arc<dyn strata_sstable::BlockCache>),
        filter_key,
    };
    let table = Table::open(&path, options)?;
    Ok(Arc::new(TableHandle {
        meta: meta.clone(),
        table,
        path,
        obsolete: AtomicBool::new(false),
        cache: cache.cloned(),
    }))
}

/// An immutable view of the tables.
#[derive(Debug, Default)]
struct Version {
    /// Per level; level 0 newest first.
    levels: Vec<Vec<Arc<TableHandle>>>,
}

#[derive(Debug)]
struct State {
    active: Arc<MemtableHandle>,
    /// Full memtables waiting to be flushed, newest first.
    immutables: Vec<Arc<MemtableHandle>>,
    version: Arc<Version>,
    /// The sequence number of the latest write visible to reads.
    last_seq: u64,
    manifest_state: VersionState,
    /// Set when a background flush fails; every later write fails with it.
    background_error: Option<String>,
    closing: bool,
    /// Sequence numbers pinned by live snapshots, with counts.
    snapshots: BTreeMap<u64, usize>,
    /// Bumped whenever `version` changes or a manual compaction lets go of the compaction
    /// lock: the flusher, finding the lock taken, waits for this to move without missing it.
    generation: u64,
}

/// Counters since open, for [`Stats`].
#[derive(Debug, Default)]
struct Counters {
    user_bytes: AtomicU64,
    flush_bytes: AtomicU64,
    compaction_read_bytes: AtomicU64,
    compaction_written_bytes: AtomicU64,
    ingested_bytes: AtomicU64,
    slowdowns: AtomicU64,
    stops: AtomicU64,
    stall_micros: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: Options,
    wal: Wal,
    state: Mutex<State>,
    /// Signalled when a flush finishes or is needed.
    changed: Condvar,
    /// Held by the committing leader (and by a forced flush's memtable switch, and an ingest):
    /// sequence numbers, WAL order and memtable inserts agree. Holds the leader's buffers.
    write_lock: Mutex<WriteScratch>,
    /// Writers waiting to be committed, in arrival order.
    queue: Mutex<std::collections::VecDeque<Arc<Pending>>>,
    queue_changed: Condvar,
    manifest: Mutex<Manifest>,
    /// One compaction at a time.
    compaction_lock: Mutex<()>,
    cache: Option<Arc<LruBlockCache>>,
    counters: Counters,
}

/// An embedded LSM key-value store. Cheap to clone; every clone is the same store.
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<Inner>,
    _flusher: Arc<FlusherGuard>,
}

/// Stops the background flusher when the last `Db` handle goes.
#[derive(Debug)]
struct FlusherGuard {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for FlusherGuard {
    fn drop(&mut self) {
        self.inner.state.lock().closing = true;
        self.inner.changed.notify_all();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

fn table_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.sst"))
}

fn wal_options(first_lsn: u64) -> WalOptions {
    WalOptions {
        durability: Durability::NoSync,
        first_lsn,
        ..WalOptions::default()
    }
}

/// Opens the WAL so that its next LSN is past `flushed_lsn`. A crash can leave the log ending
/// before records that a flush already put in tables (their WAL tail was never synced); new
/// records must not reuse those LSNs, or recovery would skip them as flushed. Everything in
/// such a log is in tables, so it is removed and started again past the flushed LSN.
fn open_wal(dir: &Path, flushed_lsn: u64) -> Result<Wal> {
    let wal_dir = dir.join("wal");
    let (wal, _) = Wal::open(&wal_dir, wal_options(flushed_lsn + 1))?;
    if wal.next_lsn() > flushed_lsn {
        return Ok(wal);
    }
    drop(wal);
    std::fs::remove_dir_all(&wal_dir).map_err(|e| Error::Io {
        op: "remove a fully flushed WAL",
        path: wal_dir.clone(),
        source: e,
    })?;
    strata_fs::sync_dir(dir)?;
    let (wal, _) = Wal::open(&wal_dir, wal_options(flushed_lsn + 1))?;
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
        options.immutable_memtables_max = options.immutable_memtables_max.max(1);
        let c = &mut options.compaction;
        c.l0_trigger = c.l0_trigger.max(2);
        c.l0_slowdown_trigger = c.l0_slowdown_trigger.max(c.l0_trigger);
        c.l0_stop_trigger = c.l0_stop_trigger.max(c.l0_slowdown_trigger);
        std::fs::create_dir_all(dir).map_err(|e| Error::Io {
            op: "create store directory",
            path: dir.to_path_buf(),
            source: e,
        })?;
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
        let wal = open_wal(dir, manifest_state.wal_flushed_lsn)?;
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
                active.max_wal_lsn.store(lsn, Ordering::Release);
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
            .map_err(|e| Error::Io {
                op: "start the flush thread for",
                path: dir.to_path_buf(),
                source: e,
            })?;
        Ok(Db {
            _flusher: Arc::new(FlusherGuard {
                inner: Arc::clone(&inner),
                thread: Mutex::new(Some(thread)),
            }),
            inner,
        })
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn put(&self, key: &[u8], value: &[u8], options: WriteOptions) -> Result<u64> {
        let mut batch = WriteBatch::with_capacity(key.len() + value.len());
        batch.put(key, value);
        self.write(batch, options)
    }

    /// Deletes `key`.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn delete(&self, key: &[u8], options: WriteOptions) -> Result<u64> {
        let mut batch = WriteBatch::with_capacity(key.len());
        batch.delete(key);
        self.write(batch, options)
    }

    /// Applies `batch` atomically: readers see all of it or none of it, and after a crash it
    /// is all there or all gone. Returns the sequence number of its last operation.
    ///
    /// # Errors
    ///
    /// A WAL error (a failed fsync makes the store refuse further writes), or an earlier
    /// background flush failure. A batch committed by another writer's group reports that
    /// group's failure as [`Error::WriteFailed`].
    pub fn write(&self, batch: WriteBatch, options: WriteOptions) -> Result<u64> {
        if batch.is_empty() {
            return Ok(self.inner.state.lock().last_seq);
        }
        // Refuse what could not be stored before it reaches the WAL: once logged, a write
        // must never fail.
        if batch.escaped_key_max() + 10 > strata_sstable::KEY_BYTES_MAX {
            let too_large = |key: &&[u8]| {
                key.len() + key.iter().filter(|&&b| b == 0).count() + 10
                    > strata_sstable::KEY_BYTES_MAX
            };
            let len = batch
                .ops()
                .map(|(_, key, _)| key)
                .find(too_large)
                .map_or(0, <[u8]>::len);
            return Err(Error::KeyTooLarge { len });
        }
        let bytes = batch_memory_bytes(&batch);
        if bytes > self.inner.options.memtable_bytes / 4 {
            return Err(Error::BatchTooLarge {
                bytes,
                max: self.inner.options.memtable_bytes / 4,
            });
        }
        let mut queue = self.inner.queue.lock();
        // Alone: nobody queued and nobody committing. Commit directly, without queueing; a
        // writer arriving meanwhile queues and leads the next group.
        if queue.is_empty()
            && let Some(mut scratch) = self.inner.write_lock.try_lock()
        {
            drop(queue);
            let scratch = &mut *scratch;
            scratch.batches.clear();
            scratch.batches.push(Logged(batch));
            let committed = self.inner.commit_batches(
                &mut scratch.batches,
                &mut scratch.last_seqs,
                options.sync,
            );
            scratch.batches.clear();
            return committed.map(|()| scratch.last_seqs[0]);
        }
        let pending = Arc::new(Pending {
            batch: Mutex::new(Some(batch)),
            sync: options.sync,
            result: Mutex::new(None),
        });
        queue.push_back(Arc::clone(&pending));
        // Group commit: the writer at the front leads, committing every batch queued behind
        // it with one WAL write and at most one fdatasync; the others wait for their result.
        loop {
            if let Some(result) = pending.result.lock().take() {
                return result.map_err(|cause| Error::WriteFailed { cause });
            }
            if queue
                .front()
                .is_some_and(|front| Arc::ptr_eq(front, &pending))
            {
                break;
            }
            self.inner.queue_changed.wait(&mut queue);
        }
        // Only the leader pops the queue: it stays at the front while it waits for the write
        // lock (not held across that wait, so that writers keep queueing).
        drop(queue);
        let mut scratch = self.inner.write_lock.lock();
        let scratch = &mut *scratch;
        {
            // The group is capped by count and by memory, so that it always fits the memtable
            // `make_room` gives it.
            let queue = self.inner.queue.lock();
            let mut group_bytes = 0usize;
            scratch.group.clear();
            scratch.group.extend(
                queue
                    .iter()
                    .take(GROUP_BATCHES_MAX)
                    .take_while(|p| {
                        let bytes = p.batch.lock().as_ref().map_or(0, batch_memory_bytes);
                        let fits = group_bytes == 0
                            || group_bytes + bytes <= self.inner.options.memtable_bytes / 4;
                        group_bytes += bytes;
                        fits
                    })
                    .cloned(),
            );
        }
        let committed = self.inner.commit_group(scratch);
        let mut queue = self.inner.queue.lock();
        let own = match committed {
            Ok(()) => {
                for (p, last) in scratch.group.iter().zip(&scratch.last_seqs).skip(1) {
                    *p.result.lock() = Some(Ok(*last));
                }
                Ok(scratch.last_seqs[0])
            }
            Err(e) => {
                let cause = strata_fs::display_chain(&e);
                for p in scratch.group.iter().skip(1) {
                    *p.result.lock() = Some(Err(cause.clone()));
                }
                Err(e)
            }
        };
        for _ in 0..scratch.group.len() {
            queue.pop_front();
        }
        scratch.group.clear();
        self.inner.queue_changed.notify_all();
        own
    }

    /// The newest value of `key`, or `None` if it is absent or deleted.
    ///
    /// # Errors
    ///
    /// A table read error (a damaged block is never returned as data).
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.get_at(key, None)
    }

    /// A consistent view: reads through it see the store as of now.
    pub fn snapshot(&self) -> Snapshot {
        let mut state = self.inner.state.lock();
        let seq = state.last_seq;
        *state.snapshots.entry(seq).or_insert(0) += 1;
        Snapshot {
            db: self.clone(),
            seq,
        }
    }

    /// Compacts every level down into the last non-empty one (or one below level 0), dropping
    /// every version no snapshot needs. Returns once done.
    ///
    /// # Errors
    ///
    /// A table or manifest error.
    pub fn compact(&self) -> Result<()> {
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
                self.inner.fail(&e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// A read's view: the sequence number (the latest, or a snapshot's) and the memtables and
    /// tables, taken together so that no compaction can drop a version the read needs between
    /// choosing the sequence number and pinning the tables.
    fn view(
        &self,
        at: Option<u64>,
    ) -> (
        u64,
        Arc<MemtableHandle>,
        Vec<Arc<MemtableHandle>>,
        Arc<Version>,
    ) {
        let state = self.inner.state.lock();
        (
            at.unwrap_or(state.last_seq),
            Arc::clone(&state.active),
            state.immutables.clone(),
            Arc::clone(&state.version),
        )
    }

    fn get_at(&self, key: &[u8], at: Option<u64>) -> Result<Option<Vec<u8>>> {
        let (seq, active, immutables, version) = self.view(at);
        for memtable in std::iter::once(&active).chain(immutables.iter()) {
            if let Some(entry) = memtable.table.get(key, seq) {
                return Ok(match entry.kind {
                    ValueKind::Put => Some(entry.value.to_vec()),
                    ValueKind::Delete => None,
                });
            }
        }
        let filter = user_filter_key(key);
        let target = seek_key(key, seq);
        for (level, files) in version.levels.iter().enumerate() {
            if level == 0 {
                // Level 0 tables may overlap: newest first, each may hold the key.
                for handle in files {
                    if let Some(found) = table_get(handle, &filter, &target, key)? {
                        return Ok(found);
                    }
                }
            } else {
                // Below level 0 tables are disjoint and every version of a key is in one
                // table: the first whose largest key is not below the target.
                let at = files.partition_point(|h| h.meta.largest.as_slice() < target.as_slice());
                if let Some(handle) = files.get(at)
                    && let Some(found) = table_get(handle, &filter, &target, key)?
                {
                    return Ok(found);
                }
            }
        }
        Ok(None)
    }

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
        if properties
            .iter()
            .any(|(name, _)| name.starts_with("strata."))
        {
            return Err(strata_sstable::Error::ReservedProperty.into());
        }
        let target = {
            let _writer = self.inner.write_lock.lock();
            let mut state = self.inner.state.lock();
            if state.active.table.is_empty() {
                None
            } else {
                *state.active.properties.lock() = properties
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                    .collect();
                let target = Arc::clone(&state.active);
                self.inner.rotate(&mut state);
                Some(target)
            }
        };
        // Flush until the memtable switched out above is a table (the background thread may
        // flush some of the older ones, or even it, meanwhile).
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
            match self.inner.flush_oldest() {
                Ok(Some(meta)) => written.push(meta),
                Ok(None) if target.is_none() => return Ok(written),
                // Someone else is flushing the target: wait for them.
                Ok(None) => {
                    let mut state = self.inner.state.lock();
                    if target
                        .as_ref()
                        .is_some_and(|t| t.flushed_as.lock().is_none())
                        && state.background_error.is_none()
                    {
                        self.inner.changed.wait(&mut state);
                    }
                    if let Some(cause) = &state.background_error {
                        return Err(Error::ReadOnly {
                            cause: cause.clone(),
                        });
                    }
                }
                Err(e) => {
                    self.inner.fail(&e);
                    return Err(e);
                }
            }
        }
    }

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
        std::fs::create_dir(path).map_err(|e| Error::Io {
            op: "create checkpoint directory",
            path: path.to_path_buf(),
            source: e,
        })?;
        for meta in state.levels.iter().flatten() {
            let from = table_path(&self.inner.dir, meta.number);
            let to = table_path(path, meta.number);
            std::fs::hard_link(&from, &to).map_err(|e| Error::Io {
                op: "link table into checkpoint",
                path: to,
                source: e,
            })?;
        }
        let mut exported = state;
        // Everything is in tables: the copy's WAL starts empty, past what this one used.
        exported.wal_flushed_lsn = self.inner.wal.next_lsn().saturating_sub(1);
        drop(Manifest::create(path, 1, &exported)?);
        strata_fs::sync_dir(path)?;
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
                &inner.options.table,
                inner.options.compaction.target_file_bytes,
                || inner.new_table_number(),
            )?
        };
        let mut handles = Vec::with_capacity(ingested.len());
        for meta in &ingested {
            match open_table(&inner.dir, meta, inner.cache.as_ref()) {
                Ok(handle) => {
                    handle.obsolete.store(true, Ordering::Release);
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
        self.scan_at(None, lower, upper, direction, visit)
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
        at: Option<u64>,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        direction: Direction,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let (seq, active, immutables, version) = self.view(at);
        let owned = |b: Bound<&[u8]>| match b {
            Bound::Unbounded => Bound::Unbounded,
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        };
        let mut sources: Vec<Box<dyn Source + '_>> = Vec::new();
        for memtable in std::iter::once(&active).chain(immutables.iter()) {
            let range = memtable.table.range(lower, upper);
            match direction {
                Direction::Forward => sources.push(Box::new(MemtableSource { entries: range })),
                Direction::Reverse => sources.push(Box::new(MemtableSource {
                    entries: range.rev(),
                })),
            }
        }
        for (level, handles) in version.levels.iter().enumerate() {
            if level == 0 {
                // Level 0 tables overlap: each is a source of its own.
                for handle in handles {
                    sources.push(Box::new(TableSource::new(
                        &handle.table,
                        direction,
                        owned(lower),
                        owned(upper),
                    )));
                }
            } else if !handles.is_empty() {
                let tables = handles
                    .iter()
                    .map(|h| LevelTable {
                        table: &h.table,
                        smallest: &h.meta.smallest,
                        largest: &h.meta.largest,
                    })
                    .collect();
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

    /// Counters and sizes: per-level tables and bytes, block cache hits and misses, bytes
    /// written by each stage (for write amplification), write stalls. Counters start at zero
    /// at open.
    pub fn stats(&self) -> Stats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.inner.counters;
        let state = self.inner.state.lock();
        let levels = state
            .version
            .levels
            .iter()
            .map(|files| LevelStats {
                tables: files.len(),
                bytes: files.iter().map(|h| h.meta.size).sum(),
            })
            .collect();
        Stats {
            levels,
            last_seq: state.last_seq,
            cache_hits: self.inner.cache.as_ref().map_or(0, |c| c.hits()),
            cache_misses: self.inner.cache.as_ref().map_or(0, |c| c.misses()),
            cache_bytes: self.inner.cache.as_ref().map_or(0, |c| c.bytes()),
            wal_records: self.inner.wal.metrics().records,
            wal_syncs: self.inner.wal.metrics().syncs,
            wal_bytes: self.inner.wal.metrics().bytes,
            user_bytes: load(&c.user_bytes),
            flush_bytes: load(&c.flush_bytes),
            compaction_read_bytes: load(&c.compaction_read_bytes),
            compaction_written_bytes: load(&c.compaction_written_bytes),
            ingested_bytes: load(&c.ingested_bytes),
            write_slowdowns: load(&c.slowdowns),
            write_stops: load(&c.stops),
            stall_micros: load(&c.stall_micros),
        }
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

/// Statistics from [`Db::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per level.
    pub levels: Vec<LevelStats>,
    /// The latest sequence number.
    pub last_seq: u64,
    /// Block cache lookups that hit.
    pub cache_hits: u64,
    /// Block cache lookups that missed.
    pub cache_misses: u64,
    /// Bytes in the block cache.
    pub cache_bytes: usize,
    /// WAL records written (one per committed batch) and `fdatasync`s since open: with many
    /// sync writers, group commit makes the second much smaller than the first.
    pub wal_records: u64,
    /// See `wal_records`.
    pub wal_syncs: u64,
    /// Bytes written to the WAL, framing included.
    pub wal_bytes: u64,
    /// Key and value bytes of every write committed since open.
    pub user_bytes: u64,
    /// Bytes of level-0 tables written by flushes.
    pub flush_bytes: u64,
    /// Bytes of tables read by compactions.
    pub compaction_read_bytes: u64,
    /// Bytes of tables written by compactions.
    pub compaction_written_bytes: u64,
    /// Bytes of tables written by [`Db::ingest`].
    pub ingested_bytes: u64,
    /// Write groups delayed because level 0 reached `l0_slowdown_trigger`.
    pub write_slowdowns: u64,
    /// Times writes waited: level 0 at `l0_stop_trigger`, or too many memtables unflushed.
    pub write_stops: u64,
    /// Total time writes spent delayed or waiting, in microseconds.
    pub stall_micros: u64,
}

impl Stats {
    /// Write amplification: bytes the store wrote to disk (WAL, flushes, compactions) per
    /// byte of keys and values written to it; 0 before any write. Tables an ingest writes
    /// count as neither, but an ingest that merges with a level's tables is a compaction.
    pub fn write_amplification(&self) -> f64 {
        if self.user_bytes == 0 {
            return 0.0;
        }
        (self.wal_bytes + self.flush_bytes + self.compaction_written_bytes) as f64
            / self.user_bytes as f64
    }
}

/// One level's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LevelStats {
    /// Tables in the level.
    pub tables: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// A pinned view of the store; see [`Db::snapshot`]. Compactions keep the versions it reads
/// until it is dropped.
#[derive(Debug)]
pub struct Snapshot {
    db: Db,
    seq: u64,
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
    /// As [`Db::get`].
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_at(key, Some(self.seq))
    }

    /// [`Db::scan`] as of the snapshot.
    ///
    /// # Errors
    ///
    /// As [`Db::scan`].
    pub fn scan(
        &self,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        direction: Direction,
        visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        self.db
            .scan_at(Some(self.seq), lower, upper, direction, visit)
    }

    /// The sequence number the snapshot reads at.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

fn insert(table: &Memtable, kind: ValueKind, seq: u64, key: &[u8], value: &[u8]) -> Result<()> {
    table
        .insert(key, seq, kind, value)
        .map_err(|_| Error::Corruption {
            path: PathBuf::from("memtable"),
            offset: seq,
            reason: "memtable refused an insert (full or duplicate)",
        })
}

/// Looks `key` up in one table: `Some(Some(v))` found, `Some(None)` deleted, `None` absent.
fn table_get(
    handle: &TableHandle,
    filter: &[u8],
    target: &[u8],
    key: &[u8],
) -> Result<Option<Option<Vec<u8>>>> {
    if !handle.table.may_contain(filter) {
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
    let parsed = parse_internal_key(iter.key()).ok_or_else(|| Error::Corruption {
        path: handle.table.path().to_path_buf(),
        offset: 0,
        reason: "table key is not an internal key",
    })?;
    if parsed.user_key != key {
        return Ok(None);
    }
    Ok(Some(match parsed.kind {
        ValueKind::Put => Some(iter.value().to_vec()),
        ValueKind::Delete => None,
    }))
}

impl Inner {
    /// Commits the group of queued batches in `scratch` (whose holder holds the write lock):
    /// sequence numbers in order, one WAL write, one `fdatasync` if any of them asked for it,
    /// then the memtable, then visibility. Leaves each batch's last sequence number in
    /// `scratch.last_seqs`.
    fn commit_group(&self, scratch: &mut WriteScratch) -> Result<()> {
        let WriteScratch {
            group,
            batches,
            last_seqs,
        } = scratch;
        batches.clear();
        for p in group.iter() {
            batches.push(Logged(
                p.batch
                    .lock()
                    .take()
                    .expect("a queued batch is committed by one leader, once"),
            ));
        }
        let sync = group.iter().any(|p| p.sync);
        let committed = self.commit_batches(batches, last_seqs, sync);
        // The batches' buffers go now, on failure too, not at the next commit.
        batches.clear();
        committed
    }

    /// Commits `batches` (the caller holds the write lock), leaving each one's last sequence
    /// number in `last_seqs`; see [`commit_group`](Self::commit_group).
    fn commit_batches(
        &self,
        batches: &mut [Logged],
        last_seqs: &mut Vec<u64>,
        sync: bool,
    ) -> Result<()> {
        last_seqs.clear();
        let needed: usize = batches.iter().map(|b| batch_memory_bytes(&b.0)).sum();
        let active = self.make_room(needed)?;
        let mut next_seq = self.state.lock().last_seq + 1;
        for Logged(batch) in batches.iter_mut() {
            batch.set_first_seq(next_seq);
            next_seq += batch.len() as u64;
            last_seqs.push(next_seq - 1);
        }
        let lsns = self.wal.append_batch(batches)?;
        let user_bytes: usize = batches.iter().map(|b| b.0.data_bytes()).sum();
        bump(&self.counters.user_bytes, user_bytes as u64);
        // From here the group is in the WAL: any failure would leave memory and log disagreeing,
        // so it makes the store read-only (a reopen replays the log).
        let applied = (|| {
            if sync {
                self.wal.sync()?;
            }
            for Logged(batch) in batches.iter() {
                let first_seq = batch.first_seq();
                for (i, op) in batch.ops().enumerate() {
                    insert(&active.table, op.0, first_seq + i as u64, op.1, op.2)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = applied {
            self.fail(&e);
            return Err(e);
        }
        active.max_wal_lsn.store(*lsns.end(), Ordering::Release);
        // Visible only now, all at once: readers never see part of a batch.
        self.state.lock().last_seq = next_seq - 1;
        Ok(())
    }

    /// Returns the memtable to write into, switching to a new one when the active one is
    /// full. Backpressure happens here, with the write lock held so that every writer feels
    /// it: a group is delayed by a millisecond once level 0 reaches the slowdown trigger, and
    /// waits while level 0 is at the stop trigger or too many memtables wait for a flush.
    fn make_room(&self, needed: usize) -> Result<Arc<MemtableHandle>> {
        let mut state = self.state.lock();
        let mut slowed = false;
        let mut stalled_since: Option<std::time::Instant> = None;
        let room = loop {
            if let Some(cause) = &state.background_error {
                return Err(Error::ReadOnly {
                    cause: cause.clone(),
                });
            }
            let l0 = state.version.levels[0].len();
            let compaction = &self.options.compaction;
            if l0 >= compaction.l0_stop_trigger && !state.closing {
                if stalled_since.is_none() {
                    bump(&self.counters.stops, 1);
                    stalled_since = Some(std::time::Instant::now());
                }
                self.changed.wait(&mut state);
                continue;
            }
            if l0 >= compaction.l0_slowdown_trigger && !slowed && stalled_since.is_none() {
                slowed = true;
                bump(&self.counters.slowdowns, 1);
                let start = std::time::Instant::now();
                // Not a wait for a condition: a deliberate delay that hands the compaction
                // thread time (and, on a small machine, the CPU) before writes must stop.
                parking_lot::MutexGuard::unlocked(&mut state, || {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                });
                bump(&self.counters.stall_micros, micros(start));
                continue;
            }
            let used = state.active.table.approximate_bytes();
            if used + needed <= self.options.memtable_bytes || state.active.table.is_empty() {
                break Arc::clone(&state.active);
            }
            if state.immutables.len() >= self.options.immutable_memtables_max {
                if stalled_since.is_none() {
                    bump(&self.counters.stops, 1);
                    stalled_since = Some(std::time::Instant::now());
                }
                self.changed.wait(&mut state);
                continue;
            }
            self.rotate(&mut state);
        };
        if let Some(since) = stalled_since {
            bump(&self.counters.stall_micros, micros(since));
        }
        Ok(room)
    }

    fn rotate(&self, state: &mut State) {
        state.active.table.freeze();
        let full = std::mem::replace(
            &mut state.active,
            Arc::new(MemtableHandle::new(memtable_capacity(&self.options))),
        );
        state.immutables.insert(0, full);
        self.changed.notify_all();
    }

    /// Puts the store into the read-only error state: a flush or compaction failed part-way
    /// (a failed fsync among the possibilities), so nothing more may be written until a reopen
    /// recovers from what is durable.
    fn fail(&self, e: &Error) {
        let mut state = self.state.lock();
        if state.background_error.is_none() {
            state.background_error = Some(strata_fs::display_chain(e));
        }
        self.changed.notify_all();
    }

    fn compaction_due(&self, state: &State) -> bool {
        compaction::pick(&state.manifest_state.levels, &self.options.compaction).is_some()
    }

    fn flush_loop(&self) {
        loop {
            let (flush, generation) = {
                let mut state = self.state.lock();
                while state.immutables.is_empty() && !self.compaction_due(&state) && !state.closing
                {
                    self.changed.wait(&mut state);
                }
                if state.closing {
                    return;
                }
                (!state.immutables.is_empty(), state.generation)
            };
            let result = if flush {
                self.flush_oldest().map(|_| ())
            } else {
                match self.compact_once() {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        // A manual compaction, ingest or checkpoint holds the compaction lock:
                        // rather than block (flushes would stall behind it), wait until it
                        // changes something or lets go, or a flush is needed.
                        let mut state = self.state.lock();
                        while state.generation == generation
                            && state.immutables.is_empty()
                            && !state.closing
                        {
                            self.changed.wait(&mut state);
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = result {
                self.fail(&e);
                return;
            }
        }
    }

    /// Applies a durable edit to the in-memory manifest state; an edit that contradicts it is
    /// corruption (`offset`: the table concerned, or 0).
    fn apply_edit(&self, state: &mut State, edit: &VersionEdit, offset: u64) -> Result<()> {
        state
            .manifest_state
            .apply(edit)
            .map_err(|reason| Error::Corruption {
                path: self.dir.clone(),
                offset,
                reason,
            })
    }

    /// A number (and path) for a new table.
    fn new_table_number(&self) -> (u64, PathBuf) {
        let mut state = self.state.lock();
        let number = state.manifest_state.next_file_number;
        state.manifest_state.next_file_number += 1;
        (number, table_path(&self.dir, number))
    }

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
            handle.obsolete.store(false, Ordering::Release);
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
        state.version = Arc::new(Version { levels });
        state.generation += 1;
        state.last_seq = state.last_seq.max(seq);
        self.changed.notify_all();
        let snapshot = state.manifest_state.clone();
        drop(state);
        self.maybe_rewrite_manifest(manifest, &snapshot)?;
        Ok(edit.added)
    }

    /// Takes the compaction lock for a caller other than the flusher; letting go wakes the
    /// flusher, which may have found the lock taken.
    fn manual_compaction_lock(&self) -> ManualCompaction<'_> {
        ManualCompaction {
            inner: self,
            guard: Some(self.compaction_lock.lock()),
        }
    }

    /// Runs the compaction `pick` chooses, if any. False if the compaction lock was taken.
    fn compact_once(&self) -> Result<bool> {
        let Some(_one) = self.compaction_lock.try_lock() else {
            return Ok(false);
        };
        let plan = {
            let state = self.state.lock();
            compaction::pick(&state.manifest_state.levels, &self.options.compaction)
        };
        if let Some(plan) = plan {
            self.run_compaction(&plan, Vec::new(), None)?;
        }
        Ok(true)
    }

    /// Merges the plan's inputs (and `extra` tables not in the store: an ingest's) into new
    /// tables, records the change in the manifest (with `last_seq`, if given: an ingest's
    /// sequence number, made visible with the tables), and installs it; the inputs' files go
    /// when their last reader does. Returns the new tables. Called with the compaction lock
    /// held.
    fn run_compaction(
        &self,
        plan: &Plan,
        extra: Vec<Arc<TableHandle>>,
        last_seq: Option<u64>,
    ) -> Result<Vec<FileMeta>> {
        strata_fs::failpoint::check(crate::FP_COMPACTION).map_err(|e| Error::Io {
            op: "compact tables in",
            path: self.dir.clone(),
            source: e,
        })?;
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
            let oldest = state
                .snapshots
                .keys()
                .next()
                .copied()
                .unwrap_or(state.last_seq)
                .min(state.last_seq);
            (handles, oldest)
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
            &self.options.table,
            self.options.compaction.target_file_bytes,
            || self.new_table_number(),
        )?;
        bump(
            &self.counters.compaction_read_bytes,
            handles.iter().map(|h| h.meta.size).sum(),
        );
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
                    h.obsolete.store(true, Ordering::Release);
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
        state.version = Arc::new(Version { levels });
        state.generation += 1;
        if let Some(seq) = last_seq {
            state.last_seq = state.last_seq.max(seq);
        }
        self.changed.notify_all();
        let snapshot = state.manifest_state.clone();
        drop(state);
        self.maybe_rewrite_manifest(manifest, &snapshot)?;
        Ok(edit.added)
    }

    /// Starts a new manifest generation (a snapshot of the state, then a `CURRENT` swap) once
    /// the live one has grown past [`MANIFEST_REWRITE_BYTES`], so that reopening stays fast and
    /// the manifest's size stays bounded.
    fn maybe_rewrite_manifest(
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

    /// Writes the oldest full memtable to a level-0 table, records it in the manifest, and
    /// drops the memtable and the WAL segments it covered. `None` if there was nothing to do.
    fn flush_oldest(&self) -> Result<Option<FileMeta>> {
        // One flush at a time (the background thread and `Db::flush` may both try).
        let manifest = self.manifest.lock();
        let (memtable, number, last_seq) = {
            let mut state = self.state.lock();
            let Some(memtable) = state.immutables.last().cloned() else {
                return Ok(None);
            };
            let number = state.manifest_state.next_file_number;
            state.manifest_state.next_file_number += 1;
            (memtable, number, state.last_seq)
        };
        let path = table_path(&self.dir, number);
        let mut builder = TableBuilder::create(&path, self.options.table.clone())?;
        for (name, value) in memtable.properties.lock().iter() {
            builder.set_property(name, value)?;
        }
        let mut key = Vec::new();
        let (mut smallest_seq, mut largest_seq) = (u64::MAX, 0);
        let mut smallest = None;
        for entry in memtable
            .table
            .range(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
        {
            key.clear();
            encode_internal_key(&mut key, entry.user_key, entry.seq, entry.kind);
            builder.add(&key, entry.value)?;
            smallest.get_or_insert_with(|| key.clone());
            smallest_seq = smallest_seq.min(entry.seq);
            largest_seq = largest_seq.max(entry.seq);
        }
        let summary = builder.finish()?;
        bump(&self.counters.flush_bytes, summary.file_bytes);
        let meta = FileMeta {
            number,
            level: 0,
            size: summary.file_bytes,
            smallest: smallest.unwrap_or_default(),
            largest: key,
            smallest_seq: smallest_seq.min(largest_seq),
            largest_seq,
        };
        let flushed_lsn = memtable.max_wal_lsn.load(Ordering::Acquire);
        let edit = VersionEdit {
            wal_flushed_lsn: Some(flushed_lsn),
            next_file_number: Some(number + 1),
            last_seq: Some(last_seq.max(largest_seq)),
            added: vec![meta.clone()],
            deleted: Vec::new(),
        };
        manifest.append(&edit)?;
        let handle = open_table(&self.dir, &meta, self.cache.as_ref())?;
        {
            let mut state = self.state.lock();
            self.apply_edit(&mut state, &edit, number)?;
            let mut levels = state.version.levels.clone();
            levels[0].insert(0, handle);
            state.version = Arc::new(Version { levels });
            state.generation += 1;
            state.immutables.pop();
            *memtable.flushed_as.lock() = Some(meta.clone());
            self.changed.notify_all();
        }
        let snapshot = self.state.lock().manifest_state.clone();
        self.maybe_rewrite_manifest(manifest, &snapshot)?;
        self.wal.purge_before(flushed_lsn + 1)?;
        Ok(Some(meta))
    }
}

/// The compaction lock held by a manual compaction, ingest or checkpoint.
struct ManualCompaction<'a> {
    inner: &'a Inner,
    guard: Option<parking_lot::MutexGuard<'a, ()>>,
}

impl Drop for ManualCompaction<'_> {
    fn drop(&mut self) {
        // Release first, then wake the flusher: woken earlier, it could find the lock still
        // taken and wait for a change that never comes.
        drop(self.guard.take());
        self.inner.state.lock().generation += 1;
        self.inner.changed.notify_all();
    }
}

fn micros(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
    }
}

/// Deletes `.sst` files the manifest does not list: outputs of a flush or compaction a crash
/// interrupted before its edit, and inputs whose deletion a crash interrupted.
fn remove_unlisted_tables(dir: &Path, state: &VersionState) -> Result<()> {
    let live: std::collections::HashSet<u64> =
        state.levels.iter().flatten().map(|f| f.number).collect();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::Io {
        op: "list",
        path: dir.to_path_buf(),
        source: e,
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::Io {
            op: "list",
            path: dir.to_path_buf(),
            source: e,
        })?;
        let name = entry.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.strip_suffix(".sst"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(number) = number
            && !live.contains(&number)
        {
            std::fs::remove_file(entry.path()).map_err(|e| Error::Io {
                op: "remove unlisted table",
                path: entry.path(),
                source: e,
            })?;
        }
    }
    Ok(())
}
