//! `ChecksumCache`: the same metadata as `describe`, with each settled file read once.

use std::path::Path;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use strata_snapshot::{ChecksumCache, describe};

/// Dates `name`'s last modification back an hour, as a table written long ago.
fn age(dir: &Path, name: &str) {
    std::fs::File::options()
        .write(true)
        .open(dir.join(name))
        .expect("open")
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .expect("set mtime");
}

fn write_old(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).expect("write");
    age(dir, name);
}

#[test]
fn a_settled_file_is_read_once_across_snapshots_and_hard_links() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    std::fs::create_dir_all(&one).expect("mkdir");
    std::fs::create_dir_all(&two).expect("mkdir");
    write_old(&one, "000007.sst", &[7u8; 70_000]);
    let cache = ChecksumCache::default();
    let first = cache
        .describe(&one, 1, 10, 1, &["000007.sst"])
        .expect("describe");
    assert_eq!(cache.reads(), 1);
    // The next snapshot's directory links the same table.
    std::fs::hard_link(one.join("000007.sst"), two.join("000007.sst")).expect("link");
    write_old(&two, "000009.sst", &[9u8; 900]);
    let second = cache
        .describe(&two, 2, 20, 1, &["000007.sst", "000009.sst"])
        .expect("describe");
    assert_eq!(cache.reads(), 2, "only the new table is read");
    assert_eq!(second.files[0], first.files[0]);
    assert_eq!(
        second,
        describe(&two, 2, 20, 1, &["000007.sst", "000009.sst"]).expect("describe")
    );
}

#[test]
fn a_rewritten_file_is_read_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_old(dir.path(), "a", &[1u8; 4096]);
    let cache = ChecksumCache::default();
    let before = cache
        .describe(dir.path(), 1, 1, 1, &["a"])
        .expect("describe");
    // Same size, same inode, other bytes: the modification time tells it apart.
    std::fs::write(dir.path().join("a"), [2u8; 4096]).expect("rewrite");
    let after = cache
        .describe(dir.path(), 2, 2, 1, &["a"])
        .expect("describe");
    assert_ne!(before.files[0].crc, after.files[0].crc);
    assert_eq!(
        after,
        describe(dir.path(), 2, 2, 1, &["a"]).expect("describe")
    );
    assert_eq!(cache.reads(), 2);
}

#[test]
fn a_file_modified_within_the_last_seconds_is_never_remembered() {
    // Two writes within one timestamp tick leave the same time: a fresh file's checksum is not
    // trusted to its time, so a second write of the same size in the same tick is still seen.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("a"), [1u8; 512]).expect("write");
    let cache = ChecksumCache::default();
    cache
        .describe(dir.path(), 1, 1, 1, &["a"])
        .expect("describe");
    std::fs::write(dir.path().join("a"), [3u8; 512]).expect("rewrite");
    let after = cache
        .describe(dir.path(), 2, 2, 1, &["a"])
        .expect("describe");
    assert_eq!(after.files[0].crc, crc32fast::hash(&[3u8; 512]));
    assert_eq!(cache.reads(), 2);
}

#[test]
fn the_cache_forgets_files_not_in_the_last_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_old(dir.path(), "a", b"first");
    write_old(dir.path(), "b", b"second");
    let cache = ChecksumCache::default();
    cache
        .describe(dir.path(), 1, 1, 1, &["a"])
        .expect("describe");
    cache
        .describe(dir.path(), 2, 2, 1, &["b"])
        .expect("describe");
    // `a` was dropped with the set that no longer has it: read again.
    cache
        .describe(dir.path(), 3, 3, 1, &["a"])
        .expect("describe");
    assert_eq!(cache.reads(), 3);
}

#[test]
fn a_bad_name_or_a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = ChecksumCache::default();
    assert!(cache.describe(dir.path(), 1, 1, 1, &["../x"]).is_err());
    assert!(cache.describe(dir.path(), 1, 1, 1, &["missing"]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever files change between snapshots, and however they are aged, the cache
    /// describes a set exactly as `describe` does.
    #[test]
    fn cached_descriptions_equal_full_reads(
        rounds in proptest::collection::vec(
            proptest::collection::vec((0usize..4, any::<u8>(), 0usize..3000, any::<bool>()), 0..6),
            1..5,
        ),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = ["a", "b", "c", "d"];
        for name in names {
            write_old(dir.path(), name, b"");
        }
        let cache = ChecksumCache::default();
        for (round, writes) in rounds.iter().enumerate() {
            for &(file, byte, len, old) in writes {
                std::fs::write(dir.path().join(names[file]), vec![byte; len]).expect("write");
                if old {
                    age(dir.path(), names[file]);
                }
            }
            let id = round as u64 + 1;
            let cached = cache.describe(dir.path(), id, id, 1, &names).expect("describe");
            prop_assert_eq!(cached, describe(dir.path(), id, id, 1, &names).expect("describe"));
        }
    }
}
