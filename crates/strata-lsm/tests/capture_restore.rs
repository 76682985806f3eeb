//! Captures and restores, the LSM's Raft snapshots: a capture written out after any later
//! writes, flushes and compactions, then restored into another store, reads exactly the state
//! as of the capture (a `BTreeMap` model), whatever the target held before; a capture pins its
//! tables against compaction and releases them when dropped; a damaged or incomplete file set is
//! refused and changes nothing; readers during a restore see the old or the new state whole.
//!
//! Failpoint and crash tests are in `capture_restore_failpoints.rs` (failpoints are global to a
//! test binary).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strata_lsm::{
    Capture, CompactionOptions, Db, Error, LSM_SNAPSHOT_FILE, Options, SnapshotInfo, WriteOptions,
};

mod support;

use support::{Model, contents, crash_image, table_files};

const KEYS: u8 = 24;

fn key(k: u8) -> Vec<u8> {
    format!("key{k:02}").into_bytes()
}

fn options() -> Options {
    Options {
        // Small enough that a few hundred writes switch memtables, so captures see immutable
        // ones now and then; no automatic compaction, so that the test's own ops decide.
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

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8, usize),
    Delete(u8),
    Flush,
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..KEYS, any::<u8>(), 1usize..600).prop_map(|(k, v, n)| Op::Put(k, v, n)),
        3 => (0..KEYS).prop_map(Op::Delete),
        1 => Just(Op::Flush),
        1 => Just(Op::Compact),
    ]
}

fn apply(db: &Db, ops: &[Op], model: &mut Model) {
    let w = WriteOptions::default();
    for op in ops {
        match op {
            Op::Put(k, v, n) => {
                let value = vec![*v; *n];
                db.put(&key(*k), &value, w).expect("put");
                model.insert(key(*k), value);
            }
            Op::Delete(k) => {
                db.delete(&key(*k), w).expect("delete");
                model.remove(&key(*k));
            }
            Op::Flush => {
                db.flush().expect("flush");
            }
            Op::Compact => db.compact().expect("compact"),
        }
    }
}

/// The store reads exactly `model`: by a full scan, and key by key (deleted keys included).
fn assert_reads(db: &Db, model: &Model, context: &str) {
    assert_eq!(&contents(db), model, "{context}: scan");
    for k in 0..KEYS {
        assert_eq!(
            db.get(&key(k)).expect("get").as_ref(),
            model.get(&key(k)),
            "{context}: key {k}"
        );
    }
}

/// Writes `capture` into a new directory `name` under `root`; returns it and the file names.
fn write_capture(root: &Path, name: &str, capture: Capture) -> (PathBuf, Vec<String>) {
    let dir = root.join(name);
    std::fs::create_dir(&dir).expect("mkdir");
    let names = capture
        .write_to(
            &dir,
            &[
                ("raft.index", &7u64.to_le_bytes()),
                ("raft.term", &2u64.to_le_bytes()),
            ],
        )
        .expect("write_to");
    (dir, names)
}

