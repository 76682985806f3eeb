//! The MVCC store: its revisions, reads at a revision (ranges, read-only txns, HashKV), and the
//! entry points to write ([`Store::batch`], [`Store::write`]).

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use parking_lot::Mutex;
use strata_lsm::{Db, Direction, Snapshot};

use crate::api::request_op::Request;
use crate::api::response_op::Response;
use crate::api::{RangeRequest, RangeResponse, ResponseOp, TxnRequest, TxnResponse, header};
use crate::batch::{Batch, Write};
use crate::check::txn_is_read_only;
use crate::error::{Error, Result};
use crate::keys;
use crate::latest::LatestCache;
use crate::range::range;
use crate::txn;
use crate::view::{TOMBSTONE, View};
use crate::watch::WatchHub;

/// Metadata names (`docs/formats/mvcc.md`).
pub(crate) const CURRENT: &str = "current";
pub(crate) const COMPACTED: &str = "compacted";
pub(crate) const COMPACTED_DONE: &str = "compacted_done";
pub(crate) const COMPACT_CURSOR: &str = "compact_cursor";

/// The compacted revision of a store never compacted (etcd's initial `compactMainRev`).
pub const NEVER_COMPACTED: i64 = -1;

/// An i64 metadata value, little-endian.
pub(crate) fn read_meta(db: &Db, name: &str) -> Result<Option<i64>> {
    match db.get(&keys::meta_key(name))? {
        None => Ok(None),
        Some(bytes) => bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(|b| Some(i64::from_le_bytes(b)))
            .ok_or(Error::Corrupt("a metadata value that does not decode")),
    }
}

/// What [`Store::hash_kv`] returns (etcd's `HashKVResponse` fields, and 3.6's
/// `hash_revision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashKv {
    /// CRC-32 (IEEE, `crc32fast`) of the store up to `hash_revision`; see [`Store::hash_kv`].
    pub hash: u32,
    /// The compacted revision when hashed (-1: never compacted, as etcd reports it).
    pub compact_revision: i64,
    /// The revision hashed up to.
    pub hash_revision: i64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct State {
    /// The current main revision (1: empty).
    pub current: i64,
    /// The last compacted revision ([`NEVER_COMPACTED`]: none): reads below it fail.
    pub compacted: i64,
    /// The revision up to which compaction removed the versions from the LSM.
    pub compacted_done: i64,
}

impl State {
    fn load(db: &Db) -> Result<Self> {
        Ok(Self {
            current: read_meta(db, CURRENT)?.unwrap_or(1),
            compacted: read_meta(db, COMPACTED)?.unwrap_or(NEVER_COMPACTED),
            compacted_done: read_meta(db, COMPACTED_DONE)?.unwrap_or(NEVER_COMPACTED),
        })
    }
}

/// etcd's MVCC key space on a `strata-lsm` store.
///
/// Concurrency: reads (ranges, read-only txns, hashes) run at any time on any thread, each on
/// one consistent LSM snapshot; one [`Batch`] (or [`Write`]) at a time writes; physical
/// compaction runs beside both.
#[derive(Debug)]
pub struct Store {
    db: Arc<Db>,
    state: Mutex<State>,
    /// Held by the live batch: one writer at a time.
    writer: Mutex<()>,
    /// Held by a physical compaction step.
    pub(crate) compaction: Mutex<()>,
    /// The watchers, fed by each commit.
    pub(crate) hub: WatchHub,
    /// Key and value bytes the last committed batch wrote: the next batch makes room for as
    /// much at once, rather than growing its buffer by doubling (a copy, and fresh pages to
    /// fault in, at each step) while a Raft batch of a few hundred puts is applied.
    pub(crate) batch_bytes_hint: AtomicUsize,
    /// The newest versions of recently written keys, for the writer alone.
    pub(crate) latest: Mutex<LatestCache>,
}

/// The default bound of the cache of newest versions ([`Store::set_latest_cache_bytes`]).
pub const LATEST_CACHE_BYTES: usize = 8 << 20;

