//! The loop: owns the core, feeds it ticks, messages and requests, and acts on each `Ready`
//! with [`process_ready`] over [`NodeIo`] (the durable log, the snapshot store, the transport
//! and the applying task).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use strata_raft::{Message, MessageType, NodeId, Raft, ReadState, Status};
use strata_raft_log::{Entry, HardState, RaftLog};
use strata_snapshot::{Ack, Position, Receiver, Sender, SnapshotMeta};
use tokio::sync::{mpsc, watch};

use crate::Transport;
use crate::apply::{Apply, Event, Registration};
use crate::inbox::Inbox;
use crate::node::{Command, DriverError, Failure, ReadReply, blocking, record, storage_error};
use crate::ready::{ReadyIo, begin, begin_needs_io, finish, needs_io, persist, process_ready};
use crate::traits::NodeOptions;

/// How much waiting input one loop iteration takes before producing a `Ready`, of requests
/// and of messages each: up to this many proposals share one append and one `fdatasync`, and
/// a burst holds back ticks and the next `Ready` by at most this much work.
const BATCH_MAX: usize = 4096;

/// Snapshot chunks one loop iteration takes from the inbox's chunk lane, at most: each is up
/// to 1 MiB to stage, so a transfer never holds back ticks and heartbeats for long.
const CHUNKS_PER_ITERATION_MAX: usize = 4;

/// What a `Ready` acts on in a running node.
pub(crate) struct NodeIo {
    snapshot_dir: PathBuf,
    /// Bytes of data in one snapshot chunk (`Config::snapshot_chunk_bytes`).
    chunk_bytes: usize,
    store: Arc<Mutex<Receiver>>,
    /// Readers of the sets being sent (their files mapped once).
    senders: HashMap<u64, Sender>,
    transport: Arc<dyn Transport>,
    apply: mpsc::Sender<Apply>,
    /// Sets the state machine is to be restored from: kept until it is.
    pub(crate) restoring: Vec<u64>,
    /// Proposals accepted since the last batch went to the applying task: they go with the
    /// next one, ahead of its entries.
    registered: Vec<Registration>,
    /// Reads waiting for their confirmation, by the id in their context: every read asked
    /// in one loop iteration shares one.
    reads: HashMap<u64, Vec<ReadReply>>,
    /// Messages for the applying task that found its queue full (at most one `Ready`'s: a
    /// restore and a batch), sent before the next `Ready` is taken.
    overflow: Vec<Apply>,
}

impl NodeIo {
    pub(crate) fn new(
        snapshot_dir: PathBuf,
        chunk_bytes: usize,
        store: Arc<Mutex<Receiver>>,
        transport: Arc<dyn Transport>,
        apply: mpsc::Sender<Apply>,
        restoring: Vec<u64>,
    ) -> Self {
        Self {
            snapshot_dir,
            chunk_bytes,
            store,
            senders: HashMap::new(),
            transport,
            apply,
            restoring,
            registered: Vec::new(),
            reads: HashMap::new(),
            overflow: Vec::new(),
        }
    }

    /// Hands `message` to the applying task without waiting: if its queue is full, the
    /// message waits in `overflow` (behind any already there) and the loop sends it before it
    /// takes the next `Ready`, waiting for room then.
    fn send_to_applier(&mut self, message: Apply) -> Result<(), DriverError> {
        if !self.overflow.is_empty() {
            self.overflow.push(message);
            return Ok(());
        }
        match self.apply.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.overflow.push(message);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(DriverError::Stopped),
        }
    }

    /// Sends what waits in `overflow`, waiting for room in the applying task's queue.
    async fn drain_overflow(&mut self) -> Result<(), DriverError> {
        for message in std::mem::take(&mut self.overflow) {
            self.apply
                .send(message)
                .await
                .map_err(|_| DriverError::Stopped)?;
        }
        Ok(())
    }
}

/// The directory of snapshot set `id` in the store at `snapshot_dir`.
fn set_dir(snapshot_dir: &Path, id: u64) -> PathBuf {
    snapshot_dir.join("snapshots").join(id.to_string())
}

impl ReadyIo<Arc<RaftLog>> for NodeIo {
    type Error = DriverError;

    fn install_snapshot(
        &mut self,
        log: &mut Arc<RaftLog>,
        meta: &SnapshotMeta,
    ) -> Result<(), DriverError> {
        log.compact(meta.last_index, meta.last_term)
            .map_err(storage_error)?;
        self.restoring.push(meta.id);
        self.send_to_applier(Apply::Restore {
            meta: meta.clone(),
            dir: set_dir(&self.snapshot_dir, meta.id),
        })
    }

