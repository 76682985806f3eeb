//! An embedded LSM key-value store: durable writes through a write-ahead log with group
//! commit, reads from memtables and sorted tables, background flushes and leveled compaction,
//! snapshots, and what a Raft state machine needs (captures written out as flat file sets and
//! restored whole, forced flushes that record the applied index, live files, ingest,
//! checkpoints).
//!
//! Built from the layers below it: writes go to a `strata-wal` log and a `strata-memtable`,
//! memtables are flushed into `strata-sstable` tables, and the manifest (itself a
//! `strata-wal` log of version edits, named by a `CURRENT` file swapped with `strata-fs`)
//! records which tables make up the store. The manifest format is in
//! `docs/formats/manifest.md`, a capture's file set in `docs/formats/lsm-snapshot.md`.
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
//! // Flushes and compactions run in the background; they can be forced, or waited for. A
//! // reopen recovers the tables from the manifest and the rest from the WAL.
//! db.flush()?;
//! db.wait_for_background()?;
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
//! - **A full disk is not a failure.** A flush or compaction that meets `ENOSPC` (or a quota)
//!   while writing a table removes it, changes nothing else, and is tried again after
//!   [`NO_SPACE_RETRY`]; a compaction waits while the disk has less free space than its inputs
//!   hold. The store stays writable until its memtables are full ([`Error::NoSpace`],
//!   [`Stats::no_space_retries`]); [`Stats::compaction_no_space`] says while compactions are
//!   held back, level 0 growing towards the stop trigger meanwhile.
//! - **Bounded memory.** At most `1 + immutable_memtables_max` memtables of `memtable_bytes`,
//!   the block cache's `block_cache_bytes`, and one batch (at most a quarter of a memtable)
//!   per waiting writer.
//!   Writers slow down when level 0 reaches `l0_slowdown_trigger` tables and wait at
//!   `l0_stop_trigger` or when every memtable slot is full; [`Stats`] counts the stalls.
//! - **Obsolete files** are deleted once no reader, scan, snapshot or capture holds them, and
//!   files a crash left behind are removed at the next open.
//! - **Restores are all or nothing.** [`Db::restore`] swaps every table for a snapshot's in one
//!   manifest record: after a crash at any step the store reopens to the whole old or the whole
//!   new state, and the other's files are removed.
//!
//! # For Raft: snapshots as flat file sets
//!
//! A Raft snapshot of the store is a capture written out as a flat set of files, with the Raft
//! index and term recorded as properties. [`Db::capture`] is cheap enough for the apply path
//! (no I/O: it pins the tables and memtables at the last sequence number); the [`Capture`]
//! moves to another thread, where [`Capture::write_to`] flushes the pinned memtables to tables,
//! hard-links the pinned tables and writes one [`LSM_SNAPSHOT_FILE`] describing them. A store
//! without a WAL, whose snapshot must also be in its own tables, captures with
//! [`Db::capture_switching`] and calls [`Capture::flush`] first: the memtables are then written
//! once, as the store's tables, and linked into the set. On the
//! receiving node, [`Db::restore`] replaces the whole store with the set (keys the snapshot
//! lacks are gone), and [`Db::snapshot_properties`] tells, across reopens, which snapshot the
//! store was last restored from. [`SnapshotInfo::read`] reads a set's description.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_lsm::{Db, Options, WriteOptions};
//!
//! let root = tempfile::tempdir()?;
//! let leader = Db::open(&root.path().join("leader"), Options::default())?;
//! leader.put(b"k", b"v1", WriteOptions::default())?;
//! let capture = leader.capture(); // On the apply path: no I/O.
//! leader.put(b"k", b"v2", WriteOptions::default())?; // Not in the capture.
//!
//! let set = root.path().join("snapshot-7");
//! std::fs::create_dir(&set)?;
//! let files = std::thread::spawn(move || {
//!     capture.write_to(&set, &[("raft.index", &7u64.to_le_bytes())])
//! })
//! .join()
//! .expect("writer thread")?;
//!
//! let follower = Db::open(&root.path().join("follower"), Options::default())?;
//! follower.put(b"stale", b"x", WriteOptions::default())?;
//! follower.restore(&root.path().join("snapshot-7"), &files)?;
//! assert_eq!(follower.get(b"k")?, Some(b"v1".to_vec()));
//! assert_eq!(follower.get(b"stale")?, None);
//! assert_eq!(
//!     follower.snapshot_properties().get("raft.index"),
//!     Some(&7u64.to_le_bytes().to_vec())
//! );
//! # Ok(())
//! # }
//! ```
//!
//! Older tools remain: [`Db::flush_with_properties`] writes the memtable out now and records
//! the caller's properties in the table; [`Db::live_files`] lists every table with its level,
//! path and properties (a compaction may delete a listed file at any time: a capture pins
//! them); [`Db::checkpoint`] exports a consistent copy as a store directory by hard links;
//! [`Db::ingest`] installs another store's tables as newer than everything local, merging with
//! it (a restore replaces it).
//!
//! Tools that inspect a store open it with [`Db::open_read_only`]: nothing in the directory is
//! created or changed (a mistyped path is [`Error::NoStore`], not a new empty store), and every
//! write is refused with [`Error::OpenedReadOnly`]. [`Options::create_if_missing`] set to false
//! makes a writable open refuse a missing store the same way.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod batch;
mod cache;
mod compaction;
mod db;
mod error;
mod keys;
mod prefix;
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
pub use keys::{escaped_len, push_escaped, push_unescaped};
pub use manifest::FileMeta;
pub use prefix::{PREFIX_PROPERTY, PrefixExtractor};
pub use scan::{Direction, prefix_bounds};
pub use snapshot_file::{LSM_SNAPSHOT_FILE, PROPERTIES_BYTES_MAX, SnapshotInfo, table_file_name};

/// Failpoint at the start of every compaction (with the `failpoints` feature; tests pause it
/// to hold compaction off).
pub const FP_COMPACTION: &str = "lsm::compaction";

/// How long the background thread waits before trying again a flush or compaction that found
/// no room on the disk ([`Error::NoSpace`]).
pub const NO_SPACE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
