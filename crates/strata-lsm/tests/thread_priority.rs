//! `Options::compaction_nice` lowers the compaction thread's priority, and only its: the flush
//! thread keeps the process's. Linux only (a nice value is a thread's own there). A test binary
//! of its own, so that no other test's store has threads of the same names.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use strata_lsm::{Db, Options};

/// The nice value of every thread of this process named `name`, from `/proc/self/task`.
fn nice_of_threads_named(name: &str) -> Vec<i64> {
    let mut nices = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("task").path();
        // The thread may have exited since the listing.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue;
        };
        if comm.trim_end() == name {
            nices.push(nice_from_stat(&stat));
        }
    }
    nices
}

/// Field 19 of a `stat` line (`proc(5)`), counted after the command name, which may hold
/// spaces and ends at the last `)`.
fn nice_from_stat(stat: &str) -> i64 {
    let (_, fields) = stat.rsplit_once(')').expect("a stat line");
    fields
        .split_whitespace()
        .nth(16)
        .expect("a nice field")
        .parse()
        .expect("a number")
}

#[test]
fn the_compaction_thread_runs_at_the_lower_priority_asked_for_and_the_flush_thread_does_not() {
    let own = nice_from_stat(&std::fs::read_to_string("/proc/self/stat").expect("stat"));
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Db::open(
        dir.path(),
        Options {
            compaction_nice: 7,
            ..Options::default()
        },
    )
    .expect("open");
    // Each thread names itself, and the compaction thread lowers its own priority, as it
    // starts.
    let expected = (own + 7).min(19);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let compaction = nice_of_threads_named("strata-compact");
        let flush = nice_of_threads_named("strata-flush");
        if compaction == [expected] && flush == [own] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "compaction thread nice values {compaction:?}, expected [{expected}]; flush thread \
             {flush:?}, expected [{own}]"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(db);
    // Closed: both threads have been joined. The kernel lists a joined thread for a moment
    // longer (the join returns once the thread has cleared its id, before it is reaped).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(nice_of_threads_named("strata-compact").is_empty()
        && nice_of_threads_named("strata-flush").is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "a background thread outlived its store"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
