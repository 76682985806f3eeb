//! Watchers: each committed batch hands its events to the watchers whose range they fall in
//! (found by key or prefix, not by scanning them all), into a bounded buffer per watcher; a
//! watcher that starts in the past, or whose buffer fills, reads from the store
//! ([`Store::events`]) until it reaches the live stream again. Memory stays bounded and no
//! event is lost or repeated.
//!
//! Runtime-agnostic: a watcher's [`Notify`] is called (outside any lock) when it has something
//! to poll; the server turns it into a Tokio `Notify`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::api::{Event, event::EventType};
use crate::error::{Error, Result};
use crate::events::{WatchSpec, is_create, range_contains};
use crate::store::Store;

/// The events a watcher's buffer holds by default before the watcher falls back to reading
/// from the store. The events are shared between watchers (`Arc`), so a buffer costs a pointer
/// per event; what an event costs is held at most once, however many watchers buffer it.
pub const WATCHER_BUFFER_EVENTS_DEFAULT: usize = 1024;

/// A watcher's id in a [`Store`]'s watchers.
pub type WatcherId = u64;

/// Called when a watcher has events (or a catch-up) to poll. It must not call back into the
/// store's watch methods synchronously (wake a task instead).
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// What [`Store::watch_poll`] hands over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchPoll {
    /// Events in revision then sub-revision order, each revision whole.
    pub events: Vec<Event>,
    /// Every event of the watcher up to this revision has been handed over (when `caught_up`);
    /// the header revision for a progress notification.
    pub revision: i64,
    /// The first revision the watcher has not been handed: it resumes there.
    pub next_revision: i64,
    /// Nothing more to poll now: the watcher is live and its buffer is empty.
    pub caught_up: bool,
}

/// One event of a committed batch, shared by every watcher that buffers it.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub event: Event,
    /// Whether `event.prev_kv` was computed (only if some watcher wanted it at the batch's
    /// start); a watcher wanting it otherwise reads the event from the store.
    pub prev_known: bool,
}

/// Hashes a [`WatcherId`] with one multiplication. Ids are handed out in sequence and never
/// chosen by a client, so the default hasher's resistance to chosen keys buys nothing, while
/// its cost is paid on every lookup of the commit and poll paths (one per watcher an event
/// reaches). The multiplier spreads sequential ids over the high bits as well, which the map
/// uses to tell entries of one group apart.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (ids are `u64`); other input is folded in, never dropped.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(ID_HASH_MULTIPLIER);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = (self.0 ^ id).wrapping_mul(ID_HASH_MULTIPLIER);
    }
}

/// 2^64 divided by the golden ratio, odd: multiplying by it is a bijection that carries every
/// bit of an id into the high bits (Fibonacci hashing).
const ID_HASH_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// Maps and sets keyed by [`WatcherId`], hashed with [`IdHasher`].
type IdMap<V> = HashMap<WatcherId, V, BuildHasherDefault<IdHasher>>;
type IdSet = HashSet<WatcherId, BuildHasherDefault<IdHasher>>;

/// Whether `[key, range_end)` holds exactly the keys that start with `key` (etcd's prefix
/// range: `range_end` is `key` with its last byte below 0xff incremented and what follows it
/// dropped). A key is in such a range if and only if `key` is its prefix.
fn is_prefix_range(key: &[u8], range_end: &[u8]) -> bool {
    let Some(last) = key.iter().rposition(|&b| b < 0xff) else {
        return false;
    };
    range_end.len() == last + 1
        && range_end[..last] == key[..last]
        && range_end[last] == key[last] + 1
}

/// Bytes all the watchers' buffers may hold together (each event's keys and values, plus a fixed
/// overhead per buffered entry): a watcher whose event would pass it falls back to reading the
/// store, as one whose own buffer is full does. Per-watcher limits alone would let 100,000
/// watchers hold 1,024 events each; this caps the hub's memory whatever the watchers, the value
/// sizes and the fan-out.
pub const HUB_BUFFERED_BYTES_MAX: usize = 256 << 20;

