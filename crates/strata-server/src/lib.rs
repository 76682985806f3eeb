//! The Strata database server: etcd's v3 API and the seed's Kvdb service over gRPC, on a Raft
//! group whose state machine is `strata-mvcc` on `strata-lsm`.

pub mod config;
