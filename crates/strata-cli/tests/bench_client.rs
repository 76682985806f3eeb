//! The benches' lean gRPC client (`benches/support/grpc.rs`) against a real member: its calls
//! do what the etcd-client crate's do, its answers decode to the same, a response larger than
//! one HTTP/2 frame arrives whole, and an error status is an error, not an empty answer.

mod support;

#[path = "../benches/support/grpc.rs"]
mod grpc;

use grpc::{CallError, Connection, Rpc};
use strata_server::proto::etcdserverpb::{
    Compare, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest,
    TxnResponse, compare, request_op,
};
use support::cluster::{Cluster, runtime, wait_ready};

fn put(key: &[u8], value: Vec<u8>) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value,
        ..PutRequest::default()
    }
}

fn range(key: &[u8], range_end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..RangeRequest::default()
    }
}

fn cas(key: &[u8], mod_revision: i64, value: &[u8]) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.to_vec(),
            range_end: Vec::new(),
            target_union: Some(compare::TargetUnion::ModRevision(mod_revision)),
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put(key, value.to_vec()))),
        }],
        failure: Vec::new(),
    }
}

#[test]
fn the_bench_client_puts_reads_and_reports_errors_as_etcd_client_sees_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 1, &[]);
    let endpoint = cluster.endpoints()[0].clone();
    runtime().block_on(async {
        let mut reference = wait_ready(&endpoint).await;
        let c = Connection::connect(&endpoint).await.expect("connect");

        // 100 values of 1 KiB: the range's answer spans several 16 KiB DATA frames.
        let mut last = 0;
        for i in 0..100u32 {
            let value = vec![b'a' + (i % 26) as u8; 1024];
            let key = format!("k/{i:03}");
            let answer: PutResponse = c
                .call(Rpc::Put, &put(key.as_bytes(), value))
                .await
                .expect("put");
            let revision = answer.header.expect("a header").revision;
            assert!(revision > last, "revisions rise: {revision} after {last}");
            last = revision;
        }
        let answer: RangeResponse = c
            .call(Rpc::Range, &range(b"k/", b"k0"))
            .await
            .expect("range");
        assert_eq!(answer.count, 100);
        let seen = reference
            .get("k/", Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("etcd-client range");
        assert_eq!(answer.kvs.len(), seen.kvs().len());
        for (ours, theirs) in answer.kvs.iter().zip(seen.kvs()) {
            assert_eq!(ours.key, theirs.key());
            assert_eq!(ours.value, theirs.value());
            assert_eq!(ours.mod_revision, theirs.mod_revision());
        }

        // Compare-and-set: succeeds at the key's revision, fails at another.
        let txn: TxnResponse = c
            .call(Rpc::Txn, &cas(b"k/000", answer.kvs[0].mod_revision, b"new"))
            .await
            .expect("txn");
        assert!(txn.succeeded);
        let txn: TxnResponse = c
            .call(
                Rpc::Txn,
                &cas(b"k/000", answer.kvs[0].mod_revision, b"again"),
            )
            .await
            .expect("txn");
        assert!(!txn.succeeded);
        let now = reference.get("k/000", None).await.expect("get");
        assert_eq!(now.kvs()[0].value(), b"new");

        // A read at a future revision: etcd's OutOfRange status, as an error.
        let future = RangeRequest {
            revision: last + 1_000,
            ..range(b"k/000", b"")
        };
        match c.call::<_, RangeResponse>(Rpc::Range, &future).await {
            Err(CallError::Status { code, message }) => {
                assert_eq!(code, "11", "{message}");
                assert!(message.contains("future revision"), "{message}");
            }
            other => panic!("a future revision answered {other:?}"),
        }
        // The connection still serves calls after an error.
        let answer: RangeResponse = c
            .call(Rpc::Range, &range(b"k/001", b""))
            .await
            .expect("range after an error");
        assert_eq!(answer.kvs.len(), 1);
    });
}