/// What one buffered entry counts for beyond its bytes: the pointer, the queue slot, and the
/// event's fixed fields (shared events are counted once per buffer holding them, an
/// overestimate that errs toward falling back early).
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// What a buffered event counts for against [`HUB_BUFFERED_BYTES_MAX`].
fn charge(recorded: &Recorded) -> usize {
    let kv_bytes = |kv: &Option<crate::api::KeyValue>| {
        kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len())
    };
    ENTRY_OVERHEAD_BYTES + kv_bytes(&recorded.event.kv) + kv_bytes(&recorded.event.prev_kv)
}

fn revision_of(event: &Event) -> i64 {
    event.kv.as_ref().map_or(0, |kv| kv.mod_revision)
}

struct Watcher {
    spec: WatchSpec,
    /// The first revision not yet buffered or handed over (a lower bound while live: later
    /// ones arrive through the buffer).
    next: i64,
    buffer: VecDeque<Arc<Recorded>>,
    buffer_events_max: usize,
    /// Reads from the store from `next` on, not from the buffer's tail.
    lagging: bool,
    notify: Notify,
}

#[derive(Default)]
struct Inner {
    /// The last revision published to the watchers.
    revision: i64,
    next_id: WatcherId,
    watchers: IdMap<Watcher>,
    /// Watchers of one key, by key: an event finds them in one lookup.
    by_key: HashMap<Vec<u8>, IdSet>,
    /// Watchers of a prefix (a range that holds exactly the keys starting with its key), by
    /// prefix: an event finds them in one lookup per distinct prefix length, not by a check of
    /// every prefix watched.
    prefixes: HashMap<Vec<u8>, IdSet>,
    /// The lengths of the prefixes in `prefixes`, with how many prefixes have each.
    prefix_lens: BTreeMap<usize, usize>,
    /// Watchers of any other range, by range `(key, range_end)`: an event is checked against
    /// each distinct range (many watchers of one range cost one check), not each watcher.
    ranges: HashMap<(Vec<u8>, Vec<u8>), IdSet>,
    /// Watchers that asked for `prev_kv`.
    prev_kv_count: usize,
    /// What every buffer holds, as [`charge`] counts it: at most `buffered_bytes_max`.
    buffered_bytes: usize,
    /// [`HUB_BUFFERED_BYTES_MAX`] unless set otherwise.
    buffered_bytes_max: usize,
}

/// The watchers of one [`Store`].
#[derive(Default)]
pub(crate) struct WatchHub {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for WatchHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("WatchHub")
            .field("revision", &inner.revision)
            .field("watchers", &inner.watchers.len())
            .finish_non_exhaustive()
    }
}

/// What a batch records for the watchers: nothing without watchers; prevs if one wants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recording {
    Off,
    Events,
    EventsWithPrev,
}

