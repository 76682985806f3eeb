//! The async driver: runs a [`Raft`] core on Tokio with a durable [`RaftLog`], a
//! [`Transport`] and a [`StateMachine`], behind a [`RaftNode`] handle.
//!
//! One task owns the core: it ticks it, steps inbound messages and client commands (taking
//! everything that is waiting at once, so proposals that arrive together become one append
//! and one `fdatasync`), sends what may go at once, persists (on Tokio's blocking pool), then
//! sends what had to wait for the persist. Committed entries go to a second task that applies
//! them in order, off the hot path, and answers proposals and reads.
//!
//! Snapshots: the applying task takes one every [`NodeOptions::snapshot_entries`] entries
//! or [`NodeOptions::snapshot_bytes`] bytes (or when asked): the state machine captures its
//! state there, and writes it as files on the blocking pool while applying goes on; the set
//! goes into the node's snapshot store (`strata_snapshot::Receiver`) and the log is
//! compacted up to [`NodeOptions::compaction_overhead`] entries before it. A leader streams
//! the latest set to a follower that needs compacted entries; the follower stages the chunks
//! in its store and, once the set is installed, compacts its log to it and restores its state
//! machine from it. A restart restores the state machine from the installed set and applies
//! the log after it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;
use strata_raft_log::{Entry, EntryKind, RaftLog};
use strata_snapshot::{Ack, Position, Receiver, Sender, SnapshotMeta};
use tokio::sync::{mpsc, oneshot, watch};

use crate::membership::{ConfChange, Membership};
use crate::message::{Message, MessageType, NodeId};
use crate::raft::{Config, Error as CoreError, Raft, Role, Status};

/// Writes a captured state as files into a directory and returns their names (see
/// [`StateMachine::snapshot`]).
pub type SnapshotWriter = Box<dyn FnOnce(&Path) -> std::io::Result<Vec<String>> + Send>;

/// The state machine the log drives (the server's key-value store).
#[async_trait::async_trait]
pub trait StateMachine: Send + 'static {
    /// Applies the committed command at `index`; what it returns answers the proposal.
    /// Called once per entry, in index order (after a restart, from the entry after the
    /// snapshot it was restored from, or the first entry in the log).
    async fn apply(&mut self, index: u64, command: Bytes) -> Bytes;

    /// Captures the state as of the last applied entry. This runs between two applies, so
    /// it should be cheap (a point-in-time view, a copy-on-write handle, hard links); the
    /// returned writer then puts the state into a directory as files (plain names, none
    /// called `meta`), on the blocking pool while applying goes on.
    ///
    /// # Errors
    ///
    /// An I/O error: no snapshot is taken (the next trigger tries again).
    async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter>;

    /// Replaces the state with the snapshot whose files (`files`, as the writer named them)
    /// are in `dir`; entries after the snapshot's last index are applied next.
    ///
    /// # Errors
    ///
    /// An I/O error: the node stops (a restart tries again).
    async fn restore(&mut self, dir: &Path, files: &[String]) -> std::io::Result<()>;
}

/// How a [`RaftNode`] runs: its clock and its snapshots.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// One tick of the core's clock.
    pub tick: Duration,
    /// The node's snapshot store (a `strata_snapshot::Receiver` directory).
    pub snapshot_dir: PathBuf,
    /// Take a snapshot once this many entries were applied since the last one (0: not by
    /// count). Default 100,000.
    pub snapshot_entries: u64,
    /// Take a snapshot once this many bytes of commands were applied since the last one (0:
    /// not by size). Default 256 MiB.
    pub snapshot_bytes: u64,
    /// Entries kept in the log before a snapshot's last index, so that a follower slightly
    /// behind gets entries rather than a snapshot. Default 5,000.
    pub compaction_overhead: u64,
}

impl NodeOptions {
    /// Defaults, with a tick of `tick` and the snapshot store in `snapshot_dir`.
    pub fn new(tick: Duration, snapshot_dir: impl Into<PathBuf>) -> Self {
        Self {
            tick,
            snapshot_dir: snapshot_dir.into(),
            snapshot_entries: 100_000,
            snapshot_bytes: 256 << 20,
            compaction_overhead: 5_000,
        }
    }
}

/// How messages reach other nodes (TCP later; [`MemNetwork`] here).
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// Sends messages, best effort: Raft copes with loss.
    async fn send(&self, messages: Vec<Message>);
}

