//! A memtable's arena is reserved whole but resident only as it fills: its pages are the
//! operating system's fresh zero pages until written, so a store with a 64 MiB memtable does not
//! hold 64 MiB of memory before it has 64 MiB of writes. (Linux: reads `/proc/self/status`. The
//! only test in its binary, so no other test's memory moves the figures.)

use strata_memtable::{Memtable, ValueKind};

mod support;

use support::anon_bytes;

#[test]
fn an_arena_is_resident_only_as_far_as_it_is_filled() {
    const MIB: u64 = 1024 * 1024;
    let before = anon_bytes();
    let memtable = Memtable::with_capacity(256 * MIB as usize);
    let reserved = anon_bytes();
    assert!(
        reserved < before + 16 * MIB,
        "a new 256 MiB memtable made {} MiB resident",
        (reserved - before) / MIB
    );
    // About 32 MiB of entries.
    let value = [7u8; 1000];
    for i in 0..32 * 1024u64 {
        memtable
            .insert(&i.to_be_bytes(), i + 1, ValueKind::Put, &value)
            .expect("insert");
    }
    let filled = anon_bytes();
    assert!(
        filled >= reserved + 24 * MIB,
        "32 MiB of entries made only {} MiB resident",
        (filled.saturating_sub(reserved)) / MIB
    );
    assert!(
        filled < before + 64 * MIB,
        "32 MiB of entries in a 256 MiB arena made {} MiB resident",
        (filled - before) / MIB
    );
    // The next memtable (a store switches to a new one at every flush) is not resident whole
    // either: it reuses the last one's mapping as it is (tests/reuse.rs), which holds what
    // the last one made resident and no more.
    drop(memtable);
    let freed = anon_bytes();
    let next = Memtable::with_capacity(256 * MIB as usize);
    next.insert(b"k", 1, ValueKind::Put, &value)
        .expect("insert");
    let again = anon_bytes();
    assert!(
        again < freed + 16 * MIB,
        "the next 256 MiB memtable made {} MiB resident",
        again.saturating_sub(freed) / MIB
    );
}
