//! Statistics: counters kept since open, and [`Stats`], the snapshot of them and of the
//! levels' sizes that [`Db::stats`] returns.

use std::sync::atomic::{AtomicU64, Ordering};

use strata_wal::Wal;

use super::Db;

/// Counters since open, for [`Stats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) user_bytes: AtomicU64,
    pub(super) flush_bytes: AtomicU64,
    pub(super) compaction_read_bytes: AtomicU64,
    pub(super) compaction_written_bytes: AtomicU64,
    pub(super) trivial_moves: AtomicU64,
    pub(super) trivial_moved_bytes: AtomicU64,
    pub(super) ingested_bytes: AtomicU64,
    pub(super) slowdowns: AtomicU64,
    pub(super) stops: AtomicU64,
    pub(super) stall_micros: AtomicU64,
    pub(super) no_space_retries: AtomicU64,
    pub(super) memtable_prefix_skips: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

impl Db {
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
        let wal = self
            .inner
            .wal
            .as_ref()
            .map(Wal::metrics)
            .unwrap_or_default();
        Stats {
            levels,
            last_seq: state.last_seq,
            cache_hits: self.inner.cache.as_ref().map_or(0, |c| c.hits()),
            cache_misses: self.inner.cache.as_ref().map_or(0, |c| c.misses()),
            cache_bytes: self.inner.cache.as_ref().map_or(0, |c| c.bytes()),
            memtable_bytes: std::iter::once(&state.active)
                .chain(&state.immutables)
                .map(|m| m.table.approximate_bytes() as u64)
                .sum(),
            wal_records: wal.records,
            wal_syncs: wal.syncs,
            wal_bytes: wal.bytes,
            user_bytes: load(&c.user_bytes),
            flush_bytes: load(&c.flush_bytes),
            compaction_read_bytes: load(&c.compaction_read_bytes),
            compaction_written_bytes: load(&c.compaction_written_bytes),
            trivial_moves: load(&c.trivial_moves),
            trivial_moved_bytes: load(&c.trivial_moved_bytes),
            ingested_bytes: load(&c.ingested_bytes),
            write_slowdowns: load(&c.slowdowns),
            write_stops: load(&c.stops),
            stall_micros: load(&c.stall_micros),
            no_space_retries: load(&c.no_space_retries),
            memtable_prefix_skips: load(&c.memtable_prefix_skips),
            compaction_no_space: state.compaction_no_space.clone(),
            compaction_no_space_needs: state
                .compaction_no_space
                .as_ref()
                .and(state.compaction_no_space_needs),
        }
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
    /// Bytes of writes held in memtables (the active one and those waiting for their flush):
    /// without a WAL (`Options::wal`), data that is not in any file yet.
    pub memtable_bytes: u64,
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
    /// Tables a compaction moved to the next level as they were (they overlapped nothing
    /// there): no bytes read or written, so in neither count above.
    pub trivial_moves: u64,
    /// Their bytes.
    pub trivial_moved_bytes: u64,
    /// Bytes of tables written by [`Db::ingest`].
    pub ingested_bytes: u64,
    /// Write groups delayed because level 0 reached `l0_slowdown_trigger`.
    pub write_slowdowns: u64,
    /// Times writes waited: level 0 at `l0_stop_trigger`, or too many memtables unflushed.
    pub write_stops: u64,
    /// Total time writes spent delayed or waiting, in microseconds.
    pub stall_micros: u64,
    /// Background flushes and compactions put off because the disk had no room for their
    /// tables ([`Error::NoSpace`](crate::Error::NoSpace)); each is tried again a second later.
    pub no_space_retries: u64,
    /// Memtables a seek within one prefix ([`Db::scan_in_prefix`]) did not search, their
    /// prefix filters holding nothing under the prefix.
    pub memtable_prefix_skips: u64,
    /// Why the compaction thread's last compaction found no room on the disk (held back while
    /// the disk has less free space than its input tables hold, or `ENOSPC` while writing its
    /// tables), while that lasts: `None` once a compaction finds room or none is due. While it is
    /// set, level 0 only grows, and writes wait once it reaches `l0_stop_trigger`: a server
    /// stops taking writes on it (Strata's raises NOSPACE).
    pub compaction_no_space: Option<String>,
    /// While [`compaction_no_space`](Self::compaction_no_space) is set because the disk had
    /// less free space than the compaction's input tables hold: those bytes, the free space it
    /// waits for (`None` when the cause was a write that failed). Once the disk has that much,
    /// the compaction's next try (within a second) runs it: a caller that finds the room there
    /// already need not wait for that try to treat the store as unblocked.
    pub compaction_no_space_needs: Option<u64>,
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
