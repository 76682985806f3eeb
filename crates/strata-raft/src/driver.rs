//! The async driver: runs a [`Raft`] core on Tokio with a durable [`RaftLog`], a
//! [`Transport`] and a [`StateMachine`], behind a [`RaftNode`] handle.
//!
//! One task owns the core: it ticks it, steps inbound messages and client commands (taking
//! everything that is waiting at once, so proposals that arrive together become one append
//! and one `fdatasync`), sends what may go at once, persists (on Tokio's blocking pool), then
//! sends what had to wait for the persist. Committed entries go to a second task that applies
//! them in order, off the hot path, and answers proposals and reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use strata_raft_log::{Entry, EntryKind, RaftLog};
use tokio::sync::{mpsc, oneshot, watch};

use crate::membership::ConfChange;
use crate::message::{Message, NodeId};
use crate::raft::{Config, Error as CoreError, Raft, Role, Status};

/// The state machine the log drives (the server's key-value store).
#[async_trait::async_trait]
pub trait StateMachine: Send + 'static {
    /// Applies the committed command at `index`; what it returns answers the proposal.
    /// Called once per entry, in index order (after a restart, again from the first entry
    /// in the log).
    async fn apply(&mut self, index: u64, command: Bytes) -> Bytes;
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
}

enum Apply {
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
        })
    }
}

impl RaftNode {
    /// Starts a node on the current Tokio runtime: restores the core from `log` (its hard
    /// state and entries), and runs it with a tick every `tick`.
    ///
    /// # Errors
    ///
    /// [`DriverError::Invalid`] for a configuration the core refuses.
    pub fn start(
        config: Config,
        tick: Duration,
        log: Arc<RaftLog>,
        state_machine: impl StateMachine,
        transport: Arc<dyn Transport>,
        inbox: mpsc::UnboundedReceiver<Message>,
    ) -> Result<RaftNode, DriverError> {
        let hard_state = log.hard_state();
        let core = Raft::new(config, Arc::clone(&log), hard_state).map_err(|e| match e {
            CoreError::Config(reason) => DriverError::Invalid(reason),
            _ => DriverError::Invalid("the core refused the configuration"),
        })?;
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(core.status());
        let (applied_tx, applied_rx) = watch::channel(0);
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let applier = tokio::spawn(apply_loop(apply_rx, state_machine, applied_tx));
        let stop = Arc::new(tokio::sync::Notify::new());
        let driver = tokio::spawn(drive(Driver {
            stop: Arc::clone(&stop),
            core,
            log,
            tick,
            inbox,
            commands: commands_rx,
            transport,
            apply: apply_tx,
            status: status_tx,
            reads: BTreeMap::new(),
            next_read: 0,
        }));
        Ok(RaftNode {
            commands: commands_tx,
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
        self.stop.notify_one();
        let _ = self.driver.await;
        self.applier.abort();
        let _ = self.applier.await;
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
    inbox: mpsc::UnboundedReceiver<Message>,
    commands: mpsc::UnboundedReceiver<Command>,
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
                // The log failed: stop, as a crash would (a restart recovers what is durable).
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
        }
    }

    async fn process_ready(&mut self) -> Result<(), ()> {
        let ready = self.core.ready().map_err(|_| ())?;
        if !ready.messages.is_empty() {
            self.transport.send(ready.messages.clone()).await;
        }
        if ready.hard_state.is_some() || !ready.entries.is_empty() {
            let log = Arc::clone(&self.log);
            let hard_state = ready.hard_state;
            let entries = ready.entries.clone();
            // Entries first: a commit index must never be durable before the entries it
            // covers (after a crash in between, a restart would apply entries that a leader
            // had replaced). Both are done before anything in `persisted_messages` goes out.
            let persisted = tokio::task::spawn_blocking(move || {
                log.append(&entries)?;
                match hard_state {
                    Some(hs) => log.set_hard_state(hs),
                    None => Ok(()),
                }
            })
            .await;
            if !matches!(persisted, Ok(Ok(()))) {
                return Err(());
            }
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

async fn apply_loop(
    mut rx: mpsc::UnboundedReceiver<Apply>,
    mut state_machine: impl StateMachine,
    applied_tx: watch::Sender<u64>,
) {
    let mut pending: BTreeMap<u64, (u64, oneshot::Sender<Result<Bytes, DriverError>>)> =
        BTreeMap::new();
    let mut reads: Vec<(u64, oneshot::Sender<Result<u64, DriverError>>)> = Vec::new();
    let mut applied = 0u64;
    while let Some(msg) = rx.recv().await {
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
                    let response = if e.data.is_empty() || e.kind != EntryKind::Normal as i32 {
                        Bytes::new()
                    } else {
                        state_machine.apply(e.index, e.data.clone()).await
                    };
                    applied = e.index;
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
                applied_tx.send_replace(applied);
            }
            Apply::Read { index, reply } => reads.push((index, reply)),
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
