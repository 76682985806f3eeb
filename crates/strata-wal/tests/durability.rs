//! The three durability modes acknowledge at the promised point.

use std::time::{Duration, Instant};

use strata_wal::{Durability, Wal, WalOptions};

fn open(durability: Durability) -> (tempfile::TempDir, Wal) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        durability,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), options).expect("open");
    (dir, wal)
}

#[test]
fn sync_mode_acknowledges_durable_records() {
    let (_dir, wal) = open(Durability::Sync);
    let lsn = wal.append(b"x").expect("append");
    assert!(wal.durable_lsn() >= lsn);
    let m = wal.metrics();
    assert_eq!((m.records, m.syncs), (1, 1));
}

#[test]
fn no_sync_mode_acknowledges_before_fsync_and_sync_makes_it_durable() {
    let (_dir, wal) = open(Durability::NoSync);
    let lsn = wal.append(b"x").expect("append");
    assert!(wal.durable_lsn() < lsn);
    assert_eq!(wal.metrics().syncs, 0);
    wal.sync().expect("sync");
    assert!(wal.durable_lsn() >= lsn);
    assert_eq!(wal.metrics().syncs, 1);
}

#[test]
fn interval_mode_makes_records_durable_within_the_interval() {
    let interval = Duration::from_millis(20);
    let (_dir, wal) = open(Durability::Interval(interval));
    let lsn = wal.append(b"x").expect("append");
    // Wait for the condition, with a generous limit for a loaded machine.
    let start = Instant::now();
    while wal.durable_lsn() < lsn {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not durable after {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(wal.metrics().syncs >= 1);
}
