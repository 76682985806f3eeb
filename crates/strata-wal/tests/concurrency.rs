//! Many writers at once: every acknowledged record is there, exactly once, in each writer's
//! order; group commit batches them (fewer fsyncs than records).

use std::sync::Arc;

use strata_wal::{Wal, WalOptions};

#[test]
fn concurrent_writers_lose_nothing_and_share_fsyncs() {
    const WRITERS: u64 = 8;
    const PER_WRITER: u64 = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        segment_bytes_max: 16 * 1024,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), options.clone()).expect("open");
    let wal = Arc::new(wal);
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut lsns = Vec::new();
                for s in 0..PER_WRITER {
                    let mut record = w.to_be_bytes().to_vec();
                    record.extend_from_slice(&s.to_be_bytes());
                    lsns.push(wal.append(&record).expect("append"));
                }
                lsns
            })
        })
        .collect();
    let mut acked: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("join"))
        .collect();
    acked.sort_unstable();
    let total = WRITERS * PER_WRITER;
    assert_eq!(
        acked,
        (1..=total).collect::<Vec<_>>(),
        "LSNs are dense and unique"
    );
    let metrics = wal.metrics();
    assert_eq!(metrics.records, total);
    assert!(
        metrics.syncs < total && metrics.records_per_sync() > 1.0,
        "group commit shared no fsync: {metrics:?}"
    );
    drop(wal);

    let (wal, _) = Wal::open(dir.path(), options).expect("reopen");
    let mut next_seq = vec![0u64; WRITERS as usize];
    let mut count = 0;
    for record in wal.read_from(1).expect("read") {
        let (_, payload) = record.expect("valid");
        let writer = u64::from_be_bytes(payload[0..8].try_into().expect("8 bytes"));
        let seq = u64::from_be_bytes(payload[8..16].try_into().expect("8 bytes"));
        assert_eq!(
            seq, next_seq[writer as usize],
            "writer {writer} out of order"
        );
        next_seq[writer as usize] += 1;
        count += 1;
    }
    assert_eq!(count, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_appends_are_acknowledged_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (wal, _) = Wal::open(dir.path(), WalOptions::default()).expect("open");
    let tasks: Vec<_> = (0..32u8)
        .map(|i| {
            let wal = wal.clone();
            tokio::spawn(async move { wal.append_async(vec![i; 32]).await })
        })
        .collect();
    for t in tasks {
        let lsn = t.await.expect("join").expect("append");
        assert!(lsn <= wal.durable_lsn());
    }
    assert_eq!(wal.next_lsn(), 33);
}

#[test]
fn truncation_racing_appends_leaves_a_log_that_verifies() {
    // Several rounds: one round in about a hundred once parked an appender whose record a
    // cut removed, with nobody left to wake it (the log had grown past it again).
    for _ in 0..8 {
        truncation_racing_appends_round();
    }
}

fn truncation_racing_appends_round() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions {
        segment_bytes_max: 4096,
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(dir.path(), options.clone()).expect("open");
    let wal = Arc::new(wal);
    let appenders: Vec<_> = (0..4u8)
        .map(|w| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    let mut record = vec![w; 40];
                    record.extend_from_slice(&i.to_be_bytes());
                    wal.append(&record).expect("append");
                }
            })
        })
        .collect();
    let truncator = {
        let wal = Arc::clone(&wal);
        std::thread::spawn(move || {
            for _ in 0..20 {
                let next = wal.next_lsn();
                let cut = wal
                    .first_lsn()
                    .max(next.saturating_sub(7))
                    .saturating_sub(1);
                wal.truncate_after(cut).expect("truncate_after");
            }
        })
    };
    for a in appenders {
        a.join().expect("appender");
    }
    truncator.join().expect("truncator");
    let next = wal.next_lsn();
    let read: Vec<_> = wal
        .read_from(1)
        .expect("read")
        .collect::<Result<_, _>>()
        .expect("every record verifies");
    assert_eq!(read.len() as u64, next - 1);
    drop(wal);
    let (wal, report) = Wal::open(dir.path(), options).expect("reopen");
    assert_eq!(report.torn_tail_bytes, 0);
    assert_eq!(wal.next_lsn(), next);
}
