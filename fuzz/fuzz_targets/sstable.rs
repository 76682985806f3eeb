//! Fuzzes the table reader: any bytes as a table file must open and read, or fail with a typed
//! error, never panic or hang.
//!
//! Raw input alone almost never gets past the block checksums, so the input is also used as
//! four block contents (split by its first three bytes) assembled into a file with correct
//! trailers and footer: then every decoder sees fuzzed bytes.
#![no_main]

use std::path::Path;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use strata_sstable::testing::assemble_table;
use strata_sstable::{ReadOptions, Table};

fn exercise(bytes: Vec<u8>) {
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

fuzz_target!(|data: &[u8]| {
    exercise(data.to_vec());
    if data.len() >= 3 {
        let (cuts, rest) = data.split_at(3);
        let mut at = [0usize; 4];
        let mut sizes = cuts.iter().map(|&c| c as usize);
        for slot in at.iter_mut().skip(1) {
            *slot = sizes.next().unwrap_or(0);
        }
        let a = at[1].min(rest.len());
        let b = (a + at[2]).min(rest.len());
        let c = (b + at[3]).min(rest.len());
        exercise(assemble_table(&rest[..a], &rest[a..b], &rest[b..c], &rest[c..]));
    }
});
