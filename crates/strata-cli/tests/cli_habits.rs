//! The `strata` command's habits, as an operator relies on them: a command that reads creates
//! nothing and names the path it could not use; errors are `strata: error: ...` on stderr with
//! the documented exit codes; a closed pipe ends a command quietly; `--json` parses; progress is
//! drawn on a terminal, printed as plain lines elsewhere, and silenced by `--quiet`; completions
//! and `--version` say what they should.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    strata().args(args).output().expect("run strata")
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every path under `root` (files and directories).
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path);
        }
    }
    out
}

/// Data to read: an LSM store and its tables (from `lsm demo`), a WAL of a few thousand
/// records, a Serf snapshot log and a Raft snapshot store.
struct Fixture {
    _root: tempfile::TempDir,
    store: PathBuf,
    table: PathBuf,
    wal: PathBuf,
    snaplog: PathBuf,
    snapshots: PathBuf,
}

/// Runs `strata ARGS`, where `PATH` in `args` is `path`, and checks that it succeeded.
fn run_ok(args: &[&str], path: &Path) {
    let out = run(with_path(args, path));
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().expect("tempdir");
    let demo = root.path().join("demo");
    run_ok(
        &[
            "lsm",
            "demo",
            "--writers",
            "1",
            "--ops",
            "20000",
            "--dir",
            "PATH",
        ],
        &demo,
    );
    let store = demo.join("store");
    let table = std::fs::read_dir(&store)
        .expect("list store")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .expect("the demo flushed a table");
    let wal = root.path().join("wal");
    run_ok(
        &[
            "wal",
            "stress",
            "--no-sync",
            "--writers",
            "1",
            "--records",
            "3000",
            "--dir",
            "PATH",
        ],
        &wal,
    );
    let serf = root.path().join("serf");
    run_ok(&["snaplog", "demo", "--dir", "PATH"], &serf);
    let snapshots = root.path().join("snapshots");
    run_ok(
        &[
            "snapshot",
            "stress",
            "--rounds",
            "1",
            "--work",
            "PATH/work",
            "--store",
            "PATH/snapshots",
        ],
        root.path(),
    );
    Fixture {
        store,
        table,
        wal,
        snaplog: serf.join("serf.snapshot"),
        snapshots,
        _root: root,
    }
}

/// Every command that reads, with `PATH` where its data goes.
fn reads() -> Vec<Vec<&'static str>> {
    vec![
        vec!["lsm", "get", "--dir", "PATH", "key"],
        vec!["lsm", "scan", "--dir", "PATH"],
        vec!["lsm", "stats", "--dir", "PATH"],
        vec!["lsm", "delete", "--dir", "PATH", "key"],
        vec!["lsm", "put", "--dir", "PATH", "key", "value"],
        vec!["sst", "dump", "PATH"],
        vec!["sst", "check", "PATH"],
        vec!["wal", "dump", "PATH"],
        vec!["snapshot", "show", "PATH"],
        vec!["snapshot", "check", "PATH"],
        vec!["snaplog", "dump", "PATH"],
    ]
}

fn with_path(args: &[&str], path: &Path) -> Vec<std::ffi::OsString> {
    args.iter()
        .map(|a| match a.strip_prefix("PATH") {
            Some("") => path.as_os_str().to_owned(),
            Some(rest) => path.join(rest.trim_start_matches('/')).into_os_string(),
            None => a.into(),
        })
        .collect()
}

#[test]
fn a_read_on_a_missing_path_creates_nothing_and_names_the_path() {
    let root = tempfile::tempdir().expect("tempdir");
    let missing = root.path().join("typo").join("data");
    let before = tree(root.path());
    for args in reads() {
        let out = run(with_path(&args, &missing));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        assert!(
            stderr.starts_with("strata: error: "),
            "{args:?}: {}",
            describe(&out)
        );
        assert!(
            stderr.contains(&missing.display().to_string()),
            "{args:?} does not name the path: {}",
            describe(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}: {}", describe(&out));
        assert_eq!(tree(root.path()), before, "{args:?} created something");
    }
}

#[test]
fn an_empty_directory_is_not_a_store_and_stays_empty() {
    let root = tempfile::tempdir().expect("tempdir");
    for args in [
        vec!["lsm", "get", "--dir", "PATH", "key"],
        vec!["lsm", "scan", "--dir", "PATH"],
        vec!["lsm", "stats", "--dir", "PATH"],
        vec!["lsm", "put", "--dir", "PATH", "key", "value"],
    ] {
        let out = run(with_path(&args, root.path()));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no Strata store") && stderr.contains("no CURRENT file"),
            "{args:?}: {}",
            describe(&out)
        );
        assert!(tree(root.path()).is_empty(), "{args:?} created something");
    }
    // `--create` is how a store is made.
    let out = run(with_path(
        &["lsm", "put", "--create", "--dir", "PATH", "k", "v"],
        root.path(),
    ));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(root.path().join("CURRENT").exists());
}

