//! The store against a model: a map of every key's versions, under random puts, range deletes,
//! compactions and ranges at random revisions, across reopens.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use strata_lsm::{Db, Options};
use strata_mvcc::{Error, KeyValue, Store};

#[derive(Debug, Clone)]
enum Op {
    /// Puts in one request.
    Put(Vec<(u8, u8)>),
    /// Deletes `[a, b)` (b = 0: key a alone; b = 255: from a on).
    Delete(u8, u8),
    /// Compacts at the current revision minus this much.
    Compact(u8),
    /// Reads `[a, b)` at the current revision minus this much, with a limit.
    Range(u8, u8, u8, u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => proptest::collection::vec((0u8..8, any::<u8>()), 1..4).prop_map(Op::Put),
        1 => (0u8..8, prop_oneof![Just(0u8), 0u8..9, Just(255u8)]).prop_map(|(a, b)| Op::Delete(a, b)),
        1 => (0u8..6).prop_map(Op::Compact),
        3 => (0u8..8, prop_oneof![Just(0u8), 0u8..9, Just(255u8)], 0u8..8, 0u8..4).prop_map(|(a, b, back, limit)| Op::Range(a, b, back, limit)),
        1 => Just(Op::Reopen),
    ]
}

fn key(k: u8) -> Vec<u8> {
    // Keys with NULs and a shared prefix, where ordering bugs hide.
    match k {
        0 => vec![],
        1 => vec![0],
        2 => vec![0, 0],
        3 => b"a".to_vec(),
        4 => b"a\0".to_vec(),
        5 => b"ab".to_vec(),
        6 => b"b".to_vec(),
        _ => vec![0xFF, k],
    }
}

fn end(k: u8, b: u8) -> Vec<u8> {
    match b {
        0 => vec![],
        255 => vec![0],
        _ => key(b).max(key(k)),
    }
}

/// The model: each key's history of (main revision, version or deletion).
#[derive(Default)]
struct Model {
    history: BTreeMap<Vec<u8>, Vec<(u64, Option<KeyValue>)>>,
    current: u64,
    compacted: u64,
}

impl Model {
    fn latest(&self, k: &[u8]) -> Option<KeyValue> {
        self.history
            .get(k)
            .and_then(|h| h.last())
            .and_then(|(_, kv)| kv.clone())
    }

    fn at(&self, rev: u64) -> BTreeMap<Vec<u8>, KeyValue> {
        self.history
            .iter()
            .filter_map(|(k, h)| {
                h.iter()
                    .rev()
                    .find(|(r, _)| *r <= rev)
                    .and_then(|(_, kv)| kv.clone())
                    .map(|kv| (k.clone(), kv))
            })
            .collect()
    }
}

fn in_range(k: &[u8], a: &[u8], e: &[u8]) -> bool {
    if e.is_empty() {
        k == a
    } else if e == [0] {
        k >= a
    } else {
        k >= a && k < e
    }
}

fn open(dir: &std::path::Path) -> Store {
    let db = Db::open(dir, Options::default()).expect("open");
    Store::open(Arc::new(db)).expect("store")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every range, at every revision not compacted, reads what the model held then; writes
    /// get etcd's revisions, versions and create revisions; compaction refuses what it must.
    #[test]
    fn ranges_at_any_revision_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(dir.path());
        let mut model = Model { current: 1, ..Model::default() };
        prop_assert_eq!(store.current_revision(), 1);
        for op in ops {
            match op {
                Op::Put(puts) => {
                    let mut write = store.write();
                    let main = model.current + 1;
                    let mut latest: BTreeMap<Vec<u8>, Option<KeyValue>> = BTreeMap::new();
                    for (k, v) in puts {
                        let k = key(k);
                        let prev = latest.get(&k).cloned().unwrap_or_else(|| model.latest(&k));
                        let got = write.put(&k, &[v], 0).expect("put");
                        prop_assert_eq!(&got, &prev);
                        let kv = KeyValue {
                            key: k.clone(),
                            create_revision: prev.as_ref().map_or(main, |p| p.create_revision),
                            mod_revision: main,
                            version: prev.as_ref().map_or(1, |p| p.version + 1),
                            lease: 0,
                            value: vec![v],
                        };
                        latest.insert(k, Some(kv));
                    }
                    prop_assert_eq!(write.commit(&[]).expect("commit"), main);
                    for (k, kv) in latest {
                        model.history.entry(k).or_default().push((main, kv));
                    }
                    model.current = main;
                }
                Op::Delete(a, b) => {
                    let (ka, ke) = (key(a), end(a, b));
                    let live: Vec<KeyValue> = model
                        .at(model.current)
                        .into_iter()
                        .filter(|(k, _)| in_range(k, &ka, &ke))
                        .map(|(_, kv)| kv)
                        .collect();
                    let mut write = store.write();
                    let deleted = write.delete_range(&ka, &ke).expect("delete");
                    prop_assert_eq!(&deleted, &live);
                    let rev = write.commit(&[]).expect("commit");
                    if live.is_empty() {
                        // A request that changes nothing takes no revision.
                        prop_assert_eq!(rev, model.current);
                    } else {
                        model.current += 1;
                        prop_assert_eq!(rev, model.current);
                        for kv in live {
                            model.history.entry(kv.key).or_default().push((model.current, None));
                        }
                    }
                }
                Op::Compact(back) => {
                    let rev = model.current.saturating_sub(u64::from(back)).max(1);
                    let result = store.compact(rev);
                    if rev <= model.compacted {
                        prop_assert!(matches!(result, Err(Error::Compacted)), "{result:?}");
                    } else {
                        result.expect("compact");
                        model.compacted = rev;
                    }
                }
                Op::Range(a, b, back, limit) => {
                    let (ka, ke) = (key(a), end(a, b));
                    let rev = model.current.saturating_sub(u64::from(back)).max(1);
                    let result = store.range(&ka, &ke, rev, usize::from(limit));
                    if rev < model.compacted {
                        prop_assert!(matches!(result, Err(Error::Compacted)), "{result:?}");
                        continue;
                    }
                    let got = result.expect("range");
                    let want: Vec<KeyValue> = model
                        .at(rev)
                        .into_iter()
                        .filter(|(k, _)| in_range(k, &ka, &ke))
                        .map(|(_, kv)| kv)
                        .collect();
                    prop_assert_eq!(got.count, want.len() as u64);
                    let shown = if limit == 0 { want.len() } else { usize::from(limit).min(want.len()) };
                    prop_assert_eq!(&got.kvs[..], &want[..shown]);
                    prop_assert_eq!(got.more, shown < want.len());
                }
                Op::Reopen => {
                    drop(store);
                    store = open(dir.path());
                    prop_assert_eq!(store.current_revision(), model.current);
                    prop_assert_eq!(store.compacted_revision(), model.compacted);
                }
            }
        }
        // A future revision is refused.
        prop_assert!(matches!(store.range(b"a", &[], model.current + 1, 0), Err(Error::FutureRevision)));
    }
}
