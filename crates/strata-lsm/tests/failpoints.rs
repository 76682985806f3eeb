//! An fsync failure puts the store into a read-only error state: later writes fail, reads keep
//! working, and a reopen recovers what was durable. Every test holds a `fail::FailScenario`.

use fail::FailScenario;
use strata_lsm::{Db, Options, WriteOptions};

#[test]
fn a_failed_wal_fsync_refuses_later_writes_but_not_reads() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), Options::default()).expect("open");
    db.put(b"before", b"1", WriteOptions { sync: true })
        .expect("put");
    fail::cfg(strata_wal::FP_FSYNC, "1*return->off").expect("cfg");
    assert!(db.put(b"lost", b"2", WriteOptions { sync: true }).is_err());
    // The failpoint is off, but the store must not claim durability again.
    assert!(db.put(b"after", b"3", WriteOptions { sync: true }).is_err());
    assert_eq!(
        db.get(b"before").expect("reads still work"),
        Some(b"1".to_vec())
    );
    drop(db);
    let db = Db::open(dir.path(), Options::default()).expect("reopen");
    assert_eq!(db.get(b"before").expect("get"), Some(b"1".to_vec()));
    db.put(b"after", b"3", WriteOptions { sync: true })
        .expect("writes work again after a reopen");
    drop(scenario);
}

#[test]
fn a_failed_flush_makes_the_store_read_only() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), Options::default()).expect("open");
    db.put(b"k", b"v", WriteOptions::default()).expect("put");
    // The manifest's fsync fails while the flush records its table.
    fail::cfg(strata_wal::FP_FSYNC, "return").expect("cfg");
    assert!(db.flush().is_err());
    fail::remove(strata_wal::FP_FSYNC);
    assert!(
        matches!(
            db.put(b"x", b"y", WriteOptions::default()),
            Err(strata_lsm::Error::ReadOnly { .. })
        ),
        "writes are refused after a failed flush"
    );
    assert_eq!(db.get(b"k").expect("get"), Some(b"v".to_vec()));
    drop(db);
    let db = Db::open(dir.path(), Options::default()).expect("reopen");
    assert_eq!(
        db.get(b"k").expect("get"),
        Some(b"v".to_vec()),
        "the WAL still has it"
    );
    drop(scenario);
}
