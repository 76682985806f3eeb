//! An embedded LSM key-value store: durable writes through a write-ahead log with group
//! commit, reads from memtables and sorted tables, background flushes and leveled compaction,
//! snapshots, and what a Raft state machine needs (forced flushes that record the applied
//! index, live files, ingest, checkpoints).
//!
//! Built from the layers below it: writes go to a `strata-wal` log and a `strata-memtable`,
//! memtables are flushed into `strata-sstable` tables, and the manifest (itself a
//! `strata-wal` log of version edits, named by a `CURRENT` file swapped with `strata-fs`)
//! records which tables make up the store. The manifest format is in
//! `docs/formats/manifest.md`.
//!
//! # Using it
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::ops::Bound;
//! use strata_lsm::{Db, Direction, Options, WriteBatch, WriteOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let db = Db::open(dir.path(), Options::default())?;
//!
//! // A write returns once it is in the WAL (it survives a process crash); `sync: true` also
//! // waits for the fdatasync (it survives a power cut), shared with concurrent writers.
//! db.put(b"user:1", b"ada", WriteOptions::default())?;
//! db.put(b"user:2", b"grace", WriteOptions { sync: true })?;
//!
//! // A batch is atomic: readers and recovery see all of it or none of it.
//! let mut batch = WriteBatch::new();
//! batch.put(b"user:3", b"edsger");
//! batch.delete(b"user:1");
//! db.write(batch, WriteOptions::default())?;
//! assert_eq!(db.get(b"user:1")?, None);
//!
//! // A snapshot reads the store as it was when it was taken.
//! let snapshot = db.snapshot();
//! db.put(b"user:2", b"hopper", WriteOptions::default())?;
//! assert_eq!(snapshot.get(b"user:2")?, Some(b"grace".to_vec()));
//! assert_eq!(db.get(b"user:2")?, Some(b"hopper".to_vec()));
//! drop(snapshot);
//!
//! // Scans go either way, within bounds or under a prefix, until the visitor says stop.
//! let mut newest_first = Vec::new();
//! db.scan_prefix(b"user:", Direction::Reverse, |key, _value| {
//!     newest_first.push(key.to_vec());
//!     true
//! })?;
//! assert_eq!(newest_first, [b"user:3".to_vec(), b"user:2".to_vec()]);
//! let mut count = 0;
//! db.scan(Bound::Included(b"user:2"), Bound::Excluded(b"user:3"), Direction::Forward, |_, _| {
//!     count += 1;
//!     true
//! })?;
//! assert_eq!(count, 1);
//!
//! // Flushes and compactions run in the background; they can be forced too. A reopen
//! // recovers the tables from the manifest and the rest from the WAL.
//! db.flush()?;
//! db.compact()?;
//! drop(db);
//! let db = Db::open(dir.path(), Options::default())?;
//! assert_eq!(db.get(b"user:3")?, Some(b"edsger".to_vec()));
//! println!("{:?}", db.stats().levels);
//! # Ok(())
//! # }
//! ```
//!
//! # What it guarantees
//!
//! - **Durability.** A write that returned `Ok` is in the WAL, handed to the operating system;
//!   with `sync` it is on disk. Flushes and compactions make their tables durable (file and
//!   directory fsync) before the manifest names them, and the manifest is synced per edit.
//! - **Atomicity and isolation.** Each [`WriteBatch`] (and each [`Db::ingest`]) becomes visible
//!   at once under one sequence range; reads and scans see the store at one sequence number, and
//!   a [`Snapshot`] pins it: compactions keep every version a live snapshot can read.
//! - **No wrong data.** Tables, WAL and manifest are checksummed; damage is reported as
//!   [`Error::Corruption`] or [`Error::Table`] with the file and offset, never returned as
//!   data. A failed fsync or background failure puts the store in a read-only state
//!   ([`Error::ReadOnly`]) until it is reopened, since what is on disk is then unknown.
//! - **Bounded memory.** At most `1 + immutable_memtables_max` memtables of `memtable_bytes`,
//!   the block cache's `block_cache_bytes`, and one batch (at most a quarter of a memtable)
//!   per waiting writer.
//!   Writers slow down when level 0 reaches `l0_slowdown_trigger` tables and wait at
//!   `l0_stop_trigger` or when every memtable slot is full; [`Stats`] counts the stalls.
//! - **Obsolete files** are deleted once no reader, scan or snapshot holds them, and files a
//!   crash left behind are removed at the next open.
//!
//! # For Raft
//!
//! [`Db::flush_with_properties`] writes the memtable out now and records the caller's
//! properties (the last applied index and term) in the table; [`Db::live_files`] lists every
//! table with its level, path and properties; [`Db::checkpoint`] exports a consistent copy by
//! hard links; [`Db::ingest`] installs another store's tables as newer than everything local.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod batch;
mod cache;
mod compaction;
mod db;
mod error;
mod keys;
// Internal, but public for the manifest's model test (`tests/manifest.rs`), which replays
// random edits through `Manifest` against `VersionState`. Not part of the API.
#[doc(hidden)]
pub mod manifest;
mod scan;
mod snapshot_file;

pub use batch::WriteBatch;
pub use cache::LruBlockCache;
pub use compaction::CompactionOptions;
pub use db::{Capture, Db, LevelStats, LiveFile, Options, Snapshot, Stats, WriteOptions};
pub use error::{Error, Result};
pub use manifest::FileMeta;
pub use scan::{Direction, prefix_bounds};
pub use snapshot_file::{LSM_SNAPSHOT_FILE, PROPERTIES_BYTES_MAX, SnapshotInfo, table_file_name};

/// Failpoint at the start of every compaction (with the `failpoints` feature; tests pause it
/// to hold compaction off).
pub const FP_COMPACTION: &str = "lsm::compaction";
