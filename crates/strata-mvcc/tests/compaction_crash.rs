//! A physical compaction that fails part of the way (its deletions' WAL write fails, as a crash
//! or a full disk would stop it) leaves a store that, reopened, says the compaction is pending,
//! refuses every revision below the compacted one and reads every revision from it on exactly
//! as before; resumed, the compaction completes and leaves one version per live key on disk.

use std::ops::Bound;
use std::sync::Arc;

use fail::FailScenario;
use strata_lsm::{Db, Direction, Options};
use strata_mvcc::api::{CompactionRequest, RangeRequest, RangeResponse};
use strata_mvcc::{Error, Store, keys};

fn open(dir: &std::path::Path) -> (Arc<Db>, Store) {
    let db = Arc::new(Db::open(dir, Options::default()).expect("open"));
    let store = Store::open(Arc::clone(&db)).expect("store");
    (db, store)
}

fn every_key(rev: i64) -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: rev,
        ..RangeRequest::default()
    }
}

/// Every key, at `rev`.
fn all(store: &Store, rev: i64) -> RangeResponse {
    store.range_request(&every_key(rev)).expect("range")
}

/// Records a compaction at `rev` (its first part).
fn mark(store: &Store, rev: i64) {
    let mut batch = store.batch();
    batch
        .compact(&CompactionRequest {
            revision: rev,
            physical: false,
        })
        .expect("compact");
    batch.commit(&[]).expect("commit");
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
fn a_compaction_cut_short_is_pending_refuses_older_revisions_reads_newer_ones_as_before_and_resumes()
 {
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
    let before: Vec<RangeResponse> = (at..=current).map(|rev| all(&store, rev)).collect();

    // The compacted revision is recorded, then the first step's deletions fail.
    mark(&store, at);
    assert!(store.compaction_pending());
    fail::cfg(strata_wal::FP_WRITE, "return").expect("failpoint");
    assert!(
        store.compact_physical().is_err(),
        "the deletions' write failed"
    );
    fail::remove(strata_wal::FP_WRITE);
    drop(store);
    drop(db);

    let (db, store) = open(dir.path());
    assert_eq!(store.compacted_revision(), at);
    assert_eq!(store.current_revision(), current);
    assert!(
        store.compaction_pending(),
        "the cut-short compaction is reported"
    );
    assert!(matches!(
        store.range_request(&every_key(at - 1)),
        Err(Error::Compacted)
    ));
    for (rev, want) in (at..=current).zip(&before) {
        assert_eq!(&all(&store, rev), want, "revision {rev}");
    }
    let hash = store.hash_kv(current).expect("hash");

    // Resumed in small steps, the compaction completes; reads and the hash are unchanged.
    let mut steps = 0;
    while !store.compact_physical_step(3).expect("step") {
        steps += 1;
        assert!(steps < 1_000, "the compaction ends");
    }
    assert!(steps > 1, "it took several steps");
    assert!(!store.compaction_pending());
    assert_eq!(store.compacted_done_revision(), at);
    for (rev, want) in (at..=current).zip(&before) {
        assert_eq!(&all(&store, rev), want, "revision {rev}");
    }
    assert_eq!(store.hash_kv(current).expect("hash"), hash);

    // Compacting again, to the current revision, completes: one version per live key.
    mark(&store, current);
    store.compact_physical().expect("compact");
    let live = all(&store, current);
    assert_eq!(live, before[before.len() - 1]);
    assert_eq!(data_entries(&db), live.kvs.len());
    scenario.teardown();
}
