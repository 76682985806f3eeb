//! The benches' lean gRPC client (`benches/support/grpc.rs`) against a real member: its calls
//! do what the etcd-client crate's do, its answers decode to the same, a response larger than
//! one HTTP/2 frame arrives whole, and an error status is an error, not an empty answer; its
//! watch stream delivers every event whole and in order.

mod support;

#[path = "../benches/support/grpc.rs"]
mod grpc;

use grpc::{CallError, Connection, Rpc, WatchResponse};
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

/// The lean watch stream: watchers created with the ids asked for, each put's event to the
/// watchers of its key (a prefix watcher too) with its value whole (one of 40 KiB spans
/// several DATA frames), in order; and the server's end of the stream is a clean `None`.
#[test]
fn the_bench_watch_stream_delivers_every_event_whole_and_in_order() {
    use strata_server::proto::etcdserverpb::{
        WatchCreateRequest, WatchRequest, watch_request::RequestUnion,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 1, &[]);
    let endpoint = cluster.endpoints()[0].clone();
    runtime().block_on(async {
        let _ready = wait_ready(&endpoint).await;
        let c = Connection::connect(&endpoint).await.expect("connect");
        let (mut sender, mut receiver) = c.watch().await.expect("open a watch stream");
        let create = |key: &[u8], range_end: &[u8], watch_id| WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: key.to_vec(),
                range_end: range_end.to_vec(),
                watch_id,
                ..WatchCreateRequest::default()
            })),
        };
        sender.send([&create(b"w/a", b"", 7)]).expect("create");
        sender.send([&create(b"w/", b"w0", 9)]).expect("create");
        let mut created = Vec::new();
        while created.len() < 2 {
            let response: WatchResponse = receiver
                .message()
                .await
                .expect("a response")
                .expect("the stream is open");
            assert!(response.created, "{response:?}");
            created.push(response.watch_id);
        }
        created.sort_unstable();
        assert_eq!(created, [7, 9]);

        let values: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![b'a' + i; if i == 2 { 40 * 1024 } else { 64 }])
            .collect();
        for value in &values {
            let _: PutResponse = c
                .call(Rpc::Put, &put(b"w/a", value.clone()))
                .await
                .expect("put");
        }
        let mut got: std::collections::BTreeMap<i64, Vec<Vec<u8>>> = Default::default();
        while got.values().map(Vec::len).sum::<usize>() < 2 * values.len() {
            let response: WatchResponse = receiver
                .message()
                .await
                .expect("a response")
                .expect("the stream is open");
            for event in response.events {
                let kv = event.kv.expect("a put's event has its kv");
                got.entry(response.watch_id)
                    .or_default()
                    .push(kv.value.to_vec());
            }
        }
        assert_eq!(got.get(&7), Some(&values));
        assert_eq!(got.get(&9), Some(&values));

        // The member goes away: the stream ends, as an error or as its end, never as a
        // message.
        cluster.kill(0);
        let end = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            receiver.message::<WatchResponse>(),
        )
        .await
        .expect("the stream ends once the member is gone");
        assert!(!matches!(end, Ok(Some(_))), "{end:?}");
    });
}

/// The watch bench's setup: several streams on one connection, each sent thousands of creates
/// at once, get every create answered. Sent a frame per create, the member's HTTP/2 server
/// took them for a flood of small frames and ended the connection (`too_many_data_frames`).
#[test]
fn thousands_of_creates_sent_at_once_on_several_streams_are_all_answered() {
    use strata_server::proto::etcdserverpb::{
        WatchCreateRequest, WatchRequest, watch_request::RequestUnion,
    };
    const STREAMS: usize = 5;
    const CREATES: i64 = 2_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 1, &[]);
    let endpoint = cluster.endpoints()[0].clone();
    runtime().block_on(async {
        let _ready = wait_ready(&endpoint).await;
        let c = Connection::connect(&endpoint).await.expect("connect");
        let mut streams = Vec::new();
        for _ in 0..STREAMS {
            let (mut sender, receiver) = c.watch().await.expect("open a watch stream");
            let creates: Vec<WatchRequest> = (1..=CREATES)
                .map(|id| WatchRequest {
                    request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                        key: format!("w/{id}").into_bytes(),
                        watch_id: id,
                        ..WatchCreateRequest::default()
                    })),
                })
                .collect();
            for chunk in creates.chunks(1_000) {
                sender.send(chunk).expect("send creates");
            }
            streams.push((sender, receiver));
        }
        for (s, (_sender, receiver)) in streams.iter_mut().enumerate() {
            let mut ids = Vec::new();
            while ids.len() < CREATES as usize {
                let response: WatchResponse = receiver
                    .message()
                    .await
                    .unwrap_or_else(|e| panic!("stream {s} after {} creates: {e}", ids.len()))
                    .expect("the stream is open");
                assert!(response.created, "{response:?}");
                ids.push(response.watch_id);
            }
            assert_eq!(ids, (1..=CREATES).collect::<Vec<_>>(), "stream {s}");
        }
    });
}
