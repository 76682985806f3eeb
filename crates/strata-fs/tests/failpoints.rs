//! Fails every step of a replace, in process and by killing a child process, and checks that the
//! complete old or the complete new file survives under the target name, never a mix or nothing.
//!
//! Every test here holds a `fail::FailScenario`, which serialises them: failpoints are global.

use std::path::Path;
use std::process::Command;

use fail::FailScenario;
use strata_fs::{
    Error, RecoveredSwap, Step, SwapFile, SwapOptions, SwapStrategy, atomic_replace, failpoint,
    recover_swap,
};

const OLD: &[u8] = b"old line 1\nold line 2\nold line 3\n";
const NEW: &[u8] = b"new compacted line\n";

/// The strategies that work on this platform: both on Unix (so the Windows path is tested on
/// Linux too), only the Windows one on Windows.
const STRATEGIES: &[SwapStrategy] = if cfg!(unix) {
    &[SwapStrategy::RenameOver, SwapStrategy::CloseAndRename]
} else {
    &[SwapStrategy::CloseAndRename]
};

/// The failpoints of a replace, and whether the new file is in place when each one fails.
const REPLACE_STEPS: [(&str, bool); 5] = [
    (failpoint::TEMP_WRITE, false),
    (failpoint::TEMP_FSYNC, false),
    (failpoint::RENAME, false),
    (failpoint::DIR_FSYNC, true),
    (failpoint::REOPEN, true),
];

fn options(strategy: SwapStrategy) -> SwapOptions {
    SwapOptions {
        temp_suffix: ".compact".to_owned(),
        strategy,
        ..SwapOptions::default()
    }
}

fn open_with_old(path: &Path, strategy: SwapStrategy) -> SwapFile {
    let mut file = SwapFile::open(path, options(strategy)).expect("open");
    file.append(OLD).expect("append");
    file.sync().expect("sync");
    file
}

#[test]
fn a_failed_replace_leaves_old_or_new_and_a_usable_handle() {
    for &strategy in STRATEGIES {
        for (point, new_in_place) in REPLACE_STEPS {
            if point == failpoint::REOPEN && strategy == SwapStrategy::RenameOver {
                continue; // RenameOver never reopens.
            }
            let scenario = FailScenario::setup();
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("snapshot");
            let mut file = open_with_old(&path, strategy);
            let generation = file.generation();

            fail::cfg(point, "return").expect("cfg");
            let err = file
                .replace(|w| w.write_all(NEW))
                .expect_err("replace must fail at the failpoint");
            fail::remove(point);
            assert!(
                matches!(err, Error::Io { .. }),
                "{strategy:?} {point}: unexpected error {err}"
            );

            let expected = if new_in_place { NEW } else { OLD };
            let on_disk = std::fs::read(&path).expect("read");
            assert_eq!(
                on_disk, expected,
                "{strategy:?} {point}: target is not whole"
            );
            assert_eq!(
                file.generation() != generation,
                new_in_place,
                "{strategy:?} {point}: generation does not say which file is in place"
            );

            // The handle still appends to the file under the target name.
            file.append(b"after\n")
                .expect("append after a failed replace");
            file.sync().expect("sync after a failed replace");
            let mut want = expected.to_vec();
            want.extend_from_slice(b"after\n");
            assert_eq!(
                std::fs::read(&path).expect("read"),
                want,
                "{strategy:?} {point}"
            );

            // Reopening (which runs recovery) finds the same whole file and no leftover temp.
            drop(file);
            let reopened = SwapFile::open(&path, options(strategy)).expect("reopen");
            assert_eq!(std::fs::read(&path).expect("read"), want);
            assert!(
                !reopened.temp_path().exists(),
                "stale temp file left behind"
            );
            drop(scenario);
        }
    }
}

#[test]
fn atomic_replace_failing_at_any_step_leaves_old_or_new() {
    for (point, new_in_place) in REPLACE_STEPS {
        if point == failpoint::REOPEN {
            continue;
        }
        let scenario = FailScenario::setup();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("MANIFEST");
        atomic_replace(&path, OLD).expect("first replace");
        fail::cfg(point, "return").expect("cfg");
        let err = atomic_replace(&path, NEW).expect_err("must fail");
        fail::remove(point);
        let expected_step = match point {
            p if p == failpoint::TEMP_WRITE => Step::Write,
            p if p == failpoint::TEMP_FSYNC => Step::Fsync,
            p if p == failpoint::RENAME => Step::Rename,
            _ => Step::SyncDir,
        };
        assert_eq!(err.step(), Some(expected_step), "{point}: {err}");
        let expected = if new_in_place { NEW } else { OLD };
        assert_eq!(std::fs::read(&path).expect("read"), expected, "{point}");
        drop(scenario);
    }
}