fn raft_properties() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        ("raft.index".to_owned(), 7u64.to_le_bytes().to_vec()),
        ("raft.term".to_owned(), 2u64.to_le_bytes().to_vec()),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn a_restored_capture_reads_exactly_the_state_at_the_capture(
        before in proptest::collection::vec(op(), 0..40),
        after in proptest::collection::vec(op(), 0..40),
        target in proptest::collection::vec(op(), 0..20),
        switching in any::<bool>(),
        flush_at in 0u8..3,
    ) {
        let root = tempfile::tempdir().expect("tempdir");
        let source = Db::open(&root.path().join("source"), options()).expect("open");
        let mut model = Model::new();
        apply(&source, &before, &mut model);
        let at_capture = model.clone();
        let capture = if switching {
            source.capture_switching()
        } else {
            source.capture()
        };
        prop_assert_eq!(capture.last_seq(), source.stats().last_seq);
        // `Capture::flush` (none, before or after the later ops), then writes, deletes,
        // flushes and compactions after the capture: none may reach it.
        if flush_at == 1 {
            capture.flush().expect("flush the capture");
        }
        apply(&source, &after, &mut model);
        if flush_at == 2 {
            capture.flush().expect("flush the capture");
        }
        let (snapshot, names) = write_capture(root.path(), "snapshot", capture);
        prop_assert_eq!(names.last().map(String::as_str), Some(LSM_SNAPSHOT_FILE));
        prop_assert!(names.iter().all(|n| !n.contains('/') && n != "meta"));
        let mut on_disk: Vec<String> = std::fs::read_dir(&snapshot)
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        on_disk.sort();
        let mut listed = names.clone();
        listed.sort();
        prop_assert_eq!(on_disk, listed, "the set is exactly the files returned");

        let target_dir = root.path().join("target");
        let db = Db::open(&target_dir, options()).expect("open");
        let mut target_model = Model::new();
        apply(&db, &target, &mut target_model);
        let taken = db.snapshot();
        let info = db.restore(&snapshot, &names).expect("restore");
        assert_reads(&db, &at_capture, "after the restore");
        prop_assert_eq!(&info.properties, &raft_properties());
        prop_assert_eq!(db.snapshot_properties(), raft_properties());
        prop_assert!(db.stats().last_seq >= info.last_seq);
        prop_assert!(matches!(taken.get(&key(0)), Err(Error::Restored)));
        drop(taken);
        // The restored tables are the store's now: its files, its numbers, in its manifest.
        let live = db.live_files();
        prop_assert_eq!(live.len(), info.tables.len());
        drop(db);
        let db = Db::open(&target_dir, options()).expect("reopen");
        assert_reads(&db, &at_capture, "after a reopen");
        prop_assert_eq!(db.snapshot_properties(), raft_properties());
        prop_assert_eq!(table_files(&target_dir).len(), db.live_files().len());
        // The store goes on from there: writes are newer than everything restored.
        let mut restored = at_capture.clone();
        apply(&db, &[Op::Put(1, 9, 3), Op::Delete(2), Op::Flush, Op::Compact], &mut restored);
        assert_reads(&db, &restored, "after writes on the restored store");
        // The source never changed because of any of this.
        assert_reads(&source, &model, "the source");
    }
}

/// The inode of `path`.
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).expect("metadata").ino()
}

#[test]
fn a_switching_capture_links_the_tables_its_flush_made_instead_of_writing_them_again() {
    let root = tempfile::tempdir().expect("tempdir");
    let source_dir = root.path().join("source");
    let source = Db::open(&source_dir, options()).expect("open");
    let mut model = Model::new();
    apply(&source, &[Op::Put(1, 1, 10), Op::Put(2, 1, 10)], &mut model);
    let at_capture = model.clone();
    let capture = source.capture_switching();
    // Into a new memtable: not in the capture, and not flushed by it.
    apply(&source, &[Op::Put(1, 2, 10), Op::Delete(2)], &mut model);
    capture.flush().expect("flush the capture");
    let flushed = table_files(&source_dir);
    assert_eq!(
        flushed.len(),
        1,
        "the captured memtable alone became a table"
    );
    assert!(
        source.stats().memtable_bytes > 0,
        "later writes stay in the memtable"
    );
    let (snapshot, names) = write_capture(root.path(), "snapshot", capture);
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(
        inode(&snapshot.join(&names[0])),
        inode(&flushed[0]),
        "the snapshot's table is the store's, linked"
    );
    let db = Db::open(&root.path().join("target"), options()).expect("open");
    db.restore(&snapshot, &names).expect("restore");
    assert_reads(&db, &at_capture, "restored");
    assert_reads(&source, &model, "the source");
}

