//! The store against a model (`model/oracle.rs`: etcd's rules over a `BTreeMap` of every key's
//! versions) under random batches of puts, deletes, txns (compares over keys and ranges, nested
//! txns) and compactions, ranges at random revisions (sort, filters, limit, count, keys only),
//! read-only txns, HashKV, physical compaction in small steps, reopens, and snapshots restored
//! into another store. Every response field and every error must be the model's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use strata_lsm::{Db, Options};
use strata_mvcc::api::compare::TargetUnion;
use strata_mvcc::api::request_op::Request;
use strata_mvcc::api::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use strata_mvcc::{LeaseCheck, Store};

#[path = "model/oracle.rs"]
mod oracle;

use oracle::{Answer, COMPACTED, FUTURE, Model};

/// The key space: NULs, shared prefixes and 0xFF, where ordering bugs hide.
pub const KEYS: [&[u8]; 7] = [&[0], &[0, 0], b"a", b"a\0", b"ab", b"b", &[0xFF, 1]];
const VALUES: [&[u8]; 4] = [&[], &[1], &[2], &[1, 0]];
/// Small, so that the txn limits are reached.
const MAX_TXN_OPS: usize = 8;

struct Leases;

impl LeaseCheck for Leases {
    fn exists(&self, lease: i64) -> bool {
        oracle::lease_exists(lease)
    }
}

fn key(k: u8) -> Vec<u8> {
    KEYS[usize::from(k) % KEYS.len()].to_vec()
}

/// 0: the key alone; 1: from the key on; else one of the keys (at or below the key: empty).
fn end(e: u8) -> Vec<u8> {
    match e {
        0 => Vec::new(),
        1 => vec![0],
        _ => key(e - 2),
    }
}

/// A revision relative to the current one when the request is built.
#[derive(Debug, Clone, Copy)]
enum Rev {
    Zero,
    Back(u8),
    Future,
    Negative(i64),
}

impl Rev {
    fn at(self, current: i64) -> i64 {
        match self {
            Rev::Zero => 0,
            Rev::Back(b) => (current - i64::from(b)).max(1),
            Rev::Future => current + 1,
            Rev::Negative(n) => n,
        }
    }
}

fn rev() -> impl Strategy<Value = Rev> {
    prop_oneof![
        3 => Just(Rev::Zero),
        4 => (0u8..8).prop_map(Rev::Back),
        1 => Just(Rev::Future),
        1 => prop_oneof![Just(-1i64), Just(-3)].prop_map(Rev::Negative),
    ]
}

#[derive(Debug, Clone)]
struct RangeSpec {
    key: u8,
    end: u8,
    limit: i64,
    rev: Rev,
    order: i32,
    target: i32,
    keys_only: bool,
    count_only: bool,
    /// min mod, max mod, min create, max create: revisions back from the current one.
    filters: [Option<u8>; 4],
}

/// Mostly one key or every key from one on; sometimes up to another key (maybe below it).
fn end_spec() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 2 => Just(1u8), 2 => 2u8..9]
}

fn range_spec() -> impl Strategy<Value = RangeSpec> {
    let filter = prop_oneof![9 => Just(None), 1 => (0u8..8).prop_map(Some)];
    (
        (0u8..7, end_spec(), -1i64..4, rev()),
        (0i32..3, 0i32..5, any::<bool>(), prop::bool::weighted(0.15)),
        [filter.clone(), filter.clone(), filter.clone(), filter],
    )
        .prop_map(
            |((key, end, limit, rev), (order, target, keys_only, count_only), filters)| RangeSpec {
                key,
                end,
                limit,
                rev,
                order,
                target,
                keys_only,
                count_only,
                filters,
            },
        )
}

fn build_range(s: &RangeSpec, current: i64) -> RangeRequest {
    let f = |b: Option<u8>| b.map_or(0, |b| (current - i64::from(b)).max(1));
    RangeRequest {
        key: key(s.key),
        range_end: end(s.end),
        limit: s.limit,
        revision: s.rev.at(current),
        sort_order: s.order,
        sort_target: s.target,
        serializable: false,
        keys_only: s.keys_only,
        count_only: s.count_only,
        min_mod_revision: f(s.filters[0]),
        max_mod_revision: f(s.filters[1]),
        min_create_revision: f(s.filters[2]),
        max_create_revision: f(s.filters[3]),
    }
}

#[derive(Debug, Clone)]
struct PutSpec {
    key: u8,
    value: u8,
    lease: i64,
    prev_kv: bool,
    ignore_value: bool,
    ignore_lease: bool,
}

