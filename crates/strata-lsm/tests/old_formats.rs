//! A store written by an older release opens and reads as it was written, takes new writes,
//! and compacts its old tables into the current format. The fixture (`tests/fixtures/
//! format-1-store`) was written by format 1's code (fixed-width table entry headers and WAL
//! batch records) and is never regenerated:
//!
//! 1. `key-00000` to `key-00399` put, then flushed;
//! 2. `key-00100` to `key-00199` deleted and `key-00300` to `key-00499` put again (values of
//!    `i + 1`), then flushed;
//! 3. `key-00450` to `key-00599` put (values of `i + 2`) and `key-00000` to `key-00049` deleted,
//!    left in the WAL only;
//!
//! every write synced.

mod support;

use std::path::Path;

use strata_lsm::{Db, Options, WriteOptions};
use support::{Model, contents, table_files};

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-")
        .repeat((i % 7 + 1) as usize)
        .into_bytes()
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// What the fixture holds.
fn expected() -> Model {
    let mut model = Model::new();
    for i in 0..400 {
        model.insert(key(i), value(i));
    }
    for i in 100..200 {
        model.remove(&key(i));
    }
    for i in 300..500 {
        model.insert(key(i), value(i + 1));
    }
    for i in 450..600 {
        model.insert(key(i), value(i + 2));
    }
    for i in 0..50 {
        model.remove(&key(i));
    }
    model
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[test]
fn a_format_1_store_reads_as_written_takes_writes_and_compacts_into_the_current_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1-store");
    copy_dir(&fixture, dir.path());
    let mut model = expected();

    let db = Db::open(dir.path(), Options::default()).expect("a format 1 store opens");
    assert_eq!(contents(&db), model);
    for i in [0, 49, 50, 150, 299, 300, 449, 450, 599, 600] {
        assert_eq!(
            db.get(&key(i)).expect("get"),
            model.get(&key(i)).cloned(),
            "key {i}"
        );
    }
    // New writes go in beside the old, and a compaction rewrites the old tables.
    for i in 590..610 {
        db.put(&key(i), b"new", WriteOptions::default())
            .expect("put");
        model.insert(key(i), b"new".to_vec());
    }
    db.flush().expect("flush");
    db.compact().expect("compact");
    assert_eq!(contents(&db), model);
    drop(db);
    // Compaction rewrote every table in the current format.
    for path in table_files(dir.path()) {
        let table = strata_sstable::Table::open(&path, strata_sstable::ReadOptions::default())
            .expect("a table opens");
        assert_eq!(
            table.format_version(),
            strata_sstable::FORMAT_VERSION,
            "{}",
            path.display()
        );
    }

    let db = Db::open(dir.path(), Options::default()).expect("reopens");
    assert_eq!(contents(&db), model);
}
