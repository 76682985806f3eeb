//! etcd's MVCC model on `strata-lsm`: every write request gets one main revision (its changes
//! sub-revisions within it), each key keeps its versions (`create_revision`, `mod_revision`,
//! `version`), a range reads the store as of any revision not compacted, and compaction drops
//! the versions no reader can see any more.
//!
//! Work in progress (issue 15). Today: the key layout ([`keys`]: versions of a user key sort
//! newest first after it, so the version visible at a revision is one seek away, and a second
//! keyspace orders every change by revision, for watchers catching up and for compaction), and
//! the [`Store`]: write requests ([`Store::write`]: put and delete-range, each request one main
//! revision, its changes sub-revisions, committed in one LSM batch with the caller's extra
//! pairs such as the Raft applied index), ranges at any revision not compacted
//! ([`Store::range`], with `count`, `limit` and `more`), and compaction ([`Store::compact`]).
//! Txn compares, sorting, filters and the watch stream come next.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod keys;
mod store;

pub use keys::Revision;
pub use store::{Error, KeyValue, RangeResult, Result, Store, Write};
