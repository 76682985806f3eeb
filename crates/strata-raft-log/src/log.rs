//! [`RaftLog`]: entries on one `strata-wal` log, hard state on another.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use parking_lot::{Mutex, RwLock};
use prost::Message;
use strata_fs::IoError;
use strata_wal::{Durability, Wal, WalOptions};

use crate::entry::{Entry, HardState, StateRecord};
use crate::error::{Error, Result};

/// Options for [`RaftLog::open`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Recent entries kept in memory for reads (replication, apply), in bytes. Older ones are
    /// read from disk. Default 64 MiB.
    pub cache_bytes: usize,
    /// Segment size of the entry log: compaction frees space a segment at a time, and a read
    /// of an entry that is not cached reads its segment. Default 8 MiB.
    pub segment_bytes: u64,
    /// Make every append durable (`fdatasync`) before it returns. Default true; without it,
    /// call [`RaftLog::sync`] before acting on the appended entries (acknowledging them to a
    /// leader, or counting them towards a quorum). `strata-raft`'s driver does not: with it
    /// off there, acknowledged entries can be lost in a power cut, which breaks Raft's
    /// guarantees (use it for benchmarks of the CPU-bound ceiling only).
    pub sync: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            segment_bytes: 8 * 1024 * 1024,
            sync: true,
        }
    }
}

/// The state log is compacted (older segments deleted) once it holds this many records past
/// its first segment.
const STATE_SEGMENT_BYTES: u64 = 64 * 1024;

/// The `bytes_max` of a read that must return its entry whatever the entry's size (a one-entry
/// read: [`RaftLog::entry`]).
const NO_BYTE_LIMIT: usize = usize::MAX;

/// `n` as an in-memory count, saturating: a count that does not fit in `usize` is more than
/// any collection holds, so it still means "all of them" to `truncate`, `skip`, `take` and
/// `min`.
fn saturating_count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[derive(Debug)]
struct State {
    /// Entries up to here are compacted away; the log holds `compacted_index + 1 ..`.
    compacted_index: u64,
    compacted_term: u64,
    /// The first LSN of the live entry log (its directory's name).
    log_start: u64,
    /// The term of every entry in the log, in order.
    terms: VecDeque<u64>,
    /// The newest entries, up to `cache_bytes`.
    cache: VecDeque<Entry>,
    cache_bytes: usize,
    hard_state: HardState,
    /// The term and vote last made durable.
    synced_term_vote: (u64, u64),
}

impl State {
    fn first_index(&self) -> u64 {
        self.compacted_index + 1
    }

    fn last_index(&self) -> u64 {
        self.compacted_index + self.terms.len() as u64
    }

    fn cache_first(&self) -> u64 {
        self.last_index() + 1 - self.cache.len() as u64
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index == self.compacted_index {
            return Some(self.compacted_term);
        }
        let at = index.checked_sub(self.first_index())?;
        self.terms.get(usize::try_from(at).ok()?).copied()
    }

    fn push_cached(&mut self, entry: Entry, budget: usize) {
        self.cache_bytes += entry.size();
        self.cache.push_back(entry);
        while self.cache_bytes > budget {
            match self.cache.pop_front() {
                Some(old) => self.cache_bytes -= old.size(),
                None => break,
            }
        }
    }

    /// Forgets entries from `index` on.
    fn truncate_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.first_index());
        self.terms.truncate(saturating_count(keep));
        while self.cache.back().is_some_and(|e| e.index >= index) {
            if let Some(e) = self.cache.pop_back() {
                self.cache_bytes -= e.size();
            }
        }
        self.debug_assert_consistent();
    }

    /// Checks, in debug builds, that the term index and the cache agree with each other and
    /// with the compaction point. Endpoints only, so it costs the same however long the log.
    fn debug_assert_consistent(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        // Terms never go down along the log, starting from the compaction point's.
        debug_assert!(
            self.terms.front().is_none_or(|&t| t >= self.compacted_term),
            "the first entry's term is below the compaction point's"
        );
        debug_assert!(
            self.terms.front() <= self.terms.back(),
            "the last entry's term is below the first's"
        );
        // The cache holds the newest entries, so never more than the log.
        debug_assert!(
            self.cache.len() <= self.terms.len(),
            "the cache outgrew the log"
        );
        // Indexes are consecutive from the compaction point: the cache's ends sit at their
        // positions, with the terms the term index has for them.
        if let (Some(oldest), Some(newest)) = (self.cache.front(), self.cache.back()) {
            debug_assert_eq!(oldest.index, self.cache_first(), "the cache's first index");
            debug_assert_eq!(newest.index, self.last_index(), "the cache's last index");
            debug_assert_eq!(
                Some(oldest.term),
                self.term(oldest.index),
                "the cache's first term"
            );
            debug_assert_eq!(
                Some(newest.term),
                self.term(newest.index),
                "the cache's last term"
            );
        }
        // The byte count is the cache's: nothing when it is empty.
        debug_assert!(
            !self.cache.is_empty() || self.cache_bytes == 0,
            "an empty cache counts bytes"
        );
    }

    fn record(&self) -> StateRecord {
        StateRecord {
            term: self.hard_state.term,
            vote: self.hard_state.vote,
            commit: self.hard_state.commit,
            compacted_index: self.compacted_index,
            compacted_term: self.compacted_term,
            log_start: self.log_start,
        }
    }
}

