//! Failure injection: a failed write or fsync poisons the log for every waiter. Every test
//! holds a `fail::FailScenario` (failpoints are process-global).

use std::sync::Arc;

use fail::FailScenario;
use strata_wal::{Durability, Error, FP_FSYNC, FP_WRITE, Wal, WalOptions};

fn options() -> WalOptions {
    WalOptions {
        segment_bytes_max: 1024,
        record_bytes_max: 64 * 1024,
        durability: Durability::Sync,
    }
}

#[test]
fn a_failed_fsync_poisons_the_log() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), options()).expect("open");
    wal.append(b"one").expect("append");
    fail::cfg(FP_FSYNC, "1*return->off").expect("cfg");
    assert!(matches!(wal.append(b"two"), Err(Error::Io { .. })));
    // The failpoint is off now, but nothing more is accepted: a retried fsync could report
    // success for data the kernel dropped.
    assert!(matches!(wal.append(b"three"), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), options()).expect("reopen recovers");
    assert!(wal.next_lsn() >= 2);
    drop(scenario);
}

#[test]
fn a_failed_write_poisons_the_log_for_every_waiter() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), options()).expect("open");
    fail::cfg(FP_WRITE, "return").expect("cfg");
    let wal = Arc::new(wal);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || wal.append(&[i; 10]))
        })
        .collect();
    for h in handles {
        assert!(h.join().expect("join").is_err());
    }
    fail::remove(FP_WRITE);
    assert!(matches!(wal.append(b"x"), Err(Error::Poisoned { .. })));
    drop(scenario);
}
