//! [`Snapshotter`]: the async task that records events into a [`SnapshotLog`].

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::seq::SliceRandom;
use strata_clock::{LamportClock, LamportTime};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::{Error, Result};
use crate::event::{Event, MemberEventKind};
use crate::line::Record;
use crate::log::{LogOptions, LogStats, OpenReport, SnapshotLog};
use crate::state::{History, State};

/// When the snapshot file is `fsync`ed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Every flush of buffered lines is followed by an `fsync`, so a recorded line is durable
    /// within [`SnapshotterConfig::flush_interval`]. At most a couple of `fsync`s per second.
    EveryFlush,
    /// Only [`Snapshotter::leave`], shutdown and compactions `fsync` (Serf's behaviour): a
    /// power cut can lose what was flushed since, though a process crash cannot.
    LeaveAndShutdown,
}

/// What the snapshotter does when the output channel is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputOverflow {
    /// Wait for room: a slow consumer slows the snapshotter, and through the bounded input
    /// queue, whoever sends events. Nothing is lost.
    Backpressure,
    /// Drop the event for the consumer (it is still recorded) and count it in
    /// [`SnapshotterStats::output_dropped`]. Serf drops silently.
    DropAndCount,
}

/// Configuration of a [`Snapshotter`].
#[derive(Debug, Clone)]
pub struct SnapshotterConfig {
    /// The log's options (`rejoin_after_leave`, compaction size, error recovery).
    pub log: LogOptions,
    /// The longest a recorded line stays in memory before it is written to the file. Serf only
    /// flushes when a *later* line arrives more than 500 ms after the last flush, so a line can
    /// sit in memory indefinitely; this is a timer. Default 500 ms.
    pub flush_interval: Duration,
    /// How often the member clock is checked and recorded if it advanced. Default 500 ms.
    pub clock_update_interval: Duration,
    /// When to `fsync`. Default [`FsyncPolicy::EveryFlush`].
    pub fsync: FsyncPolicy,
    /// Capacity of the input queue. A full queue makes [`EventSender::send`] wait and
    /// [`EventSender::try_send`] fail and count the drop. Default 2048, Serf's.
    pub event_queue_capacity: usize,
    /// What to do when the output channel is full. Default [`OutputOverflow::Backpressure`].
    pub output_overflow: OutputOverflow,
    /// At shutdown, how long to keep draining queued events before the final flush. Default
    /// 250 ms, Serf's.
    pub shutdown_flush_timeout: Duration,
}

impl Default for SnapshotterConfig {
    fn default() -> Self {
        Self {
            log: LogOptions::default(),
            flush_interval: Duration::from_millis(500),
            clock_update_interval: Duration::from_millis(500),
            fsync: FsyncPolicy::EveryFlush,
            event_queue_capacity: 2048,
            output_overflow: OutputOverflow::Backpressure,
            shutdown_flush_timeout: Duration::from_millis(250),
        }
    }
}

/// Counters of what a [`Snapshotter`] has done, including everything it did not do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotterStats {
    /// The log's counters.
    pub log: LogStats,
    /// Events taken from the input queue.
    pub events: u64,
    /// Events refused by [`EventSender::try_send`] because the queue was full.
    pub input_dropped: u64,
    /// Events not passed to the output channel because it was full
    /// ([`OutputOverflow::DropAndCount`]) or closed.
    pub output_dropped: u64,
    /// Members that could not be recorded (a name with a newline); the events were still
    /// passed through.
    pub unrecordable: u64,
}

/// What [`Snapshotter::shutdown`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The final counters.
    pub stats: SnapshotterStats,
    /// The final state: what a replay of the file gives.
    pub state: State,
}

/// A member known alive at the last snapshot, as [`Snapshotter::alive_nodes`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousNode {
    /// The member's name.
    pub name: String,
    /// Its address as recorded.
    pub addr: String,
}

/// The sending half of a [`Snapshotter`]'s input queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Event>,
    input_dropped: Arc<AtomicU64>,
}

