//! Golden files: snapshot logs in `tests/golden/` whose replay was reasoned out by hand from
//! Serf's `Snapshotter.replay()` rules (and, for the generated `churn.snap`, computed by an
//! independent Python model of those rules in `tests/golden/tools/`), never by running this
//! crate. Each `NAME.snap` has a `NAME.expected.json` holding the state, warnings (line and text
//! only: reasons are an implementation detail) and torn tail under both `rejoin_after_leave`
//! settings.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_snaplog::{LogOptions, Replay, ReplayOptions, compact_file, replay_file};

/// The golden file that stands for a long-running agent's log: lots of superseded lines.
const LARGE_GOLDEN_FILE: &str = "churn.snap";

#[path = "support/expected.rs"]
mod expected;

use expected::Expected;

fn expected_of_replay(replay: &Replay, rejoin_after_leave: bool) -> Expected {
    let state = replay.state(rejoin_after_leave);
    Expected {
        alive: state.alive.into_iter().collect(),
        last_clock: state.last_clock,
        last_event_clock: state.last_event_clock,
        last_query_clock: state.last_query_clock,
        warnings: replay
            .warnings
            .iter()
            .map(|w| (w.line, w.text.clone()))
            .collect(),
        torn_tail_bytes: replay.torn_tail_bytes,
    }
}

/// A diff-like description of how `actual` differs from `expected`: `-` lines are expected
/// and missing, `+` lines are actual and unexpected.
fn diff(expected: &Expected, actual: &Expected) -> String {
    let mut out = String::new();
    if expected.alive != actual.alive {
        out.push_str("  alive:\n");
        for (name, addr) in &expected.alive {
            if actual.alive.get(name) != Some(addr) {
                writeln!(out, "    - {name:?}: {addr:?}").expect("write to String");
            }
        }
        for (name, addr) in &actual.alive {
            if expected.alive.get(name) != Some(addr) {
                writeln!(out, "    + {name:?}: {addr:?}").expect("write to String");
            }
        }
    }
    for (name, e, a) in [
        ("last_clock", expected.last_clock, actual.last_clock),
        (
            "last_event_clock",
            expected.last_event_clock,
            actual.last_event_clock,
        ),
        (
            "last_query_clock",
            expected.last_query_clock,
            actual.last_query_clock,
        ),
        (
            "torn_tail_bytes",
            expected.torn_tail_bytes,
            actual.torn_tail_bytes,
        ),
    ] {
        if e != a {
            writeln!(out, "  {name}:\n    - {e}\n    + {a}").expect("write to String");
        }
    }
    if expected.warnings != actual.warnings {
        out.push_str("  warnings (line, text):\n");
        for w in &expected.warnings {
            if !actual.warnings.contains(w) {
                writeln!(out, "    - {w:?}").expect("write to String");
            }
        }
        for w in &actual.warnings {
            if !expected.warnings.contains(w) {
                writeln!(out, "    + {w:?}").expect("write to String");
            }
        }
        if expected.warnings.len() == actual.warnings.len() {
            out.push_str("    (same warnings in a different order)\n");
        }
    }
    out
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Every `*.snap` in the golden directory, sorted, with its expectations per setting
/// (`[rejoin_after_leave = false, rejoin_after_leave = true]`). Fails if there are none, or if a
/// `.snap` and its `.expected.json` do not come in pairs.
fn golden_files() -> Vec<(PathBuf, [Expected; 2])> {
    let dir = golden_dir();
    let mut snaps = Vec::new();
    let mut expectations = Vec::new();
    for entry in
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
    {
        let path = entry.expect("read a golden directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("golden file names are UTF-8")
            .to_owned();
        if let Some(stem) = name.strip_suffix(".expected.json") {
            expectations.push(stem.to_owned());
        } else if path.extension().is_some_and(|e| e == "snap") && path.is_file() {
            snaps.push(path);
        }
    }
    snaps.sort();
    assert!(
        !snaps.is_empty(),
        "no *.snap golden files in {}",
        dir.display()
    );
    for stem in &expectations {
        assert!(
            dir.join(format!("{stem}.snap")).is_file(),
            "{stem}.expected.json has no {stem}.snap"
        );
    }
    snaps
        .into_iter()
        .map(|snap| {
            let expected_path = snap.with_extension("expected.json");
            let text = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
                panic!("{} has no {}: {e}", snap.display(), expected_path.display())
            });
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", expected_path.display()));
            let context = |key: &str| format!("{}[{key:?}]", expected_path.display());
            let per_setting = ["rejoin_false", "rejoin_true"].map(|key| {
                let value = json
                    .get(key)
                    .unwrap_or_else(|| panic!("{}: missing {key:?}", expected_path.display()));
                Expected::from_json(value, &context(key))
            });
            (snap, per_setting)
        })
        .collect()
}

