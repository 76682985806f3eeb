//! Fails each durable step of installing a received set and of adopting a local one, and checks
//! the store's invariants after each failure: `CURRENT` names a whole set, the old one until the
//! step that replaces `CURRENT` has renamed the new one in; nothing half-installed is visible
//! through the store; a retry, in the same store or in one reopened on the same directory (what
//! a restart after the error sees), installs the new set.
//!
//! Steps that share a failpoint (`fs::rename` is both the set's move and `CURRENT`'s replace)
//! are told apart by counting evaluations: `N*off->1*return->off` fails only the one after the
//! first N. Each failure is checked to name the step and the path the table expects, so a
//! change in the install sequence shows here rather than silently testing another step.
//!
//! Every test holds a `fail::FailScenario`, which serialises them: failpoints are global.

use std::path::{Path, PathBuf};

use fail::FailScenario;
use strata_fs::{Step, failpoint};
use strata_snapshot::{Ack, Error, Position, Receiver, Sender, SnapshotMeta, describe};

/// A snapshot set: its description and each file's bytes.
struct Set {
    meta: SnapshotMeta,
    files: Vec<(&'static str, Vec<u8>)>,
}

/// Writes `files` (name, length, seed) into `dir` and describes them as snapshot `id`.
fn make_set(dir: &Path, id: u64, last_index: u64, files: &[(&'static str, usize, u8)]) -> Set {
    let files: Vec<(&'static str, Vec<u8>)> = files
        .iter()
        .map(|&(name, len, seed)| {
            let bytes = (0..len)
                .map(|i| (i as u8).wrapping_mul(seed) ^ seed)
                .collect();
            (name, bytes)
        })
        .collect();
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).expect("write a set's file");
    }
    let names: Vec<&str> = files.iter().map(|(name, _)| *name).collect();
    let meta = describe(dir, id, last_index, 1, &names).expect("describe");
    Set { meta, files }
}

/// The set current before each failure: snapshot 1, covering the log up to 10.
fn old_set(dir: &Path) -> Set {
    make_set(dir, 1, 10, &[("a.sst", 3000, 3), ("b.sst", 700, 5)])
}

/// The set whose install fails: snapshot 2, covering the log up to 20. It has a file of the
/// old set's name with other bytes, so a mix of the two sets would show.
fn new_set(dir: &Path) -> Set {
    make_set(dir, 2, 20, &[("a.sst", 2500, 7), ("c.sst", 1200, 11)])
}

/// Sends `set` (whose files are in `source`) to `receiver` from `at` until it is installed.
/// Returns how many chunks it took: 1 if the set was installed already.
fn transfer(
    receiver: &mut Receiver,
    source: &Path,
    set: &Set,
    mut at: Position,
) -> strata_snapshot::Result<usize> {
    let sender = Sender::new(source, set.meta.clone(), 1024);
    let mut sent = 0;
    loop {
        let chunk = sender
            .chunk(at)?
            .expect("a chunk until the set is installed");
        sent += 1;
        match receiver.receive(&set.meta, &chunk)? {
            Ack::Accepted { next } | Ack::Duplicate { next } | Ack::Gap { need: next } => {
                at = next;
            }
            Ack::Complete => return Ok(sent),
        }
    }
}

/// Writes `set`'s files into a fresh [`Receiver::local_dir`], as a node taking a snapshot does.
fn write_local(store: &mut Receiver, set: &Set) -> strata_snapshot::Result<()> {
    let local = store.local_dir()?;
    for (name, bytes) in &set.files {
        std::fs::write(local.join(name), bytes).expect("write a local file");
    }
    Ok(())
}

/// Writes `set`'s files into a fresh [`Receiver::local_dir`] and adopts them.
fn adopt(store: &mut Receiver, set: &Set) -> strata_snapshot::Result<bool> {
    write_local(store, set)?;
    store.adopt(&set.meta)
}

/// Asserts that the store's current set is `set`, whole: its metadata, and every file
/// byte-for-byte.
fn assert_current(store: &Receiver, set: &Set, context: &str) {
    let (meta, dir) = store
        .installed()
        .unwrap_or_else(|e| panic!("{context}: the store cannot say what is installed: {e}"))
        .unwrap_or_else(|| panic!("{context}: no set is installed"));
    assert_eq!(meta, set.meta, "{context}: another set is current");
    for (name, bytes) in &set.files {
        let on_disk = std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{context}: {name} of the current set: {e}"));
        assert!(on_disk == *bytes, "{context}: {name} is not whole");
    }
}

/// Which set is current at some moment of a failure case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Current {
    Old,
    New,
}

/// One failure: the `skip + 1`th evaluation of `point` fails, with an error of `step` on
/// `path` (relative to the store's root; `None` for a staged file, which of the background
/// fsyncs runs first is up to the scheduler). `after` is the set current once the call
/// failed, `reopened` the one a store reopened on the directory reports.
struct Failure {
    point: &'static str,
    skip: usize,
    step: Step,
    path: Option<&'static str>,
    after: Current,
    reopened: Current,
}

const fn fail(
    point: &'static str,
    skip: usize,
    step: Step,
    path: Option<&'static str>,
    after: Current,
    reopened: Current,
) -> Failure {
    Failure {
        point,
        skip,
        step,
        path,
        after,
        reopened,
    }
}

/// The durable steps of installing a received set, in order, after its chunks were written:
/// the staged files' background fsyncs, the staging directory's fsync, the move of the set to
/// `snapshots/2` and the fsyncs of the directories involved, and `CURRENT`'s replace.
///
/// A reopened store finds the staged set whole while it is still staged, and installs it.
#[rustfmt::skip]
const INSTALL_STEPS: [Failure; 10] = {
    use Current::{New, Old};
    use failpoint::{DIR_FSYNC, FSYNC, RENAME, TEMP_FSYNC, TEMP_WRITE};
    [
        fail(FSYNC,      0, Step::Fsync,   None,                Old, New),
        fail(FSYNC,      1, Step::Fsync,   None,                Old, New),
        fail(DIR_FSYNC,  0, Step::SyncDir, Some("staging"),     Old, New),
        fail(RENAME,     0, Step::Rename,  Some("snapshots/2"), Old, New),
        fail(DIR_FSYNC,  1, Step::SyncDir, Some("snapshots"),   Old, Old),
        fail(DIR_FSYNC,  2, Step::SyncDir, Some(""),            Old, Old),
        fail(TEMP_WRITE, 0, Step::Write,   Some("CURRENT.tmp"), Old, Old),
        fail(TEMP_FSYNC, 0, Step::Fsync,   Some("CURRENT.tmp"), Old, Old),
        fail(RENAME,     1, Step::Rename,  Some("CURRENT"),     Old, Old),
        // CURRENT is renamed over; only the fsync that makes the rename durable failed.
        fail(DIR_FSYNC,  3, Step::SyncDir, Some(""),            New, New),
    ]
};

/// The durable steps of adopting a local set, in order: each file's fsync, the replace of its
/// `meta`, the move of the set to `snapshots/2` and the fsyncs of the directories involved,
/// and `CURRENT`'s replace. A reopened store leaves `local/` alone.
#[rustfmt::skip]
const ADOPT_STEPS: [Failure; 13] = {
    use Current::{New, Old};
    use failpoint::{DIR_FSYNC, FSYNC, RENAME, TEMP_FSYNC, TEMP_WRITE};
    [
        fail(FSYNC,      0, Step::Fsync,   Some("local/a.sst"),    Old, Old),
        fail(FSYNC,      1, Step::Fsync,   Some("local/c.sst"),    Old, Old),
        fail(TEMP_WRITE, 0, Step::Write,   Some("local/meta.tmp"), Old, Old),
        fail(TEMP_FSYNC, 0, Step::Fsync,   Some("local/meta.tmp"), Old, Old),
        fail(RENAME,     0, Step::Rename,  Some("local/meta"),     Old, Old),
        fail(DIR_FSYNC,  0, Step::SyncDir, Some("local"),          Old, Old),
        fail(RENAME,     1, Step::Rename,  Some("snapshots/2"),    Old, Old),
        fail(DIR_FSYNC,  1, Step::SyncDir, Some("snapshots"),      Old, Old),
        fail(DIR_FSYNC,  2, Step::SyncDir, Some(""),               Old, Old),
        fail(TEMP_WRITE, 1, Step::Write,   Some("CURRENT.tmp"),    Old, Old),
        fail(TEMP_FSYNC, 1, Step::Fsync,   Some("CURRENT.tmp"),    Old, Old),
        fail(RENAME,     2, Step::Rename,  Some("CURRENT"),        Old, Old),
        // CURRENT is renamed over; only the fsync that makes the rename durable failed.
        fail(DIR_FSYNC,  3, Step::SyncDir, Some(""),               New, New),
    ]
};

/// A store's root with the old set installed (received), and the sources of both sets.
struct Fixture {
    root: tempfile::TempDir,
    /// Kept for the fixture's life: the old set was sent from it.
    _old_source: tempfile::TempDir,
    new_source: tempfile::TempDir,
    old: Set,
    new: Set,
}

impl Fixture {
    fn new() -> (Fixture, Receiver) {
        let root = tempfile::tempdir().expect("tempdir");
        let old_source = tempfile::tempdir().expect("tempdir");
        let new_source = tempfile::tempdir().expect("tempdir");
        let old = old_set(old_source.path());
        let new = new_set(new_source.path());
        let mut store = Receiver::open(root.path()).expect("open");
        transfer(
            &mut store,
            old_source.path(),
            &old,
            Position { file: 0, offset: 0 },
        )
        .expect("install the old set");
        assert_current(&store, &old, "before the failure");
        let fixture = Fixture {
            root,
            _old_source: old_source,
            new_source,
            old,
            new,
        };
        (fixture, store)
    }

