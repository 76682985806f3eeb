//! Joint-consensus membership changes in hard cases: a restart whose commit index on disk
//! lags the membership changes in its log, and leaving a joint configuration while a
//! leadership transfer is under way.

use std::collections::BTreeSet;

use bytes::Bytes;
use strata_raft::{Change, ChangeKind, ConfChange, Config, NodeId, Role};
use strata_raft_node::sim::Cluster;

/// Settles, dropping every message between `a` and the rest (a two-sided partition).
fn settle_split(c: &mut Cluster, a: &BTreeSet<NodeId>) {
    for _ in 0..10_000 {
        c.ready_all();
        if c.queue.is_empty() {
            return;
        }
        while let Some(m) = c.queue.pop_front() {
            if a.contains(&m.from) != a.contains(&m.to) {
                continue;
            }
            if let Some(n) = c.nodes.get_mut(&m.to) {
                let _ = n.step(m);
            }
        }
    }
    panic!("no settle");
}

fn tick_split(c: &mut Cluster, a: &BTreeSet<NodeId>) {
    let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
    for id in ids {
        c.node(id).tick();
    }
    settle_split(c, a);
}

/// A node restarting with a commit index older than the membership changes in its log (the
/// commit index is not synced on its own) must not use the bootstrap configuration: it
/// could win an election with an old majority that does not overlap the new one.
#[test]
fn a_restart_with_a_stale_commit_index_does_not_split_the_cluster() {
    let ids: Vec<NodeId> = (1..=5).collect();
    let configure = |config: &mut Config| {
        config.voters = vec![1, 2, 3];
        config.peers = (1..=5).collect();
    };
    let mut c = Cluster::new(&ids, configure);
    let leader = c.elect();
    assert!(leader <= 3);
    c.node(leader)
        .propose_conf_change(&ConfChange {
            changes: vec![
                Change {
                    kind: ChangeKind::AddVoter as i32,
                    node: 4,
                },
                Change {
                    kind: ChangeKind::AddVoter as i32,
                    node: 5,
                },
            ],
            ..ConfChange::default()
        })
        .expect("joint");
    c.tick_all(5);
    for id in 1..=5 {
        let m = c.node(id).membership().clone();
        assert!(!m.is_joint() && m.voters.len() == 5, "node {id}: {m:?}");
    }
    let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|&i| i != leader).collect();
    let (s, p) = (others[0], others[1]);
    // s restarts: its log is intact, its commit index is older than the change.
    let mut hs = c.hard[&s];
    hs.commit = 1;
    c.hard.insert(s, hs);
    let mut config = Config::new(s, ids.clone());
    configure(&mut config);
    c.restart(s, config).expect("restart");
    // Partition {s, p} | {leader, 4, 5}: the old leader keeps a majority of the five.
    let a: BTreeSet<NodeId> = [s, p].into_iter().collect();
    for _ in 0..100 {
        tick_split(&mut c, &a);
        if c.node(s).role() == Role::Leader {
            break;
        }
    }
    let _ = c.node(leader).propose(Bytes::from_static(b"b"));
    for _ in 0..10 {
        tick_split(&mut c, &a); // check_state_machine_safety panics on divergence
    }
    assert!(
        !(c.node(s).role() == Role::Leader && c.node(leader).role() == Role::Leader),
        "two leaders on disjoint sides: {s} (term {}) and {leader} (term {})",
        c.node(s).term(),
        c.node(leader).term()
    );
}

/// The leader's own "leave the joint configuration" entry goes in even while a leadership
/// transfer is under way.
#[test]
fn the_leader_leaves_the_joint_configuration_even_if_a_transfer_was_under_way() {
    let ids: Vec<NodeId> = (1..=4).collect();
    let mut c = Cluster::new(&ids, |config| {
        config.voters = vec![1, 2, 3];
        config.peers = (1..=4).collect();
    });
    let leader = c.elect();
    let target = [1, 2, 3]
        .into_iter()
        .find(|&i| i != leader)
        .expect("a follower");
    c.isolated.insert(target);
    c.node(leader)
        .propose_conf_change(&ConfChange::single(ChangeKind::AddLearner, 4))
        .expect("joint");
    c.node(leader).transfer_leader(target).expect("transfer");
    c.tick_all(100);
    assert_eq!(c.leader(), Some(leader));
    let m = c.node(leader).membership().clone();
    assert!(!m.is_joint(), "still joint after 100 ticks: {m:?}");
}

/// A membership change's context (here a new member's address) reaches every member through
/// the log byte for byte, and means nothing to the core.
#[test]
fn a_membership_changes_context_reaches_every_member_as_is() {
    use prost::Message as _;
    use strata_raft_log::EntryKind;

    let ids: Vec<NodeId> = (1..=4).collect();
    let mut c = Cluster::new(&ids, |config| {
        config.voters = vec![1, 2, 3];
        config.peers = (1..=4).collect();
    });
    let leader = c.elect();
    let address = Bytes::from_static(b"10.0.0.4:7000\x00\xff");
    c.node(leader)
        .propose_conf_change(
            &ConfChange::single(ChangeKind::AddLearner, 4).with_context(address.clone()),
        )
        .expect("change");
    c.tick_all(5);
    for id in ids {
        let contexts: Vec<Bytes> = c.applied[&id]
            .iter()
            .filter(|e| e.kind == EntryKind::ConfChange as i32)
            .filter_map(|e| ConfChange::decode(e.data.as_ref()).ok())
            .filter(|cc| !cc.changes.is_empty())
            .map(|cc| cc.context)
            .collect();
        assert_eq!(contexts, vec![address.clone()], "node {id}");
        assert!(c.node(id).membership().learners.contains(&4), "node {id}");
    }
}