impl WatchHub {
    pub(crate) fn new(revision: i64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                revision,
                buffered_bytes_max: HUB_BUFFERED_BYTES_MAX,
                ..Inner::default()
            }),
        }
    }

    pub(crate) fn recording(&self) -> Recording {
        let inner = self.inner.lock();
        if inner.watchers.is_empty() {
            Recording::Off
        } else if inner.prev_kv_count > 0 {
            Recording::EventsWithPrev
        } else {
            Recording::Events
        }
    }

    /// Hands the events of revisions up to `current` (a committed batch's; `None` if it did
    /// not record them) to the watchers.
    pub(crate) fn publish(&self, current: i64, events: Option<Vec<Recorded>>) {
        let mut wake: Vec<Notify> = Vec::new();
        {
            let mut guard = self.inner.lock();
            let inner = &mut *guard;
            if current <= inner.revision {
                return;
            }
            inner.revision = current;
            match events {
                None => {
                    // Rare: watchers registered while a batch without recording ran.
                    for w in inner.watchers.values_mut() {
                        if !w.lagging && w.next <= current {
                            w.lagging = true;
                            wake.push(w.notify.clone());
                        }
                    }
                }
                Some(events) => {
                    for recorded in events {
                        let recorded = Arc::new(recorded);
                        let Some(kv) = recorded.event.kv.as_ref() else {
                            continue;
                        };
                        let single = inner.by_key.get(&kv.key).into_iter();
                        let prefixed = inner
                            .prefix_lens
                            .keys()
                            .map_while(|&len| kv.key.get(..len))
                            .filter_map(|prefix| inner.prefixes.get(prefix));
                        let ranges = inner
                            .ranges
                            .iter()
                            .filter(|((start, end), _)| range_contains(start, end, &kv.key))
                            .map(|(_, ids)| ids);
                        for id in single.chain(prefixed).chain(ranges).flatten() {
                            let Some(w) = inner.watchers.get_mut(id) else {
                                continue;
                            };
                            offer(
                                w,
                                &recorded,
                                &mut wake,
                                &mut inner.buffered_bytes,
                                inner.buffered_bytes_max,
                            );
                        }
                    }
                }
            }
        }
        for notify in wake {
            notify();
        }
    }

    /// Every watcher reads from the store from where it is (the store's contents were
    /// replaced); later events arrive from `current` on.
    pub(crate) fn reset(&self, current: i64) {
        let mut wake = Vec::new();
        {
            let mut inner = self.inner.lock();
            inner.revision = current;
            inner.buffered_bytes = 0;
            for w in inner.watchers.values_mut() {
                w.buffer.clear();
                if !w.lagging {
                    w.lagging = true;
                    wake.push(w.notify.clone());
                }
            }
        }
        for notify in wake {
            notify();
        }
    }
}

/// Offers one event to a watcher whose key or range may hold it.
fn offer(
    w: &mut Watcher,
    recorded: &Arc<Recorded>,
    wake: &mut Vec<Notify>,
    buffered_bytes: &mut usize,
    buffered_bytes_max: usize,
) {
    let event = &recorded.event;
    let Some(kv) = event.kv.as_ref() else {
        return;
    };
    let rev = kv.mod_revision;
    if w.lagging || rev < w.next || !w.spec.contains(&kv.key) {
        return;
    }
    let put = event.r#type == EventType::Put as i32;
    if !w.spec.passes(put) {
        return;
    }
    let needs_prev = w.spec.prev_kv && !is_create(event);
    let cost = charge(recorded);
    if w.buffer.len() >= w.buffer_events_max
        || *buffered_bytes + cost > buffered_bytes_max
        || (needs_prev && !recorded.prev_known)
    {
        // Fall back to the store from this revision: drop its events already buffered, so
        // that a revision is never split between the buffer and the store.
        while w
            .buffer
            .back()
            .is_some_and(|b| revision_of(&b.event) == rev)
        {
            if let Some(dropped) = w.buffer.pop_back() {
                *buffered_bytes -= charge(&dropped);
            }
        }
        w.next = rev;
        w.lagging = true;
        wake.push(w.notify.clone());
        return;
    }
    if w.buffer.is_empty() {
        wake.push(w.notify.clone());
    }
    *buffered_bytes += cost;
    w.buffer.push_back(recorded.clone());
}

/// A buffered event as a watcher that asked for `prev_kv` (or not) sees it.
fn deliver(prev_kv: bool, recorded: &Recorded) -> Event {
    let mut event = recorded.event.clone();
    if !prev_kv || is_create(&event) {
        event.prev_kv = None;
    }
    event
}

/// What [`take_buffered`] took under the hub's lock; events are copied out of it after the
/// lock is released, so that the commit path publishing to the hub does not wait on copies.
struct Taken {
    recorded: Vec<Arc<Recorded>>,
    /// What the entries taken counted against the hub's budget.
    charged: usize,
    prev_kv: bool,
    next_revision: i64,
    caught_up: bool,
}

