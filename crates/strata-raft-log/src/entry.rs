//! What the log stores: Raft entries, and the hard state with the compaction point.

use bytes::Bytes;

/// One Raft log entry. Encoded with protobuf (`prost`), one per WAL record.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Entry {
    /// The leader's term when the entry was created.
    #[prost(uint64, tag = "1")]
    pub term: u64,
    /// Its position in the log, from 1.
    #[prost(uint64, tag = "2")]
    pub index: u64,
    /// What the data is; see [`EntryKind`] and [`Entry::kind`].
    #[prost(enumeration = "EntryKind", tag = "3")]
    pub kind: i32,
    /// The command (or configuration change), opaque to the log.
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
}

impl Entry {
    /// An entry of `kind` at `index` in `term`.
    pub fn new(term: u64, index: u64, kind: EntryKind, data: impl Into<Bytes>) -> Self {
        Self {
            term,
            index,
            kind: kind as i32,
            data: data.into(),
        }
    }

    /// Bytes the entry takes in memory, for the cache's budget.
    pub fn size(&self) -> usize {
        self.data.len() + 32
    }
}

/// What an entry's data is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EntryKind {
    /// A command for the state machine (empty: the no-op a new leader appends).
    Normal = 0,
    /// A membership change.
    ConfChange = 1,
}

/// What Raft must never forget across a crash: the current term, the vote cast in it, and the
/// commit index (which may lag: it can always be learned again).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: u64,
    /// The node it voted for in `term`; 0 for none (node ids start at 1).
    pub vote: u64,
    /// The highest index known to be committed.
    pub commit: u64,
}

/// A record of the state log: the hard state and the compaction point.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct StateRecord {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    #[prost(uint64, tag = "2")]
    pub vote: u64,
    #[prost(uint64, tag = "3")]
    pub commit: u64,
    /// Entries up to this index are gone (in a snapshot); the log starts after it.
    #[prost(uint64, tag = "4")]
    pub compacted_index: u64,
    /// The term of the entry at `compacted_index`.
    #[prost(uint64, tag = "5")]
    pub compacted_term: u64,
    /// The first LSN (= index) of the live entry log, which names its directory
    /// (`entries-NNNNNNNNNNNNNNNNNNNN`); a reset starts a new one.
    #[prost(uint64, tag = "6")]
    pub log_start: u64,
}