fn put_spec() -> impl Strategy<Value = PutSpec> {
    (
        0u8..7,
        0u8..4,
        prop_oneof![4 => Just(0i64), 2 => 1i64..3, 1 => Just(3i64)],
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutSpec {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn build_put(s: &PutSpec) -> PutRequest {
    // With ignore_*, mostly no value or lease given (else the request is refused).
    let value = if s.ignore_value && s.value < 3 {
        Vec::new()
    } else {
        VALUES[usize::from(s.value)].to_vec()
    };
    let lease = if s.ignore_lease && s.lease != 3 {
        0
    } else {
        s.lease
    };
    PutRequest {
        key: key(s.key),
        value,
        lease,
        prev_kv: s.prev_kv,
        ignore_value: s.ignore_value,
        ignore_lease: s.ignore_lease,
    }
}

#[derive(Debug, Clone)]
struct CompareSpec {
    result: i32,
    target: i32,
    key: u8,
    end: u8,
    /// Which union variant (0..5: version, create, mod, value, lease; 5: none) and a number.
    union: (u8, u8),
}

fn compare_spec() -> impl Strategy<Value = CompareSpec> {
    (
        0i32..4,
        0i32..5,
        0u8..7,
        prop_oneof![4 => Just(0u8), 1 => 1u8..9],
        (0u8..6, 0u8..8),
    )
        .prop_map(|(result, target, key, end, union)| CompareSpec {
            result,
            target,
            key,
            end,
            union,
        })
}

fn build_compare(s: &CompareSpec, current: i64) -> Compare {
    let (variant, n) = s.union;
    let back = (current - i64::from(n)).max(0);
    // Mostly the target's own variant.
    let variant = if variant == 5 || n % 3 != 0 {
        s.target as u8
    } else {
        variant
    };
    let target_union = match variant {
        0 => Some(TargetUnion::Version(i64::from(n % 4))),
        1 => Some(TargetUnion::CreateRevision(back)),
        2 => Some(TargetUnion::ModRevision(back)),
        3 => Some(TargetUnion::Value(VALUES[usize::from(n % 4)].to_vec())),
        4 => Some(TargetUnion::Lease(i64::from(n % 4))),
        _ => None,
    };
    Compare {
        result: s.result,
        target: s.target,
        key: key(s.key),
        range_end: end(s.end),
        target_union,
    }
}

#[derive(Debug, Clone)]
enum OpSpec {
    Range(RangeSpec),
    Put(PutSpec),
    Delete(u8, u8, bool),
    Txn(Box<TxnSpec>),
    Empty,
}

#[derive(Debug, Clone)]
struct TxnSpec {
    compare: Vec<CompareSpec>,
    success: Vec<OpSpec>,
    failure: Vec<OpSpec>,
}

fn txn_spec() -> impl Strategy<Value = TxnSpec> {
    let leaf = prop_oneof![
        // Empty operations are refused outright: rare, so that txns get to run.
        20 => range_spec().prop_map(OpSpec::Range),
        24 => put_spec().prop_map(OpSpec::Put),
        12 => (0u8..7, prop_oneof![2 => Just(0u8), 1 => 1u8..9], any::<bool>())
            .prop_map(|(k, e, p)| OpSpec::Delete(k, e, p)),
        1 => Just(OpSpec::Empty),
    ];
    let ops = leaf
        .prop_recursive(2, 12, 3, |inner| {
            (
                proptest::collection::vec(compare_spec(), 0..3),
                proptest::collection::vec(inner.clone(), 0..3),
                proptest::collection::vec(inner, 0..3),
            )
                .prop_map(|(compare, success, failure)| {
                    OpSpec::Txn(Box::new(TxnSpec {
                        compare,
                        success,
                        failure,
                    }))
                })
        })
        .boxed();
    // Now and then a branch past the limit.
    let branch = |ops: BoxedStrategy<OpSpec>| {
        prop_oneof![
            30 => proptest::collection::vec(ops.clone(), 0..4),
            1 => proptest::collection::vec(ops, 9..10),
        ]
    };
    (
        proptest::collection::vec(compare_spec(), 0..4),
        branch(ops.clone()),
        branch(ops),
    )
        .prop_map(|(compare, success, failure)| TxnSpec {
            compare,
            success,
            failure,
        })
}

fn build_op(s: &OpSpec, current: i64) -> RequestOp {
    let request = match s {
        OpSpec::Range(r) => Some(Request::RequestRange(build_range(r, current))),
        OpSpec::Put(p) => Some(Request::RequestPut(build_put(p))),
        OpSpec::Delete(k, e, p) => Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key(*k),
            range_end: end(*e),
            prev_kv: *p,
        })),
        OpSpec::Txn(t) => Some(Request::RequestTxn(build_txn(t, current))),
        OpSpec::Empty => None,
    };
    RequestOp { request }
}

fn build_txn(s: &TxnSpec, current: i64) -> TxnRequest {
    TxnRequest {
        compare: s
            .compare
            .iter()
            .map(|c| build_compare(c, current))
            .collect(),
        success: s.success.iter().map(|o| build_op(o, current)).collect(),
        failure: s.failure.iter().map(|o| build_op(o, current)).collect(),
    }
}

