//! [`Raft`]: the consensus core. No I/O, no clock, no randomness of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use strata_raft_log::{Entry, EntryKind, HardState};
use strata_snapshot::SnapshotMeta;

use crate::log_view::LogView;
use crate::membership::{ConfChange, Membership};
use crate::message::{Message, MessageType, NodeId};
use crate::progress::{Progress, ProgressState};
use crate::storage::Storage;

mod read;
mod snapshot;

pub use self::snapshot::decode_membership;

/// Multiplies the configured seed into the random generator's state: 2^64 divided by the
/// golden ratio (Fibonacci hashing), so that nearby seeds (node ids 1, 2, 3 by default) start
/// far apart and their election timeouts are not correlated.
const SEED_MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// xorshift64*'s output multiplier (Vigna, "An experimental exploration of Marsaglia's
/// xorshift generators, scrambled", 2016); its shifts 12, 25 and 27 are in `random`.
const XORSHIFT64_STAR_MULTIPLIER: u64 = 0x2545_f491_4f6c_dd1d;

/// The context of the vote requests of an election a leader asked for (a leadership
/// transfer): voters grant them even while they still hear from that leader.
const TRANSFER_CONTEXT: &[u8] = b"transfer";

/// The byte limit of a log read that must see every entry of its range (each use says why
/// and what bounds the range); reads that hand entries out are bounded by the configuration.
const ALL_ENTRIES: usize = usize::MAX;

/// How a node is configured. Times are in ticks: the driver calls [`Raft::tick`] at a fixed
/// interval.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node (not 0).
    pub id: NodeId,
    /// The voting members, this node included if it votes.
    pub voters: Vec<NodeId>,
    /// Non-voting members: they receive the log but neither vote nor count for commits.
    pub learners: Vec<NodeId>,
    /// Other nodes that may send messages (the address book): nodes that may join or leave
    /// the configuration. Messages from a node that is neither a member nor here are refused
    /// and counted. (A node catching up may not yet know of a member added later; list it.)
    pub peers: Vec<NodeId>,
    /// A follower that hears nothing from a leader for a random time in
    /// `election_tick..2 * election_tick` starts an election. Default 10.
    pub election_tick: u64,
    /// A leader sends heartbeats this often. Default 1.
    pub heartbeat_tick: u64,
    /// Ask for votes without bumping the term first, so that a node cut off from the cluster
    /// cannot disrupt it when it returns. Default true.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum for an election timeout steps down; a
    /// follower that has heard from a leader within one ignores vote requests. Default true.
    pub check_quorum: bool,
    /// Appends in flight to one follower, at most, in messages and in entry bytes. Default
    /// 256 messages.
    pub inflight_msgs_max: usize,
    /// See `inflight_msgs_max`. Default 64 MiB.
    pub inflight_bytes_max: usize,
    /// Entry bytes in one append message, at most (one entry always goes). Default 1 MiB.
    pub append_bytes_max: usize,
    /// Data bytes of one proposed entry (a command, or an encoded [`ConfChange`]), at most:
    /// [`Raft::propose`] and [`Raft::propose_conf_change`] refuse a larger one with
    /// [`Error::EntryTooLarge`] before it reaches the log. An entry is the unit Raft never
    /// splits: it is held whole in memory at every step (the proposal, the log's cache, one
    /// append message, one apply), and every append behind it on the link waits for it, so
    /// this bounds a message's size (at most `append_bytes_max` plus one entry, which a
    /// transport's frame limit must allow) and the latency one large command adds to the
    /// heartbeats and appends queued behind it. Not 0, at most `append_bytes_max`, and at
    /// most `uncommitted_bytes_max` unless that is 0. Default 1 MiB, `append_bytes_max`'s
    /// default (etcd allows 1.5 MiB requests over 1 MiB messages; here an entry always fits
    /// one message's budget).
    pub entry_bytes_max: usize,
    /// Bytes of proposed, not yet committed entries a leader accepts before refusing
    /// proposals (0: no limit). Default 64 MiB.
    pub uncommitted_bytes_max: usize,
    /// Entry bytes handed out for applying in one [`Ready::committed_entries`], at most (one
    /// entry always goes, and the last one may cross the limit); the entries after them come
    /// in the next `Ready`s, and [`Raft::has_ready`] stays true until all are handed out. It
    /// costs the memory one `Ready`'s committed entries hold, from the read of the log until
    /// they are applied. Default 64 MiB, as `uncommitted_bytes_max`: a leader commits about
    /// that much at once at most in steady state, so the limit only splits a backlog (a
    /// restart applying its log, a follower catching up). Not 0.
    pub committed_bytes_per_ready_max: usize,
    /// Serve reads from a leader lease (no heartbeat round) while a quorum answered within
    /// `election_tick - lease_drift_ticks`. Needs `check_quorum`. Default false.
    pub lease_read: bool,
    /// Ticks of clock drift the lease allows for. Default 2.
    pub lease_drift_ticks: u64,
    /// Seeds the election timeouts' randomness (the core draws none of its own).
    pub seed: u64,
    /// Bytes of snapshot data in one chunk (the driver reads chunks this long). Default
    /// 1 MiB.
    pub snapshot_chunk_bytes: usize,
    /// Snapshot chunks in flight to one follower, at most. Default 4.
    pub snapshot_inflight_chunks_max: usize,
    /// At a restart, the last index the state machine already holds (durably): entries up to
    /// it are not handed out again (their membership changes are taken from the log). Not
    /// past the log's last index. Default 0.
    pub applied: u64,
}

impl Config {
    /// A configuration with defaults for node `id` among `voters`.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Self {
            id,
            voters,
            learners: Vec::new(),
            peers: Vec::new(),
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            inflight_msgs_max: 256,
            inflight_bytes_max: 64 << 20,
            append_bytes_max: 1 << 20,
            entry_bytes_max: 1 << 20,
            uncommitted_bytes_max: 64 << 20,
            committed_bytes_per_ready_max: 64 << 20,
            lease_read: false,
            lease_drift_ticks: 2,
            seed: id,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_inflight_chunks_max: 4,
            applied: 0,
        }
    }
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes.
    PreCandidate,
    /// Asking for votes.
    Candidate,
    /// Leads.
    Leader,
}

