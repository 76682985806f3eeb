//! Kills `strata lsm stress` with SIGKILL at several moments; after each, every key it
//! acknowledged is in the reopened store.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use strata_lsm::{Db, Options};

#[test]
fn every_acknowledged_key_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (round, kill_after) in [1usize, 300, 2000].into_iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["lsm", "stress", "--dir"])
            .arg(dir.path())
            .args([
                "--writers",
                "4",
                "--keys",
                "1000000",
                "--value-bytes",
                "200",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut acked = Vec::new();
        while acked.len() < kill_after {
            let line = lines.next().expect("stress stopped early").expect("read");
            acked.push(line.strip_prefix("acked ").expect("an ack").to_owned());
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        for line in lines.map_while(Result::ok) {
            match line.strip_prefix("acked ") {
                Some(key) => acked.push(key.to_owned()),
                None => break,
            }
        }
        // The same directory every round: recovery after recovery.
        let db = Db::open(dir.path(), Options::default()).expect("reopen");
        for key in &acked {
            assert!(
                db.get(key.as_bytes()).expect("get").is_some(),
                "round {round}: acked key {key} lost"
            );
        }
    }
}

#[test]
fn put_get_delete_and_scan_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let strata = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("lsm")
            .args(args)
            .arg("--dir")
            .arg(dir.path())
            .output()
            .expect("run")
    };
    for (k, v) in [("b", "2"), ("a", "1"), ("c", "3")] {
        assert!(strata(&["put", "--create", k, v]).status.success());
    }
    assert!(strata(&["delete", "b"]).status.success());
    let got = strata(&["get", "a"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "1\n");
    assert_eq!(strata(&["get", "b"]).status.code(), Some(1));
    let scan = strata(&["scan", "--json"]);
    assert_eq!(
        String::from_utf8_lossy(&scan.stdout),
        "{\"key\":\"a\",\"value_len\":1}\n{\"key\":\"c\",\"value_len\":1}\n"
    );
}

#[test]
fn the_demo_checks_its_store_and_reports_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "lsm",
            "demo",
            "--json",
            "--writers",
            "2",
            "--ops",
            "20000",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    for check in [
        "snapshot_unchanged",
        "checkpoint_ingested_matches",
        "reopened_matches",
    ] {
        assert_eq!(report[check], serde_json::Value::Bool(true), "{check}");
    }
    assert_eq!(report["operations"], 40_000);
    assert!(report["live_keys"].as_u64().expect("a count") > 0);
    // The stores stay in the directory it was given, and it refuses to write over them.
    assert!(dir.path().join("store").join("CURRENT").exists());
    let again = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["lsm", "demo", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(again.status.code(), Some(1));
}
