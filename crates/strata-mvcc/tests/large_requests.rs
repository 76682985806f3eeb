//! One request that changes more than one LSM write may hold (a delete of a large range, a txn
//! of many deletes): it is written ahead in parts, visible only whole at the commit, and
//! leaves nothing behind if it fails, if its batch is dropped, or if the process stops
//! between its parts (the same request applied again gives the same store).

use std::path::Path;
use std::sync::Arc;

use strata_lsm::{Db, Options};
use strata_mvcc::api::request_op::Request;
use strata_mvcc::api::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use strata_mvcc::{Error, LeaseCheck, Store};

struct NoLeases;

impl LeaseCheck for NoLeases {
    fn exists(&self, _: i64) -> bool {
        false
    }
}

/// Keys loaded before each test: their deletes take about 40 times what one LSM write holds
/// with the small memtables below.
const KEYS: usize = 2_000;

fn open(dir: &Path) -> (Arc<Db>, Store) {
    let options = Options {
        // One LSM write holds at most a quarter of this: 16 KiB.
        memtable_bytes: 64 * 1024,
        ..Options::default()
    };
    let db = Arc::new(Db::open(dir, options).expect("open"));
    let store = Store::open(Arc::clone(&db)).expect("store");
    (db, store)
}

/// Copies the files under `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("k/{i:05}").into_bytes()
}

/// Puts the `KEYS` keys, twenty per batch; returns the revision after them.
fn load(store: &Store) -> i64 {
    let mut revision = 0;
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(20) {
        let mut batch = store.batch();
        for &i in chunk {
            let put = PutRequest {
                key: key(i),
                value: vec![b'v'; 64],
                ..PutRequest::default()
            };
            batch.put(&put, &NoLeases).expect("put");
        }
        revision = batch.commit(&[]).expect("commit");
    }
    revision
}

fn delete_all() -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: b"k/".to_vec(),
        range_end: b"k0".to_vec(),
        ..DeleteRangeRequest::default()
    }
}

/// A txn of `deletes`, then a put with `ignore_value` over a key they deleted: etcd's apply
/// would panic; here the whole txn fails ([`Error::KeyNotFound`]) and is undone.
fn failing_txn(mut deletes: Vec<RequestOp>) -> TxnRequest {
    deletes.push(RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key(0),
            ignore_value: true,
            ..PutRequest::default()
        })),
    });
    TxnRequest {
        success: deletes,
        ..TxnRequest::default()
    }
}

/// A put of a key outside the loaded ones.
fn put_other() -> PutRequest {
    PutRequest {
        key: b"other".to_vec(),
        value: b"v".to_vec(),
        ..PutRequest::default()
    }
}

/// The keys under `k/` at `revision` (0: the current one).
fn keys_at(store: &Store, revision: i64) -> usize {
    store
        .range_request(&RangeRequest {
            key: b"k/".to_vec(),
            range_end: b"k0".to_vec(),
            revision,
            count_only: true,
            ..RangeRequest::default()
        })
        .expect("range")
        .count as usize
}

#[test]
fn a_delete_larger_than_one_lsm_write_is_applied_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, store) = open(dir.path());
    let loaded = load(&store);
    let mut batch = store.batch();
    assert!(
        KEYS * 64 > 4 * store.batch_bytes_max(),
        "the delete must need several LSM writes"
    );
    let deleted = batch.delete_range(&delete_all()).expect("delete");
    assert_eq!(deleted.deleted, KEYS as i64);
    let revision = batch.commit(&[]).expect("commit");
    assert_eq!(revision, loaded + 1, "one revision for the whole delete");
    assert_eq!(keys_at(&store, 0), 0);
    assert_eq!(
        keys_at(&store, loaded),
        KEYS,
        "the history before it is intact"
    );
    let events = store
        .events(
            &strata_mvcc::WatchSpec {
                key: b"k/".to_vec(),
                range_end: b"k0".to_vec(),
                prev_kv: false,
                no_put: false,
                no_delete: false,
            },
            revision,
            revision,
            10,
        )
        .expect("events");
    assert_eq!(events.events.len(), KEYS, "a delete event per key");
}

#[test]
fn a_failed_request_leaves_nothing_it_wrote_ahead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, store) = open(dir.path());
    let loaded = load(&store);
    let mut batch = store.batch();
    // Deletes every key (written ahead in parts), then fails.
    let txn = failing_txn(vec![RequestOp {
        request: Some(Request::RequestDeleteRange(delete_all())),
    }]);
    assert!(matches!(
        batch.txn(&txn, &NoLeases),
        Err(Error::KeyNotFound)
    ));
    // The next request takes the revision the failed one would have had.
    batch.put(&put_other(), &NoLeases).expect("put");
    let revision = batch.commit(&[]).expect("commit");
    assert_eq!(revision, loaded + 1);
    assert_eq!(
        keys_at(&store, 0),
        KEYS,
        "no delete of the failed txn is visible"
    );
}

#[test]
fn a_dropped_batch_leaves_nothing_it_wrote_ahead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, store) = open(dir.path());
    let loaded = load(&store);
    {
        let mut batch = store.batch();
        batch.delete_range(&delete_all()).expect("delete");
        // Dropped uncommitted.
    }
    let mut batch = store.batch();
    batch.put(&put_other(), &NoLeases).expect("put");
    assert_eq!(batch.commit(&[]).expect("commit"), loaded + 1);
    assert_eq!(keys_at(&store, 0), KEYS);
}