/// An in-process network: one inbox per node; nodes can be cut off for tests.
#[derive(Debug, Default)]
pub struct MemNetwork {
    inboxes: Mutex<HashMap<NodeId, mpsc::UnboundedSender<Message>>>,
    cut_off: Mutex<HashSet<NodeId>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Joins node `id`: the receiver is its inbox (give it to [`RaftNode::start`]).
    pub fn join(&self, id: NodeId) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inboxes.lock().insert(id, tx);
        rx
    }

    /// Cuts node `id` off (every message to or from it is lost), or reconnects it.
    pub fn set_cut_off(&self, id: NodeId, cut: bool) {
        let mut set = self.cut_off.lock();
        if cut {
            set.insert(id);
        } else {
            set.remove(&id);
        }
    }
}

#[async_trait::async_trait]
impl Transport for MemNetwork {
    async fn send(&self, messages: Vec<Message>) {
        let cut = self.cut_off.lock().clone();
        let inboxes = self.inboxes.lock();
        for m in messages {
            if cut.contains(&m.from) || cut.contains(&m.to) {
                continue;
            }
            if let Some(inbox) = inboxes.get(&m.to) {
                let _ = inbox.send(m);
            }
        }
    }
}

/// Errors from a [`RaftNode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// This node is not the leader; `leader` is the one it knows of (0: none).
    #[error("not the leader (the leader is {leader})")]
    NotLeader {
        /// The leader this node knows of.
        leader: NodeId,
    },
    /// The proposal was refused or lost its place in the log (a new leader overwrote it).
    #[error("dropped: {0}")]
    Dropped(String),
    /// No answer within the timeout (the command may still be applied later).
    #[error("timed out")]
    Timeout,
    /// The node stopped (shut down, or its log failed).
    #[error("the node stopped")]
    Stopped,
    /// A bad argument.
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// The log, the snapshot store or the state machine failed.
    #[error("storage: {0}")]
    Storage(String),
}

impl From<CoreError> for DriverError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::NotLeader { leader } => DriverError::NotLeader { leader },
            other => DriverError::Dropped(other.to_string()),
        }
    }
}

enum Command {
    Propose {
        data: Bytes,
        reply: oneshot::Sender<Result<Bytes, DriverError>>,
    },
    Read {
        reply: oneshot::Sender<Result<u64, DriverError>>,
    },
    Transfer {
        to: NodeId,
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    ChangeMembership {
        change: ConfChange,
        reply: oneshot::Sender<Result<Bytes, DriverError>>,
    },
    Snapshot {
        export: Option<PathBuf>,
        reply: SnapshotReply,
    },
}

type SnapshotReply = oneshot::Sender<Result<Option<SnapshotMeta>, DriverError>>;

/// What the applying task tells the driver.
enum Event {
    /// A snapshot it took is installed in the store.
    Taken(SnapshotMeta),
    /// The state machine was restored from set `id` (the store may drop it now).
    Restored(u64),
}

/// The snapshot job writing files, if any, and whether the node stopped: shutdown waits for
/// the job, and a job that finds the node stopped installs nothing.
#[derive(Clone, Default)]
struct Writer(Arc<Mutex<WriterState>>);

#[derive(Default)]
struct WriterState {
    stopped: bool,
    job: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

enum Apply {
    Restore {
        meta: SnapshotMeta,
        dir: PathBuf,
    },
    Snapshot {
        export: Option<PathBuf>,
        reply: SnapshotReply,
    },
    SnapshotDone {
        taken: Option<SnapshotMeta>,
    },
    Register {
        index: u64,
        term: u64,
        reply: oneshot::Sender<Result<Bytes, DriverError>>,
    },
    Batch(Vec<Entry>),
    Read {
        index: u64,
        reply: oneshot::Sender<Result<u64, DriverError>>,
    },
}

/// A running Raft node.
#[derive(Debug)]
pub struct RaftNode {
    commands: mpsc::UnboundedSender<Command>,
    writer: Writer,
    status: watch::Receiver<Status>,
    applied: watch::Receiver<u64>,
    driver: tokio::task::JoinHandle<()>,
    applier: tokio::task::JoinHandle<()>,
    stop: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Propose { .. } => "Propose",
            Command::Read { .. } => "Read",
            Command::Transfer { .. } => "Transfer",
            Command::ChangeMembership { .. } => "ChangeMembership",
            Command::Snapshot { .. } => "Snapshot",
        })
    }
}

fn storage_error(e: impl std::fmt::Display) -> DriverError {
    DriverError::Storage(e.to_string())
}

