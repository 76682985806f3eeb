//! The safety properties checked over the whole cluster: log matching and leader
//! completeness (election safety and state machine safety are checked by the `Cluster` as
//! it goes).

use std::collections::BTreeMap;

use strata_raft_log::Entry;

use super::cluster::log_of;
use super::{Cluster, Sim};
use strata_raft::{NodeId, Role, Storage};

/// §5.3: if two logs have an entry with the same index and term, they are identical up to it.
pub(super) fn check_log_matching(c: &Cluster, seed: u64) -> Result<(), String> {
    let logs: Vec<(NodeId, Vec<Entry>)> = c.nodes.iter().map(|(id, n)| (*id, log_of(n))).collect();
    for (a, la) in &logs {
        for (b, lb) in &logs {
            if a >= b {
                continue;
            }
            // Compare over the indexes both still hold (snapshots compact the start).
            let (Some(fa), Some(fb)) = (la.first(), lb.first()) else {
                continue;
            };
            let start = fa.index.max(fb.index);
            let la = &la[usize::try_from(start - fa.index)
                .unwrap_or(usize::MAX)
                .min(la.len())..];
            let lb = &lb[usize::try_from(start - fb.index)
                .unwrap_or(usize::MAX)
                .min(lb.len())..];
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
pub(super) fn check_leader_completeness(
    c: &Cluster,
    committed: &BTreeMap<u64, (Entry, u64)>,
    seed: u64,
) -> Result<(), String> {
    for (id, node) in &c.nodes {
        if node.role() != Role::Leader {
            continue;
        }
        let log = log_of(node);
        // Entries before the log's start are in the leader's snapshot (checked when taken
        // or installed).
        let first = node.storage().first_index();
        for (index, (entry, committed_in)) in committed.range(first..) {
            let at = usize::try_from(index - first).unwrap_or(usize::MAX);
            if *committed_in < node.term() && log.get(at) != Some(entry) {
                return Err(format!(
                    "seed {seed}: leader {id} (term {}) lacks committed entry {index} (term {}); it has {:?} (leader completeness, §5.4)",
                    node.term(),
                    entry.term,
                    log.get(at).map(|e| e.term),
                ));
            }
        }
    }
    Ok(())
}

impl Sim<'_> {
    /// The checks after every step: every node's durable commits agree, leader completeness,
    /// and log matching every 25 steps; once healing, whether every member caught up.
    pub(super) fn check(&mut self, healing: bool) -> Result<(), String> {
        let seed = self.options.seed;
        self.check_commits()?;
        // The trace shows this step's changes before a check below fails on them.
        self.trace_changes();
        if healing {
            // Every member of the current configuration (the latest leader's) catches up.
            let c = &self.cluster;
            let leader = c
                .nodes
                .values()
                .filter(|n| n.role() == Role::Leader)
                .max_by_key(|n| n.term());
            self.caught_up = leader.is_some_and(|l| {
                let target = l.commit();
                l.membership()
                    .all_voters()
                    .iter()
                    .chain(&l.membership().learners)
                    .all(|id| c.hard.get(id).is_some_and(|h| h.commit >= target))
            });
        }
        check_leader_completeness(&self.cluster, &self.committed, seed)?;
        if self.step.is_multiple_of(25) {
            check_log_matching(&self.cluster, seed)?;
            check_leader_completeness(&self.cluster, &self.committed, seed)?;
        }
        Ok(())
    }

    /// What each node has durably committed is what the others committed at the same
    /// indexes (state machine safety); also notes the highest term.
    fn check_commits(&mut self) -> Result<(), String> {
        let Self {
            cluster: c,
            options,
            committed,
            report,
            ..
        } = self;
        let seed = options.seed;
        for (id, node) in &c.nodes {
            report.term_max = report.term_max.max(node.term());
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
        Ok(())
    }
}
