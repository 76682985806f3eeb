//! An fsync failure puts the store into a read-only error state: later writes fail, reads keep
//! working, and a reopen recovers what was durable. Every test holds a `fail::FailScenario`.

use std::sync::Arc;

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

/// Options whose level 0 slows writes at 3 tables and stops them at 4, with compaction due at 2.
fn stalling_options() -> Options {
    Options {
        compaction: strata_lsm::CompactionOptions {
            l0_trigger: 2,
            l0_slowdown_trigger: 3,
            l0_stop_trigger: 4,
            ..strata_lsm::CompactionOptions::default()
        },
        ..Options::default()
    }
}

#[test]
fn waiting_for_background_work_reports_a_failed_compaction() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    fail::cfg(strata_lsm::FP_COMPACTION, "return").expect("cfg");
    let db = Db::open(dir.path(), stalling_options()).expect("open");
    db.put(&[0], b"v", WriteOptions::default()).expect("put");
    db.flush().expect("flush");
    db.put(&[1], b"v", WriteOptions::default()).expect("put");
    // This flush brings level 0 to its trigger: the compaction that follows fails, perhaps
    // before the flush has returned, which then reports it.
    match db.flush() {
        Ok(_) | Err(strata_lsm::Error::ReadOnly { .. }) => {}
        Err(e) => panic!("flush: {e}"),
    }
    // The wait says so rather than waiting for work that will never be done.
    assert!(matches!(
        db.wait_for_background(),
        Err(strata_lsm::Error::ReadOnly { .. })
    ));
    assert_eq!(db.get(&[1]).expect("reads still work"), Some(b"v".to_vec()));
    drop(db);
    drop(scenario);
}

#[test]
fn writes_slow_down_then_stop_while_level_0_is_behind_and_resume_after_compaction() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    // Compaction starts and then waits at the failpoint: level 0 only grows.
    fail::cfg(strata_lsm::FP_COMPACTION, "pause").expect("cfg");
    let db = Db::open(dir.path(), stalling_options()).expect("open");
    let w = WriteOptions::default();
    for i in 0..3u8 {
        db.put(&[i], b"v", w).expect("put");
        db.flush().expect("flush");
    }
    assert_eq!(db.stats().levels[0].tables, 3);
    assert_eq!(db.stats().write_slowdowns, 0);
    // At the slowdown trigger a write is delayed, not refused.
    db.put(&[3], b"v", w).expect("a slowed write");
    assert_eq!(db.stats().write_slowdowns, 1);
    assert_eq!(db.stats().write_stops, 0);
    db.flush().expect("flush");
    assert_eq!(db.stats().levels[0].tables, 4);
    // At the stop trigger a write waits for compaction.
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || db.put(&[4], b"v", WriteOptions::default()))
    };
    while db.stats().write_stops == 0 {
        assert!(
            !writer.is_finished(),
            "the write went through with level 0 at the stop trigger"
        );
        std::thread::yield_now();
    }
    assert!(
        !writer.is_finished(),
        "the write waits while level 0 is full"
    );
    assert_eq!(db.get(&[4]).expect("get"), None);
    fail::cfg(strata_lsm::FP_COMPACTION, "off").expect("cfg");
    writer
        .join()
        .expect("writer")
        .expect("the write goes through once compaction has run");
    assert!(db.stats().levels[0].tables < 4);
    assert!(db.stats().stall_micros > 0);
    for i in 0..5u8 {
        assert_eq!(db.get(&[i]).expect("get"), Some(b"v".to_vec()));
    }
    drop(db);
    drop(scenario);
}

