//! Options and their limits, in one place.

use std::time::Duration;

/// When an append is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Acknowledged once `fdatasync` has returned for it: durable on return. One `write` (or
    /// copy into the tail's map) and one `fdatasync` cover every record waiting at that moment
    /// (group commit).
    Sync,
    /// Acknowledged once handed to the operating system (written, or copied into the page
    /// cache through the tail's map): survives a process crash, not a power cut.
    /// `fdatasync` only at rotation and on [`Wal::sync`](crate::Wal::sync).
    NoSync,
    /// Acknowledged once handed to the operating system, and made durable within this interval
    /// by a background `fdatasync`.
    Interval(Duration),
}

/// Options for [`Wal::open`](crate::Wal::open).
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// A segment is sealed and a new one started once it holds at least this many bytes.
    /// Larger segments mean fewer files and rotations; smaller ones let
    /// [`purge_before`](crate::Wal::purge_before) free space sooner and bound recovery's read
    /// buffer. Default 64 MiB.
    pub segment_bytes_max: u64,
    /// The largest record accepted; larger ones fail with
    /// [`Error::RecordTooLarge`](crate::Error::RecordTooLarge). A record is never split, so a
    /// segment can exceed `segment_bytes_max` by up to one record. Recovery and readers hold a
    /// whole segment in memory, so this bounds their memory too. Default 64 MiB; at most
    /// `u32::MAX`.
    pub record_bytes_max: u32,
    /// When appends are acknowledged. Default [`Durability::Sync`].
    pub durability: Durability,
    /// The LSN of the first record of a log created empty (ignored when the directory already
    /// holds segments). A user that deletes a log whose records it has consumed (the LSM after
    /// a flush) starts the new one past them, so LSNs never repeat. Default 1.
    pub first_lsn: crate::Lsn,
    /// Write the tail segment through a shared memory map of room allocated ahead instead of
    /// with `write` (see the crate docs). A record then costs a copy rather than a system call,
    /// which is most of an append's cost for small records handed to the OS without a sync (the
    /// LSM's writes). A log synced after nearly every append gains nothing, and measured slower
    /// on ext4 (a write into an allocated but unwritten extent takes a journal handle at its
    /// page fault, and waits behind commits): the Raft log leaves it off. Default false.
    pub mapped_tail: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 * 1024 * 1024,
            record_bytes_max: 64 * 1024 * 1024,
            durability: Durability::Sync,
            first_lsn: crate::FIRST_LSN,
            mapped_tail: false,
        }
    }
}
