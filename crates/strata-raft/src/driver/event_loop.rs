//! The driver task: owns the core, feeds it ticks, messages and commands, and acts on each
//! `Ready` (send, persist, send what waited for the persist, hand committed entries to the
//! applier, stage and send snapshot chunks).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use strata_raft_log::RaftLog;
use strata_snapshot::{Ack, Position, Receiver, Sender, SnapshotMeta};
use tokio::sync::{mpsc, oneshot, watch};

use super::apply::{Apply, Event};
use super::{Command, DriverError, Transport, blocking, storage_error};
use crate::message::{Message, MessageType, NodeId};
use crate::raft::{Raft, Role, Status};

/// The driver task's state: the core and everything it acts on.
pub(super) struct Driver {
    pub(super) stop: Arc<tokio::sync::Notify>,
    pub(super) core: Raft<Arc<RaftLog>>,
    pub(super) log: Arc<RaftLog>,
    pub(super) tick: Duration,
    pub(super) compaction_overhead_entries: u64,
    pub(super) snapshot_dir: PathBuf,
    pub(super) store: Arc<Mutex<Receiver>>,
    /// The snapshot sets last pinned in the store.
    pub(super) pinned: Vec<u64>,
    /// Sets the state machine is to be restored from: kept until it is.
    pub(super) restoring: Vec<u64>,
    /// Readers of the sets being sent (their files mapped once).
    pub(super) senders: HashMap<u64, Sender>,
    pub(super) inbox: mpsc::UnboundedReceiver<Message>,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) events: mpsc::UnboundedReceiver<Event>,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) apply: mpsc::UnboundedSender<Apply>,
    pub(super) status: watch::Sender<Status>,
    pub(super) reads: BTreeMap<u64, oneshot::Sender<Result<u64, DriverError>>>,
    pub(super) next_read: u64,
}

/// How much waiting input one loop iteration takes before producing a `Ready`, of commands
/// and of messages each: up to this many proposals share one append and one `fdatasync`, and
/// a burst holds back ticks and the next `Ready` by at most this much work.
const BATCH_MAX: usize = 4096;

/// The driver task: runs until the node is stopped, its inbox or command channel closes, or
/// its log or snapshot store fails.
pub(super) async fn drive(mut d: Driver) {
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
    /// entries get it, and the log is compacted up to `compaction_overhead_entries` entries before
    /// it.
    async fn snapshot_taken(&mut self, meta: SnapshotMeta) -> Result<(), DriverError> {
        // Never past a snapshot still being sent: the follower that installs it needs the
        // entries after it.
        let floor = self.core.transfer_floor().unwrap_or(u64::MAX);
        let to = meta
            .last_index
            .saturating_sub(self.compaction_overhead_entries)
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
        let acks: Vec<(NodeId, SnapshotMeta, Option<Ack>)> = blocking(move || {
            let mut store = store.lock();
            let mut acks = Vec::with_capacity(chunks.len());
            for m in chunks {
                let (Some(meta), Some(chunk)) = (m.snapshot, m.chunk) else {
                    continue;
                };
                let ack = match store.receive(&meta, &chunk) {
                    Ok(ack) => Some(ack),
                    // The sender's fault, not this node's: the store refused the chunk and
                    // is unchanged. Any other error is this node's disk: it stops the node.
                    Err(
                        strata_snapshot::Error::Invalid(_)
                        | strata_snapshot::Error::UnknownSnapshot { .. },
                    ) => None,
                    Err(e) => return Err(storage_error(e)),
                };
                acks.push((m.from, meta, ack));
            }
            Ok(acks)
        })
        .await?;
        for (from, meta, ack) in acks {
            match ack {
                Some(ack) => {
                    let _ = self.core.snapshot_staged(from, &meta, ack);
                }
                None => self.core.snapshot_chunk_refused(),
            }
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
            // The read's id, as `handle` encoded it (0, which no read has, for anything else).
            let id = <[u8; 8]>::try_from(read.context.as_ref()).map_or(0, u64::from_be_bytes);
            if let Some(reply) = self.reads.remove(&id) {
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
