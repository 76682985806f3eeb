//! An embedded LSM key-value store (in progress).
//!
//! Built from the layers below it: writes go to a `strata-wal` log and a `strata-memtable`,
//! memtables are flushed into `strata-sstable` tables, and the manifest (itself a
//! `strata-wal` log of version edits, named by a `CURRENT` file swapped with `strata-fs`)
//! records which tables make up the store. The manifest format is in
//! `docs/formats/manifest.md`.
//!
//! Today: [`Db`] with puts, deletes, atomic [`WriteBatch`]es, gets, scans (forward and reverse,
//! with bounds or a prefix), snapshots, background and forced flushes to level-0 tables,
//! leveled compaction (background, and forced with [`Db::compact`]) that keeps what snapshots
//! need and drops tombstones at the bottom, a shared LRU block cache, statistics, and recovery
//! (manifest, then WAL), forced flushes that record caller properties in their tables,
//! [`Db::live_files`], and [`Db::checkpoint`]. Not yet: ingest. Concurrent writers are group-committed: one
//! WAL write and at most one `fdatasync` for every batch waiting.
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_lsm::manifest::{FileMeta, Manifest, VersionEdit, VersionState};
//!
//! let dir = tempfile::tempdir()?;
//! let manifest = Manifest::create(dir.path(), 1, &VersionState::default())?;
//! manifest.append(&VersionEdit {
//!     added: vec![FileMeta {
//!         number: 7, level: 0, size: 4096,
//!         smallest: b"a".to_vec(), largest: b"z".to_vec(),
//!         smallest_seq: 1, largest_seq: 9,
//!     }],
//!     last_seq: Some(9),
//!     ..VersionEdit::default()
//! })?;
//! drop(manifest);
//!
//! let (_, state) = Manifest::open(dir.path())?.expect("the store exists");
//! assert_eq!(state.levels[0][0].number, 7);
//! assert_eq!(state.next_file_number, 8);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod batch;
mod cache;
mod compaction;
mod db;
mod error;
pub mod keys;
pub mod manifest;
mod scan;

pub use batch::WriteBatch;
pub use cache::LruBlockCache;
pub use compaction::CompactionOptions;
pub use db::{Db, LevelStats, LiveFile, Options, Snapshot, Stats, WriteOptions};
pub use error::{Error, Result};
pub use scan::{Direction, prefix_bounds};

/// Failpoint at the start of every compaction (with the `failpoints` feature; tests pause it
/// to hold compaction off).
pub const FP_COMPACTION: &str = "lsm::compaction";