#[test]
fn a_flushed_capture_survives_a_crash_of_a_store_without_a_wal() {
    let root = tempfile::tempdir().expect("tempdir");
    let source_dir = root.path().join("source");
    let no_wal = || Options {
        wal: false,
        ..options()
    };
    let source = Db::open(&source_dir, no_wal()).expect("open");
    let mut model = Model::new();
    apply(
        &source,
        &[Op::Put(1, 1, 10), Op::Flush, Op::Put(2, 1, 10)],
        &mut model,
    );
    let at_capture = model.clone();
    for switching in [false, true] {
        let capture = if switching {
            source.capture_switching()
        } else {
            source.capture()
        };
        capture.flush().expect("flush the capture");
        // Without a WAL, only the tables survive a crash: they hold all the capture does.
        let image = crash_image(&source_dir);
        let reopened = Db::open(image.path(), no_wal()).expect("reopen the crash image");
        assert_reads(&reopened, &at_capture, "after a crash");
    }
    apply(&source, &[Op::Put(3, 1, 10)], &mut model);
    std::mem::forget(source);
}

#[test]
fn a_switching_capture_whose_flushed_table_was_compacted_away_writes_the_memtable() {
    let root = tempfile::tempdir().expect("tempdir");
    let source_dir = root.path().join("source");
    let source = Db::open(&source_dir, options()).expect("open");
    let mut model = Model::new();
    apply(
        &source,
        &[
            Op::Put(1, 1, 10),
            Op::Flush,
            Op::Put(2, 1, 10),
            Op::Put(3, 1, 10),
        ],
        &mut model,
    );
    let at_capture = model.clone();
    let capture = source.capture_switching();
    capture.flush().expect("flush the capture");
    let flushed: Vec<PathBuf> = table_files(&source_dir);
    assert_eq!(flushed.len(), 2);
    apply(
        &source,
        &[Op::Delete(3), Op::Flush, Op::Compact],
        &mut model,
    );
    // The table the captured memtable became is replaced and gone (the capture pins only the
    // tables of its own time).
    let newest = flushed.iter().max().expect("a table");
    assert!(!newest.exists(), "{} was compacted away", newest.display());
    let (snapshot, names) = write_capture(root.path(), "snapshot", capture);
    let db = Db::open(&root.path().join("target"), options()).expect("open");
    db.restore(&snapshot, &names).expect("restore");
    assert_reads(&db, &at_capture, "restored");
    assert_reads(&source, &model, "the source");
}

#[test]
fn a_capture_reads_nothing_written_after_it_even_in_the_memtable_it_shares() {
    let root = tempfile::tempdir().expect("tempdir");
    let source = Db::open(&root.path().join("source"), options()).expect("open");
    let w = WriteOptions::default();
    source.put(b"a", b"1", w).expect("put");
    source.put(b"b", b"1", w).expect("put");
    let capture = source.capture();
    // Into the same active memtable: newer versions, a delete, a new key.
    source.put(b"a", b"2", w).expect("put");
    source.delete(b"b", w).expect("delete");
    source.put(b"c", b"2", w).expect("put");
    // The capture outlives every handle of the store that made it.
    drop(source);
    let (snapshot, names) = write_capture(root.path(), "snapshot", capture);
    // One memtable table (the active one; no immutable was waiting) and the flat file.
    assert_eq!(names.len(), 2, "{names:?}");
    let db = Db::open(&root.path().join("target"), options()).expect("open");
    db.restore(&snapshot, &names).expect("restore");
    let expected = Model::from([
        (b"a".to_vec(), b"1".to_vec()),
        (b"b".to_vec(), b"1".to_vec()),
    ]);
    assert_eq!(contents(&db), expected);
}

