//! One member: its storage, its Raft node on the TCP transport, its background tasks and its
//! client port (gRPC and HTTP on one listener).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use strata_lsm::Db;
use strata_mvcc::Store;
use strata_raft::{Config, Role, Status};
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{NodeOptions, RaftNode};
use strata_transport::{TcpTransport, TlsConfig, TransportConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::token::Tokens;
use crate::auth::{AuthState, Caller};
use crate::config::{AutoCompaction, ClusterState, ServerConfig};
use crate::machine::{Applied, Machine};
use crate::metrics::Metrics;
use crate::proto::etcdserverpb::{Member, ResponseHeader};
use crate::proto::strataserverpb::{
    MemberAttributes, RaftAnswer, RaftRequest, raft_answer::Answer, raft_request::Request,
};
use crate::rpctypes::ApiError;
use crate::state::{self, Shared};

/// The metadata a member forwards its own requests with while auth is on: the members' shared
/// secret, base64.
pub const MEMBER_SECRET_HEADER: &str = "strata-member-secret";

/// The version Strata reports as etcd's (`Status.version`, `/version`): the API it speaks.
pub const ETCD_VERSION: &str = "3.5.0";
/// The cluster version it reports.
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";

/// How long a client request may wait for its answer (etcd's default request timeout, 5 s,
/// plus its allowance of two election timeouts is what it waits before "request timed out").
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// What a forwarded request's deadline adds to the leader's `REQUEST_TIMEOUT`: room for the
/// round trip, so the leader's own answer arrives first.
const FORWARD_GRACE: Duration = Duration::from_secs(1);

/// Bytes a replicated request may add around the client's request (the envelope): the Raft
/// entry limit is `--max-request-bytes` plus this.
const ENVELOPE_BYTES: usize = 1024;

/// Errors at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The data directory cannot be used.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// Where.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The storage failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The Raft node refused the configuration.
    #[error("raft: {0}")]
    Raft(String),
    /// A port cannot be bound.
    #[error("listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The TLS files cannot be used.
    #[error("tls: {0}")]
    Tls(String),
    /// `--experimental-initial-corrupt-check` found a peer whose store's hash differs at the
    /// same revision (see [`crate::corrupt`]).
    #[error("{0}")]
    Corrupt(String),
}

/// What the services share.
pub struct Inner {
    /// The configuration.
    pub config: ServerConfig,
    /// This member's id.
    pub id: u64,
    /// The cluster's id, as headers show it.
    pub cluster_id: u64,
    /// The Raft node.
    pub node: RaftNode,
    /// The LSM.
    pub db: Arc<Db>,
    /// The MVCC store on it.
    pub store: Arc<Store>,
    /// The replicated state beside it.
    pub shared: Arc<Shared>,
    /// The TCP transport to the peers.
    pub transport: Arc<TcpTransport>,
    /// Since when each peer has been sending to this member (`--strict-reconfig-check`).
    pub peer_activity: Arc<strata_raft_node::PeerActivity>,
    /// What the applying task reports.
    pub applied: watch::Receiver<Applied>,
    /// The revision the physical compaction has reached.
    pub physical: watch::Receiver<i64>,
    /// Request and server counters.
    pub metrics: Metrics,
    /// The leader's lease clocks.
    pub lessor: crate::lease::Lessor,
    /// The auth tokens this member knows.
    pub tokens: Arc<Tokens>,
    /// Channels to other members' client ports (for forwarding to the leader), with the URL
    /// each was made for.
    channels: crate::tls::Channels,
    /// The stream this member forwards its clients' writes to the leader on.
    forwarders: crate::forward::Forwarders,
}

pub use crate::auth::caller::{
    CERTIFIED_USER_HEADER, Credential, Credentials, VOUCHING_SECRET_HEADER,
};

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The cluster id of the peer transport's handshake: derived from `--initial-cluster-token`
/// alone, so that a member joining later (which does not yet know the member list the cluster
/// started with) greets the others with the same one, and members of another cluster (another
/// token) are refused.
pub fn handshake_id(token: &str) -> u64 {
    crate::config::member_id(&[], &format!("strata-transport/{token}"))
}

