//! Write requests: a [`Batch`] applies many requests (a Raft batch) in one LSM write, each one
//! main revision if it changes anything; [`Write`] is one request of raw puts and deletes.

use std::ops::Bound;
use std::sync::atomic::Ordering;

use parking_lot::MutexGuard;
use strata_lsm::{Db, Direction, Snapshot, WriteBatch, WriteOptions};

use crate::api::request_op::Request;
use crate::api::response_op::Response;
use crate::api::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, KeyValue,
    PutRequest, PutResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse, header,
};
use crate::check::txn_is_read_only;
use crate::error::{Error, Result};
use crate::events::{delete_event, put_event};
use crate::keys::{self, Revision};
use crate::latest::Newest;
use crate::range::range;
use crate::store::{COMPACTED, CURRENT, Store};
use crate::txn::{self, Path};
use crate::view::{DeletedRange, Overlay, PUT, TOMBSTONE, View, encode_version};
use crate::watch::{Recorded, Recording};

/// Whether a lease exists, for puts that attach one (etcd's lessor lookup). A put with an
/// unknown lease fails with [`Error::LeaseNotFound`].
pub trait LeaseCheck {
    /// True if `lease` (never 0) is granted and not revoked.
    fn exists(&self, lease: i64) -> bool;
}

/// Write requests applied together ([`Store::batch`]): each request gets the next main
/// revision if it changes anything (none otherwise), sees every earlier request of the batch,
/// and returns its response at once (`header.revision`: the store's revision after it); all
/// of them become durable and visible together at [`commit`](Self::commit), in one LSM write
/// with the caller's pairs. A request that fails changes nothing and takes no revision; the
/// batch goes on. Dropping a batch uncommitted discards it.
///
/// One request may change more than one LSM write holds (a delete of a large range): past a
/// quarter of [`Store::batch_bytes_max`], its versions are written ahead, in parts, at its
/// revision, which is above the store's current one until the commit moves it, so no reader
/// sees them before (readers skip versions above the current revision). If the request
/// fails, or the batch is dropped, they are removed (found again by their revisions); if the
/// process stops first, they stay unread until the same request, applied again at the same
/// revision, writes them again. A delete of a range without `prev_kv` reads and deletes its
/// keys in parts of [`DELETE_PART_KEYS`] and keeps none of them until the commit, so its
/// memory is bounded however many keys it deletes (with watchers, their events are kept).
///
/// Requests are expected to have passed the checks of [`check_put`](crate::check_put),
/// [`check_delete_range`](crate::check_delete_range) and [`check_txn`](crate::check_txn) (the
/// server does them before proposing); execution does what etcd's apply does with them.
///
/// One batch at a time: [`Store::batch`] waits while another is alive (so never hold two on
/// one thread).
pub struct Batch<'a> {
    store: &'a Store,
    _writer: MutexGuard<'a, ()>,
    /// The committed store, as of the batch's start.
    snapshot: Snapshot,
    /// The committed revision the batch started from.
    base: i64,
    /// The revision after the batch's requests so far.
    current: i64,
    base_compacted: i64,
    /// The compacted revision, with the batch's compactions.
    compacted: i64,
    /// Every change of the batch's requests, the one in progress included.
    overlay: Overlay,
    batch: WriteBatch,
    /// The request in progress: changes so far (its sub-revisions), their LSM pairs (moved to
    /// `batch` when it succeeds), the keys whose overlay entries it changed (undone if it
    /// fails).
    sub: u64,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    touched: Vec<Vec<u8>>,
    /// What the watchers get at commit: decided at the start, from the watchers then.
    recording: Recording,
    /// The events of the batch's requests that succeeded, and of the one in progress.
    events: Vec<Recorded>,
    request_events: Vec<Recorded>,
    /// Keys whose lease changed, in order, for the requests that succeeded and the one in
    /// progress (a lease index kept beside the store follows them).
    lease_moves: Vec<LeaseMove>,
    request_lease_moves: Vec<LeaseMove>,
    /// What the request in progress's `pairs` count for against `spill_bytes`.
    request_bytes: usize,
    /// Past this, the request in progress's pairs go to the LSM at once ([`Batch::spill`]):
    /// a quarter of the LSM's batch limit.
    spill_bytes: usize,
    /// Whether the request in progress, and the batch's earlier requests, wrote ahead of the
    /// commit. What they wrote is removed again if the request fails or the batch is dropped.
    spilled: bool,
    batch_spilled: bool,
}

