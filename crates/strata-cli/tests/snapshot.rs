//! `strata snapshot show` and `strata snapshot check` on a snapshot store built here, whole and
//! damaged.

use std::process::Command;

use prost::Message as _;
use strata_raft::ConfState;
use strata_snapshot::{Receiver, describe};

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

#[test]
fn show_describes_the_installed_set_and_check_finds_damage() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut store = Receiver::open(root.path()).expect("store");
    let local = store.local_dir().expect("local");
    std::fs::write(local.join("000001.sst"), vec![1u8; 3000]).expect("write");
    std::fs::write(local.join("000002.sst"), b"two").expect("write");
    let mut meta = describe(&local, 9, 120, 4, &["000001.sst", "000002.sst"]).expect("describe");
    meta.membership = ConfState {
        voters: vec![1, 2, 3],
        ..ConfState::default()
    }
    .encode_to_vec()
    .into();
    assert!(store.adopt(&meta).expect("adopt"));

    let out = strata()
        .args(["snapshot", "show", "--json"])
        .arg(root.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(shown["last_index"], 120);
    assert_eq!(shown["last_term"], 4);
    assert_eq!(shown["bytes"], 3003);
    assert_eq!(shown["membership"]["voters"], serde_json::json!([1, 2, 3]));
    assert_eq!(shown["files"][1]["name"], "000002.sst");

    let check = |dir: &std::path::Path| strata().args(["snapshot", "check"]).arg(dir).output();
    assert!(check(root.path()).expect("run").status.success());
    // One flipped byte.
    let file = root.path().join("snapshots/9/000001.sst");
    let mut bytes = std::fs::read(&file).expect("read");
    bytes[1234] ^= 0x40;
    std::fs::write(&file, bytes).expect("write");
    let out = check(root.path()).expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("000001.sst"));
}
