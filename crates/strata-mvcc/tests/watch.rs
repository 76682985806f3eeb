//! The watch event stream: [`Store::events`] (catch-up from the store) and the watchers a
//! commit feeds ([`Store::watch`], [`Store::watch_poll`], [`Store::watch_poll_buffered`]),
//! against a model of etcd's events
//! under random puts, deletes, txns, compactions and physical compaction, with watchers at
//! every start revision, some with one-event buffers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use proptest::prelude::*;
use strata_lsm::{Db, Options};
use strata_mvcc::api::event::EventType;
use strata_mvcc::api::request_op::Request;
use strata_mvcc::api::{
    CompactionRequest, DeleteRangeRequest, Event, KeyValue, PutRequest, RequestOp, TxnRequest,
};
use strata_mvcc::{Error, LeaseCheck, Notify, Store, WATCHER_BUFFER_EVENTS_DEFAULT, WatchSpec};

struct NoLeases;

impl LeaseCheck for NoLeases {
    fn exists(&self, _lease: i64) -> bool {
        false
    }
}

/// Small, with a NUL and a shared prefix, where range bugs hide.
const KEYS: [&[u8]; 4] = [&[0], b"a", b"a\0", b"b"];

fn key(k: u8) -> Vec<u8> {
    KEYS[usize::from(k) % KEYS.len()].to_vec()
}

/// 0: the key alone; 1: from the key on; 2 to 5: up to one of the keys (maybe an empty range);
/// above: the prefix of one of the keys (the hub indexes prefixes apart from other ranges).
fn end(e: u8) -> Vec<u8> {
    match e {
        0 => Vec::new(),
        1 => vec![0],
        2..=5 => key(e - 2),
        _ => {
            let mut prefix_end = key(e - 6);
            let last = prefix_end.last_mut().expect("no key is empty");
            *last += 1;
            prefix_end
        }
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), Options::default()).expect("open the LSM");
    let store = Store::open(Arc::new(db)).expect("open the store");
    (dir, store)
}

fn put(store: &Store, k: &[u8], v: &[u8]) -> i64 {
    let mut batch = store.batch();
    let req = PutRequest {
        key: k.to_vec(),
        value: v.to_vec(),
        ..PutRequest::default()
    };
    batch.put(&req, &NoLeases).expect("put");
    batch.commit(&[]).expect("commit")
}

fn delete(store: &Store, k: &[u8], e: &[u8]) -> i64 {
    let mut batch = store.batch();
    let req = DeleteRangeRequest {
        key: k.to_vec(),
        range_end: e.to_vec(),
        prev_kv: false,
    };
    batch.delete_range(&req).expect("delete");
    batch.commit(&[]).expect("commit")
}

fn compact(store: &Store, rev: i64) {
    let mut batch = store.batch();
    let req = CompactionRequest {
        revision: rev,
        physical: false,
    };
    batch.compact(&req).expect("compact");
    batch.commit(&[]).expect("commit");
}

fn never() -> Notify {
    Arc::new(|| {})
}

fn flag() -> (Arc<AtomicBool>, Notify) {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    (flag, Arc::new(move || set.store(true, Ordering::SeqCst)))
}

/// A short, comparable form of an event: type, key, mod revision, value, prev's mod revision.
fn brief(e: &Event) -> (i32, Vec<u8>, i64, Vec<u8>, Option<i64>) {
    let kv = e.kv.clone().unwrap_or_default();
    (
        e.r#type,
        kv.key,
        kv.mod_revision,
        kv.value,
        e.prev_kv.as_ref().map(|p| p.mod_revision),
    )
}

/// Polls until caught up (bounded), collecting events; the error if one ends it.
fn drain(store: &Store, id: u64, revisions_max: usize) -> Result<Vec<Event>, Error> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let poll = store.watch_poll(id, revisions_max)?;
        out.extend(poll.events);
        if poll.caught_up {
            return Ok(out);
        }
    }
    panic!("watcher {id} did not catch up in 10,000 polls");
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8, u8),
    /// Single-key puts (`Some(value)`) and deletes of distinct keys, in one revision.
    Txn(Vec<(u8, Option<u8>)>),
    /// Several requests in one batch.
    Batch(Vec<(u8, u8)>),
    /// Compact to this many revisions back from the current one.
    Compact(u8),
    PhysicalStep,
    /// A watcher from this many revisions back (0: from now on).
    Watch(Spec, u8),
    /// Poll a watcher (by index) for at most this many revisions.
    Poll(u8, u8),
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    key: u8,
    end: u8,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    /// Its buffer, in events.
    buffer: u8,
}