#[test]
fn a_failed_fsync_poisons_until_the_file_is_rewritten() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    let mut file = open_with_old(&path, SwapStrategy::platform_default());
    file.append(b"maybe lost\n").expect("append");
    fail::cfg(failpoint::APPEND_FSYNC, "1*return->off").expect("cfg");
    assert!(matches!(
        file.sync(),
        Err(Error::Io {
            step: Step::Fsync,
            ..
        })
    ));
    // The failpoint is off now, but a retried fsync must not report success.
    assert!(matches!(file.sync(), Err(Error::Poisoned { .. })));
    assert!(matches!(file.append(b"x\n"), Err(Error::Poisoned { .. })));
    assert!(file.is_poisoned());

    file.replace(|w| w.write_all(NEW)).expect("rewrite heals");
    assert!(!file.is_poisoned());
    file.append(b"y\n").expect("append after heal");
    file.sync().expect("sync after heal");
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"new compacted line\ny\n"
    );
    drop(scenario);
}

#[test]
fn a_failed_append_is_reported_with_its_step() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("log");
    let mut file = open_with_old(&path, SwapStrategy::platform_default());
    fail::cfg(failpoint::APPEND_WRITE, "return").expect("cfg");
    let err = file.append(b"z\n").expect_err("must fail");
    assert_eq!(err.step(), Some(Step::Write));
    fail::remove(failpoint::APPEND_WRITE);
    file.append(b"z\n").expect("append works again");
    drop(scenario);
}

#[test]
fn recovery_promotes_a_complete_temp_when_the_target_is_gone() {
    // Serf deletes the snapshot before renaming the compacted file over it; a crash between the
    // two leaves only the (already synced) temporary file.
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    std::fs::write(dir.path().join("snapshot.compact"), NEW).expect("write temp");
    assert_eq!(
        recover_swap(&path, ".compact").expect("recover"),
        RecoveredSwap::PromotedTemp
    );
    assert_eq!(std::fs::read(&path).expect("read"), NEW);
    assert_eq!(
        recover_swap(&path, ".compact").expect("recover"),
        RecoveredSwap::Clean
    );

    std::fs::write(dir.path().join("snapshot.compact"), b"half a compac").expect("write");
    assert_eq!(
        recover_swap(&path, ".compact").expect("recover"),
        RecoveredSwap::RemovedStaleTemp
    );
    assert_eq!(std::fs::read(&path).expect("read"), NEW);
    drop(scenario);
}

#[test]
fn a_failed_directory_fsync_keeps_sync_failing_until_it_succeeds() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let mut file = open_with_old(&path, SwapStrategy::platform_default());
    fail::cfg(failpoint::DIR_FSYNC, "return").expect("cfg");
    let err = file
        .replace(|w| w.write_all(NEW))
        .expect_err("dir fsync fails");
    assert_eq!(err.step(), Some(Step::SyncDir));
    file.append(b"more\n").expect("append");
    // The new file's name is not durable: a sync must not claim otherwise.
    let err = file
        .sync()
        .expect_err("sync must fail while the directory fsync does");
    assert_eq!(err.step(), Some(Step::SyncDir));
    fail::remove(failpoint::DIR_FSYNC);
    file.sync().expect("sync retries the directory fsync");
    file.sync().expect("and then only syncs data");
    drop(scenario);
}

/// The environment variable that turns this test binary into the crashing child.
const CHILD_ENV: &str = "STRATA_FS_CRASH_CHILD";

/// In the child: open the file named by `CHILD_ENV` and replace it; the failpoint configured
/// through `FAILPOINTS` aborts the process part-way. In the parent (no `CHILD_ENV`): do nothing.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let strategy = match std::env::var("STRATA_FS_STRATEGY").as_deref() {
        Ok("close") => SwapStrategy::CloseAndRename,
        _ => SwapStrategy::RenameOver,
    };
    let scenario = FailScenario::setup();
    let mut file = SwapFile::open(Path::new(&path), options(strategy)).expect("child open");
    let _ = file.replace(|w| w.write_all(NEW));
    drop(scenario);
    // Reaching here means the failpoint did not kill us.
    std::process::exit(3);
}

#[test]
fn killed_at_any_step_of_a_replace_the_old_or_new_file_survives_whole() {
    let scenario = FailScenario::setup();
    let exe = std::env::current_exe().expect("current_exe");
    for &strategy in STRATEGIES {
        let name = match strategy {
            SwapStrategy::CloseAndRename => "close",
            _ => "rename",
        };
        for (point, new_in_place) in REPLACE_STEPS {
            if point == failpoint::REOPEN && strategy == SwapStrategy::RenameOver {
                continue;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("snapshot");
            drop(open_with_old(&path, strategy));

            let status = Command::new(&exe)
                .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
                .env(CHILD_ENV, &path)
                .env("STRATA_FS_STRATEGY", name)
                .env("FAILPOINTS", format!("{point}=return(abort)"))
                .status()
                .expect("spawn child");
            assert!(
                failpoint::exited_by_abort(&status),
                "{name} {point}: the child was not killed at the failpoint ({status})"
            );

            // What a restart sees: recovery, then the file.
            let recovered = SwapFile::open(&path, options(strategy)).expect("recover");
            let on_disk = std::fs::read(&path).expect("read");
            let expected = if new_in_place { NEW } else { OLD };
            assert_eq!(on_disk, expected, "{name} {point}: survivor is not whole");
            assert!(!recovered.temp_path().exists(), "{name} {point}: temp left");
        }
    }
    drop(scenario);
}
