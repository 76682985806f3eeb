//! A full disk is not a failure of the store: a flush or compaction that finds no room removes
//! its partial table and is tried again, the store stays writable (until its memtables are
//! full), and nothing written is lost. Every test holds a `fail::FailScenario`; the failpoints
//! fail with `ErrorKind::StorageFull`, as `ENOSPC` does.

mod support;

use std::time::{Duration, Instant};

use fail::FailScenario;
use strata_fs::failpoint;
use strata_lsm::{Db, Error, Options, WriteOptions};

/// How long a test waits for the background thread's next try (a second after the last).
const BOUND: Duration = Duration::from_secs(20);

/// Polls `wait_for_background` until the background thread has caught up (a full-disk
/// report clears once a later try succeeds).
fn caught_up(db: &Db) {
    let deadline = Instant::now() + BOUND;
    loop {
        match db.wait_for_background() {
            Ok(()) => return,
            Err(Error::NoSpace { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the background thread did not catch up: {e}"),
        }
    }
}

#[test]
fn a_flush_that_finds_the_disk_full_removes_its_table_and_leaves_the_store_writable() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), Options::default()).expect("open");
    db.put(b"k", b"v", WriteOptions::default()).expect("put");
    // The table's fsync is the flush's last step before the manifest names it.
    fail::cfg(failpoint::FSYNC, "1*return(nospace)->off").expect("cfg");
    // The flush switches the memtable out and flushes it, but the background thread, woken
    // by the switch, may take it first and meet the full disk itself: it then removes its
    // table too and tries again a second later, and the flush returns once that try wrote it.
    match db.flush() {
        Err(Error::NoSpace { path, .. }) => {
            assert!(!path.exists(), "the partial table {path:?} was left");
            // The flush thread may have written the memtable since, once the disk had room:
            // every table on disk is then a live one.
            assert_eq!(
                support::table_files(dir.path()).len(),
                db.live_files().len()
            );
        }
        Ok(_) => assert_eq!(
            db.stats().no_space_retries,
            1,
            "the flush succeeded, but nothing met the full disk"
        ),
        other => panic!("the flush reported {other:?}, not NoSpace"),
    }
    db.put(b"x", b"y", WriteOptions::default())
        .expect("the store stays writable");
    // Its table, and the first memtable's unless the background thread wrote it already.
    db.flush().expect("the flush once there is room");
    assert_eq!(
        support::table_files(dir.path()).len(),
        db.live_files().len()
    );
    assert_eq!(db.get(b"k").expect("get"), Some(b"v".to_vec()));
    assert_eq!(
        db.stats().compaction_no_space,
        None,
        "a flush without room is not a compaction held back"
    );
    drop(db);
    let db = Db::open(dir.path(), Options::default()).expect("reopen");
    assert_eq!(db.get(b"k").expect("get"), Some(b"v".to_vec()));
    assert_eq!(db.get(b"x").expect("get"), Some(b"y".to_vec()));
    drop(scenario);
}

#[test]
fn background_flushes_wait_for_room_and_lose_nothing() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        memtable_bytes: 64 << 10,
        ..Options::default()
    };
    let db = Db::open(dir.path(), options.clone()).expect("open");
    fail::cfg(failpoint::FSYNC, "return(nospace)").expect("cfg");
    // Enough for several memtables: the writer waits once the full ones fill every slot.
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for i in 0..512u32 {
                db.put(&i.to_be_bytes(), &[7; 1024], WriteOptions::default())?;
            }
            Ok::<(), Error>(())
        })
    };
    let deadline = Instant::now() + BOUND;
    while db.stats().no_space_retries < 2 {
        assert!(
            Instant::now() < deadline,
            "no flush tried twice on the full disk"
        );
        assert!(
            !writer.is_finished() || db.stats().no_space_retries > 0,
            "the writes finished before any flush was tried"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        support::table_files(dir.path()).len(),
        0,
        "a failed flush left its table"
    );
    assert!(matches!(
        db.wait_for_background(),
        Err(Error::NoSpace { .. })
    ));
    fail::remove(failpoint::FSYNC);
    writer
        .join()
        .expect("writer")
        .expect("every write goes through once there is room");
    caught_up(&db);
    db.flush().expect("flush");
    assert_eq!(
        support::table_files(dir.path()).len(),
        db.live_files().len()
    );
    drop(db);
    let db = Db::open(dir.path(), options).expect("reopen");
    for i in 0..512u32 {
        assert_eq!(
            db.get(&i.to_be_bytes()).expect("get"),
            Some(vec![7; 1024]),
            "key {i}"
        );
    }
    drop(scenario);
}

#[test]
fn a_compaction_without_room_is_put_off_and_runs_once_there_is_room() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        compaction: strata_lsm::CompactionOptions {
            l0_trigger: 2,
            ..strata_lsm::CompactionOptions::default()
        },
        ..Options::default()
    };
    fail::cfg(strata_lsm::FP_COMPACTION, "return(nospace)").expect("cfg");
    let db = Db::open(dir.path(), options).expect("open");
    for i in 0..2u8 {
        db.put(&[i], b"v", WriteOptions::default()).expect("put");
        db.flush().expect("flush");
    }
    let deadline = Instant::now() + BOUND;
    while db.stats().no_space_retries == 0 {
        assert!(Instant::now() < deadline, "the compaction was never tried");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(
        db.wait_for_background(),
        Err(Error::NoSpace { .. })
    ));
    let held_back = db.stats().compaction_no_space;
    assert!(
        held_back.as_deref().is_some_and(|cause| !cause.is_empty()),
        "{held_back:?}"
    );
    assert_eq!(
        db.stats().compaction_no_space_needs,
        None,
        "a compaction whose write failed waits for no particular room"
    );
    db.put(&[2], b"v", WriteOptions::default())
        .expect("the store stays writable");
    // A flush that succeeds does not clear it: the compaction is still held back.
    db.flush().expect("a flush with room");
    assert!(db.stats().compaction_no_space.is_some());
    assert_eq!(db.stats().levels[0].tables, 3);
    fail::remove(strata_lsm::FP_COMPACTION);
    caught_up(&db);
    assert_eq!(db.stats().levels[0].tables, 0, "the compaction ran");
    // Cleared by the background thread right after the compaction it ran.
    let deadline = Instant::now() + BOUND;
    while let Some(cause) = db.stats().compaction_no_space {
        assert!(Instant::now() < deadline, "still held back: {cause}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(db.stats().compaction_no_space_needs, None);
    for i in 0..3u8 {
        assert_eq!(db.get(&[i]).expect("get"), Some(b"v".to_vec()));
    }
    drop(scenario);
}
