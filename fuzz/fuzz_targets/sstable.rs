//! Fuzzes the table reader: any bytes as a table file must open and read, or fail with a typed
//! error, never panic or hang.
#![no_main]

use std::path::Path;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata_sstable::{ReadOptions, Table, TABLE_MAGIC};

fuzz_target!(|data: &[u8]| {
    // Also try the input with a valid magic at the end, so the fuzzer reaches past the footer
    // check without having to discover the magic first.
    let mut with_magic = data.to_vec();
    with_magic.extend_from_slice(&TABLE_MAGIC);
    for bytes in [data.to_vec(), with_magic] {
        if let Ok(table) = Table::from_bytes(Path::new("fuzz"), Bytes::from(bytes), ReadOptions::default()) {
            let _ = table.check();
            let _ = table.get(b"key");
            let mut iter = table.iter();
            iter.seek_to_last();
            while iter.valid() {
                iter.prev();
            }
            for item in table.iter() {
                if item.is_err() {
                    break;
                }
            }
        }
    }
});
