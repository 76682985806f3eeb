//! `Db::open_read_only`: a missing or empty directory is refused with `NoStore` and nothing is
//! created; an existing store reads as a normal open would (tables and the WAL past them)
//! while not one byte of its directory changes, a torn WAL tail included; every write path is
//! refused with `OpenedReadOnly`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use strata_lsm::{Db, Error, Options, WriteBatch, WriteOptions};

mod support;

/// Every file under `dir` with its bytes, and every directory (as `None`).
fn tree(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in std::fs::read_dir(dir).expect("list") {
            let path = entry.expect("entry").path();
            let relative = path.strip_prefix(root).expect("under root").to_path_buf();
            if path.is_dir() {
                out.insert(relative, None);
                walk(root, &path, out);
            } else {
                out.insert(relative, Some(std::fs::read(&path).expect("read")));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn small() -> Options {
    Options {
        memtable_bytes: 64 * 1024,
        ..Options::default()
    }
}

/// A store with flushed tables and, past them, records only in its WAL.
fn store_with_tables_and_wal(dir: &Path) -> support::Model {
    let db = Db::open(dir, small()).expect("open");
    for i in 0..300u32 {
        db.put(
            format!("k{i:04}").as_bytes(),
            &[i as u8; 400],
            WriteOptions::default(),
        )
        .expect("put");
    }
    db.flush().expect("flush");
    for i in 300..320u32 {
        db.put(
            format!("k{i:04}").as_bytes(),
            &[i as u8; 400],
            WriteOptions::default(),
        )
        .expect("put");
    }
    db.delete(b"k0001", WriteOptions { sync: true })
        .expect("delete");
    let model = support::contents(&db);
    drop(db);
    assert!(
        !support::table_files(dir).is_empty(),
        "the store has tables to read"
    );
    model
}

#[test]
fn a_missing_directory_is_refused_and_not_created() {
    let root = tempfile::tempdir().expect("tempdir");
    let missing = root.path().join("typo");
    match Db::open_read_only(&missing, Options::default()) {
        Err(Error::NoStore { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected NoStore, got {:?}", other.map(|_| ())),
    }
    assert!(!missing.exists(), "the read-only open created {missing:?}");
    let message = Db::open_read_only(&missing, Options::default())
        .expect_err("refused")
        .to_string();
    assert!(
        message.contains(&missing.display().to_string()),
        "the error names the path: {message}"
    );
}

#[test]
fn a_directory_without_a_store_is_refused_and_left_empty() {
    let root = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        Db::open_read_only(root.path(), Options::default()),
        Err(Error::NoStore { .. })
    ));
    assert!(tree(root.path()).is_empty(), "nothing was created");
    let file = root.path().join("file");
    std::fs::write(&file, b"not a store").expect("write");
    assert!(matches!(
        Db::open_read_only(&file, Options::default()),
        Err(Error::NoStore { .. })
    ));
}

#[test]
fn a_read_only_open_reads_tables_and_wal_and_changes_no_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = store_with_tables_and_wal(dir.path());
    let before = tree(dir.path());
    let db = Db::open_read_only(dir.path(), small()).expect("open read-only");
    assert_eq!(support::contents(&db), model);
    assert_eq!(db.get(b"k0310").expect("get"), Some(vec![54u8; 400]));
    assert_eq!(db.get(b"k0001").expect("get"), None);
    db.wait_for_background().expect("nothing to wait for");
    drop(db);
    assert_eq!(tree(dir.path()), before, "the directory changed");
    // And a normal open afterwards sees the same.
    let db = Db::open(dir.path(), small()).expect("open");
    assert_eq!(support::contents(&db), model);
}

#[test]
fn every_write_path_of_a_read_only_store_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = store_with_tables_and_wal(dir.path());
    let before = tree(dir.path());
    let db = Db::open_read_only(dir.path(), small()).expect("open read-only");
    let refused = |result: Result<(), Error>, what: &str| {
        assert!(
            matches!(result, Err(Error::OpenedReadOnly)),
            "{what} was not refused: {result:?}"
        );
    };
    refused(
        db.put(b"x", b"y", WriteOptions::default()).map(|_| ()),
        "put",
    );
    refused(
        db.delete(b"k0002", WriteOptions { sync: true }).map(|_| ()),
        "delete",
    );
    let mut batch = WriteBatch::new();
    batch.put(b"x", b"y");
    refused(
        db.write(batch, WriteOptions::default()).map(|_| ()),
        "write",
    );
    refused(db.flush().map(|_| ()), "flush");
    refused(db.compact(), "compact");
    let elsewhere = tempfile::tempdir().expect("tempdir");
    refused(db.checkpoint(&elsewhere.path().join("cp")), "checkpoint");
    let tables = support::table_files(dir.path());
    refused(db.ingest(6, &tables).map(|_| ()), "ingest");
    assert_eq!(support::contents(&db), model, "nothing changed in memory");
    drop(db);
    assert_eq!(tree(dir.path()), before, "the directory changed");
}

#[test]
fn a_torn_wal_tail_is_read_past_and_left_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = store_with_tables_and_wal(dir.path());
    let wal_dir = dir.path().join("wal");
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal_dir)
        .expect("list wal")
        .map(|e| e.expect("entry").path())
        .collect();
    segments.sort();
    let last = segments.last().expect("a WAL segment");
    // Half a record header: what a crash during an append leaves.
    std::fs::OpenOptions::new()
        .append(true)
        .open(last)
        .expect("open segment")
        .write_all(&[0x42; 7])
        .expect("tear");
    let before = tree(dir.path());
    let db = Db::open_read_only(dir.path(), small()).expect("open read-only");
    assert_eq!(support::contents(&db), model);
    drop(db);
    assert_eq!(tree(dir.path()), before, "the torn tail was cut");
}
