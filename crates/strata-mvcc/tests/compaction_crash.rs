//! A compaction that fails part of the way (its deletions' WAL write fails, as a crash or a
//! full disk would stop it) leaves a store that, reopened, refuses every revision below the
//! compacted one and reads every revision from it on exactly as before; a compaction that
//! completes leaves one version per live key on disk.

use std::ops::Bound;
use std::sync::Arc;

use fail::FailScenario;
use strata_lsm::{Db, Direction, Options};
use strata_mvcc::{Error, RangeResult, Store, keys};

fn open(dir: &std::path::Path) -> (Arc<Db>, Store) {
    let db = Arc::new(Db::open(dir, Options::default()).expect("open"));
    let store = Store::open(Arc::clone(&db)).expect("store");
    (db, store)
}

/// Every key, at `rev`.
fn all(store: &Store, rev: u64) -> RangeResult {
    store.range(&[], &[0], rev, 0).expect("range")
}

/// Versions (and tombstones) left in the data keyspace.
fn data_entries(db: &Db) -> usize {
    let mut n = 0;
    db.scan(
        Bound::Included(&[keys::DATA][..]),
        Bound::Excluded(&[keys::DATA + 1][..]),
        Direction::Forward,
        |_, _| {
            n += 1;
            true
        },
    )
    .expect("scan");
    n
}

#[test]
fn a_compaction_cut_short_refuses_older_revisions_and_reads_newer_ones_as_before() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, store) = open(dir.path());
    // Ten keys rewritten over twenty requests, some deleted on the way.
    for round in 0..20u8 {
        let mut write = store.write();
        for k in 0..10u8 {
            if (k + round) % 4 == 0 {
                write.put(&[b'k', k], &[round], 0).expect("put");
            }
        }
        write.commit(&[]).expect("commit");
        if round % 5 == 4 {
            let mut write = store.write();
            write
                .delete_range(&[b'k', round % 10], &[])
                .expect("delete");
            write.commit(&[]).expect("commit");
        }
    }
    let current = store.current_revision();
    let at = current - 8;
    let before: Vec<RangeResult> = (at..=current).map(|rev| all(&store, rev)).collect();

    // The compacted revision is written, then the first batch of deletions fails.
    fail::cfg(strata_wal::FP_WRITE, "1*off->return").expect("failpoint");
    assert!(store.compact(at).is_err(), "the deletions' write failed");
    fail::remove(strata_wal::FP_WRITE);
    drop(store);
    drop(db);

    let (db, store) = open(dir.path());
    assert_eq!(store.compacted_revision(), at);
    assert_eq!(store.current_revision(), current);
    assert!(matches!(
        store.range(&[], &[0], at - 1, 0),
        Err(Error::Compacted)
    ));
    for (rev, want) in (at..=current).zip(&before) {
        assert_eq!(&all(&store, rev), want, "revision {rev}");
    }

    // Compacting again, to the current revision, completes: one version per live key.
    store.compact(current).expect("compact");
    let live = all(&store, current);
    assert_eq!(live, before[before.len() - 1]);
    assert_eq!(data_entries(&db), live.kvs.len());
    scenario.teardown();
}
