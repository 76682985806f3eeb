//! Failure injection: a process killed at every step of a compaction leaves a file that replays
//! to the same state; a failed write or fsync loses nothing once the file is rewritten.
//!
//! Every test holds a `fail::FailScenario`: failpoints are process-global.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fail::FailScenario;
use strata_clock::LamportClock;
use strata_fs::failpoint;
use strata_snaplog::{
    Event, LogOptions, Record, ReplayOptions, SnapshotLog, Snapshotter, SnapshotterConfig,
    UserEvent, replay_file,
};

/// A log with plenty of superseded lines and a `leave`, so compaction changes the bytes a lot
/// and the two `rejoin_after_leave` settings replay differently.
fn write_churn(path: &Path) {
    let (mut log, _) = SnapshotLog::open(
        path,
        LogOptions {
            compact_bytes_min: u64::MAX,
            ..LogOptions::default()
        },
    )
    .expect("open");
    for i in 0..400u64 {
        let name = format!("node-{}", i % 13);
        let addr = format!("10.0.0.{}:7946", i % 13);
        log.append(Record::Alive {
            name: &name,
            addr: &addr,
        })
        .expect("append");
        if i % 3 == 0 {
            log.append(Record::NotAlive { name: &name })
                .expect("append");
        }
        log.append(Record::Clock(i)).expect("append");
        if i == 300 {
            log.append(Record::Leave).expect("append");
        }
    }
    log.sync().expect("sync");
}

const CHILD_ENV: &str = "STRATA_SNAPLOG_CRASH_CHILD";

/// In the child: compact the file named by `CHILD_ENV`; `FAILPOINTS` aborts it part-way.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let scenario = FailScenario::setup();
    let (mut log, _) = SnapshotLog::open(Path::new(&path), LogOptions::default()).expect("open");
    let _ = log.compact();
    drop(scenario);
    std::process::exit(3);
}

#[test]
fn killed_at_any_step_of_compaction_the_file_replays_to_the_same_state() {
    let scenario = FailScenario::setup();
    let exe = std::env::current_exe().expect("current_exe");
    for point in [
        failpoint::TEMP_WRITE,
        failpoint::TEMP_FSYNC,
        failpoint::RENAME,
        failpoint::DIR_FSYNC,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snapshot");
        write_churn(&path);
        let before = replay_file(&path, &ReplayOptions::default()).expect("replay");
        let bytes_before = std::fs::read(&path).expect("read");

        let status = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env("FAILPOINTS", format!("{point}=return(abort)"))
            .status()
            .expect("spawn child");
        assert!(
            failpoint::exited_by_abort(&status),
            "{point}: child not killed ({status})"
        );

        // A restart: recovery, replay.
        let (log, report) = SnapshotLog::open(&path, LogOptions::default()).expect("reopen");
        assert!(report.replay.warnings.is_empty(), "{point}: a mixed file");
        assert_eq!(report.replay.torn_tail_bytes, 0, "{point}");
        for rejoin in [false, true] {
            assert_eq!(
                report.replay.state(rejoin),
                before.state(rejoin),
                "{point}: state changed (rejoin_after_leave = {rejoin})"
            );
        }
        let survived = std::fs::read(&path).expect("read");
        if point == failpoint::DIR_FSYNC {
            assert!(
                survived.len() < bytes_before.len(),
                "{point}: new file expected"
            );
        } else {
            assert_eq!(survived, bytes_before, "{point}: old file expected");
        }
        assert!(
            !dir.path().join("snapshot.compact").exists(),
            "{point}: temp left"
        );
        drop(log);
    }
    drop(scenario);
}

