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
//! The crate does no I/O: `strata-raft-node` runs a core on Tokio (`RaftNode`), with a durable
//! log, a transport and a state machine, and processes each [`Ready`] with one function that
//! its deterministic simulator runs too.
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
//! snapshot's metadata). When to take snapshots, and how their files are written, read and
//! staged, is the driver's ([`Raft::set_snapshot`] tells the core of a new one).
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
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod log_view;
mod membership;
mod message;
mod progress;
mod raft;
mod storage;

pub use membership::{Change, ChangeKind, ConfChange, ConfState, Membership};
pub use message::{Message, MessageType, NodeId};
pub use progress::ProgressState;
pub use raft::{Config, Counters, Error, Raft, ReadState, Ready, Role, Status, decode_membership};
pub use storage::{MemStorage, Storage};
