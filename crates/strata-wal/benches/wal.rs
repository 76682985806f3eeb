//! `cargo xtask bench wal`: the WAL against the disk and against okaywal, in one run on the
//! same disk (a directory under the target dir, not `/tmp`, which may be memory).
//!
//! Prints `BENCH <name> <value> <unit>` (median of the runs) and `RATIO <name> <value>` (above
//! 1 means Strata is ahead). `-- --quick` runs smaller sizes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bench_support::{alternate, fresh_dir, median, print_bench, print_ratio as ratio};
use strata_wal::{Durability, Wal, WalOptions};

const RUNS: usize = 5;

fn bench(name: &str, unit: &str, run: impl FnMut() -> f64) -> f64 {
    bench_support::bench(name, unit, RUNS, run)
}

/// Runs `a` and `b` alternately, `RUNS` times each, so that drift in the shared machine's disk
/// or CPU hits both alike; prints both medians and returns them.
fn bench_pair(
    (name_a, unit_a, a): (&str, &str, impl FnMut() -> f64),
    (name_b, unit_b, b): (&str, &str, impl FnMut() -> f64),
) -> (f64, f64) {
    let (xs, ys) = alternate(RUNS, a, b);
    let (x, y) = (median(xs), median(ys));
    print_bench(name_a, x, unit_a);
    print_bench(name_b, y, unit_b);
    (x, y)
}

/// The physical baseline: `write` + `fdatasync` of `bytes`-byte records, `count` times.
fn raw_write_fdatasync(root: &Path, bytes: usize, count: usize) -> Duration {
    let dir = fresh_dir(root, "raw");
    let mut file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("raw.log"))
        .expect("open");
    let record = vec![7u8; bytes];
    let start = Instant::now();
    for _ in 0..count {
        file.write_all(&record).expect("write");
        file.sync_data().expect("fdatasync");
    }
    start.elapsed()
}

fn open_wal(root: &Path, name: &str) -> Wal {
    let dir = fresh_dir(root, name);
    Wal::open(&dir, WalOptions::default()).expect("open").0
}

fn strata_single(root: &Path, bytes: usize, count: usize) -> Duration {
    let wal = open_wal(root, "single");
    let record = vec![7u8; bytes];
    let start = Instant::now();
    for _ in 0..count {
        wal.append(&record).expect("append");
    }
    start.elapsed()
}

/// Runs `writers` threads doing `per_writer` appends each through `append`; returns the
/// elapsed time and every append's latency.
fn concurrent(
    writers: usize,
    per_writer: usize,
    append: impl Fn(&[u8]) + Send + Sync + 'static,
) -> (Duration, Vec<Duration>) {
    let append = Arc::new(append);
    let barrier = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let append = Arc::clone(&append);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let record = [9u8; 128];
                let mut latencies = Vec::with_capacity(per_writer);
                barrier.wait();
                for _ in 0..per_writer {
                    let start = Instant::now();
                    append(&record);
                    latencies.push(start.elapsed());
                }
                latencies
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut latencies: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("writer"))
        .collect();
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    (elapsed, latencies)
}

fn percentile_micros(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1e6
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 1 } else { 4 };
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-wal");
    std::fs::create_dir_all(&root).expect("bench root");

    // 1. One writer, 128-byte records, durable.
    let n = 500 * scale;
    let (raw, single) = bench_pair(
        ("raw_fdatasync", "ops/s", || {
            n as f64 / raw_write_fdatasync(&root, 128, n).as_secs_f64()
        }),
        ("wal_single_writer", "appends/s", || {
            n as f64 / strata_single(&root, 128, n).as_secs_f64()
        }),
    );
    ratio("wal_single_vs_raw", single / raw);

    // 2. 64 concurrent writers, 128-byte records, durable: Strata against okaywal.
    let writers = 64;
    let per_writer = if quick { 50 } else { 500 };
    let total = (writers * per_writer) as f64;
    let mut strata_lat = (0.0, 0.0);
    let mut records_per_sync = 0.0;
    let mut okay_lat = (0.0, 0.0);
    let (strata, okay) = bench_pair(
        ("wal_64_writers", "records/s", || {
            let wal = open_wal(&root, "strata64");
            let metrics_of = wal.clone();
            let (elapsed, lat) = concurrent(writers, per_writer, move |r| {
                wal.append(r).expect("append");
            });
            records_per_sync = metrics_of.metrics().records_per_sync();
            strata_lat = (percentile_micros(&lat, 0.5), percentile_micros(&lat, 0.99));
            total / elapsed.as_secs_f64()
        }),
        ("okaywal_64_writers", "records/s", || {
            let dir = fresh_dir(&root, "okaywal64");
            let wal = okaywal::WriteAheadLog::recover(&dir, okaywal::LogVoid).expect("okaywal");
            let (elapsed, lat) = concurrent(writers, per_writer, move |r| {
                let mut entry = wal.begin_entry().expect("begin");
                entry.write_chunk(r).expect("chunk");
                entry.commit().expect("commit");
            });
            okay_lat = (percentile_micros(&lat, 0.5), percentile_micros(&lat, 0.99));
            total / elapsed.as_secs_f64()
        }),
    );
    // Latencies of the last run of each.
    print_bench("wal_64_writers_p50", strata_lat.0, "us");
    print_bench("wal_64_writers_p99", strata_lat.1, "us");
    print_bench(
        "wal_64_writers_records_per_sync",
        records_per_sync,
        "records",
    );
    print_bench("okaywal_64_writers_p50", okay_lat.0, "us");
    print_bench("okaywal_64_writers_p99", okay_lat.1, "us");
    ratio("wal_64_writers_vs_okaywal", strata / okay);

    // 3. 1 MiB records: against the disk's sequential write + fdatasync rate.
    let mib = 1 << 20;
    let count = 16 * scale;
    let mb = (count * mib) as f64 / 1e6;
    let (raw_mb, wal_mb) = bench_pair(
        ("raw_1mib_fdatasync", "MB/s", || {
            mb / raw_write_fdatasync(&root, mib, count).as_secs_f64()
        }),
        ("wal_1mib_records", "MB/s", || {
            mb / strata_single(&root, mib, count).as_secs_f64()
        }),
    );
    ratio("wal_1mib_vs_raw", wal_mb / raw_mb);

    // 4. Recovery: open a log of 1 GiB (64 MiB with --quick), page cache warm.
    let bytes: usize = if quick { 64 << 20 } else { 1 << 30 };
    let dir = fresh_dir(&root, "recovery");
    {
        let options = WalOptions {
            durability: Durability::NoSync,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(&dir, options).expect("open");
        let record = vec![3u8; 64 * 1024];
        for _ in 0..bytes / record.len() {
            wal.append(&record).expect("append");
        }
        wal.sync().expect("sync");
    }
    bench("wal_recovery", "MB/s", || {
        let start = Instant::now();
        let (_wal, report) = Wal::open(&dir, WalOptions::default()).expect("recover");
        assert_eq!(report.torn_tail_bytes, 0);
        bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
    });
    let _ = std::fs::remove_dir_all(&root);
}