/// The time now, in Unix milliseconds (for the replicated clock).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Inner {
    /// The Raft status now.
    pub fn status(&self) -> Status {
        self.node.status().borrow().clone()
    }

    /// The leader this member knows of now (0: none), without copying the whole status.
    pub fn leader_now(&self) -> u64 {
        self.node.status().borrow().leader
    }

    /// A response header at `revision` (the current one if 0).
    pub fn header(&self, revision: i64) -> ResponseHeader {
        let revision = if revision == 0 {
            self.store.current_revision()
        } else {
            revision
        };
        // A member that joined learns the cluster id from the log after it started.
        let learned = self.shared.0.read().cluster_id;
        ResponseHeader {
            cluster_id: if learned != 0 {
                learned
            } else {
                self.cluster_id
            },
            member_id: self.id,
            revision,
            raft_term: self.node.status().borrow().term,
        }
    }

    /// Whether this member is a learner now.
    pub fn is_learner(&self) -> bool {
        self.shared
            .0
            .read()
            .members
            .get(&self.id)
            .is_some_and(|m| m.is_learner)
    }

    /// Waits (bounded) for a leader; returns its id.
    pub async fn leader(&self) -> Result<u64, ApiError> {
        let mut status = self.node.status();
        let wait = self.config.election_timeout * 3;
        let found = tokio::time::timeout(wait, async {
            loop {
                let leader = status.borrow_and_update().leader;
                if leader != 0 {
                    return Ok(leader);
                }
                if status.changed().await.is_err() {
                    return Err(ApiError::Stopped);
                }
            }
        })
        .await;
        found.unwrap_or(Err(ApiError::NoLeader))
    }

    /// A linearizable read point (ReadIndex, shared by the reads waiting together); nothing for
    /// a serializable read.
    pub async fn read_barrier(&self, serializable: bool) -> Result<(), ApiError> {
        if serializable {
            return Ok(());
        }
        self.leader().await?;
        self.node
            .read_index(REQUEST_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(ApiError::from)
    }

    /// The auth state now (a cheap copy: it is shared).
    pub fn auth(&self) -> Arc<AuthState> {
        Arc::clone(&self.shared.0.read().auth)
    }

    /// The auth state with every change acknowledged so far (after a ReadIndex round): what
    /// a check that refuses must read on a member that may lag.
    ///
    /// # Errors
    ///
    /// The read barrier's.
    pub async fn fresh_auth(&self) -> Result<Arc<AuthState>, ApiError> {
        self.read_barrier(false).await?;
        Ok(self.auth())
    }

    /// The keys attached to each lease `request` attaches or revokes, when a check needs them
    /// (auth on, a client that is not admin); empty otherwise. A keys-only scan of the store.
    async fn lease_keys_for(
        &self,
        auth: &AuthState,
        caller: &Caller,
        request: &Request,
    ) -> Result<BTreeMap<i64, Vec<Vec<u8>>>, ApiError> {
        let exempt = match caller {
            Caller::Member => true,
            Caller::User { name, .. } => auth.is_admin(name),
            Caller::Anonymous => false,
        };
        if !auth.enabled || exempt {
            return Ok(BTreeMap::new());
        }
        let leases = crate::auth::leases_of(request);
        if leases.is_empty() {
            return Ok(BTreeMap::new());
        }
        Ok(crate::lease::keys_of(self, &leases))
    }

    /// Checks that `caller` may have `request` replicated and wraps it for the log, with the
    /// auth revision it was checked at and the proposer's clock (`now_ms`).
    ///
    /// # Errors
    ///
    /// The check's ([`AuthState::check`]).
    pub async fn prepare(
        &self,
        caller: &Caller,
        request: Request,
        now_ms: u64,
    ) -> Result<RaftRequest, ApiError> {
        let auth = self.auth();
        let keys = self.lease_keys_for(&auth, caller, &request).await?;
        auth.check(caller, &request, &|lease| {
            keys.get(&lease).cloned().unwrap_or_default()
        })?;
        Ok(RaftRequest {
            now_ms,
            request: Some(request),
            auth_revision: auth.revision,
            internal: *caller == Caller::Member,
        })
    }

    /// Replicates `request` for `caller` and returns what applying it answered. On a
    /// follower, the request goes to the leader (with the caller's token, or the members'
    /// secret for a member's own request), and the answer is returned once this member has
    /// applied it too (so a serializable read here sees the write).
    ///
    /// # Errors
    ///
    /// The permission check's, the log's, the apply's refusal.
    pub async fn propose(&self, caller: &Caller, request: Request) -> Result<Answer, ApiError> {
        // A user known by its certificate is forwarded vouched for with the members' secret,
        // which this member learns by applying `auth enable`. Without it the request goes as
        // nobody's, and a leader that has auth on already refuses it: then this member
        // catches up (a ReadIndex round) and sends it once more, vouched for.
        let unvouched = matches!(caller, Caller::User { token: None, .. })
            && self.leader_now() != self.id
            && self.credential(caller).is_none();
        let again = unvouched.then(|| request.clone());
        match (self.propose_once(caller, request).await, again) {
            (Err(e), Some(request)) if is_user_empty(&e) => {
                self.fresh_auth().await?;
                if self.credential(caller).is_none() {
                    return Err(e);
                }
                self.propose_once(caller, request).await
            }
            (answer, _) => answer,
        }
    }

    /// [`Inner::propose`], once.
    async fn propose_once(&self, caller: &Caller, request: Request) -> Result<Answer, ApiError> {
        let leader = self.leader().await?;
        let request = if leader == self.id {
            self.prepare(caller, request, now_ms()).await?
        } else {
            // Checked by the leader alone: this member may not have applied a change to the
            // caller's roles that was already acknowledged, and must not refuse what the
            // leader (which has) allows.
            RaftRequest {
                now_ms: now_ms(),
                request: Some(request),
                auth_revision: 0,
                internal: false,
            }
        };
        let bytes = request.encode_to_vec();
        if bytes.len() as u64 > self.config.max_request_bytes + ENVELOPE_BYTES as u64 {
            return Err(ApiError::RequestTooLarge);
        }
        self.metrics.proposals.inc();
        let answer = if leader == self.id {
            self.propose_here(bytes.into()).await?
        } else {
            let answer = self.forward(leader, caller, request).await?;
            self.wait_applied_revision(revision_of(&answer)).await;
            answer
        };
        match answer {
            Answer::Refused(r) => Err(ApiError::Refused(r.code, r.message)),
            other => Ok(other),
        }
    }

    /// Proposes on this member, which must lead.
    pub async fn propose_here(&self, bytes: bytes::Bytes) -> Result<Answer, ApiError> {
        let answer = self.node.propose(bytes, REQUEST_TIMEOUT).await?;
        RaftAnswer::decode(answer.as_ref())
            .ok()
            .and_then(|a| a.answer)
            .ok_or_else(|| ApiError::Internal("an answer that does not decode".to_owned()))
    }

    /// A channel to `member`'s client port (cached), for requests this member sends on. Waits
    /// (bounded) for the member's client URL: a member publishes it through the log once it
    /// starts, so it can be missing for a moment after a leader is elected.
    pub async fn channel_to(&self, member: u64) -> Result<tonic::transport::Channel, ApiError> {
        self.channel_with_url(member)
            .await
            .map(|(_, channel)| channel)
    }

    /// [`Inner::channel_to`], with the URL the channel was made for.
    pub async fn channel_with_url(
        &self,
        member: u64,
    ) -> Result<(String, tonic::transport::Channel), ApiError> {
        let mut applied = self.applied.clone();
        let url = tokio::time::timeout(REQUEST_TIMEOUT, async {
            loop {
                let url = self
                    .shared
                    .0
                    .read()
                    .members
                    .get(&member)
                    .and_then(|m| m.client_ur_ls.first().cloned());
                if let Some(url) = url {
                    return Ok(url);
                }
                if applied.changed().await.is_err() {
                    return Err(ApiError::Stopped);
                }
            }
        })
        .await
        .unwrap_or(Err(ApiError::NoLeader))?;
        let channel = (self.channels)
            .get(member, &url)
            .map_err(|e| ApiError::Internal(format!("connect to {url}: {e}")))?;
        Ok((url, channel))
    }

    /// The leader's client port, or `None` if this member leads.
    pub async fn leader_channel(&self) -> Result<Option<tonic::transport::Channel>, ApiError> {
        let leader = self.leader().await?;
        if leader == self.id {
            return Ok(None);
        }
        self.channel_to(leader).await.map(Some)
    }

    /// Sends `request` to `leader` on this member's forwarding stream (`crate::forward`).
    async fn forward(
        &self,
        leader: u64,
        caller: &Caller,
        request: RaftRequest,
    ) -> Result<Answer, ApiError> {
        // Longer than the leader's own wait, so a request the leader times out is answered
        // with the leader's "request timed out" rather than cut off here.
        self.forwarders
            .forward(
                self,
                leader,
                caller,
                request,
                REQUEST_TIMEOUT + FORWARD_GRACE,
            )
            .await
    }

    /// Waits (bounded) until this member's store reaches `revision`.
    async fn wait_applied_revision(&self, revision: i64) {
        if revision <= 0 {
            return;
        }
        let mut applied = self.node.applied();
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
            while self.store.current_revision() < revision {
                if applied.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }
}

/// What a client sees of an error the leader answered a forwarded request with: the leader's
/// own answers pass through with their code and text (among them "request timed out" and
/// "leader changed", which are `Unavailable` too); the leader's deadline passing is a timeout;
/// a transport failure (the leader gone or stepping down meanwhile) is a leader change
/// (clients retry).
pub fn forwarded_error(status: tonic::Status) -> ApiError {
    match status.code() {
        tonic::Code::Unavailable if status.message().starts_with("etcdserver: ") => {
            ApiError::Refused(status.code() as i32, status.message().to_owned())
        }
        tonic::Code::Unavailable | tonic::Code::Unknown => ApiError::LeaderChanged,
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => ApiError::Timeout,
        code => ApiError::Refused(code as i32, status.message().to_owned()),
    }
}

/// Whether `e` is "user name is empty", as this member or the leader answered it.
fn is_user_empty(e: &ApiError) -> bool {
    match e {
        ApiError::UserEmpty => true,
        ApiError::Refused(_, message) => *message == ApiError::UserEmpty.to_string(),
        _ => false,
    }
}

/// The store revision an answer reports (0 if none).
fn revision_of(answer: &Answer) -> i64 {
    let header = match answer {
        Answer::Put(r) => r.header.as_ref(),
        Answer::DeleteRange(r) => r.header.as_ref(),
        Answer::Txn(r) => r.header.as_ref(),
        Answer::Compaction(r) => r.header.as_ref(),
        _ => None,
    };
    header.map_or(0, |h| h.revision)
}

/// A running member.
pub struct Server {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    client_addrs: Vec<SocketAddr>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("id", &self.inner.id)
            .field("client_addrs", &self.client_addrs)
            .finish_non_exhaustive()
    }
}

