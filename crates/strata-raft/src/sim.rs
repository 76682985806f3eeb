//! Deterministic simulation: a cluster of cores in memory, where one seed decides everything
//! (the clock with drift, message loss, duplication and reordering, partitions, persists that
//! take time, crashes that lose what was not yet persisted, restarts, and client requests),
//! checked against Raft's safety properties (election safety and state machine safety after
//! every step, leader completeness every step, log matching every 25 steps), then healed:
//! every node must catch up and a client operation must complete (liveness), and the
//! clients' history must be linearizable. The seed also picks pre-vote, check-quorum and the
//! in-flight window.
//!
//! `cargo xtask sim` runs it over many seeds; a failure names its seed, and
//! `cargo xtask sim --seed N` replays it exactly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use strata_raft_log::{Entry, EntryKind, HardState};

use crate::linearizability::{self, Op, Operation};
use crate::{
    Change, ChangeKind, ConfChange, Config, MemStorage, Message, NodeId, Raft, ReadState, Role,
    Storage,
};

/// Nodes, their persisted state, the network queue, and what each node applied.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes.
    pub nodes: BTreeMap<NodeId, Raft<MemStorage>>,
    /// Each node's last persisted hard state (a restart starts from it).
    pub hard: BTreeMap<NodeId, HardState>,
    /// Messages in flight.
    pub queue: VecDeque<Message>,
    /// Nodes whose messages (both ways) are dropped.
    pub isolated: BTreeSet<NodeId>,
    /// What each node applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Reads each node confirmed.
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// The leader seen in each term (election safety: at most one).
    pub leaders: BTreeMap<u64, NodeId>,
    /// With this set, a node's `Ready` is persisted later, by [`save_one`](Self::save_one):
    /// until then its `persisted_messages` are held back, and a crash loses it.
    pub defer_saves: bool,
    /// Readies handed out and not yet persisted, per node, oldest first.
    pub unsaved: BTreeMap<NodeId, VecDeque<crate::Ready>>,
}

impl Cluster {
    /// A cluster of fresh nodes, each configured by `configure`.
    pub fn new(ids: &[NodeId], configure: impl Fn(&mut Config)) -> Self {
        Self::with_logs(ids, configure, |_| {
            (MemStorage::default(), HardState::default())
        })
    }

    /// A cluster whose nodes start from the given logs and hard states.
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
            defer_saves: false,
            unsaved: BTreeMap::new(),
        }
    }

    /// Node `id`.
    ///
    /// # Panics
    ///
    /// If there is no such node.
    pub fn node(&mut self, id: NodeId) -> &mut Raft<MemStorage> {
        self.nodes.get_mut(&id).expect("a node")
    }

    /// Handles every node's `Ready` (persisting at once), queueing their messages, and checks
    /// election safety and state machine safety.
    ///
    /// # Panics
    ///
    /// When a property does not hold.
    pub fn ready_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            while self.nodes.get(&id).is_some_and(Raft::has_ready) {
                let ready = self.node(id).ready().expect("ready");
                // What needs no persist goes at once.
                self.queue.extend(ready.messages.iter().cloned());
                self.unsaved.entry(id).or_default().push_back(ready);
                if !self.defer_saves {
                    self.save_one(id);
                }
            }
            let node = self.nodes.get_mut(&id).expect("node");
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

    /// Persists node `id`'s oldest unsaved `Ready`: storage and hard state, then its
    /// `persisted_messages`, committed entries and reads, then `advance`. False if none.
    ///
    /// # Panics
    ///
    /// If there is no such node.
    pub fn save_one(&mut self, id: NodeId) -> bool {
        let Some(ready) = self.unsaved.get_mut(&id).and_then(VecDeque::pop_front) else {
            return false;
        };
        let node = self.nodes.get_mut(&id).expect("node");
        node.storage_mut().append(&ready.entries);
        if let Some(hs) = ready.hard_state {
            self.hard.insert(id, hs);
        }
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
        true
    }

    /// Every node applied a prefix of the same sequence (§5.4.3).
    ///
    /// # Panics
    ///
    /// When two nodes applied different sequences.
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

    /// Delivers one queued message (dropping it if either end is isolated); false if none.
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
    ///
    /// # Panics
    ///
    /// If the cluster keeps exchanging messages forever.
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

    /// Ticks node `id`, then settles.
    pub fn tick(&mut self, id: NodeId) {
        self.node(id).tick();
        self.settle();
    }

    /// Ticks every node `times` times, settling after each round.
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
    ///
    /// # Panics
    ///
    /// If no leader emerges within 1000 rounds.
    pub fn elect(&mut self) -> NodeId {
        for _ in 0..1000 {
            if let Some(id) = self.leader() {
                return id;
            }
            self.tick_all(1);
        }
        panic!("no leader elected");
    }

    /// Proposes `data` at node `id` and settles; the entry's index.
    ///
    /// # Panics
    ///
    /// If the node refuses.
    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> u64 {
        let index = self
            .node(id)
            .propose(Bytes::copy_from_slice(data))
            .expect("propose");
        self.settle();
        index
    }

    /// The commands (non-empty normal entries) node `id` applied.
    pub fn commands(&self, id: NodeId) -> Vec<Bytes> {
        self.applied[&id]
            .iter()
            .filter(|e| !e.data.is_empty() && e.kind == EntryKind::Normal as i32)
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
                    EntryKind::Normal,
                    Bytes::from(format!("{i}@{t}")),
                )
            })
            .collect(),
        compacted: (0, 0),
    }
}

