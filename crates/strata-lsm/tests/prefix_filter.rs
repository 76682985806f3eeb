//! Prefix filters (`Options::prefix_extractor`): `scan_in_prefix` sees what `scan` sees, reads
//! no table that holds nothing under the prefix, and trusts only filters built by an extractor
//! of the store's name.

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;
use strata_lsm::{CompactionOptions, Db, Direction, Options, PrefixExtractor, WriteOptions};

/// Keys are a name and a two-byte version: the name is the prefix.
fn all_but_two(key: &[u8]) -> Option<usize> {
    key.len().checked_sub(2)
}

const NAMES: PrefixExtractor = PrefixExtractor {
    name: "test.names",
    prefix_len: all_but_two,
};

/// Same name, another rule: a store must not trust filters built by `NAMES` under it...
/// and it cannot tell, which is why a changed rule needs a new name.
fn first_byte(key: &[u8]) -> Option<usize> {
    (!key.is_empty()).then_some(1)
}

const FIRST_BYTE: PrefixExtractor = PrefixExtractor {
    name: "test.first-byte",
    prefix_len: first_byte,
};

fn options(prefix: Option<PrefixExtractor>) -> Options {
    Options {
        memtable_bytes: 16 * 1024,
        compaction: CompactionOptions {
            l0_trigger: 3,
            target_file_bytes: 4 * 1024,
            level_base_bytes: 16 * 1024,
            level_multiplier: 4,
            ..CompactionOptions::default()
        },
        prefix_extractor: prefix,
        ..Options::default()
    }
}

fn key(name: u16, version: u16) -> Vec<u8> {
    // Names with zero bytes too: the filter records them escaped, as the tables hold them.
    let mut k = format!("name-{name:05}-").into_bytes();
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Every key with `name`'s prefix, through `scan_in_prefix` or `scan`.
fn versions(db: &Db, name: u16, in_prefix: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
    let lower = key(name, 0);
    let prefix = &lower[..lower.len() - 2];
    let upper = key(name, u16::MAX);
    let mut out = Vec::new();
    let visit = |k: &[u8], v: &[u8]| {
        out.push((k.to_vec(), v.to_vec()));
        true
    };
    let (lo, hi) = (Bound::Included(&lower[..]), Bound::Included(&upper[..]));
    if in_prefix {
        db.scan_in_prefix(prefix, lo, hi, Direction::Forward, visit)
    } else {
        db.scan(lo, hi, Direction::Forward, visit)
    }
    .expect("scan");
    out
}

fn fill(db: &Db, names: impl Iterator<Item = u16>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for name in names {
        for version in 0..3u16 {
            let (k, v) = (
                key(name, version),
                format!("value {name} {version}").repeat(8),
            );
            db.put(&k, v.as_bytes(), WriteOptions::default())
                .expect("put");
            model.insert(k, v.into_bytes());
        }
    }
    db.flush().expect("flush");
    db.wait_for_background().expect("background");
    model
}

#[test]
fn an_absent_prefix_reads_no_table_and_a_present_one_reads_what_a_scan_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), options(Some(NAMES))).expect("open");
    // Even names only: the odd ones fall inside every table's range but in no table.
    fill(&db, (0..600).map(|n| n * 2));
    assert!(db.live_files().len() > 3, "{:?}", db.live_files());
    for name in [0u16, 2, 500, 1198] {
        let found = versions(&db, name, true);
        assert_eq!(found.len(), 3, "name {name}");
        assert_eq!(found, versions(&db, name, false), "name {name}");
    }
    let reads = |db: &Db| {
        let stats = db.stats();
        stats.cache_hits + stats.cache_misses
    };
    let before = reads(&db);
    for name in (1..1199).step_by(2) {
        assert!(versions(&db, name, true).is_empty(), "name {name}");
    }
    let filtered = reads(&db) - before;
    // The filters' false positives (about 1%) read a block now and then.
    assert!(
        filtered < 60,
        "600 absent names read {filtered} blocks through prefix filters"
    );
    let before = reads(&db);
    for name in (1..1199).step_by(2) {
        assert!(versions(&db, name, false).is_empty(), "name {name}");
    }
    let plain = reads(&db) - before;
    assert!(
        plain >= 500,
        "a plain scan reads the tables whose range spans the name: {plain} blocks, filtered {filtered}"
    );
}

