//! [`RaftNode`]: a handle on a running node, its errors, and the requests it sends its loop.
//!
//! One task (the loop, `event_loop`) owns the core: it ticks it, steps inbound messages and
//! client requests (taking everything that is waiting at once, so that proposals that arrive
//! together become one append and one `fdatasync`, and reads that arrive together one
//! heartbeat round), and acts on each `Ready` with [`process_ready`](crate::process_ready) (on
//! Tokio's blocking pool when the `Ready` needs I/O). Committed entries go in batches to a
//! second task (`apply`) that applies them in order, off the hot path, and answers proposals
//! and reads.
//!
//! Snapshots: the applying task takes one every [`NodeOptions::snapshot_entries`] entries
//! or [`NodeOptions::snapshot_bytes`] bytes (or when asked): the state machine captures its
//! state there, and writes it as files on the blocking pool while applying goes on; the set
//! goes into the node's snapshot store (`strata_snapshot::Receiver`) and the log is
//! compacted up to [`NodeOptions::compaction_overhead_entries`] entries before it. A leader
//! streams the latest set to a follower that needs compacted entries; the follower stages the
//! chunks in its store and, once the set is installed, compacts its log to it and restores its
//! state machine from it. A restart restores the state machine from the installed set only if
//! the set is newer than what the state machine holds ([`StateMachine::applied_index`]), and
//! applies the log after the newer of the two.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use strata_raft::{ConfChange, Config, Error as CoreError, NodeId, Raft, Status};
use strata_raft_log::RaftLog;
use strata_snapshot::{Receiver, SnapshotMeta};
use tokio::sync::{mpsc, oneshot, watch};

use crate::apply::{Applier, Apply, Writer, apply_loop};
use crate::event_loop::{Driver, NodeIo, drive};
use crate::inbox::Inbox;
use crate::traits::NodeOptions;
use crate::{StateMachine, Transport};

/// A request from a [`RaftNode`] handle to its loop.
pub(crate) enum Command {
    Propose {
        data: Bytes,
        reply: oneshot::Sender<Result<Bytes, DriverError>>,
    },
    Read {
        reply: ReadReply,
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

pub(crate) type SnapshotReply = oneshot::Sender<Result<Option<SnapshotMeta>, DriverError>>;
pub(crate) type ReadReply = oneshot::Sender<Result<u64, DriverError>>;

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
    /// The proposal (or membership change) is larger than `Config::entry_bytes_max`; nothing
    /// reached the log.
    #[error("entry too large: {bytes} bytes, at most {max}")]
    EntryTooLarge {
        /// The entry's size.
        bytes: usize,
        /// The limit.
        max: usize,
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
            CoreError::EntryTooLarge { bytes, max } => DriverError::EntryTooLarge { bytes, max },
            other => DriverError::Dropped(other.to_string()),
        }
    }
}

/// A running Raft node.
#[derive(Debug)]
pub struct RaftNode {
    commands: mpsc::Sender<Command>,
    /// Snapshot requests go straight to the applying task.
    apply: mpsc::Sender<Apply>,
    writer: Writer,
    status: watch::Receiver<Status>,
    applied: watch::Receiver<u64>,
    /// Taken by the first [`shutdown`](RaftNode::shutdown).
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Watches the applying task's end.
    applier: Mutex<Option<tokio::task::JoinHandle<()>>>,
    applier_abort: tokio::task::AbortHandle,
    stop: Arc<tokio::sync::Notify>,
    failure: Failure,
    /// `Config::entry_bytes_max`: a larger proposal is refused before it is queued.
    entry_bytes_max: usize,
}

/// Why a node stopped by itself (the first failure), shared by its tasks.
pub(crate) type Failure = Arc<Mutex<Option<DriverError>>>;

/// Records `error` as the node's failure, unless one is recorded already.
pub(crate) fn record(failure: &Failure, error: DriverError) {
    failure.lock().get_or_insert(error);
}

pub(crate) fn storage_error(e: impl std::error::Error) -> DriverError {
    // With its causes: "write <segment>" alone does not say the disk is full.
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    DriverError::Storage(text)
}

/// Runs blocking I/O on Tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DriverError> + Send + 'static,
) -> Result<T, DriverError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(DriverError::Stopped))
}

