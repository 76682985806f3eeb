//! The memtable against a `BTreeMap` model: random inserts over a small key space, versioned
//! gets, cursor moves both ways, and range scans with every kind of bound in both directions.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;
use strata_memtable::{Error, Memtable, ValueKind};

type Model = BTreeMap<(Vec<u8>, Reverse<u64>), (ValueKind, Vec<u8>)>;

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Up to 7 bytes over 4 symbols: many keys share their first 4 bytes (the prefix the links
    // carry) and differ later, and many are prefixes of others, so both comparison paths run.
    proptest::collection::vec(
        prop_oneof![Just(b'a'), Just(b'b'), Just(0u8), Just(0xff)],
        0..8,
    )
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        Just(Bound::Unbounded),
        key().prop_map(Bound::Included),
        key().prop_map(Bound::Excluded),
    ]
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
    }
}

fn in_bounds(k: &[u8], lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    let above = match lower {
        Bound::Unbounded => true,
        Bound::Included(l) => k >= &l[..],
        Bound::Excluded(l) => k > &l[..],
    };
    let below = match upper {
        Bound::Unbounded => true,
        Bound::Included(u) => k <= &u[..],
        Bound::Excluded(u) => k < &u[..],
    };
    above && below
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn memtable_matches_btreemap_model(
        inserts in proptest::collection::vec((key(), 0u64..40, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..8)), 0..120),
        gets in proptest::collection::vec((key(), 0u64..45), 0..40),
        ranges in proptest::collection::vec((bound(), bound()), 0..8),
    ) {
        let table = Memtable::with_capacity(1 << 20);
        let mut model: Model = BTreeMap::new();
        for (k, seq, put, v) in inserts {
            let kind = if put { ValueKind::Put } else { ValueKind::Delete };
            let v = if put { v } else { Vec::new() };
            let result = table.insert(&k, seq, kind, &v);
            if model.contains_key(&(k.clone(), Reverse(seq))) {
                prop_assert_eq!(result, Err(Error::Duplicate));
            } else {
                prop_assert_eq!(result, Ok(()));
                model.insert((k, Reverse(seq)), (kind, v));
            }
        }
        prop_assert_eq!(table.len(), model.len());

        // Versioned gets: the newest version at or below the snapshot.
        for (k, at) in gets {
            let want = model
                .range((k.clone(), Reverse(at))..)
                .next()
                .filter(|((mk, _), _)| *mk == k);
            let got = table.get(&k, at);
            match (got, want) {
                (None, None) => {}
                (Some(e), Some(((_, Reverse(seq)), (kind, v)))) => {
                    prop_assert_eq!(e.seq, *seq);
                    prop_assert_eq!(e.kind, *kind);
                    prop_assert_eq!(e.value, &v[..]);
                }
                (got, want) => prop_assert!(false, "get {:?}@{}: {:?} vs {:?}", k, at, got, want),
            }
        }

        // The full order, forward and backward with the cursor.
        let expected: Vec<(Vec<u8>, u64)> = model.keys().map(|(k, Reverse(s))| (k.clone(), *s)).collect();
        let mut it = table.iter();
        it.seek_to_first();
        let mut forward = Vec::new();
        while let Some(e) = it.entry() {
            forward.push((e.user_key.to_vec(), e.seq));
            it.next();
        }
        prop_assert_eq!(&forward, &expected);
        it.seek_to_last();
        let mut backward = Vec::new();
        while let Some(e) = it.entry() {
            backward.push((e.user_key.to_vec(), e.seq));
            it.prev();
        }
        backward.reverse();
        prop_assert_eq!(&backward, &expected);

        // Ranges with every bound kind, both directions.
        for (lower, upper) in ranges {
            let want: Vec<(Vec<u8>, u64)> = expected
                .iter()
                .filter(|(k, _)| in_bounds(k, &lower, &upper))
                .cloned()
                .collect();
            let got: Vec<(Vec<u8>, u64)> = table
                .range(as_ref(&lower), as_ref(&upper))
                .map(|e| (e.user_key.to_vec(), e.seq))
                .collect();
            prop_assert_eq!(&got, &want, "range {:?}..{:?}", lower, upper);
            let mut got_back: Vec<(Vec<u8>, u64)> = table
                .range(as_ref(&lower), as_ref(&upper))
                .rev()
                .map(|e| (e.user_key.to_vec(), e.seq))
                .collect();
            got_back.reverse();
            prop_assert_eq!(&got_back, &want, "reversed range {:?}..{:?}", lower, upper);

            // The bounded cursor: the same entries both ways, and seeks that respect bounds.
            let mut cursor = table.iter_range(as_ref(&lower), as_ref(&upper));
            cursor.seek_to_first();
            let mut forward = Vec::new();
            while let Some(e) = cursor.entry() {
                forward.push((e.user_key.to_vec(), e.seq));
                cursor.next();
            }
            prop_assert_eq!(&forward, &want, "cursor {:?}..{:?}", lower, upper);
            cursor.seek_to_last();
            let mut backward = Vec::new();
            while let Some(e) = cursor.entry() {
                backward.push((e.user_key.to_vec(), e.seq));
                cursor.prev();
            }
            backward.reverse();
            prop_assert_eq!(&backward, &want, "reversed cursor {:?}..{:?}", lower, upper);
            for (k, _) in expected.iter().take(5) {
                cursor.seek(k, u64::MAX);
                let first = want.iter().find(|(wk, _)| wk >= k);
                prop_assert_eq!(
                    cursor.entry().map(|e| (e.user_key.to_vec(), e.seq)),
                    first.cloned(),
                    "seek {:?} in {:?}..{:?}", k, lower, upper
                );
            }
        }
    }
}

#[test]
fn a_full_arena_refuses_inserts_and_keeps_what_it_has() {
    let table = Memtable::with_capacity(4096);
    let mut inserted = 0u64;
    loop {
        match table.insert(&inserted.to_be_bytes(), inserted, ValueKind::Put, &[7; 50]) {
            Ok(()) => inserted += 1,
            Err(Error::Full) => break,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(inserted > 10);
    assert!(table.approximate_bytes() <= table.capacity_bytes());
    for i in 0..inserted {
        let e = table.get(&i.to_be_bytes(), u64::MAX).expect("kept");
        assert_eq!(e.value, &[7; 50]);
    }
    table.freeze();
    assert_eq!(
        table.insert(b"x", 1, ValueKind::Put, b""),
        Err(Error::Frozen)
    );
}

#[test]
fn an_over_long_key_is_refused() {
    let table = Memtable::with_capacity(1 << 20);
    let key = vec![0u8; strata_memtable::KEY_BYTES_MAX + 1];
    assert!(matches!(
        table.insert(&key, 1, ValueKind::Put, b""),
        Err(Error::KeyTooLarge { .. })
    ));
    assert!(table.is_empty());
}

#[test]
fn a_tiny_capacity_still_makes_a_working_memtable() {
    for capacity in [0, 1, 100, 175, 176] {
        let table = Memtable::with_capacity(capacity);
        table
            .insert(b"k", 1, ValueKind::Put, b"v")
            .expect("room for one entry");
        assert_eq!(table.get(b"k", 1).map(|e| e.value), Some(&b"v"[..]));
    }
}
