//! Round trips against a `BTreeMap` model, arbitrary bytes as a table, and the bloom filter's
//! measured false-positive rate.

use std::collections::BTreeMap;

use proptest::prelude::*;
use strata_sstable::{Compression, Error, ReadOptions, Table, TableBuilder, TableOptions};

fn options() -> impl Strategy<Value = TableOptions> {
    (
        prop_oneof![Just(64usize), Just(256), Just(4096)],
        1usize..20,
        prop_oneof![Just(0u32), Just(10)],
        any::<bool>(),
    )
        .prop_map(|(block_bytes, restart_interval, bloom, lz4)| TableOptions {
            block_bytes,
            restart_interval,
            bloom_bits_per_key: bloom,
            compression: if lz4 {
                Compression::Lz4
            } else {
                Compression::None
            },
            ..TableOptions::default()
        })
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // A small alphabet and short keys: shared prefixes, neighbours, and collisions.
    proptest::collection::vec(
        prop_oneof![Just(b'a'), Just(b'b'), Just(0u8), Just(0xff)],
        0..6,
    )
}

fn build(dir: &std::path::Path, model: &BTreeMap<Vec<u8>, Vec<u8>>, opts: TableOptions) -> Table {
    let path = dir.join("t.sst");
    let mut builder = TableBuilder::create(&path, opts).expect("create");
    for (k, v) in model {
        builder.add(k, v).expect("add");
    }
    builder.finish().expect("finish");
    Table::open(&path, ReadOptions::default()).expect("open")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn table_matches_the_btreemap_model(
        model in proptest::collection::btree_map(key(), proptest::collection::vec(any::<u8>(), 0..40), 0..120),
        probes in proptest::collection::vec(key(), 0..30),
        opts in options(),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = build(dir.path(), &model, opts);
        prop_assert_eq!(table.properties().entries, model.len() as u64);
        prop_assert_eq!(table.check().expect("check"), model.len() as u64);

        // Point lookups, present and absent.
        for (k, v) in &model {
            let got = table.get(k).expect("get");
            prop_assert_eq!(got.as_deref(), Some(&v[..]));
        }
        for k in &probes {
            prop_assert_eq!(table.get(k).expect("get").map(|b| b.to_vec()), model.get(k).cloned());
        }

        // Forward and backward scans.
        let forward: Vec<(Vec<u8>, Vec<u8>)> = table
            .iter()
            .map(|r| r.map(|(k, v)| (k, v.to_vec())))
            .collect::<Result<_, _>>()
            .expect("scan");
        let expected: Vec<(Vec<u8>, Vec<u8>)> = model.clone().into_iter().collect();
        prop_assert_eq!(&forward, &expected);
        let mut it = table.iter();
        it.seek_to_last();
        let mut backward = Vec::new();
        while it.valid() {
            backward.push((it.key().to_vec(), it.value().to_vec()));
            it.prev();
        }
        backward.reverse();
        prop_assert_eq!(&backward, &expected);

        // Seeks land on the first key at or after the target, and move both ways from there.
        for k in &probes {
            let mut it = table.iter();
            it.seek(k);
            let want = model.range(k.clone()..).next();
            prop_assert_eq!(it.valid(), want.is_some());
            if let Some((wk, _)) = want {
                prop_assert_eq!(it.key(), &wk[..]);
                it.prev();
                let before = model.range(..k.clone()).next_back();
                prop_assert_eq!(it.valid(), before.is_some());
                if let Some((bk, _)) = before {
                    prop_assert_eq!(it.key(), &bk[..]);
                }
            }
        }
    }

    #[test]
    fn arbitrary_bytes_as_a_table_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        footer in proptest::option::of((any::<[(u16, u16); 3]>(), 0u32..3)),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("junk.sst");
        let mut bytes = bytes;
        if let Some((handles, version)) = footer {
            // A footer that passes its own checks (magic, checksum, version) with handles
            // into the junk, so opening reaches the block decoders instead of stopping at the
            // footer.
            let mut f = Vec::new();
            for (offset, size) in handles {
                f.extend_from_slice(&u64::from(offset % 512).to_le_bytes());
                f.extend_from_slice(&u32::from(size % 512).to_le_bytes());
            }
            f.extend_from_slice(&version.to_le_bytes());
            let crc = crc32fast::hash(&f);
            f.extend_from_slice(&crc.to_le_bytes());
            f.extend_from_slice(&[0u8; 4]);
            f.extend_from_slice(&strata_sstable::TABLE_MAGIC);
            bytes.extend_from_slice(&f);
        }
        std::fs::write(&path, &bytes).expect("write");
        if let Ok(table) = Table::open(&path, ReadOptions::default()) {
            let _ = table.check();
            let _ = table.get(b"a");
            for item in table.iter() {
                if item.is_err() {
                    break;
                }
            }
        }
    }
}

#[test]
fn keys_out_of_order_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut builder =
        TableBuilder::create(&dir.path().join("t.sst"), TableOptions::default()).expect("create");
    builder.add(b"b", b"1").expect("add");
    assert!(matches!(
        builder.add(b"b", b"2"),
        Err(Error::KeysOutOfOrder)
    ));
    assert!(matches!(
        builder.add(b"a", b"2"),
        Err(Error::KeysOutOfOrder)
    ));
    assert!(matches!(
        builder.set_property("strata.mine", b""),
        Err(Error::ReservedProperty)
    ));
    drop(builder);
    assert!(
        !dir.path().join("t.sst").exists(),
        "an unfinished table is removed"
    );
}

