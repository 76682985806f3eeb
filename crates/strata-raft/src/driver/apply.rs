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

use super::{DriverError, SnapshotReply, StateMachine, blocking, storage_error};
use crate::membership::{ConfChange, Membership};
use crate::message::NodeId;

/// What the applying task tells the driver.
pub(super) enum Event {
    /// A snapshot it took is installed in the store.
    Taken(SnapshotMeta),
    /// The state machine was restored from set `id` (the store may drop it now).
    Restored(u64),
}

/// The snapshot job writing files, if any, and whether the node stopped: shutdown waits for
/// the job, and a job that finds the node stopped installs nothing.
#[derive(Clone, Default)]
pub(super) struct Writer(pub(super) Arc<Mutex<WriterState>>);

#[derive(Default)]
pub(super) struct WriterState {
    pub(super) stopped: bool,
    pub(super) job: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

pub(super) enum Apply {
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

/// The applying task's state.
pub(super) struct Applier<M: StateMachine> {
    pub(super) id: NodeId,
    pub(super) rx: mpsc::UnboundedReceiver<Apply>,
    /// For the snapshot jobs to report back.
    pub(super) tx: mpsc::UnboundedSender<Apply>,
    pub(super) state_machine: M,
    pub(super) applied_tx: watch::Sender<u64>,
    /// The configuration as of the last applied entry (what a snapshot records).
    pub(super) membership: Membership,
    pub(super) store: Arc<Mutex<Receiver>>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) writer: Writer,
    pub(super) stop: Arc<tokio::sync::Notify>,
    pub(super) entries: u64,
    pub(super) bytes: u64,
}

pub(super) async fn apply_loop<M: StateMachine>(mut a: Applier<M>) {
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
