//! The async snapshotter: what it records, when it flushes, what it passes through, and that
//! nothing is dropped silently. Time is Tokio's paused clock, so timers are exact and nothing
//! sleeps in real time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_clock::LamportClock;
use strata_snaplog::{
    Event, LogOptions, Member, MemberEvent, MemberEventKind, OutputOverflow, Query, ReplayOptions,
    Snapshotter, SnapshotterConfig, UserEvent, replay_file,
};
use tokio::sync::mpsc;

fn member(name: &str, last_octet: u8) -> Member {
    Member {
        name: name.to_owned(),
        addr: std::net::SocketAddr::from(([10, 0, 0, last_octet], 7946)),
    }
}

fn members(kind: MemberEventKind, list: Vec<Member>) -> Event {
    Event::Member(MemberEvent {
        kind,
        members: list,
    })
}

fn user(ltime: u64) -> Event {
    Event::User(UserEvent {
        ltime,
        name: "deploy".into(),
        payload: Vec::new(),
        coalesce: false,
    })
}

fn query(ltime: u64) -> Event {
    Event::Query(Query {
        ltime,
        name: "ping".into(),
        payload: Vec::new(),
    })
}

fn file_text(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).expect("read snapshot")).expect("utf-8")
}

/// Polls (in paused Tokio time) until `cond` holds, failing after `limit` of virtual time.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn records_joins_leaves_failures_and_clocks_as_serf_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let clock = Arc::new(LamportClock::starting_at(5));
    let (events, snapshotter) = Snapshotter::open(
        &path,
        SnapshotterConfig::default(),
        Arc::clone(&clock),
        None,
    )
    .await
    .expect("open");

    events
        .send(members(
            MemberEventKind::Join,
            vec![member("a", 1), member("b", 2)],
        ))
        .await
        .expect("send");
    events
        .send(members(MemberEventKind::Failed, vec![member("b", 2)]))
        .await
        .expect("send");
    events
        .send(members(MemberEventKind::Update, vec![member("a", 1)]))
        .await
        .expect("send");
    events.send(user(3)).await.expect("send");
    events.send(user(2)).await.expect("send"); // older: not recorded
    events.send(query(9)).await.expect("send");
    let report = snapshotter.shutdown().await.expect("shutdown");

    assert_eq!(
        file_text(&path),
        "alive: a 10.0.0.1:7946\nalive: b 10.0.0.2:7946\nclock: 4\nnot-alive: b\n\
         event-clock: 3\nquery-clock: 9\n"
    );
    assert_eq!(report.state.alive.len(), 1);
    assert_eq!(report.state.last_clock, 4);
    assert_eq!(report.stats.events, 6);
    assert_eq!(report.stats.log.fsyncs, 1);
}

#[tokio::test(start_paused = true)]
async fn a_recorded_line_is_flushed_within_the_flush_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let flush_interval = Duration::from_millis(200);
    let config = SnapshotterConfig {
        flush_interval,
        clock_update_interval: Duration::from_secs(3600),
        ..SnapshotterConfig::default()
    };
    let clock = Arc::new(LamportClock::new());
    let (events, snapshotter) = Snapshotter::open(&path, config, clock, None)
        .await
        .expect("open");
    events
        .send(members(MemberEventKind::Join, vec![member("a", 1)]))
        .await
        .expect("send");
    // No further event arrives (Serf would keep the line in memory indefinitely).
    let took = wait_until(flush_interval * 2, || {
        file_text(&path).contains("alive: a 10.0.0.1:7946\n")
    })
    .await;
    assert!(
        took <= flush_interval + Duration::from_millis(10),
        "took {took:?}"
    );
    assert!(snapshotter.stats().log.fsyncs >= 1, "EveryFlush fsyncs");
    snapshotter.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn the_member_clock_is_recorded_on_the_tick_when_it_advanced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let clock = Arc::new(LamportClock::new());
    let config = SnapshotterConfig {
        clock_update_interval: Duration::from_millis(100),
        flush_interval: Duration::from_millis(10),
        ..SnapshotterConfig::default()
    };
    let (_events, snapshotter) = Snapshotter::open(&path, config, Arc::clone(&clock), None)
        .await
        .expect("open");
    clock.witness(41); // now 42: recorded as 41, as Serf does.
    wait_until(Duration::from_secs(1), || file_text(&path) == "clock: 41\n").await;
    assert_eq!(snapshotter.last_clock(), 41);
    snapshotter.shutdown().await.expect("shutdown");
    assert_eq!(
        file_text(&path),
        "clock: 41\n",
        "unchanged clock is not rewritten"
    );
}