#[test]
fn a_request_cut_off_between_its_parts_is_applied_again_the_same() {
    // What a store that finished the delete holds.
    let whole = tempfile::tempdir().expect("tempdir");
    let (_db, reference) = open(whole.path());
    load(&reference);
    let mut batch = reference.batch();
    batch.delete_range(&delete_all()).expect("delete");
    let revision = batch.commit(&[]).expect("commit");
    let expected = reference.hash_kv(revision).expect("hash");

    // A store whose process stops after the delete wrote parts ahead, before its commit:
    // its files are copied as they are at that moment (what a crash leaves: the writes went
    // to the OS), and the copy is opened.
    let live = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (db, store) = open(live.path());
        load(&store);
        let mut batch = store.batch();
        batch.delete_range(&delete_all()).expect("delete");
        // A crash stops everything at once; a copy takes a while: the background flushes and
        // compactions the parts set off (and the deletion of the tables they replace) finish
        // first.
        db.wait_for_background().expect("background work");
        copy_dir(live.path(), dir.path());
    }
    let (_db, store) = open(dir.path());
    assert_eq!(
        keys_at(&store, 0),
        KEYS,
        "parts written ahead are not visible"
    );
    // The member applies the request again (from its Raft log).
    let mut batch = store.batch();
    batch.delete_range(&delete_all()).expect("delete");
    assert_eq!(batch.commit(&[]).expect("commit"), revision);
    assert_eq!(keys_at(&store, 0), 0);
    assert_eq!(store.hash_kv(revision).expect("hash"), expected);
}

/// The keys under `k/` as a request in the middle of `batch` reads them.
fn keys_in_batch(batch: &mut strata_mvcc::Batch<'_>) -> i64 {
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: b"k/".to_vec(),
                range_end: b"k0".to_vec(),
                count_only: true,
                ..RangeRequest::default()
            })),
        }],
        ..TxnRequest::default()
    };
    let response = batch.txn(&txn, &NoLeases).expect("txn");
    match &response.responses[0].response {
        Some(strata_mvcc::api::response_op::Response::ResponseRange(range)) => range.count,
        other => panic!("a range response, not {other:?}"),
    }
}

// The delete below reads its keys in parts.
const _: () = assert!(KEYS > strata_mvcc::DELETE_PART_KEYS);

#[test]
fn a_delete_in_parts_sees_and_is_seen_by_the_rest_of_its_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, store) = open(dir.path());
    let loaded = load(&store);
    let put = |key: &[u8], value: &[u8]| PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..PutRequest::default()
    };
    let mut batch = store.batch();
    // Before the delete, in the same batch: a loaded key changed, and a new key.
    batch.put(&put(&key(0), b"new"), &NoLeases).expect("put");
    batch.put(&put(b"k/new", b"v"), &NoLeases).expect("put");
    let deleted = batch.delete_range(&delete_all()).expect("delete");
    assert_eq!(deleted.deleted, KEYS as i64 + 1, "the batch's new key too");
    assert_eq!(keys_in_batch(&mut batch), 0);
    // After it: a deleted key is created again, and reads as new.
    let again = batch.put(&put(&key(5), b"again"), &NoLeases).expect("put");
    assert!(again.prev_kv.is_none());
    assert_eq!(keys_in_batch(&mut batch), 1);
    let revision = batch.commit(&[]).expect("commit");
    assert_eq!(revision, loaded + 4);
    assert_eq!(keys_at(&store, loaded + 1), KEYS);
    assert_eq!(keys_at(&store, loaded + 2), KEYS + 1);
    assert_eq!(keys_at(&store, loaded + 3), 0);
    assert_eq!(keys_at(&store, 0), 1);
    let now = store
        .range_request(&RangeRequest {
            key: key(5),
            ..RangeRequest::default()
        })
        .expect("range");
    assert_eq!(now.kvs.len(), 1);
    assert_eq!(now.kvs[0].value, b"again");
    assert_eq!(now.kvs[0].version, 1, "created again after the delete");
    assert_eq!(now.kvs[0].create_revision, loaded + 4);
}

#[test]
fn a_failed_txn_that_deleted_two_ranges_leaves_both_undone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, store) = open(dir.path());
    let loaded = load(&store);
    let half = |key: &[u8], range_end: &[u8]| RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            ..DeleteRangeRequest::default()
        })),
    };
    let middle = key(KEYS / 2);
    let mut batch = store.batch();
    let txn = failing_txn(vec![half(b"k/", &middle), half(&middle, b"k0")]);
    assert!(matches!(
        batch.txn(&txn, &NoLeases),
        Err(Error::KeyNotFound)
    ));
    // The next request takes the failed one's revision; reads after it, in the same batch,
    // still find every key.
    batch.put(&put_other(), &NoLeases).expect("put");
    assert_eq!(keys_in_batch(&mut batch), KEYS as i64);
    assert_eq!(batch.commit(&[]).expect("commit"), loaded + 1);
    assert_eq!(keys_at(&store, 0), KEYS);
}
