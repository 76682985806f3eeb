//! How a transport is set up.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use strata_raft::NodeId;

use crate::frame::FRAME_BYTES_MAX;
use crate::tls::TlsConfig;

/// Messages waiting to go to one peer on the control lane, at most: a leader keeps up to
/// `Config::inflight_msgs_max` (256) appends in flight per follower, plus heartbeats and
/// votes; past this, the newest are dropped and counted (Raft resends).
pub const CONTROL_QUEUE_MAX: usize = 1024;

/// Snapshot chunks waiting to go to one peer, at most: a leader keeps
/// `Config::snapshot_inflight_chunks_max` (4) in flight, 1 MiB each by default.
pub const SNAPSHOT_QUEUE_MAX: usize = 8;

/// Messages one write takes from a queue, at most: they go out in one system call.
pub const WRITE_BATCH_MAX: usize = 256;

/// How a [`TcpTransport`](crate::TcpTransport) runs.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node.
    pub id: NodeId,
    /// The cluster: a peer with another id is refused (etcd's `--initial-cluster-token`).
    pub cluster_id: u64,
    /// Where to listen for peers (port 0: any free port; see
    /// [`TcpTransport::local_addr`](crate::TcpTransport::local_addr)).
    pub listen: SocketAddr,
    /// The peers' addresses. Only these may connect; more can be added while running
    /// ([`TcpTransport::set_peer`](crate::TcpTransport::set_peer)), for example from a
    /// membership change's context.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The host names peers are reached by, where their URLs give a name rather than an
    /// address: with TLS, a peer's certificate must be valid for that name when this node
    /// dials it (as Go checks the URL's host), instead of for its address. More can be set
    /// while running ([`TcpTransport::set_peer_host`](crate::TcpTransport::set_peer_host)).
    pub peer_hosts: BTreeMap<NodeId, String>,
    /// See [`CONTROL_QUEUE_MAX`].
    pub control_queue_max: usize,
    /// See [`SNAPSHOT_QUEUE_MAX`].
    pub snapshot_queue_max: usize,
    /// The largest frame accepted; see [`FRAME_BYTES_MAX`].
    pub frame_bytes_max: usize,
    /// The first wait before reconnecting to a peer; it doubles with each failure, up to
    /// `reconnect_max`, with up to half of it added at random (so that peers do not retry in
    /// step). Default 50 ms.
    pub reconnect_min: Duration,
    /// See `reconnect_min`. Default 2 s.
    pub reconnect_max: Duration,
    /// How long a connection may take to connect and to finish its handshake. Default 5 s.
    pub handshake_timeout: Duration,
    /// Mutual TLS between peers; `None`: plain TCP (a trusted network only).
    pub tls: Option<TlsConfig>,
}

impl TransportConfig {
    /// Refuses settings that cannot work: zero queues, a frame limit below the handshake's,
    /// zero or inverted reconnect waits, a zero handshake timeout.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.id == 0 {
            return Err("node id 0 is reserved");
        }
        if self.control_queue_max == 0 || self.snapshot_queue_max == 0 {
            return Err("queues must hold at least one message");
        }
        if self.frame_bytes_max < crate::outbound::HANDSHAKE_BYTES_MAX {
            return Err("frame_bytes_max is below the handshake's frame limit");
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return Err("reconnect_min must be positive and at most reconnect_max");
        }
        if self.handshake_timeout.is_zero() {
            return Err("handshake_timeout must be positive");
        }
        Ok(())
    }

    /// Defaults for node `id` of cluster `cluster_id`, listening on `listen`, with `peers`.
    pub fn new(
        id: NodeId,
        cluster_id: u64,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> Self {
        Self {
            id,
            cluster_id,
            listen,
            peers,
            peer_hosts: BTreeMap::new(),
            control_queue_max: CONTROL_QUEUE_MAX,
            snapshot_queue_max: SNAPSHOT_QUEUE_MAX,
            frame_bytes_max: FRAME_BYTES_MAX,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}
