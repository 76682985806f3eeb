//! What a [`RaftNode`] runs on: the state machine it drives, how it reaches other nodes, and
//! its options.
//!
//! [`RaftNode`]: super::RaftNode

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::message::Message;

/// Writes a captured state as files into a directory and returns their names (see
/// [`StateMachine::snapshot`]).
pub type SnapshotWriter = Box<dyn FnOnce(&Path) -> std::io::Result<Vec<String>> + Send>;

/// The state machine the log drives (the server's key-value store).
#[async_trait::async_trait]
pub trait StateMachine: Send + 'static {
    /// Applies the committed command at `index`; what it returns answers the proposal.
    /// Called once per entry, in index order (after a restart, from the entry after the
    /// snapshot it was restored from, or the first entry in the log).
    async fn apply(&mut self, index: u64, command: Bytes) -> Bytes;

    /// Captures the state as of the last applied entry. This runs between two applies, so
    /// it should be cheap (a point-in-time view, a copy-on-write handle, hard links); the
    /// returned writer then puts the state into a directory as files (plain names, none
    /// called `meta`), on the blocking pool while applying goes on.
    ///
    /// # Errors
    ///
    /// An I/O error: no snapshot is taken (the next trigger tries again).
    async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter>;

    /// Replaces the state with the snapshot whose files (`files`, as the writer named them)
    /// are in `dir`; entries after the snapshot's last index are applied next.
    ///
    /// # Errors
    ///
    /// An I/O error: the node stops (a restart tries again).
    async fn restore(&mut self, dir: &Path, files: &[String]) -> std::io::Result<()>;
}

/// How a [`RaftNode`](super::RaftNode) runs: its clock and its snapshots.
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
        }
    }
}

/// How messages reach other nodes (TCP later; [`MemNetwork`](super::MemNetwork) here).
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends messages, best effort: Raft copes with loss.
    async fn send(&self, messages: Vec<Message>);
}
