//! Three nodes, each on its own runtime and sockets, over TCP: they elect, replicate, move a
//! snapshot to a node that fell behind, and carry on through a peer's restart.

#[allow(dead_code)]
mod support {
    pub mod cluster;
}

use strata_transport::Lane;
use support::cluster::Cluster;

#[test]
fn three_nodes_elect_replicate_and_survive_a_restart() {
    let mut c = Cluster::new(3);
    c.start_all();
    let mut last = 0;
    for i in 0..50 {
        last = c.put(&format!("k{i}"), &format!("v{i}"));
    }
    for id in c.ids.clone() {
        c.wait_applied(id, last);
        assert_eq!(c.get(id, "k49").as_deref(), Some("v49"), "node {id}");
    }
    // A follower restarts: it catches up over new connections.
    let leader = c.leader();
    let follower = c
        .ids
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("a follower");
    c.stop(follower);
    for i in 50..60 {
        last = c.put(&format!("k{i}"), &format!("v{i}"));
    }
    c.start(follower);
    c.wait_applied(follower, last);
    assert_eq!(c.get(follower, "k59").as_deref(), Some("v59"));
    // Frames went both ways on the control lane.
    let metrics = c.nodes[&c.leader()].transport.metrics();
    let sent: u64 = metrics
        .lanes
        .iter()
        .filter(|((_, lane), _)| *lane == Lane::Control)
        .map(|(_, m)| m.frames_sent)
        .sum();
    assert!(sent > 0);
    assert_eq!(metrics.refused, 0);
    assert_eq!(metrics.bad_frames, 0);
}

#[test]
fn a_node_behind_the_compacted_log_gets_a_snapshot_over_the_snapshot_lane() {
    let mut c = Cluster::new(3);
    c.snapshot_entries = 20;
    c.start_all();
    c.put("first", "1");
    let leader = c.leader();
    let behind = c
        .ids
        .iter()
        .copied()
        .find(|&id| id != leader)
        .expect("a follower");
    c.stop(behind);
    let mut last = 0;
    for i in 0..200 {
        last = c.put(&format!("k{i}"), &format!("{i:0>100}"));
    }
    c.start(behind);
    c.wait_applied(behind, last);
    assert_eq!(
        c.get(behind, "k199").as_deref(),
        Some(&format!("{:0>100}", 199)[..])
    );
    assert!(
        c.raft(behind).status().borrow().snapshot > 0,
        "caught up through a snapshot"
    );
    // Whichever node led when the snapshot went.
    let chunks: u64 = c
        .nodes
        .values()
        .filter_map(|n| {
            n.transport
                .metrics()
                .lanes
                .get(&(behind, Lane::Snapshot))
                .copied()
        })
        .map(|m| m.frames_sent)
        .sum();
    assert!(chunks > 0, "the chunks went on the snapshot lane");
}