/// Errors from the core's entry points.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Only the leader accepts this; `leader` is the one this node knows of (0: none).
    #[error("not the leader (the leader is {leader})")]
    NotLeader {
        /// The leader this node knows of.
        leader: NodeId,
    },
    /// The proposal was refused: a leadership transfer is under way, or the uncommitted
    /// entries exceed `uncommitted_bytes_max`.
    #[error("proposal dropped: {reason}")]
    ProposalDropped {
        /// Why.
        reason: &'static str,
    },
    /// A message that does not decode, or comes from a node outside the configuration.
    #[error("message refused: {reason}")]
    BadMessage {
        /// Why.
        reason: &'static str,
    },
    /// The storage failed to read entries.
    #[error("storage: {0}")]
    Storage(String),
    /// A configuration that cannot work.
    #[error("bad configuration: {0}")]
    Config(&'static str),
    /// A proposed entry larger than [`Config::entry_bytes_max`]; nothing reached the log.
    #[error("entry of {bytes} bytes is larger than the {max} bytes allowed")]
    EntryTooLarge {
        /// The entry's data bytes.
        bytes: usize,
        /// [`Config::entry_bytes_max`].
        max: usize,
    },
}

/// A confirmed linearizable read: once the state machine has applied `index`, a read there
/// sees every write acknowledged before the read was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadState {
    /// The commit index the read must wait for.
    pub index: u64,
    /// The caller's context, as given to [`Raft::read_index`].
    pub context: Bytes,
}

/// What changed since the last [`Raft::ready`], for the driver to act on in this order:
/// install `snapshot`; persist `hard_state` and `entries`; send `messages` (they need not
/// wait for that; the driver fills in the data of `InstallSnapshot` chunks first); after
/// persisting, send `persisted_messages`; apply `committed_entries` (they need not wait for
/// the persist either: they are entries this node had persisted before this `Ready`, and
/// committed); answer `read_states` once applied; call [`Raft::advance`]; then stage
/// `snapshot_chunks` and report each with [`Raft::snapshot_staged`].
#[derive(Debug, Default)]
pub struct Ready {
    /// A new role or leader, if either changed.
    pub role_change: Option<(Role, NodeId)>,
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to append to the log (overwriting any suffix from the first one's index).
    pub entries: Vec<Entry>,
    /// Messages that may be sent at once.
    pub messages: Vec<Message>,
    /// Messages that may be sent only once `hard_state` and `entries` are durable (votes
    /// and acknowledgements of appended entries).
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Confirmed reads.
    pub read_states: Vec<ReadState>,
    /// A snapshot this node received and installed (its files are in the driver's snapshot
    /// store): before persisting anything else, make the log start after it (keeping the
    /// entries after its last index only if the log holds that index with its term, as
    /// `RaftLog::compact` does) and restore the state machine from it.
    pub snapshot: Option<SnapshotMeta>,
    /// `InstallSnapshot` messages from the leader, for the driver to stage (with
    /// `strata_snapshot::Receiver`) and report with [`Raft::snapshot_staged`].
    pub snapshot_chunks: Vec<Message>,
}

impl Ready {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.role_change.is_none()
            && self.hard_state.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.snapshot.is_none()
            && self.snapshot_chunks.is_empty()
    }
}

/// Counters of refused input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Messages from a node outside the configuration.
    pub unknown_sender: u64,
    /// Messages from an older term, dropped.
    pub stale_term: u64,
    /// Messages that did not decode.
    pub malformed: u64,
    /// Proposals refused.
    pub dropped_proposals: u64,
}

/// A snapshot of the node's state, for status reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its term.
    pub term: u64,
    /// The leader it knows of (0: none).
    pub leader: NodeId,
    /// The commit index.
    pub commit: u64,
    /// The last index handed out for applying.
    pub applied: u64,
    /// The last index in its log.
    pub last_index: u64,
    /// On a leader: each member's match index.
    pub matched: BTreeMap<NodeId, u64>,
    /// The last index of the latest snapshot this node knows (taken or installed; 0: none).
    pub snapshot: u64,
    /// Refused input.
    pub counters: Counters,
}

/// The Raft consensus core of one node (Ongaro and Ousterhout, "In Search of an
/// Understandable Consensus Algorithm", with pre-vote, check-quorum, pipelining, ReadIndex
/// and leader transfer as in Ongaro's thesis).
#[derive(Debug)]
pub struct Raft<S: Storage> {
    config: Config,
    id: NodeId,
    term: u64,
    vote: NodeId,
    role: Role,
    leader: NodeId,
    log: LogView<S>,
    membership: Membership,
    /// The index of the last membership change proposed by this leader (or the last index
    /// when it became leader): another may be proposed only once it is applied.
    pending_conf_index: u64,
    /// A joint configuration was applied: the leader proposes leaving it.
    leave_joint_due: bool,
    /// This leader proposed a configuration without it: it accepts no more commands.
    leaving: bool,
    progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_timeout: u64,
    ticks: u64,
    rng: u64,
    lead_transferee: NodeId,
    uncommitted_bytes: usize,
    /// Reads in hand: the leader's rounds, a follower's forwarded batches.
    reads: read::Reads,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    broadcast_due: bool,
    last_hard_state: HardState,
    last_role: (Role, NodeId),
    counters: Counters,
    /// The latest snapshot (taken here or installed): what a follower that needs compacted
    /// entries is sent.
    snapshot: Option<Arc<SnapshotMeta>>,
    /// Installed from a leader, not yet handed out in a `Ready`.
    pending_snapshot: Option<SnapshotMeta>,
    /// Chunks received, not yet handed out.
    snapshot_chunks: Vec<Message>,
}

impl<S: Storage> Raft<S> {
    /// A node restarting from `storage` and `hard_state` (both as persisted), as a follower.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an id of 0, an empty voter set, zero ticks, a zero
    /// `committed_bytes_per_ready_max`, or an `entry_bytes_max` that is 0 or larger than
    /// `append_bytes_max` or a non-zero `uncommitted_bytes_max`.
    pub fn new(config: Config, storage: S, hard_state: HardState) -> Result<Self, Error> {
        Self::with_snapshot(config, storage, hard_state, None)
    }

