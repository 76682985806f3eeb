//! A process killed with `SIGKILL` loses nothing it was told was handed to the operating
//! system, whether the tail segment is written with `write` or through a shared map (a copy into
//! it is in the page cache as surely as a `write` would have put it there). Recovery then cuts
//! the room allocated ahead of the records (zeros) without counting it as torn.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use strata_wal::{Durability, Wal, WalOptions};

/// The environment variable that turns this test binary into the appending child.
const CHILD_ENV: &str = "STRATA_WAL_CRASH_CHILD";

fn options(mapped_tail: bool) -> WalOptions {
    WalOptions {
        mapped_tail,
        // Small segments: the child rolls over many, and is killed part-way into one.
        segment_bytes_max: 64 * 1024,
        durability: Durability::NoSync,
        ..WalOptions::default()
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("record {i} ")
        .repeat((i % 13 + 1) as usize)
        .into_bytes()
}

/// In the child: append records without ever syncing, printing each LSN once `append`
/// returned, until killed. In the parent (no `CHILD_ENV`): do nothing.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mapped = std::env::var("STRATA_WAL_CRASH_MAPPED").is_ok_and(|v| v == "1");
    let (wal, _) = Wal::open(Path::new(&dir), options(mapped)).expect("child open");
    let mut out = std::io::stdout().lock();
    for i in 1.. {
        let lsn = wal.append(&payload(i)).expect("append");
        writeln!(out, "{lsn}").expect("report");
        out.flush().expect("report");
    }
}

#[test]
fn records_handed_to_the_os_survive_a_kill_9_of_the_writer() {
    let exe = std::env::current_exe().expect("current_exe");
    for round in 0..4 {
        let mapped = round % 2 == 1;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("STRATA_WAL_CRASH_MAPPED", if mapped { "1" } else { "0" })
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        // Read the acknowledged LSNs until there are enough, then kill the child mid-stream.
        let target = 2_000 + round * 3_517;
        let mut acknowledged = 0u64;
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        while acknowledged < target {
            let Some(Ok(line)) = lines.next() else {
                panic!("the child stopped after {acknowledged} records");
            };
            if let Ok(lsn) = line.trim().parse::<u64>() {
                acknowledged = lsn;
            }
        }
        child.kill().expect("kill -9");
        child.wait().expect("reap");

        let (wal, recovery) = Wal::open(dir.path(), options(mapped)).expect("recovers");
        assert!(
            recovery.next_lsn > acknowledged,
            "round {round}: {acknowledged} acknowledged, {} recovered",
            recovery.next_lsn - 1
        );
        for record in wal.read_from(1).expect("read") {
            let (lsn, bytes) = record.expect("every recovered record verifies");
            assert_eq!(bytes, payload(lsn), "round {round}: record {lsn}");
        }
        // A kill leaves at most the one record being copied torn; the allocated zeros after it
        // are not counted.
        assert!(
            recovery.torn_tail_bytes < 1024,
            "round {round}: {} torn bytes",
            recovery.torn_tail_bytes
        );
        // The log goes on from there.
        let next = wal.append(b"after").expect("append after recovery");
        assert_eq!(next, recovery.next_lsn);
    }
}