impl Store {
    /// The store kept in `db` (empty, at revision 1, if `db` holds none). A compaction
    /// recorded but not finished on disk is reported by [`compaction_pending`]: resume it with
    /// [`compact_physical`].
    ///
    /// [`compaction_pending`]: Self::compaction_pending
    /// [`compact_physical`]: Self::compact_physical
    ///
    /// # Errors
    ///
    /// The LSM failed, or its metadata does not decode.
    pub fn open(db: Arc<Db>) -> Result<Self> {
        let state = State::load(&db)?;
        Ok(Self {
            db,
            hub: WatchHub::new(state.current),
            state: Mutex::new(state),
            writer: Mutex::new(()),
            compaction: Mutex::new(()),
            batch_bytes_hint: AtomicUsize::new(0),
            latest: Mutex::new(LatestCache::new(LATEST_CACHE_BYTES)),
        })
    }

    /// Bounds the memory of the cache of the newest versions of recently written keys (their
    /// revisions, version and lease, not their values) to about `bytes` (default
    /// [`LATEST_CACHE_BYTES`]; 0 turns it off). A put to a key in it does not seek the key's
    /// versions in the LSM. Only writes use it; every commit keeps it exact.
    pub fn set_latest_cache_bytes(&self, bytes: usize) {
        let _writer = self.writer.lock();
        self.latest.lock().resize(bytes);
    }

    /// Re-reads the store's state from its LSM, after [`Db::restore`] replaced the LSM's
    /// contents (a Raft snapshot installed). Waits for the live batch and any physical
    /// compaction step to end; call it with no batch alive on this thread. Every watcher then
    /// reads from the store from where it was (and fails with [`Error::Compacted`] if the new
    /// contents are compacted past it).
    ///
    /// # Errors
    ///
    /// The LSM failed, or its metadata does not decode; the state is then unchanged.
    pub fn reload(&self) -> Result<()> {
        let _writer = self.writer.lock();
        let _compaction = self.compaction.lock();
        let state = State::load(&self.db)?;
        *self.state.lock() = state;
        self.latest.lock().clear();
        self.hub.reset(state.current);
        Ok(())
    }

    /// The LSM the store is kept in.
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// The state and an LSM snapshot taken together: the snapshot holds every version up to
    /// the state's current revision, and none that compaction has removed below it.
    pub(crate) fn read_state(&self) -> (State, Snapshot) {
        let state = self.state.lock();
        (*state, self.db.snapshot())
    }

    /// Makes a batch's revisions the current ones.
    pub(crate) fn publish(&self, current: i64, compacted: i64) {
        let mut state = self.state.lock();
        state.current = current;
        state.compacted = compacted;
    }

    pub(crate) fn set_compacted_done(&self, rev: i64) {
        self.state.lock().compacted_done = rev;
    }

    /// The current revision (1 for an empty store).
    pub fn current_revision(&self) -> i64 {
        self.state.lock().current
    }

    /// The last compacted revision: reads below it fail with [`Error::Compacted`].
    /// [`NEVER_COMPACTED`] (-1) if the store never was, as etcd's `compactMainRev`.
    pub fn compacted_revision(&self) -> i64 {
        self.state.lock().compacted
    }

    /// The compacted revision whose versions are removed from the LSM
    /// ([`compact_physical`](Self::compact_physical) finished it); [`NEVER_COMPACTED`] if none.
    pub fn compacted_done_revision(&self) -> i64 {
        self.state.lock().compacted_done
    }

    /// True if a compaction is recorded whose versions are not all removed yet (also after a
    /// restart that cut one short): run [`compact_physical`](Self::compact_physical).
    pub fn compaction_pending(&self) -> bool {
        let state = self.state.lock();
        state.compacted > state.compacted_done
    }

    /// The most one [`Batch`] may write at [`Batch::commit`], as [`Batch::bytes`] counts it.
    pub fn batch_bytes_max(&self) -> usize {
        self.db.batch_bytes_max()
    }