/// A key whose lease changed in a batch: a put that attached or changed a lease, a put without
/// one over a version with one, a delete of a key with one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseMove {
    /// The key.
    pub key: Vec<u8>,
    /// Its lease before (0: none, or the key did not exist).
    pub from: i64,
    /// Its lease after (0: none, or the key was deleted).
    pub to: i64,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("base", &self.base)
            .field("current", &self.current)
            .field("compacted", &self.compacted)
            .field("ops", &self.batch.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Batch<'a> {
    pub(crate) fn new(
        store: &'a Store,
        writer: MutexGuard<'a, ()>,
        snapshot: Snapshot,
        current: i64,
        compacted: i64,
    ) -> Self {
        Self {
            store,
            _writer: writer,
            snapshot,
            base: current,
            current,
            base_compacted: compacted,
            compacted,
            overlay: Overlay::default(),
            batch: WriteBatch::with_capacity(
                // Within what one batch may hold before it spills.
                store
                    .batch_bytes_hint
                    .load(Ordering::Relaxed)
                    .min(store.batch_bytes_max() / 4),
            ),
            sub: 0,
            pairs: Vec::new(),
            touched: Vec::new(),
            recording: store.hub.recording(),
            events: Vec::new(),
            request_events: Vec::new(),
            lease_moves: Vec::new(),
            request_lease_moves: Vec::new(),
            request_bytes: 0,
            spill_bytes: (store.batch_bytes_max() / 4).max(1),
            spilled: false,
            batch_spilled: false,
        }
    }

    /// The keys whose lease the batch's requests changed so far, in order (the request in
    /// progress excluded).
    pub fn lease_moves(&self) -> &[LeaseMove] {
        &self.lease_moves
    }

    /// The store's revision after the batch's requests so far.
    pub fn revision(&self) -> i64 {
        self.current
    }

    /// What the batch's LSM write counts for so far, against [`Store::batch_bytes_max`] (a
    /// larger one is refused at [`commit`](Self::commit): commit before it grows past it).
    pub fn bytes(&self) -> usize {
        Db::batch_bytes(&self.batch)
    }

    /// etcd's Put: sets `req.key` to `req.value` with `req.lease` (or keeps the current value
    /// or lease with `ignore_value` / `ignore_lease`); `prev_kv` returns the version it
    /// replaced.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseNotFound`] for a lease `leases` does not know (checked first, as etcd);
    /// [`Error::KeyNotFound`] for `ignore_*` on a key that does not exist; the LSM's.
    pub fn put(&mut self, req: &PutRequest, leases: &dyn LeaseCheck) -> Result<PutResponse> {
        if req.lease != 0 && !leases.exists(req.lease) {
            return Err(Error::LeaseNotFound);
        }
        self.request(|b| b.apply_put(req))
    }

    /// etcd's DeleteRange: deletes the keys in `[key, range_end)`; `prev_kv` returns them.
    /// Deleting nothing takes no revision (`header.revision` is the current one).
    ///
    /// # Errors
    ///
    /// The LSM's.
    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.request(|b| b.apply_delete(req))
    }

    /// etcd's Txn: the compares (of this txn and of the nested ones on the chosen path, all on
    /// the store before the txn, as etcd), then the chosen branch in order, later operations
    /// seeing earlier writes; one main revision for all its changes (none if it writes
    /// nothing). Ranges inside answer with `header.revision` the txn's revision so far, puts
    /// and deletes with the txn's; nested txns' headers are zero, as etcd's.
    ///
    /// # Errors
    ///
    /// Before anything runs, on the chosen path: [`Error::KeyNotFound`] for a put with
    /// `ignore_*` on a key absent before the txn, [`Error::LeaseNotFound`], then
    /// [`Error::FutureRevision`] / [`Error::Compacted`] for a range's revision. While running:
    /// [`Error::KeyNotFound`] for an `ignore_*` put of a key an earlier operation deleted (etcd
    /// panics there; here the whole txn is undone); the LSM's.
    pub fn txn(&mut self, req: &TxnRequest, leases: &dyn LeaseCheck) -> Result<TxnResponse> {
        self.request(|b| {
            let before = b.current;
            let path = {
                let view = b.view();
                let path = txn::path(&view, before, req)?;
                if !txn_is_read_only(req) {
                    txn::check_puts(&view, before, req, &path, leases)?;
                }
                path
            };
            txn::check_ranges(req, &path, before, b.compacted)?;
            let mut response = b.apply_txn(req, &path)?;
            response.header = header(b.revision_so_far());
            Ok(response)
        })
    }

    /// etcd's Compact, its first part: from the commit on, reads below `req.revision` fail
    /// with [`Error::Compacted`], and the compaction is recorded as pending; the versions it
    /// makes unreachable are removed later by [`Store::compact_physical`] (or steps of it).
    /// Takes no revision: `header.revision` is the current one.
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] if `req.revision` is not above the last compacted revision,
    /// [`Error::FutureRevision`] if it is above the current one.
    pub fn compact(&mut self, req: &CompactionRequest) -> Result<CompactionResponse> {
        if req.revision <= self.compacted {
            return Err(Error::Compacted);
        }
        if req.revision > self.current {
            return Err(Error::FutureRevision);
        }
        self.compacted = req.revision;
        Ok(CompactionResponse {
            header: header(self.current),
        })
    }

    /// Writes the batch's changes and `extra` pairs (such as the Raft applied index) in one
    /// LSM write, then publishes the new current and compacted revisions to readers, and the
    /// batch's events to the watchers (no LSM read). Returns the current revision.
    ///
    /// # Errors
    ///
    /// The LSM's (such as [`strata_lsm::Error::BatchTooLarge`] past
    /// [`Store::batch_bytes_max`]): then nothing of the batch is visible or durable.
    pub fn commit(mut self, extra: &[(&[u8], &[u8])]) -> Result<i64> {
        for (k, v) in extra {
            self.batch.put(k, v);
        }
        if self.current != self.base {
            self.batch
                .put(&keys::meta_key(CURRENT), &self.current.to_le_bytes());
        }
        if self.compacted != self.base_compacted {
            self.batch
                .put(&keys::meta_key(COMPACTED), &self.compacted.to_le_bytes());
        }
        // Written before the revision moves (and outside the state lock): a reader in between
        // reads the new versions' revision as a future one, and skips them.
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.store
                .batch_bytes_hint
                .store(batch.data_bytes(), Ordering::Relaxed);
            self.store.db().write(batch, WriteOptions { sync: false })?;
        }
        if self.current != self.base {
            let mut latest = self.store.latest.lock();
            if self.overlay.ranges.is_empty() {
                for (key, states) in &self.overlay.keys {
                    if let Some((_, state)) = states.last() {
                        // Overwritten: a key written again, likely once more.
                        let overwritten = state
                            .as_ref()
                            .is_some_and(|kv| kv.create_revision <= self.base);
                        latest.set(key, state.as_ref().map(Newest::of), overwritten);
                    }
                }
            } else {
                // Its keys are not all listed.
                latest.clear();
            }
        }
        // Written ahead, and now below the current revision: they stay.
        self.batch_spilled = false;
        self.store.publish(self.current, self.compacted);
        if self.current != self.base {
            let events =
                (self.recording != Recording::Off).then(|| std::mem::take(&mut self.events));
            self.store.hub.publish(self.current, events);
        }
        Ok(self.current)
    }

    fn view(&self) -> View<'_> {
        View {
            snapshot: &self.snapshot,
            base: self.base,
            overlay: Some(&self.overlay),
        }
    }

    /// The main revision of the request in progress.
    fn main(&self) -> i64 {
        self.current + 1
    }

    /// The revision a reader inside the request in progress is at: its own once it changed
    /// something, the one before it until then (etcd's `storeTxnWrite.Range`).
    fn revision_so_far(&self) -> i64 {
        if self.sub > 0 {
            self.main()
        } else {
            self.current
        }
    }

    /// Runs one request: all of its changes, or (if it fails) none of them.
    fn request<T>(&mut self, run: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let result = run(self);
        let unspilled = match &result {
            Ok(_) => Ok(()),
            Err(_) => self.unspill(),
        };
        self.finish(result.is_ok());
        unspilled?;
        result
    }

    /// Writes the request in progress's pairs to the LSM now, ahead of the commit: one
    /// request (a delete of a large range, a revoke of a lease with many keys) may change
    /// more than one LSM write holds. Nothing of it is visible before the commit: its
    /// versions are at a revision above the store's current one, which readers skip (and a
    /// batch replayed after a crash writes the same pairs again, the same way).
    fn spill(&mut self) -> Result<()> {
        let mut batch = WriteBatch::new();
        for (k, v) in self.pairs.drain(..) {
            batch.put(&k, &v);
        }
        self.spilled = true;
        self.request_bytes = 0;
        self.store.db().write(batch, WriteOptions { sync: false })?;
        Ok(())
    }

    /// Removes what the request in progress wrote ahead ([`spill`](Self::spill)): it failed,
    /// and its revision goes to the next request.
    fn unspill(&mut self) -> Result<()> {
        if !std::mem::take(&mut self.spilled) {
            return Ok(());
        }
        let main = self.main();
        remove_written_ahead(self.store, main, main)
    }

    /// Ends the request in progress: keeps its changes (and takes its revision if it made
    /// any), or undoes them.
    fn finish(&mut self, keep: bool) {
        let main = self.main();
        self.request_bytes = 0;
        if keep {
            for (k, v) in self.pairs.drain(..) {
                self.batch.put(&k, &v);
            }
            self.batch_spilled |= std::mem::take(&mut self.spilled);
            self.events.append(&mut self.request_events);
            self.lease_moves.append(&mut self.request_lease_moves);
            if self.sub > 0 {
                self.current = main;
            }
        } else {
            self.pairs.clear();
            self.spilled = false;
            self.request_events.clear();
            self.request_lease_moves.clear();
            for key in self.touched.drain(..) {
                if let Some(entries) = self.overlay.keys.get_mut(&key) {
                    if entries.last().is_some_and(|(m, _)| *m == main) {
                        entries.pop();
                    }
                    if entries.is_empty() {
                        self.overlay.keys.remove(&key);
                    }
                }
            }
            // A txn may have deleted more than one range.
            while self.overlay.ranges.last().is_some_and(|r| r.main == main) {
                self.overlay.ranges.pop();
            }
        }
        self.touched.clear();
        self.sub = 0;
    }

    /// The newest version of `key`, the request in progress included.
    fn latest(&self, key: &[u8], values: bool) -> Result<Option<KeyValue>> {
        // Without its value, the committed store's newest version is the cache's, unless the
        // batch changed the key.
        if !values
            && !self.overlay.keys.contains_key(key)
            && !self.overlay.range_deleted(key, i64::MAX)
            && let Some(newest) = self.store.latest.lock().get(key)
        {
            return Ok(newest.map(|n| n.key_value(key)));
        }
        let mut found = None;
        self.view().scan(key, &[], self.main(), values, |kv| {
            found = Some(kv);
            false
        })?;
        Ok(found)
    }

    /// Records one change of the request in progress: `key`'s new state (`None`: deleted).
    fn set(&mut self, key: &[u8], kv: Option<KeyValue>) -> Result<()> {
        self.record(key, kv.as_ref())?;
        let main = self.main();
        let entries = self.overlay.keys.entry(key.to_vec()).or_default();
        match entries.last_mut() {
            Some((m, state)) if *m == main => *state = kv,
            _ => entries.push((main, kv)),
        }
        self.touched.push(key.to_vec());
        Ok(())
    }

    /// Records one change of the request in progress for the watchers and the LSM, but not in
    /// the overlay: [`set`](Self::set), or a delete of a key a [`DeletedRange`] covers.
    fn record(&mut self, key: &[u8], kv: Option<&KeyValue>) -> Result<()> {
        let main = self.main();
        if self.recording != Recording::Off {
            let mut event = match kv {
                Some(kv) => put_event(kv.clone()),
                None => delete_event(key.to_vec(), main),
            };
            let prev_known = self.recording == Recording::EventsWithPrev;
            let create = kv.is_some_and(|kv| kv.create_revision == main);
            if prev_known && !create {
                // The version before the request, as the store would read it at `main - 1`.
                event.prev_kv = self.view().get(key, main - 1)?;
            }
            self.request_events.push(Recorded { event, prev_known });
        }
        let rev = Revision::new(main as u64, self.sub);
        self.sub += 1;
        let (value, kind) = match kv {
            Some(kv) => (encode_version(kv), PUT),
            None => (vec![TOMBSTONE], TOMBSTONE),
        };
        let data_key = keys::data_key(key, rev);
        let revision_value = [&[kind][..], key].concat();
        // As the LSM counts them: keys, values, and a node each.
        self.request_bytes += data_key.len()
            + value.len()
            + (1 + keys::REVISION_BYTES)
            + revision_value.len()
            + 2 * SPILL_NODE_BYTES;
        self.pairs.push((data_key, value));
        self.pairs
            .push((keys::revision_key(rev).to_vec(), revision_value));
        if self.request_bytes >= self.spill_bytes {
            self.spill()?;
        }
        Ok(())
    }

    /// Notes that `key`'s lease goes from `from` to `to` in the request in progress.
    fn lease_moved(&mut self, key: &[u8], from: i64, to: i64) {
        if from != to {
            self.request_lease_moves.push(LeaseMove {
                key: key.to_vec(),
                from,
                to,
            });
        }
    }

    /// Puts `key` over `prev` (its newest version) in the request in progress.
    fn put_kv(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        lease: i64,
        prev: Option<&KeyValue>,
    ) -> Result<()> {
        let main = self.main();
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: prev.map_or(main, |p| p.create_revision),
            mod_revision: main,
            version: prev.map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.lease_moved(key, prev.map_or(0, |p| p.lease), lease);
        self.set(key, Some(kv))
    }

    fn apply_put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        let ignore = req.ignore_value || req.ignore_lease;
        let prev = self.latest(&req.key, req.prev_kv || req.ignore_value)?;
        let (value, lease) = match (&prev, ignore) {
            (None, true) => return Err(Error::KeyNotFound),
            (Some(p), true) => (
                if req.ignore_value {
                    p.value.clone()
                } else {
                    req.value.clone()
                },
                if req.ignore_lease { p.lease } else { req.lease },
            ),
            (_, false) => (req.value.clone(), req.lease),
        };
        self.put_kv(&req.key, value, lease, prev.as_ref())?;
        Ok(PutResponse {
            header: header(self.main()),
            prev_kv: if req.prev_kv { prev } else { None },
        })
    }

    fn apply_delete(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let main = self.main();
        if req.prev_kv || req.range_end.is_empty() {
            // The response holds every key deleted (or the range is one key).
            let live = self
                .view()
                .collect(&req.key, &req.range_end, main, req.prev_kv)?;
            for kv in &live {
                self.lease_moved(&kv.key, kv.lease, 0);
                self.set(&kv.key, None)?;
            }
            return Ok(DeleteRangeResponse {
                header: header(self.revision_so_far()),
                deleted: live.len() as i64,
                prev_kvs: if req.prev_kv { live } else { Vec::new() },
            });
        }
        // In parts: each read from just after the last key deleted. A key the batch changed
        // before gets an overlay entry; the others are covered by the range, once done.
        let mut from = req.key.clone();
        let mut part = Vec::with_capacity(DELETE_PART_KEYS);
        let mut deleted = 0;
        let mut covered = false;
        loop {
            part.clear();
            self.view().scan(&from, &req.range_end, main, false, |kv| {
                part.push(kv);
                part.len() < DELETE_PART_KEYS
            })?;
            for kv in &part {
                self.lease_moved(&kv.key, kv.lease, 0);
                if self.overlay.keys.contains_key(&kv.key) {
                    self.set(&kv.key, None)?;
                } else {
                    self.record(&kv.key, None)?;
                    covered = true;
                }
            }
            deleted += part.len();
            if part.len() < DELETE_PART_KEYS {
                break;
            }
            // Just after the last key deleted.
            from = part.pop().map(|kv| kv.key).unwrap_or_default();
            from.push(0);
        }
        if covered {
            self.overlay.ranges.push(DeletedRange {
                main,
                from: req.key.clone(),
                to: (req.range_end != [0]).then(|| req.range_end.clone()),
            });
        }
        Ok(DeleteRangeResponse {
            header: header(self.revision_so_far()),
            deleted: deleted as i64,
            prev_kvs: Vec::new(),
        })
    }

    /// etcd's `applyTxn`: the branch `path` chose, in order.
    fn apply_txn(&mut self, req: &TxnRequest, path: &Path) -> Result<TxnResponse> {
        let ops = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    let at = self.revision_so_far();
                    Some(Response::ResponseRange(range(
                        &self.view(),
                        r,
                        at,
                        self.compacted,
                    )?))
                }
                Some(Request::RequestPut(r)) => Some(Response::ResponsePut(self.apply_put(r)?)),
                Some(Request::RequestDeleteRange(r)) => {
                    Some(Response::ResponseDeleteRange(self.apply_delete(r)?))
                }
                Some(Request::RequestTxn(r)) => {
                    let inner = nested.next().expect("a path per nested txn on it");
                    let mut response = self.apply_txn(r, inner)?;
                    response.header = Some(ResponseHeader::default());
                    Some(Response::ResponseTxn(response))
                }
                // Refused by `check_txn`; etcd leaves the response empty too.
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse {
            header: None,
            succeeded: path.succeeded,
            responses,
        })
    }
}