impl Spec {
    fn spec(self) -> WatchSpec {
        WatchSpec {
            key: key(self.key),
            range_end: end(self.end),
            prev_kv: self.prev_kv,
            no_put: self.no_put,
            no_delete: self.no_delete,
        }
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..4,
        prop_oneof![3 => Just(0u8), 2 => Just(1u8), 2 => 2u8..6, 2 => 6u8..10],
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
        prop_oneof![Just(1u8), Just(2), Just(100)],
    )
        .prop_map(|(key, end, prev_kv, no_put, no_delete, buffer)| Spec {
            key,
            end,
            prev_kv,
            no_put,
            no_delete,
            buffer,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u8..3).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0u8..4, prop_oneof![Just(0u8), Just(1), 2u8..6]).prop_map(|(k, e)| Op::Delete(k, e)),
        2 => proptest::collection::vec((0u8..4, proptest::option::of(0u8..3)), 1..4).prop_map(Op::Txn),
        1 => proptest::collection::vec((0u8..4, 0u8..3), 1..4).prop_map(Op::Batch),
        1 => (0u8..6).prop_map(Op::Compact),
        1 => Just(Op::PhysicalStep),
        2 => (spec(), 0u8..8).prop_map(|(s, back)| Op::Watch(s, back)),
        5 => (any::<u8>(), prop_oneof![Just(1u8), Just(2), Just(200)]).prop_map(|(w, m)| Op::Poll(w, m)),
    ]
}

/// etcd's events over a `BTreeMap` of the live keys; every event carries the version at its
/// revision − 1 as `prev_kv` (none for a creation).
#[derive(Default)]
struct Model {
    live: BTreeMap<Vec<u8>, KeyValue>,
    rev: i64,
    compacted: i64,
    log: Vec<Event>,
}

impl Model {
    /// One request of single-key changes: `Some(value)` puts, `None` deletes.
    fn request(&mut self, changes: &[(Vec<u8>, Option<Vec<u8>>)]) {
        let main = self.rev + 1;
        let before = self.live.clone();
        let mut changed = false;
        for (k, v) in changes {
            let prev = before.get(k).cloned();
            match v {
                Some(value) => {
                    let old = self.live.get(k);
                    let kv = KeyValue {
                        key: k.clone(),
                        create_revision: old.map_or(main, |o| o.create_revision),
                        mod_revision: main,
                        version: old.map_or(1, |o| o.version + 1),
                        value: value.clone(),
                        lease: 0,
                    };
                    self.live.insert(k.clone(), kv.clone());
                    self.log.push(Event {
                        r#type: EventType::Put as i32,
                        kv: Some(kv),
                        prev_kv: prev,
                    });
                }
                None => {
                    if self.live.remove(k).is_none() {
                        continue;
                    }
                    self.log.push(Event {
                        r#type: EventType::Delete as i32,
                        kv: Some(KeyValue {
                            key: k.clone(),
                            mod_revision: main,
                            ..KeyValue::default()
                        }),
                        prev_kv: prev,
                    });
                }
            }
            changed = true;
        }
        if changed {
            self.rev = main;
        }
    }

    /// The events `spec` should see from `start` on, before revision `before`.
    fn expected(&self, spec: &WatchSpec, start: i64, before: i64) -> Vec<Event> {
        self.log
            .iter()
            .filter(|e| {
                let kv = e.kv.as_ref().expect("a kv");
                let put = e.r#type == EventType::Put as i32;
                kv.mod_revision >= start
                    && kv.mod_revision < before
                    && spec.contains(&kv.key)
                    && if put { !spec.no_put } else { !spec.no_delete }
            })
            .map(|e| {
                let mut e = e.clone();
                let kv = e.kv.as_ref().expect("a kv");
                if !spec.prev_kv || kv.create_revision == kv.mod_revision {
                    e.prev_kv = None;
                }
                e
            })
            .collect()
    }
}

struct TestWatcher {
    id: u64,
    spec: WatchSpec,
    start: i64,
    got: Vec<Event>,
    /// The first revision not handed over yet.
    next: i64,
    notified: Arc<AtomicBool>,
    /// The last poll was caught up and nothing was notified since: a poll finds nothing.
    quiet: bool,
    compacted: bool,
}

