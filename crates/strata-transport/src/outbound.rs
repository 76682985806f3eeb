//! The outbound side: per peer, one bounded queue and one writer task per lane. A writer
//! connects when it has something to send, says [`Hello`], and then writes everything waiting
//! in its queue with one system call; on any failure it reports the peer unreachable and
//! reconnects after a growing, jittered wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use prost::Message as _;
use strata_raft::{Message, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::Shared;
use crate::config::WRITE_BATCH_MAX;
use crate::frame::{self, Hello, Lane, PROTOCOL_VERSION, Welcome};
use crate::metrics::{LaneCounters, add};
use crate::tls::Conn;

/// The largest handshake frame read (a [`Welcome`] with its reason).
pub(crate) const HANDSHAKE_BYTES_MAX: usize = 4096;

/// One peer's queues, one per lane.
#[derive(Debug)]
pub(crate) struct Outbound {
    pub(crate) control: mpsc::Sender<Message>,
    pub(crate) snapshot: mpsc::Sender<Message>,
}

/// One lane's writer toward one peer.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: NodeId,
    pub(crate) lane: Lane,
    pub(crate) rx: mpsc::Receiver<Message>,
    pub(crate) counters: Arc<LaneCounters>,
}

/// Why a connection could not be used.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no address known")]
    NoAddress,
    #[error("refused at the handshake: {0}")]
    Refused(String),
    #[error("handshake: {0}")]
    Handshake(#[from] frame::FrameError),
    #[error("timed out")]
    Timeout,
}

impl Writer {
    /// Runs until the queue closes (the transport shut down).
    pub(crate) async fn run(mut self) {
        let config = &self.shared.config;
        let mut wait = config.reconnect_min;
        let mut jitter = Jitter::new(self.shared.config.id ^ self.peer.rotate_left(32));
        let mut batch: Vec<Message> = Vec::with_capacity(WRITE_BATCH_MAX);
        let mut buffer = BytesMut::new();
        loop {
            // Connect only once there is something to send.
            if batch.is_empty() && self.rx.recv_many(&mut batch, WRITE_BATCH_MAX).await == 0 {
                return;
            }
            let connected = self.connect().await;
            let (mut stream, addr) = match connected {
                Ok(connected) => {
                    add(&self.counters.connects, 1);
                    wait = config.reconnect_min;
                    connected
                }
                Err(e) => {
                    add(&self.counters.connect_failures, 1);
                    if matches!(e, LinkError::Refused(_)) {
                        // A misconfiguration (another cluster, a certificate not allowed),
                        // not a peer that is down: operators must see it.
                        tracing::warn!(peer = self.peer, lane = ?self.lane, "cannot reach the peer: {e}");
                    } else {
                        tracing::debug!(peer = self.peer, lane = ?self.lane, "cannot reach the peer: {e}");
                    }
                    self.give_up(&mut batch, &mut wait, &mut jitter).await;
                    continue;
                }
            };
            loop {
                if batch.is_empty() && self.rx.recv_many(&mut batch, WRITE_BATCH_MAX).await == 0 {
                    return;
                }
                if self.shared.addr(self.peer) != Some(addr) {
                    // The peer moved (`set_peer`): the next connection goes to its new address.
                    break;
                }
                buffer.clear();
                let mut frames = 0;
                let max = config.frame_bytes_max;
                for m in &batch {
                    if m.encoded_len() > max {
                        // The peer would close the connection on it, and Raft would send it
                        // again: drop it and say so (the limits are misconfigured).
                        add(&self.counters.dropped, 1);
                        tracing::error!(
                            peer = self.peer,
                            bytes = m.encoded_len(),
                            max,
                            "a message above the frame limit was dropped"
                        );
                        continue;
                    }
                    frame::encode(m, &mut buffer);
                    frames += 1;
                }
                // Everything waiting goes out in one write, within the handshake timeout: a
                // peer that takes nothing for that long (gone without closing, a black hole)
                // is reconnected to.
                let written =
                    tokio::time::timeout(config.handshake_timeout, stream.write_all(&buffer)).await;
                match written {
                    Ok(Ok(())) => {
                        add(&self.counters.frames_sent, frames);
                        add(&self.counters.bytes_sent, buffer.len() as u64);
                        batch.clear();
                    }
                    Ok(Err(e)) => {
                        tracing::info!(peer = self.peer, lane = ?self.lane, "the link to the peer broke: {e}");
                        self.give_up(&mut batch, &mut wait, &mut jitter).await;
                        break;
                    }
                    Err(_) => {
                        tracing::info!(peer = self.peer, lane = ?self.lane, "the peer took nothing in time");
                        self.give_up(&mut batch, &mut wait, &mut jitter).await;
                        break;
                    }
                }
                if buffer.capacity() > 4 * frame::FRAME_BYTES_MAX {
                    // A burst of chunks grew it: give the memory back.
                    buffer = BytesMut::new();
                }
            }
        }
    }

