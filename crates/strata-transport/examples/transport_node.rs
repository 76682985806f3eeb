//! One Raft node over TCP, as a process of its own: what `cargo xtask bench transport` runs
//! three of. Its state machine answers commands and holds nothing.
//!
//! ```text
//! transport_node --id 1 --dir DIR --listen 127.0.0.1:7001 \
//!     --peer 2=127.0.0.1:7002 --peer 3=127.0.0.1:7003 [--proposers N --seconds S]
//! ```
//!
//! With `--proposers`, the node that is leader once one is elected runs N proposers of 16-byte
//! commands for S seconds, prints `RESULT <commits/s> <p50 us> <p99 us>` and exits; the others
//! run until they are killed (or their standard input closes).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_raft::{Config, NodeId, Role};
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{
    Committed, CommittedKind, NodeOptions, RaftNode, SnapshotWriter, StateMachine, Transport, inbox,
};
use strata_transport::{TcpTransport, TransportConfig};

/// The cluster id the benchmark's nodes share.
const CLUSTER: u64 = 0xbe;

struct Nothing;

impl StateMachine for Nothing {
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
        Ok(Box::new(|_: &std::path::Path| Ok(Vec::new())))
    }

    async fn restore(&mut self, _: &std::path::Path, _: &[String], _: u64) -> std::io::Result<()> {
        Ok(())
    }
}

struct Args {
    id: NodeId,
    dir: PathBuf,
    listen: SocketAddr,
    peers: BTreeMap<NodeId, SocketAddr>,
    proposers: usize,
    seconds: f64,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut id, mut dir, mut listen) = (None, None, None);
    let (mut peers, mut proposers, mut seconds) = (BTreeMap::new(), 0, 2.0);
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
        proposers,
        seconds,
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
    let mut voters: Vec<NodeId> = args.peers.keys().copied().collect();
    voters.push(args.id);
    voters.sort_unstable();
    let (sender, inbox) = inbox();
    let transport = TcpTransport::bind(
        TransportConfig::new(args.id, CLUSTER, args.listen, args.peers.clone()),
        sender,
    )
    .await?;
    let log = RaftLog::open(&args.dir.join("log"), LogOptions::default())?;
    let node = Arc::new(RaftNode::start(
        Config::new(args.id, voters),
        NodeOptions::new(Duration::from_millis(10), args.dir.join("snapshots")),
        Arc::new(log),
        Nothing,
        Arc::clone(&transport) as Arc<dyn Transport>,
        inbox,
    )?);
    // Until a leader is known.
    let mut status = node.status();
    status.wait_for(|s| s.leader != 0).await?;
    if args.proposers > 0 && node.status().borrow().role == Role::Leader {
        let (commits_per_s, p50, p99) = propose(&node, args.proposers, args.seconds).await;
        println!("RESULT {commits_per_s:.0} {p50:.1} {p99:.1}");
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