#[tokio::test(start_paused = true)]
async fn leave_is_durable_on_return_and_stops_recording_but_not_passing_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let clock = Arc::new(LamportClock::new());
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let (events, snapshotter) = Snapshotter::open(
        &path,
        SnapshotterConfig::default(),
        Arc::clone(&clock),
        Some(out_tx),
    )
    .await
    .expect("open");
    events
        .send(members(MemberEventKind::Join, vec![member("a", 1)]))
        .await
        .expect("send");
    assert!(out_rx.recv().await.is_some());
    snapshotter.leave().await.expect("leave");
    assert!(file_text(&path).ends_with("leave\n"));
    assert!(snapshotter.alive_nodes().is_empty(), "leave clears members");

    events
        .send(members(MemberEventKind::Join, vec![member("z", 9)]))
        .await
        .expect("send");
    let passed = out_rx.recv().await.expect("passed through after leave");
    assert!(matches!(passed, Event::Member(_)));
    let report = snapshotter.shutdown().await.expect("shutdown");
    assert!(
        !file_text(&path).contains("alive: z"),
        "recorded after leave"
    );
    assert!(report.state.alive.is_empty());

    // Replays agree, for both settings.
    let replay = replay_file(&path, &ReplayOptions::default()).expect("replay");
    assert!(replay.state(false).alive.is_empty());
    assert_eq!(replay.state(true).alive.len(), 1);
}

#[tokio::test]
async fn a_full_input_queue_counts_what_try_send_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let config = SnapshotterConfig {
        event_queue_capacity: 2,
        ..SnapshotterConfig::default()
    };
    let clock = Arc::new(LamportClock::new());
    let (events, snapshotter) = Snapshotter::open(&path, config, clock, None)
        .await
        .expect("open");
    // On this single-threaded runtime the snapshotter cannot run until we yield, so the queue
    // fills deterministically.
    let mut refused = 0;
    for t in 1..=5 {
        if events.try_send(user(t)).is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    assert_eq!(snapshotter.stats().input_dropped, 3);
    let report = snapshotter.shutdown().await.expect("shutdown");
    assert_eq!(report.stats.input_dropped, 3);
    assert_eq!(report.stats.events, 2);
    assert_eq!(report.state.last_event_clock, 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_output_channel_is_counted_not_silent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let config = SnapshotterConfig {
        output_overflow: OutputOverflow::DropAndCount,
        ..SnapshotterConfig::default()
    };
    let (out_tx, _out_rx) = mpsc::channel(1);
    let clock = Arc::new(LamportClock::new());
    let (events, snapshotter) = Snapshotter::open(&path, config, clock, Some(out_tx))
        .await
        .expect("open");
    for t in 1..=4 {
        events.send(user(t)).await.expect("send");
    }
    let report = snapshotter.shutdown().await.expect("shutdown");
    assert_eq!(report.stats.output_dropped, 3);
    assert_eq!(report.state.last_event_clock, 4, "still recorded");
}

#[tokio::test(start_paused = true)]
async fn names_that_cannot_be_recorded_are_counted_and_still_passed_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let (out_tx, mut out_rx) = mpsc::channel(4);
    let clock = Arc::new(LamportClock::new());
    let (events, snapshotter) =
        Snapshotter::open(&path, SnapshotterConfig::default(), clock, Some(out_tx))
            .await
            .expect("open");
    events
        .send(members(
            MemberEventKind::Join,
            vec![member("evil\nclock: 99", 1)],
        ))
        .await
        .expect("send");
    assert!(out_rx.recv().await.is_some());
    let report = snapshotter.shutdown().await.expect("shutdown");
    assert_eq!(report.stats.unrecordable, 1);
    assert_eq!(file_text(&path), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_replays_to_the_live_state_after_many_compactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let clock = Arc::new(LamportClock::new());
    let config = SnapshotterConfig {
        log: LogOptions {
            compact_bytes_min: 512,
            ..LogOptions::default()
        },
        ..SnapshotterConfig::default()
    };
    let (events, snapshotter) = Snapshotter::open(&path, config.clone(), Arc::clone(&clock), None)
        .await
        .expect("open");
    for i in 0..3000u32 {
        let m = member(&format!("n{}", i % 17), (i % 17) as u8);
        let kind = match i % 5 {
            0..=2 => MemberEventKind::Join,
            3 => MemberEventKind::Failed,
            _ => MemberEventKind::Leave,
        };
        clock.increment();
        events.send(members(kind, vec![m])).await.expect("send");
        if i % 7 == 0 {
            events.send(user(u64::from(i))).await.expect("send");
        }
    }
    let report = snapshotter.shutdown().await.expect("shutdown");
    assert!(report.stats.log.compactions > 1, "{:?}", report.stats);
    assert_eq!(report.stats.log.errors, 0);
    let replay = replay_file(&path, &ReplayOptions::default()).expect("replay");
    assert!(replay.warnings.is_empty());
    assert_eq!(replay.state(false), report.state);
    assert!(std::fs::metadata(&path).expect("stat").len() < 4096);

    // A restart sees the same state.
    let (_events, reopened) = Snapshotter::open(&path, config, clock, None)
        .await
        .expect("reopen");
    assert_eq!(reopened.state(), report.state);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_consumer_neither_blocks_shutdown_nor_loses_recorded_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    // Room for one event, and nobody reads it.
    let (out_tx, _out_rx) = mpsc::channel(1);
    let clock = Arc::new(LamportClock::new());
    let (events, snapshotter) = Snapshotter::open(
        &path,
        SnapshotterConfig::default(),
        Arc::clone(&clock),
        Some(out_tx),
    )
    .await
    .expect("open");
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        events
            .send(members(MemberEventKind::Join, vec![member(name, i as u8)]))
            .await
            .expect("send");
    }
    let started = tokio::time::Instant::now();
    let report = snapshotter.shutdown().await.expect("shutdown returns");
    assert!(
        started.elapsed() <= Duration::from_millis(300),
        "bounded by the timeout"
    );
    assert_eq!(report.stats.events, 3);
    assert_eq!(
        report.state.alive.len(),
        3,
        "every accepted event is recorded"
    );
    assert_eq!(
        report.stats.output_dropped, 2,
        "undelivered events are counted"
    );
    assert!(
        events.send(user(1)).await.is_err(),
        "no event is accepted after shutdown"
    );
    let replay = replay_file(&path, &ReplayOptions::default()).expect("replay");
    assert_eq!(replay.state(false), report.state);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_consumer_does_not_block_leave_or_the_flush_timer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let (out_tx, mut out_rx) = mpsc::channel(1);
    let clock = Arc::new(LamportClock::new());
    let config = SnapshotterConfig {
        flush_interval: Duration::from_millis(100),
        ..SnapshotterConfig::default()
    };
    let (events, snapshotter) = Snapshotter::open(&path, config, Arc::clone(&clock), Some(out_tx))
        .await
        .expect("open");
    for (i, name) in ["a", "b", "c"].into_iter().enumerate() {
        events
            .send(members(MemberEventKind::Join, vec![member(name, i as u8)]))
            .await
            .expect("send");
    }
    // The second event is recorded and waits for the consumer; it still reaches the file.
    wait_until(Duration::from_secs(1), || {
        file_text(&path).contains("alive: b ")
    })
    .await;
    snapshotter.leave().await.expect("leave is not blocked");
    assert!(file_text(&path).ends_with("leave\n"));
    // Once the consumer reads, the waiting events flow again, in order.
    for name in ["a", "b", "c"] {
        match out_rx.recv().await.expect("event") {
            Event::Member(e) => assert_eq!(e.members[0].name, name),
            other => panic!("unexpected {other:?}"),
        }
    }
    let report = snapshotter.shutdown().await.expect("shutdown");
    assert_eq!(report.stats.output_dropped, 0);
}

