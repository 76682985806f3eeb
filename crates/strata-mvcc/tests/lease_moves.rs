//! `Batch::lease_moves`: replaying them keeps an index of each lease's keys equal to what the
//! store holds, whatever puts (attaching, changing, dropping or keeping leases), deletes, txns
//! and failed requests a batch has.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use strata_lsm::{Db, Options};
use strata_mvcc::api::request_op::Request;
use strata_mvcc::api::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use strata_mvcc::{LeaseCheck, Store};

const KEYS: [&[u8]; 5] = [b"a", b"a\0", b"b", b"c", &[0xFF]];

/// Leases 1 to 3 exist; 4 does not (a put with it fails and must move nothing).
struct Leases;

impl LeaseCheck for Leases {
    fn exists(&self, lease: i64) -> bool {
        (1..=3).contains(&lease)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: usize,
        lease: i64,
        ignore_lease: bool,
    },
    Delete {
        key: usize,
        range: bool,
    },
    Txn {
        puts: Vec<(usize, i64)>,
        delete: Option<usize>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..KEYS.len(), 0i64..5, any::<bool>()).prop_map(|(key, lease, ignore_lease)| Op::Put {
            key,
            lease,
            ignore_lease
        }),
        (0..KEYS.len(), any::<bool>()).prop_map(|(key, range)| Op::Delete { key, range }),
        (
            proptest::collection::vec((0..KEYS.len(), 0i64..4), 0..3),
            proptest::option::of(0..KEYS.len())
        )
            .prop_map(|(puts, delete)| Op::Txn { puts, delete }),
    ]
}

fn put(key: usize, lease: i64, ignore_lease: bool) -> PutRequest {
    PutRequest {
        key: KEYS[key].to_vec(),
        value: b"v".to_vec(),
        lease: if ignore_lease { 0 } else { lease },
        ignore_lease,
        ..PutRequest::default()
    }
}

fn delete(key: usize, range: bool) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: KEYS[key].to_vec(),
        range_end: if range { vec![0] } else { Vec::new() },
        ..DeleteRangeRequest::default()
    }
}

/// Each lease's keys, as the store holds them now.
fn leases_in(store: &Store) -> BTreeMap<i64, BTreeSet<Vec<u8>>> {
    let all = store
        .range_request(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            keys_only: true,
            ..RangeRequest::default()
        })
        .expect("range");
    let mut out: BTreeMap<i64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for kv in all.kvs.into_iter().filter(|kv| kv.lease != 0) {
        out.entry(kv.lease).or_default().insert(kv.key);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn replayed_lease_moves_give_each_lease_its_keys(
        batches in proptest::collection::vec(proptest::collection::vec(op(), 1..8), 1..8),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(Db::open(dir.path(), Options::default()).expect("open"));
        let store = Store::open(db).expect("store");
        let mut index: BTreeMap<i64, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for ops in batches {
            let mut batch = store.batch();
            for op in ops {
                // Failures (unknown lease, ignore_lease on a missing key) are part of the test.
                let _ = match op {
                    Op::Put { key, lease, ignore_lease } => {
                        batch.put(&put(key, lease, ignore_lease), &Leases).map(|_| ())
                    }
                    Op::Delete { key, range } => batch.delete_range(&delete(key, range)).map(|_| ()),
                    Op::Txn { puts, delete: del } => {
                        let mut success: Vec<RequestOp> = puts
                            .into_iter()
                            .map(|(k, l)| RequestOp {
                                request: Some(Request::RequestPut(put(k, l, false))),
                            })
                            .collect();
                        if let Some(k) = del {
                            success.push(RequestOp {
                                request: Some(Request::RequestDeleteRange(delete(k, false))),
                            });
                        }
                        let txn = TxnRequest { compare: Vec::new(), success, failure: Vec::new() };
                        batch.txn(&txn, &Leases).map(|_| ())
                    }
                };
            }
            for m in batch.lease_moves() {
                if m.from != 0 {
                    let keys = index.entry(m.from).or_default();
                    keys.remove(&m.key);
                    if keys.is_empty() {
                        index.remove(&m.from);
                    }
                }
                if m.to != 0 {
                    index.entry(m.to).or_default().insert(m.key.clone());
                }
            }
            batch.commit(&[]).expect("commit");
            prop_assert_eq!(&index, &leases_in(&store));
        }
    }
}