/// The durable Raft log of one node: entries with an in-memory term index and a bounded cache
/// of recent entries, suffix truncation, prefix compaction, and the hard state.
///
/// Entry `i` is record `i` of the entry log (a `strata-wal` log), so finding an entry on disk
/// needs no index, and a truncation is a WAL suffix cut. The hard state and the compaction
/// point are records of a second, small log. One writer (the Raft driver) appends, truncates,
/// compacts and sets the hard state; any number of threads read.
#[derive(Debug)]
pub struct RaftLog {
    dir: PathBuf,
    options: LogOptions,
    /// Serializes the writer's operations, across their I/O. Readers never take it.
    writer: Mutex<()>,
    /// The entry log. Readers of its records hold it shared; a truncation or a reset (which
    /// change records under a reader) hold it exclusively. `None` only after a reset failed
    /// half-way (every later call then fails; reopen).
    entries: RwLock<Option<Wal>>,
    state_log: Wal,
    state: Mutex<State>,
}

fn entry_log_options(options: &LogOptions, first_lsn: u64) -> WalOptions {
    WalOptions {
        segment_bytes_max: options.segment_bytes,
        durability: if options.sync {
            Durability::Sync
        } else {
            Durability::NoSync
        },
        first_lsn,
        ..WalOptions::default()
    }
}

fn entries_dir(dir: &Path, log_start: u64) -> PathBuf {
    dir.join(format!("entries-{log_start:020}"))
}

fn open_entry_log(dir: &Path, options: &LogOptions, log_start: u64) -> Result<Wal> {
    let (wal, _) = Wal::open(
        &entries_dir(dir, log_start),
        entry_log_options(options, log_start),
    )?;
    Ok(wal)
}

/// Removes every entry log directory but the live one: what a crash left of a reset.
fn remove_other_entry_logs(dir: &Path, log_start: u64) -> Result<()> {
    let live = entries_dir(dir, log_start);
    let list = std::fs::read_dir(dir).map_err(IoError::with("list", dir))?;
    let mut removed = false;
    for item in list {
        let item = item.map_err(IoError::with("list", dir))?;
        let path = item.path();
        let is_entry_log = item
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("entries-"));
        if is_entry_log && path != live {
            std::fs::remove_dir_all(&path)
                .map_err(IoError::with("remove an old entry log", &path))?;
            removed = true;
        }
    }
    if removed {
        strata_fs::sync_dir(dir)?;
    }
    Ok(())
}

fn closed() -> Error {
    Error::Corruption {
        path: PathBuf::new(),
        lsn: 0,
        reason: "the entry log was closed by a failed reset; reopen the log",
    }
}