/// Checks a watcher's events against the model's, up to (excluded) revision `before`.
fn check(w: &TestWatcher, model: &Model, before: i64) -> Result<(), TestCaseError> {
    let want = model.expected(&w.spec, w.start, before);
    prop_assert_eq!(w.got.len(), want.len(), "watcher {}: {:?}", w.id, w.spec);
    for (got, want) in w.got.iter().zip(&want) {
        let mut bare_got = got.clone();
        let mut bare_want = want.clone();
        bare_got.prev_kv = None;
        bare_want.prev_kv = None;
        prop_assert_eq!(&bare_got, &bare_want, "watcher {}", w.id);
        let rev = want.kv.as_ref().map_or(0, |kv| kv.mod_revision);
        // A catch-up read leaves prev_kv out once its revision is compacted, as etcd.
        let hidden = got.prev_kv.is_none() && rev - 1 < model.compacted;
        prop_assert!(
            got.prev_kv == want.prev_kv || hidden,
            "watcher {} prev_kv at {}: {:?} vs {:?}",
            w.id,
            rev,
            got.prev_kv,
            want.prev_kv
        );
    }
    Ok(())
}

fn poll(
    store: &Store,
    model: &Model,
    w: &mut TestWatcher,
    revisions_max: usize,
) -> Result<bool, TestCaseError> {
    let notified = w.notified.swap(false, Ordering::SeqCst);
    // Half the watchers poll as the server does: the buffered take first, reading the store
    // only when it declines.
    let polled = if w.id.is_multiple_of(2) {
        match store.watch_poll_buffered(w.id, revisions_max) {
            Ok(Some(poll)) => Ok(poll),
            Ok(None) => store.watch_poll(w.id, revisions_max),
            Err(e) => Err(e),
        }
    } else {
        store.watch_poll(w.id, revisions_max)
    };
    match polled {
        Ok(poll) => {
            if w.quiet && !notified {
                prop_assert!(poll.events.is_empty(), "events without a notification");
            }
            for e in &poll.events {
                let rev = e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                prop_assert!(rev >= w.next, "an event below the watcher's position");
            }
            let revisions = poll
                .events
                .iter()
                .map(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision))
                .collect::<std::collections::BTreeSet<_>>();
            prop_assert!(revisions.len() <= revisions_max.max(1));
            w.got.extend(poll.events);
            prop_assert!(poll.next_revision >= w.next);
            w.next = poll.next_revision;
            w.quiet = poll.caught_up;
            // Everything before the position is handed over, nothing after it.
            check(w, model, w.next)?;
            Ok(poll.caught_up)
        }
        Err(Error::Compacted) => {
            prop_assert!(
                w.next < model.compacted,
                "compacted at {} < {}",
                w.next,
                model.compacted
            );
            check(w, model, w.next)?;
            w.compacted = true;
            prop_assert!(store.unwatch(w.id));
            Ok(true)
        }
        Err(e) => Err(TestCaseError::fail(format!("poll: {e}"))),
    }
}

/// Registers a watcher of `spec` from `start` (0: from now on), or checks why it is refused.
fn add(
    store: &Store,
    spec: Spec,
    start: i64,
    model: &Model,
    watchers: &mut Vec<TestWatcher>,
) -> Result<(), TestCaseError> {
    let (notified, notify) = flag();
    let ws = spec.spec();
    match store.watch(ws.clone(), start, usize::from(spec.buffer), notify) {
        Ok(id) => {
            let start = if start > 0 { start } else { model.rev + 1 };
            watchers.push(TestWatcher {
                id,
                spec: ws,
                start,
                got: Vec::new(),
                next: start,
                notified,
                quiet: false,
                compacted: false,
            });
            Ok(())
        }
        Err(Error::EmptyWatchRange) => {
            prop_assert!(ws.is_empty_range());
            Ok(())
        }
        Err(Error::Compacted) => {
            prop_assert!(start < model.compacted);
            Ok(())
        }
        Err(e) => Err(TestCaseError::fail(format!("watch: {e}"))),
    }
}

