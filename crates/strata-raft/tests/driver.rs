//! The async driver: three nodes in one process on durable logs and the in-memory network.
//! Concurrent proposals commit and apply in the same order everywhere; reads, leader
//! transfer, a leader crash and a restart from the log.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use strata_raft::{Config, DriverError, MemNetwork, NodeId, RaftNode, Role, StateMachine};
use strata_raft_log::{LogOptions, RaftLog};

const WAIT: Duration = Duration::from_secs(20);

/// What a node applied: index and command, in order.
type Applied = Arc<Mutex<Vec<(u64, Bytes)>>>;

/// Records what it applies.
struct Recorder(Applied);

#[async_trait::async_trait]
impl StateMachine for Recorder {
    async fn apply(&mut self, index: u64, command: Bytes) -> Bytes {
        self.0.lock().push((index, command.clone()));
        Bytes::from(format!("applied {index}"))
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    net: Arc<MemNetwork>,
    nodes: Vec<Option<RaftNode>>,
    applied: Vec<Applied>,
}

const IDS: [NodeId; 3] = [1, 2, 3];
/// A node outside the initial configuration, for membership changes.
const SPARE: NodeId = 4;

impl Cluster {
    fn new() -> Self {
        let mut c = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            net: MemNetwork::new(),
            nodes: Vec::new(),
            applied: Vec::new(),
        };
        for id in IDS {
            c.applied.push(Arc::new(Mutex::new(Vec::new())));
            c.nodes.push(None);
            c.start(id);
        }
        c.applied.push(Arc::new(Mutex::new(Vec::new())));
        c.nodes.push(None);
        c
    }

    fn start(&mut self, id: NodeId) {
        let log = RaftLog::open(&self.dir.path().join(id.to_string()), LogOptions::default())
            .expect("log");
        let mut config = Config::new(id, IDS.to_vec());
        config.peers = vec![1, 2, 3, SPARE];
        config.election_tick = 10;
        let applied = Arc::clone(&self.applied[id as usize - 1]);
        applied.lock().clear();
        let node = RaftNode::start(
            config,
            Duration::from_millis(5),
            Arc::new(log),
            Recorder(applied),
            Arc::clone(&self.net) as Arc<dyn strata_raft::Transport>,
            self.net.join(id),
        )
        .expect("start");
        self.nodes[id as usize - 1] = Some(node);
    }

    fn node(&self, id: NodeId) -> &RaftNode {
        self.nodes[id as usize - 1].as_ref().expect("running")
    }

    /// Waits until a running node reports itself leader; returns it.
    async fn leader(&self) -> NodeId {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            for (i, node) in self.nodes.iter().enumerate() {
                if let Some(node) = node
                    && node.status().borrow().role == Role::Leader
                {
                    return i as NodeId + 1;
                }
            }
            // Wake on any status change of any running node.
            let mut watches: Vec<_> = self.nodes.iter().flatten().map(RaftNode::status).collect();
            let changed = futures_any(&mut watches);
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("no leader within {WAIT:?}");
            }
        }
    }

    async fn wait_applied(&self, id: NodeId, index: u64) {
        let mut applied = self.node(id).applied();
        tokio::time::timeout(WAIT, applied.wait_for(|a| *a >= index))
            .await
            .expect("applied in time")
            .expect("node running");
    }
}