    fn fill_chunks(
        &mut self,
        messages: &mut Vec<Message>,
    ) -> Result<Vec<(NodeId, u64)>, DriverError> {
        let mut unreadable = Vec::new();
        let (senders, dir, chunk_bytes) = (&mut self.senders, &self.snapshot_dir, self.chunk_bytes);
        messages.retain_mut(|m| {
            if m.kind() != MessageType::InstallSnapshot {
                return true;
            }
            let (Some(meta), Some(chunk)) = (m.snapshot.as_ref(), m.chunk.as_mut()) else {
                return false;
            };
            let at = Position {
                file: chunk.file,
                offset: chunk.offset,
            };
            if at.file as usize >= meta.files.len() {
                // The end of the set: nothing to read.
                return true;
            }
            let sender = senders.entry(meta.id).or_insert_with(|| {
                Sender::mapped(&set_dir(dir, meta.id), meta.clone(), chunk_bytes)
            });
            match sender.chunk(at) {
                Ok(Some(read)) => {
                    *chunk = read;
                    true
                }
                _ => {
                    unreadable.push((m.to, meta.id));
                    false
                }
            }
        });
        Ok(unreadable)
    }

    fn send(&mut self, messages: Vec<Message>) {
        self.transport.send(messages);
    }

    fn persist(
        &mut self,
        log: &mut Arc<RaftLog>,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), DriverError> {
        log.append(entries).map_err(storage_error)?;
        match hard_state {
            Some(hs) => log.set_hard_state(hs).map_err(storage_error),
            None => Ok(()),
        }
    }

    fn apply(&mut self, committed: Vec<Entry>, reads: Vec<ReadState>) -> Result<(), DriverError> {
        let mut confirmed = Vec::with_capacity(reads.len());
        for read in reads {
            // The read's id, as the loop encoded it (0, which no read has, for anything else).
            let id = <[u8; 8]>::try_from(read.context.as_ref()).map_or(0, u64::from_be_bytes);
            if let Some(replies) = self.reads.remove(&id) {
                confirmed.push((read.index, replies));
            }
        }
        let registered = std::mem::take(&mut self.registered);
        self.send_to_applier(Apply::Batch {
            registered,
            entries: committed,
            reads: confirmed,
        })
    }

    fn stage(&mut self, chunk: &Message) -> Result<Option<Ack>, DriverError> {
        let (Some(meta), Some(data)) = (&chunk.snapshot, &chunk.chunk) else {
            return Ok(None);
        };
        match self.store.lock().receive(meta, data) {
            Ok(ack) => Ok(Some(ack)),
            // The sender's fault, not this node's: the store refused the chunk and is
            // unchanged. Any other error is this node's disk: it stops the node.
            Err(
                strata_snapshot::Error::Invalid(_) | strata_snapshot::Error::UnknownSnapshot { .. },
            ) => Ok(None),
            Err(e) => Err(storage_error(e)),
        }
    }
}

/// The loop's state: the core, what its `Ready`s act on, and its inputs.
pub(crate) struct Driver {
    stop: Arc<tokio::sync::Notify>,
    failure: Failure,
    /// Ends the applying task when the loop ends (whatever it holds is answered `Stopped`).
    applier: tokio::task::AbortHandle,
    core: Raft<Arc<RaftLog>>,
    io: NodeIo,
    log: Arc<RaftLog>,
    tick: Duration,
    compaction_overhead_entries: u64,
    /// The snapshot sets last pinned in the store.
    pinned: Vec<u64>,
    inbox: Inbox,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Receiver<Event>,
    /// Shared with [`drive`], which keeps it until the loop has ended: the channel closing
    /// tells watchers the node stopped, so it must close only after the failure is recorded,
    /// not when a failed step drops the driver.
    status: Arc<watch::Sender<Status>>,
    /// Reads asked since the last round started: they share the next one's context.
    asked: Vec<ReadReply>,
    next_read: u64,
    /// When the newest confirmation round started.
    round_started: tokio::time::Instant,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        stop: Arc<tokio::sync::Notify>,
        failure: Failure,
        applier: tokio::task::AbortHandle,
        core: Raft<Arc<RaftLog>>,
        io: NodeIo,
        log: Arc<RaftLog>,
        options: &NodeOptions,
        inbox: Inbox,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Receiver<Event>,
        status: watch::Sender<Status>,
    ) -> Self {
        let pinned = io.restoring.clone();
        Self {
            stop,
            failure,
            applier,
            core,
            io,
            log,
            tick: options.tick,
            compaction_overhead_entries: options.compaction_overhead_entries,
            pinned,
            inbox,
            commands,
            events,
            status: Arc::new(status),
            asked: Vec::new(),
            next_read: read_ids_start(),
            round_started: tokio::time::Instant::now(),
        }
    }
}

