//! Compaction keeps what readers can see (including through snapshots) and drops the rest.

use std::collections::BTreeMap;

use strata_lsm::{CompactionOptions, Db, Options, WriteOptions};

fn options() -> Options {
    Options {
        memtable_bytes: 16 * 1024,
        compaction: CompactionOptions {
            l0_trigger: 3,
            target_file_bytes: 8 * 1024,
            level_base_bytes: 32 * 1024,
            level_multiplier: 4,
            ..CompactionOptions::default()
        },
        ..Options::default()
    }
}

#[test]
fn compaction_keeps_visible_data_and_snapshots_and_drops_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), options()).expect("open");
    let w = WriteOptions::default();
    let mut model = BTreeMap::new();
    for i in 0..500u32 {
        let k = format!("k{:04}", i % 250);
        let v = format!("first-{i}");
        db.put(k.as_bytes(), v.as_bytes(), w).expect("put");
        model.insert(k, v);
    }
    db.flush().expect("flush");
    let snapshot = db.snapshot();
    let snapshot_model = model.clone();
    for round in 0..6u32 {
        for i in 0..250u32 {
            let k = format!("k{i:04}");
            if (i + round) % 5 == 0 {
                db.delete(k.as_bytes(), w).expect("delete");
                model.remove(&k);
            } else {
                let v = format!("round-{round}-{i}");
                db.put(k.as_bytes(), v.as_bytes(), w).expect("put");
                model.insert(k, v);
            }
        }
        db.flush().expect("flush");
    }
    let before: u64 = db.live_files().iter().map(|f| f.size).sum();
    db.compact().expect("compact");
    let files = db.live_files();
    assert!(
        files.iter().all(|f| f.level > 0),
        "level 0 was compacted away"
    );
    for i in 0..250u32 {
        let k = format!("k{i:04}");
        assert_eq!(
            db.get(k.as_bytes())
                .expect("get")
                .map(|v| String::from_utf8(v).expect("utf-8")),
            model.get(&k).cloned(),
            "{k}"
        );
        assert_eq!(
            snapshot
                .get(k.as_bytes())
                .expect("get")
                .map(|v| String::from_utf8(v).expect("utf-8")),
            snapshot_model.get(&k).cloned(),
            "{k} through the snapshot"
        );
    }
    drop(snapshot);
    db.compact().expect("compact again");
    let after: u64 = db.live_files().iter().map(|f| f.size).sum();
    assert!(
        after < before,
        "old versions were not dropped: {before} -> {after}"
    );

    // No obsolete table is left once no reader holds it (checked before a reopen, which would
    // sweep leftovers anyway).
    let live: Vec<u64> = db.live_files().iter().map(|f| f.number).collect();
    let on_disk = std::fs::read_dir(dir.path())
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .ends_with(".sst")
        })
        .count();
    assert_eq!(on_disk, live.len(), "obsolete tables were not deleted");
    drop(db);
    let db = Db::open(dir.path(), options()).expect("reopen");
    for (k, v) in &model {
        assert_eq!(
            db.get(k.as_bytes()).expect("get").as_deref(),
            Some(v.as_bytes())
        );
    }
}

#[test]
fn background_compaction_keeps_level_0_small() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), options()).expect("open");
    for i in 0..20_000u32 {
        let k = format!("key-{:06}", (i * 7919) % 5000);
        db.put(k.as_bytes(), &[7; 50], WriteOptions::default())
            .expect("put");
    }
    db.flush().expect("flush");
    db.wait_for_background()
        .expect("the background work succeeds");
    // Nothing is left to flush or compact: level 0 is below its trigger, and every level
    // below it within its target size.
    let levels = db.stats().levels;
    assert!(levels[0].tables < 3, "{levels:?}");
    let mut target = 32 * 1024;
    for level in &levels[1..levels.len() - 1] {
        assert!(level.bytes <= target, "{levels:?}");
        target *= 4;
    }
    assert!(db.live_files().iter().any(|f| f.level > 0));
    for i in 0..5000u32 {
        let k = format!("key-{i:06}");
        assert!(db.get(k.as_bytes()).expect("get").is_some(), "{k}");
    }
}