impl RaftNode {
    /// Starts a node on the current Tokio runtime: restores the core from `log` (its hard
    /// state and entries) and the installed snapshot in `options.snapshot_dir` (the state
    /// machine is restored from it first; a log that does not yet start at it, after a crash
    /// in between, is compacted to it), and runs it.
    ///
    /// # Errors
    ///
    /// [`DriverError::Invalid`] for a configuration the core refuses;
    /// [`DriverError::Storage`] if the snapshot store cannot be opened or the log compacted.
    pub fn start(
        config: Config,
        options: NodeOptions,
        log: Arc<RaftLog>,
        state_machine: impl StateMachine,
        transport: Arc<dyn Transport>,
        inbox: mpsc::UnboundedReceiver<Message>,
    ) -> Result<RaftNode, DriverError> {
        let store = Receiver::open(&options.snapshot_dir).map_err(storage_error)?;
        let installed = store.installed().map_err(storage_error)?;
        if let Some((meta, _)) = &installed
            && log.term(meta.last_index) != Some(meta.last_term)
        {
            log.compact(meta.last_index, meta.last_term)
                .map_err(storage_error)?;
        }
        let hard_state = log.hard_state();
        let membership = Membership::new(&config.voters, &config.learners);
        let id = config.id;
        let core = Raft::with_snapshot(
            config,
            Arc::clone(&log),
            hard_state,
            installed.as_ref().map(|(meta, _)| meta),
        )
        .map_err(|e| match e {
            CoreError::Config(reason) => DriverError::Invalid(reason),
            _ => DriverError::Invalid("the core refused the configuration"),
        })?;
        let mut store = store;
        if let Some((meta, _)) = &installed {
            // Kept until the state machine is restored from it.
            store.pin(&[meta.id]).map_err(storage_error)?;
        }
        let store = Arc::new(Mutex::new(store));
        let writer = Writer::default();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(core.status());
        let (applied_tx, applied_rx) = watch::channel(0);
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let stop = Arc::new(tokio::sync::Notify::new());
        let mut restoring = Vec::new();
        if let Some((meta, dir)) = installed {
            // Before anything is applied.
            restoring.push(meta.id);
            let _ = apply_tx.send(Apply::Restore { meta, dir });
        }
        let applier = tokio::spawn(apply_loop(Applier {
            id,
            rx: apply_rx,
            tx: apply_tx.clone(),
            state_machine,
            applied_tx,
            membership,
            store: Arc::clone(&store),
            events: events_tx,
            writer: writer.clone(),
            stop: Arc::clone(&stop),
            entries: options.snapshot_entries,
            bytes: options.snapshot_bytes,
        }));
        let driver = tokio::spawn(drive(Driver {
            stop: Arc::clone(&stop),
            core,
            log,
            tick: options.tick,
            compaction_overhead: options.compaction_overhead,
            snapshot_dir: options.snapshot_dir,
            store,
            pinned: restoring.clone(),
            restoring,
            senders: HashMap::new(),
            inbox,
            commands: commands_rx,
            events: events_rx,
            transport,
            apply: apply_tx,
            status: status_tx,
            reads: BTreeMap::new(),
            next_read: 0,
        }));
        Ok(RaftNode {
            commands: commands_tx,
            writer,
            status: status_rx,
            applied: applied_rx,
            driver,
            applier,
            stop,
        })
    }

    /// Proposes `command`; resolves with the state machine's answer once it is committed
    /// and applied here (HashiCorp Raft's `Apply`).
    ///
    /// # Errors
    ///
    /// [`DriverError::NotLeader`], [`DriverError::Dropped`], [`DriverError::Timeout`] (the
    /// command may still be applied), [`DriverError::Stopped`]; [`DriverError::Invalid`] for
    /// an empty command (empty entries are the leader's no-ops).
    pub async fn propose(&self, command: Bytes, timeout: Duration) -> Result<Bytes, DriverError> {
        if command.is_empty() {
            return Err(DriverError::Invalid("empty command"));
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Propose {
                data: command,
                reply,
            })
            .map_err(|_| DriverError::Stopped)?;
        wait(answer, timeout).await
    }

