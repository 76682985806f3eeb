//! etcd's rules where they surprise, each with the answer worked out by hand from etcd's code
//! (`server/etcdserver/apply.go`, `server/mvcc/kvstore_txn.go`), independently of the model
//! test's oracle.

use std::sync::Arc;

use strata_lsm::{Db, Options};
use strata_mvcc::api::compare::{CompareResult, CompareTarget, TargetUnion};
use strata_mvcc::api::range_request::{SortOrder, SortTarget};
use strata_mvcc::api::request_op::Request;
use strata_mvcc::api::response_op::Response;
use strata_mvcc::api::{
    CompactionRequest, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    ResponseHeader, TxnRequest, TxnResponse,
};
use strata_mvcc::{Error, LeaseCheck, NEVER_COMPACTED, Store};

struct Leases;

impl LeaseCheck for Leases {
    fn exists(&self, lease: i64) -> bool {
        lease == 7
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), Options::default()).expect("open");
    let store = Store::open(Arc::new(db)).expect("store");
    (dir, store)
}

fn put_req(key: &[u8], value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..PutRequest::default()
    }
}

fn put(store: &Store, key: &[u8], value: &[u8]) -> i64 {
    let mut batch = store.batch();
    batch.put(&put_req(key, value), &Leases).expect("put");
    batch.commit(&[]).expect("commit")
}

fn op(request: Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

fn get(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..RangeRequest::default()
    }
}

fn txn(store: &Store, req: &TxnRequest) -> strata_mvcc::Result<TxnResponse> {
    strata_mvcc::check_txn(req, strata_mvcc::MAX_TXN_OPS_DEFAULT)?;
    let mut batch = store.batch();
    let response = batch.txn(req, &Leases);
    batch.commit(&[]).expect("commit");
    response
}

fn revision(header: Option<ResponseHeader>) -> i64 {
    header.expect("a header").revision
}

#[test]
fn an_empty_store_is_at_revision_1_and_never_compacted() {
    let (_dir, store) = store();
    assert_eq!(store.current_revision(), 1);
    assert_eq!(store.compacted_revision(), NEVER_COMPACTED);
    let hash = store.hash_kv(0).expect("hash");
    assert_eq!((hash.compact_revision, hash.hash_revision), (-1, 1));
    // etcd's compactMainRev starts at -1: compacting at 0 is allowed once.
    let mut batch = store.batch();
    batch
        .compact(&CompactionRequest {
            revision: 0,
            physical: false,
        })
        .expect("compact at 0");
    assert!(matches!(
        batch.compact(&CompactionRequest {
            revision: 0,
            physical: false
        }),
        Err(Error::Compacted)
    ));
    batch.commit(&[]).expect("commit");
}

#[test]
fn a_nested_txns_compares_see_the_store_before_the_txn() {
    let (_dir, store) = store();
    // The outer txn puts "a"; the nested one asks whether "a" exists (version > 0). etcd
    // evaluates every compare on the path first, so the nested one sees no "a".
    let nested = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Greater as i32,
            target: CompareTarget::Version as i32,
            key: b"a".to_vec(),
            target_union: Some(TargetUnion::Version(0)),
            ..Compare::default()
        }],
        success: vec![op(Request::RequestPut(put_req(b"yes", b"")))],
        failure: vec![op(Request::RequestPut(put_req(b"no", b"")))],
    };
    let outer = TxnRequest {
        compare: Vec::new(),
        success: vec![
            op(Request::RequestPut(put_req(b"a", b"1"))),
            op(Request::RequestRange(get(b"a"))),
            op(Request::RequestTxn(nested)),
        ],
        failure: Vec::new(),
    };
    let response = txn(&store, &outer).expect("txn");
    assert!(response.succeeded);
    assert_eq!(revision(response.header), 2);
    let Some(Response::ResponseRange(range)) = &response.responses[1].response else {
        panic!("a range response")
    };
    // The range after the put reads it, at the txn's revision.
    assert_eq!(revision(range.header), 2);
    assert_eq!(range.kvs[0].value, b"1");
    let Some(Response::ResponseTxn(inner)) = &response.responses[2].response else {
        panic!("a txn response")
    };
    assert!(!inner.succeeded, "the nested compare did not see the put");
    assert_eq!(inner.header, Some(ResponseHeader::default()));
    assert_eq!(store.range_request(&get(b"no")).expect("range").count, 1);
}