impl EventSender {
    /// Queues `event`, waiting for room if the queue is full (backpressure).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] if the snapshotter has shut down.
    pub async fn send(&self, event: Event) -> Result<()> {
        self.tx.send(event).await.map_err(|_| Error::Closed)
    }

    /// Queues `event` without waiting. If the queue is full the event is dropped, counted in
    /// [`SnapshotterStats::input_dropped`], and returned.
    ///
    /// # Errors
    ///
    /// The event, if the queue is full or the snapshotter has shut down.
    pub fn try_send(
        &self,
        event: Event,
    ) -> std::result::Result<(), mpsc::error::TrySendError<Event>> {
        let result = self.tx.try_send(event);
        if let Err(mpsc::error::TrySendError::Full(_)) = &result {
            self.input_dropped.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

enum Command {
    Leave(oneshot::Sender<Result<()>>),
    Shutdown(oneshot::Sender<Result<()>>),
}

/// Records a Serf agent's member events and Lamport clocks into a snapshot log, and passes
/// every event through to an output channel.
///
/// See the [crate docs](crate) for what is recorded and how Strata differs from Serf.
#[derive(Debug)]
pub struct Snapshotter {
    commands: mpsc::Sender<Command>,
    history: Arc<Mutex<History>>,
    stats: Arc<Mutex<SnapshotterStats>>,
    input_dropped: Arc<AtomicU64>,
    rejoin_after_leave: bool,
    report: OpenReport,
    task: Option<JoinHandle<()>>,
}

impl Snapshotter {
    /// Opens the snapshot log at `path` (replaying and recovering it), and starts the task that
    /// records events sent through the returned [`EventSender`]. `clock` is the member Lamport
    /// clock whose time is recorded; `output`, if given, receives every event.
    ///
    /// Must be called within a Tokio runtime.
    ///
    /// # Errors
    ///
    /// As [`SnapshotLog::open`].
    pub async fn open(
        path: &Path,
        config: SnapshotterConfig,
        clock: Arc<LamportClock>,
        output: Option<mpsc::Sender<Event>>,
    ) -> Result<(EventSender, Snapshotter)> {
        let path = path.to_path_buf();
        let options = config.log.clone();
        let (log, report) = tokio::task::spawn_blocking(move || SnapshotLog::open(&path, options))
            .await
            .map_err(|e| Error::io("open snapshot log", None, std::io::Error::other(e)))??;
        let (events_tx, events_rx) = mpsc::channel(config.event_queue_capacity.max(1));
        let (commands_tx, commands_rx) = mpsc::channel(4);
        let input_dropped = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(Mutex::new(SnapshotterStats::default()));
        let history = log.history();
        let rejoin_after_leave = config.log.rejoin_after_leave;
        let task = Task {
            log: Some(log),
            config,
            clock,
            output,
            undelivered: None,
            events: events_rx,
            events_open: true,
            commands: commands_rx,
            leaving: false,
            flush_at: None,
            stats: SnapshotterStats::default(),
            shared_stats: Arc::clone(&stats),
            addr: String::new(),
        };
        let handle = tokio::spawn(task.run());
        Ok((
            EventSender {
                tx: events_tx,
                input_dropped: Arc::clone(&input_dropped),
            },
            Snapshotter {
                commands: commands_tx,
                history,
                stats,
                input_dropped,
                rejoin_after_leave,
                report,
                task: Some(handle),
            },
        ))
    }

    /// What opening found: replay warnings, a torn tail cut off, a compaction recovered.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The members known alive, in random order (so that nodes rejoining a cluster do not all
    /// contact the same member first).
    pub fn alive_nodes(&self) -> Vec<PreviousNode> {
        let state = self.history.lock().state(self.rejoin_after_leave);
        let mut nodes: Vec<PreviousNode> = state
            .alive
            .into_iter()
            .map(|(name, addr)| PreviousNode { name, addr })
            .collect();
        nodes.shuffle(&mut rand::rng());
        nodes
    }

    /// The last recorded member clock.
    pub fn last_clock(&self) -> LamportTime {
        self.history.lock().last_clock(self.rejoin_after_leave)
    }

    /// The last recorded user-event clock.
    pub fn last_event_clock(&self) -> LamportTime {
        self.history
            .lock()
            .last_event_clock(self.rejoin_after_leave)
    }

    /// The last recorded query clock.
    pub fn last_query_clock(&self) -> LamportTime {
        self.history
            .lock()
            .last_query_clock(self.rejoin_after_leave)
    }

    /// The counters so far.
    pub fn stats(&self) -> SnapshotterStats {
        let mut stats = *self.stats.lock();
        stats.input_dropped = self.input_dropped.load(Ordering::Relaxed);
        stats
    }

    /// Records that this node is leaving: writes `leave`, flushes and `fsync`s, and stops
    /// recording member events, user-event and query clocks (the events are still passed
    /// through). The member clock is still recorded when it advances, as Serf does. Returns once
    /// the `leave` is durable.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after shutdown; the write or `fsync` error otherwise.
    pub async fn leave(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Leave(reply))
            .await
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// The whole replayed state (members and clocks) of what has been recorded so far.
    pub fn state(&self) -> State {
        self.history.lock().state(self.rejoin_after_leave)
    }

    /// Stops the snapshotter: refuses new events, records every event already queued, records
    /// the clock, flushes and `fsync`s, then passes the queued events to the output for at most
    /// [`SnapshotterConfig::shutdown_flush_timeout`] (counting those it could not deliver), and
    /// returns the final counters and state.
    ///
    /// # Errors
    ///
    /// The final flush or `fsync` error, or [`Error::Closed`] if the task had already stopped.
    pub async fn shutdown(mut self) -> Result<ShutdownReport> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Shutdown(reply))
            .await
            .map_err(|_| Error::Closed)?;
        let result = answer.await.map_err(|_| Error::Closed)?;
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| Error::io("snapshotter task", None, std::io::Error::other(e)))?;
        }
        result.map(|()| ShutdownReport {
            stats: self.stats(),
            state: self.state(),
        })
    }
}

