//! The inbound side: accepts connections, checks each one's [`Hello`] (version, cluster,
//! sender, recipient) before anything reaches Raft, then reads frames and hands the messages to
//! the node's inbox. Bad input closes that connection only, and is counted.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Shared;
use crate::frame::{self, FrameError, Hello, Lane, PROTOCOL_VERSION, Welcome};
use crate::metrics::add;
use crate::outbound::HANDSHAKE_BYTES_MAX;
use crate::tls::Conn;

/// Bytes read from a connection at a time, at least: many small frames per read.
const READ_BYTES_MIN: usize = 64 << 10;

/// Accepts connections until the transport shuts down.
pub(crate) async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let shared_for_task = Arc::clone(&shared);
                let task = tokio::spawn(serve(stream, addr, shared_for_task));
                shared.keep(task);
            }
            Err(e) => {
                // Out of file descriptors, mostly: wait a little rather than spin.
                tracing::warn!("accepting a peer connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why a connection was refused or closed.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no handshake in time")]
    Timeout,
}

async fn serve(tcp: TcpStream, addr: SocketAddr, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    let mut stream: Box<dyn Conn> = match &shared.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let accepted =
                tokio::time::timeout(shared.config.handshake_timeout, tls.acceptor.accept(tcp))
                    .await;
            match accepted {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(e)) => {
                    add(&shared.refused, 1);
                    tracing::warn!(%addr, "refused a peer connection at TLS: {e}");
                    return;
                }
                Err(_) => {
                    add(&shared.refused, 1);
                    tracing::warn!(%addr, "refused a peer connection: no TLS handshake in time");
                    return;
                }
            }
        }
    };
    let mut buffer = BytesMut::with_capacity(READ_BYTES_MIN);
    let hello = tokio::time::timeout(
        shared.config.handshake_timeout,
        read_hello(&mut stream, &mut buffer),
    )
    .await
    .map_err(|_| Refusal::Timeout)
    .and_then(|read| read);
    let hello = match hello {
        Ok(hello) => hello,
        Err(e) => {
            add(&shared.refused, 1);
            tracing::warn!(%addr, "refused a peer connection: {e}");
            return;
        }
    };
    if let Err(reason) = check(&hello, &shared) {
        add(&shared.refused, 1);
        tracing::warn!(
            %addr,
            from = hello.from,
            cluster_id = hello.cluster_id,
            "refused a peer connection: {reason}"
        );
        let mut out = BytesMut::new();
        frame::encode(
            &Welcome {
                accepted: false,
                reason,
                version: PROTOCOL_VERSION,
            },
            &mut out,
        );
        let _ = stream.write_all(&out).await;
        return;
    }
    let mut out = BytesMut::new();
    frame::encode(
        &Welcome {
            accepted: true,
            reason: String::new(),
            version: PROTOCOL_VERSION,
        },
        &mut out,
    );
    if stream.write_all(&out).await.is_err() {
        return;
    }
    let lane = Lane::try_from(hello.lane).unwrap_or(Lane::Control);
    let counters = shared.counters(hello.from, lane);
    let max = shared.config.frame_bytes_max;
    loop {
        loop {
            let body = match frame::split_frame(&mut buffer, max) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => return bad(&shared, addr, hello.from, &e.to_string()),
            };
            let len = body.len() as u64;
            let message = match frame::decode_message(body) {
                Ok(message) => message,
                Err(e) => return bad(&shared, addr, hello.from, &e.to_string()),
            };
            if message.from != hello.from || message.to != shared.config.id {
                return bad(
                    &shared,
                    addr,
                    hello.from,
                    "a message from or to another node than the handshake said",
                );
            }
            add(&counters.frames_received, 1);
            add(&counters.bytes_received, len + frame::LENGTH_BYTES as u64);
            // A full inbox lane drops it and counts (Raft resends).
            shared.inbox.deliver(message);
        }
        if buffer.capacity() - buffer.len() < READ_BYTES_MIN / 2 {
            buffer.reserve(READ_BYTES_MIN);
        }
        match stream.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn read_hello(stream: &mut Box<dyn Conn>, buffer: &mut BytesMut) -> Result<Hello, Refusal> {
    loop {
        if let Some(body) = frame::split_frame(buffer, HANDSHAKE_BYTES_MAX)? {
            return Ok(frame::decode_handshake(body)?);
        }
        if stream.read_buf(buffer).await? == 0 {
            return Err(Refusal::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Whether the dialer may talk to this node; the reason if not.
fn check(hello: &Hello, shared: &Shared) -> Result<(), String> {
    if hello.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} (this node speaks {PROTOCOL_VERSION})",
            hello.version
        ));
    }
    if hello.cluster_id != shared.config.cluster_id {
        return Err(format!(
            "cluster {:#x}, not this node's {:#x}",
            hello.cluster_id, shared.config.cluster_id
        ));
    }
    if hello.to != shared.config.id {
        return Err(format!(
            "meant for node {}, this is node {}",
            hello.to, shared.config.id
        ));
    }
    if shared.addr(hello.from).is_none() {
        return Err(format!("node {} is not a known peer", hello.from));
    }
    if Lane::try_from(hello.lane).is_err() {
        return Err(format!("unknown lane {}", hello.lane));
    }
    Ok(())
}

fn bad(shared: &Shared, addr: SocketAddr, from: u64, reason: &str) {
    add(&shared.bad_frames, 1);
    tracing::warn!(%addr, from, "closed a peer connection: {reason}");
}
