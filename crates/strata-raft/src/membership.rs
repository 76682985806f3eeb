//! Cluster membership with joint consensus (Raft §6 / Ongaro's thesis §4.3): a change moves
//! the cluster into a joint configuration, where every decision needs a majority of both the
//! old and the new voters, and then out of it into the new one.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::message::NodeId;

/// What one change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ChangeKind {
    /// Make the node a voter (a learner is promoted).
    AddVoter = 0,
    /// Make the node a learner: it receives the log, never votes and never counts.
    AddLearner = 1,
    /// Remove the node.
    RemoveNode = 2,
}

/// One change of a [`ConfChange`].
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Change {
    /// What it does; see [`ChangeKind`].
    #[prost(enumeration = "ChangeKind", tag = "1")]
    pub kind: i32,
    /// The node it is about.
    #[prost(uint64, tag = "2")]
    pub node: NodeId,
}

/// A membership change, the data of an entry of kind `ConfChange`. With changes, it enters
/// the joint configuration; without, it leaves it (the leader proposes that itself once the
/// joint configuration is applied).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ConfChange {
    /// The changes, applied together.
    #[prost(message, repeated, tag = "1")]
    pub changes: Vec<Change>,
    /// Opaque to Raft: whatever the members must learn with the change, such as a new
    /// member's network addresses. It travels in the log with the change, so every member
    /// (and every later one, through the log or a snapshot's state machine) reads it from the
    /// committed entry; the core stores it as given and never looks at it.
    #[prost(bytes = "bytes", tag = "2")]
    pub context: Bytes,
}

impl ConfChange {
    /// A change of `kind` for `node`.
    pub fn single(kind: ChangeKind, node: NodeId) -> Self {
        Self {
            changes: vec![Change {
                kind: kind as i32,
                node,
            }],
            context: Bytes::new(),
        }
    }

    /// The same change carrying `context` (see [`ConfChange::context`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use strata_raft::{ChangeKind, ConfChange};
    ///
    /// let change = ConfChange::single(ChangeKind::AddLearner, 4).with_context("10.0.0.4:7000");
    /// assert_eq!(&change.context[..], b"10.0.0.4:7000");
    /// ```
    #[must_use]
    pub fn with_context(mut self, context: impl Into<Bytes>) -> Self {
        self.context = context.into();
        self
    }
}

/// The configuration: voters (and, while joint, the outgoing voters) and learners.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The voters (the incoming ones, while joint).
    pub voters: BTreeSet<NodeId>,
    /// While joint: the voters of the configuration being left. Empty otherwise.
    pub outgoing: BTreeSet<NodeId>,
    /// Non-voting members.
    pub learners: BTreeSet<NodeId>,
}

/// A [`Membership`] as it travels in snapshot metadata
/// ([`SnapshotMeta::membership`](strata_snapshot::SnapshotMeta)).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ConfState {
    /// The voters (the incoming ones, while joint), ascending.
    #[prost(uint64, repeated, tag = "1")]
    pub voters: Vec<NodeId>,
    /// While joint: the outgoing voters, ascending.
    #[prost(uint64, repeated, tag = "2")]
    pub outgoing: Vec<NodeId>,
    /// The learners, ascending.
    #[prost(uint64, repeated, tag = "3")]
    pub learners: Vec<NodeId>,
}

fn majority_met(set: &BTreeSet<NodeId>, yes: &impl Fn(NodeId) -> bool) -> bool {
    set.is_empty() || set.iter().filter(|&&id| yes(id)).count() > set.len() / 2
}

/// The highest index a majority of `set` holds.
fn quorum_index(set: &BTreeSet<NodeId>, matched: &impl Fn(NodeId) -> u64) -> u64 {
    if set.is_empty() {
        return u64::MAX;
    }
    let mut m: Vec<u64> = set.iter().map(|&id| matched(id)).collect();
    m.sort_unstable_by(|a, b| b.cmp(a));
    m[set.len() / 2]
}

