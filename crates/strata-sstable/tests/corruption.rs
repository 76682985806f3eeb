//! A flipped bit in every block type, every truncation, and a newer format version: each gives
//! a typed error naming the file and offset, never a panic or wrong data.

use std::path::{Path, PathBuf};

use strata_sstable::{
    Error, FOOTER_BYTES, FORMAT_VERSION, ReadOptions, Table, TableBuilder, TableOptions,
};

fn build(dir: &Path) -> PathBuf {
    let path = dir.join("t.sst");
    let mut builder = TableBuilder::create(
        &path,
        TableOptions {
            block_bytes: 512,
            ..TableOptions::default()
        },
    )
    .expect("create");
    for i in 0..200u32 {
        builder
            .add(format!("key-{i:05}").as_bytes(), &[i as u8; 20])
            .expect("add");
    }
    builder.set_property("user.note", b"hello").expect("prop");
    builder.finish().expect("finish");
    path
}

/// (offset, size) of the index, filter and properties blocks, from the footer.
fn handles(bytes: &[u8]) -> [(u64, u32); 3] {
    let footer = &bytes[bytes.len() - FOOTER_BYTES..];
    let handle = |at: usize| {
        (
            u64::from_le_bytes(footer[at..at + 8].try_into().expect("8")),
            u32::from_le_bytes(footer[at + 8..at + 12].try_into().expect("4")),
        )
    };
    [handle(0), handle(12), handle(24)]
}

fn flipped(path: &Path, at: usize) -> PathBuf {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x08;
    let out = path.with_file_name(format!("flipped-{at}.sst"));
    std::fs::write(&out, bytes).expect("write");
    out
}

fn corruption_at(result: Result<impl std::fmt::Debug, Error>, offset: u64, what: &str) {
    match result {
        Err(Error::Corruption { offset: at, .. }) => assert_eq!(at, offset, "{what}"),
        other => panic!("{what}: expected corruption at {offset}, got {other:?}"),
    }
}

#[test]
fn a_flipped_bit_in_any_metadata_block_fails_the_open_with_its_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = build(dir.path());
    let bytes = std::fs::read(&path).expect("read");
    let [index, filter, properties] = handles(&bytes);
    for (name, (offset, size)) in [
        ("index", index),
        ("filter", filter),
        ("properties", properties),
    ] {
        // The first byte, the middle, and the trailer's checksum.
        for at in [
            offset,
            offset + u64::from(size) / 2,
            offset + u64::from(size) + 2,
        ] {
            let damaged = flipped(&path, at as usize);
            corruption_at(Table::open(&damaged, ReadOptions::default()), offset, name);
        }
    }
    let footer_at = bytes.len() - FOOTER_BYTES;
    // Handles, version, checksum, the reserved bytes (outside the checksum), the magic.
    for at in [
        footer_at,
        footer_at + 20,
        footer_at + 38,
        footer_at + 42,
        footer_at + 45,
        bytes.len() - 1,
    ] {
        let damaged = flipped(&path, at);
        corruption_at(
            Table::open(&damaged, ReadOptions::default()),
            footer_at as u64,
            "footer",
        );
    }
}

#[test]
fn a_flipped_bit_in_a_data_block_is_found_by_reads_and_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = build(dir.path());
    let bytes = std::fs::read(&path).expect("read");
    let [_, filter, _] = handles(&bytes);
    let data_end = filter.0 as usize;
    // Every 97th byte of the data region: headers, keys, values, restarts, trailers.
    for at in (0..data_end).step_by(97) {
        let damaged = flipped(&path, at);
        let table = Table::open(&damaged, ReadOptions::default()).expect("metadata is intact");
        assert!(
            matches!(table.check(), Err(Error::Corruption { .. })),
            "flip at {at} not found by check"
        );
        // No read returns the damaged block's contents.
        let mut damaged_seen = false;
        for item in table.iter() {
            match item {
                Ok((key, value)) => {
                    let i: u32 = std::str::from_utf8(&key[4..])
                        .expect("a key we wrote")
                        .parse()
                        .expect("a number");
                    assert_eq!(
                        &value[..],
                        &[i as u8; 20],
                        "wrong data after a flip at {at}"
                    );
                }
                Err(Error::Corruption { .. }) => {
                    damaged_seen = true;
                    break;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert!(
            damaged_seen,
            "flip at {at}: the scan never reported the damage"
        );
    }
}

#[test]
fn every_truncation_fails_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = build(dir.path());
    let bytes = std::fs::read(&path).expect("read");
    for len in (0..bytes.len()).step_by(13).chain([bytes.len() - 1]) {
        let cut = dir.path().join("cut.sst");
        std::fs::write(&cut, &bytes[..len]).expect("write");
        assert!(
            Table::open(&cut, ReadOptions::default()).is_err(),
            "a table cut to {len} bytes opened"
        );
    }
}

#[test]
fn a_newer_format_version_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = build(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    let footer_at = bytes.len() - FOOTER_BYTES;
    let newer_version = FORMAT_VERSION + 1;
    bytes[footer_at + 36..footer_at + 40].copy_from_slice(&newer_version.to_le_bytes());
    let crc = crc32fast::hash(&bytes[footer_at..footer_at + 40]);
    bytes[footer_at + 40..footer_at + 44].copy_from_slice(&crc.to_le_bytes());
    let newer = dir.path().join("newer.sst");
    std::fs::write(&newer, &bytes).expect("write");
    assert!(matches!(
        Table::open(&newer, ReadOptions::default()),
        Err(Error::UnsupportedVersion {
            found,
            supported: FORMAT_VERSION,
            ..
        }) if found == newer_version
    ));
}

#[test]
fn a_handle_at_the_end_of_the_address_space_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = build(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    let footer_at = bytes.len() - FOOTER_BYTES;
    // Point the index handle at u64::MAX - 2, and give the footer a valid checksum.
    bytes[footer_at..footer_at + 8].copy_from_slice(&(u64::MAX - 2).to_le_bytes());
    let crc = crc32fast::hash(&bytes[footer_at..footer_at + 40]);
    bytes[footer_at + 40..footer_at + 44].copy_from_slice(&crc.to_le_bytes());
    let hostile = dir.path().join("hostile.sst");
    std::fs::write(&hostile, &bytes).expect("write");
    assert!(matches!(
        Table::open(&hostile, ReadOptions::default()),
        Err(Error::Corruption { .. })
    ));
}
