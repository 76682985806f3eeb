//! What a read sees: the LSM as of a snapshot (the committed store), with a batch's changes not
//! yet committed laid over it; and the codec of the data keyspace's values.

use std::collections::BTreeMap;
use std::ops::Bound;

use strata_lsm::{Direction, Snapshot};

use crate::api::KeyValue;
use crate::error::{Error, Result};
use crate::keys;

/// A data value's first byte: a version, or a deletion.
pub(crate) const PUT: u8 = 0;
pub(crate) const TOMBSTONE: u8 = 1;

/// Bytes of a version's header: kind, create revision, version, lease.
const VERSION_HEADER_BYTES: usize = 1 + 8 + 8 + 8;

/// A batch's changes not yet committed: by key, and ranges deleted whole.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// `(main revision, the key's state after that revision)` in revision order, one entry per
    /// revision (`None`: deleted).
    pub keys: BTreeMap<Vec<u8>, Vec<(i64, Option<KeyValue>)>>,
    /// Ranges deleted by one request each, in revision order. From its revision on, a key of
    /// one that has no entry in `keys` at or before the revision read reads as deleted. A
    /// delete of a range gives an entry of its own to each key it deletes that has entries in
    /// `keys`, so a range hides only versions of the committed store: a delete of a large
    /// range does not hold every key it deletes until the commit.
    pub ranges: Vec<DeletedRange>,
}

/// A range one request deleted (every key of it that existed then).
#[derive(Debug)]
pub(crate) struct DeletedRange {
    /// The request's main revision.
    pub main: i64,
    /// The first key of the range.
    pub from: Vec<u8>,
    /// The end of the range (excluded); `None`: every key from `from` on.
    pub to: Option<Vec<u8>>,
}

impl Overlay {
    /// Whether a range deleted at or before `rev` holds `key`.
    pub(crate) fn range_deleted(&self, key: &[u8], rev: i64) -> bool {
        self.ranges.iter().any(|r| {
            r.main <= rev && key >= r.from.as_slice() && r.to.as_deref().is_none_or(|to| key < to)
        })
    }
}

/// The data value of `kv` (`docs/formats/mvcc.md`).
pub(crate) fn encode_version(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_HEADER_BYTES + kv.value.len());
    out.push(PUT);
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.lease.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// A stored version (`None` for a deletion); its value only if `values`.
pub(crate) fn decode_version(
    key: Vec<u8>,
    mod_revision: u64,
    bytes: &[u8],
    values: bool,
) -> Result<Option<KeyValue>> {
    match bytes.first() {
        Some(&TOMBSTONE) => Ok(None),
        Some(&PUT) if bytes.len() >= VERSION_HEADER_BYTES => {
            let i = |at: usize| {
                i64::from_le_bytes(
                    bytes[at..at + 8]
                        .try_into()
                        .expect("8 bytes, length checked"),
                )
            };
            Ok(Some(KeyValue {
                key,
                create_revision: i(1),
                mod_revision: mod_revision as i64,
                version: i(9),
                lease: i(17),
                value: if values {
                    bytes[VERSION_HEADER_BYTES..].to_vec()
                } else {
                    Vec::new()
                },
            }))
        }
        _ => Err(Error::Corrupt("a version that does not decode")),
    }
}

/// A range's bounds: in the data keyspace (LSM keys), and among user keys.
type Bounds<'k> = ((Vec<u8>, Vec<u8>), (Bound<&'k [u8]>, Bound<&'k [u8]>));

/// The bounds of `[key, end)` (etcd's conventions); `None` if the range is empty (`end` at or
/// below `key`).
fn bounds<'k>(key: &'k [u8], end: &'k [u8]) -> Option<Bounds<'k>> {
    let lower = keys::data_lower(key);
    if end.is_empty() {
        // Every version of `key` alone: its prefix, with the terminator's last byte raised.
        let mut upper = keys::data_prefix(key);
        if let Some(last) = upper.last_mut() {
            *last = 1;
        }
        Some(((lower, upper), (Bound::Included(key), Bound::Included(key))))
    } else if end == [0] {
        // To the end of the data keyspace.
        Some((
            (lower, vec![keys::DATA + 1]),
            (Bound::Included(key), Bound::Unbounded),
        ))
    } else if end <= key {
        None
    } else {
        Some((
            (lower, keys::data_lower(end)),
            (Bound::Included(key), Bound::Excluded(end)),
        ))
    }
}

/// The state an overlay entry list gives a key at `rev`: `None` if the overlay has no change
/// at or before `rev` (the store decides), `Some(None)` if deleted then.
fn visible(entries: &[(i64, Option<KeyValue>)], rev: i64) -> Option<Option<&KeyValue>> {
    entries
        .iter()
        .rev()
        .find(|(main, _)| *main <= rev)
        .map(|(_, kv)| kv.as_ref())
}