impl Taken {
    fn into_poll(self) -> WatchPoll {
        WatchPoll {
            events: self
                .recorded
                .iter()
                .map(|r| deliver(self.prev_kv, r))
                .collect(),
            revision: self.next_revision - 1,
            next_revision: self.next_revision,
            caught_up: self.caught_up,
        }
    }
}

/// Takes up to `revisions_max` whole revisions of watcher `w`'s buffer (it has one, or it is
/// live: nothing to read from the store); `revision` is the last one published.
fn take_buffered(w: &mut Watcher, revision: i64, revisions_max: usize) -> Taken {
    let mut recorded = Vec::new();
    let mut charged = 0;
    let mut revisions = 0;
    let mut last = None;
    while let Some(front) = w.buffer.front() {
        let rev = revision_of(&front.event);
        if last != Some(rev) {
            if revisions == revisions_max {
                break;
            }
            revisions += 1;
            last = Some(rev);
        }
        if let Some(front) = w.buffer.pop_front() {
            charged += charge(&front);
            recorded.push(front);
        }
    }
    if let Some(rev) = last {
        w.next = w.next.max(rev + 1);
    }
    let caught_up = w.buffer.is_empty() && !w.lagging;
    // Where the watcher is: at its buffer's first revision if it holds one (a lagging
    // watcher's `next` is past its buffer: the store's turn comes after).
    let next_revision = match w.buffer.front() {
        Some(front) => revision_of(&front.event),
        None if caught_up => w.next.max(revision + 1),
        None => w.next,
    };
    Taken {
        recorded,
        charged,
        prev_kv: w.spec.prev_kv,
        next_revision,
        caught_up,
    }
}

