//! etcd's MVCC key space and KV semantics on `strata-lsm`, speaking etcd's own messages.
//!
//! - [`api`]: etcd's KV messages (`RangeRequest`, `PutRequest`, `TxnRequest`, `KeyValue`, ...)
//!   exactly as prost-build generates them, so the server's gRPC code uses them directly.
//! - [`Store`]: every write request gets one main revision (its changes sub-revisions within
//!   it), each key keeps its versions (`create_revision`, `mod_revision`, `version`, `lease`),
//!   reads see the store as of any revision not compacted. Reads: [`Store::range_request`],
//!   [`Store::read_txn`], [`Store::hash_kv`]. Writes: a [`Batch`] of Put, DeleteRange, Txn and
//!   Compact requests (a Raft batch) committed in one LSM write with the caller's pairs (the
//!   applied index); or a [`Write`], one request of raw puts and deletes.
//! - Validation before proposing, with etcd's rules and error texts: [`check_range`],
//!   [`check_put`], [`check_delete_range`], [`check_txn`].
//! - Compaction in two parts: [`Batch::compact`] records the revision (reads below it fail
//!   from the commit on), [`Store::compact_physical`] removes the versions in bounded steps in
//!   the background, resumable after a crash ([`Store::compaction_pending`]).
//! - Watchers: [`Store::events`] reads the events of a span of revisions back from the store
//!   (for a watcher catching up), bounded per call; [`Store::watch`] registers a watcher that
//!   each [`Batch::commit`] feeds with its events (no LSM read) into a bounded buffer, and
//!   [`Store::watch_poll`] hands them over, falling back to the store for a watcher that started
//!   in the past or whose buffer filled, so that none is lost or repeated.
//! - [`keys`]: the key layout (versions of a user key sort newest first after it, so the version
//!   visible at a revision is one seek away; a second keyspace orders every change by
//!   revision, for watchers catching up and for compaction). `docs/formats/mvcc.md` has it all.
//!
//! The store knows nothing of Raft, leases' lifetimes, watch streams or gRPC: the server decides
//! what to apply, passes a [`LeaseCheck`], and adds the header's ids and the `etcdserver: `
//! prefix to errors.
//!
//! ```
//! use std::sync::Arc;
//! use strata_mvcc::api::{PutRequest, RangeRequest};
//! use strata_mvcc::{LeaseCheck, Store};
//!
//! struct NoLeases;
//! impl LeaseCheck for NoLeases {
//!     fn exists(&self, _lease: i64) -> bool {
//!         false
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let db = strata_lsm::Db::open(dir.path(), strata_lsm::Options::default())?;
//! let store = Store::open(Arc::new(db))?;
//! let mut batch = store.batch();
//! let put = PutRequest { key: b"foo".to_vec(), value: b"bar".to_vec(), ..Default::default() };
//! let response = batch.put(&put, &NoLeases)?;
//! assert_eq!(response.header.map(|h| h.revision), Some(2));
//! batch.commit(&[(b"applied", b"7")])?;
//!
//! let got = store.range_request(&RangeRequest { key: b"foo".to_vec(), ..Default::default() })?;
//! assert_eq!(got.kvs[0].value, b"bar");
//! assert_eq!((got.kvs[0].create_revision, got.kvs[0].version), (2, 1));
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod api;
mod batch;
mod check;
mod compaction;
mod error;
mod events;
pub mod keys;
mod latest;
mod range;
mod store;
mod txn;
mod view;
mod watch;

pub use api::KeyValue;
pub use batch::{Batch, DELETE_PART_KEYS, LeaseCheck, LeaseMove, Write};
pub use check::{
    MAX_TXN_OPS_DEFAULT, check_delete_range, check_put, check_range, check_txn, txn_is_read_only,
};
pub use compaction::COMPACTION_STEP_DELETES;
pub use error::{Error, Result};
pub use events::{CATCH_UP_REVISIONS_MAX, EventBatch, WatchSpec};
pub use keys::{PREFIX_EXTRACTOR, Revision};
pub use store::{HashKv, LATEST_CACHE_BYTES, NEVER_COMPACTED, Store};
pub use watch::{
    HUB_BUFFERED_BYTES_MAX, Notify, WATCHER_BUFFER_EVENTS_DEFAULT, WatchPoll, WatcherId,
};
