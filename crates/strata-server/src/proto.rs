//! The generated gRPC code: etcd's v3 API, the seed's Kvdb service and Strata's own Raft
//! requests.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// etcd's mvccpb: both of its messages are strata-mvcc's own (prost generates nothing for it).
pub mod mvccpb {
    pub use strata_mvcc::api::{Event, KeyValue, event};
}

/// etcd's authpb.
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// etcd's etcdserverpb: the KV, Watch, Lease, Cluster, Maintenance and Auth services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    pub use strata_mvcc::api::{
        CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
        PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
        ResponseOp, TxnRequest, TxnResponse, compare, range_request, request_op, response_op,
    };
}

/// The seed's Kvdb service.
pub mod clientpb {
    tonic::include_proto!("clientpb");
}

/// etcd's v3lockpb: the Lock service.
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// etcd's v3electionpb: the Election service.
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// What Strata replicates through Raft.
pub mod strataserverpb {
    tonic::include_proto!("strataserverpb");
}
