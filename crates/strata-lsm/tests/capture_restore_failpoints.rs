//! A restore failing, or the process dying, at each durable step it takes, and a capture of
//! memtables whose flush is held up.
//!
//! Each step is failed at each of its hits in turn: `N*off->1*return->off` fails only the hit
//! after the first N, and the loop ends at the first N for which the restore goes through (the
//! step has only N hits). After every failure the store reads the whole old state or the whole
//! new one; a failure before the manifest record leaves it unchanged and writable; a reopen
//! finds the whole old or the whole new state with no stray table, and a retry restores. The
//! crash test does the same with `return(abort)` in a child process: the closest a test gets to
//! `kill -9` at an exact step.
//!
//! Every test holds a `fail::FailScenario`, which serialises them: failpoints are global.

use std::path::{Path, PathBuf};
use std::process::Command;

use fail::FailScenario;
use strata_fs::failpoint;
use strata_lsm::{CompactionOptions, Db, Options, WriteOptions};

mod support;

use support::{Model, contents, table_files};

/// Every durable step a restore may take: linking and syncing the tables, the directory fsync,
/// the manifest record (a `strata-wal` append), and, should the record make the manifest due
/// for a rewrite, the new generation's steps.
const STEPS: &[&str] = &[
    failpoint::LINK,
    failpoint::FSYNC,
    failpoint::DIR_FSYNC,
    strata_wal::FP_WRITE,
    strata_wal::FP_FSYNC,
    failpoint::RENAME,
    failpoint::TEMP_WRITE,
    failpoint::TEMP_FSYNC,
];

/// The steps every restore of [`case`] takes at least once.
const STEPS_ALWAYS_TAKEN: &[&str] = &[
    failpoint::LINK,
    failpoint::FSYNC,
    failpoint::DIR_FSYNC,
    strata_wal::FP_WRITE,
    strata_wal::FP_FSYNC,
];

/// No step is hit more often than this by one restore of [`case`]: a bound on the loop.
const HITS_MAX: usize = 40;

fn options() -> Options {
    Options {
        memtable_bytes: 64 * 1024,
        compaction: CompactionOptions {
            l0_trigger: 64,
            l0_slowdown_trigger: 64,
            l0_stop_trigger: 64,
            ..CompactionOptions::default()
        },
        ..Options::default()
    }
}

fn put(db: &Db, model: &mut Model, key: &[u8], value: &[u8]) {
    db.put(key, value, WriteOptions::default()).expect("put");
    model.insert(key.to_vec(), value.to_vec());
}

/// A written capture (tables on levels 0 and 1 and a memtable's) and the state it holds.
struct Case {
    root: tempfile::TempDir,
    snapshot: PathBuf,
    names: Vec<String>,
    new: Model,
}

fn case() -> Case {
    let root = tempfile::tempdir().expect("tempdir");
    let source = Db::open(&root.path().join("source"), options()).expect("open");
    let mut new = Model::new();
    for i in 0..20u8 {
        put(&source, &mut new, &[b'k', i], b"new-deep");
    }
    source.flush().expect("flush");
    source.compact().expect("compact");
    for i in 0..10u8 {
        put(&source, &mut new, &[b'k', i * 2], b"new-l0");
    }
    source.flush().expect("flush");
    put(&source, &mut new, b"only-new", b"memtable");
    source
        .delete(&[b'k', 1], WriteOptions::default())
        .expect("delete");
    new.remove(&[b'k', 1][..]);
    let snapshot = root.path().join("snapshot");
    std::fs::create_dir(&snapshot).expect("mkdir");
    let names = source
        .capture()
        .write_to(&snapshot, &[("raft.index", b"new")])
        .expect("write_to");
    Case {
        root,
        snapshot,
        names,
        new,
    }
}

/// A fresh target store at `dir` with an old state of its own: a table and a memtable, so
/// that WAL records must not come back after a restore. Returns its contents.
fn make_target(dir: &Path) -> (Db, Model) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).expect("remove the previous target");
    }
    let db = Db::open(dir, options()).expect("open");
    let mut old = Model::new();
    for i in 0..20u8 {
        put(&db, &mut old, &[b'k', i], b"old");
    }
    put(&db, &mut old, b"only-old", b"table");
    db.flush().expect("flush");
    put(&db, &mut old, b"only-old-memtable", b"wal");
    (db, old)
}

/// What a store's state is: the old one or the new one, whole (and its properties agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Old,
    New,
}

fn which(db: &Db, old: &Model, new: &Model, context: &str) -> Which {
    let now = contents(db);
    let properties = db.snapshot_properties();
    if now == *new {
        assert_eq!(
            properties.get("raft.index").map(Vec::as_slice),
            Some(&b"new"[..]),
            "{context}: the new state without its properties"
        );
        Which::New
    } else {
        assert!(now == *old, "{context}: neither the old nor the new state");
        assert!(
            properties.is_empty(),
            "{context}: the old state with new properties"
        );
        Which::Old
    }
}

