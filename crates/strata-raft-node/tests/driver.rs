//! The async driver: three nodes in one process on durable logs and the in-memory network.
//! Concurrent proposals commit and apply in the same order everywhere; reads, leader
//! transfer, a leader crash and a restart from the log.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use strata_raft::{Config, NodeId, Role};
use strata_raft_log::{LogOptions, RaftLog};

#[allow(dead_code)]
#[path = "support/node.rs"]
mod support;
use strata_raft_node::{
    Committed, CommittedKind, DriverError, MemNetwork, NodeOptions, RaftNode, SnapshotWriter,
    StateMachine, Transport,
};

const WAIT: Duration = Duration::from_secs(20);

/// What a node applied: index and command, in order.
type Applied = Arc<Mutex<Vec<(u64, Bytes)>>>;

/// Records what it applies.
struct Recorder(Applied);

impl StateMachine for Recorder {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        let mut answers = Vec::new();
        let mut applied = self.0.lock();
        for entry in batch {
            if let CommittedKind::Command(command) = entry.kind {
                applied.push((entry.index, command));
                answers.push(Bytes::from(format!("applied {}", entry.index)));
            }
        }
        Ok(answers)
    }

    fn applied_index(&self) -> u64 {
        // In memory: nothing survives a restart.
        0
    }

    async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter> {
        // The captured state: what was applied, in order.
        let mut state = Vec::new();
        for (index, command) in self.0.lock().iter() {
            state.extend_from_slice(&index.to_le_bytes());
            state.extend_from_slice(&(command.len() as u32).to_le_bytes());
            state.extend_from_slice(command);
        }
        Ok(Box::new(move |dir: &Path| {
            std::fs::write(dir.join("applied"), &state)?;
            Ok(vec!["applied".to_owned()])
        }))
    }

    async fn restore(&mut self, dir: &Path, files: &[String], _: u64) -> std::io::Result<()> {
        assert_eq!(files, ["applied"]);
        let state = std::fs::read(dir.join("applied"))?;
        let mut applied = Vec::new();
        let mut at = &state[..];
        while at.len() >= 12 {
            let index = u64::from_le_bytes(at[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(at[8..12].try_into().expect("4 bytes")) as usize;
            applied.push((index, Bytes::copy_from_slice(&at[12..12 + len])));
            at = &at[12 + len..];
        }
        *self.0.lock() = applied;
        Ok(())
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    net: Arc<MemNetwork>,
    nodes: Vec<Option<RaftNode>>,
    applied: Vec<Applied>,
    logs: Vec<Option<Arc<RaftLog>>>,
    /// Snapshot every this many entries (0: the defaults).
    snapshot_entries: u64,
}

const IDS: [NodeId; 3] = [1, 2, 3];
/// A node outside the initial configuration, for membership changes.
const SPARE: NodeId = 4;

impl Cluster {
    fn new() -> Self {
        Self::with_snapshots(0)
    }

    fn with_snapshots(snapshot_entries: u64) -> Self {
        let mut c = Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            net: MemNetwork::new(),
            nodes: Vec::new(),
            applied: Vec::new(),
            logs: Vec::new(),
            snapshot_entries,
        };
        for id in IDS {
            c.applied.push(Arc::new(Mutex::new(Vec::new())));
            c.nodes.push(None);
            c.logs.push(None);
            c.start(id);
        }
        c.applied.push(Arc::new(Mutex::new(Vec::new())));
        c.nodes.push(None);
        c.logs.push(None);
        c
    }

    fn start(&mut self, id: NodeId) {
        // A restarted node's earlier log handle goes first (it holds the log's lock).
        self.logs[id as usize - 1] = None;
        let log = RaftLog::open(&self.dir.path().join(id.to_string()), LogOptions::default())
            .expect("log");
        let mut config = Config::new(id, IDS.to_vec());
        config.peers = vec![1, 2, 3, SPARE];
        config.election_tick = 10;
        let applied = Arc::clone(&self.applied[id as usize - 1]);
        applied.lock().clear();
        let mut options = NodeOptions::new(
            Duration::from_millis(5),
            self.dir.path().join(format!("{id}.snapshots")),
        );
        if self.snapshot_entries > 0 {
            // Small snapshots in many chunks, and a log compacted right up to them.
            options.snapshot_entries = self.snapshot_entries;
            options.compaction_overhead_entries = 2;
            config.snapshot_chunk_bytes = 100;
        }
        let log = Arc::new(log);
        self.logs[id as usize - 1] = Some(Arc::clone(&log));
        let (transport, inbox) = self.net.join(id);
        let node = RaftNode::start(config, options, log, Recorder(applied), transport, inbox)
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

/// The log index in a [`Recorder`]'s answer (`applied INDEX`).
fn applied_index(answer: &[u8]) -> u64 {
    std::str::from_utf8(&answer[b"applied ".len()..])
        .expect("utf-8")
        .parse()
        .expect("an index")
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
                let index = applied_index(&answer);
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
    // At a follower, the read goes to the leader, and is answered once applied here.
    let at_follower = c.node(follower).read_index(WAIT).await.expect("read");
    assert!(at_follower >= last);
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
        applied_index(&answer)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_past_the_compacted_log_installs_a_snapshot_and_restarts_from_it() {
    let mut c = Cluster::with_snapshots(20);
    let leader = c.leader().await;
    let behind = IDS.into_iter().find(|&id| id != leader).expect("follower");
    c.net.set_cut_off(behind, true);
    let mut last = 0;
    for i in 0..100u32 {
        let answer = c
            .node(leader)
            .propose(Bytes::from(format!("command {i}")), WAIT)
            .await
            .expect("committed");
        last = applied_index(&answer);
    }
    let log = |c: &Cluster, id: NodeId| Arc::clone(c.logs[id as usize - 1].as_ref().expect("log"));
    // The leader took snapshots and compacted its log past what the follower has.
    let mut status = c.node(leader).status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.snapshot >= 80))
        .await
        .expect("snapshots in time")
        .expect("running");
    // (The status shows a snapshot once the log is compacted for it.)
    assert!(log(&c, leader).first_index() > log(&c, behind).last_index() + 1);

    c.net.set_cut_off(behind, false);
    c.wait_applied(behind, last).await;
    let reference = c.applied[leader as usize - 1].lock().clone();
    assert_eq!(reference.len(), 100);
    assert_eq!(
        *c.applied[behind as usize - 1].lock(),
        reference,
        "restored from the snapshot, then applied the rest"
    );
    assert!(c.node(behind).status().borrow().snapshot > 0, "installed");
    assert!(log(&c, behind).first_index() > 1, "its log starts after it");

    // A restart restores from the snapshot and applies the log after it.
    c.nodes[behind as usize - 1]
        .take()
        .expect("running")
        .shutdown()
        .await;
    c.start(behind);
    c.wait_applied(behind, last).await;
    assert_eq!(*c.applied[behind as usize - 1].lock(), reference);

    // Requested snapshots: one now, then none while nothing new is applied.
    let taken = c
        .node(leader)
        .request_snapshot(WAIT)
        .await
        .expect("snapshot");
    assert!(taken.is_none_or(|m| m.last_index >= last));
    assert_eq!(
        c.node(leader).request_snapshot(WAIT).await.expect("again"),
        None,
        "skipped: nothing applied since"
    );
    // An exported snapshot: the files and their description, outside the store.
    let export = c.dir.path().join("export");
    let meta = c
        .node(leader)
        .export_snapshot(&export, WAIT)
        .await
        .expect("export");
    assert!(meta.last_index >= last);
    let described = std::fs::read(export.join("meta")).expect("meta");
    assert_eq!(
        <strata_snapshot::SnapshotMeta as prost::Message>::decode(described.as_slice())
            .expect("decodes"),
        meta
    );
    assert_eq!(
        std::fs::metadata(export.join("applied"))
            .expect("file")
            .len(),
        meta.files[0].size
    );
}

/// A state machine whose snapshot writer waits for the test to let it go.
struct Gated {
    gate: Arc<Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
    writing: Arc<tokio::sync::Notify>,
}

impl StateMachine for Gated {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        Ok(support::no_answers(&batch))
    }

    fn applied_index(&self) -> u64 {
        0
    }

    async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter> {
        let gate = self.gate.lock().take();
        let writing = Arc::clone(&self.writing);
        Ok(Box::new(move |dir: &Path| {
            writing.notify_one();
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
            std::fs::write(dir.join("state"), b"gated")?;
            Ok(vec!["state".to_owned()])
        }))
    }

    async fn restore(&mut self, _dir: &Path, _files: &[String], _: u64) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_snapshot_being_written_and_nothing_is_installed_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = MemNetwork::new();
    let log = RaftLog::open(&dir.path().join("log"), LogOptions::default()).expect("log");
    let (release, gate) = std::sync::mpsc::channel();
    let writing = Arc::new(tokio::sync::Notify::new());
    let store = dir.path().join("snapshots");
    let (transport, inbox) = net.join(1);
    let node = RaftNode::start(
        Config::new(1, vec![1]),
        NodeOptions::new(Duration::from_millis(5), &store),
        Arc::new(log),
        Gated {
            gate: Arc::new(Mutex::new(Some(gate))),
            writing: Arc::clone(&writing),
        },
        transport,
        inbox,
    )
    .expect("start");
    let mut status = node.status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.role == Role::Leader))
        .await
        .expect("leader")
        .expect("running");
    node.propose(Bytes::from_static(b"x"), WAIT)
        .await
        .expect("propose");
    {
        let request = node.request_snapshot(WAIT);
        tokio::pin!(request);
        tokio::select! {
            answer = &mut request => panic!("answered before the writer ran: {answer:?}"),
            () = writing.notified() => {}
        }
        // The caller gives up; the writer waits at the gate.
    }
    let shutdown = node.shutdown();
    tokio::pin!(shutdown);
    // Started (it marks the node stopped at once, then waits), then the writer goes on.
    tokio::select! {
        biased;
        () = &mut shutdown => panic!("shutdown returned while the writer was still waiting"),
        () = std::future::ready(()) => {}
    }
    release.send(()).expect("release the writer");
    shutdown.await;
    // Shutdown returned after the writer finished, and nothing was installed after it.
    assert!(
        store.join("local").join("state").exists(),
        "the writer ran to its end"
    );
    assert!(
        !store.join("CURRENT").exists(),
        "no snapshot installed after shutdown"
    );
}

