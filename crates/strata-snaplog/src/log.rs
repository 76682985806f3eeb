//! [`SnapshotLog`]: the synchronous core that appends, flushes, compacts and recovers the file.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_clock::LamportTime;
use strata_fs::{RecoveredSwap, SwapFile, SwapOptions};

use crate::error::{Error, Result};
use crate::line::Record;
use crate::replay::{Replay, ReplayOptions, replay_file};
use crate::state::{History, State};

/// Serf's estimate of the bytes one member takes in a compacted snapshot.
pub const SNAPSHOT_BYTES_PER_NODE: u64 = 128;
/// Serf compacts when the file is this many times larger than the estimate.
pub const SNAPSHOT_COMPACTION_THRESHOLD: u64 = 2;
/// The suffix of the file a compaction writes before swapping it in, as Serf names it.
pub const COMPACT_SUFFIX: &str = ".compact";

/// Options for [`SnapshotLog::open`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// If true, a `leave` in the log is ignored on replay (the node means to rejoin the same
    /// cluster); if false, it clears the members and clocks.
    pub rejoin_after_leave: bool,
    /// Never compact a log smaller than this. Default 128 KiB, Serf's default.
    pub compact_bytes_min: u64,
    /// Appended lines are buffered in memory up to this many bytes before a write is needed.
    /// Bounds memory; larger means fewer `write` calls. Default 64 KiB.
    pub buffer_bytes_max: usize,
    /// After a compaction fails, or a write fails and the file must be rewritten, try again no
    /// sooner than this. Default 30 s, Serf's `snapshotErrorRecoveryInterval`. An explicit
    /// [`SnapshotLog::sync`] (a leave, a shutdown, a timed flush under
    /// `FsyncPolicy::EveryFlush`) does not wait: it is a request for durability, so it rewrites
    /// at once.
    pub error_recovery_interval: Duration,
    /// How the compacted file is swapped in; the temp suffix defaults to [`COMPACT_SUFFIX`].
    pub swap: SwapOptions,
    /// Options for the replay at open.
    pub replay: ReplayOptions,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            rejoin_after_leave: false,
            compact_bytes_min: 128 * 1024,
            buffer_bytes_max: 64 * 1024,
            error_recovery_interval: Duration::from_secs(30),
            swap: SwapOptions {
                temp_suffix: COMPACT_SUFFIX.to_owned(),
                ..SwapOptions::default()
            },
            replay: ReplayOptions::default(),
        }
    }
}

/// Counters a user can read to see what the log has done, including every failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records accepted by [`SnapshotLog::record`].
    pub records: u64,
    /// Bytes appended to the file (not counting compactions).
    pub bytes_appended: u64,
    /// Successful appends of the buffer.
    pub flushes: u64,
    /// Successful `fsync`s.
    pub fsyncs: u64,
    /// Successful compactions.
    pub compactions: u64,
    /// Failed appends, `fsync`s and compactions.
    pub errors: u64,
}

/// What [`SnapshotLog::open`] found.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// The replay of the existing file.
    pub replay: Replay,
    /// What recovery of an interrupted compaction did.
    pub recovered_swap: RecoveredSwap,
    /// Bytes of a torn last line cut off before appending (Serf appends onto them and merges
    /// two records into one).
    pub torn_tail_bytes_truncated: u64,
}

/// A snapshot log file open for appending: the synchronous core of the
/// [`Snapshotter`](crate::Snapshotter), usable on its own.
///
/// Records are encoded into an in-memory buffer and applied to a [`History`]; nothing touches
/// the disk until [`flush`](Self::flush), [`sync`](Self::sync), [`compact`](Self::compact) or
/// [`do_pending_io`](Self::do_pending_io). The history is the truth: if a write fails, the log
/// stops appending (the file may end in a partial line) and the next compaction rewrites the
/// whole file from the history, so nothing recorded is lost.
#[derive(Debug)]
pub struct SnapshotLog {
    file: SwapFile,
    history: Arc<Mutex<History>>,
    options: LogOptions,
    buffer: Vec<u8>,
    /// Bytes in the file plus bytes buffered: Serf's `offset`.
    log_bytes: u64,
    /// A write or `fsync` failed: append nothing until a compaction rewrites the file.
    needs_rewrite: bool,
    /// Lines were written since the last successful `fsync` or compaction.
    unsynced: bool,
    /// The size of the file the last compaction wrote.
    last_compacted_bytes: u64,
    last_compaction_failure: Option<Instant>,
    stats: LogStats,
}