/// Where this run's read ids start: from the clock, so that a leader's answer to a read asked
/// before a restart (delayed in the network) matches no read asked after it.
fn read_ids_start() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// The loop: runs until the node is stopped, its inbox or request queue closes, or its log,
/// snapshot store or state machine fails (then it stops as a crash would: a restart recovers
/// what is durable).
pub(crate) async fn drive(d: Driver) {
    let applier = d.applier.clone();
    let status = Arc::clone(&d.status);
    run(d).await;
    // Closes the status channel only now, the failure recorded.
    drop(status);
    // Proposals and reads the applying task holds are answered `Stopped` as it goes; no
    // snapshot is taken after the loop ended.
    applier.abort();
}

async fn run(mut d: Driver) {
    let mut ticker = tokio::time::interval(d.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // In this order: a due tick is never starved by a flood of messages (it is ready
            // once per tick), and Raft's own messages come before snapshot chunks, so a
            // heartbeat never waits behind one.
            biased;
            () = d.stop.notified() => return,
            _ = ticker.tick() => d.core.tick(),
            m = d.inbox.messages.recv() => match m {
                Some(m) => { let _ = d.core.step(m); }
                None => return,
            },
            c = d.commands.recv() => match c {
                Some(c) => d.handle(c),
                None => return,
            },
            Some(event) = d.events.recv() => {
                if let Err(e) = d.event(event).await {
                    record(&d.failure, e);
                    return;
                }
            }
            Some(m) = d.inbox.chunks.recv() => { let _ = d.core.step(m); }
        }
        // Everything else already waiting goes into the same Ready: one append, one sync,
        // one heartbeat round for the reads.
        for _ in 0..BATCH_MAX {
            match d.commands.try_recv() {
                Ok(c) => d.handle(c),
                Err(_) => break,
            }
        }
        for _ in 0..BATCH_MAX {
            match d.inbox.messages.try_recv() {
                Ok(m) => {
                    let _ = d.core.step(m);
                }
                Err(_) => break,
            }
        }
        // Events too (a snapshot taken, a restore done), so that a busy inbox never holds
        // them back.
        while let Ok(event) = d.events.try_recv() {
            if let Err(e) = d.event(event).await {
                record(&d.failure, e);
                return;
            }
        }
        for _ in 0..CHUNKS_PER_ITERATION_MAX {
            match d.inbox.chunks.try_recv() {
                Ok(m) => {
                    let _ = d.core.step(m);
                }
                Err(_) => break,
            }
        }
        d.start_reads();
        for peer in d.io.transport.take_unreachable() {
            d.core.report_unreachable(peer);
        }
        while d.core.has_ready() {
            let failure = Arc::clone(&d.failure);
            match d.process().await {
                Ok(next) => d = next,
                Err(e) => {
                    record(&failure, e);
                    return;
                }
            }
            // A round that Ready confirmed lets the reads waiting for it start the next.
            d.start_reads();
        }
        if let Err(e) = d.pin().await {
            record(&d.failure, e);
            return;
        }
        let status = d.core.status();
        let (status_id, role, term, leader) = (status.id, status.role, status.term, status.leader);
        let mut moved = false;
        d.status.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                moved = (current.role, current.term, current.leader) != (role, term, leader);
                *current = status;
            }
            changed
        });
        // Logged outside the channel's lock: a role, term or leader change (not every commit).
        if moved {
            tracing::info!(id = %format_args!("{:x}", status_id), ?role, term, leader = %format_args!("{leader:x}"), "raft: role, term or leader changed");
        }
    }
}

