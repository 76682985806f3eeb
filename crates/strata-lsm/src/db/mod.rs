//! [`Db`]: writes through the WAL into memtables, reads across memtables and tables, flushes.
//!
//! This module holds what every part of the store shares: the [`Options`], the memtable
//! handles, the `State` behind the state lock, and `Inner`, which every `Db` handle and the
//! background flusher hold. The work is split by job into modules, each adding `impl` blocks to
//! `Db` and `Inner` (as RocksDB's `db_impl_*` files do):
//!
//! - `open`: opening a store and recovering it (manifest, tables, WAL replay, leftovers).
//! - `write`: group commit through the WAL into the memtable, memtable switches, backpressure.
//! - `read`: point reads, scans and snapshots.
//! - `flush`: writing full memtables to level-0 tables, and the flush thread.
//! - `compact`: picking and running compactions (the compaction thread), and manual compaction.
//! - `external`: what crosses the store's boundary: checkpoints, ingest, live files.
//! - `capture`: a Raft snapshot taken on the apply path ([`Db::capture`]) and written out as a
//!   flat file set off it ([`Capture::write_to`]).
//! - `restore`: replacing the whole store with such a file set ([`Db::restore`]).
//! - `stats`: counters and sizes.
//! - `version`: the open tables that make up the store, and the manifest edits that change them.

mod capture;
mod compact;
mod external;
mod flush;
mod open;
mod read;
mod restore;
mod stats;
mod version;
mod write;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::{Condvar, Mutex};
use strata_memtable::Memtable;
use strata_sstable::TableOptions;
use strata_wal::Wal;

use crate::batch::WriteBatch;
use crate::cache::LruBlockCache;
use crate::compaction::CompactionOptions;
use crate::error::{Error, Result};
use crate::keys::filter_key;
use crate::manifest::{FileMeta, Manifest, VersionState};

pub use capture::Capture;
pub use external::LiveFile;
pub use read::Snapshot;
pub use stats::{LevelStats, Stats};

use stats::Counters;
use version::Version;
use write::{Pending, WriteScratch};

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
    /// Bytes of verified data blocks kept in the shared LRU cache (0: no cache): a hit skips the
    /// block's checksum (and, for a compressed table, its decompression). Default 32 MiB.
    pub block_cache_bytes: usize,
    /// Write the WAL's tail through a shared memory map instead of with a `write` per group of
    /// writes (`strata_wal::WalOptions::mapped_tail`): the same guarantees (a write survives a
    /// crash of the process once it returns; `sync` writes are durable), with a copy instead of
    /// a system call, which roughly doubles single-writer throughput. A process that also
    /// `fsync`s another log on the same disk all the time may do better without it (the
    /// server, when its LSM still had a WAL, measured 15-20% fewer puts with it). Default
    /// true. No effect without a WAL (`wal`).
    pub wal_mapped: bool,
    /// Whether writes go to the write-ahead log. Default true. Without it a write goes to the
    /// memtable alone: it is readable at once, but durable only once a flush has written its
    /// memtable to a table, so a crash loses every write no flush covered (the tables always
    /// hold a prefix of the writes, whole batches). A write with `sync` set flushes before it
    /// returns, and closing the store flushes what it holds (call [`Db::flush`] first to see
    /// an error). For a caller that keeps its own durable log and replays it from what the
    /// tables hold: a Raft state machine, which records its applied index in its batches and
    /// keeps its Raft log from there (it then writes each entry once, not twice). A WAL left
    /// by an earlier open with one is still replayed, and removed once flushed.
    pub wal: bool,
    /// Whether [`Db::open`] makes a new store where there is none. Default true. Without it,
    /// opening a directory that does not exist or holds no store fails with
    /// [`Error::NoStore`] and creates nothing (RocksDB's `create_if_missing`).
    pub create_if_missing: bool,
    /// Also record each key's prefix in the tables' bloom filters, so that
    /// [`Db::scan_in_prefix`] skips the tables that hold nothing under a prefix. Default none.
    /// Tables written without it, or with an extractor of another name, are read as before:
    /// their filters are not trusted for prefixes.
    pub prefix_extractor: Option<crate::PrefixExtractor>,
    /// How much lower than the process's the compaction thread's CPU priority is: its nice
    /// value is raised by this much (to at most 19), on Linux; elsewhere ignored. Default 0.
    /// Flushes run on a thread of their own at the process's priority, so a long compaction
    /// never holds one back; a lower priority also puts compactions behind the process's
    /// foreground work (RocksDB's `LowerThreadPoolCPUPriority`) when the CPU is short, and
    /// level 0's slowdown and stop triggers bound how far they then fall behind. For a process
    /// whose writes and reads wait on other threads (a server's), not for a bulk load.
    pub compaction_nice: u8,
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
            wal_mapped: true,
            wal: true,
            create_if_missing: true,
            prefix_extractor: None,
            compaction_nice: 0,
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