    /// A node restarting from `storage`, `hard_state` and the latest snapshot it has (taken
    /// or installed): its membership is the snapshot's, and entries are applied from the one
    /// after it (the driver restores the state machine from the snapshot first). The log must
    /// hold the snapshot's last index with its term, or start right after it (after a crash
    /// between installing a snapshot and compacting the log, compact it first).
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new); [`Error::Config`] for a log that does not match the snapshot
    /// or a membership that does not decode.
    pub fn with_snapshot(
        config: Config,
        storage: S,
        hard_state: HardState,
        snapshot: Option<&SnapshotMeta>,
    ) -> Result<Self, Error> {
        if config.id == 0 {
            return Err(Error::Config("node id 0 is reserved"));
        }
        if config.voters.is_empty() {
            return Err(Error::Config("no voters"));
        }
        if config.election_tick == 0 || config.heartbeat_tick == 0 {
            return Err(Error::Config("ticks must be positive"));
        }
        if config.heartbeat_tick >= config.election_tick {
            return Err(Error::Config("heartbeat_tick must be below election_tick"));
        }
        if config.committed_bytes_per_ready_max == 0 {
            return Err(Error::Config(
                "committed_bytes_per_ready_max must be positive",
            ));
        }
        if config.entry_bytes_max == 0 {
            return Err(Error::Config("entry_bytes_max must be positive"));
        }
        if config.entry_bytes_max > config.append_bytes_max {
            return Err(Error::Config(
                "entry_bytes_max must be at most append_bytes_max (an entry fits one append)",
            ));
        }
        if config.uncommitted_bytes_max != 0
            && config.entry_bytes_max > config.uncommitted_bytes_max
        {
            return Err(Error::Config(
                "entry_bytes_max must be at most uncommitted_bytes_max (or that must be 0)",
            ));
        }
        let mut log = LogView::new(storage, hard_state.commit);
        if config.applied > log.last_index() {
            return Err(Error::Config(
                "the state machine's applied index is past the log's last index",
            ));
        }
        let mut membership = Membership::new(&config.voters, &config.learners);
        if let Some(meta) = snapshot {
            if log.term(meta.last_index) != Some(meta.last_term) {
                return Err(Error::Config(
                    "the log does not hold the snapshot's last entry: compact it to the snapshot",
                ));
            }
            membership = decode_membership(&meta.membership).map_err(Error::Config)?;
            log.committed = log.committed.max(meta.last_index);
            log.applied = log.applied.max(meta.last_index);
        }
        // The commit index on disk may lag (it is not synced on its own). One membership
        // change is proposed at a time, only once the one before it is applied, so every
        // change in the log but the last is committed: count them as such, so that this node
        // never acts on a configuration older than one its log proves committed.
        let last = log.last_index();
        if last > log.committed {
            // Every entry of the uncommitted tail (once, at restart): the last two changes in
            // it must be found.
            let entries = log
                .entries(log.committed + 1, last + 1, ALL_ENTRIES)
                .map_err(Error::Storage)?;
            let changes: Vec<u64> = entries
                .iter()
                .filter(|e| e.kind == EntryKind::ConfChange as i32)
                .map(|e| e.index)
                .collect();
            if let [.., proven, _] = changes[..] {
                log.committed = proven;
            }
        }
        let mut raft = Self {
            id: config.id,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: 0,
            log,
            membership,
            pending_conf_index: 0,
            leave_joint_due: false,
            leaving: false,
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_timeout: config.election_tick,
            ticks: 0,
            // Never zero: xorshift's state stays zero once it is.
            rng: config.seed.wrapping_mul(SEED_MIX) | 1,
            lead_transferee: 0,
            uncommitted_bytes: 0,
            reads: read::Reads::default(),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            broadcast_due: false,
            last_hard_state: hard_state,
            last_role: (Role::Follower, 0),
            counters: Counters::default(),
            snapshot: snapshot.map(|meta| Arc::new(meta.clone())),
            pending_snapshot: None,
            snapshot_chunks: Vec::new(),
            config,
        };
        raft.reset_randomized_timeout();
        raft.skip_applied()?;
        Ok(raft)
    }

    /// At a restart, takes the entries up to `config.applied` as applied: the state machine
    /// holds them, and their membership changes are applied here from the log (a chunk of
    /// `committed_bytes_per_ready_max` at a time, so that a long stretch is never read at
    /// once).
    fn skip_applied(&mut self) -> Result<(), Error> {
        let to = self.config.applied;
        // Applied entries were committed.
        self.log.committed = self.log.committed.max(to);
        while self.log.applied < to {
            let entries = self
                .log
                .entries(
                    self.log.applied + 1,
                    to + 1,
                    self.config.committed_bytes_per_ready_max,
                )
                .map_err(Error::Storage)?;
            let Some(last) = entries.last() else {
                return Err(Error::Storage(format!(
                    "the log has no entry at {} to skip to {to}",
                    self.log.applied + 1
                )));
            };
            let last = last.index;
            for entry in &entries {
                if entry.kind == EntryKind::ConfChange as i32 {
                    self.apply_conf_change(entry);
                }
            }
            self.log.applied = last;
        }
        Ok(())
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: deterministic from the configured seed; 12, 25 and 27 are its shifts.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(XORSHIFT64_STAR_MULTIPLIER)
    }

    fn reset_randomized_timeout(&mut self) {
        let t = self.config.election_tick;
        self.randomized_timeout = t + self.random() % t;
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The storage, for the driver to persist into.
    pub fn storage(&self) -> &S {
        &self.log.storage
    }

    /// The storage, mutably (for an in-memory storage the driver writes to).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.log.storage
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The leader this node knows of (0: none).
    pub fn leader(&self) -> NodeId {
        self.leader
    }

    /// The commit index.
    pub fn commit(&self) -> u64 {
        self.log.committed
    }

    /// The node's state.
    pub fn status(&self) -> Status {
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit: self.log.committed,
            applied: self.log.applied,
            last_index: self.log.last_index(),
            matched: self
                .progress
                .iter()
                .map(|(id, p)| (*id, p.matched))
                .collect(),
            snapshot: self.snapshot.as_ref().map_or(0, |m| m.last_index),
            counters: self.counters,
        }
    }

    fn is_member(&self, id: NodeId) -> bool {
        self.membership.is_member(id) || self.config.peers.contains(&id)
    }

    fn send(&mut self, mut m: Message) {
        m.from = self.id;
        let after_persist = match m.kind() {
            // A vote (ours, for ourselves or another) and an acknowledgement of entries
            // promise something about durable state.
            MessageType::Vote | MessageType::VoteResponse | MessageType::AppendResponse => true,
            // So is "installed": it goes once the Ready that makes the log start after the
            // snapshot is persisted.
            MessageType::SnapshotResponse => m.chunk.as_ref().is_some_and(|c| c.done),
            _ => false,
        };
        if after_persist {
            self.persisted_messages.push(m);
        } else {
            self.messages.push(m);
        }
    }

    // ---- roles -------------------------------------------------------------------------

    fn reset(&mut self, term: u64) {
        if self.term != term {
            self.term = term;
            self.vote = 0;
        }
        self.leader = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.reset_randomized_timeout();
        self.votes.clear();
        self.lead_transferee = 0;
        self.leaving = false;
        self.reads.reset();
        self.uncommitted_bytes = 0;
        let next = self.log.last_index() + 1;
        self.progress = self
            .membership
            .all_voters()
            .into_iter()
            .map(|id| (id, Progress::new(next, false)))
            .chain(
                self.membership
                    .learners
                    .iter()
                    .map(|&id| (id, Progress::new(next, true))),
            )
            .collect();
        for p in self.progress.values_mut() {
            p.heard_tick = self.ticks;
        }
    }

    fn become_follower(&mut self, term: u64, leader: NodeId) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
    }

    fn become_pre_candidate(&mut self) {
        // The term does not change, nor the vote: a pre-vote promises nothing.
        self.role = Role::PreCandidate;
        self.votes.clear();
        self.leader = 0;
        self.election_elapsed = 0;
        self.reset_randomized_timeout();
    }

    fn become_candidate(&mut self) {
        let term = self.term + 1;
        self.reset(term);
        self.role = Role::Candidate;
        self.vote = self.id;
        self.progress.clear();
    }

    fn become_leader(&mut self) {
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = self.id;
        self.keep_unforwarded_reads();
        let last = self.log.last_index();
        if let Some(me) = self.progress.get_mut(&self.id) {
            me.matched = self.log.persisted_last();
            me.become_replicate();
            me.next = last + 1;
        }
        // Changes in the log not yet applied may be membership changes: no new one until
        // they are.
        self.pending_conf_index = last;
        // Elected while joint: finish the change.
        self.leave_joint_due = self.membership.is_joint();
        // An entry of the new term: committing it commits everything before (§5.4.2), and
        // lets reads be served (§8).
        let noop = Entry::new(term, last + 1, EntryKind::Normal, Bytes::new());
        self.log.append(vec![noop]);
        self.broadcast_due = true;
    }

    // ---- time --------------------------------------------------------------------------

    /// Advances the clock by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.randomized_timeout
                    && self.membership.is_voter(self.id)
                    && !self.has_unapplied_conf_change()
                {
                    self.election_elapsed = 0;
                    self.campaign(false);
                }
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_tick {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                let id = self.id;
                let active: BTreeSet<NodeId> = self
                    .progress
                    .iter()
                    .filter(|(pid, p)| **pid == id || p.recent_active)
                    .map(|(pid, _)| *pid)
                    .collect();
                for p in self.progress.values_mut() {
                    p.recent_active = false;
                }
                if !self.membership.quorum_met(|v| active.contains(&v)) {
                    let term = self.term;
                    self.become_follower(term, 0);
                    return;
                }
            }
            // A transfer that has not finished within an election timeout is abandoned (a
            // removed leader tries again).
            self.lead_transferee = 0;
            if !self.membership.is_member(self.id) {
                self.hand_over_after_removal();
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            let context = self.heartbeat_context();
            self.broadcast_heartbeat(context);
        }
        self.tick_snapshot_transfers();
    }

    // ---- elections ---------------------------------------------------------------------

    /// Starts an election: with pre-vote, a pre-election first (unless a leader asked for
    /// this one, in a transfer).
    fn campaign(&mut self, transfer: bool) {
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
            self.request_votes(MessageType::PreVote, self.term + 1, false);
        } else {
            self.start_election(transfer);
        }
    }

    fn start_election(&mut self, transfer: bool) {
        self.become_candidate();
        let term = self.term;
        self.request_votes(MessageType::Vote, term, transfer);
    }

    fn request_votes(&mut self, kind: MessageType, term: u64, transfer: bool) {
        let me = self.id;
        // Our own vote.
        self.votes.insert(me, true);
        if self.tally() == Some(true) {
            self.won(kind);
            return;
        }
        let (index, log_term) = (self.log.last_index(), self.log.last_term());
        let voters: Vec<NodeId> = self
            .membership
            .all_voters()
            .into_iter()
            .filter(|&v| v != me)
            .collect();
        for to in voters {
            let mut m = Message::new(kind, me, to, term);
            m.index = index;
            m.log_term = log_term;
            if transfer {
                m.context = Bytes::from_static(TRANSFER_CONTEXT);
            }
            self.send(m);
        }
    }

    /// `Some(true)` once a quorum granted, `Some(false)` once a quorum refused.
    fn tally(&self) -> Option<bool> {
        self.membership.vote_result(&self.votes)
    }

    fn won(&mut self, kind: MessageType) {
        if kind == MessageType::PreVote {
            self.start_election(false);
        } else {
            self.become_leader();
        }
    }

    // ---- input -------------------------------------------------------------------------

    /// Steps a message encoded as protobuf; a message that does not decode is counted and
    /// refused.
    ///
    /// # Errors
    ///
    /// As [`step`](Self::step), and [`Error::BadMessage`] for bytes that do not decode.
    pub fn step_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match Message::decode(bytes) {
            Ok(m) => self.step(m),
            Err(_) => {
                self.counters.malformed += 1;
                Err(Error::BadMessage {
                    reason: "does not decode",
                })
            }
        }
    }

    /// Handles a message from another node.
    ///
    /// # Errors
    ///
    /// [`Error::BadMessage`] (counted, nothing changes) for a message from a node outside the
    /// configuration, addressed to another node, or of an unknown type;
    /// [`Error::Storage`] if reading the log failed.
    pub fn step(&mut self, m: Message) -> Result<(), Error> {
        if m.from == self.id || !self.is_member(m.from) {
            self.counters.unknown_sender += 1;
            return Err(Error::BadMessage {
                reason: "from a node outside the configuration",
            });
        }
        if m.to != self.id {
            self.counters.malformed += 1;
            return Err(Error::BadMessage {
                reason: "addressed to another node",
            });
        }
        if MessageType::try_from(m.msg_type).is_err() {
            self.counters.malformed += 1;
            return Err(Error::BadMessage {
                reason: "unknown message type",
            });
        }
        let kind = m.kind();
        if m.term > self.term {
            let vote_request = matches!(kind, MessageType::Vote | MessageType::PreVote);
            if vote_request {
                // A node that heard from a leader within the minimum election timeout does not
                // help depose it (§9.6; what makes a removed or partitioned node harmless),
                // unless the leader itself asked for the election (a transfer).
                let in_lease = self.config.check_quorum
                    && self.leader != 0
                    && self.election_elapsed < self.config.election_tick;
                if in_lease && m.context.as_ref() != TRANSFER_CONTEXT {
                    return Ok(());
                }
            }
            match kind {
                // A pre-vote does not move anyone's term; neither does its granted answer.
                MessageType::PreVote => {}
                MessageType::PreVoteResponse if !m.reject => {}
                MessageType::Append | MessageType::Heartbeat | MessageType::InstallSnapshot => {
                    self.become_follower(m.term, m.from);
                }
                _ => self.become_follower(m.term, 0),
            }
        } else if m.term < self.term {
            self.counters.stale_term += 1;
            match kind {
                // Tell a stale leader about the new term, so that it steps down (with
                // check-quorum or pre-vote, it would otherwise never learn of it).
                MessageType::Append | MessageType::Heartbeat | MessageType::InstallSnapshot
                    if self.config.check_quorum || self.config.pre_vote =>
                {
                    let mut r =
                        Message::new(MessageType::AppendResponse, self.id, m.from, self.term);
                    r.reject = true;
                    self.messages.push(r);
                }
                MessageType::PreVote => {
                    let mut r =
                        Message::new(MessageType::PreVoteResponse, self.id, m.from, self.term);
                    r.reject = true;
                    self.send(r);
                }
                _ => {}
            }
            return Ok(());
        }
        match kind {
            MessageType::Vote | MessageType::PreVote => {
                self.handle_vote_request(&m);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => {
                    self.step_candidate(m);
                    Ok(())
                }
                Role::Follower => self.step_follower(m),
            },
        }
    }

    fn handle_vote_request(&mut self, m: &Message) {
        let kind = m.kind();
        let response = if kind == MessageType::PreVote {
            MessageType::PreVoteResponse
        } else {
            MessageType::VoteResponse
        };
        let can_vote = self.vote == m.from
            || (self.vote == 0 && self.leader == 0)
            || (kind == MessageType::PreVote && m.term > self.term);
        let grant = can_vote && self.log.is_up_to_date(m.index, m.log_term);
        let mut r = Message::new(
            response,
            self.id,
            m.from,
            if grant { m.term } else { self.term },
        );
        r.reject = !grant;
        if grant && kind == MessageType::Vote {
            // A node votes at most once per term.
            debug_assert!(
                self.vote == 0 || self.vote == m.from,
                "node {} voted for {} and now for {} in term {}",
                self.id,
                self.vote,
                m.from,
                self.term
            );
            self.election_elapsed = 0;
            self.vote = m.from;
        }
        self.send(r);
    }

    fn step_candidate(&mut self, m: Message) {
        let kind = m.kind();
        let expected = if self.role == Role::PreCandidate {
            MessageType::PreVoteResponse
        } else {
            MessageType::VoteResponse
        };
        match kind {
            k if k == expected => {
                self.votes.insert(m.from, !m.reject);
                match self.tally() {
                    Some(true) => {
                        if self.role == Role::PreCandidate {
                            self.start_election(false);
                        } else {
                            self.become_leader();
                        }
                    }
                    Some(false) => {
                        let term = self.term;
                        self.become_follower(term, 0);
                    }
                    None => {}
                }
            }
            MessageType::Append | MessageType::Heartbeat | MessageType::InstallSnapshot => {
                // A leader of this term exists.
                let term = self.term;
                self.become_follower(term, m.from);
                let _ = self.step_follower(m);
            }
            _ => {}
        }
    }

    fn step_follower(&mut self, m: Message) -> Result<(), Error> {
        match m.kind() {
            MessageType::Append => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_append(m);
            }
            MessageType::Heartbeat => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.log.commit_to(m.commit);
                let mut r =
                    Message::new(MessageType::HeartbeatResponse, self.id, m.from, self.term);
                r.context = m.context;
                r.sent_tick = m.sent_tick;
                self.send(r);
            }
            MessageType::InstallSnapshot => {
                self.election_elapsed = 0;
                self.leader = m.from;
                return self.handle_snapshot_chunk(m);
            }
            MessageType::TimeoutNow if self.membership.is_voter(self.id) => self.campaign(true),
            MessageType::ReadIndexResponse => self.handle_read_index_response(&m),
            _ => {}
        }
        Ok(())
    }

    fn handle_append(&mut self, m: Message) {
        let mut r = Message::new(MessageType::AppendResponse, self.id, m.from, self.term);
        if m.index < self.log.committed {
            // Old news: everything up to the commit index is known to match.
            r.index = self.log.committed;
            self.send(r);
            return;
        }
        if self.log.matches(m.index, m.log_term) {
            let last_new = m.index + m.entries.len() as u64;
            if let Some(at) = self.log.find_conflict(&m.entries) {
                let rest: Vec<Entry> = m.entries[at..].to_vec();
                self.log.append(rest);
            }
            self.log.commit_to(m.commit.min(last_new));
            r.index = last_new;
            self.send(r);
        } else {
            // Tell the leader where our log may agree with its, so that it skips a whole
            // term of mismatches at once.
            let hint = self.log.find_conflict_by_term(m.index, m.log_term);
            r.reject = true;
            r.index = m.index;
            r.reject_hint = hint;
            r.log_term = self.log.term(hint).unwrap_or(0);
            self.send(r);
        }
    }

    fn step_leader(&mut self, m: Message) -> Result<(), Error> {
        let from = m.from;
        let last = self.log.last_index();
        let (msgs_max, bytes_max) = (
            self.config.inflight_msgs_max,
            self.config.inflight_bytes_max,
        );
        let ticks = self.ticks;
        let Some(p) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        p.recent_active = true;
        p.heard_tick = ticks;
        match m.kind() {
            MessageType::SnapshotResponse => self.handle_snapshot_response(&m)?,
            MessageType::AppendResponse if p.state == ProgressState::Snapshot => {
                // An answer to an append sent before the transfer: if the follower has
                // everything the snapshot covers after all, appends go on from there.
                let covered = p.transfer.as_ref().map_or(0, |t| t.meta.last_index);
                if !m.reject && m.index >= covered {
                    p.maybe_update(m.index);
                    p.become_replicate();
                    self.send_append(from)?;
                }
            }
            MessageType::AppendResponse if m.reject => {
                // Our largest index at or before the follower's hint whose term is at most
                // the follower's term there: the whole conflicting term is skipped at once.
                let hint = self.log.find_conflict_by_term(m.reject_hint, m.log_term);
                let decreased = self
                    .progress
                    .get_mut(&from)
                    .is_some_and(|p| p.maybe_decrease(m.index, hint));
                if decreased {
                    self.send_append(from)?;
                }
            }
            MessageType::AppendResponse => {
                let was_probe = p.state == ProgressState::Probe;
                let updated = p.maybe_update(m.index);
                if updated && was_probe {
                    p.become_replicate();
                }
                let caught_up = p.matched == last;
                if updated {
                    if self.maybe_commit() {
                        self.broadcast_due = true;
                    } else {
                        self.send_append(from)?;
                    }
                    if from == self.lead_transferee && caught_up {
                        let m = Message::new(MessageType::TimeoutNow, self.id, from, self.term);
                        self.send(m);
                    }
                } else if was_probe {
                    self.send_append(from)?;
                }
            }
            MessageType::HeartbeatResponse => {
                // The lease counts from when the answered heartbeat was sent.
                p.last_ack_tick = p.last_ack_tick.max(Some(m.sent_tick));
                p.free_first_if_full(msgs_max, bytes_max);
                if p.matched < last {
                    if p.state == ProgressState::Probe {
                        p.probe_sent = false;
                    }
                    self.send_append(from)?;
                }
                if !m.context.is_empty() {
                    self.ack_read(&m.context, from);
                }
            }
            MessageType::ReadIndex => self.handle_read_index(m),
            _ => {}
        }
        Ok(())
    }

    // ---- replication -------------------------------------------------------------------

    fn send_append(&mut self, to: NodeId) -> Result<(), Error> {
        if to == self.id {
            return Ok(());
        }
        let (msgs_max, bytes_max) = (
            self.config.inflight_msgs_max,
            self.config.inflight_bytes_max,
        );
        let Some(p) = self.progress.get(&to) else {
            return Ok(());
        };
        if p.paused(msgs_max, bytes_max) {
            return Ok(());
        }
        let next = p.next;
        let prev = next - 1;
        let Some(prev_term) = self.log.term(prev) else {
            // The entries it needs are compacted away: it needs the latest snapshot.
            self.start_snapshot_transfer(to);
            return Ok(());
        };
        let last = self.log.last_index();
        let entries = if next <= last {
            self.log
                .entries(next, last + 1, self.config.append_bytes_max)
                .map_err(Error::Storage)?
        } else {
            Vec::new()
        };
        let bytes: usize = entries.iter().map(Entry::size).sum();
        let sent_last = prev + entries.len() as u64;
        let carried = !entries.is_empty();
        let mut m = Message::new(MessageType::Append, self.id, to, self.term);
        m.index = prev;
        m.log_term = prev_term;
        m.entries = entries;
        m.commit = self.log.committed;
        self.send(m);
        if let Some(p) = self.progress.get_mut(&to) {
            p.sent(sent_last, bytes, carried);
        }
        Ok(())
    }

    fn broadcast_append(&mut self) -> Result<(), Error> {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for to in peers {
            self.send_append(to)?;
        }
        Ok(())
    }

    fn broadcast_heartbeat(&mut self, context: Bytes) {
        let peers: Vec<(NodeId, u64)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, p)| (*id, p.matched))
            .collect();
        for (to, matched) in peers {
            let mut m = Message::new(MessageType::Heartbeat, self.id, to, self.term);
            // Never tell a follower to commit past what it is known to hold.
            m.commit = self.log.committed.min(matched);
            m.context = context.clone();
            m.sent_tick = self.ticks;
            self.send(m);
        }
    }

    /// Advances the commit index to what a quorum of voters holds, if that entry is of the
    /// current term (§5.4.2: a leader never commits an older term's entry by counting).
    fn maybe_commit(&mut self) -> bool {
        let progress = &self.progress;
        let index = self
            .membership
            .committed_index(|id| progress.get(&id).map_or(0, |p| p.matched));
        if index > self.log.committed && self.log.term(index) == Some(self.term) {
            let before = self.log.committed;
            self.log.commit_to(index);
            self.release_uncommitted(before, index);
            self.release_waiting_reads();
            true
        } else {
            false
        }
    }

    fn release_uncommitted(&mut self, from: u64, to: u64) {
        // Every newly committed entry: the bytes counted in must all be released, or the cap
        // would refuse proposals for good. The range is what this commit just covered.
        if let Ok(entries) = self.log.entries(from + 1, to + 1, ALL_ENTRIES) {
            // Only this term's proposals were counted in.
            let bytes: usize = entries
                .iter()
                .filter(|e| e.term == self.term)
                .map(|e| e.data.len())
                .sum();
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(bytes);
        }
    }

    // ---- proposals and reads -----------------------------------------------------------

    /// Proposes a command. Proposals made before the next [`ready`](Self::ready) go out as
    /// one append and one persist. Returns the entry's index.
    ///
    /// # Errors
    ///
    /// [`Error::EntryTooLarge`] (counted in `dropped_proposals`, on any node: it could not
    /// succeed anywhere); [`Error::NotLeader`]; [`Error::ProposalDropped`] during a
    /// leadership transfer or past `uncommitted_bytes_max`.
    pub fn propose(&mut self, data: Bytes) -> Result<u64, Error> {
        self.check_entry_bytes(data.len())?;
        self.propose_entry(EntryKind::Normal, data)
    }

    /// Refuses an entry larger than `entry_bytes_max`, before anything else looks at it.
    fn check_entry_bytes(&mut self, bytes: usize) -> Result<(), Error> {
        let max = self.config.entry_bytes_max;
        if bytes > max {
            self.counters.dropped_proposals += 1;
            return Err(Error::EntryTooLarge { bytes, max });
        }
        Ok(())
    }

    /// Proposes a membership change: with changes, the cluster enters a joint configuration
    /// when it is applied, and the leader then proposes leaving it by itself; one change at
    /// a time. Returns the entry's index.
    ///
    /// # Errors
    ///
    /// [`Error::EntryTooLarge`] for a change (with its context) encoding to more than
    /// `entry_bytes_max`; [`Error::NotLeader`]; [`Error::ProposalDropped`] while an earlier
    /// change is not yet applied, or for a change that cannot apply (see
    /// [`Membership::apply`]).
    pub fn propose_conf_change(&mut self, change: &ConfChange) -> Result<u64, Error> {
        let data = Bytes::from(change.encode_to_vec());
        self.check_entry_bytes(data.len())?;
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        if self.pending_conf_index > self.log.applied {
            self.counters.dropped_proposals += 1;
            return Err(Error::ProposalDropped {
                reason: "an earlier membership change is not yet applied",
            });
        }
        let mut next = self.membership.clone();
        if let Err(reason) = next.apply(change) {
            self.counters.dropped_proposals += 1;
            return Err(Error::ProposalDropped { reason });
        }
        let index = self.propose_entry(EntryKind::ConfChange, data)?;
        self.pending_conf_index = index;
        // Entering a joint configuration in which it is only an outgoing voter, or leaving
        // one without it: this leader is on its way out.
        self.leaving |= !next.voters.contains(&self.id);
        Ok(index)
    }

    /// The current configuration (as of the last applied membership change).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Applies a committed membership change as it is handed out for applying.
    fn apply_conf_change(&mut self, entry: &Entry) {
        let Ok(change) = ConfChange::decode(entry.data.as_ref()) else {
            self.counters.malformed += 1;
            return;
        };
        if self.membership.apply(&change).is_err() {
            // Checked when proposed; one that does not apply now changes nothing.
            self.counters.malformed += 1;
            return;
        }
        if self.role == Role::Leader {
            let next = self.log.last_index() + 1;
            let members: Vec<(NodeId, bool)> = self
                .membership
                .all_voters()
                .into_iter()
                .map(|id| (id, false))
                .chain(self.membership.learners.iter().map(|&id| (id, true)))
                .collect();
            self.progress
                .retain(|id, _| members.iter().any(|(m, _)| m == id));
            for (id, learner) in members {
                let ticks = self.ticks;
                let p = self.progress.entry(id).or_insert_with(|| {
                    let mut p = Progress::new(next, learner);
                    // Not yet heard from, but not to be held against check-quorum at once.
                    p.recent_active = true;
                    p.heard_tick = ticks;
                    p
                });
                p.is_learner = learner;
            }
            self.leave_joint_due = self.membership.is_joint();
            self.broadcast_due = true;
            if !self.membership.is_member(self.id) {
                // Removed. Stepping down at once could strand the remaining voters in the
                // joint configuration (they learn that leaving it committed only from a
                // leader), needing this node's vote; instead keep leading, without counting
                // itself, until the most caught-up voter takes over.
                self.hand_over_after_removal();
            }
        }
    }

    /// A committed membership change is not yet applied (handed out): until it is, this
    /// node's configuration may be out of date, and it must not start an election.
    fn has_unapplied_conf_change(&self) -> bool {
        // Every entry not yet handed out: one change missed would let this node campaign in
        // an old configuration. The range is short: the driver takes every `Ready` before the
        // next tick, so only committed entries not yet persisted here are left.
        let (from, to) = (self.log.applied + 1, self.log.committed);
        from <= to
            && self
                .log
                .entries(from, to + 1, ALL_ENTRIES)
                .map_or(true, |entries| {
                    entries
                        .iter()
                        .any(|e| e.kind == EntryKind::ConfChange as i32)
                })
    }

    /// A leader that was removed hands leadership to the voter with the highest match.
    fn hand_over_after_removal(&mut self) {
        let target = self
            .progress
            .iter()
            .filter(|(id, p)| **id != self.id && !p.is_learner && self.membership.is_voter(**id))
            .max_by_key(|(_, p)| p.matched)
            .map(|(id, _)| *id);
        if let Some(target) = target {
            let _ = self.transfer_leader(target);
        }
    }

    fn propose_entry(&mut self, kind: EntryKind, data: Bytes) -> Result<u64, Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        if self.lead_transferee != 0 {
            self.counters.dropped_proposals += 1;
            return Err(Error::ProposalDropped {
                reason: "a leadership transfer is under way",
            });
        }
        if self.leaving && kind == EntryKind::Normal {
            // Nothing after its own removal: the remaining voters must be able to elect one of
            // themselves with this node's vote, which needs their logs to be as long as its.
            self.counters.dropped_proposals += 1;
            return Err(Error::ProposalDropped {
                reason: "this leader is being removed",
            });
        }
        let max = self.config.uncommitted_bytes_max;
        if max > 0 && self.uncommitted_bytes > 0 && self.uncommitted_bytes + data.len() > max {
            self.counters.dropped_proposals += 1;
            return Err(Error::ProposalDropped {
                reason: "too many uncommitted bytes",
            });
        }
        self.uncommitted_bytes += data.len();
        let index = self.log.last_index() + 1;
        self.log
            .append(vec![Entry::new(self.term, index, kind, data)]);
        self.broadcast_due = true;
        Ok(index)
    }

    /// Starts handing leadership to `to`: once its log is caught up it is told to start an
    /// election at once. Proposals are refused meanwhile (for up to an election timeout).
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`]; [`Error::BadMessage`] if `to` is not a voter.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<(), Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.id {
            return Ok(());
        }
        if !self.membership.is_voter(to) {
            return Err(Error::BadMessage {
                reason: "transfer target is not a voter",
            });
        }
        self.lead_transferee = to;
        self.election_elapsed = 0;
        if self.progress.get(&to).map(|p| p.matched) == Some(self.log.last_index()) {
            let m = Message::new(MessageType::TimeoutNow, self.id, to, self.term);
            self.send(m);
        } else {
            self.send_append(to)?;
        }
        Ok(())
    }

    /// The transport could not reach `peer` (it dropped a message to it, or the connection
    /// broke). On a leader, a follower it was pipelining appends to goes back to probing: one
    /// append at a time from its match index, each waiting for an answer (a heartbeat's
    /// answer releases the next), instead of filling the in-flight window with appends that
    /// are lost, as etcd's raft `ReportUnreachable` does. Nothing happens on other nodes, for
    /// unknown peers, or for a follower that is already probing or receiving a snapshot.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if self.role != Role::Leader || peer == self.id {
            return;
        }
        if let Some(p) = self.progress.get_mut(&peer)
            && p.state == ProgressState::Replicate
        {
            p.become_probe();
        }
    }

    // ---- output ------------------------------------------------------------------------

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    /// Whether [`ready`](Self::ready) has anything.
    pub fn has_ready(&self) -> bool {
        self.broadcast_due
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || self.has_reads_to_send()
            || self.hard_state() != self.last_hard_state
            || (self.role, self.leader) != self.last_role
            || self.log.handed_out < self.log.unstable.len()
            || self.log.committed.min(self.log.persisted_last()) > self.log.applied
            || self.pending_snapshot.is_some()
            || !self.snapshot_chunks.is_empty()
    }

    /// Everything to act on since the last call; see [`Ready`].
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if reading committed entries failed.
    pub fn ready(&mut self) -> Result<Ready, Error> {
        if self.broadcast_due && self.role == Role::Leader {
            self.broadcast_due = false;
            self.broadcast_append()?;
        }
        self.broadcast_due = false;
        self.send_reads();
        let mut ready = Ready {
            snapshot: self.pending_snapshot.take(),
            snapshot_chunks: std::mem::take(&mut self.snapshot_chunks),
            ..Ready::default()
        };
        if (self.role, self.leader) != self.last_role {
            self.last_role = (self.role, self.leader);
            ready.role_change = Some(self.last_role);
        }
        let hs = self.hard_state();
        if hs != self.last_hard_state {
            let last = self.last_hard_state;
            // Terms only move forward.
            debug_assert!(
                hs.term >= last.term,
                "term went from {} to {}",
                last.term,
                hs.term
            );
            // A node votes at most once per term: its vote changes only from none or with the term.
            debug_assert!(
                hs.term > last.term || last.vote == 0 || hs.vote == last.vote,
                "vote changed from {} to {} in term {}",
                last.vote,
                hs.vote,
                hs.term
            );
            // The commit index never goes down.
            debug_assert!(
                hs.commit >= last.commit,
                "commit index went from {} to {}",
                last.commit,
                hs.commit
            );
            self.last_hard_state = hs;
            ready.hard_state = Some(hs);
        }
        ready.entries = self.log.take_unstable();
        ready.messages = std::mem::take(&mut self.messages);
        ready.persisted_messages = std::mem::take(&mut self.persisted_messages);
        // Only entries this node has persisted are applied; those past the per-Ready limit
        // come in the next Ready (`has_ready` stays true while any is left).
        let apply_to = self.log.committed.min(self.log.persisted_last());
        if apply_to > self.log.applied {
            ready.committed_entries = self
                .log
                .entries(
                    self.log.applied + 1,
                    apply_to + 1,
                    self.config.committed_bytes_per_ready_max,
                )
                .map_err(Error::Storage)?;
            for entry in &ready.committed_entries {
                self.log.applied = entry.index;
                if entry.kind == EntryKind::ConfChange as i32 {
                    self.apply_conf_change(entry);
                }
            }
        }
        if self.leave_joint_due
            && self.role == Role::Leader
            && self.membership.is_joint()
            && self.pending_conf_index <= self.log.applied
        {
            // Appended directly: neither a transfer under way, nor the uncommitted-bytes cap,
            // nor this leader's own removal may keep the cluster joint.
            self.leave_joint_due = false;
            let index = self.log.last_index() + 1;
            let data = Bytes::from(ConfChange::default().encode_to_vec());
            self.log.append(vec![Entry::new(
                self.term,
                index,
                EntryKind::ConfChange,
                data,
            )]);
            self.pending_conf_index = index;
            self.leaving |= !self.membership.voters.contains(&self.id);
            self.broadcast_due = true;
        }
        ready.read_states = std::mem::take(&mut self.read_states);
        self.debug_assert_invariants();
        Ok(ready)
    }

    /// The driver persisted `ready`'s hard state and entries (its storage now holds them).
    pub fn advance(&mut self, ready: &Ready) {
        if let Some(last) = ready.entries.last() {
            self.log.stable_to(last.index, last.term);
        }
        if self.role == Role::Leader {
            let persisted = self.log.persisted_last();
            if let Some(me) = self.progress.get_mut(&self.id) {
                me.maybe_update(persisted);
            }
            if self.maybe_commit() {
                self.broadcast_due = true;
            }
        }
        self.debug_assert_invariants();
    }

    /// Checks, in debug builds, what holds after every `ready` and `advance` (the simulator
    /// and the tests then check it at every step).
    fn debug_assert_invariants(&self) {
        self.debug_assert_reads();
        let (applied, committed) = (self.log.applied, self.log.committed);
        // Only committed entries are applied (a snapshot covers both equally).
        debug_assert!(
            applied <= committed,
            "node {}: applied {applied} past the commit index {committed}",
            self.id
        );
        // Only entries the log holds (or the snapshot it starts after covers) are committed.
        debug_assert!(
            committed <= self.log.last_index(),
            "node {}: commit index {committed} past the last index {}",
            self.id,
            self.log.last_index()
        );
        // A leader counts itself for a commit only up to what it has persisted.
        if self.role == Role::Leader
            && let Some(me) = self.progress.get(&self.id)
        {
            debug_assert!(
                me.matched <= self.log.persisted_last(),
                "leader {}: own match {} past its persisted last index {}",
                self.id,
                me.matched,
                self.log.persisted_last()
            );
        }
    }
}
