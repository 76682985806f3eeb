//! `cargo xtask bench sstable`: build rate, point gets (present and absent: the latter show the
//! bloom filter working), sequential scan, and file bytes per entry, for 1M entries of 16-byte
//! keys and 100-byte values (`-- --quick`: 100k). Prints `BENCH` lines, medians of 3 runs.

use std::path::Path;
use std::time::Instant;

use bench_support::print_bench;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_sstable::{ReadOptions, Table, TableBuilder, TableOptions};

const RUNS: usize = 3;

fn bench(name: &str, unit: &str, run: impl FnMut() -> f64) -> f64 {
    bench_support::bench(name, unit, RUNS, run)
}

fn build(path: &Path, keys: &[[u8; 16]], value: &[u8]) -> f64 {
    let _ = std::fs::remove_file(path);
    let start = Instant::now();
    let mut builder = TableBuilder::create(path, TableOptions::default()).expect("create");
    for k in keys {
        builder.add(k, value).expect("add");
    }
    builder.finish().expect("finish");
    let bytes = (keys.len() * (16 + value.len())) as f64;
    bytes / 1e6 / start.elapsed().as_secs_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 100_000 } else { 1_000_000 };
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-sstable");
    std::fs::create_dir_all(&root).expect("bench dir");
    let path = root.join("bench.sst");

    let mut rng = StdRng::seed_from_u64(42);
    let mut keys: Vec<[u8; 16]> = (0..n).map(|_| rng.random()).collect();
    keys.sort_unstable();
    keys.dedup();
    let value = [0x5au8; 100];

    bench("sstable_build", "MB/s", || build(&path, &keys, &value));
    let table = Table::open(&path, ReadOptions::default()).expect("open");
    print_bench(
        "sstable_file_bytes_per_entry",
        table.file_bytes() as f64 / keys.len() as f64,
        "bytes",
    );

    let lookups = n.min(200_000);
    let present: Vec<[u8; 16]> = (0..lookups)
        .map(|_| keys[rng.random_range(0..keys.len())])
        .collect();
    bench("sstable_get_present", "gets/s", || {
        let start = Instant::now();
        for k in &present {
            assert!(table.get(k).expect("get").is_some());
        }
        lookups as f64 / start.elapsed().as_secs_f64()
    });
    let absent: Vec<[u8; 16]> = (0..lookups).map(|_| rng.random()).collect();
    bench("sstable_get_absent", "gets/s", || {
        let start = Instant::now();
        for k in &absent {
            std::hint::black_box(table.get(k).expect("get"));
        }
        lookups as f64 / start.elapsed().as_secs_f64()
    });
    let false_positive_reads = absent.iter().filter(|k| table.may_contain(&k[..])).count();
    print_bench(
        "sstable_absent_filter_pass_rate",
        100.0 * false_positive_reads as f64 / lookups as f64,
        "percent",
    );
    bench("sstable_scan", "MB/s", || {
        let start = Instant::now();
        let mut bytes = 0usize;
        let mut iter = table.iter();
        iter.seek_to_first();
        while iter.valid() {
            bytes += iter.key().len() + iter.value().len();
            iter.advance();
        }
        assert_eq!(bytes, keys.len() * 116);
        bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
    });
    drop(table);
    let _ = std::fs::remove_dir_all(&root);
}
