//! Fuzzes the WAL's recovery reader: any bytes as a segment must verify or be rejected with a
//! typed damage, never panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_wal::format::{RecordScanner, SegmentHeader};

fuzz_target!(|data: &[u8]| {
    // Use the input as a whole segment, and also behind a valid header so the record scanner
    // is reached even when the fuzzer has not found the magic yet.
    let valid = SegmentHeader { salt: 0x5eed, first_lsn: 1 };
    let mut framed = valid.encode().to_vec();
    framed.extend_from_slice(data);
    for bytes in [data, &framed[..]] {
        if let Ok(header) = SegmentHeader::decode(bytes) {
            let mut scanner = RecordScanner::new(bytes, header, 1 << 20);
            let mut damaged = false;
            for item in scanner.by_ref() {
                damaged = item.is_err();
            }
            if damaged {
                let _ = scanner.durable_claim_after_damage();
            }
        }
    }
});
