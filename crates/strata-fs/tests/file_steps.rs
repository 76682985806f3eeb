//! The single durable steps (`sync_file`, `sync_file_data`, `rename_durable`, `hard_link`,
//! `truncate_synced`): each does its job, and each fails at its failpoint with the step named and
//! nothing changed on disk.
//!
//! Every test holds a `fail::FailScenario`, which serialises them: failpoints are global.

use std::fs::OpenOptions;
use std::io::Write;

use fail::FailScenario;
use strata_fs::{
    Error, IoError, Step, failpoint, hard_link, rename_durable, sync_file, sync_file_data,
    truncate_synced,
};

fn step_of(result: strata_fs::Result<()>) -> Step {
    match result {
        Err(Error::Io { step, .. }) => step,
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

#[test]
fn sync_file_and_sync_file_data_fail_at_the_fsync_failpoint() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("table");
    let mut file = std::fs::File::create(&path).expect("create");
    file.write_all(b"bytes").expect("write");
    sync_file(&file, &path).expect("sync_file");
    sync_file_data(&file, &path).expect("sync_file_data");

    fail::cfg(failpoint::FSYNC, "return").expect("cfg");
    assert_eq!(step_of(sync_file(&file, &path)), Step::Fsync);
    assert_eq!(step_of(sync_file_data(&file, &path)), Step::Fsync);
    fail::remove(failpoint::FSYNC);
    drop(scenario);
}

#[test]
fn rename_durable_moves_a_file_or_directory_and_a_failed_rename_changes_nothing() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let staged = dir.path().join("staged");
    std::fs::create_dir(&staged).expect("mkdir");
    std::fs::write(staged.join("a"), b"a").expect("write");
    let installed = dir.path().join("installed");

    fail::cfg(failpoint::RENAME, "return").expect("cfg");
    assert_eq!(step_of(rename_durable(&staged, &installed)), Step::Rename);
    fail::remove(failpoint::RENAME);
    assert!(staged.join("a").exists() && !installed.exists());

    // A failed directory fsync comes after the rename: the new name is there, not yet durable.
    fail::cfg(failpoint::DIR_FSYNC, "return").expect("cfg");
    assert_eq!(step_of(rename_durable(&staged, &installed)), Step::SyncDir);
    fail::remove(failpoint::DIR_FSYNC);
    assert!(installed.join("a").exists() && !staged.exists());

    // Across directories, and over an existing file.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("b"), b"old").expect("write");
    rename_durable(&installed.join("a"), &other.join("b")).expect("rename over");
    assert_eq!(std::fs::read(other.join("b")).expect("read"), b"a");
    assert!(!installed.join("a").exists());
    drop(scenario);
}

#[test]
fn hard_link_shares_the_file_and_fails_at_its_failpoint_or_on_an_existing_name() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let original = dir.path().join("000001.sst");
    std::fs::write(&original, b"table").expect("write");
    let link = dir.path().join("checkpoint-000001.sst");

    fail::cfg(failpoint::LINK, "return").expect("cfg");
    assert_eq!(step_of(hard_link(&original, &link)), Step::Link);
    fail::remove(failpoint::LINK);
    assert!(!link.exists());

    hard_link(&original, &link).expect("link");
    assert_eq!(std::fs::read(&link).expect("read"), b"table");
    assert_eq!(step_of(hard_link(&original, &link)), Step::Link);
    drop(scenario);
}

#[test]
fn truncate_synced_cuts_the_file_and_a_failed_truncate_leaves_its_length() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("segment");
    std::fs::write(&path, b"0123456789").expect("write");
    let file = OpenOptions::new().write(true).open(&path).expect("open");

    fail::cfg(failpoint::TRUNCATE, "return").expect("cfg");
    assert_eq!(step_of(truncate_synced(&file, &path, 4)), Step::Truncate);
    fail::remove(failpoint::TRUNCATE);
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 10);

    // The cut happens, then the fsync that makes it durable fails.
    fail::cfg(failpoint::FSYNC, "return").expect("cfg");
    assert_eq!(step_of(truncate_synced(&file, &path, 6)), Step::Fsync);
    fail::remove(failpoint::FSYNC);

    truncate_synced(&file, &path, 4).expect("truncate");
    assert_eq!(std::fs::read(&path).expect("read"), b"0123");
    drop(scenario);
}

#[test]
fn io_error_names_the_operation_the_path_and_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let err = std::fs::read(&missing)
        .map_err(IoError::with("read", &missing))
        .expect_err("a missing file");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(err.to_string(), format!("read {}", missing.display()));
    assert_eq!(
        strata_fs::display_chain(&err),
        format!("read {}: {}", missing.display(), err.source)
    );
}