/// A copy of `kv`, its value only if `values`.
fn copy(kv: &KeyValue, values: bool) -> KeyValue {
    KeyValue {
        key: kv.key.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
        value: if values { kv.value.clone() } else { Vec::new() },
    }
}

/// The store as a read sees it.
pub(crate) struct View<'a> {
    /// The committed store.
    pub snapshot: &'a Snapshot,
    /// The revision the snapshot holds: every overlay entry is above it.
    pub base: i64,
    /// A batch's uncommitted changes.
    pub overlay: Option<&'a Overlay>,
}

impl View<'_> {
    /// Calls `visit` with each key of `[key, end)` (etcd's conventions) as of revision `rev`
    /// (positive, not above what the view holds), in key order, until it returns false. Values
    /// are read only if `values`. Memory: the overlay's entries by key in the range, one key at a
    /// time from the store.
    pub fn scan(
        &self,
        key: &[u8],
        end: &[u8],
        rev: i64,
        values: bool,
        mut visit: impl FnMut(KeyValue) -> bool,
    ) -> Result<()> {
        let Some(((lower, upper), user_bounds)) = bounds(key, end) else {
            return Ok(());
        };
        let store_rev = rev.min(self.base).max(0) as u64;
        // The overlay, if the revision read reaches it.
        let laid_over = self.overlay.filter(|_| rev > self.base);
        let overlay: Vec<(&[u8], Option<&KeyValue>)> = match laid_over {
            Some(overlay) => overlay
                .keys
                .range::<[u8], _>(user_bounds)
                .filter_map(|(k, entries)| visible(entries, rev).map(|kv| (k.as_slice(), kv)))
                .collect(),
            _ => Vec::new(),
        };
        let mut pending = overlay.into_iter().peekable();
        let mut stopped = false;
        let mut error = None;
        // The user key whose visible version has been handled: its older versions are skipped.
        let mut handled: Option<Vec<u8>> = None;
        // A range of one key ends with its visible version: its older ones (a key rewritten
        // a million times has a million) are not walked through.
        let one_key = end.is_empty();
        let on_each = |k: &[u8], v: &[u8]| {
            let Some((user, at)) = keys::decode_data_key(k) else {
                error = Some(Error::Corrupt("a data key that does not decode"));
                return false;
            };
            if at.main > store_rev || handled.as_deref() == Some(user.as_slice()) {
                return true;
            }
            // The overlay's keys before this one come first.
            while let Some(&(o, kv)) = pending.peek() {
                if o >= user.as_slice() {
                    break;
                }
                pending.next();
                if let Some(kv) = kv
                    && !visit(copy(kv, values))
                {
                    stopped = true;
                    return false;
                }
            }
            // The overlay's version of this key, if it has one, hides the store's.
            let shadow = match pending.peek() {
                Some(&(o, kv)) if o == user.as_slice() => {
                    pending.next();
                    Some(kv)
                }
                _ => None,
            };
            let found = match shadow {
                Some(kv) => kv.map(|kv| copy(kv, values)),
                None if laid_over.is_some_and(|o| o.range_deleted(&user, rev)) => None,
                None => match decode_version(user.clone(), at.main, v, values) {
                    Ok(kv) => kv,
                    Err(e) => {
                        error = Some(e);
                        return false;
                    }
                },
            };
            handled = Some(user);
            if let Some(kv) = found
                && !visit(kv)
            {
                stopped = true;
                return false;
            }
            !one_key
        };
        let (lo, hi) = (Bound::Included(&lower[..]), Bound::Excluded(&upper[..]));
        if one_key {
            // Every key in the bounds has the key's data prefix: the tables whose prefix
            // filters rule it out (`PREFIX_EXTRACTOR`) are not read, so a put of a new key
            // reads no table at all.
            self.snapshot
                .scan_in_prefix(&lower, lo, hi, Direction::Forward, on_each)?;
        } else {
            self.snapshot.scan(lo, hi, Direction::Forward, on_each)?;
        }
        if let Some(e) = error {
            return Err(e);
        }
        if !stopped {
            for (_, kv) in pending {
                if let Some(kv) = kv
                    && !visit(copy(kv, values))
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The version of `key` visible at `rev` (`None`: absent or deleted).
    pub fn get(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>> {
        let mut found = None;
        self.scan(key, &[], rev, true, |kv| {
            found = Some(kv);
            false
        })?;
        Ok(found)
    }

    /// Every key of `[key, end)` visible at `rev`, in key order.
    pub fn collect(&self, key: &[u8], end: &[u8], rev: i64, values: bool) -> Result<Vec<KeyValue>> {
        let mut out = Vec::new();
        self.scan(key, end, rev, values, |kv| {
            out.push(kv);
            true
        })?;
        Ok(out)
    }
}