fn all_warnings() -> ReplayOptions {
    ReplayOptions {
        warnings_max: usize::MAX,
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

/// Compares `actual` with `expected` for both settings, adding a message per mismatch.
fn check(
    failures: &mut Vec<String>,
    what: &str,
    replay: &Replay,
    expected: &[Expected; 2],
    clean: bool,
) {
    for (rejoin_after_leave, expected) in [false, true].into_iter().zip(expected) {
        let expected = if clean {
            expected.clean()
        } else {
            expected.clone()
        };
        let actual = expected_of_replay(replay, rejoin_after_leave);
        if actual != expected {
            failures.push(format!(
                "{what} (rejoin_after_leave = {rejoin_after_leave}): replay differs from the \
                 golden expectation (- expected, + actual):\n{}",
                diff(&expected, &actual)
            ));
        }
    }
}

fn report(failures: &[String], files: usize) {
    assert!(
        failures.is_empty(),
        "{} mismatch(es) over {files} golden files:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn golden_files_replay_to_the_state_reasoned_from_serf_rules() {
    let files = golden_files();
    let mut failures = Vec::new();
    for (snap, expected) in &files {
        let replay = replay_file(snap, &all_warnings())
            .unwrap_or_else(|e| panic!("replaying {}: {e}", snap.display()));
        assert_eq!(
            replay.warnings_total,
            replay.warnings.len() as u64,
            "{}: warnings were dropped despite warnings_max = usize::MAX",
            snap.display()
        );
        check(&mut failures, &file_name(snap), &replay, expected, false);
    }
    report(&failures, files.len());
}

#[test]
fn compacted_golden_files_replay_to_the_same_state_without_warnings_or_torn_tail() {
    let files = golden_files();
    let mut failures = Vec::new();
    for (snap, expected) in &files {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let copy = dir.path().join(snap.file_name().expect("a file name"));
        std::fs::copy(snap, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", snap.display()));
        compact_file(&copy, LogOptions::default())
            .unwrap_or_else(|e| panic!("compacting a copy of {}: {e}", snap.display()));
        let replay = replay_file(&copy, &all_warnings())
            .unwrap_or_else(|e| panic!("replaying the compacted {}: {e}", snap.display()));
        check(
            &mut failures,
            &format!("compacted {}", file_name(snap)),
            &replay,
            expected,
            true,
        );
    }
    report(&failures, files.len());
}

#[test]
fn compaction_shrinks_the_large_golden_file() {
    let snap = golden_dir().join(LARGE_GOLDEN_FILE);
    let original = std::fs::metadata(&snap)
        .unwrap_or_else(|e| panic!("{}: {e}", snap.display()))
        .len();
    let original_lines = replay_file(&snap, &all_warnings())
        .expect("replay the large golden file")
        .lines;
    assert!(
        original_lines >= 2000,
        "{LARGE_GOLDEN_FILE} should have 2000+ lines, has {original_lines}"
    );

    let dir = tempfile::tempdir().expect("create a temp dir");
    let copy = dir.path().join(LARGE_GOLDEN_FILE);
    std::fs::copy(&snap, &copy).expect("copy the large golden file");
    compact_file(&copy, LogOptions::default()).expect("compact the copy");
    let compacted = std::fs::metadata(&copy)
        .expect("stat the compacted copy")
        .len();
    assert!(
        compacted < original,
        "compacting {LARGE_GOLDEN_FILE} should shrink it: {original} bytes before, {compacted} after"
    );
}

#[test]
fn appending_to_the_large_golden_file_compacts_it_by_size_and_keeps_its_state() {
    // The size rule, not a compaction by hand: an agent restarted on this log with a compaction
    // threshold below its size compacts on its next record.
    let snap = golden_dir().join(LARGE_GOLDEN_FILE);
    let before = replay_file(&snap, &all_warnings()).expect("replay");
    let dir = tempfile::tempdir().expect("create a temp dir");
    let copy = dir.path().join(LARGE_GOLDEN_FILE);
    std::fs::copy(&snap, &copy).expect("copy the large golden file");
    let options = LogOptions {
        compact_bytes_min: 16 * 1024,
        ..LogOptions::default()
    };
    let (mut log, _) = strata_snaplog::SnapshotLog::open(&copy, options).expect("open");
    assert!(log.log_bytes() > log.compaction_threshold_bytes());
    let last_query_clock = before
        .state(false)
        .last_query_clock
        .max(before.state(true).last_query_clock)
        + 1;
    log.append(strata_snaplog::Record::QueryClock(last_query_clock))
        .expect("append");
    assert_eq!(log.stats().compactions, 1, "the append compacts by size");
    log.sync().expect("sync");
    let after = replay_file(&copy, &all_warnings()).expect("replay the compacted copy");
    assert!(after.warnings.is_empty());
    for rejoin in [false, true] {
        let mut expected = before.state(rejoin);
        expected.last_query_clock = last_query_clock;
        assert_eq!(
            after.state(rejoin),
            expected,
            "rejoin_after_leave = {rejoin}"
        );
    }
}
