//! The node's seams a server builds on: reads at a follower (forwarded to the leader),
//! membership changes that carry their context to every state machine, and the entry size
//! limit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use strata_raft::{ChangeKind, ConfChange, Config, MessageType, NodeId, Role};
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{
    Committed, CommittedKind, DriverError, MemNetwork, NodeOptions, RaftNode, SnapshotWriter,
    StateMachine, Transport,
};

const WAIT: Duration = Duration::from_secs(20);
const IDS: [NodeId; 3] = [1, 2, 3];

/// What a node's state machine saw: its commands and the membership changes.
#[derive(Debug, Default)]
struct Seen {
    commands: Vec<(u64, Bytes)>,
    changes: Vec<ConfChange>,
}

struct Watcher(Arc<Mutex<Seen>>);

impl StateMachine for Watcher {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        let mut seen = self.0.lock();
        let mut answers = Vec::new();
        for entry in batch {
            match entry.kind {
                CommittedKind::Command(command) => {
                    seen.commands.push((entry.index, command));
                    answers.push(Bytes::from(entry.index.to_string()));
                }
                CommittedKind::Membership(change) => seen.changes.push(change),
                CommittedKind::Noop => {}
            }
        }
        Ok(answers)
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

struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<RaftNode>,
    seen: Vec<Arc<Mutex<Seen>>>,
}

impl Cluster {
    /// Nodes `ids` (members `IDS`; others are spares that may join).
    fn start(ids: &[NodeId], entry_bytes_max: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = MemNetwork::new();
        let mut nodes = Vec::new();
        let mut seen = Vec::new();
        for &id in ids {
            let log = RaftLog::open(&dir.path().join(id.to_string()), LogOptions::default())
                .expect("log");
            let mut config = Config::new(id, IDS.to_vec());
            config.peers = ids.to_vec();
            config.entry_bytes_max = entry_bytes_max;
            if !IDS.contains(&id) {
                // A spare: it learns the configuration from the log.
                config.voters = IDS.to_vec();
            }
            let watched = Arc::new(Mutex::new(Seen::default()));
            let (transport, inbox) = net.join(id);
            nodes.push(
                RaftNode::start(
                    config,
                    NodeOptions::new(
                        Duration::from_millis(5),
                        dir.path().join(format!("{id}.snap")),
                    ),
                    Arc::new(log),
                    Watcher(Arc::clone(&watched)),
                    transport,
                    inbox,
                )
                .expect("start"),
            );
            seen.push(watched);
        }
        Cluster {
            _dir: dir,
            nodes,
            seen,
        }
    }