/// Unflushed, the same holds of the memtable: its prefix filter lets a seek for an absent
/// name skip it (no skiplist search), and a present name is found in it.
#[test]
fn an_absent_prefix_skips_the_memtable_and_a_present_one_is_found_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(
        dir.path(),
        Options {
            memtable_bytes: 4 << 20,
            ..options(Some(NAMES))
        },
    )
    .expect("open");
    for name in (0..600u16).map(|n| n * 2) {
        db.put(&key(name, 1), b"in the memtable", WriteOptions::default())
            .expect("put");
    }
    assert!(db.live_files().is_empty(), "a flush: the test reads tables");
    for name in [0u16, 2, 500, 1198] {
        assert_eq!(versions(&db, name, true), versions(&db, name, false));
        assert_eq!(versions(&db, name, true).len(), 1, "name {name}");
    }
    let skips = |db: &Db| db.stats().memtable_prefix_skips;
    let before = skips(&db);
    for name in (1..1199).step_by(2) {
        assert!(versions(&db, name, true).is_empty(), "name {name}");
    }
    let skipped = skips(&db) - before;
    assert!(
        skipped > 590,
        "600 absent names skipped the memtable {skipped} times"
    );
    // Without an extractor there is no filter: every seek searches.
    let plain = tempfile::tempdir().expect("tempdir");
    let db = Db::open(plain.path(), options(None)).expect("open");
    db.put(&key(0, 1), b"v", WriteOptions::default())
        .expect("put");
    assert!(versions(&db, 1, true).is_empty());
    assert_eq!(skips(&db), 0);
}

#[test]
fn filters_of_another_extractor_or_of_none_are_not_trusted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = {
        let db = Db::open(dir.path(), options(None)).expect("open");
        fill(&db, 0..200)
    };
    let model = {
        let db = Db::open(dir.path(), options(Some(FIRST_BYTE))).expect("reopen");
        let mut model = model;
        model.extend(fill(&db, 200..400));
        model
    };
    // Tables without an extractor's filter, and tables with FIRST_BYTE's: read with NAMES,
    // neither is ruled out, and every version is found.
    let db = Db::open(dir.path(), options(Some(NAMES))).expect("reopen");
    for name in 0..400u16 {
        let expected: Vec<(Vec<u8>, Vec<u8>)> = (0..3u16)
            .map(|v| {
                let k = key(name, v);
                let value = model[&k].clone();
                (k, value)
            })
            .collect();
        assert_eq!(versions(&db, name, true), expected, "name {name}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Whatever was written, deleted, flushed and compacted, a scan within one prefix sees
    /// what a plain scan of the same bounds sees, at the store and through a snapshot.
    #[test]
    fn a_scan_in_a_prefix_sees_what_a_plain_scan_sees(
        ops in proptest::collection::vec((0u16..40, 0u16..4, any::<bool>(), 0u8..20), 1..300),
        probes in proptest::collection::vec(0u16..48, 1..20),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path(), options(Some(NAMES))).expect("open");
        let snapshot_at = ops.len() / 2;
        let mut snapshot = None;
        for (i, &(name, version, delete, flush)) in ops.iter().enumerate() {
            let k = key(name, version);
            if delete {
                db.delete(&k, WriteOptions::default()).expect("delete");
            } else {
                db.put(&k, &[flush; 300], WriteOptions::default()).expect("put");
            }
            if flush == 0 {
                db.flush().expect("flush");
            }
            if i == snapshot_at {
                snapshot = Some(db.snapshot());
            }
        }
        let snapshot = snapshot.expect("taken");
        for name in probes {
            prop_assert_eq!(versions(&db, name, true), versions(&db, name, false));
            let lower = key(name, 0);
            let upper = key(name, u16::MAX);
            let bounds = (Bound::Included(&lower[..]), Bound::Included(&upper[..]));
            let (mut a, mut b) = (Vec::new(), Vec::new());
            snapshot
                .scan_in_prefix(&lower[..lower.len() - 2], bounds.0, bounds.1, Direction::Forward, |k, v| {
                    a.push((k.to_vec(), v.to_vec()));
                    true
                })
                .expect("scan");
            snapshot
                .scan(bounds.0, bounds.1, Direction::Forward, |k, v| {
                    b.push((k.to_vec(), v.to_vec()));
                    true
                })
                .expect("scan");
            prop_assert_eq!(a, b);
        }
    }
}