    fn set(&self, which: Current) -> &Set {
        match which {
            Current::Old => &self.old,
            Current::New => &self.new,
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        if relative.is_empty() {
            self.root.path().to_path_buf()
        } else {
            self.root.path().join(relative)
        }
    }

    /// Asserts that `result` failed at `failure`'s step and path.
    fn assert_failed_at<T: std::fmt::Debug>(
        &self,
        result: strata_snapshot::Result<T>,
        failure: &Failure,
        context: &str,
    ) {
        match result {
            Err(Error::Fs(strata_fs::Error::Io { step, path, .. })) => {
                assert_eq!(step, failure.step, "{context}: failed at another step");
                if let Some(expected) = failure.path {
                    assert_eq!(
                        path,
                        self.path(expected),
                        "{context}: failed on another path"
                    );
                }
            }
            other => panic!("{context}: expected a failure at the failpoint, got {other:?}"),
        }
    }
}

/// Fails `failure`'s evaluation of its failpoint during `run`, then lets every later one pass.
fn failing<T>(failure: &Failure, run: impl FnOnce() -> T) -> T {
    let actions = format!("{}*off->1*return->off", failure.skip);
    fail::cfg(failure.point, &actions).expect("configure the failpoint");
    let result = run();
    fail::remove(failure.point);
    result
}

fn context(operation: &str, failure: &Failure) -> String {
    format!(
        "{operation} failing at evaluation {} of {}",
        failure.skip + 1,
        failure.point
    )
}

/// Receives the new set into a store holding the old one, failing as `failure` says, and checks
/// the failure named its step. Returns the fixture, the store, the case's name for messages and
/// the position the transfer began at.
fn failed_install(failure: &Failure) -> (Fixture, Receiver, String, Position) {
    let context = context("install", failure);
    let (f, mut store) = Fixture::new();
    let at = store.begin(&f.new.meta).expect("begin");
    let result = failing(failure, || {
        transfer(&mut store, f.new_source.path(), &f.new, at)
    });
    f.assert_failed_at(result, failure, &context);
    (f, store, context, at)
}

/// Adopts the new set (written into the local directory) into a store holding the old one,
/// failing as `failure` says, and checks the failure named its step.
fn failed_adopt(failure: &Failure) -> (Fixture, Receiver, String) {
    let context = context("adopt", failure);
    let (f, mut store) = Fixture::new();
    write_local(&mut store, &f.new).expect("local");
    let result = failing(failure, || store.adopt(&f.new.meta));
    f.assert_failed_at(result, failure, &context);
    (f, store, context)
}

/// After a failed install the old set is current, whole, until the replace of `CURRENT` has
/// renamed the new one in; the store does not take the new set for installed before then
/// (it wants every chunk again), and receiving it again installs it.
#[test]
fn a_failed_install_leaves_the_old_set_current() {
    for failure in &INSTALL_STEPS {
        let scenario = FailScenario::setup();
        let (f, mut store, context, at) = failed_install(failure);
        assert_current(&store, f.set(failure.after), &context);

        // Receiving again (the sender resends from where the store says) installs it.
        let sent = transfer(&mut store, f.new_source.path(), &f.new, at).expect("retry");
        assert_eq!(
            sent == 1,
            failure.after == Current::New,
            "{context}: {sent} chunks to receive it again"
        );
        assert_current(&store, &f.new, &format!("{context}, then retried"));
        scenario.teardown();
    }
}

/// A receiver reopened after a failed install (what a restart finds) reports a whole set:
/// the new one if it was still staged (it is found complete and installed at open) or
/// `CURRENT` names it, the old one otherwise; receiving the new set again installs it.
#[test]
fn a_receiver_reopened_after_a_failed_install_reports_a_whole_set() {
    for failure in &INSTALL_STEPS {
        let scenario = FailScenario::setup();
        let (f, store, context, _) = failed_install(failure);

        // What a restart after the error finds: a whole set, and the new one once received.
        drop(store);
        let mut store = Receiver::open(f.root.path()).expect("reopen");
        assert_current(
            &store,
            f.set(failure.reopened),
            &format!("{context}, reopened"),
        );
        let start = Position { file: 0, offset: 0 };
        transfer(&mut store, f.new_source.path(), &f.new, start).expect("receive again");
        assert_current(&store, &f.new, &format!("{context}, reopened and received"));
        scenario.teardown();
    }
}

/// After a failed adopt the old set is current, whole, until the replace of `CURRENT` has
/// renamed the new one in; taking the snapshot again installs it.
#[test]
fn a_failed_adopt_leaves_the_old_set_current() {
    for failure in &ADOPT_STEPS {
        let scenario = FailScenario::setup();
        let (f, mut store, context) = failed_adopt(failure);
        assert_current(&store, f.set(failure.after), &context);

        // Taking the snapshot again (its files written anew) installs it, unless it is
        // current already.
        let adopted = adopt(&mut store, &f.new).expect("retry");
        assert_eq!(adopted, failure.after == Current::Old, "{context}: retried");
        assert_current(&store, &f.new, &format!("{context}, then retried"));
        scenario.teardown();
    }
}

/// A store reopened after a failed adopt reports a whole set (the old one until `CURRENT`
/// names the new one), and adopting the set again installs it.
#[test]
fn a_store_reopened_after_a_failed_adopt_reports_a_whole_set() {
    for failure in &ADOPT_STEPS {
        let scenario = FailScenario::setup();
        let (f, store, context) = failed_adopt(failure);

        drop(store);
        let mut store = Receiver::open(f.root.path()).expect("reopen");
        assert_current(
            &store,
            f.set(failure.reopened),
            &format!("{context}, reopened"),
        );
        adopt(&mut store, &f.new).expect("adopt again");
        assert_current(&store, &f.new, &format!("{context}, reopened and adopted"));
        scenario.teardown();
    }
}

/// Stages the first `chunks` chunks of `set` (from `source`) into a receiver at `root`, then drops
/// it: what a process killed mid-transfer leaves behind.
fn stage_part(root: &Path, source: &Path, set: &Set, chunks: usize) {
    let mut receiver = Receiver::open(root).expect("open");
    let sender = Sender::new(source, set.meta.clone(), 1024);
    let mut at = receiver.begin(&set.meta).expect("begin");
    for _ in 0..chunks {
        let chunk = sender.chunk(at).expect("chunk").expect("a chunk");
        match receiver.receive(&set.meta, &chunk).expect("receive") {
            Ack::Accepted { next } => at = next,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_resumed_transfer_fsyncs_the_files_it_found_complete() {
    let scenario = FailScenario::setup();
    let root = tempfile::tempdir().expect("tempdir");
    let source = tempfile::tempdir().expect("tempdir");
    let set = new_set(source.path());
    // a.sst (2,500 bytes) is complete after three 1 KiB chunks; c.sst is not begun.
    stage_part(root.path(), source.path(), &set, 3);

    // Whether the dead process's fsync of a.sst finished is unknown: the reopened receiver
    // must sync it before counting it as received, and fail if it cannot.
    fail::cfg(failpoint::FSYNC, "return").expect("cfg");
    let err = Receiver::open(root.path()).expect_err("the resync must fail at the failpoint");
    fail::remove(failpoint::FSYNC);
    assert!(
        matches!(&err, Error::Fs(strata_fs::Error::Io { step: Step::Fsync, path, .. })
            if path.ends_with("a.sst")),
        "{err:?}"
    );

    let mut receiver = Receiver::open(root.path()).expect("reopen");
    let at = Position { file: 1, offset: 0 };
    transfer(&mut receiver, source.path(), &set, at).expect("resume from c.sst");
    assert_current(&receiver, &set, "after the resumed transfer");
    drop(scenario);
}

#[test]
fn a_transfer_resumed_before_its_empty_files_were_created_creates_them() {
    let scenario = FailScenario::setup();
    let root = tempfile::tempdir().expect("tempdir");
    let source = tempfile::tempdir().expect("tempdir");
    let set = make_set(
        source.path(),
        3,
        30,
        &[("empty.log", 0, 1), ("a.sst", 1500, 3), ("none.log", 0, 2)],
    );
    stage_part(root.path(), source.path(), &set, 0);
    // A crash between writing the staged metadata and creating the empty first file.
    std::fs::remove_file(root.path().join("staging").join("empty.log")).expect("remove");

    let mut receiver = Receiver::open(root.path()).expect("reopen");
    let at = Position { file: 1, offset: 0 };
    transfer(&mut receiver, source.path(), &set, at).expect("resume at a.sst");
    assert_current(&receiver, &set, "after the resumed transfer");
    drop(scenario);
}

#[test]
fn a_newer_snapshot_reusing_the_installed_sets_id_is_refused_and_the_set_kept() {
    let scenario = FailScenario::setup();
    let root = tempfile::tempdir().expect("tempdir");
    let mut store = Receiver::open(root.path()).expect("open");
    let local = store.local_dir().expect("local");
    let old = old_set(&local);
    assert!(store.adopt(&old.meta).expect("adopt"));

    let local = store.local_dir().expect("local");
    let reused = make_set(&local, old.meta.id, 99, &[("z.sst", 100, 9)]);
    assert!(matches!(store.adopt(&reused.meta), Err(Error::Invalid(_))));
    assert_current(&store, &old, "after the refused adopt");
    let reopened = Receiver::open(root.path()).expect("reopen");
    assert_current(&reopened, &old, "reopened after the refused adopt");
    drop(scenario);
}