#[test]
fn repeated_reads_hit_the_block_cache_within_its_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        block_cache_bytes: 64 * 1024,
        ..options()
    };
    let db = Db::open(dir.path(), options).expect("open");
    for i in 0..3000u32 {
        db.put(
            format!("k{i:05}").as_bytes(),
            &[1; 40],
            WriteOptions::default(),
        )
        .expect("put");
    }
    db.flush().expect("flush");
    for _ in 0..3 {
        for i in (0..3000u32).step_by(7) {
            assert!(
                db.get(format!("k{i:05}").as_bytes())
                    .expect("get")
                    .is_some()
            );
        }
    }
    let stats = db.stats();
    assert!(stats.cache_hits > stats.cache_misses, "{stats:?}");
    assert!(stats.cache_bytes <= 64 * 1024, "{stats:?}");
    assert!(stats.levels.iter().map(|l| l.tables).sum::<usize>() > 0);
}

#[test]
fn a_flush_writes_every_version_a_reader_can_see_and_no_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), Options::default()).expect("open");
    let w = WriteOptions::default();
    // Four versions of one key and one each of another, then a snapshot, then two more
    // versions and a delete: of the versions at or below the snapshot only the newest can be
    // read, so the flush writes it, the two newer ones, and the other key's two.
    for v in ["1", "2", "3", "4"] {
        db.put(b"k", v.as_bytes(), w).expect("put");
    }
    db.put(b"other", b"o", w).expect("put");
    let snapshot = db.snapshot();
    db.put(b"k", b"5", w).expect("put");
    db.put(b"k", b"6", w).expect("put");
    db.delete(b"other", w).expect("delete");
    let written = db.flush().expect("flush");
    assert_eq!(written.len(), 1);
    let path = dir.path().join(format!("{:06}.sst", written[0].number));
    let table = strata_sstable::Table::open(&path, strata_sstable::ReadOptions::default())
        .expect("the flushed table opens");
    assert_eq!(table.properties().entries, 3 + 2);
    assert_eq!(snapshot.get(b"k").expect("get").as_deref(), Some(&b"4"[..]));
    assert_eq!(
        snapshot.get(b"other").expect("get").as_deref(),
        Some(&b"o"[..])
    );
    assert_eq!(db.get(b"k").expect("get").as_deref(), Some(&b"6"[..]));
    assert_eq!(db.get(b"other").expect("get"), None);
    drop(snapshot);

    // With no snapshot, a flush writes only each key's newest version (a tombstone too: an
    // older table holds the key).
    for v in ["7", "8", "9"] {
        db.put(b"k", v.as_bytes(), w).expect("put");
    }
    db.delete(b"k", w).expect("delete");
    let written = db.flush().expect("flush");
    let path = dir.path().join(format!("{:06}.sst", written[0].number));
    let table = strata_sstable::Table::open(&path, strata_sstable::ReadOptions::default())
        .expect("the flushed table opens");
    assert_eq!(table.properties().entries, 1);
    assert_eq!(db.get(b"k").expect("get"), None);
}

#[test]
fn a_table_that_overlaps_nothing_below_moves_down_unwritten_and_stays_readable() {
    // Keys written in order: each flush's table covers keys no deeper table has, so tables
    // leave level 1 by moves, not merges.
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = 6_000u32;
    let value = |i: u32| format!("value-{i}-").repeat(4);
    {
        let db = Db::open(dir.path(), options()).expect("open");
        for i in 0..keys {
            db.put(
                format!("seq-{i:06}").as_bytes(),
                value(i).as_bytes(),
                WriteOptions::default(),
            )
            .expect("put");
        }
        db.flush().expect("flush");
        db.wait_for_background().expect("background work");
        let stats = db.stats();
        assert!(stats.trivial_moves > 0, "{stats:?}");
        assert!(stats.trivial_moved_bytes > 0, "{stats:?}");
        // Moved tables are listed at their new level, in the manifest and in a capture.
        let files = db.live_files();
        assert!(files.iter().any(|f| f.level >= 2), "{files:?}");
        let set = tempfile::tempdir().expect("tempdir");
        let names = db.capture().write_to(set.path(), &[]).expect("capture");
        let restored_dir = tempfile::tempdir().expect("tempdir");
        let restored = Db::open(restored_dir.path(), options()).expect("open");
        restored.restore(set.path(), &names).expect("restore");
        for i in (0..keys).step_by(97) {
            let k = format!("seq-{i:06}");
            assert_eq!(
                restored.get(k.as_bytes()).expect("get").as_deref(),
                Some(value(i).as_bytes()),
                "{k} in the restored copy"
            );
        }
    }
    // The manifest replays the moves.
    let db = Db::open(dir.path(), options()).expect("reopen");
    for i in 0..keys {
        let k = format!("seq-{i:06}");
        assert_eq!(
            db.get(k.as_bytes()).expect("get").as_deref(),
            Some(value(i).as_bytes()),
            "{k}"
        );
    }
    let levels = db.stats().levels;
    let mut target = 32 * 1024;
    for level in &levels[1..levels.len() - 1] {
        assert!(level.bytes <= target, "{levels:?}");
        target *= 4;
    }
}