    /// A linearizable read point: resolves once this node (the leader) has confirmed its
    /// leadership with a quorum and applied everything committed before the call; a read of
    /// the state machine then sees every write acknowledged before it. Returns that index.
    ///
    /// # Errors
    ///
    /// As [`propose`](Self::propose).
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, DriverError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Read { reply })
            .map_err(|_| DriverError::Stopped)?;
        wait(answer, timeout).await
    }

    /// Hands leadership to `to` (see [`Raft::transfer_leader`]); returns once started.
    ///
    /// # Errors
    ///
    /// [`DriverError::NotLeader`], [`DriverError::Stopped`].
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), DriverError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Transfer { to, reply })
            .map_err(|_| DriverError::Stopped)?;
        answer.await.map_err(|_| DriverError::Stopped)?
    }

    /// Changes the membership (joint consensus: see [`Raft::propose_conf_change`]); resolves
    /// once the change that enters the joint configuration is applied here (the leader then
    /// leaves it by itself).
    ///
    /// # Errors
    ///
    /// As [`propose`](Self::propose); [`DriverError::Dropped`] while another change is under
    /// way or for a change that cannot apply.
    pub async fn change_membership(
        &self,
        change: ConfChange,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::ChangeMembership { change, reply })
            .map_err(|_| DriverError::Stopped)?;
        wait(answer, timeout).await.map(|_| ())
    }

    /// Adds `node` as a learner: it receives the log and can be promoted with
    /// [`ChangeKind::AddVoter`](crate::ChangeKind) once caught up.
    ///
    /// # Errors
    ///
    /// As [`change_membership`](Self::change_membership).
    pub async fn add_learner(&self, node: NodeId, timeout: Duration) -> Result<(), DriverError> {
        self.change_membership(
            ConfChange::single(crate::ChangeKind::AddLearner, node),
            timeout,
        )
        .await
    }

    /// Takes a snapshot now (it goes into the snapshot store and the log is compacted, as
    /// for one the thresholds trigger); resolves once it is installed. Skipped (`None`) when
    /// nothing was applied since the last snapshot.
    ///
    /// # Errors
    ///
    /// [`DriverError::Storage`] if the state machine or the store failed,
    /// [`DriverError::Timeout`], [`DriverError::Stopped`].
    pub async fn request_snapshot(
        &self,
        timeout: Duration,
    ) -> Result<Option<SnapshotMeta>, DriverError> {
        self.snapshot(None, timeout).await
    }

    /// Writes a snapshot of the current state into the directory `path` (created; it must
    /// not hold another snapshot): the state machine's files and `meta`, the
    /// `strata_snapshot::SnapshotMeta` (protobuf) that describes them, with the last index,
    /// term and membership. The node neither keeps nor compacts for it: it is a copy for
    /// the operator (a backup, or the seed of a new cluster). Always taken.
    ///
    /// # Errors
    ///
    /// As [`request_snapshot`](Self::request_snapshot).
    pub async fn export_snapshot(
        &self,
        path: &Path,
        timeout: Duration,
    ) -> Result<SnapshotMeta, DriverError> {
        match self.snapshot(Some(path.to_path_buf()), timeout).await? {
            Some(meta) => Ok(meta),
            None => Err(DriverError::Storage("no snapshot was exported".to_owned())),
        }
    }

    async fn snapshot(
        &self,
        export: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<Option<SnapshotMeta>, DriverError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Snapshot { export, reply })
            .map_err(|_| DriverError::Stopped)?;
        wait(answer, timeout).await
    }

    /// The node's status (role, term, leader, commit index, per-peer match index), updated
    /// as it changes.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// The index the state machine has applied, updated as it changes.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Stops the node as a crash would: nothing more is sent or persisted once it returns
    /// (a persist already under way finishes first, so that nothing writes to the log after
    /// this returns).
    pub async fn shutdown(self) {
        // A snapshot being written finishes without installing; no other starts.
        self.writer.0.lock().stopped = true;
        self.stop.notify_one();
        let _ = self.driver.await;
        self.applier.abort();
        let _ = self.applier.await;
        let job = self.writer.0.lock().job.take();
        if let Some(job) = job {
            let _ = job.await;
        }
    }
}

async fn wait<T>(
    answer: oneshot::Receiver<Result<T, DriverError>>,
    timeout: Duration,
) -> Result<T, DriverError> {
    match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(DriverError::Stopped),
        Err(_) => Err(DriverError::Timeout),
    }
}