#[test]
fn a_compaction_between_capture_and_write_keeps_the_captured_tables_until_written() {
    let root = tempfile::tempdir().expect("tempdir");
    let source_dir = root.path().join("source");
    let source = Db::open(&source_dir, options()).expect("open");
    let mut model = Model::new();
    for round in 0..4u8 {
        let ops: Vec<Op> = (0..KEYS)
            .map(|k| Op::Put(k, round, 100))
            .chain([Op::Delete(round), Op::Flush])
            .collect();
        apply(&source, &ops, &mut model);
    }
    let captured_files = table_files(&source_dir);
    assert_eq!(captured_files.len(), 4);
    let at_capture = model.clone();
    let capture = source.capture();
    apply(
        &source,
        &[Op::Put(5, 77, 10), Op::Delete(6), Op::Flush, Op::Compact],
        &mut model,
    );
    // Every table the capture holds was replaced, yet stays on disk for it.
    let live: Vec<PathBuf> = source.live_files().into_iter().map(|f| f.path).collect();
    assert!(captured_files.iter().all(|f| !live.contains(f)));
    assert!(captured_files.iter().all(|f| f.exists()));
    let (snapshot, names) = write_capture(root.path(), "snapshot", capture);
    // Written, the capture lets go: the replaced tables go (the set keeps its own links).
    assert!(captured_files.iter().all(|f| !f.exists()));
    assert_eq!(table_files(&source_dir), live);
    let db = Db::open(&root.path().join("target"), options()).expect("open");
    db.restore(&snapshot, &names).expect("restore");
    assert_reads(&db, &at_capture, "restored");
    assert_reads(&source, &model, "the source");
}

#[test]
fn a_dropped_capture_releases_its_tables() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("source");
    let db = Db::open(&dir, options()).expect("open");
    let mut model = Model::new();
    apply(
        &db,
        &[Op::Put(1, 1, 10), Op::Flush, Op::Put(2, 2, 10), Op::Flush],
        &mut model,
    );
    let captured = table_files(&dir);
    let capture = db.capture();
    db.compact().expect("compact");
    assert!(captured.iter().all(|f| f.exists()), "pinned by the capture");
    drop(capture);
    assert!(captured.iter().all(|f| !f.exists()), "released with it");
    assert_reads(&db, &model, "the store");
}

#[test]
fn a_capture_moves_to_another_thread() {
    fn assert_send_static<T: Send + 'static>(_: &T) {}
    let root = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&root.path().join("source"), options()).expect("open");
    db.put(b"k", b"v", WriteOptions::default()).expect("put");
    let capture = db.capture();
    assert_send_static(&capture);
    let dir = root.path().join("snapshot");
    std::fs::create_dir(&dir).expect("mkdir");
    let written = {
        let dir = dir.clone();
        std::thread::spawn(move || capture.write_to(&dir, &[]))
            .join()
            .expect("thread")
            .expect("write_to")
    };
    let info = SnapshotInfo::read(&dir).expect("read");
    assert_eq!(info.tables.len() + 1, written.len());
    assert!(info.properties.is_empty());
}

#[test]
fn an_empty_capture_empties_the_target() {
    let root = tempfile::tempdir().expect("tempdir");
    let empty = Db::open(&root.path().join("empty"), options()).expect("open");
    let (snapshot, names) = write_capture(root.path(), "snapshot", empty.capture());
    assert_eq!(names, [LSM_SNAPSHOT_FILE]);
    let target_dir = root.path().join("target");
    let db = Db::open(&target_dir, options()).expect("open");
    let mut model = Model::new();
    apply(
        &db,
        &[Op::Put(1, 1, 10), Op::Flush, Op::Put(2, 1, 10)],
        &mut model,
    );
    db.restore(&snapshot, &names).expect("restore");
    assert_reads(&db, &Model::new(), "restored");
    assert!(table_files(&target_dir).is_empty());
    drop(db);
    // The old memtable's writes are in the WAL: they must not come back.
    let db = Db::open(&target_dir, options()).expect("reopen");
    assert_reads(&db, &Model::new(), "reopened");
}

