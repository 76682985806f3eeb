//! The fault-injecting proxy the fault tests use: bytes pass through both ways, a hold stops
//! one direction without closing, a cut closes mid-stream, a block refuses new connections, and
//! dropping the proxy closes everything.

#[allow(dead_code)]
mod support {
    pub mod proxy;
}

use std::time::Duration;

use support::proxy::{Direction, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How long a test waits for anything that must happen.
const WAIT: Duration = Duration::from_secs(10);

/// How long a test watches for something that must not happen.
const QUIET: Duration = Duration::from_millis(200);

/// A server that hands each accepted connection to the test.
async fn server() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if tx.send(stream).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// A client connected through `proxy`, and the server's end of it.
async fn connect(
    proxy: &Proxy,
    accepted: &mut mpsc::UnboundedReceiver<TcpStream>,
) -> (TcpStream, TcpStream) {
    let client = TcpStream::connect(proxy.addr()).await.expect("connect");
    let server = tokio::time::timeout(WAIT, accepted.recv())
        .await
        .expect("the proxy connects to the target in time")
        .expect("the server runs");
    (client, server)
}

async fn read_exact(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; n];
    tokio::time::timeout(WAIT, stream.read_exact(&mut buffer))
        .await
        .expect("in time")
        .expect("read");
    buffer
}

/// Reads until the end of the stream (or a reset); what was read.
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buffer))
            .await
            .expect("the connection closes in time")
        {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buffer[..n]),
        }
    }
}

/// Polls `done` until it holds, within [`WAIT`].
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not in time: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bytes that are not all alike, so that a reordering or a lost chunk shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn bytes_pass_through_both_ways_in_order() {
    let (target, mut accepted) = server().await;
    let proxy = Proxy::start(target).await.expect("proxy");
    proxy.set_delay(Duration::from_millis(1));
    let (mut client, mut server) = connect(&proxy, &mut accepted).await;
    let up = pattern(200_000);
    let writer = tokio::spawn({
        let up = up.clone();
        async move {
            client.write_all(&up).await.expect("write");
            client
        }
    });
    assert_eq!(read_exact(&mut server, up.len()).await, up);
    let mut client = writer.await.expect("writer");
    let down = pattern(50_000);
    server.write_all(&down).await.expect("write");
    assert_eq!(read_exact(&mut client, down.len()).await, down);
    // A close passes through too, and the other way still works.
    client.shutdown().await.expect("shutdown");
    assert!(read_to_end(&mut server).await.is_empty());
    server.write_all(b"after").await.expect("write");
    assert_eq!(read_exact(&mut client, 5).await, b"after");
    // The counters follow the writes they count.
    eventually("bytes counted", || {
        let stats = proxy.stats();
        stats.bytes_to_server == up.len() as u64 && stats.bytes_to_client == down.len() as u64 + 5
    })
    .await;
    let stats = proxy.stats();
    assert_eq!((stats.accepted, stats.cuts, stats.drops), (1, 0, 0));
}

/// Holds `direction` (from `sender` to `receiver`) and checks that its bytes wait while the
/// other direction flows, and arrive once released.
async fn check_hold(
    proxy: &Proxy,
    direction: Direction,
    sender: &mut TcpStream,
    receiver: &mut TcpStream,
) {
    proxy.hold(direction, true);
    sender.write_all(b"held").await.expect("write");
    // The other direction still flows...
    receiver.write_all(b"open").await.expect("write");
    assert_eq!(read_exact(sender, 4).await, b"open");
    // ...while nothing of the held one arrives.
    let mut buffer = [0u8; 4];
    assert!(
        tokio::time::timeout(QUIET, receiver.read(&mut buffer))
            .await
            .is_err(),
        "{direction:?} is held"
    );
    proxy.hold(direction, false);
    assert_eq!(read_exact(receiver, 4).await, b"held");
}

#[tokio::test]
async fn a_hold_stops_one_direction_without_closing_and_a_release_delivers_what_waited() {
    let (target, mut accepted) = server().await;
    let proxy = Proxy::start(target).await.expect("proxy");
    let (mut client, mut server) = connect(&proxy, &mut accepted).await;
    check_hold(&proxy, Direction::ToServer, &mut client, &mut server).await;
    check_hold(&proxy, Direction::ToClient, &mut server, &mut client).await;
    assert_eq!(proxy.stats().cuts, 0);
}

#[tokio::test]
async fn a_cut_closes_every_connection_after_a_prefix_of_its_next_read() {
    let (target, mut accepted) = server().await;
    let proxy = Proxy::start(target).await.expect("proxy");
    let (mut busy, mut busy_server) = connect(&proxy, &mut accepted).await;
    let (_idle, mut idle_server) = connect(&proxy, &mut accepted).await;
    // Both connections are open and forwarding before the cut.
    busy.write_all(b"before").await.expect("write");
    assert_eq!(read_exact(&mut busy_server, 6).await, b"before");
    proxy.cut_all();
    let chunk = pattern(8192);
    // The write may fail if the proxy has closed already.
    let _ = busy.write_all(&chunk).await;
    let torn = read_to_end(&mut busy_server).await;
    assert!(
        torn.len() < chunk.len(),
        "a strict prefix passed: {} bytes",
        torn.len()
    );
    assert_eq!(torn[..], chunk[..torn.len()]);
    // The idle one is closed too, without any read.
    assert!(read_to_end(&mut idle_server).await.is_empty());
    eventually("two cuts counted", || proxy.stats().cuts == 2).await;
    // A connection made after the cut is not cut.
    let (mut fresh, mut fresh_server) = connect(&proxy, &mut accepted).await;
    fresh.write_all(b"fresh").await.expect("write");
    assert_eq!(read_exact(&mut fresh_server, 5).await, b"fresh");
}

#[tokio::test]
async fn a_drop_probability_of_one_closes_at_the_first_chunk() {
    let (target, mut accepted) = server().await;
    let proxy = Proxy::start(target).await.expect("proxy");
    proxy.set_drop_probability(1.0);
    let (mut client, mut server) = connect(&proxy, &mut accepted).await;
    client.write_all(&pattern(1000)).await.expect("write");
    assert!(read_to_end(&mut server).await.len() < 1000);
    eventually("a drop counted", || proxy.stats().drops == 1).await;
}

#[tokio::test]
async fn a_block_closes_new_connections_and_leaves_open_ones() {
    let (target, mut accepted) = server().await;
    let proxy = Proxy::start(target).await.expect("proxy");
    let (mut open, mut open_server) = connect(&proxy, &mut accepted).await;
    proxy.block(true);
    let mut refused = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert!(read_to_end(&mut refused).await.is_empty());
    assert_eq!(proxy.stats().blocked, 1);
    open.write_all(b"still").await.expect("write");
    assert_eq!(read_exact(&mut open_server, 5).await, b"still");
    proxy.block(false);
    let (mut again, mut again_server) = connect(&proxy, &mut accepted).await;
    again.write_all(b"again").await.expect("write");
    assert_eq!(read_exact(&mut again_server, 5).await, b"again");
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections_and_its_port() {
    let (target, mut accepted) = server().await;
    let proxy = Proxy::start(target).await.expect("proxy");
    let addr = proxy.addr();
    let (mut client, mut server) = connect(&proxy, &mut accepted).await;
    drop(proxy);
    assert!(read_to_end(&mut client).await.is_empty());
    assert!(read_to_end(&mut server).await.is_empty());
    // The listener is gone once the aborted task is dropped (polled).
    let deadline = tokio::time::Instant::now() + WAIT;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "still listening");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