#[test]
fn user_properties_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.sst");
    let mut builder = TableBuilder::create(&path, TableOptions::default()).expect("create");
    builder.add(b"k1", b"v").expect("add");
    builder.add(b"k2", b"v").expect("add");
    builder
        .set_property("raft.last_index", &7u64.to_le_bytes())
        .expect("prop");
    builder.finish().expect("finish");
    let table = Table::open(&path, ReadOptions::default()).expect("open");
    let p = table.properties();
    assert_eq!(p.entries, 2);
    assert_eq!(p.first_key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(p.last_key.as_deref(), Some(&b"k2"[..]));
    assert_eq!(
        p.user.get("raft.last_index").map(|v| v.to_vec()),
        Some(7u64.to_le_bytes().to_vec())
    );
}

#[test]
fn measured_bloom_false_positive_rate_is_within_twice_the_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.sst");
    let mut builder = TableBuilder::create(&path, TableOptions::default()).expect("create");
    for i in 0..20_000u32 {
        builder
            .add(format!("key-{i:08}").as_bytes(), b"v")
            .expect("add");
    }
    builder.finish().expect("finish");
    let table = Table::open(&path, ReadOptions::default()).expect("open");
    let absent = 200_000u32;
    let false_positives = (0..absent)
        .filter(|i| table.may_contain(format!("absent-{i:08}").as_bytes()))
        .count();
    let rate = false_positives as f64 / f64::from(absent);
    // 10 bits per key and 7 probes: (1 - e^(-7/10))^7 = 0.82%.
    let target = (1.0 - (-0.7f64).exp()).powi(7);
    assert!(
        rate <= 2.0 * target,
        "measured {rate:.4}, target {target:.4}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_blocks_with_valid_checksums_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..200),
        filter in proptest::collection::vec(any::<u8>(), 0..40),
        properties in proptest::collection::vec(any::<u8>(), 0..120),
        index in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let bytes = strata_sstable::testing::assemble_table(&data, &filter, &properties, &index);
        if let Ok(table) = Table::from_bytes(
            std::path::Path::new("arbitrary"),
            bytes::Bytes::from(bytes),
            ReadOptions::default(),
        ) {
            let _ = table.check();
            let _ = table.get(b"a");
            let mut it = table.iter();
            it.seek_to_last();
            while it.valid() {
                it.prev();
            }
            for item in table.iter() {
                if item.is_err() {
                    break;
                }
            }
        }
    }
}

/// The filter records only the first two bytes: what an LSM does with the user key part.
fn first_two(key: &[u8]) -> &[u8] {
    &key[..key.len().min(2)]
}

#[test]
fn a_filter_on_part_of_the_key_answers_for_every_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.sst");
    let options = TableOptions {
        filter_key: first_two,
        ..TableOptions::default()
    };
    let mut builder = TableBuilder::create(&path, options).expect("create");
    for user in 0..200u16 {
        for version in 0..3u8 {
            let mut key = user.to_be_bytes().to_vec();
            key.push(version);
            builder.add(&key, &[version]).expect("add");
        }
    }
    builder.finish().expect("finish");
    let read = ReadOptions {
        filter_key: first_two,
        ..ReadOptions::default()
    };
    let table = Table::open(&path, read).expect("open");
    for user in 0..200u16 {
        assert!(table.may_contain(&user.to_be_bytes()));
        for version in 0..3u8 {
            let mut key = user.to_be_bytes().to_vec();
            key.push(version);
            assert_eq!(
                table.get(&key).expect("get").as_deref(),
                Some(&[version][..])
            );
        }
    }
    let absent = (1000..11000u16)
        .filter(|u| table.may_contain(&u.to_be_bytes()))
        .count();
    assert!(absent < 400, "{absent} false positives in 10000");
}

/// A filter key as an LSM's: the key without its last byte (a version), so that runs of keys
/// share one.
fn all_but_last(key: &[u8]) -> &[u8] {
    &key[..key.len().saturating_sub(1)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn adding_with_a_filter_part_builds_the_table_two_calls_build(
        keys in proptest::collection::btree_set(key(), 0..80),
        part_lens in proptest::collection::vec(0usize..8, 80),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = TableOptions {
            bloom_bits_per_key: 10,
            filter_key: all_but_last,
            ..TableOptions::default()
        };
        // Each key's part: a prefix of it (sometimes longer than its filter key, or past its
        // end), so that both the one-pass path and the other are taken.
        let build = |name: &str, one_call: bool| {
            let path = dir.path().join(name);
            let mut builder = TableBuilder::create(&path, opts.clone()).expect("create");
            for (key, &len) in keys.iter().zip(&part_lens) {
                if one_call {
                    builder.add_with_filter_part(key, b"v", len).expect("add");
                } else {
                    builder.add(key, b"v").expect("add");
                    if let Some(part) = key.get(..len) {
                        builder.add_to_filter(part);
                    }
                }
            }
            builder.finish().expect("finish");
            std::fs::read(&path).expect("read")
        };
        prop_assert_eq!(build("one.sst", true), build("two.sst", false));
    }
}
