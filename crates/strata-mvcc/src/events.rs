//! The change stream read back from the store: the events of a span of revisions, from the
//! revision keyspace and the data versions (not from memory), for watchers catching up.

use std::ops::Bound;

use strata_lsm::Direction;

use crate::api::{Event, KeyValue, event::EventType};
use crate::error::{Error, Result};
use crate::keys::{self, Revision};
use crate::store::Store;
use crate::view::{PUT, TOMBSTONE, View, decode_version};

/// The most revisions one catch-up read returns (etcd's `maxWatchRevisions` per response is
/// the same): it bounds a read's memory to this many revisions' changes.
pub const CATCH_UP_REVISIONS_MAX: usize = 1000;

/// What a watcher watches: etcd's `WatchCreateRequest` less its revision and ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSpec {
    /// The first key (alone, if `range_end` is empty).
    pub key: Vec<u8>,
    /// The end of the range, excluded; `[0]`: every key from `key` on.
    pub range_end: Vec<u8>,
    /// Put events carry the version before the change (absent for a creation, or if the
    /// revision before is compacted).
    pub prev_kv: bool,
    /// Drop put events (etcd's `NOPUT` filter).
    pub no_put: bool,
    /// Drop delete events (etcd's `NODELETE` filter).
    pub no_delete: bool,
}

impl WatchSpec {
    /// True if `key` is in the watched range (etcd's range conventions).
    pub fn contains(&self, key: &[u8]) -> bool {
        range_contains(&self.key, &self.range_end, key)
    }

    /// True if the range holds no key (`range_end` at or below `key`, neither empty nor `[0]`):
    /// etcd refuses such a watcher (`mvcc: watcher range is empty`).
    pub fn is_empty_range(&self) -> bool {
        !self.range_end.is_empty() && self.range_end != [0] && self.range_end <= self.key
    }

    /// True if the filters let an event of type `put` (else a deletion) through.
    pub(crate) fn passes(&self, put: bool) -> bool {
        if put { !self.no_put } else { !self.no_delete }
    }
}

/// True if `key` is in `[start, end)` with etcd's conventions (empty `end`: `start` alone;
/// `[0]`: every key from `start` on).
pub(crate) fn range_contains(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

/// A span of the change stream ([`Store::events`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventBatch {
    /// The events, in revision then sub-revision order; every revision whole.
    pub events: Vec<Event>,
    /// The first revision not covered: the next read starts here. Above the span's end when
    /// the span is done.
    pub next_revision: i64,
    /// The store's current revision at the read (etcd's catch-up `header.revision`).
    pub current_revision: i64,
}

/// True if `event` creates its key (etcd's `IsCreateEvent`): no `prev_kv` for it.
pub(crate) fn is_create(event: &Event) -> bool {
    event.r#type == EventType::Put as i32
        && event
            .kv
            .as_ref()
            .is_some_and(|kv| kv.create_revision == kv.mod_revision)
}

/// The event of deleting `key` at main revision `main`.
pub(crate) fn delete_event(key: Vec<u8>, main: i64) -> Event {
    Event {
        r#type: EventType::Delete as i32,
        kv: Some(KeyValue {
            key,
            mod_revision: main,
            ..KeyValue::default()
        }),
        prev_kv: None,
    }
}

/// The event of putting `kv`.
pub(crate) fn put_event(kv: KeyValue) -> Event {
    Event {
        r#type: EventType::Put as i32,
        kv: Some(kv),
        prev_kv: None,
    }
}

impl Store {
    /// The events of main revisions `start..=end` (`end` 0 or less, or above the current
    /// revision: the current one) for the keys of `spec`'s range, through its filters, in
    /// revision then sub-revision order, read from the store. Put events carry the full
    /// version; delete events the key and the deletion's revision. With `spec.prev_kv`, each
    /// event that is not a creation carries the version visible at its revision − 1, unless
    /// that revision is below the compacted one.
    ///
    /// At most `revisions_max` revisions with events (at least one) per call, each whole:
    /// [`EventBatch::next_revision`] says where to go on. Memory: those revisions' events;
    /// time: the revision keyspace from `start` to where it stops.
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] if `start` is below the compacted revision (the compacted revision
    /// itself may be read: its changes stay in the revision keyspace); corruption; the LSM's.
    pub fn events(
        &self,
        spec: &WatchSpec,
        start: i64,
        end: i64,
        revisions_max: usize,
    ) -> Result<EventBatch> {
        let (state, snapshot) = self.read_state();
        let start = start.max(1);
        if start < state.compacted {
            return Err(Error::Compacted);
        }
        let end = if end <= 0 || end > state.current {
            state.current
        } else {
            end
        };
        let revisions_max = revisions_max.max(1);
        let mut changes: Vec<(Revision, bool, Vec<u8>)> = Vec::new();
        let mut revisions = 0;
        // Never before `start`: a caller reading from a revision the store has not reached
        // yet (a watcher created ahead of a member that is behind) goes on from there, not
        // from the store's current revision (that would hand it revisions it did not ask for).
        let mut next_revision = (end + 1).max(start);
        let mut error = None;
        if start <= end && !spec.is_empty_range() {
            let lower = keys::revision_key(Revision::new(start as u64, 0));
            let upper = keys::revision_key(Revision::end_of(end as u64));
            let mut last_main = None;
            snapshot.scan(
                Bound::Included(&lower[..]),
                Bound::Included(&upper[..]),
                Direction::Forward,
                |k, v| {
                    let Some(rev) = keys::decode_revision_key(k) else {
                        error = Some(Error::Corrupt("a revision key that does not decode"));
                        return false;
                    };
                    let put = match v.first() {
                        Some(&PUT) => true,
                        Some(&TOMBSTONE) => false,
                        _ => {
                            error = Some(Error::Corrupt("a revision value that does not decode"));
                            return false;
                        }
                    };
                    let key = &v[1..];
                    if !spec.contains(key) || !spec.passes(put) {
                        return true;
                    }
                    if last_main != Some(rev.main) {
                        if revisions == revisions_max {
                            next_revision = rev.main as i64;
                            return false;
                        }
                        revisions += 1;
                        last_main = Some(rev.main);
                    }
                    changes.push((rev, put, key.to_vec()));
                    true
                },
            )?;
        }
        if let Some(e) = error {
            return Err(e);
        }
        let view = View {
            snapshot: &snapshot,
            base: state.current,
            overlay: None,
        };
        let mut events = Vec::with_capacity(changes.len());
        for (rev, put, key) in changes {
            let main = rev.main as i64;
            let mut event = if put {
                let Some(bytes) = snapshot.get(&keys::data_key(&key, rev))? else {
                    // Only the compacted revision's own changes may have lost their version
                    // (a key changed twice within it keeps the last): etcd loses them too.
                    if main <= state.compacted {
                        continue;
                    }
                    return Err(Error::Corrupt("a revision whose version is missing"));
                };
                match decode_version(key.clone(), rev.main, &bytes, true)? {
                    Some(kv) => put_event(kv),
                    None => return Err(Error::Corrupt("a put revision whose version is deleted")),
                }
            } else {
                delete_event(key.clone(), main)
            };
            // The revision before must exist and not be compacted (a read there would fail).
            if spec.prev_kv && !is_create(&event) && main > state.compacted.max(1) {
                event.prev_kv = view.get(&key, main - 1)?;
            }
            events.push(event);
        }
        Ok(EventBatch {
            events,
            next_revision,
            current_revision: state.current,
        })
    }
}
