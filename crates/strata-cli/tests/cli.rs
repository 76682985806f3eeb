//! Integration tests of the `strata` binary: `snaplog dump` and `snaplog compact` against the
//! golden snapshot files of `strata-snaplog` (whose expectations were reasoned out from Serf's
//! rules, not produced by Strata), error handling for a missing file, and `snaplog demo`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[path = "../../strata-snaplog/tests/support/expected.rs"]
mod expected;

use expected::Expected as Dump;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../strata-snaplog/tests/golden")
}

/// Every golden `*.snap`, sorted, with its expected dumps
/// (`[without --rejoin-after-leave, with it]`). Fails if there are none.
fn golden_files() -> Vec<(PathBuf, [Dump; 2])> {
    let dir = golden_dir();
    let mut snaps: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("read a golden directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "snap") && path.is_file())
        .collect();
    snaps.sort();
    assert!(
        !snaps.is_empty(),
        "no *.snap golden files in {}",
        dir.display()
    );
    snaps
        .into_iter()
        .map(|snap| {
            let expected_path = snap.with_extension("expected.json");
            let text = std::fs::read_to_string(&expected_path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", expected_path.display()));
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", expected_path.display()));
            let expected = ["rejoin_false", "rejoin_true"].map(|key| {
                Dump::from_json(&json[key], &format!("{}[{key:?}]", expected_path.display()))
            });
            (snap, expected)
        })
        .collect()
}

fn strata(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .output()
        .expect("run the strata binary")
}

fn snaplog(subcommand: &str, file: &Path, rejoin_after_leave: bool) -> Output {
    let mut args = vec![
        "snaplog".as_ref(),
        subcommand.as_ref(),
        file.as_os_str(),
        "--json".as_ref(),
    ];
    if rejoin_after_leave {
        args.push("--rejoin-after-leave".as_ref());
    }
    strata(&args)
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `strata snaplog dump`, checks it succeeded with one JSON line whose warnings all have
/// a non-empty reason, and returns the parsed dump.
fn dump(file: &Path, rejoin_after_leave: bool, context: &str) -> Dump {
    let output = snaplog("dump", file, rejoin_after_leave);
    assert!(
        output.status.success(),
        "{context}: dump failed: {}",
        describe(&output)
    );
    let stdout = String::from_utf8(output.stdout.clone())
        .unwrap_or_else(|e| panic!("{context}: dump printed non-UTF-8: {e}"));
    assert_eq!(
        stdout.lines().count(),
        1,
        "{context}: dump should print a single JSON line: {}",
        describe(&output)
    );
    let json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{context}: dump did not print JSON ({e}): {stdout}"));
    for warning in json["warnings"].as_array().into_iter().flatten() {
        assert!(
            warning["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{context}: warning without a non-empty \"reason\": {warning}"
        );
    }
    Dump::from_json(&json, context)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn dump_prints_the_golden_state_with_and_without_rejoin_after_leave() {
    let mut failures = Vec::new();
    for (snap, expected) in golden_files() {
        for (rejoin_after_leave, expected) in [false, true].into_iter().zip(expected) {
            let context = format!(
                "dump {} (--rejoin-after-leave: {rejoin_after_leave})",
                file_name(&snap)
            );
            let actual = dump(&snap, rejoin_after_leave, &context);
            if actual != expected {
                failures.push(format!(
                    "{context}: differs from the golden expectation\n  - expected: \
                     {expected:?}\n  + actual:   {actual:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn dump_of_a_missing_file_fails_with_exit_code_1_and_a_message() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let missing = dir.path().join("no-such-snapshot");
    for rejoin_after_leave in [false, true] {
        let output = snaplog("dump", &missing, rejoin_after_leave);
        assert_eq!(
            output.status.code(),
            Some(1),
            "dump of a missing file: {}",
            describe(&output)
        );
        assert!(
            !String::from_utf8_lossy(&output.stderr).trim().is_empty(),
            "dump of a missing file should explain on stderr: {}",
            describe(&output)
        );
        assert!(
            output.stdout.is_empty(),
            "dump of a missing file should print nothing on stdout: {}",
            describe(&output)
        );
    }
    assert!(!missing.exists(), "dump must not create the missing file");
}

#[test]
fn compact_keeps_the_golden_state_for_both_settings_and_leaves_no_warnings() {
    let mut failures = Vec::new();
    for (snap, expected) in golden_files() {
        for compact_with_rejoin in [false, true] {
            let dir = tempfile::tempdir().expect("create a temp dir");
            let copy = dir.path().join(snap.file_name().expect("a file name"));
            std::fs::copy(&snap, &copy)
                .unwrap_or_else(|e| panic!("copying {}: {e}", snap.display()));
            let output = snaplog("compact", &copy, compact_with_rejoin);
            assert!(
                output.status.success(),
                "compact {} (--rejoin-after-leave: {compact_with_rejoin}): {}",
                file_name(&snap),
                describe(&output)
            );
            for (rejoin_after_leave, expected) in [false, true].into_iter().zip(&expected) {
                let context = format!(
                    "dump of {} compacted with --rejoin-after-leave: {compact_with_rejoin}, \
                     dumped with --rejoin-after-leave: {rejoin_after_leave}",
                    file_name(&snap)
                );
                let actual = dump(&copy, rejoin_after_leave, &context);
                let expected = expected.clean();
                if actual != expected {
                    failures.push(format!(
                        "{context}: differs from the golden state\n  - expected: \
                         {expected:?}\n  + actual:   {actual:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn demo_replays_to_the_live_state() {
    let output = strata(&["snaplog".as_ref(), "demo".as_ref(), "--json".as_ref()]);
    assert!(output.status.success(), "demo: {}", describe(&output));
    let json: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("demo did not print JSON ({e}): {}", describe(&output)));
    assert_eq!(
        json["replay_matches_live_state"],
        Value::Bool(true),
        "demo: {}",
        describe(&output)
    );
}
