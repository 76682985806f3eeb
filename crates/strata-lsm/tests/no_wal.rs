//! A store without a WAL (`Options::wal = false`), as a Raft state machine runs it: writes are
//! read at once and logged nowhere; a crash keeps exactly the writes the flushes covered, whole
//! batches in order; a `sync` write and a clean close flush; a WAL left by an earlier open with
//! one is replayed, not lost.

use strata_lsm::{Db, Options, WriteBatch, WriteOptions};

mod support;

fn options() -> Options {
    Options {
        memtable_bytes: 64 * 1024,
        wal: false,
        ..Options::default()
    }
}

/// Batch `i`: key `k<i>` and the key `last`, both set to `i`.
fn batch(i: u32) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(format!("k{i:05}").as_bytes(), &[7; 500]);
    batch.put(b"last", &i.to_le_bytes());
    batch
}

/// Whether a store holds batch `i`'s key.
fn holds(db: &Db, i: u32) -> bool {
    db.get(format!("k{i:05}").as_bytes())
        .expect("get")
        .is_some()
}

/// The `last` a store holds, if any.
fn last(db: &Db) -> Option<u32> {
    db.get(b"last")
        .expect("get")
        .map(|v| u32::from_le_bytes(v.as_slice().try_into().expect("4 bytes")))
}

#[test]
fn without_a_wal_writes_are_read_at_once_logged_nowhere_and_kept_by_a_clean_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Db::open(dir.path(), options()).expect("open");
        for i in 0..10 {
            db.write(batch(i), WriteOptions::default()).expect("write");
        }
        assert_eq!(last(&db), Some(9));
        assert_eq!(db.stats().wal_bytes, 0, "nothing went to a WAL");
    }
    let db = Db::open(dir.path(), options()).expect("reopen");
    assert_eq!(last(&db), Some(9), "the close flushed the memtable");
    for i in 0..10 {
        assert!(holds(&db, i), "batch {i}");
    }
}

#[test]
fn without_a_wal_a_crash_keeps_the_flushed_prefix_of_whole_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = 2_000;
    {
        let db = Db::open(dir.path(), options()).expect("open");
        for i in 0..written {
            db.write(batch(i), WriteOptions::default()).expect("write");
        }
        db.wait_for_background().expect("flushes");
        std::mem::forget(db);
    }
    let copy = support::crash_image(dir.path());
    let db = Db::open(copy.path(), options()).expect("reopen");
    let kept = last(&db).expect("the flushes kept some batches");
    // The active memtable's batches are gone: there was no log to replay them from.
    assert!(kept < written - 1, "kept {kept} of {written}");
    for i in 0..written {
        assert_eq!(
            holds(&db, i),
            i <= kept,
            "batch {i}, with the last kept {kept}"
        );
    }
}

#[test]
fn without_a_wal_a_sync_write_is_durable_when_it_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Db::open(dir.path(), options()).expect("open");
        for i in 0..300 {
            db.write(batch(i), WriteOptions::default()).expect("write");
        }
        db.write(batch(300), WriteOptions { sync: true })
            .expect("a sync write");
        std::mem::forget(db);
    }
    let copy = support::crash_image(dir.path());
    let db = Db::open(copy.path(), options()).expect("reopen");
    assert_eq!(last(&db), Some(300));
    for i in 0..=300 {
        assert!(holds(&db, i), "batch {i}");
    }
}

#[test]
fn a_wal_left_by_an_open_with_one_is_replayed_by_an_open_without() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Db::open(dir.path(), Options::default()).expect("open with a WAL");
        for i in 0..50 {
            db.write(batch(i), WriteOptions::default()).expect("write");
        }
        // Closed with its memtable unflushed: the WAL holds the writes.
    }
    {
        let db = Db::open(dir.path(), options()).expect("open without");
        assert_eq!(last(&db), Some(49), "replayed from the WAL");
        for i in 50..60 {
            db.write(batch(i), WriteOptions::default()).expect("write");
        }
        db.flush().expect("flush");
        db.wait_for_background().expect("background work");
        std::mem::forget(db);
    }
    // After that flush the old WAL's records are in a table: a crash image holds every batch,
    // and a reopen with a WAL again finds nothing to replay twice.
    let copy = support::crash_image(dir.path());
    let db = Db::open(copy.path(), Options::default()).expect("reopen with a WAL");
    assert_eq!(last(&db), Some(59));
    for i in 0..60 {
        assert!(holds(&db, i), "batch {i}");
    }
}