impl RaftNode {
    /// Starts a node on the current Tokio runtime: restores the core from `log` (its hard
    /// state and entries) and the installed snapshot in `options.snapshot_dir`, and runs it.
    /// The state machine is restored from that snapshot only if it is newer than
    /// [`StateMachine::applied_index`] (a log that does not yet start at it, after a crash
    /// in between, is compacted to it first); entries are applied from the one after the
    /// newer of the two.
    ///
    /// # Errors
    ///
    /// [`DriverError::Invalid`] for a configuration the core refuses (or a state machine
    /// whose applied index is past the log's end); [`DriverError::Storage`] if the snapshot
    /// store cannot be opened or the log compacted.
    pub fn start(
        mut config: Config,
        options: NodeOptions,
        log: Arc<RaftLog>,
        state_machine: impl StateMachine,
        transport: Arc<dyn Transport>,
        inbox: Inbox,
    ) -> Result<RaftNode, DriverError> {
        let mut store = Receiver::open(&options.snapshot_dir).map_err(storage_error)?;
        let installed = store.installed().map_err(storage_error)?;
        if let Some((meta, _)) = &installed
            && log.term(meta.last_index) != Some(meta.last_term)
        {
            log.compact(meta.last_index, meta.last_term)
                .map_err(storage_error)?;
        }
        let held = state_machine.applied_index();
        let snapshot = installed.as_ref().map(|(meta, _)| meta.clone());
        let last_snapshot = snapshot.as_ref().map_or(0, |meta| meta.last_index);
        // Restore only from a snapshot newer than what the state machine holds.
        let restore = installed.filter(|(meta, _)| meta.last_index > held);
        // What the state machine holds decides where applying resumes, whatever the caller set.
        config.applied = held;
        let hard_state = log.hard_state();
        let id = config.id;
        let chunk_bytes = config.snapshot_chunk_bytes;
        let entry_bytes_max = config.entry_bytes_max;
        let core = Raft::with_snapshot(config, Arc::clone(&log), hard_state, snapshot.as_ref())
            .map_err(|e| match e {
                CoreError::Config(reason) => DriverError::Invalid(reason),
                other => storage_error(other),
            })?;
        let membership = core.membership().clone();
        if let Some((meta, _)) = &restore {
            // Kept until the state machine is restored from it.
            store.pin(&[meta.id]).map_err(storage_error)?;
        }
        let store = Arc::new(Mutex::new(store));
        let writer = Writer::default();
        let (commands_tx, commands_rx) = mpsc::channel(options.requests_max.max(1));
        let (status_tx, status_rx) = watch::channel(core.status());
        let (applied_tx, applied_rx) = watch::channel(held);
        let apply_batches_max = options.apply_batches_max.max(1);
        let (apply_tx, apply_rx) = mpsc::channel(apply_batches_max);
        // Every event answers a message of the apply queue or the one snapshot job, so this
        // never fills (the applier's `try_send` never fails for want of room).
        let (events_tx, events_rx) = mpsc::channel(apply_batches_max + 2);
        let stop = Arc::new(tokio::sync::Notify::new());
        let failure = Failure::default();
        let mut restoring = Vec::new();
        if let Some((meta, dir)) = restore {
            // Before anything is applied.
            restoring.push(meta.id);
            apply_tx
                .try_send(Apply::Restore { meta, dir })
                .map_err(|_| DriverError::Stopped)?;
        }
        let applying = tokio::spawn(apply_loop(Applier {
            id,
            rx: apply_rx,
            state_machine,
            applied_tx,
            applied: held,
            applied_term: log.term(held).unwrap_or(0),
            membership,
            store: Arc::clone(&store),
            events: events_tx,
            writer: writer.clone(),
            stop: Arc::clone(&stop),
            failure: Arc::clone(&failure),
            entries: options.snapshot_entries,
            bytes: options.snapshot_bytes,
            last_snapshot,
            checksums: Arc::default(),
        }));
        // The applying task's end, watched: a panic there stops the node and says why (as a
        // failure of the state machine would); the loop ends it when the loop ends.
        let applier_abort = applying.abort_handle();
        let applier = {
            let (failure, stop) = (Arc::clone(&failure), Arc::clone(&stop));
            tokio::spawn(async move {
                if let Err(e) = applying.await
                    && e.is_panic()
                {
                    record(
                        &failure,
                        DriverError::Storage("the applying task panicked".to_owned()),
                    );
                    stop.notify_one();
                }
            })
        };
        let io = NodeIo::new(
            options.snapshot_dir.clone(),
            chunk_bytes,
            Arc::clone(&store),
            transport,
            apply_tx.clone(),
            restoring,
        );
        let driver = tokio::spawn(drive(Driver::new(
            Arc::clone(&stop),
            Arc::clone(&failure),
            applier_abort.clone(),
            core,
            io,
            log,
            &options,
            inbox,
            commands_rx,
            events_rx,
            status_tx,
        )));
        Ok(RaftNode {
            commands: commands_tx,
            apply: apply_tx,
            writer,
            status: status_rx,
            applied: applied_rx,
            driver: Mutex::new(Some(driver)),
            applier: Mutex::new(Some(applier)),
            applier_abort,
            stop,
            failure,
            entry_bytes_max,
        })
    }