#[tokio::test(start_paused = true)]
async fn lines_written_because_the_buffer_filled_are_fsynced_within_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let config = SnapshotterConfig {
        log: LogOptions {
            buffer_bytes_max: 256,
            ..LogOptions::default()
        },
        flush_interval: Duration::from_millis(100),
        ..SnapshotterConfig::default()
    };
    let clock = Arc::new(LamportClock::new());
    let (events, snapshotter) = Snapshotter::open(&path, config, clock, None)
        .await
        .expect("open");
    let many = (0..50).map(|i| member(&format!("node-{i}"), i)).collect();
    events
        .send(members(MemberEventKind::Join, many))
        .await
        .expect("send");
    wait_until(Duration::from_millis(500), || {
        snapshotter.stats().log.flushes >= 1 && snapshotter.stats().log.fsyncs >= 1
    })
    .await;
    snapshotter.shutdown().await.expect("shutdown");
}

#[cfg(unix)]
#[tokio::test]
async fn a_compacted_file_is_not_executable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("snapshot");
    let (mut log, _) =
        strata_snaplog::SnapshotLog::open(&path, LogOptions::default()).expect("open");
    log.append(strata_snaplog::Record::Clock(3))
        .expect("append");
    log.compact().expect("compact");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    // 0644 before the umask; Serf's compaction makes it 0755.
    assert_eq!(mode & 0o111, 0, "mode {mode:o}");
    assert_eq!(mode & 0o600, 0o600, "mode {mode:o}");
}