/// Resolves when any of the watches changes.
async fn futures_any(watches: &mut [tokio::sync::watch::Receiver<strata_raft::Status>]) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let mut tasks = Vec::new();
    for w in watches.iter() {
        let mut w = w.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            if w.changed().await.is_ok() {
                let _ = tx.send(()).await;
            }
        }));
    }
    drop(tx);
    let _ = rx.recv().await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_apply_concurrent_proposals_in_the_same_order() {
    let c = Arc::new(Cluster::new());
    let leader = c.leader().await;
    let mut tasks = Vec::new();
    for t in 0..32u32 {
        let c = Arc::clone(&c);
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in 0..10u32 {
                let answer = c
                    .node(leader)
                    .propose(Bytes::from(format!("{t}-{i}")), WAIT)
                    .await
                    .expect("committed");
                let index: u64 = std::str::from_utf8(&answer[8..])
                    .expect("utf-8")
                    .parse()
                    .expect("an index");
                assert!(index > last, "a task's commands commit in order");
                last = index;
            }
            last
        }));
    }
    let mut last = 0;
    for t in tasks {
        last = last.max(t.await.expect("task"));
    }
    for id in IDS {
        c.wait_applied(id, last).await;
    }
    let reference = c.applied[0].lock().clone();
    assert_eq!(reference.len(), 320);
    for id in IDS {
        assert_eq!(*c.applied[id as usize - 1].lock(), reference, "node {id}");
    }
    // A read point covers everything acknowledged.
    let index = c.node(leader).read_index(WAIT).await.expect("read");
    assert!(index >= last);
    let follower = IDS.into_iter().find(|&id| id != leader).expect("follower");
    assert!(matches!(
        c.node(follower).read_index(WAIT).await,
        Err(DriverError::NotLeader { .. })
    ));
    assert!(matches!(
        c.node(follower).propose(Bytes::from_static(b"x"), WAIT).await,
        Err(DriverError::NotLeader { leader: l }) if l == leader
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_by_transfer_and_by_crash_and_a_restart_catches_up() {
    let mut c = Cluster::new();
    let first = c.leader().await;
    c.node(first)
        .propose(Bytes::from_static(b"one"), WAIT)
        .await
        .expect("propose");
    let target = IDS.into_iter().find(|&id| id != first).expect("target");
    c.node(target).status().borrow_and_update();
    c.node(first)
        .transfer_leader(target)
        .await
        .expect("transfer");
    let mut status = c.node(target).status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.role == Role::Leader))
        .await
        .expect("transferred in time")
        .expect("running");
    let index: u64 = {
        let answer = c
            .node(target)
            .propose(Bytes::from_static(b"two"), WAIT)
            .await
            .expect("propose");
        std::str::from_utf8(&answer[8..])
            .expect("utf-8")
            .parse()
            .expect("index")
    };
    // Crash the leader; the other two elect one and go on.
    let crashed = target;
    c.nodes[crashed as usize - 1]
        .take()
        .expect("running")
        .shutdown()
        .await;
    c.net.set_cut_off(crashed, true);
    let next = c.leader().await;
    assert_ne!(next, crashed);
    c.node(next)
        .propose(Bytes::from_static(b"three"), WAIT)
        .await
        .expect("propose after the crash");
    // The crashed node restarts from its log and catches up.
    c.net.set_cut_off(crashed, false);
    c.start(crashed);
    let last = c.node(next).status().borrow().commit;
    c.wait_applied(crashed, last).await;
    let commands: Vec<Bytes> = c.applied[crashed as usize - 1]
        .lock()
        .iter()
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(
        commands,
        vec![
            Bytes::from_static(b"one"),
            Bytes::from_static(b"two"),
            Bytes::from_static(b"three")
        ]
    );
    assert!(index > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_catches_up_and_is_promoted() {
    use strata_raft::{ChangeKind, ConfChange};
    let mut c = Cluster::new();
    let leader = c.leader().await;
    c.node(leader)
        .propose(Bytes::from_static(b"before"), WAIT)
        .await
        .expect("propose");
    c.start(SPARE);
    c.node(leader)
        .add_learner(SPARE, WAIT)
        .await
        .expect("add learner");
    let last = c.node(leader).status().borrow().commit;
    c.wait_applied(SPARE, last).await;
    assert_eq!(
        c.applied[SPARE as usize - 1].lock()[0].1,
        Bytes::from_static(b"before")
    );
    // Promotion waits until the learner change (and leaving its joint state) is applied.
    let promote = ConfChange::single(ChangeKind::AddVoter, SPARE);
    let mut promoted = c
        .node(leader)
        .change_membership(promote.clone(), WAIT)
        .await;
    let mut commit = c.node(leader).status();
    while matches!(promoted, Err(DriverError::Dropped(_))) {
        tokio::time::timeout(WAIT, commit.changed())
            .await
            .expect("progress")
            .expect("running");
        promoted = c
            .node(leader)
            .change_membership(promote.clone(), WAIT)
            .await;
    }
    promoted.expect("promoted");
    c.node(leader)
        .propose(Bytes::from_static(b"after"), WAIT)
        .await
        .expect("propose with four voters");
}