#[test]
fn a_compaction_that_waits_holds_back_no_flush() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// Polls `done` for up to 30 s; whether it came true.
    fn within_bound(done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    // A compaction that reaches the failpoint says so, then waits there (holding the
    // compaction lock) until the gate opens.
    let entered = Arc::new(AtomicBool::new(false));
    let gate = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    {
        let (entered, gate) = (Arc::clone(&entered), Arc::clone(&gate));
        fail::cfg_callback(strata_lsm::FP_COMPACTION, move || {
            entered.store(true, Ordering::SeqCst);
            let (open, opened) = &*gate;
            let open = open.lock().expect("gate");
            // Bounded, so that a failing test cannot hang its close.
            let _ = opened
                .wait_timeout_while(open, Duration::from_secs(60), |open| !*open)
                .expect("gate");
        })
        .expect("cfg");
    }
    let open_gate = || {
        let (open, opened) = &*gate;
        *open.lock().expect("gate") = true;
        opened.notify_all();
    };
    let options = Options {
        // The smallest memtable, and writers wait as soon as one full memtable waits for its
        // flush: nothing but background flushes lets the writes below go through.
        memtable_bytes: 64 * 1024,
        immutable_memtables_max: 1,
        compaction: strata_lsm::CompactionOptions {
            l0_trigger: 2,
            l0_slowdown_trigger: 40,
            l0_stop_trigger: 40,
            ..strata_lsm::CompactionOptions::default()
        },
        ..Options::default()
    };
    let db = Db::open(dir.path(), options).expect("open");
    for i in 0..2u8 {
        db.put(&[i], b"v", WriteOptions::default()).expect("put");
        db.flush().expect("flush");
    }
    // Level 0 is at its trigger: the compaction starts and stops at the failpoint.
    assert!(
        within_bound(|| entered.load(Ordering::SeqCst)),
        "no compaction started"
    );
    // About 10 memtables' worth, in 4 KiB values.
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || -> strata_lsm::Result<()> {
            for i in 0..160u32 {
                db.put(&i.to_be_bytes(), &[7; 4096], WriteOptions::default())?;
            }
            Ok(())
        })
    };
    let finished = within_bound(|| writer.is_finished());
    let level_0 = db.stats().levels[0].tables;
    open_gate();
    assert!(
        finished,
        "the writes waited for flushes held back by a compaction ({level_0} tables in level 0)"
    );
    writer.join().expect("writer").expect("the writes");
    assert!(
        level_0 >= 8,
        "the flushes ran while the compaction waited: {level_0} tables in level 0"
    );
    db.wait_for_background().expect("background work");
    for i in 0..160u32 {
        assert_eq!(db.get(&i.to_be_bytes()).expect("get"), Some(vec![7; 4096]));
    }
    drop(db);
    drop(scenario);
}

#[test]
fn an_ingest_whose_manifest_fsync_fails_leaves_a_store_that_opens() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let source = Db::open(&dir.path().join("source"), Options::default()).expect("open");
    for i in 0..10u8 {
        source
            .put(&[i], b"ingested", WriteOptions::default())
            .expect("put");
    }
    source.flush().expect("flush");
    let files: Vec<_> = source.live_files().into_iter().map(|f| f.path).collect();
    let db = Db::open(&dir.path().join("db"), Options::default()).expect("open");
    fail::cfg(strata_wal::FP_FSYNC, "return").expect("cfg");
    assert!(db.ingest(0, &files).is_err());
    fail::remove(strata_wal::FP_FSYNC);
    assert!(
        db.put(b"x", b"y", WriteOptions::default()).is_err(),
        "read-only after the failure"
    );
    drop(db);
    // The edit reached the log before its fsync failed: its tables must still be there.
    let db = Db::open(&dir.path().join("db"), Options::default()).expect("reopen");
    assert_eq!(db.get(&[3]).expect("get"), Some(b"ingested".to_vec()));
    drop(db);
    drop(scenario);
}

#[test]
fn a_failed_table_fsync_fails_the_flush_and_makes_the_store_read_only() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), Options::default()).expect("open");
    db.put(b"k", b"v", WriteOptions::default()).expect("put");
    // The new table's fsync fails as the flush finishes it (nothing here syncs the WAL).
    fail::cfg(strata_fs::failpoint::FSYNC, "return").expect("cfg");
    let err = db.flush().expect_err("the flush fails");
    fail::remove(strata_fs::failpoint::FSYNC);
    // The flush thread may have taken the memtable first: then the error is its cause.
    let message = strata_fs::display_chain(&err);
    assert!(
        message.contains("fsync") && message.contains(".sst"),
        "{message}"
    );
    assert!(
        db.put(b"x", b"y", WriteOptions::default()).is_err(),
        "read-only after the failure"
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

#[test]
fn a_failed_checkpoint_link_fails_the_checkpoint_only() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&dir.path().join("db"), Options::default()).expect("open");
    db.put(b"k", b"v", WriteOptions::default()).expect("put");
    fail::cfg(strata_fs::failpoint::LINK, "return").expect("cfg");
    let err = db
        .checkpoint(&dir.path().join("copy"))
        .expect_err("the link fails");
    fail::remove(strata_fs::failpoint::LINK);
    assert!(
        strata_fs::display_chain(&err).contains("hard link"),
        "{err}"
    );
    // The store itself is untouched, and a later checkpoint works.
    db.put(b"k2", b"v2", WriteOptions::default())
        .expect("writes still work");
    db.checkpoint(&dir.path().join("copy2"))
        .expect("checkpoint");
    drop(db);
    let copy = Db::open(&dir.path().join("copy2"), Options::default()).expect("open the copy");
    assert_eq!(copy.get(b"k2").expect("get"), Some(b"v2".to_vec()));
    drop(scenario);
}