/// What one simulation does.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Decides everything.
    pub seed: u64,
    /// Cluster size.
    pub nodes: u64,
    /// Steps to run before healing and the final checks.
    pub steps: usize,
    /// Percent of delivered messages lost.
    pub drop_percent: u64,
    /// Percent of delivered messages delivered twice.
    pub duplicate_percent: u64,
    /// Percent of steps that cut a node off or heal one.
    pub partition_percent: u64,
    /// Percent of steps that crash a node (it restarts at once from what it persisted).
    pub crash_percent: u64,
    /// Concurrent clients.
    pub clients: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: 3,
            steps: 2000,
            drop_percent: 10,
            duplicate_percent: 5,
            partition_percent: 3,
            crash_percent: 1,
            clients: 3,
        }
    }
}

/// What a simulation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Entries committed.
    pub committed: usize,
    /// Client operations that completed.
    pub completed: usize,
    /// Client operations invoked.
    pub invoked: usize,
    /// The highest term reached.
    pub max_term: u64,
    /// Membership changes committed (entering and leaving joint configurations).
    pub membership_changes: usize,
}

/// The simulator's random source: xorshift, from the seed.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True `percent` percent of the time.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The key-value command in an entry: key and value, 8 bytes each.
fn encode_put(key: u64, value: u64) -> Bytes {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
    Bytes::from(out)
}

fn decode_put(data: &[u8]) -> Option<(u64, u64)> {
    let key = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    let value = u64::from_le_bytes(data.get(8..16)?.try_into().ok()?);
    Some((key, value))
}

#[derive(Debug)]
enum Pending {
    Put {
        node: NodeId,
        index: u64,
        value: u64,
        op: usize,
    },
    Get {
        node: NodeId,
        context: Bytes,
        op: usize,
    },
}

fn log_of(node: &Raft<MemStorage>) -> Vec<Entry> {
    let s = node.storage();
    if s.last_index() < s.first_index() {
        return Vec::new();
    }
    s.entries(s.first_index(), s.last_index() + 1, usize::MAX)
        .unwrap_or_default()
}

/// §5.3: if two logs have an entry with the same index and term, they are identical up to it.
fn check_log_matching(c: &Cluster, seed: u64) -> Result<(), String> {
    let logs: Vec<(NodeId, Vec<Entry>)> = c.nodes.iter().map(|(id, n)| (*id, log_of(n))).collect();
    for (a, la) in &logs {
        for (b, lb) in &logs {
            if a >= b {
                continue;
            }
            let common = la.len().min(lb.len());
            if let Some(last) = (0..common).rev().find(|&i| la[i].term == lb[i].term)
                && la[..=last] != lb[..=last]
            {
                return Err(format!(
                    "seed {seed}: logs of {a} and {b} differ before a matching entry (log matching, §5.3)"
                ));
            }
        }
    }
    Ok(())
}

