//! Runs a [`strata_raft`] core on Tokio: [`RaftNode`].
//!
//! A node owns a durable `strata_raft_log::RaftLog`, a [`StateMachine`] and a [`Transport`]
//! ([`MemNetwork`] in process; `strata-transport` over TCP). Its loop ticks the core, steps
//! inbound messages and client requests, and acts on each `Ready` with [`process_ready`]: the
//! one function that does it in the order Raft's safety needs, which the deterministic
//! simulator (`sim`, with the `sim` feature) runs too, over memory. Its clients' histories go
//! through [`linearizability`], a checker that anyone recording a key-value history can use
//! (`cargo xtask chaos` does, against real servers).
//!
//! The seams a server builds on:
//! - **Batched apply with a durable applied index.** [`StateMachine::apply`] takes every
//!   committed entry of a `Ready` at once (no-op and membership entries included, so the
//!   applied index has no gaps) and answers each command; [`StateMachine::applied_index`] at
//!   start tells the node what the state machine already holds, so a durable one restarts
//!   without restoring a snapshot or re-applying anything.
//! - **A transport that cannot stall Raft.** [`Transport::send`] enqueues and returns at
//!   once; queues are bounded and a full one drops (Raft resends); snapshot chunks travel on a
//!   lane of their own ([`Inbox`]); a peer the transport cannot reach is reported
//!   ([`Transport::take_unreachable`]) and the core stops pipelining to it.
//! - **Bounded everywhere.** Client requests ([`NodeOptions::requests_max`]), batches waiting
//!   for the state machine ([`NodeOptions::apply_batches_max`]) and the inbox's lanes
//!   ([`INBOX_MESSAGES_MAX`], [`INBOX_CHUNKS_MAX`]) are bounded queues; no channel in the node
//!   is unbounded.
//! - **Reads.** Every [`RaftNode::read_index`] asked while no round is out shares one
//!   heartbeat round, and those asked while one is out share the next (one at a time, unless
//!   a round is still out after a tick); on a follower, the read is forwarded to the leader,
//!   which answers with its commit index.
//! - **Snapshots** as file sets (`strata-snapshot`), taken off the apply path
//!   ([`StateMachine::snapshot`]), streamed to followers that need them, and restored from
//!   ([`StateMachine::restore`]).
//!
//! # Examples
//!
//! Three nodes in one process, on durable logs and the in-memory network:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use strata_raft::{Config, Role};
//! use strata_raft_log::{LogOptions, RaftLog};
//! use strata_raft_node::{
//!     Committed, CommittedKind, MemNetwork, NodeOptions, RaftNode, SnapshotWriter,
//!     StateMachine,
//! };
//!
//! /// The state machine: here, a counter of applied commands.
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
//!         let mut answers = Vec::new();
//!         for entry in batch {
//!             if let CommittedKind::Command(_) = entry.kind {
//!                 self.0 += 1;
//!                 answers.push(Bytes::from(self.0.to_string()));
//!             }
//!         }
//!         Ok(answers)
//!     }
//!
//!     fn applied_index(&self) -> u64 {
//!         0 // nothing is kept across restarts
//!     }
//!
//!     async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter> {
//!         let count = self.0; // captured here, written off the apply path
//!         Ok(Box::new(move |dir: &std::path::Path| {
//!             std::fs::write(dir.join("count"), count.to_le_bytes())?;
//!             Ok(vec!["count".to_owned()])
//!         }))
//!     }
//!
//!     async fn restore(
//!         &mut self,
//!         dir: &std::path::Path,
//!         _files: &[String],
//!         _last_index: u64,
//!     ) -> std::io::Result<()> {
//!         let bytes = std::fs::read(dir.join("count"))?;
//!         self.0 = u64::from_le_bytes(bytes.try_into().map_err(|_| std::io::ErrorKind::InvalidData)?);
//!         Ok(())
//!     }
//! }
//!
//! let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     let dir = tempfile::tempdir()?;
//!     let net = MemNetwork::new();
//!     let mut nodes = Vec::new();
//!     for id in [1, 2, 3] {
//!         let log = RaftLog::open(&dir.path().join(id.to_string()), LogOptions::default())?;
//!         let (transport, inbox) = net.join(id);
//!         nodes.push(RaftNode::start(
//!             Config::new(id, vec![1, 2, 3]),
//!             // A tick of 10 ms; the snapshot store.
//!             NodeOptions::new(Duration::from_millis(10), dir.path().join(format!("{id}.snap"))),
//!             Arc::new(log),
//!             Counter(0),
//!             transport,
//!             inbox,
//!         )?);
//!     }
//!     // Wait for an election, then propose at the leader.
//!     let mut status = nodes[0].status();
//!     let leader = status.wait_for(|s| s.leader != 0).await?.leader;
//!     let leader = &nodes[leader as usize - 1];
//!     let answer = leader.propose(Bytes::from_static(b"hello"), Duration::from_secs(5)).await?;
//!     assert_eq!(answer, Bytes::from_static(b"1"));
//!     // A linearizable read point, here and on a follower.
//!     leader.read_index(Duration::from_secs(5)).await?;
//!     assert_eq!(leader.status().borrow().role, Role::Leader);
//!     for node in nodes {
//!         node.shutdown().await;
//!     }
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod apply;
mod event_loop;
mod force;
mod inbox;
pub mod linearizability;
mod mem_network;
mod node;
mod ready;
#[cfg(feature = "sim")]
pub mod sim;
mod traits;

pub use force::{Forced, force_new_cluster};
pub use inbox::{
    ACTIVITY_GAP_DEFAULT, ACTIVITY_PEERS_MAX, INBOX_CHUNKS_MAX, INBOX_MESSAGES_MAX, Inbox,
    InboxSender, PeerActivity, inbox, inbox_with,
};
pub use mem_network::{MemNetwork, MemTransport};
pub use node::{DriverError, RaftNode};
pub use ready::{ReadyIo, begin, begin_needs_io, finish, needs_io, persist, process_ready};
pub use traits::{Committed, CommittedKind, NodeOptions, SnapshotWriter, StateMachine, Transport};