impl RaftLog {
    /// Opens (creating if needed) the log in `dir`, restoring the hard state, the compaction
    /// point and every entry after it.
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] for a record that does not decode, an entry at the wrong position
    /// or going back in term, or entries missing after the compaction point; WAL and I/O errors.
    pub fn open(dir: &Path, options: LogOptions) -> Result<RaftLog> {
        std::fs::create_dir_all(dir).map_err(IoError::with("create log directory", dir))?;
        let state_path = dir.join("state");
        let (state_log, _) = Wal::open(
            &state_path,
            WalOptions {
                segment_bytes_max: STATE_SEGMENT_BYTES,
                durability: Durability::NoSync,
                ..WalOptions::default()
            },
        )?;
        let mut record = StateRecord::default();
        if state_log.next_lsn() > state_log.first_lsn() {
            // Only the last record counts; read from the last segment's start.
            for item in state_log.read_from(state_log.first_lsn())? {
                let (lsn, bytes) = item?;
                record = StateRecord::decode(bytes.as_slice()).map_err(|_| Error::Corruption {
                    path: state_path.clone(),
                    lsn,
                    reason: "state record does not decode",
                })?;
            }
        }
        let first_index = record.compacted_index + 1;
        let log_start = record.log_start.max(1);
        remove_other_entry_logs(dir, log_start)?;
        let entries = open_entry_log(dir, &options, log_start)?;
        let entries_path = entries_dir(dir, log_start);
        let mut state = State {
            compacted_index: record.compacted_index,
            compacted_term: record.compacted_term,
            log_start,
            terms: VecDeque::new(),
            cache: VecDeque::new(),
            cache_bytes: 0,
            hard_state: HardState {
                term: record.term,
                vote: record.vote,
                commit: record.commit,
            },
            synced_term_vote: (record.term, record.vote),
        };
        if entries.first_lsn() > first_index {
            return Err(Error::Corruption {
                path: entries_path,
                lsn: first_index,
                reason: "entries after the compaction point are missing",
            });
        }
        if entries.next_lsn() > first_index {
            let mut last_term = record.compacted_term;
            for item in entries.read_from(first_index)? {
                let (lsn, bytes) = item?;
                let corrupt = |reason| Error::Corruption {
                    path: entries_path.clone(),
                    lsn,
                    reason,
                };
                let entry = Entry::decode(bytes.as_slice())
                    .map_err(|_| corrupt("entry does not decode"))?;
                if entry.index != lsn {
                    return Err(corrupt("entry is not at its index"));
                }
                if entry.term < last_term {
                    return Err(corrupt("entry term goes back"));
                }
                last_term = entry.term;
                state.terms.push_back(entry.term);
                state.push_cached(entry, options.cache_bytes);
            }
        }
        state.debug_assert_consistent();
        let needs_reset = entries.next_lsn() < first_index;
        let log = RaftLog {
            dir: dir.to_path_buf(),
            options,
            writer: Mutex::new(()),
            entries: RwLock::new(Some(entries)),
            state_log,
            state: Mutex::new(state),
        };
        if needs_reset {
            // The log ends before the compaction point (entries that were never synced, and
            // are in the snapshot anyway): start a new one after it.
            let mut entries = log.entries.write();
            log.reset_entries(&mut entries, first_index)?;
        }
        Ok(log)
    }
    /// The first index in the log (one past the compaction point).
    pub fn first_index(&self) -> u64 {
        self.state.lock().first_index()
    }

    /// The last index in the log (the compaction point if the log is empty).
    pub fn last_index(&self) -> u64 {
        self.state.lock().last_index()
    }

    /// The term of the last entry (or of the compaction point).
    pub fn last_term(&self) -> u64 {
        let state = self.state.lock();
        state.term(state.last_index()).unwrap_or(0)
    }

    /// The compaction point: the index and term of the last entry compacted away (0, 0 if
    /// none).
    pub fn compacted(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.compacted_index, state.compacted_term)
    }

    /// The term of the entry at `index`: known for every entry in the log and for the
    /// compaction point, from memory. `None` below or past them.
    pub fn term(&self, index: u64) -> Option<u64> {
        self.state.lock().term(index)
    }

    /// The hard state as last set.
    pub fn hard_state(&self) -> HardState {
        self.state.lock().hard_state
    }

    /// Appends `entries`, which must be consecutive and not go back in term. If the first
    /// is at or before the last index, the log's entries from there on are first removed,
    /// durably (a leader overwriting a follower's conflicting suffix). With
    /// [`LogOptions::sync`], durable on return.
    ///
    /// # Errors
    ///
    /// [`Error::BadAppend`] (entries not consecutive, a gap after the log, a term lower than
    /// the entry before), [`Error::Compacted`] (the first entry is at or below the
    /// compaction point); WAL errors.
    pub fn append(&self, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let _writer = self.writer.lock();
        let (truncate, before_term) = {
            let state = self.state.lock();
            if first.index <= state.compacted_index {
                return Err(Error::Compacted {
                    index: first.index,
                    first_index: state.first_index(),
                });
            }
            if first.index > state.last_index() + 1 {
                return Err(Error::BadAppend {
                    reason: "the entries start past the end of the log",
                });
            }
            (
                first.index <= state.last_index(),
                state.term(first.index - 1).unwrap_or(0),
            )
        };
        let mut previous = (first.index - 1, before_term);
        for e in entries {
            if e.index != previous.0 + 1 {
                return Err(Error::BadAppend {
                    reason: "the entries are not consecutive",
                });
            }
            if e.term < previous.1 {
                return Err(Error::BadAppend {
                    reason: "an entry's term is lower than the one before it",
                });
            }
            previous = (e.index, e.term);
        }
        if truncate {
            self.truncate_from(first.index)?;
        }
        let encoded: Vec<Vec<u8>> = entries.iter().map(Message::encode_to_vec).collect();
        let lsns = self
            .entries
            .read()
            .as_ref()
            .ok_or_else(closed)?
            .append_batch(&encoded)?;
        if *lsns.start() != first.index {
            return Err(Error::Corruption {
                path: self.dir.clone(),
                lsn: *lsns.start(),
                reason: "the entry log's next record is not the next index",
            });
        }
        let mut state = self.state.lock();
        // An append starts above the compaction point and, after the cut above, right after
        // the last index (so it started at most one past it).
        debug_assert!(first.index > state.compacted_index && first.index == state.last_index() + 1);
        for e in entries {
            // Entry indexes are consecutive, and terms never go down along the log.
            debug_assert_eq!(e.index, state.last_index() + 1, "an appended index skips");
            debug_assert!(
                state.term(state.last_index()).is_none_or(|t| e.term >= t),
                "an appended term goes down"
            );
            state.terms.push_back(e.term);
            state.push_cached(e.clone(), self.options.cache_bytes);
        }
        state.debug_assert_consistent();
        Ok(())
    }

    /// Durably removes the entries from `index` on (no-op if there are none). Called with the
    /// writer lock held.
    fn truncate_from(&self, index: u64) -> Result<()> {
        let entries = self.entries.write();
        entries
            .as_ref()
            .ok_or_else(closed)?
            .truncate_after(index - 1)?;
        self.state.lock().truncate_from(index);
        Ok(())
    }

    /// Removes the entries from `index` on, durably.
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] if `index` is at or below the compaction point; WAL errors.
    pub fn truncate_suffix(&self, index: u64) -> Result<()> {
        let _writer = self.writer.lock();
        {
            let state = self.state.lock();
            if index <= state.compacted_index {
                return Err(Error::Compacted {
                    index,
                    first_index: state.first_index(),
                });
            }
            if index > state.last_index() {
                return Ok(());
            }
        }
        self.truncate_from(index)
    }

    /// Makes every appended entry durable (for logs opened without [`LogOptions::sync`]).
    ///
    /// # Errors
    ///
    /// WAL errors.
    pub fn sync(&self) -> Result<()> {
        self.entries.read().as_ref().ok_or_else(closed)?.sync()?;
        Ok(())
    }

    /// The entry at `index`.
    ///
    /// # Errors
    ///
    /// As [`entries`](Self::entries).
    pub fn entry(&self, index: u64) -> Result<Entry> {
        let mut entries = self.entries(index, index + 1, NO_BYTE_LIMIT)?;
        entries.pop().ok_or(Error::Unavailable {
            index,
            last_index: self.last_index(),
        })
    }

    /// The entries `lo..hi`, stopping early once they exceed `bytes_max` (at least one is
    /// returned). From the cache when they are recent, from disk otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::Compacted`] if `lo` is compacted away, [`Error::Unavailable`] if `hi` is past
    /// the end; WAL errors and [`Error::Corruption`] from disk.
    pub fn entries(&self, lo: u64, hi: u64, bytes_max: usize) -> Result<Vec<Entry>> {
        let guard = self.entries.read();
        let records = guard.as_ref().ok_or_else(closed)?;
        let (cache_first, cached) = {
            let state = self.state.lock();
            if lo < state.first_index() {
                return Err(Error::Compacted {
                    index: lo,
                    first_index: state.first_index(),
                });
            }
            if hi > state.last_index() + 1 {
                return Err(Error::Unavailable {
                    index: hi - 1,
                    last_index: state.last_index(),
                });
            }
            let cache_first = state.cache_first();
            let from = lo.max(cache_first);
            let cached: Vec<Entry> = state
                .cache
                .iter()
                .skip(saturating_count(from - cache_first))
                .take(saturating_count(hi.saturating_sub(from)))
                .cloned()
                .collect();
            (cache_first, cached)
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        if lo < cache_first.min(hi) {
            // Older than the cache: read the records. The shared lock keeps a truncation from
            // changing them under the reader (appends only add after them).
            let end = cache_first.min(hi);
            for item in records.read_from(lo)? {
                let (lsn, payload) = item?;
                if lsn >= end {
                    break;
                }
                let entry = Entry::decode(payload.as_slice()).map_err(|_| Error::Corruption {
                    path: self.dir.clone(),
                    lsn,
                    reason: "entry does not decode",
                })?;
                if entry.index != lsn {
                    return Err(Error::Corruption {
                        path: self.dir.clone(),
                        lsn,
                        reason: "entry is not at its index",
                    });
                }
                bytes += entry.size();
                out.push(entry);
                if bytes > bytes_max {
                    return Ok(out);
                }
            }
        }
        for entry in cached {
            if bytes > bytes_max && !out.is_empty() {
                break;
            }
            bytes += entry.size();
            out.push(entry);
        }
        Ok(out)
    }

    /// Records `hard_state`. A change of term or vote is durable on return (a node must never
    /// vote twice in a term); a change of the commit index alone is not synced (it is learned
    /// again from the leader after a crash).
    ///
    /// # Errors
    ///
    /// WAL errors.
    pub fn set_hard_state(&self, hard_state: HardState) -> Result<()> {
        let _writer = self.writer.lock();
        let (record, must_sync) = {
            let mut state = self.state.lock();
            if state.hard_state == hard_state {
                return Ok(());
            }
            state.hard_state = hard_state;
            let must_sync = state.synced_term_vote != (hard_state.term, hard_state.vote);
            (state.record(), must_sync)
        };
        self.write_state(&record, must_sync)?;
        if must_sync {
            self.state.lock().synced_term_vote = (hard_state.term, hard_state.vote);
        }
        Ok(())
    }

    /// Appends a state record, synced if asked, and drops old state segments.
    fn write_state(&self, record: &StateRecord, sync: bool) -> Result<()> {
        let lsn = self.state_log.append(&record.encode_to_vec())?;
        if sync {
            self.state_log.sync()?;
        }
        // Only the last record matters: whole segments before it can go.
        self.state_log.purge_before(lsn)?;
        Ok(())
    }

    /// Compacts the log up to `index`, whose entry has `term` (the last entry a snapshot
    /// covers): entries up to it are dropped, and the log starts after it. If the log holds
    /// `index` with a different term, or ends before it, every entry is dropped (Raft's rule
    /// for installing a snapshot). The compaction point is durable on return; disk space is
    /// freed a segment at a time.
    ///
    /// # Errors
    ///
    /// WAL and I/O errors.
    pub fn compact(&self, index: u64, term: u64) -> Result<()> {
        let _writer = self.writer.lock();
        let (record, keep_suffix) = {
            let mut state = self.state.lock();
            if index <= state.compacted_index {
                return Ok(());
            }
            let keep_suffix = index <= state.last_index() && state.term(index) == Some(term);
            if keep_suffix {
                let drop = saturating_count(index - state.compacted_index).min(state.terms.len());
                state.terms.drain(..drop);
                while state.cache.front().is_some_and(|e| e.index <= index) {
                    if let Some(e) = state.cache.pop_front() {
                        state.cache_bytes -= e.size();
                    }
                }
            } else {
                state.terms.clear();
                state.cache.clear();
                state.cache_bytes = 0;
            }
            // The compaction point only moves forward, also when every entry is dropped: Raft's
            // snapshot rule resets the log after the point, never the point backwards.
            debug_assert!(index > state.compacted_index);
            state.compacted_index = index;
            state.compacted_term = term;
            state.debug_assert_consistent();
            (state.record(), keep_suffix)
        };
        let mut entries = self.entries.write();
        if keep_suffix {
            // The compaction point first: after a crash, records below it are ignored.
            self.write_state(&record, true)?;
            self.state.lock().synced_term_vote = (record.term, record.vote);
            entries
                .as_ref()
                .ok_or_else(closed)?
                .purge_before(index + 1)?;
            Ok(())
        } else {
            self.reset_entries(&mut entries, index + 1)
        }
    }

    /// Starts a new, empty entry log at `log_start`: the new directory, then a synced state
    /// record naming it (the commit point: a crash before it keeps the old log, after it the
    /// new one), then the old directory goes. Called with the writer lock held.
    fn reset_entries(&self, entries: &mut Option<Wal>, log_start: u64) -> Result<()> {
        let old_start = self.state.lock().log_start;
        if old_start == log_start {
            // Only after a crash: the live log is already the one wanted, and empty.
            return Ok(());
        }
        // A reset only moves the entry log forward, past the compaction point.
        debug_assert!(
            log_start > old_start,
            "a reset moves the entry log backwards"
        );
        let _ = std::fs::remove_dir_all(entries_dir(&self.dir, log_start));
        let fresh = open_entry_log(&self.dir, &self.options, log_start)?;
        let record = {
            let mut state = self.state.lock();
            state.log_start = log_start;
            state.record()
        };
        if let Err(e) = self.write_state(&record, true) {
            self.state.lock().log_start = old_start;
            return Err(e);
        }
        self.state.lock().synced_term_vote = (record.term, record.vote);
        // The old log's handle goes before its files (it holds a lock file in there).
        drop(entries.replace(fresh));
        remove_other_entry_logs(&self.dir, log_start)
    }
}