/// The first peer URL's address, and its host name if it gives one (see
/// [`strata_transport::TransportConfig::peer_hosts`]).
pub(crate) fn peer_target(peer_urls: &[String]) -> Option<(SocketAddr, Option<String>)> {
    peer_urls.iter().find_map(|url| {
        let addr = crate::config::resolve_url(url).ok()?;
        Some((addr, crate::config::url_host_name(url)))
    })
}

impl Server {
    /// Starts the member `config` describes, on the current Tokio runtime (multi-threaded).
    ///
    /// # Errors
    ///
    /// [`ServerError`]: the data dir, the storage, the Raft configuration, a port.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        crate::tls::make_self_signed(&config)?;
        let member_dir = config.data_dir.join("member");
        let storage = |e: &dyn std::fmt::Display| ServerError::Storage(e.to_string());
        std::fs::create_dir_all(&member_dir).map_err(|e| ServerError::DataDir {
            path: member_dir.clone(),
            reason: e.to_string(),
        })?;
        let db = Arc::new(
            Db::open(&member_dir.join("db"), crate::state::lsm_options())
                .map_err(|e| storage(&e))?,
        );
        let store = Arc::new(Store::open(Arc::clone(&db)).map_err(|e| storage(&e))?);
        let id = config.member_id();
        let initial: Vec<Member> = config
            .initial_cluster
            .iter()
            .map(|m| Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: Vec::new(),
                is_learner: false,
            })
            .collect();
        let fresh = state::read_u64(&db, state::APPLIED).map_err(|e| storage(&e))? == 0
            && state::load(&db)
                .map_err(|e| storage(&e))?
                .members
                .is_empty();
        if fresh {
            // A member joining an existing cluster learns the cluster id from the log (the
            // members' publish requests) or a snapshot.
            let cluster_id = match config.initial_cluster_state {
                ClusterState::New => config.cluster_id(),
                ClusterState::Existing => 0,
            };
            state::bootstrap(&db, &initial, cluster_id).map_err(|e| storage(&e))?;
        }
        let mut loaded = state::load(&db).map_err(|e| storage(&e))?;
        loaded.lease_keys = state::lease_index(&store).map_err(|e| storage(&e))?;
        let cluster_id = loaded.cluster_id;
        let shared = Arc::new(Shared(parking_lot::RwLock::new(loaded)));

        let data_dir_error = |reason| ServerError::DataDir {
            path: config.data_dir.clone(),
            reason,
        };
        let log_dir = state::raft_log_dir(&member_dir, config.operation.wal_dir.as_deref())
            .map_err(data_dir_error)?;
        let log =
            Arc::new(RaftLog::open(&log_dir, LogOptions::default()).map_err(|e| storage(&e))?);
        state::record_raft_log_dir(&member_dir, &log_dir).map_err(data_dir_error)?;
        let voters: Vec<u64> = initial.iter().map(|m| m.id).collect();
        let mut raft = Config::new(id, voters);
        raft.peers = shared.0.read().members.keys().copied().collect();
        let ticks = (config.election_timeout.as_millis()
            / config.heartbeat_interval.as_millis().max(1))
        .max(2) as u64;
        raft.election_tick = ticks;
        raft.heartbeat_tick = 1;
        raft.pre_vote = config.pre_vote;
        raft.entry_bytes_max = config.max_request_bytes as usize + ENVELOPE_BYTES;
        raft.append_bytes_max = raft.append_bytes_max.max(raft.entry_bytes_max);
        let mut options = NodeOptions::new(config.heartbeat_interval, member_dir.join("snap"));
        options.snapshot_entries = config.snapshot_count.max(1);
        // Entries kept behind a snapshot for followers a little behind (etcd keeps 5,000), never
        // more than a snapshot's worth: a small --snapshot-count means a small log.
        options.compaction_overhead_entries = options
            .compaction_overhead_entries
            .min(config.snapshot_count);

        let (inbox_tx, inbox) = strata_raft_node::inbox();
        let peer_activity = inbox_tx.activity();
        peer_activity.set_gap(config.election_timeout);
        let targets: BTreeMap<u64, (SocketAddr, Option<String>)> = shared
            .0
            .read()
            .members
            .values()
            .filter(|m| m.id != id)
            .filter_map(|m| Some((m.id, peer_target(&m.peer_ur_ls)?)))
            .collect();
        let peers = targets.iter().map(|(&id, (addr, _))| (id, *addr)).collect();
        let listen_peer = match config.listen_peer_urls.as_slice() {
            [one] => one.addr,
            _ => {
                return Err(ServerError::Listen {
                    addr: config
                        .listen_peer_urls
                        .iter()
                        .map(|u| u.url.clone())
                        .collect::<Vec<_>>()
                        .join(","),
                    reason: "the peer transport listens on one address: give one \
                             --listen-peer-urls"
                        .to_owned(),
                });
            }
        };
        let mut transport_config = TransportConfig::new(
            id,
            handshake_id(&config.initial_cluster_token),
            listen_peer,
            peers,
        );
        transport_config.peer_hosts = targets
            .into_iter()
            .filter_map(|(id, (_, host))| Some((id, host?)))
            .collect();
        if let Some(tls) = &config.peer_tls {
            let mut t = match tls.trusted_ca_file.clone() {
                // --peer-auto-tls: peers' certificates are not checked (etcd's rule).
                _ if tls.self_signed => TlsConfig::self_signed(&tls.cert_file, &tls.key_file),
                Some(ca) => TlsConfig::new(&tls.cert_file, &tls.key_file, ca),
                None => {
                    return Err(ServerError::Tls(
                        "peer TLS needs --peer-trusted-ca-file".to_owned(),
                    ));
                }
            };
            // A trusted CA makes dialers' certificates required and checked against their
            // addresses, with or without --peer-client-cert-auth: etcd's rule (the TLS
            // config's default; a self-signed one asks for none).
            (t.allowed_cn, t.allowed_hostname) = tls.allowed_names.clone();
            t.crl_file.clone_from(&tls.crl_file);
            t.cipher_suites.clone_from(&config.cipher_suites);
            t.skip_client_san_verification = config.peer_skip_client_san_verification;
            transport_config.tls = Some(t);
        }
        let transport = TcpTransport::bind(transport_config, inbox_tx)
            .await
            .map_err(|e| ServerError::Listen {
                addr: listen_peer.to_string(),
                reason: e.to_string(),
            })?;

        let (applied_tx, applied_rx) = watch::channel(Applied {
            compact_revision: store.compacted_revision(),
            members_version: 0,
        });
        let tokens = Arc::new(Tokens::new(config.auth_token_ttl));
        let metrics = Metrics::default();
        let machine = Machine::new(
            Arc::clone(&db),
            Arc::clone(&store),
            Arc::clone(&shared),
            Arc::clone(&tokens),
            applied_tx,
            crate::machine::SlowApplies {
                threshold: config.operation.warning_apply_duration,
                count: Arc::clone(&metrics.slow_applies),
            },
        )
        .map_err(|e| storage(&e))?;
        if config.force_new_cluster {
            crate::cluster::force_new_cluster(&raft, &log, &options.snapshot_dir, fresh)?;
        }
        let transport_dyn: Arc<dyn strata_raft_node::Transport> = transport.clone();
        let node = RaftNode::start(raft, options, log, machine, transport_dyn, inbox)
            .map_err(|e| ServerError::Raft(e.to_string()))?;
        // From what is physically done: a removal cut short by a crash is resumed.
        let (physical_tx, physical_rx) = watch::channel(store.compacted_done_revision());
        let channels = crate::tls::Channels::new(&config)?;
        let inner = Arc::new(Inner {
            config,
            id,
            cluster_id,
            node,
            db,
            store,
            shared,
            transport,
            peer_activity,
            applied: applied_rx,
            physical: physical_rx,
            metrics,
            lessor: crate::lease::Lessor::default(),
            tokens,
            channels,
            forwarders: crate::forward::Forwarders::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(follow_members(Arc::clone(&inner), stop_rx.clone())),
            tokio::spawn(publish(Arc::clone(&inner), stop_rx.clone())),
            tokio::spawn(crate::background::physical_compaction(
                Arc::clone(&inner),
                physical_tx,
                stop_rx.clone(),
            )),
            tokio::spawn(crate::lease::expire(Arc::clone(&inner), stop_rx.clone())),
            tokio::spawn(crate::background::quota(
                Arc::clone(&inner),
                stop_rx.clone(),
            )),
            tokio::spawn(crate::corrupt::periodic(
                Arc::clone(&inner),
                stop_rx.clone(),
            )),
        ];
        if inner.config.auto_compaction != AutoCompaction::Off {
            tasks.push(tokio::spawn(crate::background::auto_compaction(
                Arc::clone(&inner),
                stop_rx.clone(),
            )));
        }
        let checked = if inner.config.initial_corrupt_check {
            crate::corrupt::initial_check(&inner).await
        } else {
            Ok(())
        };
        let served = match checked {
            Ok(()) => crate::grpc::serve(Arc::clone(&inner), stop_rx).await,
            Err(e) => Err(e),
        };
        let (client_addrs, serving) = match served {
            Ok(serving) => serving,
            Err(e) => {
                // Nothing of this member may run on once its start failed.
                let _ = stop.send(true);
                for task in &tasks {
                    task.abort();
                }
                inner.node.shutdown().await;
                inner.transport.shutdown();
                return Err(e);
            }
        };
        tasks.extend(serving);
        Ok(Server {
            inner,
            tasks,
            stop,
            client_addrs,
        })
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The addresses the client port listens on.
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    /// The Raft role now.
    pub fn role(&self) -> Role {
        self.inner.status().role
    }

    /// Resolves if this member's Raft node stops by itself (its log, snapshot store or state
    /// machine failed), with why. The member cannot go on: its owner should stop it and exit
    /// non-zero, as etcd does, so that a supervisor restarts it from what is durable.
    pub fn failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        let mut status = inner.node.status();
        async move {
            // The node's status channel closes when its loop ends.
            while status.changed().await.is_ok() {}
            inner.node.failure().map_or_else(
                || "the Raft node stopped".to_owned(),
                |failure| failure.to_string(),
            )
        }
    }

    /// Stops the member: the client port closes, the node stops (what was acknowledged is
    /// durable in the Raft log), the background tasks end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.inner.node.shutdown().await;
        self.inner.transport.shutdown();
    }
}

