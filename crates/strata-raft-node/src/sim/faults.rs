//! The faults the seed injects besides message loss and duplication (which happen as
//! messages are delivered): partitions and crash-restarts.

use super::Sim;
use super::clients::Pending;
use strata_raft::{Config, NodeId};

impl Sim<'_> {
    /// A fault: a node is cut off, or one cut off rejoins (at most a minority is cut off).
    pub(super) fn partition(&mut self) {
        let Self {
            cluster: c,
            rng,
            options,
            ids,
            ..
        } = self;
        let all = ids.len() as u64;
        let id = ids[rng.below(all) as usize];
        let minority = (options.nodes as usize - 1) / 2;
        if !c.isolated.remove(&id) && c.isolated.len() < minority {
            c.isolated.insert(id);
        }
    }

    /// A crash: the node restarts from what it persisted (its log, hard state and snapshot
    /// store), its state machine rebuilt from its snapshot and log; messages to it and its
    /// clients' answers are lost. Half the time, when there is one, the crash hits a node in
    /// the middle of a snapshot transfer (sending or receiving) or with an installed snapshot
    /// not yet persisted into its log.
    ///
    /// # Errors
    ///
    /// If the core refuses the restart.
    pub(super) fn crash(&mut self) -> Result<(), String> {
        let Self {
            cluster: c,
            rng,
            options,
            ids,
            protocol,
            step,
            applied_seen,
            reads_seen,
            pending,
            ..
        } = self;
        let seed = options.seed;
        let all = ids.len() as u64;
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
        protocol.configure(&mut config);
        config.seed = seed ^ id ^ (*step as u64) << 8;
        c.restart(id, config)?;
        applied_seen.insert(id, 0);
        reads_seen.insert(id, 0);
        for p in pending.iter_mut() {
            let at_node = match p {
                Some(Pending::Put { node, .. } | Pending::Get { node, .. }) => *node == id,
                None => false,
            };
            if at_node {
                // Never answered: a put may or may not have happened.
                *p = None;
            }
        }
        Ok(())
    }
}