/// The arena bytes the LSM counts per operation beyond its key and value (its estimate of a
/// memtable node), for `Batch::spill`'s count.
const SPILL_NODE_BYTES: usize = 64;

/// Keys a delete of a range without `prev_kv` reads and deletes at a time (its memory, with
/// the quarter of [`Store::batch_bytes_max`] it writes ahead at most).
pub const DELETE_PART_KEYS: usize = 1024;

/// Removes from the LSM what requests at main revisions `first..=last` wrote ahead of their
/// commit, found by their revision records (each names its key), in writes of at most a quarter
/// of the LSM's batch limit each. Revisions above the current one hold nothing else: what is
/// found is written ahead, or left by a process that stopped before its commit (unread too).
fn remove_written_ahead(store: &Store, first: i64, last: i64) -> Result<()> {
    let limit = (store.batch_bytes_max() / 4).max(1);
    let mut from = keys::revision_key(Revision::new(first as u64, 0)).to_vec();
    let upper = keys::revision_key(Revision::new(last as u64 + 1, 0));
    loop {
        let mut batch = WriteBatch::new();
        let mut bytes = 0;
        let mut next = None;
        let mut corrupt = false;
        store.db().scan(
            Bound::Included(&from),
            Bound::Excluded(&upper),
            Direction::Forward,
            |k, v| {
                if bytes >= limit {
                    next = Some(k.to_vec());
                    return false;
                }
                let (Some(rev), Some((_, key))) = (keys::decode_revision_key(k), v.split_first())
                else {
                    corrupt = true;
                    return false;
                };
                let data = keys::data_key(key, rev);
                bytes += k.len() + data.len() + 2 * SPILL_NODE_BYTES;
                batch.delete(&data);
                batch.delete(k);
                true
            },
        )?;
        if corrupt {
            return Err(Error::Corrupt("a revision record that does not decode"));
        }
        if !batch.is_empty() {
            store.db().write(batch, WriteOptions { sync: false })?;
        }
        match next {
            Some(key) => from = key,
            None => return Ok(()),
        }
    }
}

