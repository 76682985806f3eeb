//! One Raft node over TCP, as a process of its own: what `cargo xtask bench transport` runs
//! three of. Its state machine answers commands and holds nothing.
//!
//! ```text
//! transport_node --id 1 --dir DIR --listen 127.0.0.1:7001 \
//!     --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003 [--voters 1,2,3] \
//!     [--proposers N --seconds S] [--tables DIR --add-learner ID]
//! ```
//!
//! The voters are this node and its peers unless `--voters` says otherwise (a learner-to-be
//! names the leader alone). With `--proposers`, the node that is leader once one is elected
//! runs N proposers of 16-byte commands for S seconds, prints `RESULT <commits/s> <p50 us>
//! <p99 us>` and exits. With `--tables`, its state is the table files in DIR (a snapshot
//! hard-links them); with `--add-learner`, the leader takes a snapshot, adds that node as a
//! learner, and prints `RESULT <MB/s>` once the learner has installed the snapshot. Other nodes
//! run until they are killed (or their standard input closes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_raft::{ChangeKind, ConfChange, Config, NodeId, Role};
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{
    Committed, CommittedKind, NodeOptions, RaftNode, SnapshotWriter, StateMachine, Transport, inbox,
};
use strata_transport::{TcpTransport, TransportConfig};

/// The cluster id the benchmark's nodes share.
const CLUSTER: u64 = 0xbe;

/// A state machine that answers commands and holds nothing but, with `--tables`, a set of
/// table files: a snapshot hard-links them, a restore checks they are all there.
struct Tables(Option<PathBuf>);

impl StateMachine for Tables {
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
        let from = self.0.clone();
        Ok(Box::new(move |to: &Path| {
            let mut names = Vec::new();
            let Some(from) = from else {
                return Ok(names);
            };
            let mut entries: Vec<_> = std::fs::read_dir(&from)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()?;
            entries.sort();
            for name in entries {
                let name = name.to_string_lossy().into_owned();
                std::fs::hard_link(from.join(&name), to.join(&name))?;
                names.push(name);
            }
            Ok(names)
        }))
    }

    async fn restore(&mut self, dir: &Path, files: &[String], _: u64) -> std::io::Result<()> {
        for name in files {
            std::fs::metadata(dir.join(name))?;
        }
        self.0 = Some(dir.to_path_buf());
        Ok(())
    }
}

struct Args {
    id: NodeId,
    dir: PathBuf,
    listen: SocketAddr,
    peers: BTreeMap<NodeId, SocketAddr>,
    voters: Option<Vec<NodeId>>,
    proposers: usize,
    seconds: f64,
    tables: Option<PathBuf>,
    add_learner: Option<NodeId>,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut id, mut dir, mut listen) = (None, None, None);
    let (mut peers, mut proposers, mut seconds) = (BTreeMap::new(), 0, 2.0);
    let (mut voters, mut tables, mut add_learner) = (None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--id" => id = Some(value.parse().map_err(|e| bad(&e))?),
            "--dir" => dir = Some(PathBuf::from(&value)),
            "--listen" => listen = Some(value.parse().map_err(|e| bad(&e))?),
            "--peer" => {
                let (peer, addr) = value.split_once('=').ok_or(bad(&"want ID=ADDR"))?;
                peers.insert(
                    peer.parse().map_err(|e| bad(&e))?,
                    addr.parse().map_err(|e| bad(&e))?,
                );
            }
            "--voters" => {
                voters = Some(
                    value
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<Vec<NodeId>, _>>()
                        .map_err(|e| bad(&e))?,
                );
            }
            "--tables" => tables = Some(PathBuf::from(&value)),
            "--add-learner" => add_learner = Some(value.parse().map_err(|e| bad(&e))?),
            "--proposers" => proposers = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => seconds = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Args {
        id: id.ok_or("--id is required")?,
        dir: dir.ok_or("--dir is required")?,
        listen: listen.ok_or("--listen is required")?,
        peers,
        voters,
        proposers,
        seconds,
        tables,
        add_learner,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let voters = args.voters.clone().unwrap_or_else(|| {
        let mut all: Vec<NodeId> = args.peers.keys().copied().collect();
        all.push(args.id);
        all.sort_unstable();
        all
    });
    let mut config = Config::new(args.id, voters);
    config.peers = args.peers.keys().copied().collect();
    let (sender, inbox) = inbox();
    let transport = TcpTransport::bind(
        TransportConfig::new(args.id, CLUSTER, args.listen, args.peers.clone()),
        sender,
    )
    .await?;
    let log = RaftLog::open(&args.dir.join("log"), LogOptions::default())?;
    let mut options = NodeOptions::new(Duration::from_millis(10), args.dir.join("snapshots"));
    if args.tables.is_some() {
        // The table files are the snapshot: taken on request only, and the log compacted
        // right up to it, so that a new learner needs it.
        options.snapshot_entries = 0;
        options.snapshot_bytes = 0;
        options.compaction_overhead_entries = 0;
    }
    let node = Arc::new(RaftNode::start(
        config,
        options,
        Arc::new(log),
        Tables(args.tables.clone()),
        Arc::clone(&transport) as Arc<dyn Transport>,
        inbox,
    )?);
    // Until a leader is known.
    let mut status = node.status();
    status.wait_for(|s| s.leader != 0).await?;
    let leading = node.status().borrow().role == Role::Leader;
    if leading && args.proposers > 0 {
        let (commits_per_s, p50, p99) = propose(&node, args.proposers, args.seconds).await;
        println!("RESULT {commits_per_s:.0} {p50:.1} {p99:.1}");
        return Ok(());
    }
    if let (true, Some(learner)) = (leading, args.add_learner) {
        let mb_per_s = send_snapshot(&node, learner).await?;
        println!("RESULT {mb_per_s:.1}");
        return Ok(());
    }
    // Run until the parent closes standard input (or kills the process).
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    })
    .await?;
    Ok(())
}

/// Takes a snapshot, adds `learner`, and waits until it has installed the snapshot (its match
/// index reaches the snapshot's); MB/s of the snapshot's files, from the add.
async fn send_snapshot(
    node: &RaftNode,
    learner: NodeId,
) -> Result<f64, Box<dyn std::error::Error>> {
    let wait = Duration::from_secs(120);
    node.propose(Bytes::from_static(b"x"), wait).await?;
    let meta = node
        .request_snapshot(wait)
        .await?
        .ok_or("no snapshot taken")?;
    let started = std::time::Instant::now();
    node.change_membership(ConfChange::single(ChangeKind::AddLearner, learner), wait)
        .await?;
    let mut status = node.status();
    tokio::time::timeout(
        wait,
        status.wait_for(|s| {
            s.matched
                .get(&learner)
                .is_some_and(|&m| m >= meta.last_index)
        }),
    )
    .await??;
    let bytes: u64 = meta.files.iter().map(|f| f.size).sum();
    Ok(bytes as f64 / 1e6 / started.elapsed().as_secs_f64())
}

/// Runs `proposers` proposers for `seconds`; commits per second, p50 and p99 latency in µs.
async fn propose(node: &Arc<RaftNode>, proposers: usize, seconds: f64) -> (f64, f64, f64) {
    let node = Arc::clone(node);
    let load = bench_support::closed_loop(proposers, seconds, move |_, _| {
        let node = Arc::clone(&node);
        async move {
            node.propose(
                Bytes::from_static(b"0123456789abcdef"),
                Duration::from_secs(10),
            )
            .await
            .is_ok()
        }
    })
    .await;
    (
        load.per_s(),
        load.percentile_us(0.5),
        load.percentile_us(0.99),
    )
}
