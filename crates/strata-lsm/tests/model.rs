//! The store against a `BTreeMap` model: random puts, deletes, batches, snapshots, forced
//! flushes and compactions, ingests of another store's tables, reopens and crashes with a torn
//! WAL tail. Reads always match the model.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strata_lsm::{CompactionOptions, Db, Direction, Options, WriteBatch, WriteOptions};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Put(u8, Vec<u8>),
    Delete(u8),
    Batch(Vec<(u8, Option<Vec<u8>>)>),
    Get(u8),
    TakeSnapshot,
    ReadSnapshot(u8),
    Flush,
    Compact,
    Reopen,
    CrashTearingWal(u16),
    Scan(Bound<u8>, Bound<u8>, bool),
    ScanSnapshot(bool),
    ScanPrefix(u8),
    /// Ingest, at a level, the tables of another store that received these writes, split
    /// into two flushes (so its tables overlap and hold several versions of a key).
    Ingest(u8, Vec<(u8, Option<Vec<u8>>)>, usize),
}

fn bound() -> impl Strategy<Value = Bound<u8>> {
    prop_oneof![
        Just(Bound::Unbounded),
        any::<u8>().prop_map(Bound::Included),
        any::<u8>().prop_map(Bound::Excluded),
    ]
}

fn key_bound(b: &Bound<u8>) -> Bound<Vec<u8>> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(k) => Bound::Included(key(*k)),
        Bound::Excluded(k) => Bound::Excluded(key(*k)),
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
    }
}

/// What a scan of `model` within the bounds returns, in order.
fn model_scan(
    model: &Model,
    lower: &Bound<Vec<u8>>,
    upper: &Bound<Vec<u8>>,
    reverse: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let valid = match (lower, upper) {
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => {
            l < u
                || (l == u
                    && matches!(lower, Bound::Included(_))
                    && matches!(upper, Bound::Included(_)))
        }
        _ => true,
    };
    if !valid {
        return Vec::new();
    }
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = model
        .range::<Vec<u8>, _>((lower.clone(), upper.clone()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if reverse {
        out.reverse();
    }
    out
}

fn db_scan(
    scan: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]) -> bool) -> strata_lsm::Result<()>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    scan(&mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        true
    })
    .expect("scan");
    out
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{}", k % 12).into_bytes()
}

fn op() -> impl Strategy<Value = Op> {
    let value = proptest::collection::vec(any::<u8>(), 0..200);
    prop_oneof![
        8 => (any::<u8>(), value.clone()).prop_map(|(k, v)| Op::Put(k, v)),
        3 => any::<u8>().prop_map(Op::Delete),
        2 => proptest::collection::vec((any::<u8>(), proptest::option::of(value.clone())), 0..5).prop_map(Op::Batch),
        4 => any::<u8>().prop_map(Op::Get),
        1 => Just(Op::TakeSnapshot),
        2 => any::<u8>().prop_map(Op::ReadSnapshot),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => (1u16..200).prop_map(Op::CrashTearingWal),
        2 => (bound(), bound(), any::<bool>()).prop_map(|(l, u, r)| Op::Scan(l, u, r)),
        1 => any::<bool>().prop_map(Op::ScanSnapshot),
        1 => any::<u8>().prop_map(Op::ScanPrefix),
        1 => (0u8..7, proptest::collection::vec((any::<u8>(), proptest::option::of(value)), 0..8), 0usize..8)
            .prop_map(|(level, writes, split)| Op::Ingest(level, writes, split)),
    ]
}

fn options() -> Options {
    Options {
        // Small, so rotations, background flushes and compactions happen within a test case.
        memtable_bytes: 4 * 1024,
        immutable_memtables_max: 1,
        compaction: CompactionOptions {
            l0_trigger: 2,
            target_file_bytes: 2 * 1024,
            level_base_bytes: 8 * 1024,
            level_multiplier: 2,
            ..CompactionOptions::default()
        },
        ..Options::default()
    }
}

fn last_wal_segment(dir: &Path) -> Option<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .ok()?
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments.pop()
}

