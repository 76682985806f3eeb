//! Writers and readers at once: a reader never sees a half-inserted entry, and sees every entry
//! whose insert finished before the reader started.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use strata_memtable::{Memtable, ValueKind};

const WRITERS: u64 = 2;
const PER_WRITER: u64 = 20_000;

fn key(writer: u64, i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    // Interleave writers across the key space so they contend for the same neighbourhoods.
    k[..8].copy_from_slice(&(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_be_bytes());
    k[8..].copy_from_slice(&writer.to_be_bytes());
    k
}

/// The value is derived from the key, so a reader can tell a complete entry from a torn one.
fn value(k: &[u8; 16]) -> Vec<u8> {
    let len = 1 + (k[0] as usize % 40);
    (0..len).map(|i| k[i % 16] ^ i as u8).collect()
}

#[test]
fn readers_see_only_complete_entries_and_everything_finished_before_them() {
    let table = Arc::new(Memtable::with_capacity(64 << 20));
    let done: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let table = Arc::clone(&table);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                for i in 0..PER_WRITER {
                    let k = key(w, i);
                    table
                        .insert(&k, w * PER_WRITER + i + 1, ValueKind::Put, &value(&k))
                        .expect("insert");
                    done[w as usize].store(i + 1, Ordering::Release);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let table = Arc::clone(&table);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut rounds = 0;
                loop {
                    let finished: Vec<u64> =
                        done.iter().map(|d| d.load(Ordering::Acquire)).collect();
                    // Every entry seen is complete and in order.
                    let mut seen = 0u64;
                    let mut previous: Option<Vec<u8>> = None;
                    let mut it = table.iter();
                    it.seek_to_first();
                    while let Some(e) = it.entry() {
                        let k: [u8; 16] = e.user_key.try_into().expect("16-byte key");
                        assert_eq!(e.value, &value(&k)[..], "a torn entry");
                        if let Some(p) = &previous {
                            assert!(p.as_slice() < e.user_key, "out of order");
                        }
                        previous = Some(e.user_key.to_vec());
                        seen += 1;
                        it.next();
                    }
                    // Everything finished before the scan started is there.
                    assert!(
                        seen >= finished.iter().sum::<u64>(),
                        "a finished insert is missing"
                    );
                    for (w, &n) in finished.iter().enumerate() {
                        if n > 0 {
                            let k = key(w as u64, n - 1);
                            assert!(
                                table.get(&k, u64::MAX).is_some(),
                                "finished insert not found"
                            );
                        }
                    }
                    rounds += 1;
                    if finished.iter().all(|&n| n == PER_WRITER) {
                        return rounds;
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    for r in readers {
        assert!(r.join().expect("reader") >= 1);
    }
    assert_eq!(table.len() as u64, WRITERS * PER_WRITER);
}

#[test]
fn nothing_lands_after_freeze_returns() {
    for _ in 0..50 {
        let table = Arc::new(Memtable::with_capacity(8 << 20));
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let table = Arc::clone(&table);
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while table
                        .insert(&key(w, i), w * 1_000_000 + i + 1, ValueKind::Put, b"v")
                        .is_ok()
                    {
                        i += 1;
                    }
                })
            })
            .collect();
        while table.len() < 100 {
            std::thread::yield_now();
        }
        table.freeze();
        let frozen_len = table.len();
        for w in writers {
            w.join().expect("writer");
        }
        assert_eq!(
            table.len(),
            frozen_len,
            "an insert landed after freeze returned"
        );
    }
}

#[test]
fn racing_inserts_of_the_same_versions_succeed_exactly_once_each() {
    let table = Arc::new(Memtable::with_capacity(16 << 20));
    let results: Vec<_> = (0..2)
        .map(|_| {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                let mut ok = 0u64;
                for i in 0..5_000u64 {
                    // Few distinct user keys, several versions each, shared 4-byte prefixes.
                    let user_key = format!("key-{}", i % 97);
                    if table
                        .insert(user_key.as_bytes(), i, ValueKind::Put, &i.to_be_bytes())
                        .is_ok()
                    {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    let total: u64 = results.into_iter().map(|h| h.join().expect("thread")).sum();
    assert_eq!(total, 5_000);
    assert_eq!(table.len(), 5_000);
    for i in 0..5_000u64 {
        let user_key = format!("key-{}", i % 97);
        let e = table.get(user_key.as_bytes(), i).expect("present");
        assert_eq!(e.seq, i);
        assert_eq!(e.value, &i.to_be_bytes());
    }
}