impl Store {
    /// Registers a watcher of `spec` from `start_revision` (0 or less: from the next revision
    /// on) with a buffer of `buffer_events_max` events (at least 1; see
    /// [`WATCHER_BUFFER_EVENTS_DEFAULT`]). `notify` is called whenever it has something to
    /// poll with [`watch_poll`](Self::watch_poll) (at once if it starts in the past).
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] if `start_revision` is positive and below the compacted revision;
    /// [`Error::EmptyWatchRange`] if `spec`'s range holds no key.
    pub fn watch(
        &self,
        spec: WatchSpec,
        start_revision: i64,
        buffer_events_max: usize,
        notify: Notify,
    ) -> Result<WatcherId> {
        if spec.is_empty_range() {
            return Err(Error::EmptyWatchRange);
        }
        if start_revision > 0 && start_revision < self.compacted_revision() {
            return Err(Error::Compacted);
        }
        let (id, wake) = {
            let mut inner = self.hub.inner.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            let next = if start_revision > 0 {
                start_revision
            } else {
                inner.revision + 1
            };
            let lagging = next <= inner.revision;
            if spec.range_end.is_empty() {
                inner.by_key.entry(spec.key.clone()).or_default().insert(id);
            } else if is_prefix_range(&spec.key, &spec.range_end) {
                if !inner.prefixes.contains_key(&spec.key) {
                    *inner.prefix_lens.entry(spec.key.len()).or_default() += 1;
                }
                inner
                    .prefixes
                    .entry(spec.key.clone())
                    .or_default()
                    .insert(id);
            } else {
                let range = (spec.key.clone(), spec.range_end.clone());
                inner.ranges.entry(range).or_default().insert(id);
            }
            if spec.prev_kv {
                inner.prev_kv_count += 1;
            }
            let watcher = Watcher {
                spec,
                next,
                buffer: VecDeque::new(),
                buffer_events_max: buffer_events_max.max(1),
                lagging,
                notify: notify.clone(),
            };
            inner.watchers.insert(id, watcher);
            (id, lagging)
        };
        if wake {
            notify();
        }
        Ok(id)
    }

    /// What the watchers' buffers hold together now, in bytes as the hub counts them (the
    /// keys and values of the events buffered, plus a fixed overhead per entry).
    pub fn watch_buffered_bytes(&self) -> usize {
        self.hub.inner.lock().buffered_bytes
    }

    /// Sets the bytes all the watchers' buffers may hold together ([`HUB_BUFFERED_BYTES_MAX`]
    /// by default); past it, a watcher falls back to reading the store.
    pub fn set_watch_buffered_bytes_max(&self, bytes: usize) {
        self.hub.inner.lock().buffered_bytes_max = bytes;
    }

    /// Removes a watcher; false if there was none of that id.
    pub fn unwatch(&self, id: WatcherId) -> bool {
        let mut guard = self.hub.inner.lock();
        let inner = &mut *guard;
        let Some(w) = inner.watchers.remove(&id) else {
            return false;
        };
        inner.buffered_bytes -= w.buffer.iter().map(|r| charge(r)).sum::<usize>();
        if w.spec.prev_kv {
            inner.prev_kv_count -= 1;
        }
        if w.spec.range_end.is_empty() {
            if let Some(ids) = inner.by_key.get_mut(&w.spec.key) {
                ids.remove(&id);
                if ids.is_empty() {
                    inner.by_key.remove(&w.spec.key);
                }
            }
        } else if is_prefix_range(&w.spec.key, &w.spec.range_end) {
            if let Some(ids) = inner.prefixes.get_mut(&w.spec.key) {
                ids.remove(&id);
                if ids.is_empty() {
                    inner.prefixes.remove(&w.spec.key);
                    let len = w.spec.key.len();
                    if let Some(count) = inner.prefix_lens.get_mut(&len) {
                        *count -= 1;
                        if *count == 0 {
                            inner.prefix_lens.remove(&len);
                        }
                    }
                }
            }
        } else {
            let range = (w.spec.key, w.spec.range_end);
            if let Some(ids) = inner.ranges.get_mut(&range) {
                ids.remove(&id);
                if ids.is_empty() {
                    inner.ranges.remove(&range);
                }
            }
        }
        true
    }

    /// The number of watchers registered.
    pub fn watcher_count(&self) -> usize {
        self.hub.inner.lock().watchers.len()
    }

    /// As [`watch_poll`](Self::watch_poll) when that needs no read from the store: the
    /// watcher's buffered live events (none if it is caught up), taken under the hub's lock
    /// alone, so an async server can call it on its runtime. `None` when the watcher is behind
    /// with nothing buffered: call [`watch_poll`](Self::watch_poll), which reads the store,
    /// off the runtime.
    ///
    /// # Errors
    ///
    /// [`Error::WatcherNotFound`] for an unknown id.
    pub fn watch_poll_buffered(
        &self,
        id: WatcherId,
        revisions_max: usize,
    ) -> Result<Option<WatchPoll>> {
        let taken = {
            let mut guard = self.hub.inner.lock();
            let inner = &mut *guard;
            let w = inner.watchers.get_mut(&id).ok_or(Error::WatcherNotFound)?;
            if w.buffer.is_empty() && w.lagging {
                return Ok(None);
            }
            let taken = take_buffered(w, inner.revision, revisions_max.max(1));
            inner.buffered_bytes -= taken.charged;
            taken
        };
        Ok(Some(taken.into_poll()))
    }

    /// [`watch_poll_buffered`](Self::watch_poll_buffered) for many watchers at once, under one
    /// take of the hub's lock rather than one per watcher (a stream with many ready watchers
    /// polls them so). Answers the ids in order, appending one answer per id to `out` (an
    /// unknown id's is [`Error::WatcherNotFound`] and does not stop the others), and stops
    /// before the next id once the answers hold `events_max` events or more: the events handed
    /// over are copies, so the bound keeps what a caller holds at once near one watcher's
    /// buffer rather than every ready watcher's. Returns the number of ids answered: all of
    /// them, or at least one if `ids` is not empty.
    pub fn watch_poll_buffered_many(
        &self,
        ids: &[WatcherId],
        revisions_max: usize,
        events_max: usize,
        out: &mut Vec<Result<Option<WatchPoll>>>,
    ) -> usize {
        let revisions_max = revisions_max.max(1);
        let mut taken: Vec<Result<Option<Taken>>> = Vec::new();
        {
            let mut guard = self.hub.inner.lock();
            let inner = &mut *guard;
            let mut events = 0;
            for &id in ids {
                if events >= events_max && !taken.is_empty() {
                    break;
                }
                let answer = match inner.watchers.get_mut(&id) {
                    None => Err(Error::WatcherNotFound),
                    Some(w) if w.buffer.is_empty() && w.lagging => Ok(None),
                    Some(w) => {
                        let t = take_buffered(w, inner.revision, revisions_max);
                        inner.buffered_bytes -= t.charged;
                        events += t.recorded.len();
                        Ok(Some(t))
                    }
                };
                taken.push(answer);
            }
        }
        let answered = taken.len();
        out.extend(
            taken
                .into_iter()
                .map(|t| t.map(|t| t.map(Taken::into_poll))),
        );
        answered
    }

    /// Hands over a watcher's next events, at most `revisions_max` whole revisions (at least
    /// 1): its buffered live events, or, if it is behind, the next span read from the store
    /// ([`Store::events`]), after which it rejoins the live stream once it has reached it.
    /// Poll one watcher from one thread at a time.
    ///
    /// # Errors
    ///
    /// [`Error::WatcherNotFound`] for an unknown id; [`Error::Compacted`] if the watcher is
    /// behind the compacted revision (cancel it, with [`compacted_revision`]); the store's.
    ///
    /// [`compacted_revision`]: Self::compacted_revision
    pub fn watch_poll(&self, id: WatcherId, revisions_max: usize) -> Result<WatchPoll> {
        let revisions_max = revisions_max.max(1);
        let (spec, from) = {
            let mut guard = self.hub.inner.lock();
            let inner = &mut *guard;
            let w = inner.watchers.get_mut(&id).ok_or(Error::WatcherNotFound)?;
            if !w.buffer.is_empty() || !w.lagging {
                let taken = take_buffered(w, inner.revision, revisions_max);
                inner.buffered_bytes -= taken.charged;
                drop(guard);
                return Ok(taken.into_poll());
            }
            (w.spec.clone(), w.next)
        };
        let batch = self.events(&spec, from, 0, revisions_max)?;
        let mut inner = self.hub.inner.lock();
        let revision = inner.revision;
        let w = inner.watchers.get_mut(&id).ok_or(Error::WatcherNotFound)?;
        if w.next != from || !w.lagging {
            // Another poll moved it meanwhile: what it read is stale.
            return Ok(WatchPoll {
                events: Vec::new(),
                revision: w.next - 1,
                next_revision: w.next,
                caught_up: false,
            });
        }
        // A watcher's position only moves forward (`events` never answers one before `from`).
        w.next = batch.next_revision.max(from);
        // The store may be ahead of the published revision (a batch between its commit and
        // its publication): the live events up to `next` are then skipped as already read.
        let caught_up = w.next > revision;
        if caught_up {
            w.lagging = false;
        }
        Ok(WatchPoll {
            events: batch.events,
            revision: w.next - 1,
            next_revision: w.next,
            caught_up,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::is_prefix_range;

    #[test]
    fn a_prefix_range_is_the_key_with_its_last_byte_below_0xff_incremented() {
        assert!(is_prefix_range(b"w/1", b"w/2"));
        assert!(is_prefix_range(b"a\xff\xff", b"b"));
        assert!(is_prefix_range(&[0], &[1]));
        assert!(!is_prefix_range(b"w/1", b"w/3"));
        assert!(!is_prefix_range(b"w/1", b"w/2\0"));
        assert!(!is_prefix_range(b"a\xff", b"a\x00"));
        // All 0xff: etcd's prefix end is "from the key on", a range like any other here.
        assert!(!is_prefix_range(b"\xff", &[0]));
        assert!(!is_prefix_range(b"", &[0]));
    }
}
