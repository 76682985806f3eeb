//! The messages Raft nodes exchange (protobuf, so that the TCP transport can carry them as is).

use bytes::Bytes;
use strata_raft_log::Entry;
use strata_snapshot::{Chunk, SnapshotMeta};

/// A node's id; 0 means none.
pub type NodeId = u64;

/// What a [`Message`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MessageType {
    /// Leader to follower: entries after (`index`, `log_term`), and the commit index.
    Append = 0,
    /// Follower to leader: accepted up to `index`, or rejected with a hint.
    AppendResponse = 1,
    /// Candidate: vote for me in `term`; my log ends at (`index`, `log_term`).
    Vote = 2,
    /// Answer to [`MessageType::Vote`].
    VoteResponse = 3,
    /// Would you vote for me in `term` (which I have not started)?
    PreVote = 4,
    /// Answer to [`MessageType::PreVote`].
    PreVoteResponse = 5,
    /// Leader to follower: I am alive; the commit index; a read context to acknowledge.
    Heartbeat = 6,
    /// Answer to [`MessageType::Heartbeat`].
    HeartbeatResponse = 7,
    /// Leader to the transfer target: start an election now.
    TimeoutNow = 8,
    /// Leader to follower: one chunk (`chunk`) of the snapshot `snapshot`. The core sets only
    /// the chunk's position; the driver reads its data before sending (see
    /// [`Ready::messages`](crate::Ready)).
    InstallSnapshot = 9,
    /// Follower to leader about the snapshot `chunk.snapshot_id` covering `index`: the
    /// position it needs next in `chunk` (`reject`: after a gap), or `chunk.done` once
    /// installed; or, with `reject` and no `chunk`, not needed: its commit index `index` is
    /// already past it.
    SnapshotResponse = 10,
    /// Follower to its leader: confirm a read for me (Ongaro's thesis §6.4, forwarded as
    /// etcd's raft does). `context` names the batch of reads the follower was asked for; the
    /// leader echoes it.
    ReadIndex = 11,
    /// Leader to the follower that sent [`MessageType::ReadIndex`], once it has confirmed its
    /// leadership: `index` is its commit index as of when it received the request, `context`
    /// the request's.
    ReadIndexResponse = 12,
}

/// One Raft message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    /// What it is; see [`Message::kind`].
    #[prost(enumeration = "MessageType", tag = "1")]
    pub msg_type: i32,
    /// Sender.
    #[prost(uint64, tag = "2")]
    pub from: NodeId,
    /// Recipient.
    #[prost(uint64, tag = "3")]
    pub to: NodeId,
    /// The sender's term.
    #[prost(uint64, tag = "4")]
    pub term: u64,
    /// Append: the term of the entry before `entries`. Votes: the candidate's last term.
    /// AppendResponse (rejected): the term at `reject_hint`.
    #[prost(uint64, tag = "5")]
    pub log_term: u64,
    /// Append: the index before `entries`. Votes: the candidate's last index.
    /// AppendResponse: the last index accepted, or the rejected append's `index`.
    /// ReadIndexResponse: the index the reads must wait for (the leader's commit index).
    #[prost(uint64, tag = "6")]
    pub index: u64,
    /// Append: the entries.
    #[prost(message, repeated, tag = "7")]
    pub entries: Vec<Entry>,
    /// Append and heartbeat: the leader's commit index (for a heartbeat, capped at what the
    /// follower is known to hold).
    #[prost(uint64, tag = "8")]
    pub commit: u64,
    /// Responses: refused.
    #[prost(bool, tag = "9")]
    pub reject: bool,
    /// AppendResponse (rejected): where the follower's log may agree with the leader's: the
    /// largest index at or before the rejected one whose term is at most the rejected term.
    #[prost(uint64, tag = "10")]
    pub reject_hint: u64,
    /// Heartbeat and its response: the leader's round of reads being confirmed, if any.
    /// ReadIndex and its response: the follower's batch of reads. Vote: `transfer` in an
    /// election a leader asked for.
    #[prost(bytes = "bytes", tag = "11")]
    pub context: Bytes,
    /// Heartbeat: the leader's clock when it sent it; the response echoes it, so that a
    /// leader lease is measured from when the heartbeat left, never from when a (possibly
    /// delayed or duplicated) answer arrived.
    #[prost(uint64, tag = "12")]
    pub sent_tick: u64,
    /// InstallSnapshot: the snapshot's metadata (it goes with every chunk, so that a
    /// follower can start or resume receiving at any chunk).
    #[prost(message, optional, tag = "13")]
    pub snapshot: Option<SnapshotMeta>,
    /// InstallSnapshot: the chunk. SnapshotResponse: the position the follower needs (no
    /// data), or `done`.
    #[prost(message, optional, tag = "14")]
    pub chunk: Option<Chunk>,
}

impl Message {
    /// The message type (an unknown value reads as [`MessageType::Append`]; `Raft::step`
    /// refuses those before looking).
    pub fn kind(&self) -> MessageType {
        MessageType::try_from(self.msg_type).unwrap_or(MessageType::Append)
    }

    pub(crate) fn new(kind: MessageType, from: NodeId, to: NodeId, term: u64) -> Self {
        Self {
            msg_type: kind as i32,
            from,
            to,
            term,
            ..Self::default()
        }
    }
}
