//! The applying task: applies committed entries to the state machine in order, answers
//! proposals and reads, restores from snapshots, and takes and writes snapshots off the
//! apply path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;
use strata_raft_log::{Entry, EntryKind};
use strata_snapshot::{Receiver, SnapshotMeta};
use tokio::sync::{mpsc, oneshot, watch};

use strata_raft::{ConfChange, Membership, NodeId};

use crate::node::{
    DriverError, Failure, ReadReply, SnapshotReply, blocking, record, storage_error,
};
use crate::traits::{Committed, CommittedKind, StateMachine};

/// What the applying task tells the loop.
pub(crate) enum Event {
    /// A snapshot it took is installed in the store.
    Taken(SnapshotMeta),
    /// The state machine was restored from set `id` (the store may drop it now).
    Restored(u64),
}

/// The snapshot job writing files, if any, and whether the node stopped: shutdown waits for
/// the job, and a job that finds the node stopped installs nothing.
#[derive(Clone, Default)]
pub(crate) struct Writer(pub(crate) Arc<Mutex<WriterState>>);

#[derive(Default)]
pub(crate) struct WriterState {
    pub(crate) stopped: bool,
    pub(crate) job: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

/// A proposal waiting for its entry to be applied.
pub(crate) struct Registration {
    pub(crate) index: u64,
    pub(crate) term: u64,
    pub(crate) reply: oneshot::Sender<Result<Bytes, DriverError>>,
}

/// What the loop (and a [`RaftNode`](crate::RaftNode) asking for a snapshot) sends the
/// applying task.
pub(crate) enum Apply {
    Restore {
        meta: SnapshotMeta,
        dir: PathBuf,
    },
    Snapshot {
        export: Option<PathBuf>,
        reply: SnapshotReply,
    },
    /// One `Ready`'s worth: the proposals registered since the last batch (ahead of the
    /// entries that may commit them), the committed entries, and the confirmed reads (their
    /// index and everyone waiting on it).
    Batch {
        registered: Vec<Registration>,
        entries: Vec<Entry>,
        reads: Vec<(u64, Vec<ReadReply>)>,
    },
}

/// The applying task's state.
pub(crate) struct Applier<M: StateMachine> {
    pub(crate) id: NodeId,
    pub(crate) rx: mpsc::Receiver<Apply>,
    pub(crate) state_machine: M,
    pub(crate) applied_tx: watch::Sender<u64>,
    /// The last index applied (or restored, or held at start), and its term (0 when held at
    /// start: the loop's first batch or restore sets it before a snapshot needs it).
    pub(crate) applied: u64,
    pub(crate) applied_term: u64,
    /// The configuration as of the last applied entry (what a snapshot records).
    pub(crate) membership: Membership,
    pub(crate) store: Arc<Mutex<Receiver>>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) writer: Writer,
    pub(crate) stop: Arc<tokio::sync::Notify>,
    /// Why the node stopped, if it failed.
    pub(crate) failure: Failure,
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
    /// The last index of the latest snapshot in the store.
    pub(crate) last_snapshot: u64,
    /// The checksums of the last snapshot's files: an LSM's next snapshot is mostly the same
    /// tables, which are then not read again.
    pub(crate) checksums: Arc<strata_snapshot::ChecksumCache>,
}

/// Snapshot requests (and exports) waiting for the one snapshot job, at most: each is cheap to
/// hold, but one job serves one at a time, so more only wait longer.
const SNAPSHOT_REQUESTS_MAX: usize = 16;

/// Proposals waiting for their entries, by index, with the term they were proposed in.
type Pending = BTreeMap<u64, (u64, oneshot::Sender<Result<Bytes, DriverError>>)>;

fn replaced() -> DriverError {
    DriverError::Dropped("a new leader replaced the entry".to_owned())
}

impl<M: StateMachine> Applier<M> {
    fn event(&self, event: Event) {
        // The queue has room for every event the apply queue and the one snapshot job can
        // cause; a full or closed queue means the loop is gone.
        let _ = self.events.try_send(event);
    }

    /// The state machine failed: the node stops, as a crash would (a restart recovers what is
    /// durable).
    fn fail(&self, error: DriverError) {
        record(&self.failure, error);
        self.stop.notify_one();
    }

