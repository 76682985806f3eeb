//! Raft over TCP: [`TcpTransport`] implements `strata-raft-node`'s [`Transport`] contract.
//!
//! - **Lanes.** Per peer, one outbound connection for Raft's own messages (votes, appends,
//!   heartbeats, reads) and one for snapshot chunks, each with its own bounded queue
//!   ([`CONTROL_QUEUE_MAX`], [`SNAPSHOT_QUEUE_MAX`]) and writer task: a heartbeat never waits
//!   behind a 1 MiB chunk, a slow peer or another peer. [`Transport::send`] only queues; a full
//!   queue drops the message and counts it (Raft resends).
//! - **Frames** (`docs/formats/transport.md`): a 4-byte length, then one protobuf message.
//!   Everything waiting in a queue goes out in one write; a reader splits frames off its read
//!   buffer without copying them, so a message's bytes (entries, chunk data) are slices of what
//!   was read.
//! - **A handshake on every connection** ([`Hello`], [`Welcome`]): the protocol version, the
//!   cluster id, the sender and the recipient. Another cluster, an unknown node or another
//!   version is refused with one log line and counted, and never reaches Raft. After it, an
//!   oversized frame ([`FRAME_BYTES_MAX`]), one that does not decode, or a message claiming
//!   another sender closes that connection only, and is counted.
//! - **Reconnects** with a wait that doubles from `reconnect_min` to `reconnect_max`, with
//!   jitter; a peer that cannot be reached (or whose queue is full) is reported to Raft
//!   ([`Transport::take_unreachable`]), which stops pipelining appends to it.
//! - **Mutual TLS** ([`TlsConfig`], as etcd's `--peer-cert-file`, `--peer-key-file`,
//!   `--peer-trusted-ca-file`, `--peer-client-cert-auth`): a peer without a certificate signed
//!   by the trusted CA is refused before its handshake is read. Revocation lists and cipher
//!   suites as etcd's `--peer-crl-file` and `--cipher-suites`; the files are read again when
//!   they change ([`tls::Reloading`]), so certificates rotate without a restart.
//! - **Metrics** per peer and lane ([`TcpTransport::metrics`]).
//!
//! # Examples
//!
//! Two nodes' transports on loopback; node 1 sends node 2 a heartbeat:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::collections::BTreeMap;
//!
//! use strata_raft::{Message, MessageType};
//! use strata_raft_node::{Transport, inbox};
//! use strata_transport::{TcpTransport, TransportConfig};
//!
//! let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//! runtime.block_on(async {
//!     let any = "127.0.0.1:0".parse()?;
//!     let (to_two, mut two_inbox) = inbox();
//!     let two = TcpTransport::bind(TransportConfig::new(2, 7, any, BTreeMap::new()), to_two).await?;
//!     let (to_one, _one_inbox) = inbox();
//!     let peers = BTreeMap::from([(2, two.local_addr())]);
//!     let one = TcpTransport::bind(TransportConfig::new(1, 7, any, peers), to_one).await?;
//!     // Node 2 accepts only peers it knows.
//!     two.set_peer(1, one.local_addr());
//!     one.send(vec![Message { msg_type: MessageType::Heartbeat as i32, from: 1, to: 2, term: 1, ..Message::default() }]);
//!     let received = two_inbox.recv().await.expect("a message");
//!     assert_eq!(received.from, 1);
//!     one.shutdown();
//!     two.shutdown();
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod config;
mod frame;
mod inbound;
mod metrics;
mod outbound;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::{Mutex, RwLock};
use strata_raft::{Message, MessageType, NodeId};
use strata_raft_node::{InboxSender, Transport};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use config::{CONTROL_QUEUE_MAX, SNAPSHOT_QUEUE_MAX, TransportConfig, WRITE_BATCH_MAX};
pub use frame::{
    FRAME_BYTES_MAX, FrameError, Hello, LENGTH_BYTES, Lane, PROTOCOL_VERSION, RESERVE_STEP_BYTES,
    Welcome, decode_handshake, decode_message, encode, split_frame,
};
pub use inbound::HANDSHAKES_MAX;
pub use metrics::{LaneMetrics, Metrics};
pub use tls::{TlsConfig, TlsError};

use metrics::{LaneCounters, add};
use outbound::{Outbound, Writer};

/// The inbound connection serving a peer and lane: its number, and what ends it.
type ServingEntry = (u64, Arc<tokio::sync::Notify>);

/// What the transport's tasks share.
pub(crate) struct Shared {
    config: TransportConfig,
    peers: RwLock<BTreeMap<NodeId, SocketAddr>>,
    /// Peers' host names, where they have one (see [`TransportConfig::peer_hosts`]).
    hosts: RwLock<BTreeMap<NodeId, String>>,
    outbound: Mutex<HashMap<NodeId, Outbound>>,
    counters: Mutex<BTreeMap<(NodeId, Lane), Arc<LaneCounters>>>,
    /// Peers a message could not reach since Raft last asked.
    unreachable: Mutex<BTreeSet<NodeId>>,
    refused: AtomicU64,
    bad_frames: AtomicU64,
    /// The inbound connection serving each peer and lane: its number and how to close it.
    serving: Mutex<HashMap<(NodeId, Lane), ServingEntry>>,
    /// Numbers inbound connections, to tell a replaced one from its replacement.
    next_connection: AtomicU64,
    /// Shut down: nothing more is sent.
    stopped: std::sync::atomic::AtomicBool,
    inbox: InboxSender,
    /// Both ends of TLS, when configured.
    tls: Option<tls::Tls>,
    runtime: tokio::runtime::Handle,
    /// Every task, to stop them at shutdown.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Shared {
    fn addr(&self, peer: NodeId) -> Option<SocketAddr> {
        self.peers.read().get(&peer).copied()
    }