struct Driver {
    stop: Arc<tokio::sync::Notify>,
    core: Raft<Arc<RaftLog>>,
    log: Arc<RaftLog>,
    tick: Duration,
    compaction_overhead: u64,
    snapshot_dir: PathBuf,
    store: Arc<Mutex<Receiver>>,
    /// The snapshot sets last pinned in the store.
    pinned: Vec<u64>,
    /// Sets the state machine is to be restored from: kept until it is.
    restoring: Vec<u64>,
    /// Readers of the sets being sent (their files mapped once).
    senders: HashMap<u64, Sender>,
    inbox: mpsc::UnboundedReceiver<Message>,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedReceiver<Event>,
    transport: Arc<dyn Transport>,
    apply: mpsc::UnboundedSender<Apply>,
    status: watch::Sender<Status>,
    reads: BTreeMap<u64, oneshot::Sender<Result<u64, DriverError>>>,
    next_read: u64,
}

/// How much waiting input one loop iteration takes before producing a `Ready`.
const BATCH_MAX: usize = 4096;

async fn drive(mut d: Driver) {
    let mut ticker = tokio::time::interval(d.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = d.stop.notified() => return,
            _ = ticker.tick() => d.core.tick(),
            m = d.inbox.recv() => match m {
                Some(m) => { let _ = d.core.step(m); }
                None => return,
            },
            c = d.commands.recv() => match c {
                Some(c) => d.handle(c),
                None => return,
            },
            Some(event) = d.events.recv() => {
                let handled = match event {
                    Event::Taken(meta) => d.snapshot_taken(meta).await,
                    Event::Restored(id) => {
                        d.restoring.retain(|&r| r != id);
                        d.pin().await
                    }
                };
                if handled.is_err() {
                    return;
                }
            }
        }
        // Everything else already waiting goes into the same Ready: one append, one sync.
        for _ in 0..BATCH_MAX {
            match d.commands.try_recv() {
                Ok(c) => d.handle(c),
                Err(_) => break,
            }
        }
        for _ in 0..BATCH_MAX {
            match d.inbox.try_recv() {
                Ok(m) => {
                    let _ = d.core.step(m);
                }
                Err(_) => break,
            }
        }
        while d.core.has_ready() {
            if d.process_ready().await.is_err() {
                // The log or the snapshot store failed: stop, as a crash would (a restart
                // recovers what is durable).
                return;
            }
        }
        let status = d.core.status();
        d.status.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status;
            }
            changed
        });
    }
}

/// Runs blocking I/O on Tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DriverError> + Send + 'static,
) -> Result<T, DriverError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(DriverError::Stopped))
}

