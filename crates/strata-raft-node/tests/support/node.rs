//! What the node's tests and benches share: a state machine that holds nothing, a one-voter
//! node on a durable log, and bounded waits for a leader and for an applied index.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_raft::{Config, Role};
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{
    Committed, CommittedKind, MemNetwork, NodeOptions, RaftNode, SnapshotWriter, StateMachine,
};

/// A node that is the only voter of its cluster, its log and snapshots under `root`, applying
/// to `state_machine`.
pub fn start_alone<M: StateMachine>(root: &Path, state_machine: M) -> RaftNode {
    let net = MemNetwork::new();
    let log = RaftLog::open(&root.join("log"), LogOptions::default()).expect("log");
    let (transport, inbox) = net.join(1);
    RaftNode::start(
        Config::new(1, vec![1]),
        NodeOptions::new(Duration::from_millis(5), root.join("snapshots")),
        Arc::new(log),
        state_machine,
        transport,
        inbox,
    )
    .expect("start")
}

/// One empty answer per command of `batch` (what a state machine that answers nothing
/// returns).
pub fn no_answers(batch: &[Committed]) -> Vec<Bytes> {
    batch
        .iter()
        .filter(|c| matches!(c.kind, CommittedKind::Command(_)))
        .map(|_| Bytes::new())
        .collect()
}

/// A state machine that holds nothing: it answers every command with nothing, and its
/// snapshots are empty.
pub struct Nothing;

impl StateMachine for Nothing {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        Ok(no_answers(&batch))
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

/// The position among `nodes` of one that is leader, once there is one (polled).
///
/// # Panics
///
/// If none is within `timeout`.
pub async fn wait_leader<'a>(
    nodes: impl IntoIterator<Item = &'a RaftNode> + Clone,
    timeout: Duration,
) -> usize {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(at) = nodes
            .clone()
            .into_iter()
            .position(|n| n.status().borrow().role == Role::Leader)
        {
            return at;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `node` has applied `index`.
///
/// # Panics
///
/// If it has not within `timeout`, or it stopped.
pub async fn wait_applied(node: &RaftNode, index: u64, timeout: Duration) {
    let mut applied = node.applied();
    tokio::time::timeout(timeout, applied.wait_for(|a| *a >= index))
        .await
        .expect("applied in time")
        .expect("running");
}
