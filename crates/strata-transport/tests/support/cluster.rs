//! A cluster of nodes in one process, each on its own Tokio runtime with its own sockets,
//! talking over [`TcpTransport`]: what the transport's tests drive.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use strata_raft::{Config, NodeId, Role};
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{
    Committed, CommittedKind, NodeOptions, RaftNode, SnapshotWriter, StateMachine, inbox,
};
use strata_transport::{TcpTransport, TlsConfig, TransportConfig};

/// How long a test waits for anything.
pub const WAIT: Duration = Duration::from_secs(30);

/// The cluster id the tests use.
pub const CLUSTER: u64 = 0x5747_a7a0;

/// A key-value map: a command is `key=value`; the answer is the entry's index.
#[derive(Default)]
pub struct Kv(pub Arc<Mutex<HashMap<String, String>>>);

impl StateMachine for Kv {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        let mut kv = self.0.lock();
        let mut answers = Vec::new();
        for entry in batch {
            if let CommittedKind::Command(command) = entry.kind {
                let text = String::from_utf8_lossy(&command).into_owned();
                if let Some((k, v)) = text.split_once('=') {
                    kv.insert(k.to_owned(), v.to_owned());
                }
                answers.push(Bytes::from(entry.index.to_string()));
            }
        }
        Ok(answers)
    }

    fn applied_index(&self) -> u64 {
        0
    }

    async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter> {
        let pairs: Vec<u8> = self
            .0
            .lock()
            .iter()
            .flat_map(|(k, v)| format!("{k}={v}\n").into_bytes())
            .collect();
        Ok(Box::new(move |dir: &Path| {
            std::fs::write(dir.join("kv"), &pairs)?;
            Ok(vec!["kv".to_owned()])
        }))
    }

    async fn restore(&mut self, dir: &Path, _: &[String], _: u64) -> std::io::Result<()> {
        let text = std::fs::read_to_string(dir.join("kv"))?;
        let mut kv = self.0.lock();
        kv.clear();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                kv.insert(k.to_owned(), v.to_owned());
            }
        }
        Ok(())
    }
}

/// One node: its runtime (which runs its tasks), transport, Raft node and data.
pub struct Node {
    pub runtime: tokio::runtime::Runtime,
    pub transport: Arc<TcpTransport>,
    pub raft: Option<RaftNode>,
    pub kv: Arc<Mutex<HashMap<String, String>>>,
}

/// Nodes `1..=n` on loopback, each with its own runtime and sockets.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub ids: Vec<NodeId>,
    /// Where each node listens (fixed across restarts).
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    /// Where each node's peers reach it (its address, unless a test puts a proxy in front).
    pub routes: BTreeMap<(NodeId, NodeId), SocketAddr>,
    pub nodes: BTreeMap<NodeId, Node>,
    /// Snapshot every this many entries (0: the defaults).
    pub snapshot_entries: u64,
    /// Each node's TLS files, if the test uses TLS.
    pub tls: BTreeMap<NodeId, TlsConfig>,
    /// The host name each node is dialed by, where the test gives one (else its address).
    pub hosts: BTreeMap<NodeId, String>,
}

/// A free loopback port, found by binding port 0 and letting go.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

impl Cluster {
    /// `n` nodes, not started.
    pub fn new(n: u64) -> Self {
        let ids: Vec<NodeId> = (1..=n).collect();
        let addrs: BTreeMap<NodeId, SocketAddr> = ids.iter().map(|&id| (id, free_addr())).collect();
        let mut routes = BTreeMap::new();
        for &from in &ids {
            for &to in &ids {
                if from != to {
                    routes.insert((from, to), addrs[&to]);
                }
            }
        }
        Cluster {
            dir: tempfile::tempdir().expect("tempdir"),
            ids,
            addrs,
            routes,
            nodes: BTreeMap::new(),
            snapshot_entries: 0,
            tls: BTreeMap::new(),
            hosts: BTreeMap::new(),
        }
    }

    fn path(&self, id: NodeId, what: &str) -> PathBuf {
        self.dir.path().join(format!("{id}.{what}"))
    }