/// The numbers of the table files in `dir`, in order.
fn tables_on_disk(dir: &std::path::Path) -> Vec<u64> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().into_string().expect("utf-8");
            name.strip_suffix(".sst")?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

/// The numbers of the store's live tables, in order.
fn live_tables(db: &Db) -> Vec<u64> {
    let mut numbers: Vec<u64> = db.live_files().iter().map(|f| f.number).collect();
    numbers.sort_unstable();
    numbers
}

#[test]
fn once_background_work_is_done_the_directory_holds_exactly_the_live_tables() {
    // A compaction's replaced tables are deleted when their last handle goes: the compaction
    // lets go of its inputs before it installs its outputs, so no deletion is still to come
    // when `wait_for_background` returns (a copy of the store made then finds every file).
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), options()).expect("open");
    for round in 0..8u32 {
        for i in 0..1_500u32 {
            let k = format!("key-{:05}", (i * 7919 + round) % 3000);
            db.put(k.as_bytes(), &[round as u8; 60], WriteOptions::default())
                .expect("put");
        }
        db.wait_for_background().expect("background work");
        assert_eq!(
            tables_on_disk(dir.path()),
            live_tables(&db),
            "round {round}"
        );
    }
}

#[test]
fn a_capture_keeps_its_tables_through_moves_and_merges_after_it() {
    // A capture pins its version's tables. A table moved down after it (opened again under
    // its new level) and then merged away must still be on disk when the capture is written:
    // the file lives as long as any handle of it, the capture's included.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(dir.path(), options()).expect("open");
    let value = |i: u32, round: u32| format!("v{round}-{i}-").repeat(4);
    let put = |i: u32, round: u32| {
        db.put(
            format!("seq-{i:06}").as_bytes(),
            value(i, round).as_bytes(),
            WriteOptions::default(),
        )
        .expect("put");
    };
    for i in 0..2_000 {
        put(i, 0);
    }
    db.flush().expect("flush");
    db.wait_for_background().expect("background work");
    let capture = db.capture();
    let captured: Vec<u64> = db.live_files().iter().map(|f| f.number).collect();
    let moves_before = db.stats().trivial_moves;
    // More keys in order (their tables push the captured ones down by moves), then rewrites
    // over the whole range and a full compaction (merges that replace the moved tables).
    for i in 2_000..6_000 {
        put(i, 0);
    }
    db.flush().expect("flush");
    db.wait_for_background().expect("background work");
    assert!(db.stats().trivial_moves > moves_before, "{:?}", db.stats());
    for i in (0..6_000).step_by(3) {
        put(i, 1);
    }
    db.flush().expect("flush");
    db.compact().expect("a full compaction");
    db.wait_for_background().expect("background work");
    let live: Vec<u64> = db.live_files().iter().map(|f| f.number).collect();
    assert!(
        captured.iter().all(|n| !live.contains(n)),
        "the captured tables were all replaced: {captured:?} {live:?}"
    );
    let set = tempfile::tempdir().expect("tempdir");
    let names = capture
        .write_to(set.path(), &[])
        .expect("the capture is written whole");
    let restored_dir = tempfile::tempdir().expect("tempdir");
    let restored = Db::open(restored_dir.path(), options()).expect("open");
    restored.restore(set.path(), &names).expect("restore");
    for i in 0..2_000 {
        let k = format!("seq-{i:06}");
        assert_eq!(
            restored.get(k.as_bytes()).expect("get").as_deref(),
            Some(value(i, 0).as_bytes()),
            "{k} as captured"
        );
    }
    assert_eq!(restored.get(b"seq-002000").expect("get"), None);
    // The capture is gone once written, and so are the files only it held.
    db.wait_for_background().expect("background work");
    assert_eq!(tables_on_disk(dir.path()), live_tables(&db));
}
