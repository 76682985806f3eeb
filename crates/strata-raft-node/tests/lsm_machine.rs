//! The LSM as a Raft state machine (`support/lsm_machine.rs`): a follower cut off past the
//! compacted log installs the leader's tables, and keys the snapshot does not hold are gone
//! from it afterwards; a restart holds everything without a restore.

#[path = "support/lsm_machine.rs"]
mod lsm_machine;
#[allow(dead_code)]
#[path = "support/node.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use lsm_machine::{LsmMachine, delete, put};
use strata_lsm::Options;
use strata_raft::{Config, NodeId};
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{MemNetwork, NodeOptions, RaftNode};

const WAIT: Duration = Duration::from_secs(30);
const IDS: [NodeId; 3] = [1, 2, 3];

struct Node {
    raft: RaftNode,
    db: Arc<strata_lsm::Db>,
}

fn start(root: &std::path::Path, net: &Arc<MemNetwork>, id: NodeId) -> Node {
    let log = RaftLog::open(&root.join(format!("{id}.log")), LogOptions::default()).expect("log");
    let machine =
        LsmMachine::open(&root.join(format!("{id}.lsm")), Options::default()).expect("lsm");
    let db = machine.db();
    let mut config = Config::new(id, IDS.to_vec());
    config.snapshot_chunk_bytes = 4096;
    let mut options = NodeOptions::new(
        Duration::from_millis(5),
        root.join(format!("{id}.snapshots")),
    );
    // Snapshots often, and a log compacted right up to them.
    options.snapshot_entries = 50;
    options.compaction_overhead_entries = 2;
    let (transport, inbox) = net.join(id);
    let raft =
        RaftNode::start(config, options, Arc::new(log), machine, transport, inbox).expect("start");
    Node { raft, db }
}

/// The leader, among all the nodes (running at the start).
async fn leader(nodes: &[Option<Node>]) -> NodeId {
    let running = nodes.iter().map(|n| &n.as_ref().expect("running").raft);
    support::wait_leader(running, WAIT).await as NodeId + 1
}

fn node(nodes: &[Option<Node>], id: NodeId) -> &Node {
    nodes[id as usize - 1].as_ref().expect("running")
}

async fn wait_applied(node: &RaftNode, index: u64) {
    support::wait_applied(node, index, WAIT).await;
}

fn get(db: &strata_lsm::Db, key: &str) -> Option<String> {
    LsmMachine::get(db, key.as_bytes())
        .expect("read")
        .map(|v| String::from_utf8(v).expect("utf-8"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_installs_the_leaders_tables_and_keys_missing_from_the_snapshot_are_gone() {
    let root = tempfile::tempdir().expect("tempdir");
    let net = MemNetwork::new();
    let mut nodes: Vec<Option<Node>> = IDS
        .iter()
        .map(|&id| Some(start(root.path(), &net, id)))
        .collect();
    let lead = leader(&nodes).await;
    node(&nodes, lead)
        .raft
        .propose(put(b"gone", b"soon"), WAIT)
        .await
        .expect("put");
    node(&nodes, lead)
        .raft
        .propose(put(b"kept", b"1"), WAIT)
        .await
        .expect("put");
    let behind = IDS.into_iter().find(|&id| id != lead).expect("a follower");
    let commit = node(&nodes, lead).raft.status().borrow().commit;
    wait_applied(&node(&nodes, behind).raft, commit).await;
    assert_eq!(
        get(&node(&nodes, behind).db, "gone").as_deref(),
        Some("soon")
    );

    // Cut off: meanwhile the leader deletes a key it holds, and writes enough for snapshots
    // that compact its log past where the follower stopped.
    net.set_cut_off(behind, true);
    node(&nodes, lead)
        .raft
        .propose(delete(b"gone"), WAIT)
        .await
        .expect("delete");
    for i in 0..200 {
        let answer = node(&nodes, lead)
            .raft
            .propose(
                put(
                    format!("key{i:03}").as_bytes(),
                    format!("value{i}").as_bytes(),
                ),
                WAIT,
            )
            .await
            .expect("put");
        assert!(answer.is_empty(), "answered {answer:?}");
    }
    // A command that does not decode is answered, not applied.
    let bad = node(&nodes, lead)
        .raft
        .propose(bytes::Bytes::from_static(b"\x07"), WAIT)
        .await
        .expect("answered");
    assert_eq!(&bad[..], b"bad command");
    let commit = node(&nodes, lead).raft.status().borrow().commit;
    net.set_cut_off(behind, false);
    wait_applied(&node(&nodes, behind).raft, commit).await;
    let follower = node(&nodes, behind);
    assert!(
        follower.raft.status().borrow().snapshot > 0,
        "caught up through a snapshot"
    );
    assert_eq!(
        get(&follower.db, "gone"),
        None,
        "deleted while it was cut off"
    );
    assert_eq!(get(&follower.db, "kept").as_deref(), Some("1"));
    for i in 0..200 {
        assert_eq!(
            get(&follower.db, &format!("key{i:03}")),
            Some(format!("value{i}"))
        );
    }

    // A restart holds everything: the store's applied index is where it left off.
    let stopped = nodes[behind as usize - 1].take().expect("running");
    let applied = *stopped.raft.applied().borrow();
    stopped.raft.shutdown().await;
    drop(stopped.db);
    let restarted = start(root.path(), &net, behind);
    assert_eq!(
        *restarted.raft.applied().borrow(),
        applied,
        "nothing to restore or re-apply"
    );
    assert_eq!(get(&restarted.db, "key199").as_deref(), Some("value199"));
    assert_eq!(get(&restarted.db, "gone"), None);
    nodes[behind as usize - 1] = Some(restarted);
    for node in nodes.into_iter().flatten() {
        node.raft.shutdown().await;
    }
}