impl Drop for Batch<'_> {
    /// A batch dropped uncommitted (or whose commit failed) removes what its requests wrote
    /// ahead, so that the next batch, which reuses its revisions, starts clean. If the LSM
    /// fails that write too it is failing anyway: what is left is above the current revision,
    /// unread, and the same requests write it again when they are applied again.
    fn drop(&mut self) {
        if self.batch_spilled || self.spilled {
            let _ = remove_written_ahead(self.store, self.base + 1, self.main());
        }
    }
}

/// One write request of raw puts and deletes ([`Store::write`]): its changes share one main
/// revision, and become visible (and durable with the batch) together at
/// [`commit`](Self::commit). A put or delete that fails leaves the request uncommittable.
#[derive(Debug)]
pub struct Write<'a> {
    batch: Batch<'a>,
    failed: bool,
}

impl<'a> Write<'a> {
    pub(crate) fn new(batch: Batch<'a>) -> Self {
        Self {
            batch,
            failed: false,
        }
    }

    /// The revision this request's changes get.
    pub fn revision(&self) -> i64 {
        self.batch.main()
    }

    /// The newest version of `key`, this request's changes included.
    ///
    /// # Errors
    ///
    /// The LSM's.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.batch.latest(key, true)
    }

    /// Sets `key` to `value` with `lease`; returns the version it replaced.
    ///
    /// # Errors
    ///
    /// The LSM's.
    pub fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<Option<KeyValue>> {
        let prev = self.batch.latest(key, true);
        let prev = self.track(prev)?;
        let done = self.batch.put_kv(key, value.to_vec(), lease, prev.as_ref());
        self.track(done)?;
        Ok(prev)
    }

    /// Deletes the keys in `[key, end)` (etcd's conventions: empty `end` is `key` alone, `[0]`
    /// every key from `key` on), this request's changes included; returns what it deleted.
    ///
    /// # Errors
    ///
    /// The LSM's.
    pub fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<Vec<KeyValue>> {
        let live = self.batch.view().collect(key, end, self.batch.main(), true);
        let live = self.track(live)?;
        for kv in &live {
            self.batch.lease_moved(&kv.key, kv.lease, 0);
            let done = self.batch.set(&kv.key, None);
            self.track(done)?;
        }
        Ok(live)
    }

    fn track<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    /// Ends the request: its changes (and `extra` pairs) are written in one batch, and the
    /// current revision moves to this request's if it changed anything. Returns the current
    /// revision.
    ///
    /// # Errors
    ///
    /// [`Error::WriteFailed`] if a put or delete of the request failed (nothing is written);
    /// the LSM's: then nothing of the request is visible.
    pub fn commit(mut self, extra: &[(&[u8], &[u8])]) -> Result<i64> {
        if self.failed {
            let unspilled = self.batch.unspill();
            self.batch.finish(false);
            unspilled?;
            return Err(Error::WriteFailed);
        }
        self.batch.finish(true);
        self.batch.commit(extra)
    }
}
