//! What a [`RaftNode`] runs on: the state machine it drives, how it reaches other nodes, and
//! its options.
//!
//! [`RaftNode`]: crate::RaftNode

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use strata_raft::{ConfChange, Message, NodeId};

/// Writes a captured state as files into a directory and returns their names (see
/// [`StateMachine::snapshot`]).
pub type SnapshotWriter = Box<dyn FnOnce(&Path) -> std::io::Result<Vec<String>> + Send>;

/// One committed entry, as the state machine sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// Its index: a batch's entries are consecutive, with no gaps between batches.
    pub index: u64,
    /// The term it was proposed in.
    pub term: u64,
    /// What it carries.
    pub kind: CommittedKind,
}

/// What a [`Committed`] entry carries.
#[derive(Debug, Clone, PartialEq)]
pub enum CommittedKind {
    /// A command: the state machine answers it (the answer goes to the proposer).
    Command(Bytes),
    /// A leader's no-op (every new leader appends one); nothing to do but count the index.
    Noop,
    /// A membership change, with the `context` its proposer gave it (for example a new
    /// member's addresses); the core has already taken it into its configuration.
    Membership(ConfChange),
}

/// The state machine the log drives (the server's key-value store).
///
/// Every method returns a `Send` future, so that the node can run it on any Tokio worker;
/// implementations write `async fn`.
pub trait StateMachine: Send + 'static {
    /// Applies a batch of committed entries, in index order: every committed entry of one
    /// `Ready` at once, so that a durable state machine writes the batch once (one write
    /// batch, with the batch's last index in it). Returns one answer per
    /// [`CommittedKind::Command`] of the batch, in order; no-op and membership entries get
    /// none, but count for the applied index.
    ///
    /// # Errors
    ///
    /// An I/O error: the node stops, as a crash would (the state machine cannot be trusted
    /// past what it holds durably; a restart re-applies from [`applied_index`]).
    ///
    /// [`applied_index`]: StateMachine::applied_index
    fn apply(
        &mut self,
        batch: Vec<Committed>,
    ) -> impl Future<Output = std::io::Result<Vec<Bytes>>> + Send;

    /// The last index whose effects the state machine holds, at start: what a durable state
    /// machine persisted atomically with its batches (0 if it keeps nothing). The node
    /// restores from its snapshot store only if the snapshot there is newer, and applies from
    /// the entry after the larger of the two, so that a durable state machine restarts without
    /// a restore and re-applies nothing it holds.
    fn applied_index(&self) -> u64;

    /// Captures the state as of the last applied entry. This runs between two applies, so
    /// it should be cheap (a point-in-time view, a copy-on-write handle, hard links); the
    /// returned writer then puts the state into a directory as files (plain names, none
    /// called `meta`), on the blocking pool while applying goes on.
    ///
    /// # Errors
    ///
    /// An I/O error: no snapshot is taken (the next trigger tries again).
    fn snapshot(&mut self) -> impl Future<Output = std::io::Result<SnapshotWriter>> + Send;

    /// Replaces the whole state with the snapshot whose files (`files`, as the writer named
    /// them) are in `dir`, taken at `last_index`; entries after it are applied next. A
    /// durable state machine records `last_index` as its applied index.
    ///
    /// # Errors
    ///
    /// An I/O error: the node stops (a restart tries again).
    fn restore(
        &mut self,
        dir: &Path,
        files: &[String],
        last_index: u64,
    ) -> impl Future<Output = std::io::Result<()>> + Send;
}

/// How a [`RaftNode`](crate::RaftNode) runs: its clock, its queues and its snapshots.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// One tick of the core's clock.
    pub tick: Duration,
    /// The node's snapshot store (a `strata_snapshot::Receiver` directory).
    pub snapshot_dir: PathBuf,
    /// Take a snapshot once this many entries were applied since the last one (0: not by
    /// count). Default 100,000.
    pub snapshot_entries: u64,
    /// Take a snapshot once this many bytes of commands were applied since the last one (0:
    /// not by size). Default 256 MiB.
    pub snapshot_bytes: u64,
    /// Entries kept in the log before a snapshot's last index, so that a follower slightly
    /// behind gets entries rather than a snapshot. Default 5,000.
    pub compaction_overhead_entries: u64,
    /// Client requests (proposals, reads, membership changes) waiting for the loop, at most;
    /// a caller past it waits for room. Default 4,096: the most one loop iteration takes.
    pub requests_max: usize,
    /// Batches of committed entries handed to the applying task and not yet applied, at
    /// most; past it the loop waits for the state machine (each batch holds up to
    /// `Config::committed_bytes_per_ready_max` of entries). Default 8.
    pub apply_batches_max: usize,
}

impl NodeOptions {
    /// Defaults, with a tick of `tick` and the snapshot store in `snapshot_dir`.
    pub fn new(tick: Duration, snapshot_dir: impl Into<PathBuf>) -> Self {
        Self {
            tick,
            snapshot_dir: snapshot_dir.into(),
            snapshot_entries: 100_000,
            snapshot_bytes: 256 << 20,
            compaction_overhead_entries: 5_000,
            requests_max: 4096,
            apply_batches_max: 8,
        }
    }
}

/// How messages reach other nodes (`strata-transport`'s TCP, or [`MemNetwork`] in process).
///
/// The node calls it from its loop, so it must never wait: the contract is the whole point of
/// the trait.
///
/// [`MemNetwork`]: crate::MemNetwork
pub trait Transport: Send + Sync + 'static {
    /// Enqueues `messages` for their recipients and returns at once, without waiting for the
    /// network. Each peer's queue is bounded; a message that finds its queue full is dropped
    /// and counted (Raft copes with loss: it resends). Snapshot chunks
    /// (`MessageType::InstallSnapshot`) go on a lane of their own, so that heartbeats and
    /// appends never wait behind them.
    fn send(&self, messages: Vec<Message>);

    /// The peers it failed to reach since the last call (a dropped message, a broken
    /// connection); the node tells the core, which stops pipelining appends to them until
    /// they answer again. Default: none.
    fn take_unreachable(&self) -> Vec<NodeId> {
        Vec::new()
    }
}