impl Driver {
    fn handle(&mut self, c: Command) {
        match c {
            Command::Propose { data, reply } => match self.core.propose(data) {
                Ok(index) => {
                    let term = self.core.term();
                    let _ = self.apply.send(Apply::Register { index, term, reply });
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Read { reply } => {
                self.next_read += 1;
                let context = Bytes::copy_from_slice(&self.next_read.to_be_bytes());
                match self.core.read_index(context) {
                    Ok(()) => {
                        self.reads.insert(self.next_read, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Transfer { to, reply } => {
                let _ = reply.send(self.core.transfer_leader(to).map_err(Into::into));
            }
            Command::ChangeMembership { change, reply } => {
                match self.core.propose_conf_change(&change) {
                    Ok(index) => {
                        let term = self.core.term();
                        let _ = self.apply.send(Apply::Register { index, term, reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            Command::Snapshot { export, reply } => {
                let _ = self.apply.send(Apply::Snapshot { export, reply });
            }
        }
    }

    /// The applying task installed a snapshot it took: followers that need compacted
    /// entries get it, and the log is compacted up to `compaction_overhead` entries before
    /// it.
    async fn snapshot_taken(&mut self, meta: SnapshotMeta) -> Result<(), DriverError> {
        // Never past a snapshot still being sent: the follower that installs it needs the
        // entries after it.
        let floor = self.core.transfer_floor().unwrap_or(u64::MAX);
        let to = meta
            .last_index
            .saturating_sub(self.compaction_overhead)
            .min(floor);
        self.core.set_snapshot(meta);
        if to > self.log.compacted().0
            && let Some(term) = self.log.term(to)
        {
            let log = Arc::clone(&self.log);
            blocking(move || log.compact(to, term).map_err(storage_error)).await?;
        }
        self.pin().await
    }

    /// Keeps the snapshot sets the core still sends, and those still to be restored from.
    async fn pin(&mut self) -> Result<(), DriverError> {
        let mut in_use = self.core.snapshots_in_use();
        self.senders.retain(|id, _| in_use.contains(id));
        in_use.extend(self.restoring.iter().copied());
        if in_use == self.pinned {
            return Ok(());
        }
        self.pinned.clone_from(&in_use);
        let store = Arc::clone(&self.store);
        blocking(move || store.lock().pin(&in_use).map_err(storage_error)).await
    }

    /// The directory of snapshot set `id` in the store.
    fn set_dir(&self, id: u64) -> PathBuf {
        self.snapshot_dir.join("snapshots").join(id.to_string())
    }

    /// Reads the data of the snapshot chunks among `messages` from the store. A chunk that
    /// cannot be read is not sent, and its transfer is dropped (the next one starts with the
    /// latest snapshot).
    async fn fill_chunks(&mut self, messages: Vec<Message>) -> Result<Vec<Message>, DriverError> {
        if !messages
            .iter()
            .any(|m| m.kind() == MessageType::InstallSnapshot)
        {
            return Ok(messages);
        }
        let chunk_bytes = self.core.config().snapshot_chunk_bytes;
        for m in &messages {
            if let Some(meta) = &m.snapshot
                && m.kind() == MessageType::InstallSnapshot
                && !self.senders.contains_key(&meta.id)
            {
                let sender = Sender::mapped(&self.set_dir(meta.id), meta.clone(), chunk_bytes);
                self.senders.insert(meta.id, sender);
            }
        }
        let senders = self.senders.clone();
        let (out, unreadable) = blocking(move || {
            let mut out = Vec::with_capacity(messages.len());
            let mut unreadable = Vec::new();
            for mut m in messages {
                if m.kind() == MessageType::InstallSnapshot {
                    let (Some(meta), Some(chunk)) = (m.snapshot.clone(), m.chunk.as_mut()) else {
                        continue;
                    };
                    let at = Position {
                        file: chunk.file,
                        offset: chunk.offset,
                    };
                    if (at.file as usize) < meta.files.len() {
                        let id = meta.id;
                        let read = senders.get(&id).map(|sender| sender.chunk(at));
                        match read {
                            Some(Ok(Some(read))) => *chunk = read,
                            _ => {
                                unreadable.push((m.to, id));
                                continue;
                            }
                        }
                    }
                }
                out.push(m);
            }
            Ok((out, unreadable))
        })
        .await?;
        for (to, id) in unreadable {
            self.core.snapshot_unreadable(to, id);
        }
        Ok(out)
    }

    /// Stages received chunks in the store and tells the core how each went.
    async fn stage_chunks(&mut self, chunks: Vec<Message>) -> Result<(), DriverError> {
        let store = Arc::clone(&self.store);
        let acks: Vec<(NodeId, SnapshotMeta, Ack)> = blocking(move || {
            let mut store = store.lock();
            let mut acks = Vec::with_capacity(chunks.len());
            for m in chunks {
                let (Some(meta), Some(chunk)) = (m.snapshot, m.chunk) else {
                    continue;
                };
                let ack = store.receive(&meta, &chunk).map_err(storage_error)?;
                acks.push((m.from, meta, ack));
            }
            Ok(acks)
        })
        .await?;
        for (from, meta, ack) in acks {
            let _ = self.core.snapshot_staged(from, &meta, ack);
        }
        Ok(())
    }

    async fn process_ready(&mut self) -> Result<(), DriverError> {
        let ready = self.core.ready().map_err(storage_error)?;
        if let Some(meta) = &ready.snapshot {
            // Installed from the leader (its files are in the store): the log starts after
            // it, keeping later entries only if they match; then the state machine is
            // restored from it, before anything after it is applied.
            let log = Arc::clone(&self.log);
            let (index, term) = (meta.last_index, meta.last_term);
            blocking(move || log.compact(index, term).map_err(storage_error)).await?;
            self.restoring.push(meta.id);
            let _ = self.apply.send(Apply::Restore {
                meta: meta.clone(),
                dir: self.set_dir(meta.id),
            });
        }
        if !ready.messages.is_empty() {
            let messages = self.fill_chunks(ready.messages.clone()).await?;
            self.transport.send(messages).await;
        }
        if ready.hard_state.is_some() || !ready.entries.is_empty() {
            let log = Arc::clone(&self.log);
            let hard_state = ready.hard_state;
            let entries = ready.entries.clone();
            // Entries first: a commit index must never be durable before the entries it
            // covers (after a crash in between, a restart would apply entries that a leader
            // had replaced). Both are done before anything in `persisted_messages` goes out.
            blocking(move || {
                log.append(&entries).map_err(storage_error)?;
                match hard_state {
                    Some(hs) => log.set_hard_state(hs).map_err(storage_error),
                    None => Ok(()),
                }
            })
            .await?;
        }
        if !ready.persisted_messages.is_empty() {
            self.transport.send(ready.persisted_messages.clone()).await;
        }
        if !ready.committed_entries.is_empty() {
            let _ = self
                .apply
                .send(Apply::Batch(ready.committed_entries.clone()));
        }
        for read in &ready.read_states {
            let mut id = [0u8; 8];
            if read.context.len() == 8 {
                id.copy_from_slice(&read.context);
            }
            if let Some(reply) = self.reads.remove(&u64::from_be_bytes(id)) {
                let _ = self.apply.send(Apply::Read {
                    index: read.index,
                    reply,
                });
            }
        }
        self.core.advance(&ready);
        if !ready.snapshot_chunks.is_empty() {
            self.stage_chunks(ready.snapshot_chunks).await?;
        }
        self.pin().await?;
        if self.core.role() != Role::Leader && !self.reads.is_empty() {
            // Reads waiting for a leadership confirmation will not get one.
            let leader = self.core.leader();
            for (_, reply) in std::mem::take(&mut self.reads) {
                let _ = reply.send(Err(DriverError::NotLeader { leader }));
            }
        }
        // Reads whose caller gave up (a lost heartbeat round) are forgotten.
        self.reads.retain(|_, reply| !reply.is_closed());
        Ok(())
    }
}

/// The applying task's state.
struct Applier<M: StateMachine> {
    id: NodeId,
    rx: mpsc::UnboundedReceiver<Apply>,
    /// For the snapshot jobs to report back.
    tx: mpsc::UnboundedSender<Apply>,
    state_machine: M,
    applied_tx: watch::Sender<u64>,
    /// The configuration as of the last applied entry (what a snapshot records).
    membership: Membership,
    store: Arc<Mutex<Receiver>>,
    events: mpsc::UnboundedSender<Event>,
    writer: Writer,
    stop: Arc<tokio::sync::Notify>,
    entries: u64,
    bytes: u64,
}

async fn apply_loop<M: StateMachine>(mut a: Applier<M>) {
    let mut pending: BTreeMap<u64, (u64, oneshot::Sender<Result<Bytes, DriverError>>)> =
        BTreeMap::new();
    let mut reads: Vec<(u64, oneshot::Sender<Result<u64, DriverError>>)> = Vec::new();
    let (mut applied, mut applied_term) = (0u64, 0u64);
    // Since the last snapshot.
    let (mut last_snapshot, mut bytes_since) = (0u64, 0u64);
    let mut in_progress = false;
    let mut queued: Vec<(Option<PathBuf>, SnapshotReply)> = Vec::new();
    while let Some(msg) = a.rx.recv().await {
        match msg {
            Apply::Register { index, term, reply } => {
                if let Some((_, replaced)) = pending.insert(index, (term, reply)) {
                    // An earlier proposal at this index was overwritten before it applied.
                    let _ = replaced.send(Err(DriverError::Dropped(
                        "a new leader replaced the entry".to_owned(),
                    )));
                }
            }
            Apply::Batch(entries) => {
                for e in entries {
                    if e.index <= applied {
                        continue;
                    }
                    let response = if e.kind == EntryKind::ConfChange as i32 {
                        if let Ok(change) = ConfChange::decode(e.data.as_ref()) {
                            let _ = a.membership.apply(&change);
                        }
                        Bytes::new()
                    } else if e.data.is_empty() || e.kind != EntryKind::Normal as i32 {
                        Bytes::new()
                    } else {
                        bytes_since += e.data.len() as u64;
                        a.state_machine.apply(e.index, e.data.clone()).await
                    };
                    applied = e.index;
                    applied_term = e.term;
                    if let Some((term, reply)) = pending.remove(&e.index) {
                        let _ = reply.send(if term == e.term {
                            Ok(response)
                        } else {
                            Err(DriverError::Dropped(
                                "a new leader replaced the entry".to_owned(),
                            ))
                        });
                    }
                }
                a.applied_tx.send_replace(applied);
                let due = (a.entries > 0 && applied >= last_snapshot + a.entries)
                    || (a.bytes > 0 && bytes_since >= a.bytes);
                if due && !in_progress {
                    let (tx, _) = oneshot::channel();
                    queued.push((None, tx));
                }
            }
            Apply::Read { index, reply } => reads.push((index, reply)),
            Apply::Restore { meta, dir } => {
                let names: Vec<String> = meta.files.iter().map(|f| f.name.clone()).collect();
                let restored = a.state_machine.restore(&dir, &names).await;
                let membership = crate::raft::decode_membership(&meta.membership);
                let (Ok(()), Ok(membership)) = (restored, membership) else {
                    // The state machine cannot be trusted: stop, as a crash would.
                    a.stop.notify_one();
                    return;
                };
                let _ = a.events.send(Event::Restored(meta.id));
                a.membership = membership;
                applied = meta.last_index;
                applied_term = meta.last_term;
                last_snapshot = meta.last_index;
                bytes_since = 0;
                // Proposals the snapshot covers were not applied here: their outcome is
                // not known on this node.
                let covered: Vec<u64> = pending.range(..=applied).map(|(i, _)| *i).collect();
                for index in covered {
                    if let Some((_, reply)) = pending.remove(&index) {
                        let _ = reply.send(Err(DriverError::Timeout));
                    }
                }
                a.applied_tx.send_replace(applied);
            }
            Apply::Snapshot { export, reply } => {
                if export.is_none() && applied == last_snapshot {
                    let _ = reply.send(Ok(None));
                } else {
                    queued.push((export, reply));
                }
            }
            Apply::SnapshotDone { taken } => {
                in_progress = false;
                if let Some(meta) = taken {
                    last_snapshot = last_snapshot.max(meta.last_index);
                    bytes_since = 0;
                }
            }
        }
        if !in_progress && !queued.is_empty() {
            let (export, reply) = queued.remove(0);
            in_progress = true;
            start_snapshot(&mut a, applied, applied_term, export, reply).await;
        }
        let mut still = Vec::new();
        for (index, reply) in reads.drain(..) {
            if index <= applied {
                let _ = reply.send(Ok(index));
            } else {
                still.push((index, reply));
            }
        }
        reads = still;
    }
}

/// Captures the state machine at `index` and writes the snapshot on the blocking pool;
/// reports back to the applying task (and the driver, for a snapshot that was installed).
async fn start_snapshot<M: StateMachine>(
    a: &mut Applier<M>,
    index: u64,
    term: u64,
    export: Option<PathBuf>,
    reply: SnapshotReply,
) {
    let writer = match a.state_machine.snapshot().await {
        Ok(writer) => writer,
        Err(e) => {
            let _ = reply.send(Err(storage_error(e)));
            let _ = a.tx.send(Apply::SnapshotDone { taken: None });
            return;
        }
    };
    let membership = Bytes::from(a.membership.to_conf_state().encode_to_vec());
    let id = snapshot_id(a.id, index);
    let store = Arc::clone(&a.store);
    let (tx, events) = (a.tx.clone(), a.events.clone());
    let writer_state = a.writer.clone();
    let mut slot = a.writer.0.lock();
    if slot.stopped {
        let _ = reply.send(Err(DriverError::Stopped));
        return;
    }
    slot.job = Some(tokio::spawn(async move {
        let exporting = export.is_some();
        let made = blocking(move || {
            let dir = match &export {
                Some(path) => {
                    std::fs::create_dir_all(path).map_err(storage_error)?;
                    path.clone()
                }
                None => store.lock().local_dir().map_err(storage_error)?,
            };
            let names = writer(&dir).map_err(storage_error)?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut meta =
                strata_snapshot::describe(&dir, id, index, term, &names).map_err(storage_error)?;
            meta.membership = membership;
            if export.is_some() {
                strata_fs::atomic_replace(&dir.join("meta"), &meta.encode_to_vec())
                    .map_err(storage_error)?;
                strata_fs::sync_dir(&dir).map_err(storage_error)?;
                return Ok(Some(meta));
            }
            // Nothing once the node stopped (checked with the store locked, so that a
            // shutdown either waits for this or stops it); not installed if a newer snapshot
            // came from the leader meanwhile.
            let mut store = store.lock();
            if writer_state.0.lock().stopped {
                return Err(DriverError::Stopped);
            }
            let installed = store.adopt(&meta).map_err(storage_error)?;
            Ok(installed.then_some(meta))
        })
        .await;
        let kept = match &made {
            Ok(Some(meta)) if !exporting => Some(meta.clone()),
            _ => None,
        };
        if let Some(meta) = &kept {
            let _ = events.send(Event::Taken(meta.clone()));
        }
        let _ = tx.send(Apply::SnapshotDone { taken: kept });
        let _ = reply.send(made);
    }));
}

/// A snapshot id unlikely to repeat: from the node, the index and the clock.
fn snapshot_id(node: NodeId, index: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = node.rotate_left(48) ^ index ^ nanos.rotate_left(20);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (x ^ (x >> 31)).max(1)
}
