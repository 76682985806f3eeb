//! `cargo xtask bench lsm`: Strata's LSM against RocksDB's own `db_bench` (Debian's
//! `rocksdb-tools`, which `cargo xtask bench lsm` installs if missing), same disk, same
//! settings: 16-byte keys, 100-byte values, 1M keys (`-- --quick`: 200k), WAL on without
//! per-write sync, a 32 MiB block cache, compression off, 64 MiB memtables, 10-bit bloom
//! filters. Everything else is each engine's default (RocksDB's compaction and L0 triggers
//! included). One run of each; the figures are noisy on a shared machine. Prints `BENCH`
//! lines for both and `RATIO lsm_<workload>_vs_rocksdb` (above 1: Strata ahead).
//!
//! Workloads as db_bench defines them: `fillseq`, `fillrandom`, `overwrite`, `readrandom`
//! (random keys over the key space, about 63% present after fillrandom), `seekrandom` (seek,
//! then 10 nexts), `readwhilewriting` (one reader, one writer; reader ops/s), and `fillsync`
//! (16 writers, sync every write).

use std::ops::Bound;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_lsm::{Db, Direction, Options, WriteOptions};

const VALUE_BYTES: usize = 100;
const CACHE_BYTES: usize = 32 * 1024 * 1024;
const FILLSYNC_WRITERS: usize = 16;
const FILLSYNC_PER_WRITER: u64 = 500;

fn key(k: u64) -> [u8; 16] {
    let mut out = [b'0'; 16];
    let s = format!("{k:016}");
    out.copy_from_slice(&s.as_bytes()[..16]);
    out
}

fn options() -> Options {
    Options {
        block_cache_bytes: CACHE_BYTES,
        ..Options::default()
    }
}

fn fresh(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn rate(ops: u64, start: Instant) -> f64 {
    ops as f64 / start.elapsed().as_secs_f64()
}

/// Strata's ops/s for every workload, in `WORKLOADS` order.
fn strata(root: &Path, n: u64) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    let value = [0x42u8; VALUE_BYTES];
    let w = WriteOptions::default();
    {
        let db = Db::open(&fresh(root, "strata-seq"), options()).expect("open");
        let start = Instant::now();
        for k in 0..n {
            db.put(&key(k), &value, w).expect("put");
        }
        out.push(("fillseq", rate(n, start)));
    }
    let db = Arc::new(Db::open(&fresh(root, "strata"), options()).expect("open"));
    let mut rng = StdRng::seed_from_u64(1);
    let start = Instant::now();
    for _ in 0..n {
        db.put(&key(rng.random_range(0..n)), &value, w)
            .expect("put");
    }
    out.push(("fillrandom", rate(n, start)));
    let start = Instant::now();
    for _ in 0..n {
        db.put(&key(rng.random_range(0..n)), &value, w)
            .expect("put");
    }
    out.push(("overwrite", rate(n, start)));
    let start = Instant::now();
    let mut found = 0u64;
    for _ in 0..n {
        if db.get(&key(rng.random_range(0..n))).expect("get").is_some() {
            found += 1;
        }
    }
    std::hint::black_box(found);
    out.push(("readrandom", rate(n, start)));
    let seeks = n / 10;
    let start = Instant::now();
    for _ in 0..seeks {
        let k = key(rng.random_range(0..n));
        let mut seen = 0;
        db.scan(
            Bound::Included(&k),
            Bound::Unbounded,
            Direction::Forward,
            |_, _| {
                seen += 1;
                seen < 11
            },
        )
        .expect("scan");
    }
    out.push(("seekrandom", rate(seeks, start)));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let db = Arc::clone(&db);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(2);
            while !stop.load(Ordering::Relaxed) {
                db.put(
                    &key(rng.random_range(0..n)),
                    &[0x43; VALUE_BYTES],
                    WriteOptions::default(),
                )
                .expect("put");
            }
        })
    };
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(db.get(&key(rng.random_range(0..n))).expect("get"));
    }
    out.push(("readwhilewriting", rate(n, start)));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    drop(db);
    let db = Arc::new(Db::open(&fresh(root, "strata-sync"), options()).expect("open"));
    let start = Instant::now();
    let writers: Vec<_> = (0..FILLSYNC_WRITERS as u64)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0..FILLSYNC_PER_WRITER {
                    db.put(
                        &key(t * 1_000_000 + i),
                        &[1; VALUE_BYTES],
                        WriteOptions { sync: true },
                    )
                    .expect("put");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    out.push((
        "fillsync",
        rate(FILLSYNC_WRITERS as u64 * FILLSYNC_PER_WRITER, start),
    ));
    out
}

/// Parses `name : ... X ops/sec` from db_bench's output.
fn parse_db_bench(output: &str, name: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.trim_start().strip_prefix(':')?;
        let ops_at = rest.find(" ops/sec")?;
        rest[..ops_at].split_whitespace().last()?.parse().ok()
    })
}

fn db_bench(root: &Path, benchmarks: &str, num: u64, extra: &[&str]) -> String {
    let dir = fresh(root, "rocksdb");
    let out = Command::new("db_bench")
        .arg(format!("--benchmarks={benchmarks}"))
        .arg(format!("--num={num}"))
        .arg(format!("--db={}", dir.display()))
        .args([
            "--key_size=16",
            "--value_size=100",
            "--compression_type=none",
            "--cache_size=33554432",
            "--write_buffer_size=67108864",
            "--sync=0",
            "--seek_nexts=10",
            "--statistics=0",
            // Strata's tables carry a 10-bits-per-key bloom filter; give RocksDB the same.
            "--bloom_bits=10",
        ])
        .args(extra)
        .output()
        .expect("run db_bench (install it with: apt-get install rocksdb-tools)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rocksdb(root: &Path, n: u64) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    let seq = db_bench(root, "fillseq", n, &[]);
    out.push(("fillseq", parse_db_bench(&seq, "fillseq").unwrap_or(0.0)));
    let main = db_bench(
        root,
        "fillrandom,overwrite,readrandom,seekrandom,readwhilewriting",
        n,
        &[],
    );
    for name in [
        "fillrandom",
        "overwrite",
        "readrandom",
        "seekrandom",
        "readwhilewriting",
    ] {
        out.push((name, parse_db_bench(&main, name).unwrap_or(0.0)));
    }
    let sync = db_bench(
        root,
        "fillsync",
        FILLSYNC_PER_WRITER * 1000,
        &["--threads=16"],
    );
    out.push(("fillsync", parse_db_bench(&sync, "fillsync").unwrap_or(0.0)));
    out
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 200_000 } else { 1_000_000 };
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-lsm");
    std::fs::create_dir_all(&root).expect("bench dir");
    let ours = strata(&root, n);
    let theirs = rocksdb(&root, n);
    for ((name, s), (_, r)) in ours.iter().zip(&theirs) {
        println!("BENCH lsm_{name} {s:.0} ops/s");
        println!("BENCH rocksdb_{name} {r:.0} ops/s");
        if *r > 0.0 {
            println!("RATIO lsm_{name}_vs_rocksdb {:.2}", s / r);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