impl SnapshotLog {
    /// Opens (creating if needed) the snapshot log at `path`: finishes or rolls back an
    /// interrupted compaction, replays the file, and cuts off a torn last line (synced) so new
    /// records start on a line of their own.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Fs`] if the file cannot be recovered, read, created or
    /// truncated.
    pub fn open(path: &Path, options: LogOptions) -> Result<(Self, OpenReport)> {
        let recovered_swap = strata_fs::recover_swap(path, &options.swap.temp_suffix)?;
        let replay = if path
            .try_exists()
            .map_err(|e| Error::io("stat", Some(path), e))?
        {
            replay_file(path, &options.replay)?
        } else {
            Replay::default()
        };
        let mut file = SwapFile::open(path, options.swap.clone())?;
        let len = file.len()?;
        let mut torn_tail_bytes_truncated = 0;
        if len > replay.valid_len {
            file.truncate(replay.valid_len)?;
            torn_tail_bytes_truncated = len - replay.valid_len;
        }
        let log = Self {
            file,
            history: Arc::new(Mutex::new(replay.history.clone())),
            buffer: Vec::with_capacity(options.buffer_bytes_max.min(64 * 1024)),
            log_bytes: replay.valid_len,
            options,
            needs_rewrite: false,
            unsynced: false,
            last_compacted_bytes: 0,
            last_compaction_failure: None,
            stats: LogStats::default(),
        };
        Ok((
            log,
            OpenReport {
                replay,
                recovered_swap,
                torn_tail_bytes_truncated,
            },
        ))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.options
    }

    /// A shared handle to the history, for readers on other threads. Lock it only briefly: the
    /// log locks it for every record.
    pub fn history(&self) -> Arc<Mutex<History>> {
        Arc::clone(&self.history)
    }

    /// The replayed state under the configured `rejoin_after_leave`: exactly what a replay of
    /// everything recorded so far would give.
    pub fn state(&self) -> State {
        self.history.lock().state(self.options.rejoin_after_leave)
    }

    /// Counters of what the log has done.
    pub fn stats(&self) -> LogStats {
        self.stats
    }

    /// Bytes in the file plus bytes buffered.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Bytes recorded but not yet written to the file.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// True if lines were written to the file since the last successful `fsync`.
    pub fn has_unsynced_writes(&self) -> bool {
        self.unsynced
    }

    /// True if a write failed and the file must be rewritten by a compaction.
    pub fn needs_rewrite(&self) -> bool {
        self.needs_rewrite
    }

    /// Records `record`: applies it to the history and buffers its line. Does no I/O; call
    /// [`do_pending_io`](Self::do_pending_io) afterwards (or use [`append`](Self::append)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRecord`] if the record cannot be written as one line (a name with a
    /// newline); nothing is recorded then.
    pub fn record(&mut self, record: Record<'_>) -> Result<()> {
        record.validate().map_err(|reason| Error::InvalidRecord {
            record: format!("{record:?}"),
            reason,
        })?;
        self.history.lock().apply_record(&record);
        self.stats.records += 1;
        if !self.needs_rewrite {
            let before = self.buffer.len();
            record.encode(&mut self.buffer);
            self.log_bytes += (self.buffer.len() - before) as u64;
        }
        Ok(())
    }

    /// [`record`](Self::record), then [`do_pending_io`](Self::do_pending_io).
    ///
    /// # Errors
    ///
    /// As those two.
    pub fn append(&mut self, record: Record<'_>) -> Result<()> {
        self.record(record)?;
        self.do_pending_io()
    }

    /// Records the member clock as Serf does: `clock: now - 1` if that is newer than the last
    /// recorded value. Returns whether a line was recorded. (Serf computes `now - 1` in unsigned
    /// arithmetic, so a clock at 0 records `clock: 18446744073709551615`; this does not.)
    ///
    /// # Errors
    ///
    /// As [`record`](Self::record).
    pub fn record_member_clock(&mut self, now: LamportTime) -> Result<bool> {
        self.record_if_newer(now.saturating_sub(1), History::last_clock, Record::Clock)
    }

    /// Records a user event's Lamport time if it is newer than the last one. Returns whether a
    /// line was recorded.
    ///
    /// # Errors
    ///
    /// As [`record`](Self::record).
    pub fn record_event_clock(&mut self, ltime: LamportTime) -> Result<bool> {
        self.record_if_newer(ltime, History::last_event_clock, Record::EventClock)
    }

    /// Records a query's Lamport time if it is newer than the last one. Returns whether a line
    /// was recorded.
    ///
    /// # Errors
    ///
    /// As [`record`](Self::record).
    pub fn record_query_clock(&mut self, ltime: LamportTime) -> Result<bool> {
        self.record_if_newer(ltime, History::last_query_clock, Record::QueryClock)
    }

