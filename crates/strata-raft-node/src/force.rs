//! [`force_new_cluster`]: a one-member cluster made from a member's own log and snapshots
//! (etcd's `--force-new-cluster`), the way back for a cluster that has lost its quorum for
//! good.
//!
//! Raft cannot remove members without a quorum to commit the change, and a cluster that lost
//! a majority of its members for good has none. Forcing writes the change into one member's
//! log directly, as if a quorum had committed it: the entries that take every other member
//! out, committed by fiat. The member then starts as the only voter, elects itself, and takes
//! new members through ordinary membership changes.
//!
//! What it keeps: every entry of the member's log, committed or not (entries past its commit
//! index may have been committed by the lost majority and acknowledged to clients; a tail that
//! was never committed is committed now, which a client that saw its request time out must
//! allow for anyway). What it cannot give back: writes the lost members had and this one had
//! not. The lost members must never run again with their old data: two of them would still
//! make a majority of the old configuration.

use std::path::Path;
use std::sync::Arc;

use prost::Message as _;
use strata_raft::{Change, ChangeKind, ConfChange, Config, Membership, NodeId, Raft};
use strata_raft_log::{Entry, EntryKind, HardState, RaftLog};
use strata_snapshot::Receiver;

use crate::node::{DriverError, storage_error};

/// What [`force_new_cluster`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forced {
    /// The configuration at the end of the log, before: what every entry in it adds up to.
    pub before: Membership,
    /// The members taken out (voters and learners but this one), ascending; empty when the
    /// node already was the only member.
    pub removed: Vec<NodeId>,
    /// The last index of the log, now committed: the forced change's last entry, or the log's
    /// last entry when nothing had to change.
    pub commit: u64,
    /// The node's term from now on (and the term of the entries written).
    pub term: u64,
}

/// Makes the node `config.id`, whose log is `log` and whose snapshots are in `snapshot_dir`,
/// the only voter of its cluster, before [`RaftNode::start`](crate::RaftNode::start) runs it
/// with the same `config`, `log` and directory.
///
/// The configuration at the end of the log (from the installed snapshot, or `config`'s
/// voters and learners, then every membership change in the log) is left if it is joint,
/// then changed to this node alone: one change that removes every other member (and makes
/// this node a voter, if it was a learner or not a member), and the entry that leaves the
/// joint configuration. They are appended in a new term, voted for by this node, and the
/// whole log is marked committed, durably. Applying them removes the other members from the
/// state machine's view too (they are ordinary [`CommittedKind::Membership`] entries, with
/// no context).
///
/// Forcing a node that already is the only member writes no entry: it commits the log's tail.
///
/// [`CommittedKind::Membership`]: crate::CommittedKind::Membership
///
/// # Errors
///
/// [`DriverError::Invalid`] for a configuration the core refuses; [`DriverError::Storage`]
/// if the log cannot be read or written, or the snapshot store opened.
pub fn force_new_cluster(
    config: &Config,
    log: &Arc<RaftLog>,
    snapshot_dir: &Path,
) -> Result<Forced, DriverError> {
    let snapshot = {
        let store = Receiver::open(snapshot_dir).map_err(storage_error)?;
        store
            .installed()
            .map_err(storage_error)?
            .map(|(meta, _)| meta)
    };
    if let Some(meta) = &snapshot
        && log.term(meta.last_index) != Some(meta.last_term)
    {
        // As `RaftNode::start` would: a crash came between installing it and compacting.
        log.compact(meta.last_index, meta.last_term)
            .map_err(storage_error)?;
    }
    // A core that takes the whole log as applied has applied every membership change in it.
    let mut probe = config.clone();
    probe.applied = log.last_index();
    let hard_state = log.hard_state();
    let before = Raft::with_snapshot(probe, Arc::clone(log), hard_state, snapshot.as_ref())
        .map_err(|e| match e {
            strata_raft::Error::Config(reason) => DriverError::Invalid(reason),
            other => storage_error(other),
        })?
        .membership()
        .clone();

    let id = config.id;
    let mut others: Vec<NodeId> = before
        .voters
        .iter()
        .chain(&before.outgoing)
        .chain(&before.learners)
        .copied()
        .filter(|&n| n != id)
        .collect();
    others.sort_unstable();
    others.dedup();
    // The change out of the joint configuration, if the log ends in one, keeps its incoming
    // voters: only they and the learners are members after it.
    let removed: Vec<NodeId> = others
        .iter()
        .copied()
        .filter(|n| before.voters.contains(n) || before.learners.contains(n))
        .collect();
    let mut changes: Vec<Change> = removed
        .iter()
        .map(|&node| Change {
            kind: ChangeKind::RemoveNode as i32,
            node,
        })
        .collect();
    if !before.voters.contains(&id) {
        changes.push(Change {
            kind: ChangeKind::AddVoter as i32,
            node: id,
        });
    }
    let mut datas = Vec::new();
    if before.is_joint() {
        datas.push(ConfChange::default());
    }
    if !changes.is_empty() {
        datas.push(ConfChange {
            changes,
            ..ConfChange::default()
        });
        datas.push(ConfChange::default());
    }

    let last = log.last_index();
    if datas.is_empty() {
        // Not synced on its own (no commit index is): a lone voter commits its whole log
        // again once it leads.
        log.set_hard_state(HardState {
            commit: last,
            ..hard_state
        })
        .map_err(storage_error)?;
        return Ok(Forced {
            before,
            removed,
            commit: last,
            term: hard_state.term,
        });
    }
    // A term no leader of the old configuration used: nothing it wrote can match these.
    let term = hard_state.term.max(log.last_term()) + 1;
    let entries: Vec<Entry> = (last + 1..)
        .zip(datas)
        .map(|(index, change)| {
            Entry::new(term, index, EntryKind::ConfChange, change.encode_to_vec())
        })
        .collect();
    let commit = last + entries.len() as u64;
    log.append(&entries).map_err(storage_error)?;
    log.sync().map_err(storage_error)?;
    // Term and vote are synced on return; the commit index with them.
    log.set_hard_state(HardState {
        term,
        vote: id,
        commit,
    })
    .map_err(storage_error)?;
    Ok(Forced {
        before,
        removed,
        commit,
        term,
    })
}