/// The fewest immutable memtables: with none, a full memtable could never be switched out for
/// its flush, and writes would wait forever.
const IMMUTABLE_MEMTABLES_MIN: usize = 1;

/// The least `l0_trigger`: at 0 a compaction would always be due (the compaction thread would
/// never rest), and level 0 is there to gather more than one flush per compaction.
const L0_TRIGGER_MIN: usize = 2;

/// The arena bytes one operation's skiplist node is assumed to take beyond its key and value: a
/// header and a tower, at most 16 + 8 * 20 bytes. 64 is ample on average (most towers are short),
/// and a memtable's headroom ([`memtable_capacity`]) absorbs the rest.
const NODE_BYTES_ESTIMATE: usize = 64;

/// The most memory (as [`batch_memory_bytes`] counts it) one batch may take, and one group of
/// batches committed together: a quarter of a memtable. A memtable is switched out when the next
/// group does not fit in it, so a quarter keeps every memtable at least three quarters full when
/// it is flushed (level-0 tables of about even size, little memory left unused), while a batch
/// may still be large; it also bounds the memory each waiting writer holds.
fn batch_bytes_max(options: &Options) -> usize {
    options.memtable_bytes / 4
}

/// The sequence number the oldest reader reads at: the oldest snapshot's, or the latest if
/// there is none (a read that starts later reads at a later one). Of the versions of a key at or
/// below it, a flush or compaction keeps only the newest.
fn oldest_reader(state: &State) -> u64 {
    state
        .snapshots
        .keys()
        .next()
        .copied()
        .unwrap_or(state.last_seq)
        .min(state.last_seq)
}

/// A memtable's arena: its nominal size plus room for one more group. `make_room` lets a group in
/// only if the memtable's use plus the group's estimate ([`batch_memory_bytes`]) stays within
/// the nominal size (or if the memtable is empty); the extra room absorbs what the estimate
/// misses.
fn memtable_capacity(options: &Options) -> usize {
    options.memtable_bytes + batch_bytes_max(options)
}

/// An upper bound on the arena bytes a batch takes in a memtable: each operation costs its key
/// and value plus a node ([`NODE_BYTES_ESTIMATE`]).
fn batch_memory_bytes(batch: &WriteBatch) -> usize {
    batch.data_bytes() + NODE_BYTES_ESTIMATE * batch.len()
}

/// What a [`crate::PrefixExtractor`] says is a key's prefix.
type PrefixLen = fn(&[u8]) -> Option<usize>;

/// A memtable and the highest WAL LSN whose records it holds.
#[derive(Debug)]
struct MemtableHandle {
    table: Memtable,
    /// The prefixes of the keys in `table`, with the extractor that gives them, when the
    /// store has one.
    prefixes: Option<(crate::prefix::MemtablePrefixes, PrefixLen)>,
    wal_lsn_max: AtomicU64,
    /// Properties a forced flush asked to record in this memtable's table (whichever thread
    /// ends up flushing it), and the table it became.
    properties: Mutex<Vec<(String, Vec<u8>)>>,
    flushed_as: Mutex<Option<FileMeta>>,
}

impl MemtableHandle {
    fn new(options: &Options) -> Self {
        let capacity_bytes = memtable_capacity(options);
        Self {
            table: Memtable::with_capacity(capacity_bytes),
            prefixes: options.prefix_extractor.map(|extractor| {
                (
                    crate::prefix::MemtablePrefixes::new(capacity_bytes),
                    extractor.prefix_len,
                )
            }),
            wal_lsn_max: AtomicU64::new(0),
            properties: Mutex::new(Vec::new()),
            flushed_as: Mutex::new(None),
        }
    }