#[test]
fn properties_over_the_limit_are_refused_before_anything_is_written() {
    let root = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&root.path().join("source"), options()).expect("open");
    db.put(b"k", b"v", WriteOptions::default()).expect("put");
    let dir = root.path().join("snapshot");
    std::fs::create_dir(&dir).expect("mkdir");
    let big = vec![0u8; strata_lsm::PROPERTIES_BYTES_MAX];
    let err = db
        .capture()
        .write_to(&dir, &[("big", &big)])
        .expect_err("too large");
    assert!(matches!(err, Error::PropertiesTooLarge { .. }), "{err}");
    assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 0);
}

#[test]
fn a_failed_write_to_leaves_nothing_behind() {
    let root = tempfile::tempdir().expect("tempdir");
    let db = Db::open(&root.path().join("source"), options()).expect("open");
    let mut model = Model::new();
    apply(
        &db,
        &[Op::Put(1, 1, 10), Op::Flush, Op::Put(2, 2, 10), Op::Flush],
        &mut model,
    );
    let dir = root.path().join("snapshot");
    std::fs::create_dir(&dir).expect("mkdir");
    // A file already there under the name of the first table to link fails that link, after
    // the memtable's table is written.
    let first = db.live_files()[0].number;
    let blocker = dir.join(strata_lsm::table_file_name(first));
    std::fs::write(&blocker, b"not mine").expect("write");
    db.put(b"in-memtable", b"v", WriteOptions::default())
        .expect("put");
    let err = db
        .capture()
        .write_to(&dir, &[])
        .expect_err("the link fails");
    assert!(matches!(err, Error::Fs(_)), "{err}");
    let left: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&blocker),
        "only the caller's own file is left"
    );
    assert_eq!(std::fs::read(&blocker).expect("read"), b"not mine");
}

/// A source with tables on three levels and a memtable, written out; a target with data of
/// its own. Returns the root, the target, its contents, and the set.
fn refusal_case() -> (tempfile::TempDir, Db, Model, PathBuf, Vec<String>) {
    let root = tempfile::tempdir().expect("tempdir");
    let source = Db::open(&root.path().join("source"), options()).expect("open");
    let mut model = Model::new();
    apply(
        &source,
        &[Op::Put(1, 1, 50), Op::Put(2, 1, 50), Op::Flush, Op::Compact],
        &mut model,
    );
    apply(&source, &[Op::Put(3, 1, 50), Op::Flush], &mut model);
    apply(&source, &[Op::Put(4, 1, 50)], &mut model);
    let (snapshot, names) = write_capture(root.path(), "snapshot", source.capture());
    assert_eq!(names.len(), 4, "{names:?}");
    let db = Db::open(&root.path().join("target"), options()).expect("open");
    let mut target = Model::new();
    apply(
        &db,
        &[Op::Put(9, 9, 10), Op::Flush, Op::Put(10, 9, 10)],
        &mut target,
    );
    (root, db, target, snapshot, names)
}

/// The refused restore changed nothing: same reads, no stray table, still writable, and the
/// same file set restores once repaired (checked by the caller).
fn assert_unchanged(db: &Db, model: &Model, root: &Path) {
    assert_reads(db, model, "after a refused restore");
    assert_eq!(
        table_files(&root.join("target")).len(),
        db.live_files().len(),
        "no table is left behind"
    );
    assert!(db.snapshot_properties().is_empty());
    db.put(&key(9), &model[&key(9)], WriteOptions::default())
        .expect("the store still takes writes");
}

#[test]
fn a_damaged_or_truncated_snapshot_file_is_refused_and_changes_nothing() {
    let (root, db, model, snapshot, names) = refusal_case();
    let flat = snapshot.join(LSM_SNAPSHOT_FILE);
    let good = std::fs::read(&flat).expect("read");
    let mut flipped = good.clone();
    flipped[30] ^= 0x10;
    for (what, bytes) in [
        ("a flipped bit", flipped),
        ("a truncation", good[..good.len() - 9].to_vec()),
        ("nothing", Vec::new()),
    ] {
        std::fs::write(&flat, &bytes).expect("write");
        let err = db.restore(&snapshot, &names).expect_err(what);
        assert!(
            matches!(&err, Error::Corruption { path, .. } if *path == flat),
            "{what}: {err}"
        );
        assert_unchanged(&db, &model, root.path());
    }
    std::fs::write(&flat, &good).expect("write");
    db.restore(&snapshot, &names)
        .expect("the repaired set restores");
}

