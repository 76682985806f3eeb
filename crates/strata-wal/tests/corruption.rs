//! Corruption and truncation tests: flipped bits and cut files give the exact typed error, or
//! are cut off as a torn tail where that is what they are.

mod support;

use std::path::Path;
use strata_wal::format::{RecordScanner, SEGMENT_HEADER_BYTES, SegmentHeader};
use strata_wal::{Durability, Error, Wal, WalOptions};
use support::segments;

fn options() -> WalOptions {
    WalOptions {
        segment_bytes_max: 1024,
        record_bytes_max: 64 * 1024,
        durability: Durability::Sync,
        ..WalOptions::default()
    }
}

/// A log of `n` 100-byte records over several 1 KiB segments, written through the mapped tail
/// (whose segments are cut to their records when sealed and closed, as the tests rely on).
fn filled(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let mapped = WalOptions {
        mapped_tail: true,
        ..options()
    };
    let (wal, _) = Wal::open(dir.path(), mapped).expect("open");
    for i in 0..n {
        wal.append(&[i as u8; 100]).expect("append");
    }
    dir
}

/// Where each record of a segment starts and ends.
fn spans(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).expect("read");
    let header = SegmentHeader::decode(&bytes).expect("header");
    RecordScanner::new(&bytes, header, u32::MAX)
        .map(|r| r.expect("verifies"))
        .map(|r| (r.offset as usize, r.end as usize))
        .collect()
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset] ^= 0x10;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn a_bit_flip_in_a_sealed_segment_is_corruption_with_segment_and_offset() {
    let dir = filled(40);
    let files = segments(dir.path());
    assert!(files.len() >= 3, "{files:?}");
    let sealed = &files[1];
    // Inside the third record's payload, which ends its record.
    let (third, third_end) = spans(sealed)[2];
    flip(sealed, third_end - 50);
    match Wal::open(dir.path(), options()) {
        Err(Error::Corruption {
            segment,
            offset: at,
            ..
        }) => {
            assert_eq!(&segment, sealed);
            assert_eq!(at, third as u64);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn a_flipped_segment_header_is_corruption() {
    let dir = filled(40);
    let files = segments(dir.path());
    flip(&files[0], 3);
    assert!(matches!(
        Wal::open(dir.path(), options()),
        Err(Error::Corruption { offset: 0, .. })
    ));
}

#[test]
fn a_truncated_sealed_segment_is_corruption() {
    let dir = filled(40);
    let files = segments(dir.path());
    let len = std::fs::metadata(&files[0]).expect("stat").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[0])
        .expect("open");
    file.set_len(len - 7).expect("truncate");
    assert!(matches!(
        Wal::open(dir.path(), options()),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let dir = filled(40);
    let files = segments(dir.path());
    std::fs::remove_file(&files[1]).expect("remove");
    assert!(matches!(
        Wal::open(dir.path(), options()),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn damage_to_a_synced_record_is_corruption_when_later_records_prove_it_was_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(
        dir.path(),
        WalOptions {
            segment_bytes_max: 1 << 20,
            ..options()
        },
    )
    .expect("open");
    for i in 0..5u8 {
        wal.append(&[i; 100]).expect("append"); // each one synced
    }
    drop(wal);
    let files = segments(dir.path());
    let last = files.last().expect("a segment");
    let (_, second_end) = spans(last)[1];
    flip(last, second_end - 30); // the second record's payload
    assert!(matches!(
        Wal::open(dir.path(), options()),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn a_cut_in_the_last_segment_is_a_torn_tail_and_reported() {
    let dir = filled(40);
    let files = segments(dir.path());
    let last = files.last().expect("a segment");
    let len = std::fs::metadata(last).expect("stat").len();
    let (last_start, last_end) = *spans(last).last().expect("a record");
    assert_eq!(last_end as u64, len);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .expect("open");
    file.set_len(len - 30).expect("truncate");
    let (wal, report) = Wal::open(dir.path(), options()).expect("a torn tail is not an error");
    assert_eq!(report.torn_tail_bytes, (last_end - last_start - 30) as u64);
    assert_eq!(wal.next_lsn(), 40);
    // Appends continue after the cut, on a record boundary.
    wal.append(b"after").expect("append");
    drop(wal);
    let (wal, report) = Wal::open(dir.path(), options()).expect("reopen");
    assert_eq!(report.torn_tail_bytes, 0);
    let last = wal
        .read_from(40)
        .expect("read")
        .next()
        .expect("a record")
        .expect("valid");
    assert_eq!(last, (40, b"after".to_vec()));
}

#[test]
fn a_record_over_the_limit_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), options()).expect("open");
    let big = vec![0u8; 64 * 1024 + 1];
    assert!(matches!(
        wal.append(&big),
        Err(Error::RecordTooLarge { len, max }) if len == big.len() && max == 64 * 1024
    ));
    assert_eq!(wal.next_lsn(), 1, "nothing was appended");
}

#[test]
fn reopening_with_a_smaller_record_limit_loses_nothing() {
    let dir = filled(10);
    let small = WalOptions {
        record_bytes_max: 10,
        ..options()
    };
    let (wal, report) = Wal::open(dir.path(), small).expect("open");
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(wal.next_lsn(), 11);
    assert!(matches!(
        wal.append(&[0; 11]),
        Err(Error::RecordTooLarge { .. })
    ));
}

#[test]
fn a_last_segment_of_a_zeroed_header_is_an_interrupted_creation() {
    let dir = filled(40);
    let files = segments(dir.path());
    let next = {
        let (wal, _) = Wal::open(dir.path(), options()).expect("open");
        wal.next_lsn()
    };
    // A crash after the new segment's size reached the disk but before its header did.
    let torn = dir.path().join(strata_wal::format::segment_file_name(next));
    std::fs::write(&torn, [0u8; SEGMENT_HEADER_BYTES]).expect("write");
    let (wal, report) = Wal::open(dir.path(), options()).expect("recovers");
    assert_eq!(report.torn_tail_bytes, SEGMENT_HEADER_BYTES as u64);
    assert_eq!(wal.next_lsn(), next);
    assert_eq!(segments(dir.path()).len(), files.len());
}

#[test]
fn a_second_open_of_the_same_log_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), options()).expect("open");
    assert!(matches!(
        Wal::open(dir.path(), options()),
        Err(Error::Locked { .. })
    ));
    drop(wal);
    Wal::open(dir.path(), options()).expect("open after the first is closed");
}