    fn host(&self, peer: NodeId) -> Option<String> {
        self.hosts.read().get(&peer).cloned()
    }

    fn unreachable(&self, peer: NodeId) {
        self.unreachable.lock().insert(peer);
    }

    fn counters(&self, peer: NodeId, lane: Lane) -> Arc<LaneCounters> {
        Arc::clone(self.counters.lock().entry((peer, lane)).or_default())
    }

    fn keep(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.tasks.lock();
        // Finished tasks (closed inbound connections) go, so the list stays as long as the
        // connections that are open.
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The listen address cannot be bound.
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A setting that cannot work.
    #[error("bad configuration: {0}")]
    Config(&'static str),
}

/// Raft over TCP; see the [crate] docs.
pub struct TcpTransport {
    shared: Arc<Shared>,
    local: SocketAddr,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("id", &self.shared.config.id)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// Listens on `config.listen` and delivers what peers send to `inbox` (the sending half
    /// of the node's `Inbox`). Runs on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`BindError::Io`] if the address cannot be bound, [`BindError::Tls`] if the TLS files
    /// cannot be used, [`BindError::Config`] for settings that cannot work.
    pub async fn bind(config: TransportConfig, inbox: InboxSender) -> Result<Arc<Self>, BindError> {
        config.check().map_err(BindError::Config)?;
        let tls = config.tls.as_ref().map(tls::Tls::load).transpose()?;
        let listener = TcpListener::bind(config.listen).await?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            peers: RwLock::new(config.peers.clone()),
            hosts: RwLock::new(config.peer_hosts.clone()),
            config,
            outbound: Mutex::new(HashMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            unreachable: Mutex::new(BTreeSet::new()),
            refused: AtomicU64::new(0),
            bad_frames: AtomicU64::new(0),
            serving: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            stopped: std::sync::atomic::AtomicBool::new(false),
            inbox,
            tls,
            runtime: tokio::runtime::Handle::current(),
            tasks: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(inbound::accept(listener, Arc::clone(&shared)));
        shared.keep(task);
        Ok(Arc::new(Self { shared, local }))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Adds or moves peer `id` (for example from a membership change's context): it may
    /// connect, and messages to it go to `addr` from the next connection on.
    pub fn set_peer(&self, id: NodeId, addr: SocketAddr) {
        self.shared.peers.write().insert(id, addr);
    }

    /// Sets the host name peer `id` is reached by (see
    /// [`TransportConfig::peer_hosts`]), from the next connection on; `None`: its address.
    pub fn set_peer_host(&self, id: NodeId, host: Option<String>) {
        let mut hosts = self.shared.hosts.write();
        match host {
            Some(host) => hosts.insert(id, host),
            None => hosts.remove(&id),
        };
    }

    /// The counters, read now.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            lanes: self
                .shared
                .counters
                .lock()
                .iter()
                .map(|(key, c)| (*key, c.snapshot()))
                .collect(),
            refused: self
                .shared
                .refused
                .load(std::sync::atomic::Ordering::Relaxed),
            bad_frames: self
                .shared
                .bad_frames
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Stops listening and closes every connection; what is queued is dropped, and what is
    /// sent afterwards too.
    pub fn shutdown(&self) {
        self.shared
            .stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.shared.outbound.lock().clear();
        for task in self.shared.tasks.lock().drain(..) {
            task.abort();
        }
    }

    /// Peer `to`'s queues, made (with their writer tasks) on first use.
    fn outbound<'a>(&self, map: &'a mut HashMap<NodeId, Outbound>, to: NodeId) -> &'a Outbound {
        map.entry(to).or_insert_with(|| {
            let config = &self.shared.config;
            let (control, control_rx) = mpsc::channel(config.control_queue_max.max(1));
            let (snapshot, snapshot_rx) = mpsc::channel(config.snapshot_queue_max.max(1));
            for (lane, rx) in [(Lane::Control, control_rx), (Lane::Snapshot, snapshot_rx)] {
                let writer = Writer {
                    shared: Arc::clone(&self.shared),
                    peer: to,
                    lane,
                    rx,
                    counters: self.shared.counters(to, lane),
                };
                let task = self.shared.runtime.spawn(writer.run());
                self.shared.keep(task);
            }
            Outbound { control, snapshot }
        })
    }
}

impl Transport for TcpTransport {
    fn send(&self, messages: Vec<Message>) {
        let mut map = self.shared.outbound.lock();
        // Checked under the lock `shutdown` clears the queues under: nothing is queued, and no
        // writer started, after it.
        if self
            .shared
            .stopped
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        for m in messages {
            let to = m.to;
            let lane = if m.kind() == MessageType::InstallSnapshot {
                Lane::Snapshot
            } else {
                Lane::Control
            };
            let out = self.outbound(&mut map, to);
            let queue = match lane {
                Lane::Control => &out.control,
                Lane::Snapshot => &out.snapshot,
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = queue.try_send(m) {
                add(&self.shared.counters(to, lane).dropped, 1);
                // It is not keeping up: Raft stops pipelining to it until it answers.
                self.shared.unreachable(to);
            }
        }
    }

    fn take_unreachable(&self) -> Vec<NodeId> {
        std::mem::take(&mut *self.shared.unreachable.lock())
            .into_iter()
            .collect()
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}
