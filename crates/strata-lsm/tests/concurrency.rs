//! Readers and scans while flushes and compactions run: every read sees a consistent store
//! (each batch whole, nothing going backwards).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use strata_lsm::{CompactionOptions, Db, Direction, Options, WriteBatch, WriteOptions};

const PAIRS: u32 = 50;

#[test]
fn reads_during_flush_and_compaction_see_whole_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        memtable_bytes: 8 * 1024,
        compaction: CompactionOptions {
            l0_trigger: 2,
            target_file_bytes: 4 * 1024,
            level_base_bytes: 16 * 1024,
            level_multiplier: 3,
            ..CompactionOptions::default()
        },
        ..Options::default()
    };
    let db = Arc::new(Db::open(dir.path(), options).expect("open"));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let db = Arc::clone(&db);
        std::thread::spawn(move || {
            for round in 1..=300u32 {
                // Each batch sets every pair's two keys to the same round number.
                for p in 0..PAIRS {
                    let mut batch = WriteBatch::new();
                    let value = round.to_be_bytes();
                    batch.put(format!("a{p:03}").as_bytes(), &value);
                    batch.put(format!("b{p:03}").as_bytes(), &value);
                    db.write(batch, WriteOptions::default()).expect("write");
                }
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let db = Arc::clone(&db);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut last_seen = vec![0u32; PAIRS as usize];
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) || reads < 10 {
                    let snapshot = db.snapshot();
                    let mut values = std::collections::BTreeMap::new();
                    let direction = if r == 0 {
                        Direction::Forward
                    } else {
                        Direction::Reverse
                    };
                    snapshot
                        .scan(
                            std::ops::Bound::Unbounded,
                            std::ops::Bound::Unbounded,
                            direction,
                            |k, v| {
                                values.insert(
                                    k.to_vec(),
                                    u32::from_be_bytes(v.try_into().expect("4 bytes")),
                                );
                                true
                            },
                        )
                        .expect("scan");
                    for p in 0..PAIRS {
                        let a = values.get(format!("a{p:03}").as_bytes()).copied();
                        let b = values.get(format!("b{p:03}").as_bytes()).copied();
                        assert_eq!(a, b, "pair {p} torn: a batch was seen in part");
                        let got = a.unwrap_or(0);
                        assert!(got >= last_seen[p as usize], "pair {p} went backwards");
                        last_seen[p as usize] = got;
                        // Point reads through the same snapshot agree with its scan.
                        let point = snapshot
                            .get(format!("a{p:03}").as_bytes())
                            .expect("get")
                            .map(|v| u32::from_be_bytes(v.try_into().expect("4 bytes")));
                        assert_eq!(point, a);
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    writer.join().expect("writer");
    // However the background work went, a forced flush and compaction run while the readers
    // are still reading.
    db.flush().expect("flush");
    db.compact().expect("compact");
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().expect("reader") >= 10);
    }
    assert!(db.live_files().iter().all(|f| f.level > 0));
}

#[test]
fn concurrent_sync_writers_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Db::open(dir.path(), Options::default()).expect("open"));
    let writers: Vec<_> = (0..16u32)
        .map(|w| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for i in 0..100u32 {
                    db.put(
                        format!("w{w}-{i}").as_bytes(),
                        &i.to_le_bytes(),
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
    for w in 0..16u32 {
        for i in 0..100u32 {
            assert_eq!(
                db.get(format!("w{w}-{i}").as_bytes()).expect("get"),
                Some(i.to_le_bytes().to_vec())
            );
        }
    }
    let stats = db.stats();
    // One WAL record per batch; group commit shares each fsync among the batches waiting.
    assert_eq!(stats.wal_records, 1600);
    assert!(
        stats.wal_syncs < stats.wal_records,
        "no group commit: {stats:?}"
    );
}
