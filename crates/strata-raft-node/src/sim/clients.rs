//! The simulated clients: each invokes puts (proposals), gets (ReadIndex reads) and
//! membership changes at the nodes, and is answered from what the node applied, building the
//! history that is checked for linearizability.

use bytes::Bytes;
use strata_raft_log::EntryKind;

use super::cluster::{decode_put, encode_put};
use super::linearizability::{Op, Operation};
use super::{Sim, SimRng};
use strata_raft::{Change, ChangeKind, ConfChange, NodeId, Role};

/// A client's operation waiting for its answer.
#[derive(Debug)]
pub(super) enum Pending {
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

impl Sim<'_> {
    /// A free client invokes an operation at a node: a put (a proposal) or a get (a
    /// ReadIndex read).
    pub(super) fn client_request(&mut self) {
        let Self {
            cluster: c,
            rng,
            options,
            ids,
            history,
            pending,
            next_value,
            now,
            ..
        } = self;
        let all = ids.len() as u64;
        let client = rng.below(options.clients as u64) as usize;
        if pending[client].is_none() {
            let node = ids[rng.below(all) as usize];
            let key = rng.below(4);
            if rng.chance(50) {
                *next_value += 1;
                let value = *next_value;
                if let Ok(index) = c.node(node).propose(encode_put(key, value)) {
                    history.push(Operation {
                        key,
                        op: Op::Put(value),
                        invoked: *now,
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
                        invoked: *now,
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
    }

    /// A membership change, at the leader: add an outsider (as learner or voter), promote a
    /// learner, or remove a voter (keeping at least two). Only with pre-vote: without it, a
    /// removed node that missed its removal (or a lagging one with an old configuration)
    /// keeps raising its term and can keep deposing leaders, which is what pre-vote exists to
    /// prevent.
    pub(super) fn membership_request(&mut self) {
        let Self {
            cluster: c,
            rng,
            ids,
            ..
        } = self;
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
                            node: pick(rng, &outsiders),
                        },
                        Change {
                            kind: ChangeKind::RemoveNode as i32,
                            node: pick(rng, &voters),
                        },
                    ],
                    ..ConfChange::default()
                }),
                0 if !outsiders.is_empty() => {
                    let kind = if rng.chance(50) {
                        ChangeKind::AddLearner
                    } else {
                        ChangeKind::AddVoter
                    };
                    Some(ConfChange::single(kind, pick(rng, &outsiders)))
                }
                1 if !learners.is_empty() => Some(ConfChange::single(
                    ChangeKind::AddVoter,
                    pick(rng, &learners),
                )),
                _ if voters.len() > 2 => Some(ConfChange::single(
                    ChangeKind::RemoveNode,
                    pick(rng, &voters),
                )),
                _ => None,
            };
            if let Some(change) = change {
                let _ = c.node(leader).propose_conf_change(&change);
            }
        }
    }

    /// Clients get their answers from what each node applied (its key-value state is the
    /// cluster's `kv`) and the reads it confirmed; requests left unanswered too long are given
    /// up on.
    pub(super) fn answer_clients(&mut self, healing: bool) {
        let Self {
            cluster: c,
            ids,
            history,
            pending,
            applied_seen,
            reads_seen,
            confirmed,
            now,
            completed_after_healing,
            ..
        } = self;
        let now = *now;
        // Answer clients from what each node applied (its key-value state is `c.kv`).
        for &id in ids.iter() {
            let applied = &c.applied[&id];
            let seen = applied_seen[&id];
            for e in applied.iter().filter(|e| e.index > seen) {
                if e.kind != EntryKind::Normal as i32 {
                    continue;
                }
                for p in pending.iter_mut() {
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
                            *completed_after_healing |= healing;
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
        for p in pending.iter_mut() {
            if let Some(Pending::Get { node, context, op }) = p
                && let Some(&index) = confirmed.get(&(*node, context.clone()))
            {
                let applied_to = c.digest[node].0;
                if applied_to >= index {
                    let key = history[*op].key;
                    history[*op].op = Op::Get(c.kv[node].get(&key).copied());
                    history[*op].returned = Some(now);
                    *completed_after_healing |= healing;
                    *p = None;
                }
            }
        }
        // Give up on old requests (their outcome stays unknown).
        for p in pending.iter_mut() {
            let op = match p {
                Some(Pending::Put { op, .. } | Pending::Get { op, .. }) => *op,
                None => continue,
            };
            if now - history[op].invoked > 300 {
                *p = None;
            }
        }
    }
}
