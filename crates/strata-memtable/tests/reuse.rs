//! A dropped memtable's arena becomes the next one's (one spare mapping per process): the next
//! memtable of its capacity faults no new memory in, and holds none of the last one's entries
//! though its bytes are still there. (Linux: reads `/proc/self/status`. The only test in its
//! binary, so no other test takes the spare or moves the figures.)

use std::ops::Bound;

use strata_memtable::{Memtable, SEQ_MAX, ValueKind};

mod support;

use support::anon_bytes;

#[test]
fn the_next_memtable_reuses_the_last_ones_memory_and_holds_none_of_its_entries() {
    const MIB: usize = 1024 * 1024;
    const ENTRIES: u64 = 32 * 1024;
    let first = Memtable::with_capacity(128 * MIB);
    for i in 0..ENTRIES {
        first
            .insert(&i.to_be_bytes(), i + 1, ValueKind::Put, &[7u8; 1000])
            .expect("insert");
    }
    drop(first);
    let after_drop = anon_bytes();

    let second = Memtable::with_capacity(128 * MIB);
    assert!(second.is_empty());
    assert_eq!(second.range(Bound::Unbounded, Bound::Unbounded).count(), 0);
    let mut cursor = second.iter();
    cursor.seek_to_first();
    assert!(
        !cursor.valid(),
        "a reused arena's memtable has a first entry"
    );
    cursor.seek_to_last();
    assert!(
        !cursor.valid(),
        "a reused arena's memtable has a last entry"
    );
    assert!(second.get(&5u64.to_be_bytes(), SEQ_MAX).is_none());

    // Other keys (two of every three of the last ones, and more past them), in the other order,
    // with other values and sequence numbers: exactly these are what it holds.
    let keys: Vec<u64> = (0..ENTRIES).map(|i| i * 3 / 2).collect();
    for (n, k) in keys.iter().rev().enumerate() {
        second
            .insert(
                &k.to_be_bytes(),
                10 * ENTRIES + n as u64,
                ValueKind::Put,
                &[9u8; 1000],
            )
            .expect("insert");
    }
    let refilled = anon_bytes();
    let seen: Vec<(Vec<u8>, u64, usize)> = second
        .range(Bound::Unbounded, Bound::Unbounded)
        .map(|e| {
            assert!(e.value.iter().all(|&b| b == 9), "a value holds old bytes");
            (e.user_key.to_vec(), e.seq, e.value.len())
        })
        .collect();
    let want: Vec<(Vec<u8>, u64, usize)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                k.to_be_bytes().to_vec(),
                10 * ENTRIES + (ENTRIES - 1 - i as u64),
                1000,
            )
        })
        .collect();
    assert_eq!(seen, want);
    for k in [2u64, 5, 8, ENTRIES - 3] {
        assert!(
            second.get(&k.to_be_bytes(), SEQ_MAX).is_none(),
            "key {k}, only in the first memtable, is in the second"
        );
    }

    // The same amount of entries again came from the pages the first memtable made resident.
    // A fresh mapping would have added about 33 MiB.
    assert!(
        refilled < after_drop + 8 * MIB as u64,
        "refilling a reused arena made {} MiB more resident",
        refilled.saturating_sub(after_drop) / MIB as u64
    );
}