#[test]
fn a_target_other_than_the_key_with_order_none_sorts_only_the_keys_fetched() {
    let (_dir, store) = store();
    // Versions: a 3, b 1, c 2.
    for (k, times) in [(b"a", 3), (b"b", 1), (b"c", 2)] {
        for _ in 0..times {
            put(&store, k, b"");
        }
    }
    let by_version = |order: SortOrder, limit: i64| {
        let got = store
            .range_request(&RangeRequest {
                key: b"a".to_vec(),
                range_end: b"z".to_vec(),
                limit,
                sort_order: order as i32,
                sort_target: SortTarget::Version as i32,
                ..RangeRequest::default()
            })
            .expect("range");
        let keys: Vec<Vec<u8>> = got.kvs.iter().map(|kv| kv.key.clone()).collect();
        (keys, got.more, got.count)
    };
    // NONE: etcd fetches limit + 1 keys in key order (a, b) and sorts those ascending.
    assert_eq!(
        by_version(SortOrder::None, 1),
        (vec![b"b".to_vec()], true, 3)
    );
    // ASCEND: every key is fetched and sorted: b (1), c (2), a (3).
    assert_eq!(
        by_version(SortOrder::Ascend, 2),
        (vec![b"b".to_vec(), b"c".to_vec()], true, 3)
    );
    assert_eq!(
        by_version(SortOrder::Descend, 0),
        (vec![b"a".to_vec(), b"c".to_vec(), b"b".to_vec()], false, 3)
    );
}

#[test]
fn count_ignores_the_limit_and_the_filters_but_more_does_not() {
    let (_dir, store) = store();
    for k in [b"a", b"b", b"c"] {
        put(&store, k, b"v");
    }
    // Create revisions: a 2, b 3, c 4. A filter keeping b and c, limit 1.
    let got = store
        .range_request(&RangeRequest {
            key: b"a".to_vec(),
            range_end: vec![0],
            limit: 1,
            min_create_revision: 3,
            keys_only: true,
            ..RangeRequest::default()
        })
        .expect("range");
    assert_eq!(got.count, 3);
    assert!(got.more);
    assert_eq!(got.kvs.len(), 1);
    assert_eq!(got.kvs[0].key, b"b");
    assert!(got.kvs[0].value.is_empty(), "keys only");
    assert_eq!(revision(got.header), 4);
    let counted = store
        .range_request(&RangeRequest {
            key: b"a".to_vec(),
            range_end: vec![0],
            count_only: true,
            revision: 3,
            ..RangeRequest::default()
        })
        .expect("range");
    assert_eq!(
        (counted.count, counted.kvs.len(), counted.more),
        (2, 0, false)
    );
    assert_eq!(
        revision(counted.header),
        4,
        "the header is the current revision"
    );
}

#[test]
fn puts_refuse_unknown_leases_and_ignore_on_absent_keys_and_reuse_the_value_and_lease() {
    let (_dir, store) = store();
    let mut batch = store.batch();
    let unknown = PutRequest {
        lease: 3,
        ignore_value: true,
        ..put_req(b"k", b"")
    };
    // The lease is checked first (etcd's Put outside a txn).
    assert!(matches!(
        batch.put(&unknown, &Leases),
        Err(Error::LeaseNotFound)
    ));
    let ignore = PutRequest {
        ignore_value: true,
        ..put_req(b"k", b"")
    };
    assert!(matches!(
        batch.put(&ignore, &Leases),
        Err(Error::KeyNotFound)
    ));
    assert_eq!(batch.revision(), 1, "refused requests take no revision");
    let first = PutRequest {
        lease: 7,
        ..put_req(b"k", b"v")
    };
    assert_eq!(revision(batch.put(&first, &Leases).expect("put").header), 2);
    let again = PutRequest {
        prev_kv: true,
        ignore_lease: true,
        ..ignore
    };
    let response = batch.put(&again, &Leases).expect("put");
    assert_eq!(revision(response.header), 3);
    let prev = response.prev_kv.expect("prev_kv");
    assert_eq!(
        (prev.value.as_slice(), prev.lease, prev.version),
        (&b"v"[..], 7, 1)
    );
    batch.commit(&[]).expect("commit");
    let kv = &store.range_request(&get(b"k")).expect("range").kvs[0];
    assert_eq!(
        (
            kv.value.as_slice(),
            kv.lease,
            kv.version,
            kv.create_revision,
            kv.mod_revision
        ),
        (&b"v"[..], 7, 2, 2, 3)
    );
}

