//! `strata sst dump` and `strata sst check` on a table built here, whole and damaged.

use std::process::Command;

use strata_sstable::{TableBuilder, TableOptions};

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

fn build(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("t.sst");
    let mut builder = TableBuilder::create(&path, TableOptions::default()).expect("create");
    for i in 0..50u8 {
        builder.add(&[b'k', i], &[i; 3]).expect("add");
    }
    builder.set_property("raft.term", b"\x07").expect("prop");
    builder.finish().expect("finish");
    path
}

#[test]
fn dump_prints_properties_then_every_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = build(dir.path());
    let out = strata()
        .args(["sst", "dump", "--json"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = stdout.lines();
    let properties: serde_json::Value =
        serde_json::from_str(lines.next().expect("properties")).expect("json");
    assert_eq!(properties["entries"], 50);
    assert_eq!(properties["user"]["raft.term"], "07");
    let entries: Vec<serde_json::Value> = lines
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(entries.len(), 50);
    assert_eq!(entries[3]["key"], "6b03");
    assert_eq!(entries[3]["value"], "030303");
}

#[test]
fn check_passes_a_whole_table_and_fails_a_damaged_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = build(dir.path());
    let ok = strata()
        .args(["sst", "check"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ok, 50 entries"));

    let mut bytes = std::fs::read(&path).expect("read");
    bytes[20] ^= 0x01; // inside the first data block
    std::fs::write(&path, bytes).expect("write");
    let bad = strata()
        .args(["sst", "check"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("corrupt table") && stderr.contains("offset 0"),
        "{stderr}"
    );
}
