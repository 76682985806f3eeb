//! Bounds on what strangers and vanished peers can hold: connections still in their handshake
//! are capped (the oldest waiting goes, so strangers cannot keep a peer out), and a newer
//! connection from a peer replaces the older one on the same lane.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;
use strata_raft_node::{Transport, inbox};
use strata_transport::{
    HANDSHAKES_MAX, Hello, Lane, PROTOCOL_VERSION, TcpTransport, TransportConfig, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);
const CLUSTER: u64 = 11;

async fn node() -> (std::sync::Arc<TcpTransport>, strata_raft_node::Inbox) {
    let (sender, inbox) = inbox();
    // Node 2 is a known peer (its address is never dialed here).
    let peers = BTreeMap::from([(2, "127.0.0.1:9".parse().expect("addr"))]);
    let config = TransportConfig::new(1, CLUSTER, "127.0.0.1:0".parse().expect("addr"), peers);
    (
        TcpTransport::bind(config, sender).await.expect("bind"),
        inbox,
    )
}

async fn wait_refused(transport: &TcpTransport, count: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while transport.metrics().refused < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not refused in time"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_handshake_cap_the_oldest_waiting_connection_is_closed_and_a_peer_gets_in() {
    let (transport, _inbox) = node().await;
    let addr = transport.local_addr();
    // Connections that never say hello, up to the cap.
    let mut idle = Vec::new();
    for _ in 0..HANDSHAKES_MAX {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // One more: the node accepts in order, so the first is now the oldest over the cap.
    let _one_more = TcpStream::connect(addr).await.expect("connect");
    wait_refused(&transport, 1).await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, idle[0].read(&mut byte))
        .await
        .expect("closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the oldest waiting connection is closed"
    );
    // While strangers hold every slot, a peer's handshake still gets through (it evicts the
    // oldest stranger and finishes in milliseconds).
    let _peer = hello(addr).await;
    drop(idle);
}

async fn hello(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut out = BytesMut::new();
    encode(
        &Hello {
            version: PROTOCOL_VERSION,
            cluster_id: CLUSTER,
            from: 2,
            to: 1,
            lane: Lane::Control as i32,
        },
        &mut out,
    );
    stream.write_all(&out).await.expect("hello");
    // The Welcome.
    let mut welcome = [0u8; 64];
    let n = tokio::time::timeout(WAIT, stream.read(&mut welcome))
        .await
        .expect("welcomed in time")
        .expect("read");
    assert!(n > 0, "welcomed");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_from_a_peer_replaces_the_older_on_its_lane() {
    let (transport, _inbox) = node().await;
    let addr = transport.local_addr();
    let mut older = hello(addr).await;
    let _newer = hello(addr).await;
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, older.read(&mut byte))
        .await
        .expect("closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the older connection is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_sent_after_shutdown() {
    let (transport, _inbox) = node().await;
    transport.shutdown();
    transport.send(vec![strata_raft::Message {
        msg_type: strata_raft::MessageType::Heartbeat as i32,
        from: 1,
        to: 2,
        term: 1,
        ..strata_raft::Message::default()
    }]);
    // No queue or writer was made for the peer: nothing can reconnect.
    assert!(transport.metrics().lanes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_that_cannot_work_are_refused_at_start() {
    let (sender, _inbox) = inbox();
    let mut config = TransportConfig::new(
        1,
        CLUSTER,
        "127.0.0.1:0".parse().expect("addr"),
        BTreeMap::new(),
    );
    config.reconnect_min = Duration::ZERO;
    let refused = TcpTransport::bind(config, sender).await;
    assert!(
        matches!(refused, Err(strata_transport::BindError::Config(_))),
        "{refused:?}"
    );
}