    /// The link failed: what waited is dropped and counted (stale by the next attempt; Raft
    /// resends what matters), the peer is reported unreachable, and the writer waits before
    /// reconnecting, a little longer each time, with jitter.
    async fn give_up(&self, batch: &mut Vec<Message>, wait: &mut Duration, jitter: &mut Jitter) {
        add(&self.counters.dropped, batch.len() as u64);
        batch.clear();
        self.shared.unreachable(self.peer);
        let pause = *wait + jitter.up_to(*wait / 2);
        *wait = wait.saturating_mul(2).min(self.shared.config.reconnect_max);
        tokio::time::sleep(pause).await;
    }

    /// Connects to the peer and shakes hands, within the handshake timeout; the connection
    /// and the address it went to.
    async fn connect(&self) -> Result<(Box<dyn Conn>, SocketAddr), LinkError> {
        let addr = self.shared.addr(self.peer).ok_or(LinkError::NoAddress)?;
        let timeout = self.shared.config.handshake_timeout;
        let stream = tokio::time::timeout(timeout, self.handshake(addr))
            .await
            .map_err(|_| LinkError::Timeout)??;
        Ok((stream, addr))
    }

    async fn handshake(&self, addr: SocketAddr) -> Result<Box<dyn Conn>, LinkError> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut stream: Box<dyn Conn> = match &self.shared.tls {
            None => Box::new(tcp),
            Some(tls) => {
                // The peer's certificate must name the host it is reached by: its URL's name
                // if it has one, else its address.
                let name = match self.shared.host(self.peer) {
                    Some(host) => rustls_pki_types::ServerName::try_from(host.clone())
                        .map_err(|e| LinkError::Refused(format!("host {host:?}: {e}")))?,
                    None => rustls_pki_types::ServerName::IpAddress(addr.ip().into()),
                };
                let stream = tls.connector().connect(name, tcp).await?;
                if let Some(config) = &self.shared.config.tls {
                    let leaf = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(<[_]>::first);
                    config
                        .check_allowed(leaf)
                        .map_err(|e| LinkError::Refused(format!("the peer's certificate: {e}")))?;
                }
                Box::new(stream)
            }
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            cluster_id: self.shared.config.cluster_id,
            from: self.shared.config.id,
            to: self.peer,
            lane: self.lane as i32,
        };
        let mut buffer = BytesMut::new();
        frame::encode(&hello, &mut buffer);
        stream.write_all(&buffer).await?;
        buffer.clear();
        let welcome: Welcome = loop {
            if let Some(body) = frame::split_frame(&mut buffer, HANDSHAKE_BYTES_MAX)? {
                break frame::decode_handshake(body)?;
            }
            if stream.read_buf(&mut buffer).await? == 0 {
                return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        };
        if !welcome.accepted {
            tracing::warn!(
                peer = self.peer,
                %addr,
                "the peer refused this node: {}",
                welcome.reason
            );
            return Err(LinkError::Refused(welcome.reason));
        }
        Ok(stream)
    }
}

/// The waits' randomness: xorshift64 from a seed (no clock or global generator needed).
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // Never zero: xorshift stays at zero once there.
        Self((seed ^ nanos) | 1)
    }

    /// A duration in `0..=max`.
    fn up_to(&mut self, max: Duration) -> Duration {
        // xorshift64's shifts.
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.0 % nanos.saturating_add(1))
    }
}