#[derive(Debug, Clone)]
enum Req {
    Put(PutSpec),
    Delete(u8, u8, bool),
    Txn(TxnSpec),
    Compact(Rev),
}

#[derive(Debug, Clone)]
enum Op {
    /// Write requests applied in one batch.
    Batch(Vec<Req>),
    Range(RangeSpec),
    /// A txn with its non-range operations dropped, run as a read.
    ReadTxn(TxnSpec),
    HashKv(Rev),
    /// Physical compaction: this many one-deletion steps (0: to the end).
    Physical(u8),
    Reopen,
    /// A capture of the store, restored into the other store, which becomes the one in use.
    SnapshotRestore,
}

fn op() -> impl Strategy<Value = Op> {
    let req = prop_oneof![
        5 => put_spec().prop_map(Req::Put),
        2 => (0u8..7, prop_oneof![2 => Just(0u8), 1 => 1u8..9], any::<bool>())
            .prop_map(|(k, e, p)| Req::Delete(k, e, p)),
        4 => txn_spec().prop_map(Req::Txn),
        1 => prop_oneof![4 => (0u8..8).prop_map(Rev::Back), 1 => Just(Rev::Future)]
            .prop_map(Req::Compact),
    ];
    prop_oneof![
        8 => proptest::collection::vec(req, 1..5).prop_map(Op::Batch),
        5 => range_spec().prop_map(Op::Range),
        1 => txn_spec().prop_map(Op::ReadTxn),
        1 => rev().prop_map(Op::HashKv),
        1 => (0u8..6).prop_map(Op::Physical),
        1 => Just(Op::Reopen),
        1 => Just(Op::SnapshotRestore),
    ]
}

struct Node {
    dir: PathBuf,
    db: Arc<Db>,
    store: Store,
}

fn open_node(dir: &Path) -> Node {
    let options = Options {
        // Small memtables, so flushes and tables take part; the server's prefix filters, so
        // that tables ruled out by them take part too.
        memtable_bytes: 64 * 1024,
        prefix_extractor: Some(strata_mvcc::PREFIX_EXTRACTOR),
        ..Options::default()
    };
    let db = Arc::new(Db::open(dir, options).expect("open"));
    let store = Store::open(Arc::clone(&db)).expect("store");
    // Room for a few keys per generation of the cache of newest versions: entries leave it
    // and come back all through a case, besides being hit.
    store.set_latest_cache_bytes(2 * 3 * 90);
    Node {
        dir: dir.to_path_buf(),
        db,
        store,
    }
}

fn same<T: PartialEq + std::fmt::Debug>(
    got: strata_mvcc::Result<T>,
    want: Answer<T>,
    what: &str,
) -> Result<(), TestCaseError> {
    let got = got.map_err(|e| e.to_string());
    let want = want.map_err(str::to_owned);
    prop_assert_eq!(got, want, "{}", what);
    Ok(())
}

fn every_key(rev: i64) -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: rev,
        ..RangeRequest::default()
    }
}