#[test]
fn a_restore_failing_at_any_step_leaves_the_whole_old_or_the_whole_new_state() {
    let scenario = FailScenario::setup();
    let case = case();
    let dir = case.root.path().join("target");
    for &point in STEPS {
        let mut failures = 0;
        for skip in 0..=HITS_MAX {
            assert!(skip < HITS_MAX, "{point} hit more than {HITS_MAX} times");
            let context = format!("{point} failing after {skip} hits");
            let (db, old) = make_target(&dir);
            fail::cfg(point, &format!("{skip}*off->1*return->off")).expect("cfg");
            let restored = db.restore(&case.snapshot, &case.names);
            fail::remove(point);
            if restored.is_ok() {
                assert_eq!(which(&db, &old, &case.new, &context), Which::New);
                break;
            }
            failures += 1;
            let before_reopen = which(&db, &old, &case.new, &context);
            // Rewriting an old key with its own value changes no state; it tells whether the
            // store still takes writes.
            let writable = db
                .put(&[b'k', 0], &old[&[b'k', 0][..]], WriteOptions::default())
                .is_ok();
            if before_reopen == Which::New {
                assert!(
                    !writable,
                    "{context}: a failure after the swap is read-only"
                );
            }
            drop(db);
            let db = Db::open(&dir, options()).expect("reopen");
            let after_reopen = which(&db, &old, &case.new, &context);
            if writable {
                // Refused before the manifest record: nothing changed, on disk either.
                assert_eq!(after_reopen, Which::Old, "{context}");
            }
            assert_eq!(
                table_files(&dir).len(),
                db.live_files().len(),
                "{context}: a table is left behind"
            );
            if after_reopen == Which::Old {
                db.restore(&case.snapshot, &case.names)
                    .unwrap_or_else(|e| panic!("{context}: the retry fails: {e}"));
                assert_eq!(which(&db, &old, &case.new, &context), Which::New);
                assert_eq!(table_files(&dir).len(), db.live_files().len(), "{context}");
            }
        }
        if STEPS_ALWAYS_TAKEN.contains(&point) {
            assert!(failures > 0, "{point} was never hit: is it still a step?");
        }
    }
    drop(scenario);
}

const CHILD_ENV: &str = "STRATA_LSM_RESTORE_CHILD";

/// In the child: open the target, arm the failpoint (after the open, so that only the
/// restore's hits count) and restore. Exits 3 if the restore returned `Ok`, 4 on an error; the
/// failpoint aborts it part-way otherwise.
#[test]
fn restore_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let scenario = FailScenario::setup();
    let parts: Vec<&str> = spec.split('\n').collect();
    let [target, snapshot, point, skip, names] = parts[..] else {
        panic!("bad child spec {spec:?}");
    };
    let names: Vec<&str> = names.split(',').collect();
    let db = Db::open(Path::new(target), options()).expect("open");
    fail::cfg(point, &format!("{skip}*off->1*return(abort)")).expect("cfg");
    let code = match db.restore(Path::new(snapshot), &names) {
        Ok(_) => 3,
        Err(_) => 4,
    };
    drop(scenario);
    std::process::exit(code);
}

#[test]
fn a_restore_killed_at_any_step_reopens_to_the_whole_old_or_the_whole_new_state() {
    let scenario = FailScenario::setup();
    let exe = std::env::current_exe().expect("current_exe");
    let case = case();
    let dir = case.root.path().join("target");
    for &point in STEPS {
        let mut kills = 0;
        for skip in 0..=HITS_MAX {
            assert!(skip < HITS_MAX, "{point} hit more than {HITS_MAX} times");
            let context = format!("killed at {point} after {skip} hits");
            let (db, old) = make_target(&dir);
            drop(db);
            let spec = [
                dir.to_str().expect("utf-8"),
                case.snapshot.to_str().expect("utf-8"),
                point,
                &skip.to_string(),
                &case.names.join(","),
            ]
            .join("\n");
            let status = Command::new(&exe)
                .args([
                    "--exact",
                    "restore_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, spec)
                .status()
                .expect("spawn child");
            let db = Db::open(&dir, options()).expect("reopen");
            let after = which(&db, &old, &case.new, &context);
            assert_eq!(
                table_files(&dir).len(),
                db.live_files().len(),
                "{context}: a table is left behind"
            );
            if failpoint::exited_by_abort(&status) {
                kills += 1;
                continue;
            }
            assert_eq!(
                status.code(),
                Some(3),
                "{context}: the child failed otherwise"
            );
            assert_eq!(after, Which::New, "{context}: a restore that returned Ok");
            break;
        }
        if STEPS_ALWAYS_TAKEN.contains(&point) {
            assert!(kills > 0, "{point} was never hit: is it still a step?");
        }
    }
    drop(scenario);
}

#[test]
fn a_capture_holds_the_memtables_waiting_for_their_flush() {
    let scenario = FailScenario::setup();
    let root = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&root.path().join("source"), options()).expect("open");
    // The flush thread stops at its table's fsync: switched-out memtables wait, unflushed.
    fail::cfg(failpoint::FSYNC, "pause").expect("cfg");
    let mut model = Model::new();
    // About 1.6 memtables of 64 KiB: one switch, so one immutable memtable and the active one.
    for i in 0..100u8 {
        put(&db, &mut model, &[b'k', i], &[i; 1000]);
    }
    let capture = db.capture();
    let at_capture = model.clone();
    put(&db, &mut model, &[b'k', 0], b"after the capture");
    fail::cfg(failpoint::FSYNC, "off").expect("cfg");
    let snapshot = root.path().join("snapshot");
    std::fs::create_dir(&snapshot).expect("mkdir");
    let names = capture.write_to(&snapshot, &[]).expect("write_to");
    // No table yet at the capture: one table per memtable, and the flat file.
    assert_eq!(names.len(), 3, "{names:?}");
    let target = Db::open(&root.path().join("target"), options()).expect("open");
    target.restore(&snapshot, &names).expect("restore");
    assert!(contents(&target) == at_capture, "the restored state");
    assert!(contents(&db) == model, "the source");
    fail::remove(failpoint::FSYNC);
    drop(scenario);
}
