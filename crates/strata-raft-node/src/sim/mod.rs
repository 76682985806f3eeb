//! Deterministic simulation: a cluster of cores in memory, where one seed decides everything
//! (the clock with drift, message loss, duplication and reordering, partitions, persists that
//! take time, crashes that lose what was not yet persisted, restarts, and client requests),
//! checked against Raft's safety properties (election safety and state machine safety after
//! every step, leader completeness every step, log matching every 25 steps), then healed:
//! every node must catch up and a client operation must complete (liveness), and the
//! clients' history must be linearizable. The seed also picks pre-vote, check-quorum and the
//! in-flight window.
//!
//! `cargo xtask sim` runs it over many seeds; a failure names its seed, and
//! `cargo xtask sim --seed N` replays it exactly.
//!
//! [`Sim`] is one run (its steps in `run`, `clients` and `faults`, the checks in `checks`);
//! [`Cluster`] is the harness under it, which the crate's other tests also drive by hand, with
//! a [`SimStore`] per node. The module is compiled only with the crate's `sim` feature.

mod checks;
mod clients;
mod cluster;
mod faults;
mod rng;
mod run;
mod store;

pub use crate::linearizability;
pub use cluster::{Cluster, SnapshotPolicy, log_with_terms};
pub use rng::SimRng;
pub use run::{Sim, SimOptions, SimReport, run, run_traced};
pub use store::SimStore;
