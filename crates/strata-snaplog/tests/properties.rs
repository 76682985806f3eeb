//! Property tests for the snapshot log's invariants, each named after the invariant it checks.
//!
//! Small name spaces (a handful of members) so that joins, failures and leaves collide often.

use std::io::Read;

use proptest::prelude::*;
use strata_snaplog::{
    History, LogOptions, Record, ReplayOptions, SnapshotLog, State, replay, replay_file,
};

/// A line generator: mostly valid records, plus everything replay must skip.
fn line() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("node c".to_owned()),
        Just("".to_owned()),
    ];
    let addr = prop_oneof![
        Just("10.0.0.1:7946".to_owned()),
        Just("[::1]:7946".to_owned()),
        Just("x".to_owned()),
    ];
    let time = prop_oneof![0u64..20, Just(u64::MAX)];
    prop_oneof![
        4 => (name.clone(), addr).prop_map(|(n, a)| format!("alive: {n} {a}").into_bytes()),
        2 => name.prop_map(|n| format!("not-alive: {n}").into_bytes()),
        2 => time.clone().prop_map(|t| format!("clock: {t}").into_bytes()),
        1 => time.clone().prop_map(|t| format!("event-clock: {t}").into_bytes()),
        1 => time.prop_map(|t| format!("query-clock: {t}").into_bytes()),
        1 => Just(b"leave".to_vec()),
        1 => prop_oneof![
            Just(b"# comment".to_vec()),
            Just(b"coordinate: {\"x\":1}".to_vec()),
            Just(b"clock: -1".to_vec()),
            Just(b"clock: 5\r".to_vec()),
            Just(b"alive: nospace".to_vec()),
            Just(b"leave ".to_vec()),
            Just(Vec::new()),
            Just(b"alive: \xff\xfe 1.2.3.4:5".to_vec()),
            proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..12),
        ],
    ]
}

/// A whole file: lines joined by `\n`, optionally with a torn last line.
fn file() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(line(), 0..60),
        proptest::option::of(line()),
    )
        .prop_map(|(lines, torn)| {
            let mut out = Vec::new();
            for l in lines {
                out.extend_from_slice(&l);
                out.push(b'\n');
            }
            if let Some(t) = torn {
                out.extend_from_slice(&t);
            }
            out
        })
}

/// Serf's replay, written as plainly as possible from `snapshot.go`: the model the streaming
/// replay is checked against.
fn model_replay(bytes: &[u8], rejoin: bool) -> (State, Vec<u64>, u64) {
    let mut state = State::default();
    let mut warnings = Vec::new();
    let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let torn = lines.pop().map_or(0, |l| l.len() as u64);
    let number = |s: &[u8]| -> Option<u64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    for (i, line) in lines.iter().enumerate() {
        let n = i as u64 + 1;
        if let Some(info) = line.strip_prefix(b"alive: ") {
            match std::str::from_utf8(info) {
                Ok(info) => match info.rfind(' ') {
                    Some(at) => {
                        state
                            .alive
                            .insert(info[..at].to_owned(), info[at + 1..].to_owned());
                    }
                    None => warnings.push(n),
                },
                Err(_) => warnings.push(n),
            }
        } else if let Some(name) = line.strip_prefix(b"not-alive: ") {
            match std::str::from_utf8(name) {
                Ok(name) => {
                    state.alive.remove(name);
                }
                Err(_) => warnings.push(n),
            }
        } else if let Some(v) = line.strip_prefix(b"clock: ") {
            match number(v) {
                Some(v) => state.last_clock = v,
                None => warnings.push(n),
            }
        } else if let Some(v) = line.strip_prefix(b"event-clock: ") {
            match number(v) {
                Some(v) => state.last_event_clock = v,
                None => warnings.push(n),
            }
        } else if let Some(v) = line.strip_prefix(b"query-clock: ") {
            match number(v) {
                Some(v) => state.last_query_clock = v,
                None => warnings.push(n),
            }
        } else if line.starts_with(b"coordinate: ") {
        } else if *line == b"leave" {
            if !rejoin {
                state = State::default();
            }
        } else if line.starts_with(b"#") {
        } else {
            warnings.push(n);
        }
    }
    (state, warnings, torn)
}

/// A reader that hands out its bytes in the given chunk sizes, to exercise lines that straddle
/// two reads.
struct Chunked<'a> {
    bytes: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = self.sizes[self.next % self.sizes.len()].max(1);
        self.next += 1;
        let n = size.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

