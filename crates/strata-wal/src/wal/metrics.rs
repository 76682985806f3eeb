//! Counters: what the log has written and synced since open, and [`Wal::metrics`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::Wal;

/// Counters a user can read. All are totals since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Records appended (handed to the operating system).
    pub records: u64,
    /// Bytes written to segments, framing included.
    pub bytes: u64,
    /// `write` calls for records (copies into the map, with `WalOptions::mapped_tail`).
    pub writes: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
    /// Records made durable by those syncs.
    pub synced_records: u64,
    /// Total time spent in `fdatasync`, in microseconds.
    pub sync_micros_total: u64,
    /// The longest single `fdatasync`, in microseconds.
    pub sync_micros_max: u64,
    /// Segments created since open.
    pub rotations: u64,
}

impl Metrics {
    /// Records per `fdatasync`: how well group commit batches.
    pub fn records_per_sync(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.synced_records as f64 / self.syncs as f64
        }
    }

    /// Mean `fdatasync` latency in microseconds.
    pub fn sync_micros_mean(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.sync_micros_total as f64 / self.syncs as f64
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) records: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) writes: AtomicU64,
    pub(super) syncs: AtomicU64,
    pub(super) synced_records: AtomicU64,
    pub(super) sync_micros_total: AtomicU64,
    pub(super) sync_micros_max: AtomicU64,
    pub(super) rotations: AtomicU64,
}

impl Wal {
    /// The counters so far.
    pub fn metrics(&self) -> Metrics {
        let c = &self.inner.counters;
        Metrics {
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            synced_records: c.synced_records.load(Ordering::Relaxed),
            sync_micros_total: c.sync_micros_total.load(Ordering::Relaxed),
            sync_micros_max: c.sync_micros_max.load(Ordering::Relaxed),
            rotations: c.rotations.load(Ordering::Relaxed),
        }
    }
}