impl Membership {
    /// A configuration of `voters` and `learners`.
    pub fn new(voters: &[NodeId], learners: &[NodeId]) -> Self {
        Self {
            voters: voters.iter().copied().collect(),
            outgoing: BTreeSet::new(),
            learners: learners.iter().copied().collect(),
        }
    }

    /// The configuration as snapshot metadata carries it.
    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.iter().copied().collect(),
            outgoing: self.outgoing.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
        }
    }

    /// The configuration a [`ConfState`] describes.
    ///
    /// # Errors
    ///
    /// One without voters, or with node id 0.
    pub fn from_conf_state(cs: &ConfState) -> Result<Self, &'static str> {
        let all = || cs.voters.iter().chain(&cs.outgoing).chain(&cs.learners);
        if cs.voters.is_empty() {
            return Err("a configuration needs a voter");
        }
        if all().any(|&id| id == 0) {
            return Err("node id 0 is reserved");
        }
        Ok(Self {
            voters: cs.voters.iter().copied().collect(),
            outgoing: cs.outgoing.iter().copied().collect(),
            learners: cs.learners.iter().copied().collect(),
        })
    }

    /// In a joint configuration.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// Votes in some part of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    /// A voter or a learner.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every voter, of both parts.
    pub fn all_voters(&self) -> BTreeSet<NodeId> {
        self.voters.union(&self.outgoing).copied().collect()
    }

    /// A majority of each part says yes.
    pub fn quorum_met(&self, yes: impl Fn(NodeId) -> bool) -> bool {
        majority_met(&self.voters, &yes) && majority_met(&self.outgoing, &yes)
    }

    /// `Some(true)` once each part has a majority granting, `Some(false)` once some part has
    /// a majority refusing.
    pub fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> Option<bool> {
        let granted = |id: NodeId| votes.get(&id) == Some(&true);
        let refused = |id: NodeId| votes.get(&id) == Some(&false);
        let lost = |set: &BTreeSet<NodeId>| !set.is_empty() && majority_met(set, &refused);
        if lost(&self.voters) || lost(&self.outgoing) {
            Some(false)
        } else if self.quorum_met(granted) {
            Some(true)
        } else {
            None
        }
    }

    /// The highest index held by a majority of each part.
    pub fn committed_index(&self, matched: impl Fn(NodeId) -> u64) -> u64 {
        quorum_index(&self.voters, &matched).min(quorum_index(&self.outgoing, &matched))
    }

    /// Applies a change.
    ///
    /// # Errors
    ///
    /// A change while joint, leaving when not joint, a change that removes every voter, or
    /// an unknown change kind: the configuration is unchanged.
    pub fn apply(&mut self, cc: &ConfChange) -> Result<(), &'static str> {
        if cc.changes.is_empty() {
            if !self.is_joint() {
                return Err("not in a joint configuration");
            }
            self.outgoing.clear();
            return Ok(());
        }
        if self.is_joint() {
            return Err("a change is already under way");
        }
        let mut next = self.clone();
        next.outgoing = self.voters.clone();
        for change in &cc.changes {
            let kind = ChangeKind::try_from(change.kind).map_err(|_| "unknown change kind")?;
            if change.node == 0 {
                return Err("node id 0 is reserved");
            }
            match kind {
                ChangeKind::AddVoter => {
                    next.learners.remove(&change.node);
                    next.voters.insert(change.node);
                }
                ChangeKind::AddLearner => {
                    if next.outgoing.contains(&change.node) {
                        return Err("a voter cannot become a learner in one change");
                    }
                    next.voters.remove(&change.node);
                    next.learners.insert(change.node);
                }
                ChangeKind::RemoveNode => {
                    next.voters.remove(&change.node);
                    next.learners.remove(&change.node);
                }
            }
        }
        if next.voters.is_empty() {
            return Err("a configuration needs a voter");
        }
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joint_configuration_needs_both_majorities() {
        let mut m = Membership::new(&[1, 2, 3], &[]);
        m.apply(&ConfChange {
            changes: vec![
                Change {
                    kind: ChangeKind::AddVoter as i32,
                    node: 4,
                },
                Change {
                    kind: ChangeKind::RemoveNode as i32,
                    node: 1,
                },
            ],
            ..ConfChange::default()
        })
        .expect("enter joint");
        assert!(m.is_joint());
        // {2, 3} is a majority of the old {1, 2, 3} and of the new {2, 3, 4}.
        assert!(m.quorum_met(|id| id == 2 || id == 3));
        // {1, 2} is a majority of the old only.
        assert!(!m.quorum_met(|id| id == 1 || id == 2));
        // {3, 4} of the new only.
        assert!(!m.quorum_met(|id| id == 3 || id == 4));
        let matched = |id: NodeId| [0, 9, 5, 7, 8][id as usize];
        // Old {1:9, 2:5, 3:7} -> 7; new {2:5, 3:7, 4:8} -> 7.
        assert_eq!(m.committed_index(matched), 7);
        assert!(
            m.apply(&ConfChange::single(ChangeKind::AddVoter, 5))
                .is_err()
        );
        m.apply(&ConfChange::default()).expect("leave joint");
        assert_eq!(m.all_voters(), [2, 3, 4].into_iter().collect());
    }

    /// Entries written before the context existed decode with an empty one, and a change
    /// without a context encodes exactly as they were written (the field is left out).
    #[test]
    fn a_change_without_context_encodes_as_before_the_field_existed() {
        use prost::Message as _;

        let change = ConfChange::single(ChangeKind::AddVoter, 4);
        // Field 1 (changes), length 4: field 1 (kind) 0 is left out, field 2 (node) = 4.
        let before: &[u8] = &[0x0a, 0x02, 0x10, 0x04];
        assert_eq!(change.encode_to_vec(), before);
        assert_eq!(ConfChange::decode(before), Ok(change.clone()));
        let with = change.with_context(&b"addr"[..]);
        let decoded = ConfChange::decode(with.encode_to_vec().as_slice()).expect("decode");
        assert_eq!(&decoded.context[..], b"addr");
    }

    #[test]
    fn votes_are_lost_once_one_part_refuses() {
        let mut m = Membership::new(&[1, 2, 3], &[]);
        m.apply(&ConfChange::single(ChangeKind::AddVoter, 4))
            .expect("joint");
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true)].into_iter().collect();
        // Old {1,2,3}: won. New {1,2,3,4}: 2 of 4, not yet.
        assert_eq!(m.vote_result(&votes), None);
        let votes: BTreeMap<NodeId, bool> = [(1, true), (2, true), (3, false), (4, false)]
            .into_iter()
            .collect();
        // New: 2 refused of 4 is not a majority either: still undecided.
        assert_eq!(m.vote_result(&votes), None);
        let votes: BTreeMap<NodeId, bool> = [(1, false), (2, false)].into_iter().collect();
        assert_eq!(m.vote_result(&votes), Some(false));
    }

    #[test]
    fn learners_are_promoted_and_changes_that_cannot_work_are_refused() {
        let mut m = Membership::new(&[1], &[]);
        m.apply(&ConfChange::single(ChangeKind::AddLearner, 2))
            .expect("learner");
        m.apply(&ConfChange::default()).expect("leave");
        assert!(m.learners.contains(&2) && !m.is_voter(2));
        m.apply(&ConfChange::single(ChangeKind::AddVoter, 2))
            .expect("promote");
        m.apply(&ConfChange::default()).expect("leave");
        assert!(m.is_voter(2) && !m.learners.contains(&2));
        let before = m.clone();
        assert!(
            m.apply(&ConfChange {
                changes: vec![
                    Change {
                        kind: ChangeKind::RemoveNode as i32,
                        node: 1
                    },
                    Change {
                        kind: ChangeKind::RemoveNode as i32,
                        node: 2
                    },
                ],
                ..ConfChange::default()
            })
            .is_err()
        );
        assert!(m.apply(&ConfChange::default()).is_err());
        assert_eq!(m, before, "a refused change changes nothing");
    }
}
