//! A deterministic in-memory cluster for the core's tests: nodes persist to `MemStorage`,
//! messages go through a queue that tests can drop from or partition, and every step checks
//! election safety and state machine safety.

#![allow(dead_code)] // Each test file uses part of it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use strata_raft::{Config, MemStorage, Message, NodeId, Raft, ReadState, Role};
use strata_raft_log::{Entry, HardState};

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Raft<MemStorage>>,
    pub hard: BTreeMap<NodeId, HardState>,
    pub queue: VecDeque<Message>,
    /// Nodes whose messages (both ways) are dropped.
    pub isolated: BTreeSet<NodeId>,
    /// What each node applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// The leader seen in each term (election safety: at most one).
    pub leaders: BTreeMap<u64, NodeId>,
}

impl Cluster {
    pub fn new(ids: &[NodeId], configure: impl Fn(&mut Config)) -> Self {
        Self::with_logs(ids, configure, |_| {
            (MemStorage::default(), HardState::default())
        })
    }

    pub fn with_logs(
        ids: &[NodeId],
        configure: impl Fn(&mut Config),
        initial: impl Fn(NodeId) -> (MemStorage, HardState),
    ) -> Self {
        let mut nodes = BTreeMap::new();
        let mut hard = BTreeMap::new();
        for &id in ids {
            let mut config = Config::new(id, ids.to_vec());
            configure(&mut config);
            let (storage, hs) = initial(id);
            nodes.insert(id, Raft::new(config, storage, hs).expect("config"));
            hard.insert(id, hs);
        }
        Self {
            nodes,
            hard,
            queue: VecDeque::new(),
            isolated: BTreeSet::new(),
            applied: ids.iter().map(|&id| (id, Vec::new())).collect(),
            reads: ids.iter().map(|&id| (id, Vec::new())).collect(),
            leaders: BTreeMap::new(),
        }
    }

    pub fn node(&mut self, id: NodeId) -> &mut Raft<MemStorage> {
        self.nodes.get_mut(&id).expect("a node")
    }

    /// Handles every node's `Ready` (persisting instantly), queueing their messages.
    pub fn ready_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = self.nodes.get_mut(&id).expect("node");
            while node.has_ready() {
                let ready = node.ready().expect("ready");
                if let Some(hs) = ready.hard_state {
                    self.hard.insert(id, hs);
                }
                node.storage_mut().append(&ready.entries);
                self.queue.extend(ready.messages.iter().cloned());
                self.queue.extend(ready.persisted_messages.iter().cloned());
                self.applied
                    .get_mut(&id)
                    .expect("node")
                    .extend(ready.committed_entries.iter().cloned());
                self.reads
                    .get_mut(&id)
                    .expect("node")
                    .extend(ready.read_states.iter().cloned());
                node.advance(&ready);
            }
            if node.role() == Role::Leader {
                let term = node.term();
                let seen = *self.leaders.entry(term).or_insert(id);
                assert_eq!(
                    seen, id,
                    "two leaders in term {term} (election safety, §5.2)"
                );
            }
        }
        self.check_state_machine_safety();
    }

    /// Every node applied a prefix of the same sequence (§5.4.3).
    pub fn check_state_machine_safety(&self) {
        let longest = self
            .applied
            .values()
            .max_by_key(|a| a.len())
            .cloned()
            .unwrap_or_default();
        for (id, applied) in &self.applied {
            assert_eq!(
                applied[..],
                longest[..applied.len()],
                "node {id} applied a different sequence (state machine safety, §5.4.3)"
            );
        }
    }

    /// Delivers one queued message (dropping it if either end is isolated).
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.queue.pop_front() else {
            return false;
        };
        if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
            return true;
        }
        if let Some(node) = self.nodes.get_mut(&m.to) {
            let _ = node.step(m);
        }
        true
    }

    /// Runs until no node has anything to do and no message is queued.
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            self.ready_all();
            if self.queue.is_empty() {
                return;
            }
            while self.deliver_one() {}
        }
        panic!("the cluster did not settle");
    }

    pub fn tick(&mut self, id: NodeId) {
        self.node(id).tick();
        self.settle();
    }

    pub fn tick_all(&mut self, times: usize) {
        for _ in 0..times {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.node(id).tick();
            }
            self.settle();
        }
    }

    /// The leader with the highest term, among nodes not isolated.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(id, n)| n.role() == Role::Leader && !self.isolated.contains(id))
            .max_by_key(|(_, n)| n.term())
            .map(|(id, _)| *id)
    }

    /// Ticks everyone until there is a leader.
    pub fn elect(&mut self) -> NodeId {
        for _ in 0..1000 {
            if let Some(id) = self.leader() {
                return id;
            }
            self.tick_all(1);
        }
        panic!("no leader elected");
    }

    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> u64 {
        let index = self
            .node(id)
            .propose(Bytes::copy_from_slice(data))
            .expect("propose");
        self.settle();
        index
    }

    /// The commands (non-empty entries) node `id` applied.
    pub fn commands(&self, id: NodeId) -> Vec<Bytes> {
        self.applied[&id]
            .iter()
            .filter(|e| !e.data.is_empty())
            .map(|e| e.data.clone())
            .collect()
    }
}

/// A log with the given terms at indexes 1, 2, ...
pub fn log_with_terms(terms: &[u64]) -> MemStorage {
    MemStorage {
        entries: terms
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                Entry::new(
                    t,
                    i as u64 + 1,
                    strata_raft_log::EntryKind::Normal,
                    Bytes::from(format!("{i}@{t}")),
                )
            })
            .collect(),
        compacted: (0, 0),
    }
}