#[test]
fn a_failed_write_loses_nothing_once_the_file_is_rewritten() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let options = LogOptions {
        error_recovery_interval: Duration::ZERO,
        ..LogOptions::default()
    };
    let (mut log, _) = SnapshotLog::open(&path, options).expect("open");
    log.append(Record::Alive {
        name: "a",
        addr: "10.0.0.1:1",
    })
    .expect("append");
    log.sync().expect("sync");

    log.record(Record::Alive {
        name: "b",
        addr: "10.0.0.2:1",
    })
    .expect("record");
    fail::cfg(failpoint::APPEND_WRITE, "return").expect("cfg");
    assert!(log.flush().is_err());
    fail::remove(failpoint::APPEND_WRITE);
    assert!(log.needs_rewrite());

    // Recorded while broken: kept in memory, written by the rewrite.
    log.append(Record::Clock(7))
        .expect("append triggers the recovery compaction");
    assert!(!log.needs_rewrite());
    log.sync().expect("sync");
    let replay = replay_file(&path, &ReplayOptions::default()).expect("replay");
    assert_eq!(replay.state(false), log.state());
    assert_eq!(replay.state(false).alive.len(), 2);
    assert_eq!(replay.state(false).last_clock, 7);
    assert_eq!(log.stats().errors, 1);
    drop(scenario);
}

#[test]
fn a_failed_fsync_is_never_retried_into_a_false_success() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let options = LogOptions {
        error_recovery_interval: Duration::from_secs(3600),
        ..LogOptions::default()
    };
    let (mut log, _) = SnapshotLog::open(&path, options).expect("open");
    log.append(Record::Clock(1)).expect("append");
    fail::cfg(failpoint::APPEND_FSYNC, "1*return->off").expect("cfg");
    // The fsync fails; sync must not retry it (it could report success for lines the kernel
    // dropped) but rewrite the file whole, and only then report success.
    log.sync().expect("sync rewrites the file");
    assert!(!log.needs_rewrite());
    assert_eq!(log.stats().errors, 1);
    assert_eq!(log.stats().compactions, 1);
    let replay = replay_file(&path, &ReplayOptions::default()).expect("replay");
    assert_eq!(replay.state(false).last_clock, 1);
    drop(scenario);
}

#[test]
fn a_failed_compaction_keeps_appending_to_the_old_file_and_backs_off() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let options = LogOptions {
        compact_bytes_min: 0,
        error_recovery_interval: Duration::from_secs(3600),
        ..LogOptions::default()
    };
    let (mut log, _) = SnapshotLog::open(&path, options).expect("open");
    fail::cfg(failpoint::RENAME, "return").expect("cfg");
    assert!(log.append(Record::Clock(1)).is_err(), "compaction fails");
    // Backing off: no compaction is attempted, appends keep going to the old file.
    for t in 2..10 {
        log.append(Record::Clock(t))
            .expect("append while backing off");
    }
    fail::remove(failpoint::RENAME);
    log.sync().expect("sync");
    assert_eq!(log.stats().errors, 1);
    let replay = replay_file(&path, &ReplayOptions::default()).expect("replay");
    assert_eq!(replay.state(false).last_clock, 9);
    drop(scenario);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshotter_recovers_from_a_failed_flush_by_rewriting() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let config = SnapshotterConfig {
        log: LogOptions {
            error_recovery_interval: Duration::ZERO,
            ..LogOptions::default()
        },
        flush_interval: Duration::from_millis(1),
        ..SnapshotterConfig::default()
    };
    let clock = Arc::new(LamportClock::new());
    let (events, snapshotter) = Snapshotter::open(&path, config, clock, None)
        .await
        .expect("open");
    fail::cfg(failpoint::APPEND_WRITE, "1*return->off").expect("cfg");
    for t in 1..=50 {
        events
            .send(Event::User(UserEvent {
                ltime: t,
                name: "e".into(),
                payload: Vec::new(),
                coalesce: false,
            }))
            .await
            .expect("send");
    }
    let report = snapshotter.shutdown().await.expect("shutdown");
    let replay = replay_file(&path, &ReplayOptions::default()).expect("replay");
    assert_eq!(replay.state(false), report.state);
    assert_eq!(report.state.last_event_clock, 50);
    drop(scenario);
}
