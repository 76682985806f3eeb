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
//! compacted up to [`NodeOptions::compaction_overhead_entries`] entries before it. A leader streams
//! the latest set to a follower that needs compacted entries; the follower stages the chunks
//! in its store and, once the set is installed, compacts its log to it and restores its state
//! machine from it. A restart restores the state machine from the installed set and applies
//! the log after it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use strata_raft_log::RaftLog;
use strata_snapshot::{Receiver, SnapshotMeta};
use tokio::sync::{mpsc, oneshot, watch};

use crate::membership::{ConfChange, Membership};
use crate::message::{Message, NodeId};
use crate::raft::{Config, Error as CoreError, Raft, Status};

mod apply;
mod event_loop;
mod mem_network;
mod traits;

use self::apply::{Applier, Apply, Writer, apply_loop};
use self::event_loop::{Driver, drive};
pub use self::mem_network::MemNetwork;
pub use self::traits::{NodeOptions, SnapshotWriter, StateMachine, Transport};

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

fn storage_error(e: impl std::fmt::Display) -> DriverError {
    DriverError::Storage(e.to_string())
}

/// Runs blocking I/O on Tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DriverError> + Send + 'static,
) -> Result<T, DriverError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(DriverError::Stopped))
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
            compaction_overhead_entries: options.compaction_overhead_entries,
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
