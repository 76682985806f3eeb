//! `cargo xtask bench raft`: three nodes in one process on the in-memory network, each on its
//! own `strata-raft-log` (fsync on), all on the same disk. For 1, 64 and 256 concurrent
//! proposers and 16- and 256-byte commands: commits per second and p50/p99 latency from
//! proposal to the leader applying it; the same with fsync off (`_nosync`, the CPU-bound
//! ceiling); and `raw_fdatasync_us` (one 128-byte write + fdatasync) measured in the same run.
//! Each figure is the median of `--runs` (default 3) runs of `--seconds` (default 2) each.
//!
//! The state machine: for the lines above, one that only answers. Then, for 256 proposers of
//! 16-byte commands with fsync on, two that hold the data: a `HashMap`
//! (`raft_commits_per_s_p256_16b_hashmap`) and the LSM one of the tests
//! (`tests/support/lsm_machine.rs`: one `WriteBatch` per applied batch,
//! `raft_commits_per_s_p256_16b_lsm`), run in turn; `RATIO raft_lsm_apply_vs_hashmap` is the
//! median of each pair's ratio (goal: at least 0.8). `--only NAME` runs just the lines whose
//! name contains NAME (`hashmap` or `lsm` for the pair).

// Shared with the tests, which use the rest of them.
#[allow(dead_code)]
#[path = "../tests/support/lsm_machine.rs"]
mod lsm_machine;
#[allow(dead_code)]
#[path = "../tests/support/node.rs"]
mod support;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::{Args, median, print_bench, print_ratio};
use bytes::Bytes;
use strata_raft::Config;
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{
    Committed, CommittedKind, MemNetwork, NodeOptions, RaftNode, SnapshotWriter, StateMachine,
};

/// The data in a `HashMap`: commands as the LSM machine reads them (`[op][key length: u16
/// LE][key][value]`, op 0 a put), the key and value kept as slices of the command.
#[derive(Default)]
struct HashMapMachine(std::collections::HashMap<Bytes, Bytes>);