impl Driver {
    fn handle(&mut self, c: Command) {
        match c {
            Command::Propose { data, reply } => match self.core.propose(data) {
                Ok(index) => {
                    let term = self.core.term();
                    self.io.registered.push(Registration { index, term, reply });
                }
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                }
            },
            Command::Read { reply } => self.asked.push(reply),
            Command::Transfer { to, reply } => {
                let _ = reply.send(self.core.transfer_leader(to).map_err(Into::into));
            }
            Command::ChangeMembership { change, reply } => {
                match self.core.propose_conf_change(&change) {
                    Ok(index) => {
                        let term = self.core.term();
                        self.io.registered.push(Registration { index, term, reply });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
        }
    }

    /// Acts on what the applying task reports.
    async fn event(&mut self, event: Event) -> Result<(), DriverError> {
        match event {
            Event::Taken(meta) => self.snapshot_taken(meta).await,
            Event::Restored(id) => {
                self.io.restoring.retain(|&r| r != id);
                self.pin().await
            }
        }
    }

    /// Starts one confirmation round for every read asked since the last one started, unless
    /// that one is still out.
    ///
    /// One round at a time: each costs a heartbeat to every follower and their answers (on a
    /// follower, also the request to the leader and its answer), so under load the reads
    /// asked while a round is out wait for it and share the next, as etcd's read loop has
    /// them do. A round still out after a tick (a message lost, a peer paused) no longer holds
    /// the next one back.
    fn start_reads(&mut self) {
        if self.asked.is_empty()
            || (!self.io.reads.is_empty() && self.round_started.elapsed() < self.tick)
        {
            return;
        }
        self.round_started = tokio::time::Instant::now();
        let replies = std::mem::take(&mut self.asked);
        self.next_read += 1;
        let context = Bytes::copy_from_slice(&self.next_read.to_be_bytes());
        match self.core.read_index(context) {
            Ok(()) => {
                self.io.reads.insert(self.next_read, replies);
            }
            Err(e) => {
                let e = DriverError::from(e);
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Takes the next `Ready` and acts on it: on the blocking pool if it needs I/O (the whole
    /// driver goes there and comes back), here if it only sends.
    async fn process(mut self) -> Result<Self, DriverError> {
        // The applying task falls behind by at most `apply_batches_max` batches: the loop
        // waits here for it rather than taking more.
        self.io.drain_overflow().await?;
        let ready = self.core.ready().map_err(storage_error)?;
        let role_changed = ready.role_change.is_some();
        if !needs_io(&ready) {
            process_ready(&mut self.core, &mut self.io, ready)?;
        } else {
            // What may go before the persist goes from here at once (a leader's appends
            // reach the followers without waiting for a thread of the pool), unless that
            // step itself reads or compacts.
            let begun = !begin_needs_io(&ready);
            let ready = if begun {
                begin(&mut self.core, &mut self.io, ready)?
            } else {
                ready
            };
            let (back, result) = tokio::task::spawn_blocking(move || {
                let result = if begun {
                    persist(&mut self.core, &mut self.io, &ready)
                        .and_then(|()| finish(&mut self.core, &mut self.io, ready))
                } else {
                    process_ready(&mut self.core, &mut self.io, ready)
                };
                (self, result)
            })
            .await
            .map_err(|_| DriverError::Stopped)?;
            self = back;
            result?;
        }
        if role_changed {
            self.fail_reads();
        }
        self.io.drain_overflow().await?;
        // Reads whose callers all gave up (a lost round) are forgotten.
        self.io
            .reads
            .retain(|_, replies| replies.iter().any(|r| !r.is_closed()));
        Ok(self)
    }

    /// A new leader or role: reads waiting for a confirmation will not get one from this
    /// round (the leader that was asked is gone); their callers may retry.
    fn fail_reads(&mut self) {
        let leader = self.core.leader();
        for (_, replies) in std::mem::take(&mut self.io.reads) {
            for reply in replies {
                let _ = reply.send(Err(DriverError::NotLeader { leader }));
            }
        }
    }

    /// The applying task installed a snapshot it took: followers that need compacted
    /// entries get it, and the log is compacted up to `compaction_overhead_entries` entries
    /// before it.
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
        self.io.senders.retain(|id, _| in_use.contains(id));
        in_use.extend(self.io.restoring.iter().copied());
        if in_use == self.pinned {
            return Ok(());
        }
        if self.io.store.is_locked() {
            // A snapshot job is adopting its set under the lock (fsyncs): rather than wait for
            // it here, with ticks and heartbeats held up, pin on a later iteration.
            return Ok(());
        }
        self.pinned.clone_from(&in_use);
        let store = Arc::clone(&self.io.store);
        blocking(move || store.lock().pin(&in_use).map_err(storage_error)).await
    }
}
