//! One simulation run: the seed's choices of protocol options and faults, the clients, and
//! the checks after every step.

use std::collections::BTreeMap;

use bytes::Bytes;
use strata_raft_log::{Entry, EntryKind};

use super::checks::{check_leader_completeness, check_log_matching};
use super::cluster::{decode_put, encode_put, log_of};
use super::linearizability::{self, Op, Operation};
use super::{Cluster, SimRng, SnapshotPolicy};
use crate::{Change, ChangeKind, ConfChange, Config, NodeId, Role, Storage};

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
    /// Let the seed pick snapshot settings (small thresholds, compaction overheads, chunk
    /// sizes and windows; a quarter of seeds take none).
    pub snapshots: bool,
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
            snapshots: true,
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
    /// Snapshots taken.
    pub snapshots_taken: usize,
    /// Snapshots installed from a leader.
    pub snapshots_installed: usize,
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
    // Snapshots: small thresholds, so that followers often need one; chunks of a few bytes,
    // so that a transfer takes many.
    let policy = if options.snapshots && rng.chance(75) {
        SnapshotPolicy {
            every: 3 + rng.below(40),
            compaction_overhead: rng.below(8),
            filler: rng.below(1000) as usize,
        }
    } else {
        SnapshotPolicy::default()
    };
    let chunk_bytes = [32, 64, 256, 1024][rng.below(4) as usize];
    let snapshot_window = 1 + rng.below(4) as usize;
    let configure = move |config: &mut Config| {
        config.voters.clone_from(&initial);
        config.peers.clone_from(&peers);
        config.pre_vote = pre_vote;
        config.check_quorum = check_quorum;
        config.max_inflight_msgs = window;
        config.snapshot_chunk_bytes = chunk_bytes;
        config.max_snapshot_inflight = snapshot_window;
    };
    let mut c = Cluster::new(&ids, |config: &mut Config| {
        configure(config);
        config.seed = seed ^ config.id;
    });
    c.snapshots = policy;
    // Persisting takes time: a crash can catch a node with handed-out, unsaved Readies.
    c.defer_saves = true;
    let mut committed: BTreeMap<u64, (Entry, u64)> = BTreeMap::new();
    let mut history: Vec<Operation> = Vec::new();
    let mut pending: Vec<Option<Pending>> = (0..options.clients).map(|_| None).collect();
    // The last applied index whose entry was looked at for answering clients.
    let mut applied_seen: BTreeMap<NodeId, u64> = ids.iter().map(|&id| (id, 0)).collect();
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
            // A crash: the node restarts from what it persisted (its log, hard state and
            // snapshot store), its state machine rebuilt from its snapshot and log; messages
            // to it and its clients' answers are lost. Half the time, when there is one, the
            // crash hits a node in the middle of a snapshot transfer (sending or receiving)
            // or with an installed snapshot not yet persisted into its log.
            let busy: Vec<NodeId> = ids
                .iter()
                .copied()
                .filter(|id| {
                    c.stores[id].staging.is_some()
                        || c.unsaved
                            .get(id)
                            .is_some_and(|u| u.iter().any(|r| r.snapshot.is_some()))
                        || c.nodes[id].status().matched.len() > 1
                            && c.nodes[id].snapshots_in_use().len() > 1
                })
                .collect();
            let id = if !busy.is_empty() && rng.chance(50) {
                busy[rng.below(busy.len() as u64) as usize]
            } else {
                ids[rng.below(all) as usize]
            };
            let mut config = Config::new(id, ids.clone());
            configure(&mut config);
            config.seed = seed ^ id ^ (step as u64) << 8;
            c.restart(id, config)?;
            applied_seen.insert(id, 0);
            reads_seen.insert(id, 0);
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
        // Answer clients from what each node applied (its key-value state is `c.kv`).
        for &id in &ids {
            let applied = &c.applied[&id];
            let seen = applied_seen[&id];
            for e in applied.iter().filter(|e| e.index > seen) {
                if e.kind != EntryKind::Normal as i32 {
                    continue;
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
            applied_seen.insert(id, c.digest[&id].0);
            for r in &c.reads[&id][reads_seen[&id]..] {
                confirmed.insert((id, r.context.clone()), r.index);
            }
            reads_seen.insert(id, c.reads[&id].len());
        }
        for p in &mut pending {
            if let Some(Pending::Get { node, context, op }) = p
                && let Some(&index) = confirmed.get(&(*node, context.clone()))
            {
                let applied_to = c.digest[node].0;
                if applied_to >= index {
                    let key = history[*op].key;
                    history[*op].op = Op::Get(c.kv[node].get(&key).copied());
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
                    "{:?} t{} c{} applied {} snapshot {} first {} last {} matched {:?} voters {:?} outgoing {:?} learners {:?} log {:?}",
                    node.role(),
                    node.term(),
                    node.commit(),
                    node.status().applied,
                    node.status().snapshot,
                    node.storage().first_index(),
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
    report.snapshots_installed = c.snapshot_counts.0;
    report.snapshots_taken = c.snapshot_counts.1;
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
