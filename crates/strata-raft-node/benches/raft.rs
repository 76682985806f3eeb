//! `cargo xtask bench raft`: three nodes in one process on the in-memory network, each on its
//! own `strata-raft-log` (fsync on), all on the same disk. For 1, 64 and 256 concurrent
//! proposers and 16- and 256-byte commands: commits per second and p50/p99 latency from
//! proposal to the leader applying it; the same with fsync off (`_nosync`, the CPU-bound
//! ceiling); and `raw_fdatasync_us` (one 128-byte write + fdatasync) measured in the same run.
//! Each figure is the median of `--runs` (default 3) runs of `--seconds` (default 2) each.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::{Args, median, percentile_us, print_bench, print_ratio};
use bytes::Bytes;
use strata_raft::{Config, Role};
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{
    Committed, CommittedKind, MemNetwork, NodeOptions, RaftNode, SnapshotWriter, StateMachine,
};

struct Counter;

impl StateMachine for Counter {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        Ok(batch
            .iter()
            .filter(|c| matches!(c.kind, CommittedKind::Command(_)))
            .map(|_| Bytes::new())
            .collect())
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

async fn run_once(
    dir: &std::path::Path,
    proposers: usize,
    bytes: usize,
    sync: bool,
    seconds: f64,
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
                Counter,
                transport,
                inbox,
            )
            .expect("start"),
        ));
    }
    // Wait for a leader.
    let leader = loop {
        if let Some(n) = nodes
            .iter()
            .find(|n| n.status().borrow().role == Role::Leader)
        {
            break Arc::clone(n);
        }
        let mut status = nodes[0].status();
        let _ = tokio::time::timeout(Duration::from_millis(50), status.changed()).await;
    };
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let command = Bytes::from(vec![0x5a; bytes]);
    let tasks: Vec<_> = (0..proposers)
        .map(|_| {
            let leader = Arc::clone(&leader);
            let command = command.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    if leader
                        .propose(command.clone(), Duration::from_secs(10))
                        .await
                        .is_ok()
                    {
                        latencies.push(start.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("proposer"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    for node in nodes {
        if let Ok(node) = Arc::try_unwrap(node) {
            node.shutdown().await;
        }
    }
    latencies.sort();
    Figures {
        commits_per_s: latencies.len() as f64 / elapsed,
        p50_us: percentile_us(&latencies, 0.5),
        p99_us: percentile_us(&latencies, 0.99),
    }
}

fn main() {
    let args = Args::from_env();
    let runs: usize = args.value_or("--runs", 3);
    let seconds: f64 = args.value_or("--seconds", 2.0);
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
                let runs: Vec<Figures> = (0..runs)
                    .map(|_| {
                        runtime.block_on(run_once(
                            &root.join("cluster"),
                            proposers,
                            bytes,
                            sync,
                            seconds,
                        ))
                    })
                    .collect();
                let commits = median(runs.iter().map(|f| f.commits_per_s));
                let p50 = median(runs.iter().map(|f| f.p50_us));
                let p99 = median(runs.iter().map(|f| f.p99_us));
                let name = format!("p{proposers}_{bytes}b{suffix}");
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
    let _ = std::fs::remove_dir_all(&root);
}
