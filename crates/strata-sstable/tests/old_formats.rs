//! Tables written by older releases still read. The fixtures are never regenerated. Each holds
//! 300 keys `key-00000` to `key-00299` over 512-byte blocks with a restart point every 4
//! entries and a bloom filter of 10 bits per key:
//! - `format-1.sst` and `format-1-lz4.sst` (uncompressed, and LZ4), written by format 1's code
//!   (fixed-width entry headers);
//! - `format-2-parts.sst`, written by format 2's code (varint entry headers, a spread filter
//!   over FNV-1a hashes) with each key's first 7 bytes recorded in the filter as a part
//!   (`add_with_filter_part(key, value, 7)`: `key-000`, `key-001`, `key-002`).

use std::path::Path;

use strata_sstable::{FilterProbe, ReadOptions, Table};

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-")
        .repeat((i % 7 + 1) as usize)
        .into_bytes()
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn fixture(name: &str) -> Table {
    // (Opens any of the fixtures, whatever its format.)
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Table::open(&path, ReadOptions::default()).expect("an old table opens")
}

#[test]
fn format_1_tables_read_and_check_as_written() {
    for name in ["format-1.sst", "format-1-lz4.sst"] {
        let table = fixture(name);
        assert_eq!(table.format_version(), 1, "{name}");
        assert_eq!(table.check().expect("checks"), 300, "{name}");
        for i in 0..300 {
            let got = table.get(&key(i)).expect("reads");
            assert_eq!(got.as_deref(), Some(&value(i)[..]), "{name}: key {i}");
        }
        assert_eq!(table.get(b"key-00300").expect("reads"), None);
        assert_eq!(table.get(b"key-000005").expect("reads"), None);
        // Forward, then back from the last entry, then from a seek.
        let forward: Vec<Vec<u8>> = table.iter().map(|e| e.expect("walks").0).collect();
        assert_eq!(forward, (0..300).map(key).collect::<Vec<_>>(), "{name}");
        let mut iter = table.iter();
        iter.seek_to_last();
        let mut backward = Vec::new();
        while iter.valid() {
            backward.push(iter.key().to_vec());
            iter.prev();
        }
        assert!(iter.status().is_none());
        assert_eq!(
            backward,
            (0..300).rev().map(key).collect::<Vec<_>>(),
            "{name}"
        );
        iter.seek(b"key-00150x");
        assert_eq!(iter.key(), &key(151)[..]);
        assert_eq!(&iter.value()[..], &value(151)[..]);
        iter.prev();
        assert_eq!(iter.key(), &key(150)[..]);
    }
}

#[test]
fn format_2_tables_and_their_filters_read_as_written() {
    let table = fixture("format-2-parts.sst");
    assert_eq!(table.format_version(), 2);
    assert_eq!(table.check().expect("checks"), 300);
    for i in 0..300 {
        assert!(table.may_contain(&key(i)), "key {i}");
        let key_i = key(i);
        let probe = FilterProbe::new(&key_i);
        assert!(table.may_contain_probe(&probe), "key {i}");
        let got = table.get(&key(i)).expect("reads");
        assert_eq!(got.as_deref(), Some(&value(i)[..]), "key {i}");
    }
    for part in [&b"key-000"[..], b"key-001", b"key-002"] {
        assert!(table.may_contain(part));
        assert!(table.may_contain_probe(&FilterProbe::new(part)));
    }
    // Absent keys and parts this file's filter rules out (it is fixed, so this is too): asked
    // with the hash of format 3's filters, they would be noise.
    for absent in [&b"key-003"[..], b"key-009", b"other-1", b"key-00300"] {
        assert!(!table.may_contain(absent), "{absent:?}");
        assert!(
            !table.may_contain_probe(&FilterProbe::new(absent)),
            "{absent:?}"
        );
        assert_eq!(table.get(absent).expect("reads"), None);
    }
}
