//! etcd's MVCC model on `strata-lsm`: every write request gets one main revision (its changes
//! sub-revisions within it), each key keeps its versions (`create_revision`, `mod_revision`,
//! `version`), a range reads the store as of any revision not compacted, and compaction drops
//! the versions no reader can see any more.
//!
//! Work in progress (issue 15): today the crate holds the key layout ([`keys`]): versions of a
//! user key sort newest first after it, so the version visible at a revision is one seek away,
//! and a second keyspace orders every change by revision, for watchers catching up and for
//! compaction. The store itself (put, delete, txn, range at a revision, compact) comes next.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod keys;

pub use keys::Revision;
