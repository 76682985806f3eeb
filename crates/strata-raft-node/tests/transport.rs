//! The transport contract: sending never waits, lanes are bounded and a full one drops and
//! counts, snapshot chunks never hold up Raft's own messages, and a peer that reads nothing
//! does not stall the others.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strata_raft::{Config, Message, MessageType, NodeId};
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{MemNetwork, NodeOptions, RaftNode, inbox_with};

#[allow(dead_code)]
#[path = "support/node.rs"]
mod support;

use support::Nothing;

const WAIT: Duration = Duration::from_secs(20);

fn message(kind: MessageType) -> Message {
    Message {
        msg_type: kind as i32,
        from: 1,
        to: 2,
        term: 1,
        ..Message::default()
    }
}

#[test]
fn a_full_lane_drops_and_counts_and_raft_messages_never_wait_behind_chunks() {
    let (sender, _inbox) = inbox_with(2, 1);
    assert!(sender.deliver(message(MessageType::InstallSnapshot)));
    // The chunk lane is full: another chunk is dropped and counted.
    assert!(!sender.deliver(message(MessageType::InstallSnapshot)));
    assert_eq!(sender.dropped(), 1);
    // Raft's own messages have their lane: a full chunk lane does not hold them up.
    assert!(sender.deliver(message(MessageType::Heartbeat)));
    assert!(sender.deliver(message(MessageType::Append)));
    assert!(!sender.deliver(message(MessageType::Append)));
    assert_eq!(sender.dropped(), 2);
}

#[test]
fn a_stopped_node_drops_what_is_sent_to_it() {
    let (sender, inbox) = inbox_with(4, 4);
    drop(inbox);
    assert!(sender.is_closed());
    assert!(!sender.deliver(message(MessageType::Heartbeat)));
    assert_eq!(sender.dropped(), 1);
}

/// Node 3 is a member whose inbox nobody reads (a hung process): its lanes fill, what is
/// sent to it is dropped and counted, and nodes 1 and 2 go on committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_reads_nothing_does_not_stall_the_others() {
    const PROPOSALS: usize = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let net = MemNetwork::new();
    let ids: [NodeId; 3] = [1, 2, 3];
    // Tiny lanes, never drained.
    let (_hung_transport, _hung_inbox) = net.join_with(3, 4, 1);
    let mut nodes = Vec::new();
    for id in [1, 2] {
        let log =
            RaftLog::open(&dir.path().join(id.to_string()), LogOptions::default()).expect("log");
        let (transport, inbox) = net.join(id);
        nodes.push(Arc::new(
            RaftNode::start(
                Config::new(id, ids.to_vec()),
                NodeOptions::new(
                    Duration::from_millis(5),
                    dir.path().join(format!("{id}.snapshots")),
                ),
                Arc::new(log),
                Nothing,
                transport,
                inbox,
            )
            .expect("start"),
        ));
    }
    let leader = support::wait_leader(nodes.iter().map(AsRef::as_ref), WAIT).await;
    let leader = Arc::clone(&nodes[leader]);
    let tasks: Vec<_> = (0..PROPOSALS)
        .map(|i| {
            let leader = Arc::clone(&leader);
            tokio::spawn(async move {
                leader
                    .propose(Bytes::from(format!("command {i}")), WAIT)
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("committed without node 3");
    }
    // Heartbeats go on: node 3's lanes fill and drop (polled, with a bound).
    let deadline = tokio::time::Instant::now() + WAIT;
    while net.dropped(3) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 3's full lanes dropped nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for node in nodes {
        if let Ok(node) = Arc::try_unwrap(node) {
            node.shutdown().await;
        }
    }
}
