//! Fuzzes the WAL's recovery reader: any bytes as a segment must verify or be rejected with a
//! typed damage, never panic or hang, in either format version's framing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_wal::format::{RecordScanner, SegmentHeader};

fuzz_target!(|data: &[u8]| {
    // Use the input as a whole segment, and also behind a valid header so the record scanner
    // is reached even when the fuzzer has not found the magic yet.
    let framed = |version: u32| {
        let valid = SegmentHeader { salt: 0x5eed, first_lsn: 1, version };
        let mut framed = valid.encode().to_vec();
        framed.extend_from_slice(data);
        framed
    };
    let (v1, v2) = (framed(1), framed(2));
    for bytes in [data, &v1[..], &v2[..]] {
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
