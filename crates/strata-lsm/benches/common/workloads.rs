//! The LSM benchmark's workloads, written once against a small [`Engine`] trait and run on each
//! embedded engine in a process of its own: Strata from `benches/lsm.rs`, fjall from
//! `bench/fjall` (which includes this file), so that both do exactly the same work.
//!
//! A child process is started as `BIN --child main|writes --dir DIR --keys N` (or `fillseq`,
//! for profiling that workload alone) and prints one
//! `RESULT <workload> <ops/s>` line per workload. `main` runs every workload in db_bench's
//! order; `writes` runs `fillrandom` then `overwrite`, waits for the engine's background flushes
//! and compactions to finish, and closes the store, so that the parent can divide the bytes
//! the process wrote to disk by the bytes of keys and values it wrote.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Key and value sizes, as db_bench's `--key_size=16 --value_size=100`.
pub const KEY_BYTES: usize = 16;
/// See [`KEY_BYTES`].
pub const VALUE_BYTES: usize = 100;
/// Writers in `fillsync`, and sync writes each (db_bench: `--threads=16`, `num / 1000` each).
pub const FILLSYNC_WRITERS: u64 = 16;
/// See [`FILLSYNC_WRITERS`].
pub const FILLSYNC_PER_WRITER: u64 = 500;
/// Entries read after each seek in `seekrandom` (db_bench: `--seek_nexts=10`).
pub const SEEK_NEXTS: usize = 10;

/// What the workloads need from an engine.
pub trait Engine: Send + Sync + 'static {
    /// Writes without waiting for an fsync.
    fn put(&self, key: &[u8], value: &[u8]);
    /// Writes and returns once the write is durable.
    fn put_sync(&self, key: &[u8], value: &[u8]);
    /// Reads `key`; whether it was found.
    fn get(&self, key: &[u8]) -> bool;
    /// Reads up to `n` entries from the first key at or after `key`; how many there were.
    fn seek_scan(&self, key: &[u8], n: usize) -> usize;
    /// Returns once the engine's background flushes and compactions are done (db_bench's
    /// `waitforcompaction`), so that the bytes written are those of work finished rather than
    /// of whatever was under way when the store was closed.
    fn settle(&self);
}

/// db_bench's key for `k`: the number, zero-padded to 16 digits.
pub fn key(k: u64) -> [u8; KEY_BYTES] {
    let mut out = [b'0'; KEY_BYTES];
    let mut k = k;
    for byte in out.iter_mut().rev() {
        *byte = b'0' + (k % 10) as u8;
        k /= 10;
    }
    out
}

fn rate(ops: u64, start: Instant) -> f64 {
    ops as f64 / start.elapsed().as_secs_f64()
}

fn fresh(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let _ = std::fs::remove_dir_all(&path);
    path
}

/// `fillseq` alone (for profiling).
pub fn run_fillseq<E: Engine>(
    open: &dyn Fn(&Path) -> E,
    dir: &Path,
    n: u64,
) -> Vec<(&'static str, f64)> {
    let value = [0x42u8; VALUE_BYTES];
    let db = open(&fresh(dir, "seq"));
    let start = Instant::now();
    for k in 0..n {
        db.put(&key(k), &value);
    }
    vec![("fillseq", rate(n, start))]
}

/// Every workload, in db_bench's order: ops/s for each.
pub fn run_main<E: Engine>(
    open: &dyn Fn(&Path) -> E,
    dir: &Path,
    n: u64,
) -> Vec<(&'static str, f64)> {
    let mut out = run_fillseq(open, dir, n);
    let value = [0x42u8; VALUE_BYTES];
    let db = Arc::new(open(&fresh(dir, "random")));
    let mut rng = StdRng::seed_from_u64(1);
    let start = Instant::now();
    for _ in 0..n {
        db.put(&key(rng.random_range(0..n)), &value);
    }
    out.push(("fillrandom", rate(n, start)));
    let start = Instant::now();
    for _ in 0..n {
        db.put(&key(rng.random_range(0..n)), &value);
    }
    out.push(("overwrite", rate(n, start)));
    let start = Instant::now();
    let mut found = 0u64;
    for _ in 0..n {
        found += u64::from(db.get(&key(rng.random_range(0..n))));
    }
    std::hint::black_box(found);
    out.push(("readrandom", rate(n, start)));
    let seeks = n / 10;
    let start = Instant::now();
    let mut seen = 0usize;
    for _ in 0..seeks {
        seen += db.seek_scan(&key(rng.random_range(0..n)), SEEK_NEXTS + 1);
    }
    std::hint::black_box(seen);
    out.push(("seekrandom", rate(seeks, start)));
    // One reader (measured) and one writer, as db_bench's readwhilewriting.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let db = Arc::clone(&db);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut rng = StdRng::seed_from_u64(2);
            while !stop.load(Ordering::Relaxed) {
                db.put(&key(rng.random_range(0..n)), &[0x43; VALUE_BYTES]);
            }
        })
    };
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(db.get(&key(rng.random_range(0..n))));
    }
    out.push(("readwhilewriting", rate(n, start)));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
    drop(db);
    let db = Arc::new(open(&fresh(dir, "sync")));
    let start = Instant::now();
    let writers: Vec<_> = (0..FILLSYNC_WRITERS)
        .map(|t| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0..FILLSYNC_PER_WRITER {
                    db.put_sync(&key(t * 1_000_000 + i), &[1; VALUE_BYTES]);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer thread");
    }
    out.push((
        "fillsync",
        rate(FILLSYNC_WRITERS * FILLSYNC_PER_WRITER, start),
    ));
    out
}

/// `fillrandom` then `overwrite`, then the background work is waited for and the store is
/// closed: `2 * n` writes of `KEY_BYTES + VALUE_BYTES` bytes.
pub fn run_writes<E: Engine>(
    open: &dyn Fn(&Path) -> E,
    dir: &Path,
    n: u64,
) -> Vec<(&'static str, f64)> {
    let value = [0x42u8; VALUE_BYTES];
    let db = open(&fresh(dir, "writes"));
    let mut rng = StdRng::seed_from_u64(1);
    let start = Instant::now();
    for _ in 0..2 * n {
        db.put(&key(rng.random_range(0..n)), &value);
    }
    let out = vec![("writes", rate(2 * n, start))];
    db.settle();
    drop(db);
    out
}

/// The child side: if the arguments are `--child MODE --dir DIR --keys N`, runs MODE, prints
/// its `RESULT` lines and returns true.
pub fn child<E: Engine>(open: &dyn Fn(&Path) -> E) -> bool {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let Some(mode) = value("--child") else {
        return false;
    };
    let dir = PathBuf::from(value("--dir").expect("--dir DIR"));
    let n: u64 = value("--keys")
        .expect("--keys N")
        .parse()
        .expect("--keys is a number");
    std::fs::create_dir_all(&dir).expect("create the benchmark directory");
    let results = match mode.as_str() {
        "main" => run_main(open, &dir, n),
        "writes" => run_writes(open, &dir, n),
        "fillseq" => run_fillseq(open, &dir, n),
        other => panic!("unknown child mode {other}"),
    };
    for (name, ops) in results {
        println!("RESULT {name} {ops:.1}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    true
}
