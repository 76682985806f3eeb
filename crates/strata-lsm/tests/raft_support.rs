//! What the Raft layer needs: flushes that record its properties, live files that report them,
//! and checkpoints that export a consistent, independent copy.

use strata_lsm::{Db, Options, WriteOptions};

mod support;

#[test]
fn a_forced_flush_records_properties_that_live_files_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), Options::default()).expect("open");
    db.put(b"k", b"v", WriteOptions::default()).expect("put");
    let written = db
        .flush_with_properties(&[("raft.applied_index", &42u64.to_le_bytes())])
        .expect("flush");
    assert_eq!(written.len(), 1);
    let live = db.live_files();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].number, written[0].number);
    assert_eq!(
        live[0].properties.get("raft.applied_index"),
        Some(&42u64.to_le_bytes().to_vec())
    );
    assert!(db.flush().expect("nothing to flush").is_empty());
    db.put(b"k2", b"v", WriteOptions::default()).expect("put");
    assert!(
        db.flush_with_properties(&[("strata.x", b"")]).is_err(),
        "reserved property names are refused"
    );
    // A refused flush is the caller's mistake, not a failure of the store.
    db.put(b"k3", b"v", WriteOptions::default())
        .expect("the store still takes writes");
    let written = db
        .flush_with_properties(&[("raft.applied_index", &43u64.to_le_bytes())])
        .expect("flush");
    let newest = db
        .live_files()
        .into_iter()
        .find(|f| f.number == written[written.len() - 1].number)
        .expect("the flushed table is live");
    assert_eq!(
        newest.properties.get("raft.applied_index"),
        Some(&43u64.to_le_bytes().to_vec())
    );
}

#[test]
fn a_checkpoint_is_a_consistent_independent_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("db"), Options::default()).expect("open");
    for i in 0..1000u32 {
        db.put(
            format!("k{i:04}").as_bytes(),
            &i.to_le_bytes(),
            WriteOptions::default(),
        )
        .expect("put");
    }
    db.delete(b"k0007", WriteOptions::default())
        .expect("delete");
    let copy_dir = dir.path().join("copy");
    db.checkpoint(&copy_dir).expect("checkpoint");
    // Later writes to the original do not reach the copy.
    db.put(b"k0001", b"changed", WriteOptions::default())
        .expect("put");
    db.put(b"new", b"x", WriteOptions::default()).expect("put");

    let copy = Db::open(&copy_dir, Options::default()).expect("open the copy");
    assert_eq!(
        copy.get(b"k0001").expect("get"),
        Some(1u32.to_le_bytes().to_vec())
    );
    assert_eq!(copy.get(b"k0007").expect("get"), None);
    assert_eq!(copy.get(b"new").expect("get"), None);
    for i in (0..1000u32).filter(|&i| i != 7) {
        assert!(
            copy.get(format!("k{i:04}").as_bytes())
                .expect("get")
                .is_some()
        );
    }
    // The copy takes writes of its own, and the original is unaffected.
    copy.put(b"only-in-copy", b"y", WriteOptions::default())
        .expect("put");
    assert_eq!(db.get(b"only-in-copy").expect("get"), None);
    assert_eq!(db.get(b"k0001").expect("get"), Some(b"changed".to_vec()));
    drop(copy);
    let copy = Db::open(&copy_dir, Options::default()).expect("reopen the copy");
    assert_eq!(copy.get(b"only-in-copy").expect("get"), Some(b"y".to_vec()));
}

#[test]
fn writes_the_store_cannot_hold_are_refused_before_the_wal_and_the_store_keeps_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || Options {
        memtable_bytes: 64 * 1024,
        ..Options::default()
    };
    let db = Db::open(dir.path(), options()).expect("open");
    let huge_key = vec![0u8; 40_000]; // Each zero byte doubles in the encoded key.
    assert!(matches!(
        db.put(&huge_key, b"v", WriteOptions::default()),
        Err(strata_lsm::Error::KeyTooLarge { .. })
    ));
    let mut batch = strata_lsm::WriteBatch::new();
    for i in 0..3u8 {
        batch.put(&[i], &[0; 30_000]);
    }
    assert!(matches!(
        db.write(batch, WriteOptions::default()),
        Err(strata_lsm::Error::BatchTooLarge { .. })
    ));
    db.put(b"ok", b"v", WriteOptions::default())
        .expect("the store still works");
    db.flush().expect("flush");
    drop(db);
    let db = Db::open(dir.path(), options()).expect("reopen");
    assert_eq!(db.get(b"ok").expect("get"), Some(b"v".to_vec()));
    assert_eq!(
        db.get(&[0]).expect("get"),
        None,
        "nothing of the refused batch"
    );
}

#[test]
fn a_reopen_replays_more_than_one_memtable_of_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || Options {
        memtable_bytes: 64 * 1024,
        immutable_memtables_max: 2,
        ..Options::default()
    };
    {
        let db = Db::open(dir.path(), options()).expect("open");
        for i in 0..400u32 {
            db.put(
                format!("k{i:04}").as_bytes(),
                &[3; 1000],
                WriteOptions::default(),
            )
            .expect("put");
        }
        // Abandon the store without a clean close, whatever the flusher managed.
        std::mem::forget(db);
    }
    let copy = support::crash_image(dir.path());
    let db = Db::open(copy.path(), options()).expect("reopen");
    for i in 0..400u32 {
        assert_eq!(
            db.get(format!("k{i:04}").as_bytes()).expect("get"),
            Some(vec![3; 1000]),
            "k{i:04}"
        );
    }
}