fn run(ops: &[Op], initial: &[Spec]) -> Result<(), TestCaseError> {
    let (_dir, store) = open();
    let mut model = Model {
        rev: 1,
        compacted: -1,
        ..Model::default()
    };
    let mut watchers: Vec<TestWatcher> = Vec::new();
    // Watchers at every start revision the run may reach, and from now on.
    for (i, spec) in initial.iter().enumerate() {
        add(&store, *spec, i as i64, &model, &mut watchers)?;
    }
    for op in ops {
        match op {
            Op::Put(k, v) => {
                let (k, v) = (key(*k), vec![*v]);
                let rev = put(&store, &k, &v);
                model.request(&[(k, Some(v))]);
                prop_assert_eq!(rev, model.rev);
            }
            Op::Delete(k, e) => {
                let (k, e) = (key(*k), end(*e));
                let probe = WatchSpec {
                    key: k.clone(),
                    range_end: e.clone(),
                    ..WatchSpec::default()
                };
                let doomed: Vec<_> = if probe.is_empty_range() {
                    Vec::new()
                } else {
                    model
                        .live
                        .keys()
                        .filter(|key| probe.contains(key))
                        .map(|key| (key.clone(), None))
                        .collect()
                };
                let rev = delete(&store, &k, &e);
                model.request(&doomed);
                prop_assert_eq!(rev, model.rev);
            }
            Op::Txn(changes) => {
                let mut seen = Vec::new();
                let mut ops = Vec::new();
                let mut changes_model = Vec::new();
                for (k, v) in changes {
                    let k = key(*k);
                    if seen.contains(&k) {
                        continue;
                    }
                    seen.push(k.clone());
                    let request = match v {
                        Some(v) => Request::RequestPut(PutRequest {
                            key: k.clone(),
                            value: vec![*v],
                            ..PutRequest::default()
                        }),
                        None => Request::RequestDeleteRange(DeleteRangeRequest {
                            key: k.clone(),
                            ..DeleteRangeRequest::default()
                        }),
                    };
                    ops.push(RequestOp {
                        request: Some(request),
                    });
                    changes_model.push((k, v.map(|v| vec![v])));
                }
                let mut batch = store.batch();
                let txn = TxnRequest {
                    compare: Vec::new(),
                    success: ops,
                    failure: Vec::new(),
                };
                batch.txn(&txn, &NoLeases).expect("txn");
                let rev = batch.commit(&[]).expect("commit");
                model.request(&changes_model);
                prop_assert_eq!(rev, model.rev);
            }
            Op::Batch(puts) => {
                let mut batch = store.batch();
                for (k, v) in puts {
                    let req = PutRequest {
                        key: key(*k),
                        value: vec![*v],
                        ..PutRequest::default()
                    };
                    batch.put(&req, &NoLeases).expect("put");
                    model.request(&[(key(*k), Some(vec![*v]))]);
                }
                let rev = batch.commit(&[]).expect("commit");
                prop_assert_eq!(rev, model.rev);
            }
            Op::Compact(back) => {
                let target = model.rev - i64::from(*back);
                if target > model.compacted && target >= 1 {
                    compact(&store, target);
                    model.compacted = target;
                }
            }
            Op::PhysicalStep => {
                store.compact_physical_step(2).expect("a compaction step");
            }
            Op::Watch(spec, back) => {
                let start = if *back == 0 {
                    0
                } else {
                    (model.rev + 1 - i64::from(*back)).max(1)
                };
                add(&store, *spec, start, &model, &mut watchers)?;
            }
            Op::Poll(w, max) => {
                if watchers.is_empty() {
                    continue;
                }
                let at = usize::from(*w) % watchers.len();
                if !watchers[at].compacted {
                    poll(&store, &model, &mut watchers[at], usize::from(*max))?;
                }
            }
        }
    }
    // Every watcher catches up (or is compacted out) and has seen exactly the model's events.
    for w in &mut watchers {
        let mut polls = 0;
        while !w.compacted {
            if poll(&store, &model, w, 3)? {
                break;
            }
            polls += 1;
            prop_assert!(polls < 10_000, "watcher {} never caught up", w.id);
        }
        if !w.compacted {
            prop_assert!(w.next > model.rev);
            check(w, &model, model.rev + 1)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Every watcher, whatever its start revision, range, filters and buffer, sees exactly the
    /// model's events from its start on, once each and in order; a watcher whose position is
    /// compacted away gets `Compacted` (only then), after exactly the events before it.
    #[test]
    fn every_watcher_sees_exactly_the_models_events_once_in_order(
        ops in proptest::collection::vec(op(), 1..60),
        initial in proptest::collection::vec(spec(), 1..24),
    ) {
        run(&ops, &initial)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Unit tests.

fn spec_of(k: &[u8], e: &[u8]) -> WatchSpec {
    WatchSpec {
        key: k.to_vec(),
        range_end: e.to_vec(),
        ..WatchSpec::default()
    }
}

const PUT: i32 = EventType::Put as i32;
const DELETE: i32 = EventType::Delete as i32;

/// `prev_kv` is the version at the event's revision − 1: for an update and a deletion, not for
/// a creation (also a re-creation after a deletion); the same live and caught up.
#[test]
fn prev_kv_is_the_version_before_except_for_creations() {
    let (_dir, store) = open();
    let spec = WatchSpec {
        prev_kv: true,
        ..spec_of(b"a", b"")
    };
    let live = store
        .watch(spec.clone(), 0, 16, never())
        .expect("a live watcher");
    put(&store, b"a", b"1"); // 2: created
    put(&store, b"a", b"2"); // 3: prev 2
    delete(&store, b"a", b""); // 4: prev 3
    put(&store, b"a", b"3"); // 5: created again
    let want = vec![
        (PUT, b"a".to_vec(), 2, b"1".to_vec(), None),
        (PUT, b"a".to_vec(), 3, b"2".to_vec(), Some(2)),
        (DELETE, b"a".to_vec(), 4, Vec::new(), Some(3)),
        (PUT, b"a".to_vec(), 5, b"3".to_vec(), None),
    ];
    let got = drain(&store, live, 100).expect("live events");
    assert_eq!(got.iter().map(brief).collect::<Vec<_>>(), want);
    let read = store.events(&spec, 1, 0, 100).expect("a catch-up read");
    assert_eq!(read.events, got, "live and caught-up events are the same");
    assert_eq!((read.next_revision, read.current_revision), (6, 5));
    let prev = read.events[2].prev_kv.clone().expect("the deletion's prev");
    assert_eq!(
        (prev.value, prev.version, prev.create_revision),
        (b"2".to_vec(), 2, 2)
    );
    // Without prev_kv, none.
    let bare = store.events(&spec_of(b"a", b""), 1, 0, 100).expect("read");
    assert!(bare.events.iter().all(|e| e.prev_kv.is_none()));
    // Once the revision before is compacted, a catch-up read leaves it out (as etcd).
    compact(&store, 4);
    let read = store
        .events(&spec, 4, 0, 100)
        .expect("read at the compacted revision");
    assert_eq!(
        read.events.iter().map(brief).collect::<Vec<_>>(),
        vec![
            (DELETE, b"a".to_vec(), 4, Vec::new(), None),
            (PUT, b"a".to_vec(), 5, b"3".to_vec(), None),
        ]
    );
}

/// NOPUT drops puts, NODELETE drops deletions, both drop everything.
#[test]
fn filters_drop_their_event_type() {
    let (_dir, store) = open();
    put(&store, b"a", b"1");
    delete(&store, b"a", b"");
    put(&store, b"a", b"2");
    let types = |no_put, no_delete| {
        let spec = WatchSpec {
            no_put,
            no_delete,
            ..spec_of(b"a", b"")
        };
        let read = store.events(&spec, 1, 0, 100).expect("read");
        let id = store.watch(spec, 1, 1, never()).expect("watch");
        let polled = drain(&store, id, 1).expect("drain");
        assert_eq!(read.events, polled);
        read.events.iter().map(|e| e.r#type).collect::<Vec<_>>()
    };
    assert_eq!(types(false, false), [PUT, DELETE, PUT]);
    assert_eq!(types(true, false), [DELETE]);
    assert_eq!(types(false, true), [PUT, PUT]);
    assert_eq!(types(true, true), Vec::<i32>::new());
}

/// An empty range end is one key, `[0]` every key from the key on, otherwise `[key, end)`;
/// a range holding no key is refused.
#[test]
fn ranges_follow_etcds_conventions() {
    let (_dir, store) = open();
    for k in [&b"a"[..], b"a\0", b"ab", b"b", b"c"] {
        put(&store, k, b"v");
    }
    let keys = |k: &[u8], e: &[u8]| {
        let read = store.events(&spec_of(k, e), 1, 0, 100).expect("read");
        read.events
            .into_iter()
            .map(|e| e.kv.unwrap_or_default().key)
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(b"a", b""), [b"a".to_vec()]);
    assert_eq!(
        keys(b"ab", &[0]),
        [b"ab".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(
        keys(b"a", b"b"),
        [b"a".to_vec(), b"a\0".to_vec(), b"ab".to_vec()]
    );
    assert_eq!(keys(&[0], &[0]).len(), 5);
    assert!(matches!(
        store.watch(spec_of(b"b", b"a"), 0, 1, never()),
        Err(Error::EmptyWatchRange)
    ));
    assert!(matches!(
        store.watch(spec_of(b"b", b"b"), 0, 1, never()),
        Err(Error::EmptyWatchRange)
    ));
    assert!(keys(b"b", b"a").is_empty());
}

/// A catch-up read returns at most the asked number of revisions, each whole (a txn's three
/// changes come together even with a limit of one revision), and says where to go on.
#[test]
fn a_revision_is_never_split_across_catch_up_reads() {
    let (_dir, store) = open();
    put(&store, b"a", b"0"); // 2
    let mut batch = store.batch();
    let ops = [b"a", b"b", b"c"]
        .iter()
        .map(|k| RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.to_vec(),
                value: b"t".to_vec(),
                ..PutRequest::default()
            })),
        })
        .collect();
    let txn = TxnRequest {
        compare: Vec::new(),
        success: ops,
        failure: Vec::new(),
    };
    batch.txn(&txn, &NoLeases).expect("txn"); // 3
    batch.commit(&[]).expect("commit");
    put(&store, b"b", b"1"); // 4
    let all = spec_of(b"a", &[0]);
    let mut at = 1;
    let mut chunks = Vec::new();
    while at <= store.current_revision() {
        let read = store.events(&all, at, 0, 1).expect("read");
        chunks.push(
            read.events
                .iter()
                .map(|e| e.kv.clone().unwrap_or_default().mod_revision)
                .collect::<Vec<_>>(),
        );
        at = read.next_revision;
    }
    assert_eq!(chunks, vec![vec![2], vec![3, 3, 3], vec![4]]);
    // A bounded end, and a start past it.
    let read = store.events(&all, 2, 3, 10).expect("read");
    assert_eq!((read.events.len(), read.next_revision), (4, 4));
    let read = store.events(&all, 5, 0, 10).expect("read");
    assert_eq!((read.events.len(), read.next_revision), (0, 5));
    // A one-event buffer overflowing in the middle of the txn falls back to the store for
    // the whole revision, and polls hand it over whole.
    let id = store.watch(all.clone(), 0, 1, never()).expect("watch");
    let mut batch = store.batch();
    batch.txn(&txn, &NoLeases).expect("txn"); // 5
    batch.commit(&[]).expect("commit");
    let poll = store.watch_poll(id, 1).expect("poll");
    assert_eq!(poll.events.len(), 3);
    assert_eq!(poll.next_revision, 6);
}

/// A watcher left behind (its buffer full) by a compaction past its position gets
/// `Compacted`; one at the compacted revision itself reads it whole (deletions included) even
/// after physical compaction; a start below it is refused.
#[test]
fn compaction_past_a_lagging_watcher_yields_compacted() {
    let (_dir, store) = open();
    let (notified, notify) = flag();
    let slow = store
        .watch(spec_of(b"a", b""), 0, 1, notify)
        .expect("watch");
    put(&store, b"a", b"1"); // 2
    assert!(
        notified.swap(false, Ordering::SeqCst),
        "notified of its first event"
    );
    put(&store, b"a", b"2"); // 3: the buffer is full, it lags from here
    put(&store, b"a", b"3"); // 4
    delete(&store, b"a", b""); // 5
    put(&store, b"b", b"1"); // 6
    compact(&store, 5);
    store.compact_physical().expect("physical compaction");
    // Its buffer is handed over, then its position (3) is compacted.
    let poll = store.watch_poll(slow, 100).expect("the buffered event");
    assert_eq!(poll.events.len(), 1);
    assert_eq!(poll.next_revision, 3);
    assert!(matches!(store.watch_poll(slow, 100), Err(Error::Compacted)));
    assert_eq!(store.compacted_revision(), 5);
    assert!(store.unwatch(slow));
    assert!(matches!(
        store.watch_poll(slow, 1),
        Err(Error::WatcherNotFound)
    ));
    // From the compacted revision: its deletion is still there.
    let read = store.events(&spec_of(b"a", &[0]), 5, 0, 100).expect("read");
    assert_eq!(
        read.events.iter().map(brief).collect::<Vec<_>>(),
        vec![
            (DELETE, b"a".to_vec(), 5, Vec::new(), None),
            (PUT, b"b".to_vec(), 6, b"1".to_vec(), None),
        ]
    );
    assert!(matches!(
        store.events(&spec_of(b"a", b""), 4, 0, 1),
        Err(Error::Compacted)
    ));
    assert!(matches!(
        store.watch(spec_of(b"a", b""), 4, 1, never()),
        Err(Error::Compacted)
    ));
    let id = store
        .watch(spec_of(b"a", &[0]), 5, 1, never())
        .expect("watch at the compacted revision");
    assert_eq!(drain(&store, id, 1).expect("drain"), read.events);
}

/// A watcher created from a revision the store has not reached (a client resuming on a
/// member that is behind) gets events from that revision on only, also when it must read
/// from the store before it gets there (the store reloaded under it, as a snapshot install
/// does). It used to go on from the store's revision then, repeating events the client had
/// (found by `cargo xtask chaos`).
#[test]
fn a_watcher_from_a_future_revision_never_gets_an_earlier_one() {
    let (_dir, store) = open();
    put(&store, b"a", b"1"); // 2
    put(&store, b"a", b"2"); // 3
    let ahead = store
        .watch(
            spec_of(b"a", b""),
            6,
            WATCHER_BUFFER_EVENTS_DEFAULT,
            never(),
        )
        .expect("watch from 6");
    // Reading the store from 6 while it is at 3 goes on from 6, not 4.
    let read = store.events(&spec_of(b"a", b""), 6, 0, 100).expect("read");
    assert!(read.events.is_empty());
    assert_eq!(read.next_revision, 6);
    // The store reloaded under the watcher: it reads from the store from where it is.
    store.reload().expect("reload");
    let poll = store.watch_poll(ahead, 100).expect("poll");
    assert!(poll.events.is_empty());
    assert_eq!(poll.next_revision, 6);
    for v in [b"3", b"4", b"5", b"6"] {
        put(&store, b"a", v); // 4, 5, 6, 7
    }
    let got = drain(&store, ahead, 100).expect("drain");
    let revisions: Vec<i64> = got.iter().map(|e| brief(e).2).collect();
    assert_eq!(revisions, vec![6, 7]);
}

/// A commit hands its events to the watchers of their keys only: a watcher of another key is
/// neither woken nor given anything, and a batch committed before any watcher existed still
/// reaches one registered while it ran (through the store).
#[test]
fn commits_reach_only_the_watchers_of_their_keys() {
    let (_dir, store) = open();
    let (a_flag, a_notify) = flag();
    let (b_flag, b_notify) = flag();
    let a = store
        .watch(spec_of(b"a", b""), 0, 8, a_notify)
        .expect("watch a");
    let _b = store
        .watch(spec_of(b"b", b""), 0, 8, b_notify)
        .expect("watch b");
    put(&store, b"a", b"1");
    assert!(a_flag.load(Ordering::SeqCst));
    assert!(!b_flag.load(Ordering::SeqCst));
    assert_eq!(drain(&store, a, 8).expect("drain").len(), 1);
    assert_eq!(store.watcher_count(), 2);

    let (_dir2, store) = open();
    let mut batch = store.batch(); // no watcher yet: the batch records no events
    let req = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ..PutRequest::default()
    };
    batch.put(&req, &NoLeases).expect("put");
    let (flag2, notify) = flag();
    let late = std::thread::scope(|s| {
        // Registering waits for nothing: the hub is not the writer's lock.
        s.spawn(|| {
            store
                .watch(spec_of(b"k", b""), 0, 8, notify)
                .expect("watch")
        })
        .join()
        .expect("the watch thread")
    });
    batch.commit(&[]).expect("commit");
    assert!(flag2.load(Ordering::SeqCst), "woken to read from the store");
    let got = drain(&store, late, 8).expect("drain");
    assert_eq!(
        got.iter().map(brief).collect::<Vec<_>>(),
        vec![(PUT, b"k".to_vec(), 2, b"v".to_vec(), None)]
    );
}

/// The buffered take reads nothing from the store: it declines a watcher that is behind with
/// nothing buffered, and otherwise hands over what [`Store::watch_poll`] would.
#[test]
fn a_buffered_poll_declines_only_a_watcher_that_must_read_the_store() {
    let (_dir, store) = open();
    let first = put(&store, b"a", b"1");
    let behind = store
        .watch(spec_of(b"a", b""), first, 8, never())
        .expect("watch from the past");
    let live = store
        .watch(spec_of(b"a", b""), 0, 8, never())
        .expect("watch from now");
    assert_eq!(store.watch_poll_buffered(behind, 8).expect("poll"), None);
    let idle = store
        .watch_poll_buffered(live, 8)
        .expect("poll")
        .expect("a live watcher needs no store read");
    assert!(idle.events.is_empty() && idle.caught_up);
    assert_eq!(idle.next_revision, first + 1);

    assert_eq!(drain(&store, behind, 8).expect("drain").len(), 1);
    let second = put(&store, b"a", b"2");
    for id in [behind, live] {
        let poll = store
            .watch_poll_buffered(id, 8)
            .expect("poll")
            .expect("buffered events");
        assert_eq!(
            poll.events.iter().map(brief).collect::<Vec<_>>(),
            vec![(PUT, b"a".to_vec(), second, b"2".to_vec(), None)]
        );
        assert!(poll.caught_up);
        assert_eq!(poll.next_revision, second + 1);
    }
    assert!(matches!(
        store.watch_poll_buffered(u64::MAX, 8),
        Err(Error::WatcherNotFound)
    ));
}

/// The batched buffered poll answers each watcher as its own buffered poll would, in the order
/// asked, an unknown id with its error without stopping the others, and stops before the next
/// watcher once it has handed over `events_max` events (always answering the first).
#[test]
fn a_batched_buffered_poll_answers_each_watcher_as_its_own_poll_would() {
    let (_dir, store) = open();
    let first = put(&store, b"a", b"1");
    let behind = store
        .watch(spec_of(b"a", b""), first, 8, never())
        .expect("watch from the past");
    let live: Vec<_> = (0..3)
        .map(|_| {
            store
                .watch(spec_of(b"a", b"b"), 0, 8, never())
                .expect("watch from now")
        })
        .collect();
    let second = put(&store, b"a", b"2");
    let third = put(&store, b"ab", b"3");
    let mut out = Vec::new();
    let ids = [live[0], behind, u64::MAX, live[1]];
    assert_eq!(store.watch_poll_buffered_many(&ids, 8, 100, &mut out), 4);
    assert_eq!(out.len(), 4);
    let want = vec![
        (PUT, b"a".to_vec(), second, b"2".to_vec(), None),
        (PUT, b"ab".to_vec(), third, b"3".to_vec(), None),
    ];
    for answer in [&out[0], &out[3]] {
        let poll = answer.as_ref().expect("known").as_ref().expect("buffered");
        assert_eq!(poll.events.iter().map(brief).collect::<Vec<_>>(), want);
        assert!(poll.caught_up);
        assert_eq!(poll.next_revision, third + 1);
    }
    assert!(
        matches!(out[1], Ok(None)),
        "the watcher behind reads the store"
    );
    assert!(matches!(out[2], Err(Error::WatcherNotFound)));

    // One revision at a time: the first watcher's answer fills the budget of one event.
    out.clear();
    assert_eq!(
        store.watch_poll_buffered_many(&[live[2], live[0]], 1, 1, &mut out),
        1
    );
    let poll = out[0].as_ref().expect("known").as_ref().expect("buffered");
    assert_eq!(poll.events.iter().map(brief).collect::<Vec<_>>(), want[..1]);
    assert!(!poll.caught_up);
    assert_eq!(poll.next_revision, third);
    out.clear();
    assert_eq!(store.watch_poll_buffered_many(&[], 8, 1, &mut out), 0);
    assert!(out.is_empty());
}

/// A batch that started when no watcher wanted `prev_kv` did not compute it: a `prev_kv`
/// watcher registered meanwhile reads that revision from the store instead, prev included.
#[test]
fn a_prev_kv_watcher_registered_mid_batch_still_gets_prev_kv() {
    let (_dir, store) = open();
    put(&store, b"k", b"1"); // 2
    let plain = store
        .watch(spec_of(b"k", b""), 0, 8, never())
        .expect("watch");
    let mut batch = store.batch(); // records events, without prev_kv
    let req = PutRequest {
        key: b"k".to_vec(),
        value: b"2".to_vec(),
        ..PutRequest::default()
    };
    batch.put(&req, &NoLeases).expect("put");
    let spec = WatchSpec {
        prev_kv: true,
        ..spec_of(b"k", b"")
    };
    let with_prev = std::thread::scope(|s| {
        s.spawn(|| store.watch(spec, 0, 8, never()).expect("watch"))
            .join()
            .expect("the watch thread")
    });
    batch.commit(&[]).expect("commit"); // 3
    let want = vec![(PUT, b"k".to_vec(), 3, b"2".to_vec(), Some(2))];
    let got = drain(&store, with_prev, 8).expect("drain");
    assert_eq!(got.iter().map(brief).collect::<Vec<_>>(), want);
    let got = drain(&store, plain, 8).expect("drain");
    assert_eq!(
        got.iter().map(brief).collect::<Vec<_>>(),
        vec![(PUT, b"k".to_vec(), 3, b"2".to_vec(), None)]
    );
}

/// The watchers' buffers together never pass the hub's budget: watchers that would push it
/// past fall back to the store, and every watcher still gets every event once, in order.
#[test]
fn the_hubs_buffers_stay_within_their_budget_and_lose_nothing() {
    let (_dir, store) = open();
    let budget = 16 * 1024;
    store.set_watch_buffered_bytes_max(budget);
    let spec = WatchSpec {
        key: b"k".to_vec(),
        ..WatchSpec::default()
    };
    let ids: Vec<u64> = (0..3)
        .map(|_| {
            store
                .watch(spec.clone(), 0, WATCHER_BUFFER_EVENTS_DEFAULT, never())
                .expect("watch")
        })
        .collect();
    let value = vec![7u8; 1024];
    let mut revisions = Vec::new();
    for _ in 0..100 {
        revisions.push(put(&store, b"k", &value));
        assert!(
            store.watch_buffered_bytes() <= budget,
            "{} buffered",
            store.watch_buffered_bytes()
        );
    }
    assert!(store.watch_buffered_bytes() > 0, "nothing was buffered");
    for id in ids {
        let got: Vec<i64> = drain(&store, id, 7)
            .expect("drain")
            .iter()
            .map(|e| e.kv.as_ref().map_or(0, |kv| kv.mod_revision))
            .collect();
        assert_eq!(got, revisions);
        assert!(store.unwatch(id));
    }
    assert_eq!(
        store.watch_buffered_bytes(),
        0,
        "unwatching leaves nothing counted"
    );
}