    /// The leader's position in `nodes`, once there is one.
    async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(at) = self
                .nodes
                .iter()
                .position(|n| n.status().borrow().role == Role::Leader)
            {
                return at;
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn shutdown(self) {
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

fn index_of(answer: &Bytes) -> u64 {
    std::str::from_utf8(answer)
        .expect("utf-8")
        .parse()
        .expect("an index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_at_a_follower_is_forwarded_and_sees_a_write_acknowledged_before_it() {
    let c = Cluster::start(&IDS, 1 << 20);
    let leader = c.leader().await;
    let follower = (leader + 1) % IDS.len();
    for i in 0..20 {
        let written = index_of(
            &c.nodes[leader]
                .propose(Bytes::from(format!("write {i}")), WAIT)
                .await
                .expect("committed"),
        );
        // Acknowledged at the leader: a read at the follower asked now must see it.
        let read = match c.nodes[follower].read_index(WAIT).await {
            Ok(read) => read,
            // A leader change in between: the read may be asked again.
            Err(DriverError::NotLeader { .. }) => continue,
            Err(e) => panic!("read at the follower: {e}"),
        };
        assert!(
            read >= written,
            "read at {read}, before the write at {written}"
        );
        assert!(
            *c.nodes[follower].applied().borrow() >= read,
            "answered before applying up to its index"
        );
        let seen = c.seen[follower].lock();
        assert!(
            seen.commands.iter().any(|(index, _)| *index == written),
            "the follower's state machine holds the write"
        );
    }
    // Many reads at once, at a follower and at the leader: all answered.
    let reads: Vec<_> = (0..50)
        .map(|i| c.nodes[if i % 2 == 0 { follower } else { leader }].read_index(WAIT))
        .collect();
    let mut answered = 0;
    for read in reads {
        if read.await.is_ok() {
            answered += 1;
        }
    }
    assert!(answered > 0, "no read answered");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_carries_its_context_to_every_state_machine() {
    let c = Cluster::start(&[1, 2, 3, 4], 1 << 20);
    let leader = c.leader().await;
    let context = Bytes::from_static(b"node 4 at 127.0.0.1:2380");
    c.nodes[leader]
        .change_membership(
            ConfChange::single(ChangeKind::AddLearner, 4).with_context(context.clone()),
            WAIT,
        )
        .await
        .expect("added");
    // Every node, the new learner included, applies the change with its context (polled).
    let deadline = tokio::time::Instant::now() + WAIT;
    for seen in &c.seen {
        loop {
            if seen
                .lock()
                .changes
                .iter()
                .any(|change| change.context == context)
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a member missed the change"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_over_entry_bytes_max_is_refused_with_a_typed_error() {
    let c = Cluster::start(&IDS, 1000);
    let leader = c.leader().await;
    let refused = c.nodes[leader]
        .propose(Bytes::from(vec![1u8; 1001]), WAIT)
        .await;
    assert_eq!(
        refused,
        Err(DriverError::EntryTooLarge {
            bytes: 1001,
            max: 1000
        })
    );
    // A membership change is an entry too: its context counts.
    let change = ConfChange::single(ChangeKind::AddLearner, 9).with_context(vec![0u8; 2000]);
    let refused = c.nodes[leader].change_membership(change, WAIT).await;
    assert!(
        matches!(refused, Err(DriverError::EntryTooLarge { max: 1000, .. })),
        "{refused:?}"
    );
    // One at the limit goes through.
    c.nodes[leader]
        .propose(Bytes::from(vec![1u8; 1000]), WAIT)
        .await
        .expect("committed");
    c.shutdown().await;
}

/// A node's transport that keeps count of the reads a follower has out at the leader: +1 for
/// each `ReadIndex` it sends, -1 for each answer the leader sends back.
struct ReadsOut {
    inner: Arc<dyn Transport>,
    out: Arc<std::sync::atomic::AtomicI64>,
    most: Arc<std::sync::atomic::AtomicI64>,
}

impl Transport for ReadsOut {
    fn send(&self, messages: Vec<strata_raft::Message>) {
        use std::sync::atomic::Ordering;
        for m in &messages {
            let step = match m.kind() {
                MessageType::ReadIndex => 1,
                MessageType::ReadIndexResponse => -1,
                _ => 0,
            };
            // Counted before the message leaves, so an answer never comes before its count.
            let now = self.out.fetch_add(step, Ordering::SeqCst) + step;
            self.most.fetch_max(now, Ordering::SeqCst);
        }
        self.inner.send(messages);
    }

    fn take_unreachable(&self) -> Vec<NodeId> {
        self.inner.take_unreachable()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_has_one_read_round_out_at_a_time_and_every_read_is_answered() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let net = MemNetwork::new();
    let (out, most) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
    // A long tick: a round out for less than one is never overtaken by the next, so at most one
    // is out however slow the machine is.
    let tick = Duration::from_millis(200);
    let mut nodes: Vec<RaftNode> = IDS
        .iter()
        .map(|&id| {
            let log = RaftLog::open(&dir.path().join(id.to_string()), LogOptions::default())
                .expect("log");
            let mut config = Config::new(id, IDS.to_vec());
            config.election_tick = 5;
            let (transport, inbox) = net.join(id);
            let transport: Arc<dyn Transport> = Arc::new(ReadsOut {
                inner: transport,
                out: Arc::clone(&out),
                most: Arc::clone(&most),
            });
            let options = NodeOptions::new(tick, dir.path().join(format!("{id}.snap")));
            let seen = Arc::new(Mutex::new(Seen::default()));
            RaftNode::start(
                config,
                options,
                Arc::new(log),
                Watcher(seen),
                transport,
                inbox,
            )
            .expect("start")
        })
        .collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    let leader = loop {
        if let Some(at) = nodes
            .iter()
            .position(|n| n.status().borrow().role == Role::Leader)
        {
            break at;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let follower = (leader + 1) % IDS.len();
    nodes[leader]
        .propose(Bytes::from_static(b"w"), WAIT)
        .await
        .expect("committed");
    // Sixteen readers in a closed loop at the follower: each asks again as soon as it is
    // answered, so new reads arrive while a round is out (they must wait for the next).
    // Each reader in a task of its own, a few yields apart, so that their reads do not arrive
    // together.
    let node = Arc::new(nodes.swap_remove(follower));
    let readers: Vec<_> = (0..16)
        .map(|r| {
            let node = Arc::clone(&node);
            tokio::spawn(async move {
                for i in 0..25 {
                    node.read_index(WAIT).await.expect("read");
                    for _ in 0..(r + i) % 5 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.expect("reader");
    }
    let Ok(node) = Arc::try_unwrap(node) else {
        panic!("a reader still holds the node");
    };
    nodes.push(node);
    let rounds_most = most.load(Ordering::SeqCst);
    assert_eq!(rounds_most, 1, "rounds out at once at the follower");
    assert_eq!(out.load(Ordering::SeqCst), 0, "every round answered");
    for node in nodes {
        node.shutdown().await;
    }
}
