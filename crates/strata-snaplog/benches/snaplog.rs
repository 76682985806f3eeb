//! `cargo xtask bench snaplog`: how fast the snapshot log records events and replays files.
//!
//! Prints `BENCH <name> <value> <unit>` per figure (the median of several runs) and
//! `RATIO <name> <value>` against a baseline measured in the same run: a replay written the
//! way Serf's Go code does it (read a line into a fresh string, match prefixes, allocate the
//! name and address for every `alive:` line). Above 1 means Strata is ahead.
//!
//! `-- --quick` runs smaller sizes (for a smoke test).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::print_ratio;
use strata_clock::LamportClock;
use strata_snaplog::{
    Event, LogOptions, Member, MemberEvent, MemberEventKind, Record, ReplayOptions, SnapshotLog,
    Snapshotter, SnapshotterConfig, replay_file,
};

const RUNS: usize = 5;

fn bench(name: &str, unit: &str, run: impl FnMut() -> f64) -> f64 {
    bench_support::bench(name, unit, RUNS, run)
}

/// The name and address of the member that event `i` is about, among `members` members,
/// written into reused buffers (no allocation per record).
fn member_of(i: u64, members: u64, name: &mut String, addr: &mut String) {
    use std::fmt::Write;
    let n = (i * 7919) % members;
    name.clear();
    addr.clear();
    let _ = write!(name, "node-{n}.dc1.example.internal");
    let _ = write!(
        addr,
        "10.{}.{}.{}:7946",
        n >> 16 & 255,
        n >> 8 & 255,
        n & 255
    );
}

/// A Serf-like stream of records: joins, failures and clock updates among `members` nodes.
fn record_stream(log: &mut SnapshotLog, events: u64, members: u64) {
    let mut name = String::new();
    let mut addr = String::new();
    for i in 0..events {
        member_of(i, members, &mut name, &mut addr);
        let record = if i % 4 == 3 {
            Record::NotAlive { name: &name }
        } else {
            Record::Alive {
                name: &name,
                addr: &addr,
            }
        };
        log.append(record).expect("append");
        log.append(Record::Clock(i)).expect("append");
    }
    log.sync().expect("sync");
}

fn sync_log_events_per_sec(dir: &Path, events: u64) -> f64 {
    let path = dir.join("record.snapshot");
    let _ = std::fs::remove_file(&path);
    let (mut log, _) = SnapshotLog::open(&path, LogOptions::default()).expect("open");
    let start = Instant::now();
    record_stream(&mut log, events, 2_000);
    events as f64 / start.elapsed().as_secs_f64()
}

fn snapshotter_events_per_sec(runtime: &tokio::runtime::Runtime, dir: &Path, events: u64) -> f64 {
    let path = dir.join("snapshotter.snapshot");
    let _ = std::fs::remove_file(&path);
    runtime.block_on(async {
        let clock = Arc::new(LamportClock::new());
        let (sender, snapshotter) = Snapshotter::open(
            &path,
            SnapshotterConfig::default(),
            Arc::clone(&clock),
            None,
        )
        .await
        .expect("open");
        let start = Instant::now();
        for i in 0..events {
            let n = (i * 7919) % 2_000;
            let kind = if i % 4 == 3 {
                MemberEventKind::Failed
            } else {
                MemberEventKind::Join
            };
            clock.increment();
            sender
                .send(Event::Member(MemberEvent {
                    kind,
                    members: vec![Member {
                        name: format!("node-{n}.dc1.example.internal"),
                        addr: std::net::SocketAddr::from(([10, 0, (n >> 8) as u8, n as u8], 7946)),
                    }],
                }))
                .await
                .expect("send");
        }
        let report = snapshotter.shutdown().await.expect("shutdown");
        assert_eq!(report.stats.events, events);
        events as f64 / start.elapsed().as_secs_f64()
    })
}

/// Writes a snapshot file of about `bytes` bytes that was never compacted.
fn write_replay_file(path: &Path, bytes: u64) {
    let (mut log, _) = SnapshotLog::open(
        path,
        LogOptions {
            compact_bytes_min: u64::MAX,
            ..LogOptions::default()
        },
    )
    .expect("open");
    let mut i = 0;
    while log.log_bytes() < bytes {
        record_stream_chunk(&mut log, i);
        i += 1;
    }
    log.sync().expect("sync");
}

