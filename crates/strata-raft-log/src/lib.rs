//! The durable Raft log: entries and hard state on `strata-wal`.
//!
//! Entry `i` is record `i` of an entry log (a `strata-wal` log), encoded with protobuf
//! (`prost`); the hard state (term, vote, commit) and the compaction point are records of a
//! second, small log. The format is in `docs/formats/raft-log.md`.
//!
//! - [`RaftLog::append`] writes a batch of entries with one `write` and one `fdatasync`
//!   (the WAL's group commit), first removing, durably, any suffix they overwrite.
//! - Reads ([`RaftLog::entries`], [`RaftLog::entry`]) come from a cache of recent entries
//!   bounded in bytes, or from disk; [`RaftLog::term`] answers from memory for every entry.
//! - [`RaftLog::compact`] drops a prefix covered by a snapshot (keeping the suffix only if
//!   the log agrees with the snapshot's last entry, as Raft requires).
//! - [`RaftLog::set_hard_state`] makes a new term or vote durable before returning.
//! - [`RaftLog::open`] restores all of it; a torn tail of unsynced entries is cut off.
//!
//! # Examples
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_raft_log::{Entry, EntryKind, HardState, LogOptions, RaftLog};
//!
//! let dir = tempfile::tempdir()?;
//! let log = RaftLog::open(dir.path(), LogOptions::default())?;
//! log.set_hard_state(HardState { term: 1, vote: 1, commit: 0 })?;
//! log.append(&[
//!     Entry::new(1, 1, EntryKind::Normal, &b"put a=1"[..]),
//!     Entry::new(1, 2, EntryKind::Normal, &b"put b=2"[..]),
//! ])?;
//! // A new leader in term 2 overwrites entry 2.
//! log.append(&[Entry::new(2, 2, EntryKind::Normal, &b"put b=3"[..])])?;
//! drop(log);
//!
//! let log = RaftLog::open(dir.path(), LogOptions::default())?;
//! assert_eq!(log.hard_state().vote, 1);
//! assert_eq!(log.last_index(), 2);
//! assert_eq!(log.term(2), Some(2));
//! assert_eq!(&log.entry(2)?.data[..], b"put b=3");
//! log.compact(1, 1)?;
//! assert_eq!(log.first_index(), 2);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod entry;
mod error;
mod log;

pub use entry::{Entry, EntryKind, HardState};
pub use error::{Error, Result};
pub use log::{LogOptions, RaftLog};