/// Keeps the transport's peer addresses equal to the member table.
async fn follow_members(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let mut applied = inner.applied.clone();
    loop {
        let members: Vec<Member> = inner.shared.0.read().members.values().cloned().collect();
        for member in members {
            if member.id != inner.id
                && let Some((addr, host)) = peer_target(&member.peer_ur_ls)
            {
                inner.transport.set_peer(member.id, addr);
                inner.transport.set_peer_host(member.id, host);
            }
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// Publishes this member's name and client URLs through Raft once there is a leader (etcd's
/// publish), retrying until it is applied.
async fn publish(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    let attributes = MemberAttributes {
        id: inner.id,
        name: inner.config.name.clone(),
        client_urls: inner.config.advertise_client_urls.clone(),
        cluster_id: inner.cluster_id,
    };
    loop {
        let known = inner.shared.0.read().members.get(&inner.id).cloned();
        if let Some(member) = known
            && member.name == attributes.name
            && member.client_ur_ls == attributes.client_urls
        {
            return;
        }
        let done = inner
            .propose(&Caller::Member, Request::Publish(attributes.clone()))
            .await
            .is_ok();
        if done {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(inner.config.heartbeat_interval * 5) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_errors_keep_the_leaders_own_answers() {
        // The leader's own answers, `Unavailable` among them, reach the client as sent.
        for sent in [ApiError::Timeout, ApiError::NoLeader, ApiError::Compacted] {
            let got = forwarded_error(sent.to_status());
            assert_eq!(got.code(), sent.code(), "{sent}");
            assert_eq!(got.to_string(), sent.to_string());
        }
        // A transport failure is a leader change (clients retry).
        let broken = tonic::Status::unavailable("error trying to connect: connection refused");
        assert!(matches!(forwarded_error(broken), ApiError::LeaderChanged));
        assert!(matches!(
            forwarded_error(tonic::Status::unknown("transport error")),
            ApiError::LeaderChanged
        ));
        // The deadline passing is a timeout, not a leader change.
        let late = tonic::Status::cancelled("Timeout expired");
        assert!(matches!(forwarded_error(late), ApiError::Timeout));
    }
}
