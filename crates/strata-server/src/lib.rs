//! The Strata database server: etcd's v3 API (KV, Watch, Lease, Auth, Cluster, Maintenance,
//! Lock, Election) and the seed's Kvdb
//! service over gRPC, on a Raft group (`strata-raft-node` over `strata-transport`) whose state
//! machine is `strata-mvcc` on `strata-lsm`.
//!
//! The shape follows etcd's server: each service decodes and validates a request, then reads
//! at this member (after a ReadIndex round unless the client asked for a serializable read) or
//! proposes it through Raft; the apply path ([`machine`]) is the only writer of state; every
//! client-visible error text is in one table ([`rpctypes`]). A follower forwards writes to the
//! leader's client port and answers once it has applied them itself.

pub mod auth;
pub mod background;
pub mod cluster;
pub mod coalesce;
pub mod config;
pub mod corrupt;
pub mod election;
pub mod forward;
pub mod gateway;
pub mod grpc;
pub mod http;
pub mod kv;
pub mod kvdb;
pub mod lease;
pub mod lock;
pub mod machine;
pub mod maintenance;
pub mod metrics;
pub mod proto;
pub mod reconfig;
pub mod restore;
pub mod rpctypes;
pub mod server;
pub mod snapshot_file;
pub mod state;
pub mod tls;
pub mod watch;

pub use server::{Server, ServerError};