/// A node whose Readies hand out few committed bytes each applies everything, in order and
/// without gaps: proposals committed together, and its log again after a restart, where a
/// clock that never ticks within the test leaves nothing but the core's `has_ready` to keep
/// the driver handing out the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_small_per_ready_limit_applies_everything_in_order() {
    const PROPOSALS: u64 = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let net = MemNetwork::new();
    let start = |applied: Applied, tick: Duration| {
        let log = RaftLog::open(&dir.path().join("log"), LogOptions::default()).expect("log");
        let mut config = Config::new(1, vec![1]);
        // About one entry per Ready.
        config.committed_bytes_per_ready_max = 1;
        let (transport, inbox) = net.join(1);
        RaftNode::start(
            config,
            NodeOptions::new(tick, dir.path().join("snapshots")),
            Arc::new(log),
            Recorder(applied),
            transport,
            inbox,
        )
        .expect("start")
    };
    let applied: Applied = Arc::new(Mutex::new(Vec::new()));
    let node = Arc::new(start(Arc::clone(&applied), Duration::from_millis(5)));
    let mut status = node.status();
    tokio::time::timeout(WAIT, status.wait_for(|s| s.role == Role::Leader))
        .await
        .expect("leader")
        .expect("running");
    let proposals: Vec<_> = (0..PROPOSALS)
        .map(|i| {
            let node = Arc::clone(&node);
            tokio::spawn(async move {
                node.propose(Bytes::from(format!("command {i}")), WAIT)
                    .await
                    .expect("committed")
            })
        })
        .collect();
    for proposal in proposals {
        proposal.await.expect("task");
    }
    let first_run = applied.lock().clone();
    assert_eq!(first_run.len() as u64, PROPOSALS);
    // The leader's no-op comes first (not applied to the state machine), then the commands.
    let indexes: Vec<u64> = first_run.iter().map(|(index, _)| *index).collect();
    assert_eq!(indexes, (2..PROPOSALS + 2).collect::<Vec<_>>());
    let node = Arc::into_inner(node).expect("the only handle");
    node.shutdown().await;

    // A restart applies the log up to its durable commit index again (no snapshot was taken).
    let commit = RaftLog::open(&dir.path().join("log"), LogOptions::default())
        .expect("log")
        .hard_state()
        .commit;
    // Written before the last command was handed out for applying.
    assert_eq!(commit, PROPOSALS + 1);
    let again: Applied = Arc::new(Mutex::new(Vec::new()));
    let node = start(Arc::clone(&again), Duration::from_secs(3600));
    let mut applied_index = node.applied();
    tokio::time::timeout(WAIT, applied_index.wait_for(|a| *a >= commit))
        .await
        .expect("applied in time")
        .expect("running");
    let expected: Vec<(u64, Bytes)> = first_run
        .iter()
        .filter(|(index, _)| *index <= commit)
        .cloned()
        .collect();
    assert_eq!(
        *again.lock(),
        expected,
        "the same commands, in the same order"
    );
    node.shutdown().await;
}