    /// Applies one batch of committed entries and answers the proposals among them.
    ///
    /// # Errors
    ///
    /// The state machine failed or broke its contract (the node stops).
    async fn apply_batch(
        &mut self,
        entries: Vec<Entry>,
        pending: &mut Pending,
        bytes_since: &mut u64,
    ) -> Result<(), DriverError> {
        let mut batch = Vec::with_capacity(entries.len());
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            let kind = if e.kind == EntryKind::ConfChange as i32 {
                match ConfChange::decode(e.data.as_ref()) {
                    Ok(change) => {
                        let _ = self.membership.apply(&change);
                        CommittedKind::Membership(change)
                    }
                    // The core counted it as malformed and changed nothing.
                    Err(_) => CommittedKind::Noop,
                }
            } else if e.data.is_empty() || e.kind != EntryKind::Normal as i32 {
                CommittedKind::Noop
            } else {
                *bytes_since += e.data.len() as u64;
                CommittedKind::Command(e.data)
            };
            batch.push(Committed {
                index: e.index,
                term: e.term,
                kind,
            });
        }
        let Some(last) = batch.last().map(|c| (c.index, c.term)) else {
            return Ok(());
        };
        // Each entry's index and term, and whether it carries a command (and so an answer).
        let shape: Vec<(u64, u64, bool)> = batch
            .iter()
            .map(|c| (c.index, c.term, matches!(c.kind, CommittedKind::Command(_))))
            .collect();
        let commands = shape.iter().filter(|(_, _, command)| *command).count();
        let first = batch[0].index;
        let answers = self.state_machine.apply(batch).await.map_err(|e| {
            DriverError::Storage(format!(
                "the state machine failed to apply {first}..={}: {e}",
                last.0
            ))
        })?;
        if answers.len() != commands {
            // The state machine broke its contract: its state cannot be trusted.
            return Err(DriverError::Storage(format!(
                "the state machine answered {} of {commands} commands in {first}..={}",
                answers.len(),
                last.0
            )));
        }
        if !pending.is_empty() {
            let mut answers = answers.into_iter();
            for (index, term, command) in shape {
                let answer = if command { answers.next() } else { None };
                if let Some((proposed, reply)) = pending.remove(&index) {
                    let _ = reply.send(if proposed == term {
                        Ok(answer.unwrap_or_default())
                    } else {
                        Err(replaced())
                    });
                }
            }
        }
        (self.applied, self.applied_term) = last;
        Ok(())
    }
}

pub(crate) async fn apply_loop<M: StateMachine>(mut a: Applier<M>) {
    let mut pending = Pending::new();
    let mut reads: Vec<(u64, ReadReply)> = Vec::new();
    let mut bytes_since = 0u64;
    let mut job: Option<oneshot::Receiver<Option<SnapshotMeta>>> = None;
    let mut queued: Vec<(Option<PathBuf>, SnapshotReply)> = Vec::new();
    loop {
        let msg = tokio::select! {
            msg = a.rx.recv() => match msg {
                Some(msg) => Some(msg),
                None => return,
            },
            taken = async { job.as_mut().expect("polled only with a job").await }, if job.is_some() => {
                job = None;
                if let Ok(Some(meta)) = taken {
                    a.last_snapshot = a.last_snapshot.max(meta.last_index);
                    bytes_since = 0;
                }
                None
            }
        };
        match msg {
            None => {}
            Some(Apply::Batch {
                registered,
                entries,
                reads: confirmed,
            }) => {
                for r in registered {
                    if r.index <= a.applied {
                        // Covered by a snapshot restored since it was proposed: its outcome
                        // is not known on this node.
                        let _ = r.reply.send(Err(DriverError::Timeout));
                        continue;
                    }
                    if let Some((_, earlier)) = pending.insert(r.index, (r.term, r.reply)) {
                        // An earlier proposal at this index was overwritten before it applied.
                        let _ = earlier.send(Err(replaced()));
                    }
                }
                if let Err(e) = a.apply_batch(entries, &mut pending, &mut bytes_since).await {
                    a.fail(e);
                    return;
                }
                a.applied_tx.send_replace(a.applied);
                for (index, replies) in confirmed {
                    reads.extend(replies.into_iter().map(|r| (index, r)));
                }
                let due = (a.entries > 0 && a.applied >= a.last_snapshot.saturating_add(a.entries))
                    || (a.bytes > 0 && bytes_since >= a.bytes);
                if due && job.is_none() && queued.is_empty() {
                    let (tx, _) = oneshot::channel();
                    queued.push((None, tx));
                }
            }
            Some(Apply::Restore { meta, dir }) => {
                let names: Vec<String> = meta.files.iter().map(|f| f.name.clone()).collect();
                let restored = a
                    .state_machine
                    .restore(&dir, &names, meta.last_index)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        strata_raft::decode_membership(&meta.membership).map_err(str::to_owned)
                    });
                let membership = match restored {
                    Ok(membership) => membership,
                    Err(e) => {
                        // The state machine cannot be trusted: stop, as a crash would.
                        a.fail(DriverError::Storage(format!(
                            "restoring snapshot {} (up to {}): {e}",
                            meta.id, meta.last_index
                        )));
                        return;
                    }
                };
                tracing::info!(
                    snapshot = meta.id,
                    last_index = meta.last_index,
                    last_term = meta.last_term,
                    "raft: state machine restored from a snapshot"
                );
                a.event(Event::Restored(meta.id));
                a.membership = membership;
                a.applied = meta.last_index;
                a.applied_term = meta.last_term;
                a.last_snapshot = a.last_snapshot.max(meta.last_index);
                bytes_since = 0;
                // Proposals the snapshot covers were not applied here: their outcome is
                // not known on this node.
                let covered: Vec<u64> = pending.range(..=a.applied).map(|(i, _)| *i).collect();
                for index in covered {
                    if let Some((_, reply)) = pending.remove(&index) {
                        let _ = reply.send(Err(DriverError::Timeout));
                    }
                }
                a.applied_tx.send_replace(a.applied);
            }
            Some(Apply::Snapshot { export, reply }) => {
                if export.is_none() && a.applied == a.last_snapshot {
                    let _ = reply.send(Ok(None));
                } else if queued.len() >= SNAPSHOT_REQUESTS_MAX {
                    let _ = reply.send(Err(DriverError::Dropped(format!(
                        "{SNAPSHOT_REQUESTS_MAX} snapshot requests are already waiting"
                    ))));
                } else {
                    queued.push((export, reply));
                }
            }
        }
        if job.is_none() && !queued.is_empty() {
            let (export, reply) = queued.remove(0);
            job = start_snapshot(&mut a, export, reply).await;
        }
        let applied = a.applied;
        let mut still = Vec::with_capacity(reads.len());
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