#[test]
fn reads_change_nothing_in_an_existing_store() {
    let f = fixture();
    let before: Vec<(PathBuf, Vec<u8>)> = tree(&f.store)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect();
    for args in [
        vec!["lsm", "get", "--dir", "PATH", "u0:00000001"],
        vec!["lsm", "scan", "--dir", "PATH"],
        vec!["lsm", "stats", "--dir", "PATH"],
    ] {
        // A key may be absent (exit 1); what matters is the store.
        let out = run(with_path(&args, &f.store));
        assert!(out.status.code().is_some(), "{args:?}: {}", describe(&out));
    }
    let after: Vec<(PathBuf, Vec<u8>)> = tree(&f.store)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect();
    assert!(before == after, "a read changed the store's files");
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let f = fixture();
    for args in [
        with_path(&["lsm", "scan", "--dir", "PATH"], &f.store),
        with_path(&["lsm", "scan", "--json", "--dir", "PATH"], &f.store),
        with_path(&["sst", "dump", "PATH"], &f.table),
        with_path(&["wal", "dump", "PATH"], &f.wal),
    ] {
        let mut child = strata()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // Read one line, as `head -1` does, and close the pipe.
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("read a line");
        assert!(!first.is_empty(), "{args:?} printed nothing");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{args:?} did not end quietly: {}",
            describe(&out)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?} complained: {}",
            describe(&out)
        );
    }
}

fn parses_as_json_lines(args: &[std::ffi::OsString]) -> Vec<serde_json::Value> {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    // One document (possibly indented) or one per line.
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
        return vec![value];
    }
    text.lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: {line:?} is not JSON: {e}"))
        })
        .collect()
}

#[test]
fn json_output_parses_for_every_command_that_offers_it() {
    let f = fixture();
    let key = {
        let out = run(with_path(
            &["lsm", "scan", "--json", "--dir", "PATH"],
            &f.store,
        ));
        let first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .expect("a key")
            .to_owned();
        let value: serde_json::Value = serde_json::from_str(&first).expect("json");
        value["key"].as_str().expect("a key").to_owned()
    };
    let got = parses_as_json_lines(&with_path(
        &["lsm", "get", "--json", "--dir", "PATH", &key],
        &f.store,
    ));
    assert_eq!(got[0]["key"], key.as_str());
    let stats = parses_as_json_lines(&with_path(
        &["lsm", "stats", "--json", "--dir", "PATH"],
        &f.store,
    ));
    assert!(stats[0]["tables"].as_array().is_some_and(|t| !t.is_empty()));
    let dump = parses_as_json_lines(&with_path(&["sst", "dump", "--json", "PATH"], &f.table));
    assert!(dump.len() > 1 && dump[0]["entries"].as_u64().is_some());
    let check = parses_as_json_lines(&with_path(&["sst", "check", "--json", "PATH"], &f.table));
    assert_eq!(check[0]["ok"], true);
    let records = parses_as_json_lines(&with_path(&["wal", "dump", "--json", "PATH"], &f.wal));
    assert_eq!(records.len(), 3000);
    let state = parses_as_json_lines(&with_path(
        &["snaplog", "dump", "--json", "PATH"],
        &f.snaplog,
    ));
    assert!(state[0]["alive"].is_object());
    let compacted = parses_as_json_lines(&with_path(
        &["snaplog", "compact", "--json", "PATH"],
        &f.snaplog,
    ));
    assert!(compacted[0]["bytes_after"].as_u64().is_some());
    let shown = parses_as_json_lines(&with_path(
        &["snapshot", "show", "--json", "PATH"],
        &f.snapshots,
    ));
    assert_eq!(shown[0]["id"], 1);
    let intact = parses_as_json_lines(&with_path(
        &["snapshot", "check", "--json", "PATH"],
        &f.snapshots,
    ));
    assert_eq!(intact[0]["intact"], true);
    let report = parses_as_json_lines(&["lsm", "demo", "--ops", "2000", "--json"].map(Into::into));
    assert_eq!(report[0]["reopened_matches"], true);
    let report =
        parses_as_json_lines(&["snaplog", "demo", "--events", "200", "--json"].map(Into::into));
    assert_eq!(report[0]["replay_matches_live_state"], true);
}

