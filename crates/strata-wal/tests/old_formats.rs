//! Logs written in format version 1 (fixed 24-byte record headers) still open: their records
//! read back, a torn version 1 tail is cut as before, appends continue the version 1 tail in its
//! own framing, and new segments are written in the current version.

mod support;

use std::path::Path;

use strata_wal::format::{
    FORMAT_VERSION, SEGMENT_HEADER_BYTES, SegmentHeader, encode_record, segment_file_name,
};
use strata_wal::{Durability, Wal, WalOptions};
use support::segments;

/// Writes a version 1 segment starting at `first_lsn` with `payloads`, every record claiming
/// the one before it durable.
fn write_v1_segment(dir: &Path, first_lsn: u64, payloads: &[Vec<u8>]) -> Vec<u8> {
    let header = SegmentHeader {
        salt: 0x1234_5679,
        first_lsn,
        version: 1,
    };
    let mut bytes = header.encode().to_vec();
    for (i, payload) in payloads.iter().enumerate() {
        let lsn = first_lsn + i as u64;
        encode_record(&mut bytes, &header, lsn, lsn - 1, payload);
    }
    std::fs::write(dir.join(segment_file_name(first_lsn)), &bytes).expect("write");
    bytes
}

fn payload(i: u64) -> Vec<u8> {
    format!("record {i} ")
        .repeat((i % 5 + 1) as usize)
        .into_bytes()
}

fn versions(dir: &Path) -> Vec<u32> {
    segments(dir)
        .iter()
        .map(|p| {
            SegmentHeader::decode(&std::fs::read(p).expect("read"))
                .expect("header")
                .version
        })
        .collect()
}

fn options() -> WalOptions {
    WalOptions {
        segment_bytes_max: 4096,
        durability: Durability::Sync,
        ..WalOptions::default()
    }
}

#[test]
fn a_version_1_log_reads_appends_in_its_framing_and_rotates_into_the_current_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_v1_segment(dir.path(), 1, &(1..=20).map(payload).collect::<Vec<_>>());
    write_v1_segment(dir.path(), 21, &(21..=30).map(payload).collect::<Vec<_>>());

    // Through the mapped tail: a version 1 tail is written in its framing either way.
    let mapped = WalOptions {
        mapped_tail: true,
        ..options()
    };
    let (wal, recovery) = Wal::open(dir.path(), mapped).expect("a version 1 log opens");
    assert_eq!(recovery.records, 30);
    assert_eq!(recovery.torn_tail_bytes, 0);
    // Enough appends to fill the version 1 tail and roll over into new segments.
    for i in 31..=100 {
        assert_eq!(wal.append(&payload(i)).expect("append"), i);
    }
    let read: Vec<(u64, Vec<u8>)> = wal
        .read_from(1)
        .expect("read")
        .map(|r| r.expect("verifies"))
        .collect();
    assert_eq!(read, (1..=100).map(|i| (i, payload(i))).collect::<Vec<_>>());
    drop(wal);

    let found = versions(dir.path());
    assert_eq!(&found[..2], &[1, 1], "the old segments keep their version");
    assert!(found.len() > 2, "appends rolled over into new segments");
    assert!(found[2..].iter().all(|&v| v == FORMAT_VERSION));

    let (wal, recovery) = Wal::open(dir.path(), options()).expect("reopens");
    assert_eq!(recovery.records, 100);
    let read: Vec<u64> = wal
        .read_from(1)
        .expect("read")
        .map(|r| r.expect("verifies").0)
        .collect();
    assert_eq!(read, (1..=100).collect::<Vec<_>>());
}

#[test]
fn a_torn_version_1_tail_is_cut_and_the_records_before_it_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = write_v1_segment(dir.path(), 1, &(1..=5).map(payload).collect::<Vec<_>>());
    // Tear the last record: cut it half-way.
    let path = dir.path().join(segment_file_name(1));
    let last_len = 24 + payload(5).len();
    std::fs::write(&path, &bytes[..bytes.len() - last_len / 2]).expect("tear");
    let (wal, recovery) = Wal::open(dir.path(), options()).expect("opens");
    assert_eq!(recovery.records, 4);
    assert_eq!(recovery.torn_tail_bytes, (last_len - last_len / 2) as u64);
    assert_eq!(wal.append(b"after").expect("append"), 5);
    drop(wal);
    let (wal, recovery) = Wal::open(dir.path(), options()).expect("reopens");
    assert_eq!(recovery.records, 5);
    let last = wal.read_from(5).expect("read").next().expect("a record");
    assert_eq!(last.expect("verifies"), (5, b"after".to_vec()));
    assert!(std::fs::metadata(&path).expect("stat").len() > SEGMENT_HEADER_BYTES as u64);
}