impl StateMachine for HashMapMachine {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        let mut answers = Vec::with_capacity(batch.len());
        for entry in batch {
            let CommittedKind::Command(command) = entry.kind else {
                continue;
            };
            let len = command
                .get(1..3)
                .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])));
            if command.first() == Some(&0) && command.len() >= 3 + len {
                let key = command.slice(3..3 + len);
                let value = command.slice(3 + len..);
                self.0.insert(key, value);
            }
            answers.push(Bytes::new());
        }
        Ok(answers)
    }

    fn applied_index(&self) -> u64 {
        0
    }

    async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter> {
        Ok(Box::new(|_dir: &std::path::Path| Ok(Vec::new())))
    }

    async fn restore(
        &mut self,
        _dir: &std::path::Path,
        _files: &[String],
        _last_index: u64,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

fn raw_fdatasync_us(dir: &std::path::Path) -> f64 {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::File::create(&path).expect("probe file");
    let mut samples = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        file.write_all(&[7u8; 128]).expect("write");
        file.sync_data().expect("fdatasync");
        samples.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let _ = std::fs::remove_file(&path);
    median(samples)
}

struct Figures {
    commits_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Which state machine the nodes run.
#[derive(Clone, Copy, PartialEq)]
enum Machine {
    /// Answers, holds nothing.
    Nothing,
    HashMap,
    Lsm,
}

async fn run_once(
    dir: &std::path::Path,
    proposers: usize,
    bytes: usize,
    sync: bool,
    seconds: f64,
    machine: Machine,
) -> Figures {
    match machine {
        Machine::Nothing => {
            run_with(dir, proposers, bytes, sync, seconds, |_| support::Nothing).await
        }
        Machine::HashMap => {
            run_with(dir, proposers, bytes, sync, seconds, |_| {
                HashMapMachine::default()
            })
            .await
        }
        Machine::Lsm => {
            run_with(dir, proposers, bytes, sync, seconds, |dir| {
                lsm_machine::LsmMachine::open(dir, strata_lsm::Options::default()).expect("lsm")
            })
            .await
        }
    }
}

async fn run_with<M: StateMachine>(
    dir: &std::path::Path,
    proposers: usize,
    bytes: usize,
    sync: bool,
    seconds: f64,
    machine: impl Fn(&std::path::Path) -> M,
) -> Figures {
    let _ = std::fs::remove_dir_all(dir);
    let net = MemNetwork::new();
    let ids = [1u64, 2, 3];
    let mut nodes = Vec::new();
    for id in ids {
        let log = RaftLog::open(
            &dir.join(id.to_string()),
            LogOptions {
                sync,
                ..LogOptions::default()
            },
        )
        .expect("log");
        let config = Config::new(id, ids.to_vec());
        let (transport, inbox) = net.join(id);
        nodes.push(Arc::new(
            RaftNode::start(
                config,
                NodeOptions::new(
                    Duration::from_millis(10),
                    dir.join(format!("{id}.snapshots")),
                ),
                Arc::new(log),
                machine(&dir.join(format!("{id}.state"))),
                transport,
                inbox,
            )
            .expect("start"),
        ));
    }
    let leader =
        support::wait_leader(nodes.iter().map(AsRef::as_ref), Duration::from_secs(30)).await;
    let leader = Arc::clone(&nodes[leader]);
    let load = bench_support::closed_loop(proposers, seconds, move |p, i| {
        let leader = Arc::clone(&leader);
        async move {
            // A put of an 8-byte key, unique per proposer and step, with a value that makes
            // the command `bytes` long.
            let key = ((p as u64) << 40 | i).to_be_bytes();
            let value = [0x5a; 256];
            let command = lsm_machine::put(&key, &value[..bytes.saturating_sub(11)]);
            leader
                .propose(command, Duration::from_secs(10))
                .await
                .is_ok()
        }
    })
    .await;
    let dropped: Vec<u64> = ids.iter().map(|&id| net.dropped(id)).collect();
    if dropped.iter().any(|&d| d > 0) {
        eprintln!("messages dropped at full inboxes, per node: {dropped:?}");
    }
    for node in nodes {
        if let Ok(node) = Arc::try_unwrap(node) {
            node.shutdown().await;
        }
    }
    Figures {
        commits_per_s: load.per_s(),
        p50_us: load.percentile_us(0.5),
        p99_us: load.percentile_us(0.99),
    }
}

fn main() {
    let args = Args::from_env();
    let runs: usize = args.value_or("--runs", 3);
    let seconds: f64 = args.value_or("--seconds", 2.0);
    let only: String = args.value_or("--only", String::new());
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-raft");
    std::fs::create_dir_all(&root).expect("bench dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let raw = median((0..runs).map(|_| raw_fdatasync_us(&root)));
    print_bench("raw_fdatasync_us", raw, "us");
    for sync in [true, false] {
        let suffix = if sync { "" } else { "_nosync" };
        for proposers in [1usize, 64, 256] {
            for bytes in [16usize, 256] {
                let name = format!("p{proposers}_{bytes}b{suffix}");
                if !name.contains(&only) {
                    continue;
                }
                let runs: Vec<Figures> = (0..runs)
                    .map(|_| {
                        runtime.block_on(run_once(
                            &root.join("cluster"),
                            proposers,
                            bytes,
                            sync,
                            seconds,
                            Machine::Nothing,
                        ))
                    })
                    .collect();
                let commits = median(runs.iter().map(|f| f.commits_per_s));
                let p50 = median(runs.iter().map(|f| f.p50_us));
                let p99 = median(runs.iter().map(|f| f.p99_us));
                print_bench(&format!("raft_commits_per_s_{name}"), commits, "commits/s");
                print_bench(&format!("raft_latency_p50_us_{name}"), p50, "us");
                print_bench(&format!("raft_latency_p99_us_{name}"), p99, "us");
                if sync && proposers == 1 && bytes == 16 {
                    // Goal: p50 under 3x raw fdatasync (above 1: met).
                    print_ratio("raft_p50_p1_vs_3x_fdatasync", 3.0 * raw / p50.max(1.0));
                }
                if sync && proposers == 256 && bytes == 16 {
                    // Goal: at least 100,000 commits/s (above 1: met).
                    print_ratio("raft_commits_p256_16b_vs_100k", commits / 100_000.0);
                }
            }
        }
    }
    if "p256_16b_hashmap".contains(&only) || "p256_16b_lsm".contains(&only) {
        // The state machines that hold the data, in turn (each first every other run).
        let (mut hashmap, mut lsm, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let once = |machine| {
                runtime
                    .block_on(run_once(
                        &root.join("cluster"),
                        256,
                        16,
                        true,
                        seconds,
                        machine,
                    ))
                    .commits_per_s
            };
            let (h, l) = if run % 2 == 0 {
                let h = once(Machine::HashMap);
                (h, once(Machine::Lsm))
            } else {
                let l = once(Machine::Lsm);
                (once(Machine::HashMap), l)
            };
            eprintln!("run {run}: hashmap {h:.0} commits/s, lsm {l:.0} commits/s");
            hashmap.push(h);
            lsm.push(l);
            ratios.push(l / h.max(1.0));
        }
        print_bench(
            "raft_commits_per_s_p256_16b_hashmap",
            median(hashmap),
            "commits/s",
        );
        print_bench("raft_commits_per_s_p256_16b_lsm", median(lsm), "commits/s");
        // Goal: at least 0.8.
        print_ratio("raft_lsm_apply_vs_hashmap", median(ratios));
    }
    let _ = std::fs::remove_dir_all(&root);
}