/// Captures the state machine at the last applied entry and writes the snapshot on the
/// blocking pool; the job reports back through the returned receiver (the snapshot it
/// installed, if any), and to the loop for an installed one. `None` if no job started.
async fn start_snapshot<M: StateMachine>(
    a: &mut Applier<M>,
    export: Option<PathBuf>,
    reply: SnapshotReply,
) -> Option<oneshot::Receiver<Option<SnapshotMeta>>> {
    let (index, term) = (a.applied, a.applied_term);
    let writer = match a.state_machine.snapshot().await {
        Ok(writer) => writer,
        Err(e) => {
            let _ = reply.send(Err(storage_error(e)));
            return None;
        }
    };
    let membership = Bytes::from(a.membership.to_conf_state().encode_to_vec());
    let id = snapshot_id(a.id, index);
    let store = Arc::clone(&a.store);
    let events = a.events.clone();
    let (tx, done) = oneshot::channel();
    let writer_state = a.writer.clone();
    let checksums = Arc::clone(&a.checksums);
    let mut slot = a.writer.0.lock();
    if slot.stopped {
        let _ = reply.send(Err(DriverError::Stopped));
        return None;
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
            let mut meta = checksums
                .describe(&dir, id, index, term, &names)
                .map_err(storage_error)?;
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
            let _ = events.try_send(Event::Taken(meta.clone()));
        }
        let _ = tx.send(kept);
        let _ = reply.send(made);
    }));
    Some(done)
}

/// A snapshot id unlikely to repeat: from the node, the index and the clock.
fn snapshot_id(node: NodeId, index: u64) -> u64 {
    // The node id in the high bits and the clock's fast-moving low bits away from the
    // index's, so that the three mix before the hash.
    const NODE_ROTATE_BITS: u32 = 48;
    const CLOCK_ROTATE_BITS: u32 = 20;
    // splitmix64's finalizer (Steele, Lea and Flood, 2014; its shifts are 30, 27 and 31):
    // every input bit reaches every output bit.
    const SPLITMIX64_MULTIPLIERS: (u64, u64) = (0xbf58_476d_1ce4_e5b9, 0x94d0_49bb_1331_11eb);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = node.rotate_left(NODE_ROTATE_BITS) ^ index ^ nanos.rotate_left(CLOCK_ROTATE_BITS);
    x = (x ^ (x >> 30)).wrapping_mul(SPLITMIX64_MULTIPLIERS.0);
    x = (x ^ (x >> 27)).wrapping_mul(SPLITMIX64_MULTIPLIERS.1);
    // Never 0, the value of an id left unset.
    (x ^ (x >> 31)).max(1)
}