#[test]
fn human_output_is_the_default() {
    let f = fixture();
    let human = |args: &[&str], path: &Path, looks_right: &dyn Fn(&str) -> bool| {
        let out = run(with_path(args, path));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && looks_right(&text)
                && serde_json::from_str::<serde_json::Value>(&text).is_err(),
            "{args:?}: {}",
            describe(&out)
        );
    };
    human(&["lsm", "stats", "--dir", "PATH"], &f.store, &|t| {
        t.contains("LEVEL") && t.contains("TABLES")
    });
    human(&["snaplog", "dump", "PATH"], &f.snaplog, &|t| {
        t.contains("members alive") && t.contains("MEMBER")
    });
    human(&["snapshot", "show", "PATH"], &f.snapshots, &|t| {
        t.starts_with("snapshot 1 in ") && t.contains("CRC")
    });
}

/// Progress escapes: a carriage return or an ANSI control sequence.
fn has_redraws(text: &[u8]) -> bool {
    text.contains(&b'\r') || text.windows(2).any(|w| w == b"\x1b[")
}

#[test]
fn progress_is_drawn_on_a_terminal_and_printed_plainly_elsewhere() {
    let demo = ["lsm", "demo", "--writers", "1", "--ops", "30000"];
    // A pseudo-terminal, from util-linux's `script` (part of every Debian system).
    let command = format!("{} {}", env!("CARGO_BIN_EXE_strata"), demo.join(" "));
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run `script` (util-linux) for a pseudo-terminal");
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        has_redraws(&out.stdout) && text.contains("lsm demo writing [") && text.contains("ETA"),
        "no progress bar on a terminal: {}",
        describe(&out)
    );
    // In a pipe: no redraws; plain lines, as often as asked.
    let out = strata()
        .args(demo)
        .env("STRATA_PROGRESS_SECS", "0")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!has_redraws(&out.stderr), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("strata: lsm demo, writing: ") && l.contains("writes/s")),
        "no plain progress lines: {}",
        describe(&out)
    );
    assert!(!has_redraws(&out.stdout), "{}", describe(&out));
    // --quiet: nothing but the result.
    let out = strata()
        .arg("--quiet")
        .args(demo)
        .env("STRATA_PROGRESS_SECS", "0")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(out.stderr.is_empty(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("lsm demo: "));
}

#[test]
fn usage_errors_exit_2_and_failures_exit_1() {
    let out = run(["lsm", "get"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let out = run(["no-such-command"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let root = tempfile::tempdir().expect("tempdir");
    let store = root.path().join("s");
    let out = run(with_path(
        &["lsm", "put", "--create", "--dir", "PATH", "k", "v"],
        &store,
    ));
    assert!(out.status.success(), "{}", describe(&out));
    let out = run(with_path(
        &["lsm", "get", "--dir", "PATH", "absent"],
        &store,
    ));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("strata: error: key \"absent\" not found"),
        "{}",
        describe(&out)
    );
}

#[test]
fn completions_and_version_say_what_they_should() {
    for (shell, marker) in [
        ("bash", "_strata()"),
        ("zsh", "#compdef strata"),
        ("fish", "complete -c strata"),
    ] {
        let out = run(["completions", shell]);
        assert!(out.status.success(), "{}", describe(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains(marker) && script.contains("snaplog") && script.contains("--json"),
            "{shell}: {}",
            describe(&out)
        );
    }
    let out = run(["--version"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for format in [
        "sorted tables",
        "write-ahead logs",
        "Raft transport",
        "snapshot logs",
    ] {
        assert!(text.contains(format), "--version lacks {format}: {text}");
    }
}
