//! The MVCC store: writes as requests (each one main revision), ranges at a revision, and
//! compaction, over one `strata-lsm` store.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::Mutex;
use strata_lsm::{Db, Direction, WriteBatch, WriteOptions};

use crate::keys::{self, Revision};

/// A key's version as a reader sees it (etcd's `mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The main revision that created this incarnation of the key.
    pub create_revision: u64,
    /// The main revision of its last change.
    pub mod_revision: u64,
    /// Changes since its creation, from 1.
    pub version: u64,
    /// Its lease (0: none).
    pub lease: i64,
    /// Its value.
    pub value: Vec<u8>,
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The revision asked for has been compacted (etcd's `ErrCompacted`).
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The revision asked for is above the current one (etcd's `ErrFutureRev`).
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A stored key or value that does not decode.
    #[error("mvcc: corrupt entry: {0}")]
    Corrupt(&'static str),
    /// The LSM failed.
    #[error(transparent)]
    Lsm(#[from] strata_lsm::Error),
}

/// The store's results.
pub type Result<T> = std::result::Result<T, Error>;

/// A data entry's first byte: a version, or a deletion.
const PUT: u8 = 0;
const TOMBSTONE: u8 = 1;

/// Bytes of a version's header: kind, create revision, version, lease.
const VERSION_HEADER_BYTES: usize = 1 + 8 + 8 + 8;

/// Metadata names.
const CURRENT: &str = "current";
const COMPACTED: &str = "compacted";

/// Writes one compaction batch holds at most: a compaction of many keys goes in steps.
const COMPACTION_BATCH_OPS: usize = 10_000;

fn encode_version(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_HEADER_BYTES + kv.value.len());
    out.push(PUT);
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// A stored version: `None` for a deletion.
fn decode_version(key: Vec<u8>, rev: Revision, bytes: &[u8]) -> Result<Option<KeyValue>> {
    match bytes.first() {
        Some(&TOMBSTONE) => Ok(None),
        Some(&PUT) if bytes.len() >= VERSION_HEADER_BYTES => {
            let u = |at: usize| {
                u64::from_le_bytes(
                    bytes[at..at + 8]
                        .try_into()
                        .expect("8 bytes, length checked"),
                )
            };
            Ok(Some(KeyValue {
                key,
                create_revision: u(1),
                mod_revision: rev.main,
                version: u(9),
                lease: u(17) as i64,
                value: bytes[VERSION_HEADER_BYTES..].to_vec(),
            }))
        }
        _ => Err(Error::Corrupt("a version that does not decode")),
    }
}

fn read_meta(db: &Db, name: &str) -> Result<Option<u64>> {
    match db.get(&keys::meta_key(name))? {
        None => Ok(None),
        Some(bytes) => bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(|b| Some(u64::from_le_bytes(b)))
            .ok_or(Error::Corrupt("a metadata value that does not decode")),
    }
}

/// The bounds of the data keyspace for user keys in `[key, end)`, with etcd's conventions: an
/// empty `end` is `key` alone, `end == [0]` is every key from `key` on.
fn data_bounds(key: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let lower = keys::data_lower(key);
    let upper = if end.is_empty() {
        // Every version of `key` alone: its prefix, with the terminator's last byte raised.
        let mut upper = keys::data_prefix(key);
        if let Some(last) = upper.last_mut() {
            *last = 1;
        }
        upper
    } else if end == [0] {
        // The end of the data keyspace.
        vec![keys::DATA + 1]
    } else {
        keys::data_lower(end)
    };
    (lower, upper)
}

/// What a range returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResult {
    /// The keys, in key order, up to the limit.
    pub kvs: Vec<KeyValue>,
    /// How many keys the range holds at that revision, whatever the limit.
    pub count: u64,
    /// More keys than the limit.
    pub more: bool,
}

#[derive(Debug)]
struct State {
    /// The current main revision (1: empty).
    current: u64,
    /// The last compacted revision (0: none).
    compacted: u64,
}

/// etcd's MVCC key space on a `strata-lsm` store.
#[derive(Debug)]
pub struct Store {
    db: Arc<Db>,
    state: Mutex<State>,
}

impl Store {
    /// The store kept in `db` (empty, at revision 1, if `db` holds none).
    ///
    /// # Errors
    ///
    /// The LSM failed, or its metadata does not decode.
    pub fn open(db: Arc<Db>) -> Result<Self> {
        let current = read_meta(&db, CURRENT)?.unwrap_or(1);
        let compacted = read_meta(&db, COMPACTED)?.unwrap_or(0);
        Ok(Self {
            db,
            state: Mutex::new(State { current, compacted }),
        })
    }

    /// The current revision.
    pub fn current_revision(&self) -> u64 {
        self.state.lock().current
    }

    /// The last compacted revision (0: none).
    pub fn compacted_revision(&self) -> u64 {
        self.state.lock().compacted
    }

    /// Starts a write request: its changes share one main revision, and become visible (and
    /// durable with the batch) together at [`Write::commit`].
    pub fn write(&self) -> Write<'_> {
        let main = self.current_revision() + 1;
        Write {
            store: self,
            main,
            sub: 0,
            batch: WriteBatch::new(),
            latest: BTreeMap::new(),
        }
    }

    /// The keys in `[key, end)` (etcd's conventions: empty `end` is `key` alone; `[0]` is every
    /// key from `key` on) as of main revision `rev` (0: current), up to `limit` keys (0: all).
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] below the compacted revision, [`Error::FutureRevision`] above the
    /// current one; the LSM's errors.
    pub fn range(&self, key: &[u8], end: &[u8], rev: u64, limit: usize) -> Result<RangeResult> {
        let (rev, snapshot) = {
            let state = self.state.lock();
            let rev = if rev == 0 { state.current } else { rev };
            if rev > state.current {
                return Err(Error::FutureRevision);
            }
            if rev < state.compacted {
                return Err(Error::Compacted);
            }
            // The LSM's view as of now: writes committed later are not in it.
            (rev, self.db.snapshot())
        };
        let (lower, upper) = data_bounds(key, end);
        if upper <= lower {
            return Ok(RangeResult::default());
        }
        let mut out = RangeResult::default();
        let mut done: Option<Vec<u8>> = None;
        let mut error = None;
        snapshot.scan(
            Bound::Included(&lower),
            Bound::Excluded(&upper),
            Direction::Forward,
            |k, v| {
                let Some((user, at)) = keys::decode_data_key(k) else {
                    error = Some(Error::Corrupt("a data key that does not decode"));
                    return false;
                };
                if done.as_ref() == Some(&user) || at.main > rev {
                    return true;
                }
                // The newest version at or before `rev`: the one visible there.
                done = Some(user.clone());
                match decode_version(user, at, v) {
                    Ok(Some(kv)) => {
                        out.count += 1;
                        if limit == 0 || out.kvs.len() < limit {
                            out.kvs.push(kv);
                        } else {
                            out.more = true;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        error = Some(e);
                        return false;
                    }
                }
                true
            },
        )?;
        match error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// The newest version of `key` (`None` if absent or deleted).
    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let mut found = None;
        let mut error = None;
        let (lower, upper) = data_bounds(key, &[]);
        self.db.scan(
            Bound::Included(&lower),
            Bound::Excluded(&upper),
            Direction::Forward,
            |k, v| {
                match keys::decode_data_key(k) {
                    Some((user, at)) => match decode_version(user, at, v) {
                        Ok(kv) => found = kv,
                        Err(e) => error = Some(e),
                    },
                    None => error = Some(Error::Corrupt("a data key that does not decode")),
                }
                false
            },
        )?;
        match error {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    /// Drops every version no reader at `rev` or later can see: for each key, the versions
    /// older than its newest at or before `rev`, and that one too if it is a deletion; and the
    /// revision keyspace up to `rev`. Ranges below `rev` fail with [`Error::Compacted`] from
    /// the start.
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] if `rev` is not above the last compacted revision,
    /// [`Error::FutureRevision`] above the current one; the LSM's errors.
    pub fn compact(&self, rev: u64) -> Result<()> {
        {
            let mut state = self.state.lock();
            if rev <= state.compacted {
                return Err(Error::Compacted);
            }
            if rev > state.current {
                return Err(Error::FutureRevision);
            }
            let mut batch = WriteBatch::new();
            batch.put(&keys::meta_key(COMPACTED), &rev.to_le_bytes());
            self.db.write(batch, WriteOptions { sync: false })?;
            state.compacted = rev;
        }
        // Versions to drop, found in one pass over the data keyspace and deleted in steps.
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        let mut current: Option<Vec<u8>> = None;
        let mut kept = false;
        let mut error = None;
        let snapshot = self.db.snapshot();
        snapshot.scan(
            Bound::Included(&[keys::DATA][..]),
            Bound::Excluded(&[keys::DATA + 1][..]),
            Direction::Forward,
            |k, v| {
                let Some((user, at)) = keys::decode_data_key(k) else {
                    error = Some(Error::Corrupt("a data key that does not decode"));
                    return false;
                };
                if current.as_ref() != Some(&user) {
                    current = Some(user);
                    kept = false;
                }
                if at.main > rev {
                    return true;
                }
                if kept {
                    doomed.push(k.to_vec());
                } else {
                    kept = true;
                    if v.first() == Some(&TOMBSTONE) {
                        doomed.push(k.to_vec());
                    }
                }
                true
            },
        )?;
        if let Some(e) = error {
            return Err(e);
        }
        snapshot.scan(
            Bound::Included(&keys::revision_key(Revision::default())[..]),
            Bound::Included(&keys::revision_key(Revision::end_of(rev))[..]),
            Direction::Forward,
            |k, _| {
                doomed.push(k.to_vec());
                true
            },
        )?;
        for chunk in doomed.chunks(COMPACTION_BATCH_OPS) {
            let mut batch = WriteBatch::new();
            for k in chunk {
                batch.delete(k);
            }
            self.db.write(batch, WriteOptions { sync: false })?;
        }
        Ok(())
    }
}

/// One write request in progress ([`Store::write`]).
#[derive(Debug)]
pub struct Write<'a> {
    store: &'a Store,
    main: u64,
    sub: u64,
    batch: WriteBatch,
    /// What this request changed so far, by key (`None`: deleted): its later reads see it.
    latest: BTreeMap<Vec<u8>, Option<KeyValue>>,
}

impl Write<'_> {
    /// The revision this request's changes get.
    pub fn revision(&self) -> u64 {
        self.main
    }

    /// The newest version of `key`, this request's changes included.
    ///
    /// # Errors
    ///
    /// The LSM's.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.latest.get(key) {
            Some(kv) => Ok(kv.clone()),
            None => self.store.latest(key),
        }
    }

    /// Sets `key` to `value` with `lease`; returns the previous version.
    ///
    /// # Errors
    ///
    /// The LSM's.
    pub fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> Result<Option<KeyValue>> {
        let prev = self.get(key)?;
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: prev.as_ref().map_or(self.main, |p| p.create_revision),
            mod_revision: self.main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
            value: value.to_vec(),
        };
        let rev = self.next();
        self.batch
            .put(&keys::data_key(key, rev), &encode_version(&kv));
        self.batch
            .put(&keys::revision_key(rev), &[&[PUT][..], key].concat());
        self.latest.insert(key.to_vec(), Some(kv));
        Ok(prev)
    }

    /// Deletes the keys in `[key, end)` (as [`Store::range`] reads them, this request's changes
    /// included); returns what was deleted.
    ///
    /// # Errors
    ///
    /// The LSM's.
    pub fn delete_range(&mut self, key: &[u8], end: &[u8]) -> Result<Vec<KeyValue>> {
        // The keys that exist now: in the store, updated by this request's changes.
        let mut live: BTreeMap<Vec<u8>, KeyValue> = self
            .store
            .range(key, end, 0, 0)?
            .kvs
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        let in_range = |k: &[u8]| {
            if end.is_empty() {
                k == key
            } else if end == [0] {
                k >= key
            } else {
                k >= key && k < end
            }
        };
        for (k, kv) in &self.latest {
            if in_range(k) {
                match kv {
                    Some(kv) => {
                        live.insert(k.clone(), kv.clone());
                    }
                    None => {
                        live.remove(k);
                    }
                }
            }
        }
        let mut deleted = Vec::with_capacity(live.len());
        for (k, kv) in live {
            let rev = self.next();
            self.batch.put(&keys::data_key(&k, rev), &[TOMBSTONE]);
            self.batch
                .put(&keys::revision_key(rev), &[&[TOMBSTONE][..], &k].concat());
            self.latest.insert(k, None);
            deleted.push(kv);
        }
        Ok(deleted)
    }

    fn next(&mut self) -> Revision {
        let rev = Revision::new(self.main, self.sub);
        self.sub += 1;
        rev
    }

    /// Ends the request: its changes (and `extra` pairs, such as the Raft applied index) are
    /// written in one batch, and the current revision moves to this request's if it changed
    /// anything. Returns the current revision.
    ///
    /// # Errors
    ///
    /// The LSM's: then nothing of the request is visible.
    pub fn commit(mut self, extra: &[(&[u8], &[u8])]) -> Result<u64> {
        let changed = self.sub > 0;
        for (k, v) in extra {
            self.batch.put(k, v);
        }
        if changed {
            self.batch
                .put(&keys::meta_key(CURRENT), &self.main.to_le_bytes());
        }
        // Written before the current revision moves (and outside its lock): a range between
        // the two reads the new versions' revision as a future one, and skips them.
        if !self.batch.is_empty() {
            self.store
                .db
                .write(self.batch, WriteOptions { sync: false })?;
        }
        let mut state = self.store.state.lock();
        if changed {
            debug_assert_eq!(state.current + 1, self.main, "one request at a time");
            state.current = self.main;
        }
        Ok(state.current)
    }
}
