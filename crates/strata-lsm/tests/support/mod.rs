//! What the capture and restore tests share: a store's contents as a map, and its table files.

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