/// Every revision not compacted reads as the model says.
fn check_history(store: &Store, model: &Model) -> Result<(), TestCaseError> {
    for rev in model.compacted.max(1)..=model.current {
        same(
            store.range_request(&every_key(rev)),
            model.range(&every_key(rev)),
            &format!("all keys at {rev}"),
        )?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every response and error of the store is the model's, for every request kind, across
    /// batches, physical compaction, reopens and snapshot restores; HashKV of a revision never
    /// changes once written, whatever physical compaction, a restore or a reopen did.
    #[test]
    fn the_store_answers_every_request_as_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let base = tempfile::tempdir().expect("tempdir");
        let mut nodes = [open_node(&base.path().join("a")), open_node(&base.path().join("b"))];
        let mut active = 0;
        let mut model = Model::default();
        let mut hashes: BTreeMap<(i64, i64), u32> = BTreeMap::new();
        let mut snapshots = 0;
        for op in ops {
            let store = &nodes[active].store;
            match op {
                Op::Batch(reqs) => {
                    let mut batch = store.batch();
                    for req in reqs {
                        let current = model.current;
                        match req {
                            Req::Put(spec) => {
                                let put = build_put(&spec);
                                let want = model.put(&put);
                                let got = strata_mvcc::check_put(&put)
                                    .and_then(|()| batch.put(&put, &Leases));
                                same(got, want, &format!("{put:?}"))?;
                            }
                            Req::Delete(k, e, prev_kv) => {
                                let delete = DeleteRangeRequest { key: key(k), range_end: end(e), prev_kv };
                                let want = model.delete_range(&delete);
                                let got = strata_mvcc::check_delete_range(&delete)
                                    .and_then(|()| batch.delete_range(&delete));
                                same(got, want, &format!("{delete:?}"))?;
                            }
                            Req::Txn(spec) => {
                                let txn = build_txn(&spec, current);
                                let want = model.txn(&txn, MAX_TXN_OPS);
                                let got = strata_mvcc::check_txn(&txn, MAX_TXN_OPS)
                                    .and_then(|()| batch.txn(&txn, &Leases));
                                same(got, want, &format!("{txn:?}"))?;
                            }
                            Req::Compact(rev) => {
                                let compact = CompactionRequest { revision: rev.at(current), physical: false };
                                let want = model.compact(&compact);
                                same(batch.compact(&compact), want, &format!("{compact:?}"))?;
                            }
                        }
                        prop_assert_eq!(batch.revision(), model.current);
                    }
                    prop_assert_eq!(batch.commit(&[(b"applied", b"1")]).expect("commit"), model.current);
                }
                Op::Range(spec) => {
                    let range = build_range(&spec, model.current);
                    let want = oracle::check_range(&range).and_then(|()| model.range(&range));
                    let got = strata_mvcc::check_range(&range).and_then(|()| store.range_request(&range));
                    same(got, want, &format!("{range:?}"))?;
                }
                Op::ReadTxn(spec) => {
                    let mut txn = build_txn(&spec, model.current);
                    let is_range = |op: &RequestOp| matches!(op.request, Some(Request::RequestRange(_)));
                    txn.success.retain(is_range);
                    txn.failure.retain(is_range);
                    let mut after = model.clone();
                    let want = after.txn(&txn, MAX_TXN_OPS);
                    prop_assert_eq!(after.current, model.current, "a read changes nothing");
                    let got = strata_mvcc::check_txn(&txn, MAX_TXN_OPS).and_then(|()| store.read_txn(&txn));
                    same(got, want, &format!("{txn:?}"))?;
                }
                Op::HashKv(rev) => {
                    let rev = rev.at(model.current);
                    let got = store.hash_kv(rev);
                    if rev > 0 && rev <= model.compacted {
                        prop_assert_eq!(got.map_err(|e| e.to_string()), Err(COMPACTED.to_owned()));
                    } else if rev > model.current {
                        prop_assert_eq!(got.map_err(|e| e.to_string()), Err(FUTURE.to_owned()));
                    } else {
                        let got = got.expect("hash");
                        let at = if rev == 0 { model.current } else { rev };
                        prop_assert_eq!(got.compact_revision, model.compacted);
                        prop_assert_eq!(got.hash_revision, at);
                        let first = *hashes.entry((at, model.compacted)).or_insert(got.hash);
                        prop_assert_eq!(got.hash, first, "the hash of revision {} changed", at);
                    }
                }
                Op::Physical(steps) => {
                    let hash = store.hash_kv(0).expect("hash");
                    if steps == 0 {
                        store.compact_physical().expect("compact");
                        prop_assert!(!store.compaction_pending());
                        prop_assert_eq!(store.compacted_done_revision(), model.compacted);
                    } else {
                        for _ in 0..steps {
                            if store.compact_physical_step(1).expect("step") {
                                break;
                            }
                        }
                    }
                    prop_assert_eq!(store.hash_kv(0).expect("hash"), hash, "physical compaction changes no hash");
                    check_history(store, &model)?;
                }
                Op::Reopen => {
                    let pending = store.compaction_pending();
                    let done = store.compacted_done_revision();
                    let [a, b] = nodes;
                    let reopen = |n: Node| { let dir = n.dir.clone(); drop(n); open_node(&dir) };
                    nodes = if active == 0 { [reopen(a), b] } else { [a, reopen(b)] };
                    let store = &nodes[active].store;
                    prop_assert_eq!(store.compaction_pending(), pending);
                    prop_assert_eq!(store.compacted_done_revision(), done);
                }
                Op::SnapshotRestore => {
                    snapshots += 1;
                    let dir = base.path().join(format!("snapshot-{snapshots}"));
                    std::fs::create_dir(&dir).expect("mkdir");
                    let names = nodes[active].db.capture().write_to(&dir, &[]).expect("capture");
                    let other = &nodes[1 - active];
                    other.db.restore(&dir, &names).expect("restore");
                    other.store.reload().expect("reload");
                    prop_assert_eq!(
                        other.store.hash_kv(0).expect("hash"),
                        nodes[active].store.hash_kv(0).expect("hash"),
                        "a restored store hashes as its source"
                    );
                    prop_assert_eq!(other.store.compaction_pending(), nodes[active].store.compaction_pending());
                    active = 1 - active;
                }
            }
            let store = &nodes[active].store;
            prop_assert_eq!(store.current_revision(), model.current);
            prop_assert_eq!(store.compacted_revision(), model.compacted);
        }
        check_history(&nodes[active].store, &model)?;
    }
}
