//! Tables written by older releases still read. The fixtures were written by format 1's code
//! (fixed-width entry headers) and are never regenerated: 300 keys `key-00000` to `key-00299`
//! over 512-byte blocks with a restart point every 4 entries, one file uncompressed and one
//! with LZ4.

use std::path::Path;

use strata_sstable::{ReadOptions, Table};

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-")
        .repeat((i % 7 + 1) as usize)
        .into_bytes()
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

fn fixture(name: &str) -> Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Table::open(&path, ReadOptions::default()).expect("a format 1 table opens")
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