#[test]
fn a_delete_of_nothing_takes_no_revision_and_a_recreated_key_starts_over() {
    let (_dir, store) = store();
    put(&store, b"k", b"1");
    put(&store, b"k", b"2");
    let mut batch = store.batch();
    let none = batch
        .delete_range(&DeleteRangeRequest {
            key: b"x".to_vec(),
            ..DeleteRangeRequest::default()
        })
        .expect("delete");
    assert_eq!((none.deleted, revision(none.header)), (0, 3));
    let deleted = batch
        .delete_range(&DeleteRangeRequest {
            key: b"k".to_vec(),
            prev_kv: true,
            ..DeleteRangeRequest::default()
        })
        .expect("delete");
    assert_eq!((deleted.deleted, revision(deleted.header)), (1, 4));
    assert_eq!(deleted.prev_kvs[0].version, 2);
    batch.put(&put_req(b"k", b"3"), &Leases).expect("put");
    assert_eq!(batch.commit(&[]).expect("commit"), 5);
    let kv = &store.range_request(&get(b"k")).expect("range").kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn a_txn_that_fails_while_running_is_undone_whole() {
    let (_dir, store) = store();
    put(&store, b"b", b"1");
    // A delete of everything from "a" on passes the duplicate check (as in etcd), then the
    // put with ignore_value finds "b" deleted: etcd panics; here the txn is refused whole.
    let req = TxnRequest {
        compare: Vec::new(),
        success: vec![
            op(Request::RequestDeleteRange(DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: vec![0],
                prev_kv: false,
            })),
            op(Request::RequestPut(PutRequest {
                ignore_value: true,
                ..put_req(b"b", b"")
            })),
        ],
        failure: Vec::new(),
    };
    assert!(matches!(txn(&store, &req), Err(Error::KeyNotFound)));
    assert_eq!(store.current_revision(), 2);
    assert_eq!(store.range_request(&get(b"b")).expect("range").count, 1);
}

#[test]
fn ranges_in_a_txn_are_checked_against_the_store_before_it() {
    let (_dir, store) = store();
    put(&store, b"a", b"1");
    put(&store, b"a", b"2");
    let with_range = |revision: i64| TxnRequest {
        compare: Vec::new(),
        success: vec![
            op(Request::RequestPut(put_req(b"b", b""))),
            op(Request::RequestRange(RangeRequest {
                revision,
                ..get(b"a")
            })),
        ],
        failure: Vec::new(),
    };
    // Revision 4 is the txn's own: still a future one when checked.
    assert!(matches!(
        txn(&store, &with_range(4)),
        Err(Error::FutureRevision)
    ));
    assert_eq!(store.current_revision(), 3);
    let response = txn(&store, &with_range(2)).expect("txn");
    let Some(Response::ResponseRange(range)) = &response.responses[1].response else {
        panic!("a range response")
    };
    assert_eq!(range.kvs[0].value, b"1");
    assert_eq!(revision(range.header), 4);
    // Compacted at 3: revision 2 is refused, and so is -1 (etcd's txn check compares the raw
    // revision with the compacted one; before any compaction that is -1, which -1 passes).
    let mut batch = store.batch();
    batch
        .compact(&CompactionRequest {
            revision: 3,
            physical: true,
        })
        .expect("compact");
    batch.commit(&[]).expect("commit");
    assert!(matches!(txn(&store, &with_range(2)), Err(Error::Compacted)));
    assert!(matches!(
        txn(&store, &with_range(-1)),
        Err(Error::Compacted)
    ));
    // The compacted revision itself is readable; HashKV refuses it, as etcd's.
    assert!(
        store
            .range_request(&RangeRequest {
                revision: 3,
                ..get(b"a")
            })
            .is_ok()
    );
    assert!(matches!(store.hash_kv(3), Err(Error::Compacted)));
}

#[test]
fn read_txns_refuse_writes() {
    let (_dir, store) = store();
    let req = TxnRequest {
        compare: Vec::new(),
        success: vec![op(Request::RequestPut(put_req(b"a", b"")))],
        failure: Vec::new(),
    };
    assert!(matches!(store.read_txn(&req), Err(Error::NotReadOnly)));
}