    fn record_if_newer(
        &mut self,
        time: LamportTime,
        last: fn(&History, bool) -> LamportTime,
        record: fn(LamportTime) -> Record<'static>,
    ) -> Result<bool> {
        let last = last(&self.history.lock(), self.options.rejoin_after_leave);
        if time > last {
            self.record(record(time))?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The size above which the log is compacted: Serf's
    /// `max(min_compact_size, members * 128 * 2)`, and at least twice the size of the last
    /// compacted file.
    ///
    /// Members are the entries a compacted file holds, which after a `leave` includes the
    /// members from before it (kept so that a rejoining node replays them); Serf counts only the
    /// alive members it currently sees. The floor of twice the last compaction stops the log
    /// from rewriting itself on every append when names are longer than Serf's 128-byte
    /// estimate (Serf does rewrite on every append then).
    pub fn compaction_threshold_bytes(&self) -> u64 {
        let members = self.history.lock().member_entries() as u64;
        (members * SNAPSHOT_BYTES_PER_NODE * SNAPSHOT_COMPACTION_THRESHOLD)
            .max(self.options.compact_bytes_min)
            .max(self.last_compacted_bytes.saturating_mul(2))
    }

    fn compaction_allowed_now(&self) -> bool {
        self.last_compaction_failure
            .is_none_or(|at| at.elapsed() >= self.options.error_recovery_interval)
    }

    /// True if a compaction is due: the log outgrew its threshold, or a write failed and the
    /// file must be rewritten, and no compaction failed within the recovery interval.
    pub fn compaction_due(&self) -> bool {
        (self.needs_rewrite || self.log_bytes > self.compaction_threshold_bytes())
            && self.compaction_allowed_now()
    }

    /// When the next attempt of a due-but-deferred compaction is allowed, if one is deferred.
    pub fn compaction_retry_at(&self) -> Option<Instant> {
        self.last_compaction_failure
            .map(|at| at + self.options.error_recovery_interval)
    }

    /// True if [`do_pending_io`](Self::do_pending_io) has work: a full buffer or a due
    /// compaction.
    pub fn has_pending_io(&self) -> bool {
        self.buffer.len() >= self.options.buffer_bytes_max || self.compaction_due()
    }

    /// Compacts if due, else writes the buffer if it is full.
    ///
    /// # Errors
    ///
    /// As [`compact`](Self::compact) and [`flush`](Self::flush).
    pub fn do_pending_io(&mut self) -> Result<()> {
        if self.compaction_due() {
            self.compact()
        } else if self.buffer.len() >= self.options.buffer_bytes_max {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Writes the buffered lines to the file (one `write`, not synced).
    ///
    /// # Errors
    ///
    /// [`Error::Fs`] if the write fails. The log then stops appending (the file may end in a
    /// partial line) until a compaction rewrites it; nothing recorded is lost.
    pub fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        match self.file.append(&self.buffer) {
            Ok(()) => {
                self.stats.flushes += 1;
                self.stats.bytes_appended += self.buffer.len() as u64;
                self.buffer.clear();
                self.unsynced = true;
                Ok(())
            }
            Err(e) => {
                self.broken();
                Err(e.into())
            }
        }
    }

    /// Writes the buffered lines and `fsync`s the file: on `Ok`, everything recorded is
    /// durable.
    ///
    /// If the write or the `fsync` fails (or an earlier one did), the `fsync` is not retried
    /// (it can report success for data the kernel already dropped): the file is rewritten whole
    /// from memory instead, once, right away.
    ///
    /// # Errors
    ///
    /// The rewrite's error if it fails too; the log then stays in the rewrite-needed state.
    pub fn sync(&mut self) -> Result<()> {
        if self.flush().is_ok() && !self.needs_rewrite {
            match self.file.sync() {
                Ok(()) => {
                    self.stats.fsyncs += 1;
                    self.unsynced = false;
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(error = %strata_fs::display_chain(&e), "snapshot fsync failed; rewriting the file");
                    self.broken();
                }
            }
        }
        self.compact()
    }

    fn broken(&mut self) {
        self.stats.errors += 1;
        self.needs_rewrite = true;
        self.buffer.clear();
    }

    /// Rewrites the file from the history (see [`History::write_compacted`]) and swaps it in
    /// atomically, then keeps appending to the new file. The new file is `fsync`ed, and so is
    /// the directory.
    ///
    /// # Errors
    ///
    /// [`Error::Fs`] naming the step that failed. The old file stays in place (or the new one,
    /// if only the directory `fsync` failed) and the log keeps appending to whichever it is; no
    /// compaction is tried again for [`LogOptions::error_recovery_interval`].
    pub fn compact(&mut self) -> Result<()> {
        let mut compacted = Vec::with_capacity(4096);
        // Render under the lock, write without it.
        let rendered = self.history.lock().write_compacted(&mut compacted);
        rendered.map_err(|e| Error::io("render compacted snapshot", Some(self.path()), e))?;
        let generation = self.file.generation();
        let result = self.file.replace(|w| w.write_all(&compacted));
        if self.file.generation() != generation {
            // The compacted file is under the target name: what was buffered is in it.
            self.buffer.clear();
            self.log_bytes = compacted.len() as u64;
            self.last_compacted_bytes = compacted.len() as u64;
            self.needs_rewrite = false;
        }
        match result {
            Ok(_) => {
                self.stats.compactions += 1;
                self.stats.fsyncs += 1;
                self.unsynced = false;
                self.last_compaction_failure = None;
                Ok(())
            }
            Err(e) => {
                self.stats.errors += 1;
                self.last_compaction_failure = Some(Instant::now());
                Err(e.into())
            }
        }
    }
}