#[test]
fn a_missing_table_is_refused_and_changes_nothing() {
    let (root, db, model, snapshot, names) = refusal_case();
    let table = names[1].clone();
    // Not in the list the caller gives...
    let fewer: Vec<String> = names.iter().filter(|n| **n != table).cloned().collect();
    let err = db.restore(&snapshot, &fewer).expect_err("refused");
    assert!(
        matches!(&err, Error::SnapshotFileMissing { name } if *name == table),
        "{err}"
    );
    assert_unchanged(&db, &model, root.path());
    // ...the flat file itself...
    let err = db.restore(&snapshot, &names[..3]).expect_err("refused");
    assert!(
        matches!(&err, Error::SnapshotFileMissing { name } if name == LSM_SNAPSHOT_FILE),
        "{err}"
    );
    assert_unchanged(&db, &model, root.path());
    // ...or listed but not on disk.
    let moved = root.path().join("moved");
    std::fs::rename(snapshot.join(&table), &moved).expect("move");
    let err = db.restore(&snapshot, &names).expect_err("refused");
    assert!(
        matches!(&err, Error::SnapshotFileMissing { name } if *name == table),
        "{err}"
    );
    assert_unchanged(&db, &model, root.path());
    std::fs::rename(&moved, snapshot.join(&table)).expect("move back");
    db.restore(&snapshot, &names)
        .expect("the complete set restores");
}

#[test]
fn a_truncated_or_damaged_table_is_refused_and_changes_nothing() {
    let (root, db, model, snapshot, names) = refusal_case();
    let table = snapshot.join(&names[2]);
    let good = std::fs::read(&table).expect("read");
    // Break the link first: the source's own table must not be damaged with it.
    std::fs::remove_file(&table).expect("unlink");
    std::fs::write(&table, &good[..good.len() - 1]).expect("write");
    let err = db.restore(&snapshot, &names).expect_err("refused");
    assert!(
        matches!(&err, Error::Corruption { path, .. } if *path == table),
        "{err}"
    );
    assert_unchanged(&db, &model, root.path());
    // Same size, damaged footer: the table does not open.
    let mut damaged = good.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&table, &damaged).expect("write");
    let err = db.restore(&snapshot, &names).expect_err("refused");
    assert!(matches!(&err, Error::Table(_)), "{err}");
    assert_unchanged(&db, &model, root.path());
    std::fs::write(&table, &good).expect("write");
    db.restore(&snapshot, &names)
        .expect("the repaired set restores");
}

#[test]
fn readers_during_a_restore_see_the_whole_old_or_the_whole_new_state() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (_root, db, old, snapshot, names) = refusal_case();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                // One more scan after the restore is done, so the new state is seen too.
                loop {
                    let last = done.load(Ordering::Acquire);
                    seen.push(contents(&db));
                    if last {
                        return seen;
                    }
                }
            })
        })
        .collect();
    let mut expected_new = Model::new();
    for k in 1..=4 {
        expected_new.insert(key(k), vec![1; 50]);
    }
    db.restore(&snapshot, &names).expect("restore");
    done.store(true, Ordering::Release);
    for reader in readers {
        let seen = reader.join().expect("reader");
        assert!(
            seen.last() == Some(&expected_new),
            "the last scan sees the new state"
        );
        for state in seen {
            assert!(state == old || state == expected_new, "a mix: {state:?}");
        }
    }
    assert_eq!(contents(&db), expected_new);
}