fn matches(db: &Db, model: &Model) -> Result<(), TestCaseError> {
    for k in 0..12u8 {
        let k = key(k);
        prop_assert_eq!(
            db.get(&k).expect("get"),
            model.get(&k).cloned(),
            "key {:?}",
            k
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn store_matches_btreemap_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut db = Db::open(dir.path(), options()).expect("open");
        let mut model = Model::new();
        // The model after each write, to check what a torn WAL tail can leave.
        let mut history: Vec<Model> = vec![Model::new()];
        let mut durable_writes = 0usize;
        let mut snapshot: Option<(strata_lsm::Snapshot, Model)> = None;
        let write = WriteOptions::default();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    db.put(&key(k), &v, write).expect("put");
                    model.insert(key(k), v);
                    history.push(model.clone());
                }
                Op::Delete(k) => {
                    db.delete(&key(k), write).expect("delete");
                    model.remove(&key(k));
                    history.push(model.clone());
                }
                Op::Batch(ops) => {
                    let mut batch = WriteBatch::new();
                    for (k, v) in &ops {
                        match v {
                            Some(v) => batch.put(&key(*k), v),
                            None => batch.delete(&key(*k)),
                        }
                    }
                    db.write(batch, write).expect("write");
                    for (k, v) in ops {
                        match v {
                            Some(v) => model.insert(key(k), v),
                            None => model.remove(&key(k)),
                        };
                    }
                    history.push(model.clone());
                }
                Op::Get(k) => {
                    prop_assert_eq!(db.get(&key(k)).expect("get"), model.get(&key(k)).cloned());
                }
                Op::TakeSnapshot => snapshot = Some((db.snapshot(), model.clone())),
                Op::ReadSnapshot(k) => {
                    if let Some((snap, then)) = &snapshot {
                        prop_assert_eq!(snap.get(&key(k)).expect("get"), then.get(&key(k)).cloned());
                    }
                }
                Op::Scan(l, u, reverse) => {
                    let (lower, upper) = (key_bound(&l), key_bound(&u));
                    let direction = if reverse { Direction::Reverse } else { Direction::Forward };
                    let got = db_scan(|visit| db.scan(as_ref(&lower), as_ref(&upper), direction, visit));
                    prop_assert_eq!(got, model_scan(&model, &lower, &upper, reverse), "scan {:?}..{:?}", l, u);
                }
                Op::ScanSnapshot(reverse) => {
                    if let Some((snap, then)) = &snapshot {
                        let direction = if reverse { Direction::Reverse } else { Direction::Forward };
                        let got = db_scan(|visit| snap.scan(Bound::Unbounded, Bound::Unbounded, direction, visit));
                        prop_assert_eq!(got, model_scan(then, &Bound::Unbounded, &Bound::Unbounded, reverse));
                    }
                }
                Op::ScanPrefix(k) => {
                    // "key-1" is a prefix of "key-10" and "key-11": a real prefix scan.
                    let prefix = format!("key-{}", k % 12 % 10).into_bytes();
                    let got = db_scan(|visit| db.scan_prefix(&prefix, Direction::Forward, visit));
                    let want: Vec<(Vec<u8>, Vec<u8>)> = model
                        .iter()
                        .filter(|(key, _)| key.starts_with(&prefix))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::Ingest(level, writes, split) => {
                    let other_dir = tempfile::tempdir().expect("tempdir");
                    let other = Db::open(other_dir.path(), Options::default()).expect("open");
                    for (i, (k, v)) in writes.iter().enumerate() {
                        if i == split {
                            other.flush().expect("flush");
                        }
                        match v {
                            Some(v) => other.put(&key(*k), v, write).expect("put"),
                            None => other.delete(&key(*k), write).expect("delete"),
                        };
                    }
                    other.flush().expect("flush");
                    let files: Vec<PathBuf> = other
                        .live_files()
                        .iter()
                        .map(|f| f.path.clone())
                        .collect();
                    db.ingest(usize::from(level), &files).expect("ingest");
                    for (k, v) in writes {
                        match v {
                            Some(v) => model.insert(key(k), v),
                            None => model.remove(&key(k)),
                        };
                    }
                    history.push(model.clone());
                    // An ingest flushes first and is durable once it returns (an empty one
                    // does nothing at all).
                    if !files.is_empty() {
                        durable_writes = history.len() - 1;
                    }
                }
                Op::Compact => {
                    db.compact().expect("compact");
                    // Compaction works on flushed data only: everything written is still in
                    // the WAL or tables, so nothing new becomes durable here.
                }
                Op::Flush => {
                    db.flush().expect("flush");
                    durable_writes = history.len() - 1;
                }
                Op::Reopen => {
                    snapshot = None;
                    drop(db);
                    db = Db::open(dir.path(), options()).expect("reopen");
                    // Nothing was lost: the WAL is written (not synced) before a write returns.
                    matches(&db, &model)?;
                }
                Op::CrashTearingWal(cut) => {
                    snapshot = None;
                    drop(db);
                    if let Some(segment) = last_wal_segment(dir.path()) {
                        let len = std::fs::metadata(&segment).expect("stat").len();
                        let keep = len.saturating_sub(u64::from(cut)).max(32);
                        let file = std::fs::OpenOptions::new().write(true).open(&segment).expect("open");
                        file.set_len(keep.min(len)).expect("truncate");
                    }
                    db = Db::open(dir.path(), options()).expect("reopen after a torn WAL");
                    // The store is the model after some prefix of the writes: at least the
                    // flushed ones, and each batch all or nothing.
                    let found = (durable_writes..history.len()).rev().find(|&i| {
                        (0..12u8).all(|k| db.get(&key(k)).expect("get") == history[i].get(&key(k)).cloned())
                    });
                    prop_assert!(found.is_some(), "the store matches no prefix of the writes");
                    let i = found.expect("checked");
                    model = history[i].clone();
                    history.truncate(i + 1);
                }
            }
        }
        matches(&db, &model)?;
        // A snapshot keeps the store open (it holds a handle).
        drop(snapshot);
        drop(db);
        let db = Db::open(dir.path(), options()).expect("final reopen");
        matches(&db, &model)?;
    }
}