struct Task {
    /// Lent to a blocking thread while the task awaits I/O; present otherwise.
    log: Option<SnapshotLog>,
    config: SnapshotterConfig,
    clock: Arc<LamportClock>,
    output: Option<mpsc::Sender<Event>>,
    /// An event already recorded that waits for room in the output channel
    /// ([`OutputOverflow::Backpressure`]). While it waits no new event is taken (that is the
    /// backpressure), but commands and timers are still served.
    undelivered: Option<Event>,
    events: mpsc::Receiver<Event>,
    events_open: bool,
    commands: mpsc::Receiver<Command>,
    leaving: bool,
    /// When the buffered lines must be written, if any are buffered.
    flush_at: Option<Instant>,
    stats: SnapshotterStats,
    shared_stats: Arc<Mutex<SnapshotterStats>>,
    /// Reused to format member addresses without an allocation per member.
    addr: String,
}

/// How many queued events one wake-up handles before checking timers and commands again.
const EVENT_BATCH_MAX: usize = 256;

impl Task {
    fn log(&mut self) -> &mut SnapshotLog {
        self.log
            .as_mut()
            .expect("the log is only lent out while the task awaits its I/O")
    }

    /// Runs `f` on the log on a blocking thread, so disk I/O never stalls the runtime.
    async fn with_log_blocking<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut SnapshotLog) -> R + Send + 'static,
    ) -> R {
        let mut log = self
            .log
            .take()
            .expect("the log is only lent out while the task awaits its I/O");
        let joined = tokio::task::spawn_blocking(move || {
            let result = f(&mut log);
            (log, result)
        })
        .await;
        match joined {
            Ok((log, result)) => {
                self.log = Some(log);
                result
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime that is shutting down cancels a blocking task; this task is being
            // torn down with it and the log (moved into the closure) is gone.
            Err(e) => panic!("snapshot I/O cancelled by runtime shutdown: {e}"),
        }
    }

    async fn run(mut self) {
        let mut clock_tick = tokio::time::interval_at(
            Instant::now() + self.config.clock_update_interval,
            self.config.clock_update_interval,
        );
        clock_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let flush_at = self.flush_at;
            let retry_at = self
                .log()
                .compaction_retry_at()
                .map(Instant::from_std)
                .filter(|at| *at > Instant::now());
            let output = self.output.clone();
            // Unbiased: a flood of events must not starve `leave` or shutdown, nor the reverse.
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Leave(reply)) => {
                        let result = self.leave().await;
                        let _ = reply.send(result);
                    }
                    Some(Command::Shutdown(reply)) => {
                        let result = self.shutdown().await;
                        let _ = reply.send(result);
                        return;
                    }
                    None => {
                        // Every handle is gone: shut down cleanly anyway.
                        let _ = self.shutdown().await;
                        return;
                    }
                },
                event = self.events.recv(), if self.events_open && self.undelivered.is_none() => {
                    match event {
                        Some(event) => {
                            self.handle_event(event);
                            for _ in 1..EVENT_BATCH_MAX {
                                if self.undelivered.is_some() {
                                    break;
                                }
                                match self.events.try_recv() {
                                    Ok(event) => {
                                        self.handle_event(event);
                                        self.pending_io().await;
                                    }
                                    Err(_) => break,
                                }
                            }
                        }
                        None => self.events_open = false,
                    }
                }
                permit = reserve(output.as_ref()), if self.undelivered.is_some() => {
                    let event = self.undelivered.take();
                    match (permit, event) {
                        (Ok(permit), Some(event)) => permit.send(event),
                        // The consumer is gone: count the event, and every later one.
                        _ => self.stats.output_dropped += 1,
                    }
                }
                () = sleep_until_opt(flush_at), if flush_at.is_some() => {
                    self.flush().await;
                }
                _ = clock_tick.tick() => {
                    let now = self.clock.time();
                    self.record(|log| log.record_member_clock(now).map(|_| ()));
                }
                () = sleep_until_opt(retry_at), if retry_at.is_some() => {}
            }
            self.after_records().await;
        }
    }

    /// Applies one record, counting a record that cannot be written.
    fn record(&mut self, f: impl FnOnce(&mut SnapshotLog) -> Result<()>) {
        if let Err(e) = f(self.log()) {
            self.stats.unrecordable += 1;
            tracing::warn!(error = %strata_fs::display_chain(&e), "snapshot: event not recorded");
        }
    }

    /// Does whatever I/O the records made due, arms the flush timer, publishes counters.
    async fn after_records(&mut self) {
        self.pending_io().await;
        let fsync_due =
            self.config.fsync == FsyncPolicy::EveryFlush && self.log().has_unsynced_writes();
        if (self.log().buffered_bytes() > 0 || fsync_due) && self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + self.config.flush_interval);
        }
        self.publish_stats();
    }

    /// Writes a full buffer or runs a due compaction, off the runtime's threads.
    async fn pending_io(&mut self) {
        if self.log().has_pending_io() {
            let result = self.with_log_blocking(SnapshotLog::do_pending_io).await;
            if let Err(e) = result {
                tracing::error!(error = %strata_fs::display_chain(&e), "snapshot: write or compaction failed; will rewrite the file");
            }
        }
    }

    fn publish_stats(&mut self) {
        self.stats.log = self.log().stats();
        *self.shared_stats.lock() = self.stats;
    }

    /// Records `event` (unless leaving) and offers it to the output without waiting; under
    /// [`OutputOverflow::Backpressure`] an event that does not fit waits in `undelivered`.
    fn handle_event(&mut self, event: Event) {
        self.stats.events += 1;
        if !self.leaving {
            self.record_event(&event);
        }
        let Some(output) = &self.output else {
            return;
        };
        match output.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event))
                if self.config.output_overflow == OutputOverflow::Backpressure =>
            {
                self.undelivered = Some(event);
            }
            Err(_) => self.stats.output_dropped += 1,
        }
    }

    fn record_event(&mut self, event: &Event) {
        match event {
            Event::Member(member_event) => {
                for member in &member_event.members {
                    let name = member.name.as_str();
                    match member_event.kind {
                        MemberEventKind::Join => {
                            self.addr.clear();
                            // Writing to a String cannot fail.
                            let _ = write!(self.addr, "{}", member.addr);
                            let addr = std::mem::take(&mut self.addr);
                            self.record(|log| log.record(Record::Alive { name, addr: &addr }));
                            self.addr = addr;
                        }
                        MemberEventKind::Leave | MemberEventKind::Failed => {
                            self.record(|log| log.record(Record::NotAlive { name }));
                        }
                        _ => {}
                    }
                }
                let now = self.clock.time();
                self.record(|log| log.record_member_clock(now).map(|_| ()));
            }
            Event::User(user) => {
                let ltime = user.ltime;
                self.record(|log| log.record_event_clock(ltime).map(|_| ()));
            }
            Event::Query(query) => {
                let ltime = query.ltime;
                self.record(|log| log.record_query_clock(ltime).map(|_| ()));
            }
        }
    }

    async fn flush(&mut self) {
        self.flush_at = None;
        let fsync = self.config.fsync == FsyncPolicy::EveryFlush;
        let result = self
            .with_log_blocking(move |log| if fsync { log.sync() } else { log.flush() })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %strata_fs::display_chain(&e), "snapshot: flush failed; will rewrite the file");
        }
    }

    async fn leave(&mut self) -> Result<()> {
        self.leaving = true;
        self.log().record(Record::Leave)?;
        self.flush_at = None;
        let result = self.with_log_blocking(SnapshotLog::sync).await;
        self.publish_stats();
        result
    }

    async fn shutdown(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.config.shutdown_flush_timeout;
        // Refuse new events, then record every event already accepted: recording is cheap and
        // the queue is bounded, so nothing that `send` acknowledged goes unrecorded. Only
        // delivering them to a slow consumer is bounded by the shutdown timeout.
        self.events.close();
        let mut to_deliver: std::collections::VecDeque<Event> =
            self.undelivered.take().into_iter().collect();
        while let Ok(event) = self.events.try_recv() {
            self.stats.events += 1;
            if !self.leaving {
                self.record_event(&event);
            }
            if self.output.is_some() {
                to_deliver.push_back(event);
            }
            self.pending_io().await;
        }
        // Serf records the clock before draining; after is better: it covers what was drained.
        let now = self.clock.time();
        self.record(|log| log.record_member_clock(now).map(|_| ()));
        self.flush_at = None;
        let result = self.with_log_blocking(SnapshotLog::sync).await;
        self.publish_stats();
        if let Some(output) = self.output.clone() {
            while let Some(event) = to_deliver.pop_front() {
                let delivered = match self.config.output_overflow {
                    OutputOverflow::Backpressure => {
                        match tokio::time::timeout_at(deadline, output.reserve()).await {
                            Ok(Ok(permit)) => {
                                permit.send(event);
                                true
                            }
                            _ => false,
                        }
                    }
                    OutputOverflow::DropAndCount => output.try_send(event).is_ok(),
                };
                if !delivered {
                    self.stats.output_dropped += 1;
                }
            }
        }
        self.publish_stats();
        result
    }
}

/// Waits for room in `output`; never completes without one (the branch is disabled then).
async fn reserve(
    output: Option<&mpsc::Sender<Event>>,
) -> std::result::Result<mpsc::Permit<'_, Event>, mpsc::error::SendError<()>> {
    match output {
        Some(output) => output.reserve().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}
