//! Kills `strata snapshot stress` with SIGKILL at many moments of receiving and installing
//! snapshot sets; after each, the store's installed set is whole (every file matches its
//! checksum) and never older than the last one announced as installed, and the next run
//! resumes and finishes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const ROUNDS: u64 = 6;

fn stress(store: &Path, work: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args(["snapshot", "stress", "--store"])
        .arg(store)
        .arg("--work")
        .arg(work)
        .args(["--rounds", &ROUNDS.to_string(), "--chunk-bytes", "65536"]);
    command
}

/// The installed set's id, after checking that it is whole (none if nothing is installed).
fn check_installed(store: &Path) -> u64 {
    if !store.join("CURRENT").exists() {
        return 0;
    }
    let check = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["snapshot", "check"])
        .arg(store)
        .output()
        .expect("run check");
    assert!(
        check.status.success(),
        "the installed set is damaged: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let show = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["snapshot", "show", "--json"])
        .arg(store)
        .output()
        .expect("run show");
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("json");
    shown["id"].as_u64().expect("an id")
}

#[test]
fn the_installed_set_is_whole_and_announced_ones_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, work) = (dir.path().join("store"), dir.path().join("work"));
    let mut announced = 0u64;
    // Lines read (chunks staged, sets installed) before each kill.
    for kill_after in [0usize, 1, 2, 5, 9, 17, 18, 19, 20, 33, 3, 60] {
        let mut child = stress(&store, &work)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut seen = 0;
        let note = |line: &str, announced: &mut u64| {
            if let Some(round) = line.strip_prefix("installed ") {
                *announced = round.parse().expect("a round");
            }
        };
        while seen < kill_after {
            let Some(Ok(line)) = lines.next() else { break };
            note(&line, &mut announced);
            seen += 1;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        for line in lines.map_while(Result::ok) {
            note(&line, &mut announced);
        }
        let installed = check_installed(&store);
        assert!(
            installed >= announced,
            "after a kill at line {kill_after}: set {installed} installed, {announced} was announced"
        );
        announced = installed;
    }
    // A run to the end resumes whatever was staged and installs every round.
    let finish = stress(&store, &work).output().expect("run");
    assert!(
        finish.status.success(),
        "{}",
        String::from_utf8_lossy(&finish.stderr)
    );
    assert_eq!(check_installed(&store), ROUNDS);
}