    /// Starts (or restarts) node `id`.
    pub fn start(&mut self, id: NodeId) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let peers: BTreeMap<NodeId, SocketAddr> = self
            .ids
            .iter()
            .filter(|&&p| p != id)
            .map(|&p| (p, self.routes[&(id, p)]))
            .collect();
        let mut transport_config = TransportConfig::new(id, CLUSTER, self.addrs[&id], peers);
        transport_config.tls = self.tls.get(&id).cloned();
        transport_config.peer_hosts = self
            .hosts
            .iter()
            .filter(|&(&peer, _)| peer != id)
            .map(|(&peer, host)| (peer, host.clone()))
            .collect();
        let kv = Arc::new(Mutex::new(HashMap::new()));
        let log = RaftLog::open(&self.path(id, "log"), LogOptions::default()).expect("log");
        let mut config = Config::new(id, self.ids.clone());
        config.election_tick = 10;
        let mut options = NodeOptions::new(Duration::from_millis(10), self.path(id, "snapshots"));
        if self.snapshot_entries > 0 {
            options.snapshot_entries = self.snapshot_entries;
            options.compaction_overhead_entries = 2;
            config.snapshot_chunk_bytes = 1024;
        }
        let machine = Kv(Arc::clone(&kv));
        let (transport, raft) = runtime.block_on(async {
            let (sender, inbox) = inbox();
            let transport = TcpTransport::bind(transport_config, sender)
                .await
                .expect("bind");
            let raft = RaftNode::start(
                config,
                options,
                Arc::new(log),
                machine,
                Arc::clone(&transport) as Arc<dyn strata_raft_node::Transport>,
                inbox,
            )
            .expect("start");
            (transport, raft)
        });
        self.nodes.insert(
            id,
            Node {
                runtime,
                transport,
                raft: Some(raft),
                kv,
            },
        );
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for id in self.ids.clone() {
            self.start(id);
        }
    }

    /// Stops node `id` as a crash would (its transport closes every connection).
    pub fn stop(&mut self, id: NodeId) {
        if let Some(mut node) = self.nodes.remove(&id) {
            if let Some(raft) = node.raft.take() {
                node.runtime.block_on(raft.shutdown());
            }
            node.transport.shutdown();
            node.runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }

    pub fn raft(&self, id: NodeId) -> &RaftNode {
        self.nodes[&id].raft.as_ref().expect("running")
    }

    /// A running node that is leader, once there is one (polled).
    pub fn leader(&self) -> NodeId {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            for (&id, node) in &self.nodes {
                if let Some(raft) = &node.raft
                    && raft.status().borrow().role == Role::Leader
                {
                    return id;
                }
            }
            assert!(std::time::Instant::now() < deadline, "no leader in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Puts `key=value` through the current leader, retrying through leader changes; the
    /// entry's index.
    pub fn put(&self, key: &str, value: &str) -> u64 {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let leader = self.leader();
            let node = &self.nodes[&leader];
            let raft = node.raft.as_ref().expect("running");
            let answer = node.runtime.block_on(raft.propose(
                Bytes::from(format!("{key}={value}")),
                Duration::from_secs(5),
            ));
            match answer {
                Ok(index) => {
                    return std::str::from_utf8(&index)
                        .expect("utf-8")
                        .parse()
                        .expect("an index");
                }
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "put {key}: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Waits until node `id` has applied `index`.
    pub fn wait_applied(&self, id: NodeId, index: u64) {
        let node = &self.nodes[&id];
        let mut applied = node.raft.as_ref().expect("running").applied();
        node.runtime
            .block_on(async { tokio::time::timeout(WAIT, applied.wait_for(|a| *a >= index)).await })
            .expect("applied in time")
            .expect("running");
    }

    /// Node `id`'s value at `key`.
    pub fn get(&self, id: NodeId, key: &str) -> Option<String> {
        self.nodes[&id].kv.lock().get(key).cloned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.ids.clone() {
            self.stop(id);
        }
    }
}
