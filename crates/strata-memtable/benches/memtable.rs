//! `cargo xtask bench memtable`: 1M random 16-byte keys with 100-byte values (`-- --quick`:
//! 200k). Inserts/s from 1 and 2 threads, random versioned gets/s, full scan entries/s, and
//! memory per entry, for Strata's memtable, `crossbeam_skiplist::SkipMap` and a `BTreeMap`
//! behind a `parking_lot::RwLock`, all in the same run. Prints `BENCH` lines (medians of 3)
//! and `RATIO`s against crossbeam (above 1: Strata ahead).
//!
//! Memory is measured with a counting global allocator (bytes live after building, minus
//! before); the memtable's is its arena bytes in use.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use bench_support::{median, print_bench, print_ratio};
use crossbeam_skiplist::SkipMap;
use parking_lot::RwLock;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_memtable::{Memtable, ValueKind};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counter is a side
// effect only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const RUNS: usize = 3;
type Key = [u8; 16];
type InternalKey = (Key, Reverse<u64>);

fn report(name: &str, unit: &str, xs: Vec<f64>) -> f64 {
    let value = median(xs);
    print_bench(name, value, unit);
    value
}

/// Splits `keys` among `threads` and runs `insert` on each part concurrently.
fn parallel<T: Send + Sync + 'static>(
    target: &Arc<T>,
    keys: &Arc<Vec<Key>>,
    threads: usize,
    insert: fn(&T, &Key, u64),
) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let target = Arc::clone(target);
            let keys = Arc::clone(keys);
            std::thread::spawn(move || {
                let chunk = keys.len().div_ceil(threads);
                let begin = t * chunk;
                for (i, k) in keys.iter().enumerate().skip(begin).take(chunk) {
                    insert(&target, k, i as u64 + 1);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("insert thread");
    }
    keys.len() as f64 / start.elapsed().as_secs_f64()
}

const VALUE: [u8; 100] = [0x42; 100];

fn strata_new(n: usize) -> Memtable {
    Memtable::with_capacity(n * 192 + (1 << 20))
}

fn strata_insert(t: &Memtable, k: &Key, seq: u64) {
    t.insert(k, seq, ValueKind::Put, &VALUE).expect("insert");
}

fn crossbeam_insert(t: &SkipMap<InternalKey, Vec<u8>>, k: &Key, seq: u64) {
    t.insert((*k, Reverse(seq)), VALUE.to_vec());
}

fn btree_insert(t: &RwLock<BTreeMap<InternalKey, Vec<u8>>>, k: &Key, seq: u64) {
    t.write().insert((*k, Reverse(seq)), VALUE.to_vec());
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 200_000 } else { 1_000_000 };
    let mut rng = StdRng::seed_from_u64(7);
    let keys: Arc<Vec<Key>> = Arc::new((0..n).map(|_| rng.random()).collect());
    let probes: Vec<Key> = (0..n.min(500_000))
        .map(|_| keys[rng.random_range(0..keys.len())])
        .collect();

    // Inserts from 1 and 2 threads (the RwLock'd BTreeMap only from 1: with 2 it serialises).
    let mut results = Vec::new();
    for threads in [1usize, 2] {
        let s = report(
            &format!("memtable_insert_{threads}t"),
            "inserts/s",
            (0..RUNS)
                .map(|_| parallel(&Arc::new(strata_new(n)), &keys, threads, strata_insert))
                .collect(),
        );
        let c = report(
            &format!("crossbeam_insert_{threads}t"),
            "inserts/s",
            (0..RUNS)
                .map(|_| parallel(&Arc::new(SkipMap::new()), &keys, threads, crossbeam_insert))
                .collect(),
        );
        let b = report(
            &format!("btreemap_rwlock_insert_{threads}t"),
            "inserts/s",
            (0..RUNS)
                .map(|_| {
                    parallel(
                        &Arc::new(RwLock::new(BTreeMap::new())),
                        &keys,
                        threads,
                        btree_insert,
                    )
                })
                .collect(),
        );
        results.push((threads, s, c, b));
    }
    for (threads, s, c, b) in &results {
        print_ratio(&format!("memtable_insert_{threads}t_vs_crossbeam"), s / c);
        print_ratio(&format!("memtable_insert_{threads}t_vs_btreemap"), s / b);
    }
    if let Some((_, s, c, _)) = results.first() {
        print_ratio("memtable_insert_vs_crossbeam", s / c);
    }

    // Build each once more for reads, measuring memory. The memtable's figure is its arena bytes
    // in use (its capacity is reserved up front, as an LSM sizes memtables); the others' are the
    // bytes they asked the allocator for, which leaves out malloc's own per-allocation overhead
    // on their side, so the comparison slightly favours them.
    let strata = Arc::new(strata_new(n));
    parallel(&strata, &keys, 1, strata_insert);
    let strata_bytes = strata.approximate_bytes() as f64;
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let crossbeam = Arc::new(SkipMap::new());
    parallel(&crossbeam, &keys, 1, crossbeam_insert);
    let crossbeam_bytes = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64;
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let btree = Arc::new(RwLock::new(BTreeMap::new()));
    parallel(&btree, &keys, 1, btree_insert);
    let btree_bytes = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64;
    print_bench("memtable_bytes_per_entry", strata_bytes / n as f64, "bytes");
    print_bench(
        "crossbeam_bytes_per_entry",
        crossbeam_bytes / n as f64,
        "bytes",
    );
    print_bench("btreemap_bytes_per_entry", btree_bytes / n as f64, "bytes");
    print_ratio(
        "memtable_memory_vs_crossbeam",
        crossbeam_bytes / strata_bytes,
    );

    // Random versioned gets: the newest version of a key at the latest snapshot.
    let gets = |f: &dyn Fn(&Key) -> bool| -> f64 {
        let start = Instant::now();
        for k in &probes {
            assert!(f(k));
        }
        probes.len() as f64 / start.elapsed().as_secs_f64()
    };
    let s = report(
        "memtable_get",
        "gets/s",
        (0..RUNS)
            .map(|_| gets(&|k| strata.get(k, u64::MAX).is_some()))
            .collect(),
    );
    let c = report(
        "crossbeam_get",
        "gets/s",
        (0..RUNS)
            .map(|_| {
                gets(&|k| {
                    crossbeam
                        .range((*k, Reverse(u64::MAX))..)
                        .next()
                        .is_some_and(|e| e.key().0 == *k)
                })
            })
            .collect(),
    );
    let b = report(
        "btreemap_rwlock_get",
        "gets/s",
        (0..RUNS)
            .map(|_| {
                gets(&|k| {
                    btree
                        .read()
                        .range((Bound::Included((*k, Reverse(u64::MAX))), Bound::Unbounded))
                        .next()
                        .is_some_and(|(key, _)| key.0 == *k)
                })
            })
            .collect(),
    );
    print_ratio("memtable_get_vs_crossbeam", s / c);
    print_ratio("memtable_get_vs_btreemap", s / b);

    // Full scans.
    let scan = |f: &dyn Fn() -> usize| -> f64 {
        let start = Instant::now();
        assert_eq!(f(), n);
        n as f64 / start.elapsed().as_secs_f64()
    };
    let s = report(
        "memtable_scan",
        "entries/s",
        (0..RUNS)
            .map(|_| scan(&|| strata.range(Bound::Unbounded, Bound::Unbounded).count()))
            .collect(),
    );
    let c = report(
        "crossbeam_scan",
        "entries/s",
        (0..RUNS)
            .map(|_| scan(&|| crossbeam.iter().count()))
            .collect(),
    );
    let b = report(
        "btreemap_rwlock_scan",
        "entries/s",
        (0..RUNS)
            .map(|_| scan(&|| btree.read().iter().count()))
            .collect(),
    );
    print_ratio("memtable_scan_vs_crossbeam", s / c);
    print_ratio("memtable_scan_vs_btreemap", s / b);
}