/// A chunk at the position `follower` expects, but longer than its file: only a broken or
/// hostile peer sends it. The follower's store refuses it.
fn refused_chunk(leader: NodeId, follower: NodeId, term: u64) -> strata_raft::Message {
    use strata_raft::{Message, MessageType};
    use strata_snapshot::{Chunk, FileInfo, SnapshotMeta};

    let data = Bytes::from(vec![7u8; 100]);
    let meta = SnapshotMeta {
        id: 99,
        last_index: 1_000_000,
        last_term: term,
        membership: Vec::new().into(),
        files: vec![FileInfo {
            name: "a".to_owned(),
            size: 10,
            crc: 0,
        }],
    };
    let mut m = Message {
        msg_type: MessageType::InstallSnapshot as i32,
        from: leader,
        to: follower,
        term,
        ..Message::default()
    };
    m.chunk = Some(Chunk {
        snapshot_id: meta.id,
        file: 0,
        offset: 0,
        crc: crc32fast::hash(&data),
        done: true,
        data,
    });
    m.snapshot = Some(meta);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_the_store_refuses_is_counted_and_dropped_and_the_node_carries_on() {
    let c = Cluster::new();
    // Sent as the leader would (through an end of the network of its own).
    let (sender, _) = c.net.join(100);
    // A leader change in between (a slow machine misses heartbeats) makes the chunk stale,
    // ignored before it is staged: the test then sends it again, as of the new leader.
    let deadline = tokio::time::Instant::now() + WAIT;
    let follower = loop {
        let leader = c.leader().await;
        let follower = IDS.into_iter().find(|&id| id != leader).expect("follower");
        let term = c.node(follower).status().borrow().term;
        let before = c.node(follower).status().borrow().counters.malformed;
        sender.send(vec![refused_chunk(leader, follower, term)]);
        let mut status = c.node(follower).status();
        let counted = tokio::time::timeout(
            Duration::from_millis(500),
            status.wait_for(|s| s.counters.malformed > before),
        )
        .await;
        if matches!(counted, Ok(Ok(_))) {
            break follower;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the refused chunk is not counted in time"
        );
    };

    // The follower still replicates and applies.
    let leader = c.leader().await;
    let answer = c
        .node(leader)
        .propose(Bytes::from_static(b"after"), WAIT)
        .await
        .expect("committed");
    let index = applied_index(&answer);
    c.wait_applied(follower, index).await;
}
