//! What the LSM's tests share: a store's contents as a map, its table files, and the image a
//! crash would leave of an abandoned store.

// Each test crate that includes this uses part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use strata_lsm::{Db, Direction};

/// A store's keys and values.
pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every key and value a full scan returns.
pub fn contents(db: &Db) -> Model {
    let mut out = Model::new();
    db.scan(
        Bound::Unbounded,
        Bound::Unbounded,
        Direction::Forward,
        |k, v| {
            out.insert(k.to_vec(), v.to_vec());
            true
        },
    )
    .expect("scan");
    out
}

/// The `.sst` files in a store's directory, sorted.
pub fn table_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    out.sort();
    out
}

/// What a crash would leave of the store at `dir`, whose `Db` was abandoned with
/// `std::mem::forget`: a copy of its files. The forgotten store still holds the directory's lock
/// in this process, so the copy is what a reopen after a crash sees. Its flusher may still be
/// finishing a flush (writing a table, purging WAL segments): a copy counts only if the
/// directory did not change while it was taken, so that it is one moment's state.
pub fn crash_image(dir: &Path) -> tempfile::TempDir {
    (0..1000)
        .find_map(|_| {
            let before = listing(dir);
            let copy = tempfile::tempdir().expect("tempdir");
            let copied = copy_tree(dir, copy.path());
            (copied && listing(dir) == before).then_some(copy)
        })
        .expect("the store's directory stopped changing")
}

/// Copies the files under `from` (but for `LOCK`s) into `to`; false if one vanished meanwhile.
fn copy_tree(from: &Path, to: &Path) -> bool {
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            if !copy_tree(&entry.path(), &target) {
                return false;
            }
        } else if entry.file_name() != "LOCK" {
            match std::fs::copy(entry.path(), &target) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
                Err(e) => panic!("copy: {e}"),
            }
        }
    }
    true
}

/// Every file under `dir` with its length, sorted.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("type").is_dir() {
            out.extend(listing(&entry.path()));
        } else if let Ok(meta) = entry.metadata() {
            out.push((entry.path(), meta.len()));
        }
    }
    out.sort();
    out
}
