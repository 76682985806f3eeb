//! The recovery reader on arbitrary bytes (the stable-toolchain twin of the `wal` fuzz target):
//! opening a log whose segment holds any bytes either recovers or fails with a typed error,
//! never panics, and what it recovers verifies on read.

use proptest::prelude::*;
use strata_wal::format::{SegmentHeader, segment_file_name};
use strata_wal::{Error, Wal, WalOptions};

fn options() -> WalOptions {
    WalOptions {
        record_bytes_max: 1 << 16,
        ..WalOptions::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn opening_arbitrary_segment_bytes_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        with_header in any::<bool>(),
        version in 1u32..=2,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bytes = Vec::new();
        if with_header {
            bytes.extend_from_slice(&SegmentHeader { salt: 77, first_lsn: 1, version }.encode());
        }
        bytes.extend_from_slice(&body);
        std::fs::write(dir.path().join(segment_file_name(1)), &bytes).expect("write");
        match Wal::open(dir.path(), options()) {
            Ok((wal, _)) => {
                for record in wal.read_from(wal.first_lsn()).expect("read") {
                    record.expect("recovered records verify");
                }
                wal.append(b"still works").expect("append after recovery");
            }
            Err(Error::Corruption { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error: {other}"),
        }
    }
}