    async fn request(&self, command: Command) -> Result<(), DriverError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| DriverError::Stopped)
    }

    /// Proposes `command`; resolves with the state machine's answer once it is committed
    /// and applied here (HashiCorp Raft's `Apply`).
    ///
    /// # Errors
    ///
    /// [`DriverError::NotLeader`], [`DriverError::EntryTooLarge`], [`DriverError::Dropped`],
    /// [`DriverError::Timeout`] (the command may still be applied), [`DriverError::Stopped`];
    /// [`DriverError::Invalid`] for an empty command (empty entries are the leader's no-ops).
    pub async fn propose(&self, command: Bytes, timeout: Duration) -> Result<Bytes, DriverError> {
        if command.is_empty() {
            return Err(DriverError::Invalid("empty command"));
        }
        if command.len() > self.entry_bytes_max {
            return Err(DriverError::EntryTooLarge {
                bytes: command.len(),
                max: self.entry_bytes_max,
            });
        }
        let (reply, answer) = oneshot::channel();
        wait(
            self.request(Command::Propose {
                data: command,
                reply,
            }),
            answer,
            timeout,
        )
        .await
    }

    /// A linearizable read point: resolves once the leader has confirmed its leadership with
    /// a quorum (on a follower, the request is forwarded to the leader, which answers with its
    /// commit index) and this node has applied everything committed before the call; a read
    /// of this node's state machine then sees every write acknowledged before it. Reads asked
    /// together share one confirmation round. Returns that index.
    ///
    /// # Errors
    ///
    /// As [`propose`](Self::propose).
    pub async fn read_index(&self, timeout: Duration) -> Result<u64, DriverError> {
        let (reply, answer) = oneshot::channel();
        wait(self.request(Command::Read { reply }), answer, timeout).await
    }

    /// Hands leadership to `to` (see [`Raft::transfer_leader`]); returns once started.
    ///
    /// # Errors
    ///
    /// [`DriverError::NotLeader`], [`DriverError::Stopped`].
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), DriverError> {
        let (reply, answer) = oneshot::channel();
        self.request(Command::Transfer { to, reply }).await?;
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
        wait(
            self.request(Command::ChangeMembership { change, reply }),
            answer,
            timeout,
        )
        .await
        .map(|_| ())
    }

    /// Adds `node` as a learner: it receives the log and can be promoted with
    /// [`ChangeKind::AddVoter`](strata_raft::ChangeKind) once caught up.
    ///
    /// # Errors
    ///
    /// As [`change_membership`](Self::change_membership).
    pub async fn add_learner(&self, node: NodeId, timeout: Duration) -> Result<(), DriverError> {
        self.change_membership(
            ConfChange::single(strata_raft::ChangeKind::AddLearner, node),
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
        let request = async {
            self.apply
                .send(Apply::Snapshot { export, reply })
                .await
                .map_err(|_| DriverError::Stopped)
        };
        wait(request, answer, timeout).await
    }

    /// The node's status (role, term, leader, commit index, per-peer match index), updated
    /// as it changes.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Why the node stopped by itself, if it did: its log, snapshot store or state machine
    /// failed (then every request answers [`DriverError::Stopped`]; a restart recovers what
    /// is durable). `None` while it runs, and after a [`shutdown`](Self::shutdown).
    pub fn failure(&self) -> Option<DriverError> {
        self.failure.lock().clone()
    }

    /// The index the state machine has applied, updated as it changes.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Stops the node as a crash would: nothing more is sent or persisted once it returns
    /// (a persist already under way finishes first, so that nothing writes to the log after
    /// this returns). It takes `&self` so that a server sharing the node with its request
    /// handlers can stop it; requests made afterwards answer [`DriverError::Stopped`], and a
    /// second call returns at once.
    pub async fn shutdown(&self) {
        // A snapshot being written finishes without installing; no other starts.
        self.writer.0.lock().stopped = true;
        self.stop.notify_one();
        let driver = self.driver.lock().take();
        if let Some(driver) = driver {
            let _ = driver.await;
        }
        self.applier_abort.abort();
        let applier = self.applier.lock().take();
        if let Some(applier) = applier {
            let _ = applier.await;
        }
        let job = self.writer.0.lock().job.take();
        if let Some(job) = job {
            let _ = job.await;
        }
    }
}

/// Queues `request` (waiting for room in the loop's bounded queue) and waits for its
/// answer, all within `timeout`.
async fn wait<T>(
    request: impl Future<Output = Result<(), DriverError>>,
    answer: oneshot::Receiver<Result<T, DriverError>>,
    timeout: Duration,
) -> Result<T, DriverError> {
    let asked = async {
        request.await?;
        answer.await.unwrap_or(Err(DriverError::Stopped))
    };
    tokio::time::timeout(timeout, asked)
        .await
        .unwrap_or(Err(DriverError::Timeout))
}