fn compacted(history: &History) -> Vec<u8> {
    let mut out = Vec::new();
    history.write_compacted(&mut out).expect("write to a Vec");
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn replay_matches_serfs_rules_for_any_file_and_any_read_sizes(
        bytes in file(),
        sizes in proptest::collection::vec(1usize..40, 1..8),
    ) {
        let reader = Chunked { bytes: &bytes, sizes, next: 0 };
        let replay = replay(reader, &ReplayOptions { warnings_max: usize::MAX }).expect("replay");
        for rejoin in [false, true] {
            let (state, warnings, torn) = model_replay(&bytes, rejoin);
            prop_assert_eq!(replay.state(rejoin), state, "rejoin_after_leave = {}", rejoin);
            let lines: Vec<u64> = replay.warnings.iter().map(|w| w.line).collect();
            prop_assert_eq!(lines, warnings);
            prop_assert_eq!(replay.torn_tail_bytes, torn);
        }
        prop_assert_eq!(replay.valid_len + replay.torn_tail_bytes, bytes.len() as u64);
    }

    #[test]
    fn compacted_log_replays_to_the_same_state_under_both_settings(bytes in file()) {
        let original = replay(&bytes[..], &ReplayOptions::default()).expect("replay");
        let compact = compacted(&original.history);
        let again = replay(&compact[..], &ReplayOptions::default()).expect("replay compacted");
        prop_assert!(again.warnings.is_empty(), "compaction wrote a bad line: {:?}", again.warnings);
        prop_assert_eq!(again.torn_tail_bytes, 0);
        for rejoin in [false, true] {
            prop_assert_eq!(again.state(rejoin), original.state(rejoin), "rejoin_after_leave = {}", rejoin);
        }
        // Compaction is a fixed point: compacting twice gives the same bytes.
        prop_assert_eq!(compacted(&again.history), compact);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Alive(u8, u8),
    NotAlive(u8),
    Clock(u64),
    EventClock(u64),
    QueryClock(u64),
    Leave,
    Flush,
    Sync,
    Compact,
    Reopen,
    TearTail(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..5, 0u8..3).prop_map(|(n, a)| Op::Alive(n, a)),
        3 => (0u8..5).prop_map(Op::NotAlive),
        2 => (0u64..50).prop_map(Op::Clock),
        1 => (0u64..50).prop_map(Op::EventClock),
        1 => (0u64..50).prop_map(Op::QueryClock),
        1 => Just(Op::Leave),
        2 => Just(Op::Flush),
        1 => Just(Op::Sync),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => proptest::collection::vec(b'a'..=b'z', 1..10).prop_map(Op::TearTail),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn snapshot_log_state_always_equals_the_replay_of_its_file(
        ops in proptest::collection::vec(op(), 0..80),
        rejoin in any::<bool>(),
        compact_bytes_min in prop_oneof![Just(0u64), Just(200), Just(1 << 20)],
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snapshot");
        let options = LogOptions {
            rejoin_after_leave: rejoin,
            compact_bytes_min,
            buffer_bytes_max: 64,
            ..LogOptions::default()
        };
        let (mut log, _) = SnapshotLog::open(&path, options.clone()).expect("open");
        let names = ["a", "b", "node c", "d", ""];
        let addrs = ["10.0.0.1:1", "[::1]:2", "h:3"];
        // Every line the log has accepted, in order: what Serf's replay must agree with.
        let mut logical: Vec<u8> = Vec::new();
        for op in ops {
            let record = match op {
                Op::Alive(n, a) => Some(Record::Alive { name: names[n as usize], addr: addrs[a as usize] }),
                Op::NotAlive(n) => Some(Record::NotAlive { name: names[n as usize] }),
                Op::Clock(t) => Some(Record::Clock(t)),
                Op::EventClock(t) => Some(Record::EventClock(t)),
                Op::QueryClock(t) => Some(Record::QueryClock(t)),
                Op::Leave => Some(Record::Leave),
                Op::Flush => { log.flush().expect("flush"); None }
                Op::Sync => { log.sync().expect("sync"); None }
                Op::Compact => { log.compact().expect("compact"); None }
                Op::Reopen => {
                    log.sync().expect("sync");
                    drop(log);
                    let (reopened, report) = SnapshotLog::open(&path, options.clone()).expect("reopen");
                    prop_assert!(report.replay.warnings.is_empty(), "{:?}", report.replay.warnings);
                    log = reopened;
                    None
                }
                Op::TearTail(bytes) => {
                    // A crash mid-append: a partial line at the end of the file.
                    log.sync().expect("sync");
                    drop(log);
                    let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
                    std::io::Write::write_all(&mut file, &bytes).expect("tear");
                    drop(file);
                    let (reopened, report) = SnapshotLog::open(&path, options.clone()).expect("reopen");
                    prop_assert_eq!(report.torn_tail_bytes_truncated, bytes.len() as u64);
                    log = reopened;
                    None
                }
            };
            if let Some(record) = record {
                log.append(record).expect("append");
                record.encode(&mut logical);
            }
            log.sync().expect("sync");
            let on_disk = replay_file(&path, &ReplayOptions::default()).expect("replay");
            prop_assert!(on_disk.warnings.is_empty(), "{:?}", on_disk.warnings);
            prop_assert_eq!(on_disk.torn_tail_bytes, 0);
            prop_assert_eq!(on_disk.state(rejoin), log.state());
            prop_assert_eq!(on_disk.state(rejoin), model_replay(&logical, rejoin).0);
            // And the other setting too: the file never loses what a `leave` hides.
            prop_assert_eq!(on_disk.state(!rejoin), log.history().lock().state(!rejoin));
        }
    }
}
