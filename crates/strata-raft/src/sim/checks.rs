//! The safety properties checked over the whole cluster: log matching and leader
//! completeness (election safety and state machine safety are checked by the `Cluster` as
//! it goes).

use std::collections::BTreeMap;

use strata_raft_log::Entry;

use super::Cluster;
use super::cluster::log_of;
use crate::{NodeId, Role, Storage};

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
