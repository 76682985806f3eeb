//! A Raft consensus core that does no I/O, reads no clock and draws no randomness of its own.
//!
//! Messages ([`Raft::step`]), ticks ([`Raft::tick`]) and proposals ([`Raft::propose`]) go in; a
//! [`Ready`] comes out with what to persist, what to send (and what may be sent only after
//! persisting), what is committed and must be applied, and confirmed reads. The driver acts on
//! it and calls [`Raft::advance`]. The log is read through [`Storage`], implemented by
//! `strata_raft_log::RaftLog` (durable) and [`MemStorage`] (tests and simulation).
//!
//! Today: leader election with randomized timeouts from a configured seed, pre-vote and
//! check-quorum; log replication with next/match indexes, fast back-off on rejection using
//! conflict-term hints, pipelining within an in-flight window (messages and bytes) and probe
//! mode; proposals batched into one append and one persist per `Ready`; commit only by a
//! quorum's match on an entry of the current term; heartbeats carrying the commit index;
//! ReadIndex reads (those asked together share one heartbeat round; a follower forwards its
//! reads to the leader) and opt-in lease reads; leadership transfer; membership changes
//! (with an opaque context for the members); a cap on uncommitted bytes and on one entry's
//! bytes; probing a follower the transport reports unreachable; refused and counted bad
//! input; snapshots (below).
//!
//! `sim`, compiled only with the `sim` feature, is a deterministic simulator of a whole
//! cluster, where one seed decides the clock, message loss, duplication and reordering,
//! partitions, crashes and client requests; it checks Raft's safety properties after every
//! step and the clients' history for linearizability (`sim::linearizability`). The crate's
//! tests turn the feature on, and `cargo xtask sim` runs the simulator over many seeds; a node
//! does not need it.
//!
//! [`RaftNode`] is the async driver on Tokio: it runs a core on a durable
//! `strata_raft_log::RaftLog`, a [`Transport`] ([`MemNetwork`] in process; TCP later) and a
//! [`StateMachine`], with `propose` (a future of the applied answer, with a timeout),
//! `read_index`, `transfer_leader` and watchable status and applied index. Proposals waiting
//! together become one append and one `fdatasync`; entries are applied off the hot path.
//!
//! Membership changes use joint consensus ([`Raft::propose_conf_change`], [`Membership`]):
//! a change enters a joint configuration in which every decision needs a majority of both the
//! old and the new voters, and the leader leaves it by itself once it is applied; learners
//! receive the log without voting and can be promoted.
//!
//! Snapshots: a leader streams a follower that needs entries its log no longer holds the latest
//! snapshot, in chunks of a `strata_snapshot` file set, a window at a time, resending what is
//! not acknowledged within two heartbeats; the follower installs it (keeping later entries only
//! if they match, Figure 13's rule 7) and takes its configuration (a [`ConfState`] in the
//! snapshot's metadata). The driver takes snapshots by entries or bytes applied, or on
//! request ([`RaftNode::request_snapshot`], skipped when nothing was applied since the last;
//! [`RaftNode::export_snapshot`] to a directory), through [`StateMachine::snapshot`] (a
//! capture on the apply path, the writing off it), compacts the log up to
//! [`NodeOptions::compaction_overhead_entries`] entries before it, and restores from the latest
//! one at restart ([`StateMachine::restore`]).
//!
//! # Examples
//!
//! A single voter elects itself and commits a proposal:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use strata_raft::{Config, MemStorage, Raft, Role};
//! use strata_raft_log::HardState;
//!
//! let mut node = Raft::new(Config::new(1, vec![1]), MemStorage::default(), HardState::default())?;
//! let mut applied = Vec::new();
//! let mut step = |node: &mut Raft<MemStorage>| -> Result<(), Box<dyn std::error::Error>> {
//!     let ready = node.ready()?;
//!     node.storage_mut().append(&ready.entries); // persist
//!     applied.extend(ready.committed_entries.iter().map(|e| e.data.clone()));
//!     node.advance(&ready);
//!     Ok(())
//! };
//! while node.role() != Role::Leader {
//!     node.tick();
//! }
//! step(&mut node)?;
//! node.propose(bytes::Bytes::from_static(b"put x=1"))?;
//! while node.has_ready() {
//!     step(&mut node)?;
//! }
//! assert_eq!(applied.last().map(|d| &d[..]), Some(&b"put x=1"[..]));
//! # Ok(())
//! # }
//! ```
//!
//! Three nodes in one process, on durable logs and the in-memory network:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use strata_raft::{
//!     Config, MemNetwork, NodeOptions, RaftNode, Role, SnapshotWriter, StateMachine, Transport,
//! };
//! use strata_raft_log::{LogOptions, RaftLog};
//!
//! /// The state machine: here, a counter of applied commands.
//! struct Counter(u64);
//!
//! #[async_trait::async_trait]
//! impl StateMachine for Counter {
//!     async fn apply(&mut self, _index: u64, _command: Bytes) -> Bytes {
//!         self.0 += 1;
//!         Bytes::from(self.0.to_string())
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
//!     async fn restore(&mut self, dir: &std::path::Path, _files: &[String]) -> std::io::Result<()> {
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
//!         nodes.push(RaftNode::start(
//!             Config::new(id, vec![1, 2, 3]),
//!             // A tick of 10 ms; the snapshot store.
//!             NodeOptions::new(Duration::from_millis(10), dir.path().join(format!("{id}.snap"))),
//!             Arc::new(log),
//!             Counter(0),
//!             Arc::clone(&net) as Arc<dyn Transport>,
//!             net.join(id),
//!         )?);
//!     }
//!     // Wait for an election, then propose at the leader.
//!     let mut status = nodes[0].status();
//!     let leader = status.wait_for(|s| s.leader != 0).await?.leader;
//!     let leader = &nodes[leader as usize - 1];
//!     let answer = leader.propose(Bytes::from_static(b"hello"), Duration::from_secs(5)).await?;
//!     assert_eq!(answer, Bytes::from_static(b"1"));
//!     // A linearizable read point.
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

mod driver;
mod log_view;
mod membership;
mod message;
mod progress;
mod raft;
#[cfg(feature = "sim")]
pub mod sim;
mod storage;

pub use driver::{
    DriverError, MemNetwork, NodeOptions, RaftNode, SnapshotWriter, StateMachine, Transport,
};
pub use membership::{Change, ChangeKind, ConfChange, ConfState, Membership};
pub use message::{Message, MessageType, NodeId};
pub use progress::ProgressState;
pub use raft::{Config, Counters, Error, Raft, ReadState, Ready, Role, Status};
pub use storage::{MemStorage, Storage};