/// §5.4: a leader holds every entry committed in an earlier term. `committed` maps each
/// committed index to its entry and the term in which it was first seen committed.
fn check_leader_completeness(
    c: &Cluster,
    committed: &BTreeMap<u64, (Entry, u64)>,
    seed: u64,
) -> Result<(), String> {
    for (id, node) in &c.nodes {
        if node.role() != Role::Leader {
            continue;
        }
        let log = log_of(node);
        for (index, (entry, committed_in)) in committed {
            let at = usize::try_from(*index).unwrap_or(usize::MAX);
            if *committed_in < node.term() && log.get(at.wrapping_sub(1)) != Some(entry) {
                return Err(format!(
                    "seed {seed}: leader {id} (term {}) lacks committed entry {index} (term {}); it has {:?} (leader completeness, §5.4)",
                    node.term(),
                    entry.term,
                    log.get(at.wrapping_sub(1)).map(|e| e.term),
                ));
            }
        }
    }
    Ok(())
}

/// Runs one simulation.
///
/// # Errors
///
/// A description naming the seed and the property that failed (election safety and state
/// machine safety failures panic from inside [`Cluster::ready_all`] with the same details).
pub fn run(options: &SimOptions) -> Result<SimReport, String> {
    run_traced(options, None)
}

/// [`run`], giving `trace` a line whenever a node's role, term, commit index, configuration
/// or log changes (for replaying a failing seed).
///
/// # Errors
///
/// As [`run`].
pub fn run_traced(
    options: &SimOptions,
    mut trace: Option<&mut dyn FnMut(&str)>,
) -> Result<SimReport, String> {
    let seed = options.seed;
    // The cluster starts with `nodes` voters; two more nodes start outside it, for
    // membership changes to add (and any member may be removed).
    let initial: Vec<NodeId> = (1..=options.nodes).collect();
    let ids: Vec<NodeId> = (1..=options.nodes + 2).collect();
    let all = ids.len() as u64;
    let mut rng = SimRng::new(seed);
    // The seed also picks the protocol options, so that every combination is exercised.
    let (pre_vote, check_quorum) = (rng.chance(50), rng.chance(50));
    // A small in-flight window half the time, so that lost appends fill it.
    let window = if rng.chance(50) { 4 } else { 256 };
    let peers = ids.clone();
    let configure = move |config: &mut Config| {
        config.voters.clone_from(&initial);
        config.peers.clone_from(&peers);
        config.pre_vote = pre_vote;
        config.check_quorum = check_quorum;
        config.max_inflight_msgs = window;
    };
    let mut c = Cluster::new(&ids, |config: &mut Config| {
        configure(config);
        config.seed = seed ^ config.id;
    });
    // Persisting takes time: a crash can catch a node with handed-out, unsaved Readies.
    c.defer_saves = true;
    let mut committed: BTreeMap<u64, (Entry, u64)> = BTreeMap::new();
    let mut history: Vec<Operation> = Vec::new();
    let mut pending: Vec<Option<Pending>> = (0..options.clients).map(|_| None).collect();
    let mut kv: BTreeMap<NodeId, BTreeMap<u64, u64>> =
        ids.iter().map(|&id| (id, BTreeMap::new())).collect();
    let mut applied_seen: BTreeMap<NodeId, usize> = ids.iter().map(|&id| (id, 0)).collect();
    let mut reads_seen: BTreeMap<NodeId, usize> = ids.iter().map(|&id| (id, 0)).collect();
    let mut confirmed: BTreeMap<(NodeId, Bytes), u64> = BTreeMap::new();
    let mut next_value = 0u64;
    let mut now = 0u64;
    let mut report = SimReport::default();
    let mut traced: BTreeMap<NodeId, String> = BTreeMap::new();
    let total_steps = options.steps;
    // After the faults, the healed cluster runs until a client operation completes (at least
    // 400 steps, at most 20,000): one that never does is a liveness failure.
    let mut completed_after_healing = false;
    // ... and every node has caught up with the commit index.
    let mut caught_up = false;
    let mut step = 0;
    while step < total_steps + 400
        || (!(completed_after_healing && caught_up) && step < total_steps + 20_000)
    {
        step += 1;
        now += 1;
        let healing = step >= total_steps;
        if healing {
            c.isolated.clear();
        }
        let roll = rng.below(100);
        if roll < 30 {
            // Time passes: each node's clock ticks, most of the time (clocks drift).
            for &id in &ids {
                if rng.chance(80) {
                    c.node(id).tick();
                }
            }
        } else if roll < 75 {
            // Some messages, more when many wait (a real network's throughput keeps up with
            // heartbeats; one that never did would only show a crawling cluster).
            let burst = rng.below(8) + c.queue.len() as u64 / 8;
            for _ in 0..burst {
                if c.queue.is_empty() {
                    break;
                }
                let at = rng.below(c.queue.len() as u64) as usize;
                let Some(m) = c.queue.remove(at) else { break };
                if !healing && rng.chance(options.drop_percent) {
                    continue;
                }
                if rng.chance(options.duplicate_percent) {
                    c.queue.push_back(m.clone());
                }
                c.queue.push_front(m);
                c.deliver_one();
            }
        } else if roll < 92 {
            // A free client invokes an operation at a node.
            let client = rng.below(options.clients as u64) as usize;
            if pending[client].is_none() {
                let node = ids[rng.below(all) as usize];
                let key = rng.below(4);
                if rng.chance(50) {
                    next_value += 1;
                    let value = next_value;
                    if let Ok(index) = c.node(node).propose(encode_put(key, value)) {
                        history.push(Operation {
                            key,
                            op: Op::Put(value),
                            invoked: now,
                            returned: None,
                        });
                        pending[client] = Some(Pending::Put {
                            node,
                            index,
                            value,
                            op: history.len() - 1,
                        });
                    }
                } else {
                    let context = Bytes::from(format!("{client}:{now}"));
                    if c.node(node).read_index(context.clone()).is_ok() {
                        history.push(Operation {
                            key,
                            op: Op::Get(None),
                            invoked: now,
                            returned: None,
                        });
                        pending[client] = Some(Pending::Get {
                            node,
                            context,
                            op: history.len() - 1,
                        });
                    }
                }
            }
        } else if roll < 92 + options.partition_percent && !healing {
            let id = ids[rng.below(all) as usize];
            let minority = (options.nodes as usize - 1) / 2;
            if !c.isolated.remove(&id) && c.isolated.len() < minority {
                c.isolated.insert(id);
            }
        } else if rng.chance(10) && !healing && pre_vote {
            // A membership change, at the leader: add an outsider (as learner or voter),
            // promote a learner, or remove a voter (keeping at least two). Only with pre-vote:
            // without it, a removed node that missed its removal (or a lagging one with an
            // old configuration) keeps raising its term and can keep deposing leaders, which
            // is what pre-vote exists to prevent.
            let leader = c
                .nodes
                .iter()
                .filter(|(_, n)| n.role() == Role::Leader)
                .max_by_key(|(_, n)| n.term())
                .map(|(id, _)| *id);
            if let Some(leader) = leader {
                let m = c.node(leader).membership().clone();
                let outsiders: Vec<NodeId> =
                    ids.iter().copied().filter(|&id| !m.is_member(id)).collect();
                let learners: Vec<NodeId> = m.learners.iter().copied().collect();
                let voters: Vec<NodeId> = m.voters.iter().copied().collect();
                let pick =
                    |rng: &mut SimRng, from: &[NodeId]| from[rng.below(from.len() as u64) as usize];
                let change = match rng.below(4) {
                    // Replace a voter by an outsider in one change: the old and the new
                    // majorities need not overlap, which only joint consensus makes safe.
                    3 if !outsiders.is_empty() && voters.len() > 1 => Some(ConfChange {
                        changes: vec![
                            Change {
                                kind: ChangeKind::AddVoter as i32,
                                node: pick(&mut rng, &outsiders),
                            },
                            Change {
                                kind: ChangeKind::RemoveNode as i32,
                                node: pick(&mut rng, &voters),
                            },
                        ],
                    }),
                    0 if !outsiders.is_empty() => {
                        let kind = if rng.chance(50) {
                            ChangeKind::AddLearner
                        } else {
                            ChangeKind::AddVoter
                        };
                        Some(ConfChange::single(kind, pick(&mut rng, &outsiders)))
                    }
                    1 if !learners.is_empty() => Some(ConfChange::single(
                        ChangeKind::AddVoter,
                        pick(&mut rng, &learners),
                    )),
                    _ if voters.len() > 2 => Some(ConfChange::single(
                        ChangeKind::RemoveNode,
                        pick(&mut rng, &voters),
                    )),
                    _ => None,
                };
                if let Some(change) = change {
                    let _ = c.node(leader).propose_conf_change(&change);
                }
            }
        } else if rng.chance(options.crash_percent * 20) && !healing {
            // A crash: the node restarts from what it persisted, its state machine rebuilt
            // from the log; messages to it and its clients' answers are lost.
            let id = ids[rng.below(all) as usize];
            let storage = c.node(id).storage().clone();
            let hard = c.hard[&id];
            let mut config = Config::new(id, ids.clone());
            configure(&mut config);
            config.seed = seed ^ id ^ (step as u64) << 8;
            *c.node(id) = Raft::new(config, storage, hard).map_err(|e| e.to_string())?;
            c.unsaved.remove(&id);
            c.applied.insert(id, Vec::new());
            c.reads.insert(id, Vec::new());
            applied_seen.insert(id, 0);
            reads_seen.insert(id, 0);
            kv.insert(id, BTreeMap::new());
            c.queue.retain(|m| m.to != id);
            for p in &mut pending {
                let at_node = match p {
                    Some(Pending::Put { node, .. } | Pending::Get { node, .. }) => *node == id,
                    None => false,
                };
                if at_node {
                    // Never answered: a put may or may not have happened.
                    *p = None;
                }
            }
        }
        c.ready_all();
        // Persists complete, each after a random delay.
        for &id in &ids {
            while rng.chance(60) && c.save_one(id) {}
        }
        c.ready_all();
        // Apply to each node's key-value state; answer clients.
        for &id in &ids {
            let applied = &c.applied[&id];
            let state = kv.get_mut(&id).ok_or("node")?;
            for e in &applied[applied_seen[&id]..] {
                if e.kind != EntryKind::Normal as i32 {
                    continue;
                }
                if let Some((key, value)) = decode_put(&e.data) {
                    state.insert(key, value);
                }
                for p in &mut pending {
                    if let Some(Pending::Put {
                        node,
                        index,
                        value,
                        op,
                    }) = p
                        && *node == id
                        && *index == e.index
                    {
                        if decode_put(&e.data).map(|(_, v)| v) == Some(*value) {
                            history[*op].returned = Some(now);
                            completed_after_healing |= healing;
                        }
                        // Either way the client is done: a different entry at its index
                        // means its proposal was overwritten (never committed).
                        *p = None;
                    }
                }
            }
            applied_seen.insert(id, applied.len());
            for r in &c.reads[&id][reads_seen[&id]..] {
                confirmed.insert((id, r.context.clone()), r.index);
            }
            reads_seen.insert(id, c.reads[&id].len());
        }
        for p in &mut pending {
            if let Some(Pending::Get { node, context, op }) = p
                && let Some(&index) = confirmed.get(&(*node, context.clone()))
            {
                let applied_to = c.applied[node].last().map_or(0, |e| e.index);
                if applied_to >= index {
                    let key = history[*op].key;
                    history[*op].op = Op::Get(kv[node].get(&key).copied());
                    history[*op].returned = Some(now);
                    completed_after_healing |= healing;
                    *p = None;
                }
            }
        }
        // Give up on old requests (their outcome stays unknown).
        for p in &mut pending {
            let op = match p {
                Some(Pending::Put { op, .. } | Pending::Get { op, .. }) => *op,
                None => continue,
            };
            if now - history[op].invoked > 300 {
                *p = None;
            }
        }
        for (id, node) in &c.nodes {
            report.max_term = report.max_term.max(node.term());
            // What the node has durably committed: its persisted commit index over its
            // persisted log (in memory, a commit can already cover entries whose persist,
            // replacing older ones, is still under way).
            let log = log_of(node);
            let durable_commit = c.hard.get(id).map_or(0, |h| h.commit);
            for e in log.iter().take_while(|e| e.index <= durable_commit) {
                match committed.get(&e.index) {
                    Some((prev, _)) if prev != e => {
                        return Err(format!(
                            "seed {seed}: node {id} committed a different entry at {} (state machine safety, §5.4.3)",
                            e.index
                        ));
                    }
                    // Committed no later than the lowest term of any node that has it
                    // committed (a node cannot learn of a commit from a later term without
                    // moving to that term).
                    Some(_) => {
                        if let Some((_, term)) = committed.get_mut(&e.index) {
                            *term = (*term).min(node.term());
                        }
                    }
                    None => {
                        committed.insert(e.index, (e.clone(), node.term()));
                    }
                }
            }
        }
        if let Some(trace) = trace.as_mut() {
            for (id, node) in &c.nodes {
                let m = node.membership();
                let line = format!(
                    "{:?} t{} c{} last {} matched {:?} voters {:?} outgoing {:?} learners {:?} log {:?}",
                    node.role(),
                    node.term(),
                    node.commit(),
                    node.status().last_index,
                    node.status().matched,
                    m.voters,
                    m.outgoing,
                    m.learners,
                    log_of(node).iter().map(|e| e.term).collect::<Vec<_>>()
                );
                if traced.get(id) != Some(&line) {
                    trace(&format!("step {step} node {id}: {line}"));
                    traced.insert(*id, line);
                }
            }
        }
        if healing {
            // Every member of the current configuration (the latest leader's) catches up.
            let leader = c
                .nodes
                .values()
                .filter(|n| n.role() == Role::Leader)
                .max_by_key(|n| n.term());
            caught_up = leader.is_some_and(|l| {
                let target = l.commit();
                l.membership()
                    .all_voters()
                    .iter()
                    .chain(&l.membership().learners)
                    .all(|id| c.hard.get(id).is_some_and(|h| h.commit >= target))
            });
        }
        check_leader_completeness(&c, &committed, seed)?;
        if step % 25 == 0 {
            check_log_matching(&c, seed)?;
            check_leader_completeness(&c, &committed, seed)?;
        }
    }
    check_log_matching(&c, seed)?;
    check_leader_completeness(&c, &committed, seed)?;
    if let Err((key, ops)) = linearizability::check(&history) {
        return Err(format!(
            "seed {seed}: the history of key {key} is not linearizable: {ops:?}"
        ));
    }
    report.committed = committed.len();
    report.membership_changes = committed
        .values()
        .filter(|(e, _)| e.kind == EntryKind::ConfChange as i32)
        .count();
    report.invoked = history.len();
    report.completed = history.iter().filter(|o| o.returned.is_some()).count();
    if !completed_after_healing {
        return Err(format!(
            "seed {seed}: no client operation completed in the 20,000 steps after healing (liveness)"
        ));
    }
    if !caught_up {
        let commits: Vec<u64> = c.hard.values().map(|h| h.commit).collect();
        return Err(format!(
            "seed {seed}: not every node caught up with the commit index within 20,000 steps after healing: {commits:?} (liveness)"
        ));
    }
    Ok(report)
}