    /// Starts a batch of write requests; waits while another batch is alive.
    pub fn batch(&self) -> Batch<'_> {
        let writer = self.writer.lock();
        let (state, snapshot) = self.read_state();
        Batch::new(self, writer, snapshot, state.current, state.compacted)
    }

    /// Starts one write request of raw puts and deletes; waits while a batch is alive.
    pub fn write(&self) -> Write<'_> {
        Write::new(self.batch())
    }

    /// etcd's Range on the committed store: the keys of `[key, range_end)` at `revision` (0 or
    /// less: the current one) with etcd's `limit`, `more`, `count` (the keys in the range,
    /// whatever the limit and filters), sort, filters, `keys_only` and `count_only`.
    /// `header.revision` is the current revision. Memory: without sort or filters, `limit + 1`
    /// keys at most (all of them with no limit).
    ///
    /// # Errors
    ///
    /// [`Error::FutureRevision`] above the current revision, [`Error::Compacted`] below the
    /// compacted one; the LSM's.
    pub fn range_request(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let (state, snapshot) = self.read_state();
        let view = View {
            snapshot: &snapshot,
            base: state.current,
            overlay: None,
        };
        range(&view, req, state.current, state.compacted)
    }

    /// A read-only txn (every operation a range: [`txn_is_read_only`]) on the committed store,
    /// with no Raft round, as etcd serves them.
    ///
    /// # Errors
    ///
    /// [`Error::NotReadOnly`] for a txn with another kind of operation;
    /// [`Error::FutureRevision`] / [`Error::Compacted`] for a range's revision (checked before
    /// any runs); the LSM's.
    pub fn read_txn(&self, req: &TxnRequest) -> Result<TxnResponse> {
        if !txn_is_read_only(req) {
            return Err(Error::NotReadOnly);
        }
        let (state, snapshot) = self.read_state();
        let view = View {
            snapshot: &snapshot,
            base: state.current,
            overlay: None,
        };
        let path = txn::path(&view, state.current, req)?;
        txn::check_ranges(req, &path, state.current, state.compacted)?;
        let ops = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            if let Some(Request::RequestRange(r)) = &op.request {
                let response = range(&view, r, state.current, state.compacted)?;
                responses.push(ResponseOp {
                    response: Some(Response::ResponseRange(response)),
                });
            }
        }
        Ok(TxnResponse {
            header: header(state.current),
            succeeded: path.succeeded,
            responses,
        })
    }

    /// etcd's HashKV: a hash of the store up to `rev` (0: the current revision; below 0:
    /// nothing), equal on stores with the same history and compacted revision, whatever
    /// physical compaction has removed yet.
    ///
    /// Hashed with CRC-32 (IEEE), in this order: the compacted revision (8 bytes, i64
    /// little-endian); then, in data keyspace order (user key, then newest first), each data
    /// entry whose main revision is at most `rev` and that a read at the compacted revision or
    /// later may see — above the compacted revision, every version and deletion; at or below
    /// it, only a key's newest version there, and only if it is not a deletion — as its key's
    /// length (u32 little-endian), the LSM key, its value's length (u32 little-endian) and the
    /// LSM value (`docs/formats/mvcc.md`). The revision keyspace is derived from the data and
    /// is not hashed.
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] if `rev` is positive and at or below the compacted revision (as
    /// etcd), [`Error::FutureRevision`] above the current one; the LSM's.
    pub fn hash_kv(&self, rev: i64) -> Result<HashKv> {
        let (state, snapshot) = self.read_state();
        if rev > 0 && rev <= state.compacted {
            return Err(Error::Compacted);
        }
        if rev > state.current {
            return Err(Error::FutureRevision);
        }
        let rev = if rev == 0 { state.current } else { rev };
        let compacted = state.compacted;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&compacted.to_le_bytes());
        let mut error = None;
        let mut key: Option<Vec<u8>> = None;
        // Whether the current key's newest version at or below the compacted revision is seen.
        let mut kept = false;
        snapshot.scan(
            Bound::Included(&[keys::DATA][..]),
            Bound::Excluded(&[keys::DATA + 1][..]),
            Direction::Forward,
            |k, v| {
                let Some((user, at)) = keys::decode_data_key(k) else {
                    error = Some(Error::Corrupt("a data key that does not decode"));
                    return false;
                };
                if key.as_ref() != Some(&user) {
                    key = Some(user);
                    kept = false;
                }
                let main = at.main as i64;
                if main > rev {
                    return true;
                }
                if main <= compacted {
                    if kept {
                        return true;
                    }
                    kept = true;
                    if v.first() == Some(&TOMBSTONE) {
                        return true;
                    }
                }
                hasher.update(&(k.len() as u32).to_le_bytes());
                hasher.update(k);
                hasher.update(&(v.len() as u32).to_le_bytes());
                hasher.update(v);
                true
            },
        )?;
        if let Some(e) = error {
            return Err(e);
        }
        Ok(HashKv {
            hash: hasher.finalize(),
            compact_revision: compacted,
            hash_revision: rev,
        })
    }
}
