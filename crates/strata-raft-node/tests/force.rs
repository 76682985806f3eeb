//! `force_new_cluster`: a member of a cluster that lost its quorum becomes the only voter of
//! a cluster with everything its log held, and leads it alone; a log that ends in a joint
//! configuration, or a learner, is forced as well; forcing the only member changes nothing.

#[allow(dead_code)]
#[path = "support/lsm_machine.rs"]
mod lsm_machine;
#[allow(dead_code)]
#[path = "support/node.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lsm_machine::{LsmMachine, put};
use prost::Message as _;
use strata_lsm::Options;
use strata_raft::{ChangeKind, ConfChange, Config, NodeId};
use strata_raft_log::{Entry, EntryKind, HardState, LogOptions, RaftLog};
use strata_raft_node::{MemNetwork, NodeOptions, RaftNode, force_new_cluster};

const WAIT: Duration = Duration::from_secs(30);

fn open_log(root: &Path, id: NodeId) -> Arc<RaftLog> {
    Arc::new(RaftLog::open(&root.join(format!("{id}.log")), LogOptions::default()).expect("log"))
}

/// Snapshots often and a log compacted close behind them, so a forced configuration starts
/// from a snapshot's.
fn options(root: &Path, id: NodeId) -> NodeOptions {
    let mut options = NodeOptions::new(
        Duration::from_millis(5),
        root.join(format!("{id}.snapshots")),
    );
    options.snapshot_entries = 10;
    options.compaction_overhead_entries = 2;
    options
}

/// Node `id` of `voters` on `net`, applying to an LSM under `root`.
fn start(
    root: &Path,
    net: &Arc<MemNetwork>,
    id: NodeId,
    config: Config,
    log: Arc<RaftLog>,
) -> (RaftNode, Arc<strata_lsm::Db>) {
    let machine =
        LsmMachine::open(&root.join(format!("{id}.lsm")), Options::default()).expect("lsm");
    let db = machine.db();
    let (transport, inbox) = net.join(id);
    let node =
        RaftNode::start(config, options(root, id), log, machine, transport, inbox).expect("start");
    (node, db)
}

/// Waits until `node` leads (bounded).
async fn wait_leads(node: &RaftNode) {
    support::wait_leader([node], WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_forced_alone_leads_with_everything_its_log_held() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let net = MemNetwork::new();
    let ids = [1, 2, 3];
    let mut nodes: Vec<(RaftNode, Arc<strata_lsm::Db>)> = ids
        .iter()
        .map(|&id| {
            start(
                root,
                &net,
                id,
                Config::new(id, ids.to_vec()),
                open_log(root, id),
            )
        })
        .collect();
    let lead = support::wait_leader(nodes.iter().map(|(n, _)| n), WAIT).await;
    for i in 0..50 {
        nodes[lead]
            .0
            .propose(put(format!("k{i:02}").as_bytes(), b"v"), WAIT)
            .await
            .expect("put");
    }
    // Node 1 holds every committed entry once it has applied them.
    let commit = nodes[lead].0.status().borrow().commit;
    support::wait_applied(&nodes[0].0, commit, WAIT).await;
    assert!(
        nodes[0].0.status().borrow().snapshot > 0,
        "node 1 took snapshots"
    );
    // The whole cluster is lost but node 1's disk.
    for (node, db) in nodes.drain(..) {
        node.shutdown().await;
        drop(db);
    }

    let config = Config::new(1, ids.to_vec());
    let log = open_log(root, 1);
    let last = log.last_index();
    assert!(last >= commit, "node 1's log holds every committed entry");
    let forced = force_new_cluster(&config, &log, &options(root, 1).snapshot_dir).expect("forced");
    assert_eq!(forced.removed, vec![2, 3]);
    assert_eq!(forced.before.voters, [1, 2, 3].into_iter().collect());
    assert!(!forced.before.is_joint());
    assert_eq!(
        forced.commit,
        log.last_index(),
        "the log is committed to its end"
    );
    assert_eq!(
        forced.commit,
        last + 2,
        "a change and the leave of the joint configuration"
    );
    assert_eq!(log.hard_state().vote, 1);

    // Alone on a network where nodes 2 and 3 never answer again.
    let alone = MemNetwork::new();
    let (node, db) = start(root, &alone, 1, config.clone(), log);
    wait_leads(&node).await;
    node.propose(put(b"after", b"forced"), WAIT)
        .await
        .expect("a write committed by node 1 alone");
    for i in 0..50 {
        assert_eq!(
            LsmMachine::get(&db, format!("k{i:02}").as_bytes()).expect("read"),
            Some(b"v".to_vec()),
            "k{i:02}"
        );
    }
    node.shutdown().await;
    drop(db);

    // Forced again (the flag left on at a restart): nothing left to change, nothing written.
    let log = open_log(root, 1);
    let last = log.last_index();
    let again = force_new_cluster(&config, &log, &options(root, 1).snapshot_dir).expect("again");
    assert!(again.removed.is_empty());
    assert_eq!(again.before.voters, [1].into_iter().collect());
    assert_eq!((again.commit, log.last_index()), (last, last));
}

/// Entries a node's log may end with that no leader committed: a no-op, then a change that
/// enters a joint configuration.
fn joint_tail(log: &RaftLog) {
    let change = ConfChange::single(ChangeKind::AddVoter, 4);
    log.append(&[
        Entry::new(1, 1, EntryKind::Normal, Vec::new()),
        Entry::new(1, 2, EntryKind::ConfChange, change.encode_to_vec()),
    ])
    .expect("append");
    log.set_hard_state(HardState {
        term: 1,
        vote: 2,
        commit: 1,
    })
    .expect("hard state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_ending_joint_and_a_learner_are_forced_too() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();

    // Node 1, a voter, with an uncommitted joint configuration {1,2,3} -> {1,2,3,4}.
    let config = Config::new(1, vec![1, 2, 3]);
    let log = open_log(root, 1);
    joint_tail(&log);
    let forced = force_new_cluster(&config, &log, &options(root, 1).snapshot_dir).expect("forced");
    assert!(forced.before.is_joint());
    assert_eq!(forced.removed, vec![2, 3, 4]);
    // Leave, change, leave, in a term after the log's.
    assert_eq!((forced.commit, forced.term), (5, 2));
    let (node, db) = start(root, &MemNetwork::new(), 1, config, log);
    wait_leads(&node).await;
    node.propose(put(b"k", b"v"), WAIT).await.expect("a write");
    node.shutdown().await;
    drop(db);

    // Node 5, a learner of {2, 3}: it becomes the only voter.
    let mut config = Config::new(5, vec![2, 3]);
    config.learners = vec![5];
    let log = open_log(root, 5);
    let forced = force_new_cluster(&config, &log, &options(root, 5).snapshot_dir).expect("forced");
    assert_eq!(forced.removed, vec![2, 3]);
    assert_eq!(forced.before.learners, [5].into_iter().collect());
    let (node, db) = start(root, &MemNetwork::new(), 5, config, log);
    wait_leads(&node).await;
    node.propose(put(b"k", b"v"), WAIT).await.expect("a write");
    node.shutdown().await;
    drop(db);
}