fn record_stream_chunk(log: &mut SnapshotLog, chunk: u64) {
    let mut name = String::new();
    let mut addr = String::new();
    for j in 0..1000u64 {
        let i = chunk * 1000 + j;
        member_of(i, 5_000, &mut name, &mut addr);
        if i % 4 == 3 {
            log.append(Record::NotAlive { name: &name })
                .expect("append");
        } else {
            log.append(Record::Alive {
                name: &name,
                addr: &addr,
            })
            .expect("append");
        }
        log.append(Record::Clock(i)).expect("append");
        if i.is_multiple_of(50) {
            log.append(Record::EventClock(i)).expect("append");
        }
    }
}

/// The baseline: replay as Serf's Go code does it.
fn serf_style_replay(path: &Path) -> (usize, u64) {
    let mut reader = BufReader::new(std::fs::File::open(path).expect("open"));
    let mut alive: HashMap<String, String> = HashMap::new();
    let mut clock = 0u64;
    let mut event_clock = 0u64;
    let mut query_clock = 0u64;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if !line.ends_with('\n') {
            break;
        }
        let line = &line[..line.len() - 1];
        if let Some(info) = line.strip_prefix("alive: ") {
            if let Some(at) = info.rfind(' ') {
                alive.insert(info[..at].to_string(), info[at + 1..].to_string());
            }
        } else if let Some(name) = line.strip_prefix("not-alive: ") {
            alive.remove(name);
        } else if let Some(v) = line.strip_prefix("clock: ") {
            clock = v.parse().unwrap_or(clock);
        } else if let Some(v) = line.strip_prefix("event-clock: ") {
            event_clock = v.parse().unwrap_or(event_clock);
        } else if let Some(v) = line.strip_prefix("query-clock: ") {
            query_clock = v.parse().unwrap_or(query_clock);
        } else if line == "leave" {
            alive.clear();
            clock = 0;
            event_clock = 0;
            query_clock = 0;
        }
    }
    (alive.len(), clock ^ event_clock ^ query_clock)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (events, replay_bytes) = if quick {
        (20_000, 8 << 20)
    } else {
        (200_000, 128 << 20)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    bench("snaplog_log_records_per_sec", "events/s", || {
        sync_log_events_per_sec(dir.path(), events)
    });
    bench("snaplog_snapshotter_events_per_sec", "events/s", || {
        snapshotter_events_per_sec(&runtime, dir.path(), events)
    });

    let path = dir.path().join("replay.snapshot");
    write_replay_file(&path, replay_bytes);
    let size = std::fs::metadata(&path).expect("stat").len() as f64;
    let mb = size / 1e6;
    let expected = replay_file(&path, &ReplayOptions::default()).expect("replay");
    let (baseline_alive, _) = serf_style_replay(&path);
    assert_eq!(
        baseline_alive,
        expected.state(false).alive.len(),
        "baseline disagrees"
    );

    let strata = bench("snaplog_replay", "MB/s", || {
        let start = Instant::now();
        let replay = replay_file(&path, &ReplayOptions::default()).expect("replay");
        std::hint::black_box(replay.state(false));
        mb / start
            .elapsed()
            .as_secs_f64()
            .max(Duration::from_nanos(1).as_secs_f64())
    });
    let baseline = bench("snaplog_replay_serf_style", "MB/s", || {
        let start = Instant::now();
        std::hint::black_box(serf_style_replay(&path));
        mb / start.elapsed().as_secs_f64()
    });
    print_ratio("snaplog_replay_vs_serf_style", strata / baseline);

    let compact = bench("snaplog_compact", "MB/s", || {
        let copy = dir.path().join("compact.snapshot");
        std::fs::copy(&path, &copy).expect("copy");
        let start = Instant::now();
        strata_snaplog::compact_file(&copy, LogOptions::default()).expect("compact");
        mb / start.elapsed().as_secs_f64()
    });
    let _ = compact;
}