    /// Inserts one entry, its prefix first into the prefix filter (before any reader can see
    /// the entry).
    fn insert(
        &self,
        kind: strata_memtable::ValueKind,
        seq: u64,
        key: &[u8],
        value: &[u8],
    ) -> Result<()> {
        if let Some((filter, prefix_len)) = &self.prefixes
            && let Some(prefix) = prefix_len(key).and_then(|len| key.get(..len))
        {
            filter.insert(crate::prefix::prefix_hash(prefix));
        }
        self.table
            .insert(key, seq, kind, value)
            .map_err(|_| Error::Corruption {
                path: PathBuf::from("memtable"),
                offset: seq,
                reason: "memtable refused an insert (full or duplicate)",
            })
    }

    /// False only if the memtable holds no key whose prefix has `hash` (a
    /// `prefix::prefix_hash`); true without a filter.
    fn may_hold_prefix(&self, hash: u64) -> bool {
        self.prefixes
            .as_ref()
            .is_none_or(|(filter, _)| filter.may_contain(hash))
    }
}

/// What the state lock guards: the memtables, the tables, the visible sequence number and the
/// manifest's view of the store.
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
    /// The last background flush or compaction found no room on the disk
    /// ([`Error::NoSpace`]); cleared by the next one that succeeds.
    no_space: Option<(PathBuf, String)>,
    /// The compaction thread's last compaction found no room on the disk (held back, or
    /// `ENOSPC` while writing its tables); cleared once a compaction finds room or none is due. Not
    /// cleared by a flush, unlike `no_space`: while it stays, level 0 only grows.
    compaction_no_space: Option<String>,
    /// While `compaction_no_space` holds because the disk had less free space than the
    /// compaction's inputs: those bytes, the room it waits for (`None` for a write that failed).
    compaction_no_space_needs: Option<u64>,
    closing: bool,
    /// Sequence numbers pinned by live snapshots, with counts.
    snapshots: BTreeMap<u64, usize>,
    /// Bumped whenever `version` changes or a manual compaction lets go of the compaction
    /// lock: the compaction thread, finding the lock taken, waits for this to move without
    /// missing it.
    generation: u64,
    /// How many times [`Db::restore`] has replaced the store since open: a [`Snapshot`] taken
    /// under another count reads a state that is gone, and says so.
    restores: u64,
    /// Versions replaced and not yet let go of outside this lock: the tables only they held
    /// are being unlinked. Background work is not done until it is 0.
    releasing: usize,
}

/// The store, shared by every [`Db`] handle and the background threads.
#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: Options,
    /// `None` for a store opened read-only ([`Db::open_read_only`]).
    wal: Option<Wal>,
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

/// Stops the background threads (flush and compaction) when the last `Db` handle goes.
#[derive(Debug)]
struct FlusherGuard {
    inner: Arc<Inner>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Drop for FlusherGuard {
    fn drop(&mut self) {
        if !self.inner.options.wal && !self.inner.read_only() {
            // Without a WAL the memtables are the only copy of their writes: a clean close
            // writes them out. A failure leaves the store as a crash would (a prefix of the
            // writes); the store is already read-only then, and `Db::flush` reports it.
            let _ = self.inner.flush_with_properties(&[]);
        }
        self.inner.state.lock().closing = true;
        self.inner.changed.notify_all();
        for thread in self.threads.lock().drain(..) {
            let _ = thread.join();
        }
    }
}

impl Inner {
    /// Whether the store was opened with [`Db::open_read_only`].
    fn read_only(&self) -> bool {
        self.wal.is_none()
    }

    /// The WAL, or [`Error::OpenedReadOnly`].
    fn wal(&self) -> Result<&Wal> {
        self.wal.as_ref().ok_or(Error::OpenedReadOnly)
    }

    /// Refuses what would change a store opened read-only.
    fn writable(&self) -> Result<()> {
        if self.read_only() {
            return Err(Error::OpenedReadOnly);
        }
        Ok(())
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
}
