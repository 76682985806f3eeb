//! Raft's safety properties under random faults, one seed deciding everything: message loss,
//! duplication and reordering, partitions and healing, crashes and restarts from what was
//! persisted, and proposals at random nodes. After every step: election safety (§5.2), and
//! state machine safety (§5.4.3); every few steps, log matching (§5.3) and leader completeness
//! (§5.4). A failure names its seed.

mod cluster;

use std::collections::BTreeMap;

use bytes::Bytes;
use cluster::Cluster;
use strata_raft::{Config, MemStorage, NodeId, Raft, Role, Storage};
use strata_raft_log::Entry;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn log_of(node: &Raft<MemStorage>) -> Vec<Entry> {
    let s = node.storage();
    if s.last_index() == 0 {
        return Vec::new();
    }
    s.entries(1, s.last_index() + 1, usize::MAX)
        .expect("entries")
}

/// §5.3: if two logs have an entry with the same index and term, they are identical up to it.
fn check_log_matching(c: &Cluster, seed: u64) {
    let logs: Vec<(NodeId, Vec<Entry>)> = c.nodes.iter().map(|(id, n)| (*id, log_of(n))).collect();
    for (a, la) in &logs {
        for (b, lb) in &logs {
            if a >= b {
                continue;
            }
            let common = la.len().min(lb.len());
            if let Some(last_same) = (0..common).rev().find(|&i| la[i].term == lb[i].term) {
                assert_eq!(
                    la[..=last_same],
                    lb[..=last_same],
                    "seed {seed}: logs of {a} and {b} differ before a matching entry (log matching, §5.3)"
                );
            }
        }
    }
}

/// §5.4: a leader holds every entry committed before its term.
fn check_leader_completeness(c: &Cluster, committed: &BTreeMap<u64, Entry>, seed: u64) {
    for (id, node) in &c.nodes {
        if node.role() != Role::Leader {
            continue;
        }
        let log = log_of(node);
        for (index, entry) in committed {
            if entry.term < node.term() {
                let held = log.get(*index as usize - 1);
                assert_eq!(
                    held,
                    Some(entry),
                    "seed {seed}: leader {id} (term {}) lacks committed entry {index} (leader completeness, §5.4)",
                    node.term()
                );
            }
        }
    }
}

fn simulate(seed: u64, nodes: u64, steps: usize) -> usize {
    let ids: Vec<NodeId> = (1..=nodes).collect();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut c = Cluster::new(&ids, |config: &mut Config| {
        config.seed = seed ^ config.id;
    });
    let mut committed: BTreeMap<u64, Entry> = BTreeMap::new();
    let mut proposals = 0u64;
    for step in 0..steps {
        match rng.below(100) {
            // Time passes for one node.
            0..=29 => {
                let id = ids[rng.below(nodes) as usize];
                c.node(id).tick();
            }
            // Messages: delivered in a random order, some lost, some duplicated.
            30..=74 => {
                for _ in 0..rng.below(8) {
                    if c.queue.is_empty() {
                        break;
                    }
                    let at = rng.below(c.queue.len() as u64) as usize;
                    let Some(m) = c.queue.remove(at) else { break };
                    if rng.chance(10) {
                        continue;
                    }
                    if rng.chance(5) {
                        c.queue.push_back(m.clone());
                    }
                    c.queue.push_front(m);
                    c.deliver_one();
                }
            }
            // A client proposes to whoever it thinks leads.
            75..=92 => {
                let id = ids[rng.below(nodes) as usize];
                proposals += 1;
                let _ = c.node(id).propose(Bytes::from(format!("p{proposals}")));
            }
            // Partitions come and go.
            93..=95 => {
                let id = ids[rng.below(nodes) as usize];
                if !c.isolated.remove(&id) && c.isolated.len() < (nodes as usize - 1) / 2 + 1 {
                    c.isolated.insert(id);
                }
            }
            96..=97 => c.isolated.clear(),
            // A node crashes and restarts from what it persisted; in-flight messages to it
            // are lost.
            _ => {
                let id = ids[rng.below(nodes) as usize];
                let storage = c.node(id).storage().clone();
                let hard = c.hard[&id];
                let mut config = Config::new(id, ids.clone());
                config.seed = seed ^ id ^ step as u64;
                *c.node(id) = Raft::new(config, storage, hard).expect("restart");
                c.applied.insert(id, Vec::new());
                c.queue.retain(|m| m.to != id);
            }
        }
        c.ready_all();
        for (id, node) in &c.nodes {
            let log = log_of(node);
            for e in log.iter().take(node.commit() as usize) {
                if let Some(prev) = committed.insert(e.index, e.clone()) {
                    assert_eq!(
                        prev, *e,
                        "seed {seed}: node {id} committed a different entry at {} (state machine safety)",
                        e.index
                    );
                }
            }
        }
        if step % 25 == 0 {
            check_log_matching(&c, seed);
            check_leader_completeness(&c, &committed, seed);
        }
    }
    // Heal everything and let it settle: the cluster must make progress again.
    c.isolated.clear();
    let leader = c.elect();
    c.propose(leader, b"final");
    c.tick_all(5);
    check_log_matching(&c, seed);
    check_leader_completeness(&c, &committed, seed);
    assert!(
        c.commands(leader)
            .last()
            .is_some_and(|d| &d[..] == b"final"),
        "seed {seed}: the healed cluster did not commit"
    );
    committed.len()
}

#[test]
fn safety_holds_under_random_faults_three_nodes() {
    let mut committed = 0;
    for seed in 1..=60 {
        committed += simulate(seed, 3, 1500);
    }
    assert!(committed > 1000, "the runs committed entries ({committed})");
}

#[test]
fn safety_holds_under_random_faults_five_nodes() {
    for seed in 1000..1030 {
        simulate(seed, 5, 1500);
    }
}
