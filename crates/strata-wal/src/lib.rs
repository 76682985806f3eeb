//! A segmented write-ahead log with checksums, group commit and torn-tail recovery.
//!
//! The log is a directory of segment files. Every record gets a monotonically increasing
//! 64-bit LSN and is framed with a CRC-32 that covers its header, its payload and its
//! segment's random salt. Many threads append at once; one `write` (or copy) and one `fdatasync` cover
//! every record that was waiting (group commit), and each writer is answered only when its
//! record is durable. The format is described byte by byte in `docs/formats/wal.md`.
//!
//! With [`WalOptions::mapped_tail`] the tail segment is written through a shared memory map of
//! room allocated ahead (`fallocate`): a record is copied into the page cache without a system
//! call, which for small records handed to the OS without a sync was most of an append's cost,
//! and is then exactly where `write` would have put it (it survives a crash of the process;
//! `fdatasync` makes it durable). The allocated room reads as zeros until the segment is sealed
//! or the log closed, when the file is cut to its records.
//!
//! # Guarantees
//!
//! - **Nothing acknowledged is lost.** Under [`Durability::Sync`] (the default) an append
//!   returns only after `fdatasync`; a segment is synced before the next one is created; a new
//!   segment's header and directory entry are synced before any record goes into it.
//! - **Never wrong bytes.** Every record is verified on recovery and on read. A torn tail (the
//!   last, unfinished write) is cut off and its size reported. Damage anywhere else stops the
//!   open with [`Error::Corruption`] naming the segment and offset; it is never skipped.
//! - **No success after a failed `fsync`.** A failed write or `fsync` poisons the log: every
//!   later append fails with [`Error::Poisoned`]. Reopen to recover what is on disk.
//!
//! ## Torn tail or corruption?
//!
//! Every segment but the last was synced before the next was created, so any damage in one is
//! corruption. In the last segment the writes after the last `fdatasync` may be torn in any
//! way, so damage there is a torn tail, *unless* a later record still verifies and records
//! (in its `durable_lsn` field) that the damaged record had already been synced when it was
//! written: then it is corruption. Damage to the very last synced batch with nothing written
//! after it cannot be told from a torn write, and is cut off as one.
//!
//! # Using it
//!
//! - [`Wal::append`] / [`Wal::append_batch`] from any number of threads; [`Wal::append_async`]
//!   from Tokio tasks (the wait runs on the blocking pool). [`Durability`] picks when they
//!   return: durable (default), handed to the OS, or handed to the OS and synced within an
//!   interval.
//! - [`Wal::read_from`] iterates records from any LSN still in the log.
//! - [`Wal::purge_before`] deletes whole segments below a watermark; [`Wal::truncate_after`]
//!   durably removes a suffix.
//! - [`Wal::metrics`]: records, bytes, syncs, records per sync, sync latency.
//! - [`scan_log`] reads and verifies a log without changing it (`strata wal dump`).
//!
//! This crate knows nothing about what its records mean: the LSM and the Raft log sit on it.
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_wal::{Wal, WalOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let (wal, _) = Wal::open(dir.path(), WalOptions::default())?;
//! let first = wal.append(b"put a=1")?; // durable on return
//! let batch = wal.append_batch(&[&b"put b=2"[..], b"del a"])?;
//! assert_eq!(*batch.start(), first + 1);
//! drop(wal);
//!
//! let (wal, recovery) = Wal::open(dir.path(), WalOptions::default())?;
//! assert_eq!(recovery.records, 3);
//! let records: Vec<_> = wal.read_from(first)?.collect::<Result<_, _>>()?;
//! assert_eq!(records[2], (first + 2, b"del a".to_vec()));
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod error;
/// The on-disk codec (segment header, record framing, the record scanner), public only for this
/// crate's tests and the fuzz target: not a stable API. What a user needs ([`Lsn`],
/// [`FIRST_LSN`]) is re-exported at the crate root.
#[doc(hidden)]
pub mod format;
mod options;
mod recovery;
mod wal;

pub use error::{Error, Result};
pub use format::{FIRST_LSN, Lsn};
pub use options::{Durability, WalOptions};
pub use recovery::{Recovery, Scan, TornTail, scan_log};
pub use wal::{Metrics, Wal, WalReader};

/// Failpoint: writing a batch of records.
pub const FP_WRITE: &str = "wal::write";
/// Failpoint: `fdatasync` of a segment.
pub const FP_FSYNC: &str = "wal::fsync";
/// Failpoint: writing a new segment's header.
pub const FP_SEGMENT_CREATE: &str = "wal::segment-create";
