//! [`Wal`]: appends with group commit, rotation, purge, suffix truncation and reads.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Write};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::format::{
    Lsn, PAYLOAD_CRC_AHEAD_BYTES_MIN, PayloadCrc, RECORD_HEADER_BYTES, RecordScanner,
    SEGMENT_HEADER_BYTES, SegmentHeader, payload_crc, record_header,
};
use crate::options::{Durability, WalOptions};
use crate::recovery::{Recovery, Segment, create_segment, read_file, recover};

/// Counters a user can read. All are totals since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Records appended (handed to the operating system).
    pub records: u64,
    /// Bytes written to segments, framing included.
    pub bytes: u64,
    /// `write` calls for records.
    pub writes: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
    /// Records made durable by those syncs.
    pub synced_records: u64,
    /// Total time spent in `fdatasync`, in microseconds.
    pub sync_micros_total: u64,
    /// The longest single `fdatasync`, in microseconds.
    pub sync_micros_max: u64,
    /// Segments created since open.
    pub rotations: u64,
}

impl Metrics {
    /// Records per `fdatasync`: how well group commit batches.
    pub fn records_per_sync(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.synced_records as f64 / self.syncs as f64
        }
    }

    /// Mean `fdatasync` latency in microseconds.
    pub fn sync_micros_mean(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.sync_micros_total as f64 / self.syncs as f64
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    bytes: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    synced_records: AtomicU64,
    sync_micros_total: AtomicU64,
    sync_micros_max: AtomicU64,
    rotations: AtomicU64,
}

/// Encoded records waiting to be written, all destined for one segment.
#[derive(Debug)]
struct Chunk {
    /// Create this segment (and seal the current one) before writing `bytes`.
    new_segment: Option<SegmentHeader>,
    bytes: Vec<u8>,
    last_lsn: Lsn,
    records: u64,
}

/// The open tail segment.
#[derive(Debug)]
struct Writer {
    file: File,
    path: PathBuf,
    header: SegmentHeader,
}

/// A thread waiting in [`Wal::wait_for`].
#[derive(Debug)]
struct Waiter {
    id: u64,
    lsn: Lsn,
    durable: bool,
    thread: std::thread::Thread,
}

impl State {
    fn reached(&self, lsn: Lsn, durable: bool) -> bool {
        if durable {
            self.durable_lsn >= lsn
        } else {
            self.written_lsn >= lsn
        }
    }

    /// Moves into `wake` the threads of the waiters whose records are done (all of them if the
    /// log is poisoned), and one more to lead if others still wait and nobody is writing.
    fn collect_waiters_to_wake(&mut self, wake: &mut Vec<std::thread::Thread>) {
        let poisoned = self.poisoned.is_some();
        let (durable_lsn, written_lsn) = (self.durable_lsn, self.written_lsn);
        let last_lsn = self.next_lsn - 1;
        self.waiters.retain(|w| {
            // After a `truncate_after`, nothing above the cut will ever be written.
            let lsn = w.lsn.min(last_lsn);
            let done = poisoned
                || if w.durable {
                    durable_lsn >= lsn
                } else {
                    written_lsn >= lsn
                };
            if done {
                wake.push(w.thread.clone());
            }
            !done
        });
        // Whoever is still waiting needs a write (or a sync) that nobody is doing: wake one of
        // them to lead it.
        if self.writer.is_some()
            && let Some(next_leader) = self.waiters.first()
        {
            wake.push(next_leader.thread.clone());
        }
    }
}

/// Wakes the waiters a change finished (see [`State::collect_waiters_to_wake`]). The unparks
/// happen with the lock released: each is a syscall, and each woken thread's first act is to
/// take this lock.
fn wake_waiters(state: &mut MutexGuard<'_, State>) {
    let mut wake = std::mem::take(&mut state.wake_buffer);
    state.collect_waiters_to_wake(&mut wake);
    if !wake.is_empty() {
        MutexGuard::unlocked(state, || {
            for thread in wake.drain(..) {
                thread.unpark();
            }
        });
    }
    state.wake_buffer = wake;
}

/// The segment the next record goes into, counting what is queued.
#[derive(Debug, Clone, Copy)]
struct TailPlan {
    header: SegmentHeader,
    projected_bytes: u64,
    has_records: bool,
}

#[derive(Debug)]
struct State {
    next_lsn: Lsn,
    queue: Vec<Chunk>,
    tail: TailPlan,
    /// `None` while a leader (or `truncate_after`) has it out for I/O.
    writer: Option<Writer>,
    /// Set while `truncate_after` runs: appends wait.
    exclusive: bool,
    written_lsn: Lsn,
    durable_lsn: Lsn,
    /// Records written but not yet synced.
    unsynced_records: u64,
    poisoned: Option<String>,
    segments: Vec<Segment>,
    /// Emptied buffers, reused for the next batches.
    spare_buffers: Vec<Vec<u8>>,
    /// Threads parked until their record is written or durable. A leader wakes exactly those
    /// it finished (and one more to lead the next round): waking every waiter after every
    /// round costs more CPU than the `fdatasync` with many writers.
    waiters: Vec<Waiter>,
    next_waiter_id: u64,
    /// Reused by `wake_waiters`, so waking allocates nothing.
    wake_buffer: Vec<std::thread::Thread>,
    last_sync: Instant,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: WalOptions,
    state: Mutex<State>,
    changed: Condvar,
    counters: Counters,
    /// Serialises `purge_before` and `truncate_after`, which both change the segment list with
    /// the state lock released. Appends never take it.
    maintenance: Mutex<()>,
    /// Holds the directory's `LOCK` file locked, so a second open of the same log fails
    /// instead of writing the same tail.
    _dir_lock: File,
}

/// A segmented write-ahead log. Cheap to clone; every clone is the same log.
///
/// See the [crate docs](crate) for the guarantees.
#[derive(Debug, Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

/// Records at least this large are written straight from the caller's buffer when no write is
/// in progress, instead of being copied into the queue. Below it the copy is cheaper than the
/// extra `writev` segment.
const DIRECT_WRITE_BYTES_MIN: usize = 64 * 1024;
/// How many write rounds one leader runs at most before leaving the rest to another thread.
const LEADER_ROUNDS_MAX: u32 = 2;
/// How many emptied batch buffers are kept for reuse.
const SPARE_BUFFERS_MAX: usize = 4;
/// A kept batch buffer larger than this is dropped instead (after a burst of large records).
const SPARE_BUFFER_BYTES_MAX: usize = 4 * 1024 * 1024;

fn new_salt() -> u32 {
    // Never zero, so a zeroed region can never carry a matching salt by accident.
    rand::random::<u32>() | 1
}

impl Wal {
    /// Opens the log in `dir`, creating the directory and a first segment if needed, and
    /// recovers it: every record's checksum is verified, a torn tail is cut off, and damage
    /// before the tail stops the open with [`Error::Corruption`].
    ///
    /// # Errors
    ///
    /// [`Error::Corruption`] for damage before the tail; I/O errors.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovery)> {
        if !dir.try_exists().map_err(|e| Error::io("stat", dir, e))? {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
            strata_fs::sync_parent_dir(dir)?;
        }
        let dir_lock = lock_dir(dir)?;
        let recovered = recover(dir)?;
        let mut report = recovered.report;
        let mut segments = recovered.segments;
        let (writer, tail_bytes) = match segments.last() {
            Some(last) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&last.path)
                    .map_err(|e| Error::io("open segment", &last.path, e))?;
                // What recovery found may still be only in the page cache (written by a
                // process that died before its fsync): make it durable before new records
                // claim, in their durable-LSN field, that it is.
                file.sync_all()
                    .map_err(|e| Error::io("fsync segment", &last.path, e))?;
                (
                    Writer {
                        file,
                        path: last.path.clone(),
                        header: last.header,
                    },
                    recovered.tail_len,
                )
            }
            None => {
                report.next_lsn = report.next_lsn.max(options.first_lsn.max(1));
                let header = SegmentHeader {
                    salt: new_salt(),
                    first_lsn: report.next_lsn,
                };
                let (file, path) = create_segment(dir, header)?;
                segments.push(Segment {
                    header,
                    path: path.clone(),
                });
                report.segments = 1;
                (Writer { file, path, header }, SEGMENT_HEADER_BYTES as u64)
            }
        };
        let durable = report.next_lsn - 1;
        let state = State {
            next_lsn: report.next_lsn,
            queue: Vec::new(),
            tail: TailPlan {
                header: writer.header,
                projected_bytes: tail_bytes,
                has_records: tail_bytes > SEGMENT_HEADER_BYTES as u64,
            },
            writer: Some(writer),
            exclusive: false,
            written_lsn: durable,
            durable_lsn: durable,
            unsynced_records: 0,
            poisoned: None,
            segments,
            spare_buffers: Vec::new(),
            waiters: Vec::new(),
            next_waiter_id: 0,
            wake_buffer: Vec::new(),
            last_sync: Instant::now(),
        };
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            options,
            state: Mutex::new(state),
            changed: Condvar::new(),
            counters: Counters::default(),
            maintenance: Mutex::new(()),
            _dir_lock: dir_lock,
        });
        if let Durability::Interval(interval) = inner.options.durability {
            spawn_interval_syncer(dir, Arc::downgrade(&inner), interval)?;
        }
        Ok((Wal { inner }, report))
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends one record and returns its LSN once it is acknowledged (see [`Durability`]).
    ///
    /// # Errors
    ///
    /// [`Error::RecordTooLarge`]; [`Error::Poisoned`] after an earlier failure; the write or
    /// `fsync` error that poisoned the log.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn> {
        self.append_batch(&[payload]).map(|lsns| *lsns.end())
    }

    /// Appends several records, in order, with consecutive LSNs, and returns their range once
    /// all are acknowledged. One call costs one queue entry, not one per record.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append). An empty batch is an error-free no-op returning an empty
    /// range (`next..=next-1`).
    pub fn append_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<RangeInclusive<Lsn>> {
        let max = self.inner.options.record_bytes_max;
        for p in payloads {
            let len = p.as_ref().len();
            if len > max as usize {
                return Err(Error::RecordTooLarge { len, max });
            }
        }
        // The checksum of large payloads, the expensive part, is computed before taking the
        // lock; only the 24-byte header's is added under it. (Small payloads are checksummed
        // with their header, and need no vector.)
        let ahead: Vec<PayloadCrc<'_>> = if payloads
            .iter()
            .any(|p| p.as_ref().len() >= PAYLOAD_CRC_AHEAD_BYTES_MIN)
        {
            payloads.iter().map(|p| payload_crc(p.as_ref())).collect()
        } else {
            Vec::new()
        };
        let crc = |i: usize| {
            ahead
                .get(i)
                .cloned()
                .unwrap_or_else(|| PayloadCrc::inline(payloads[i].as_ref()))
        };
        let mut state = self.inner.state.lock();
        while state.exclusive {
            self.inner.changed.wait(&mut state);
        }
        if let Some(cause) = &state.poisoned {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        let first = state.next_lsn;
        let need_durable = self.inner.options.durability == Durability::Sync;
        if let [payload] = payloads
            && payload.as_ref().len() >= DIRECT_WRITE_BYTES_MIN
            && state.writer.is_some()
        {
            // A large record and no write in progress: write it from the caller's buffer
            // instead of copying it into the queue.
            let payload = payload.as_ref();
            let header = self.assign(&mut state, payload.len(), &crc(0));
            self.lead(&mut state, false, Some((&header, payload, first)))?;
            self.wait_for(&mut state, first, need_durable)?;
            return Ok(first..=first);
        }
        for (i, p) in payloads.iter().enumerate() {
            self.enqueue(&mut state, p.as_ref(), &crc(i));
        }
        let last = state.next_lsn - 1;
        if payloads.is_empty() {
            return Ok(first..=last);
        }
        self.wait_for(&mut state, last, need_durable)?;
        Ok(first..=last)
    }

    /// Appends one record from an async task. The waiting happens on Tokio's blocking pool, so
    /// the task's runtime thread is never blocked on I/O.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append).
    pub async fn append_async(&self, payload: Vec<u8>) -> Result<Lsn> {
        let wal = self.clone();
        tokio::task::spawn_blocking(move || wal.append(&payload))
            .await
            .map_err(|e| Error::Poisoned {
                cause: format!("append task failed: {e}"),
            })?
    }

    /// Gives the next record its LSN and segment: queues a rotation first if the record would
    /// take the tail segment past its limit. Returns the record's header.
    fn assign(
        &self,
        state: &mut State,
        payload_len: usize,
        crc: &PayloadCrc<'_>,
    ) -> [u8; RECORD_HEADER_BYTES] {
        let record_bytes = (RECORD_HEADER_BYTES + payload_len) as u64;
        let lsn = state.next_lsn;
        if state.tail.has_records
            && state.tail.projected_bytes + record_bytes > self.inner.options.segment_bytes_max
        {
            let header = SegmentHeader {
                salt: new_salt(),
                first_lsn: lsn,
            };
            let bytes = state.spare_buffers.pop().unwrap_or_default();
            state.queue.push(Chunk {
                new_segment: Some(header),
                bytes,
                last_lsn: lsn - 1,
                records: 0,
            });
            state.tail = TailPlan {
                header,
                projected_bytes: SEGMENT_HEADER_BYTES as u64,
                has_records: false,
            };
        }
        state.tail.projected_bytes += record_bytes;
        state.tail.has_records = true;
        state.next_lsn += 1;
        let len = u32::try_from(payload_len).expect("record length was checked against the limit");
        record_header(state.tail.header.salt, lsn, state.durable_lsn, len, crc)
    }

    /// Queues one record for the next leader to write.
    fn enqueue(&self, state: &mut State, payload: &[u8], crc: &PayloadCrc<'_>) {
        let lsn = state.next_lsn;
        // A rotation, if this record needs one, is queued as an empty chunk that the record
        // then goes into.
        let header = self.assign(state, payload.len(), crc);
        if state.queue.is_empty() {
            let bytes = state.spare_buffers.pop().unwrap_or_default();
            state.queue.push(Chunk {
                new_segment: None,
                bytes,
                last_lsn: lsn - 1,
                records: 0,
            });
        }
        let chunk = state
            .queue
            .last_mut()
            .expect("a chunk was pushed above if the queue was empty");
        chunk.bytes.extend_from_slice(&header);
        chunk.bytes.extend_from_slice(payload);
        chunk.last_lsn = lsn;
        chunk.records += 1;
    }

    /// Waits until `lsn` is written (and synced, if `durable`), leading a write itself when no
    /// other thread is: the group commit.
    fn wait_for(&self, state: &mut MutexGuard<'_, State>, lsn: Lsn, durable: bool) -> Result<()> {
        let mut rounds_led = 0;
        let mut registered: Option<u64> = None;
        let result = loop {
            // A `truncate_after` may have cut below the target (a `sync` that asked for
            // everything appended so far): what is left is all there is to wait for.
            let lsn = lsn.min(state.next_lsn - 1);
            if state.reached(lsn, durable) {
                // A leader whose own record is done keeps leading while others have queued
                // records: it is already awake and holds the lock, where handing over means
                // waking another thread first. Bounded, so its own caller is not held long.
                if rounds_led > 0
                    && rounds_led < LEADER_ROUNDS_MAX
                    && !state.queue.is_empty()
                    && state.writer.is_some()
                {
                    rounds_led = rounds_led.saturating_add(1);
                    // Its own record is durable; an error here reaches the others' waits.
                    let _ = self.lead(state, false, None);
                    continue;
                }
                break Ok(());
            }
            if let Some(cause) = &state.poisoned {
                break Err(Error::Poisoned {
                    cause: cause.clone(),
                });
            }
            if state.writer.is_some() {
                rounds_led = rounds_led.saturating_add(1);
                if let Err(e) = self.lead(state, durable, None) {
                    break Err(e);
                }
            } else {
                if registered.is_none() {
                    let id = state.next_waiter_id;
                    state.next_waiter_id += 1;
                    state.waiters.push(Waiter {
                        id,
                        lsn,
                        durable,
                        thread: std::thread::current(),
                    });
                    registered = Some(id);
                }
                // An unpark that comes before the park makes the park return at once, so no
                // wake-up is lost between releasing the lock and parking.
                MutexGuard::unlocked(state, std::thread::park);
            }
        };
        if let Some(id) = registered {
            state.waiters.retain(|w| w.id != id);
        }
        result
    }

    /// Takes everything queued, writes it with the lock released, syncs if asked (or if the
    /// interval is due), and publishes the result.
    fn lead(
        &self,
        state: &mut MutexGuard<'_, State>,
        force_sync: bool,
        direct: Option<(&[u8; RECORD_HEADER_BYTES], &[u8], Lsn)>,
    ) -> Result<()> {
        if direct.is_none() && state.waiters.len() > 1 {
            // Writers just woken by the last round are about to queue their next records: let
            // them, so this round's one fsync covers them too.
            MutexGuard::unlocked(state, std::thread::yield_now);
        }
        let Some(mut writer) = state.writer.take() else {
            return Ok(());
        };
        let chunks = std::mem::take(&mut state.queue);
        let sync = force_sync
            || match self.inner.options.durability {
                Durability::Sync => true,
                Durability::NoSync => false,
                Durability::Interval(interval) => state.last_sync.elapsed() >= interval,
            };
        if chunks.is_empty() && direct.is_none() && !(sync && state.durable_lsn < state.written_lsn)
        {
            // Another leader wrote (and synced) everything while this one yielded.
            state.writer = Some(writer);
            wake_waiters(state);
            return Ok(());
        }
        let target = match direct {
            Some((_, _, lsn)) => lsn,
            None => chunks.last().map_or(state.written_lsn, |c| c.last_lsn),
        };
        let direct = direct.map(|(header, payload, _)| (&header[..], payload));
        let pending_unsynced = state.unsynced_records;
        let dir = self.inner.dir.clone();
        let counters = &self.inner.counters;
        let outcome = MutexGuard::unlocked(state, || {
            write_chunks(
                &dir,
                &mut writer,
                chunks,
                direct,
                sync,
                pending_unsynced,
                counters,
            )
        });
        state.writer = Some(writer);
        let result = match outcome {
            Ok(done) => {
                for chunk_buffer in done.buffers {
                    if state.spare_buffers.len() < SPARE_BUFFERS_MAX
                        && chunk_buffer.capacity() <= SPARE_BUFFER_BYTES_MAX
                    {
                        state.spare_buffers.push(chunk_buffer);
                    }
                }
                state.segments.extend(done.new_segments);
                state.written_lsn = state.written_lsn.max(target);
                state.unsynced_records += done.records_written;
                if sync {
                    state.durable_lsn = state.written_lsn;
                    state.unsynced_records = 0;
                    state.last_sync = Instant::now();
                }
                Ok(())
            }
            Err(e) => {
                // The file's state after a failed write or fsync is unknown: accept nothing
                // more, and never retry an fsync (it could report success for lost data).
                state.poisoned = Some(strata_fs::display_chain(&e));
                Err(e)
            }
        };
        wake_waiters(state);
        self.inner.changed.notify_all();
        result
    }

    /// Makes every record appended so far durable (one `fdatasync` if anything is unsynced).
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`], or the `fsync` error that poisons the log.
    pub fn sync(&self) -> Result<()> {
        let mut state = self.inner.state.lock();
        let target = state.next_lsn - 1;
        self.wait_for(&mut state, target, true)
    }

    /// The LSN the next record will get.
    pub fn next_lsn(&self) -> Lsn {
        self.inner.state.lock().next_lsn
    }

    /// The highest LSN known durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.state.lock().durable_lsn
    }

    /// The first LSN still in the log (after purges).
    pub fn first_lsn(&self) -> Lsn {
        let state = self.inner.state.lock();
        state
            .segments
            .first()
            .map_or(state.next_lsn, |s| s.header.first_lsn)
    }

    /// The counters so far.
    pub fn metrics(&self) -> Metrics {
        let c = &self.inner.counters;
        Metrics {
            records: c.records.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            writes: c.writes.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            synced_records: c.synced_records.load(Ordering::Relaxed),
            sync_micros_total: c.sync_micros_total.load(Ordering::Relaxed),
            sync_micros_max: c.sync_micros_max.load(Ordering::Relaxed),
            rotations: c.rotations.load(Ordering::Relaxed),
        }
    }

    /// Deletes every whole segment whose records all have LSNs below `lsn` (the LSM after a
    /// flush, Raft after a snapshot), then syncs the directory. The tail segment is never
    /// deleted. Returns how many segments were deleted.
    ///
    /// # Errors
    ///
    /// I/O errors from deleting or syncing.
    pub fn purge_before(&self, lsn: Lsn) -> Result<usize> {
        let _maintenance = self.inner.maintenance.lock();
        let doomed: Vec<Segment> = {
            let mut state = self.inner.state.lock();
            let mut keep_from = 0;
            while keep_from + 1 < state.segments.len()
                && state.segments[keep_from + 1].header.first_lsn <= lsn
            {
                keep_from += 1;
            }
            state.segments.drain(..keep_from).collect()
        };
        for segment in &doomed {
            std::fs::remove_file(&segment.path)
                .map_err(|e| Error::io("remove segment", &segment.path, e))?;
        }
        if !doomed.is_empty() {
            strata_fs::sync_dir(&self.inner.dir)?;
        }
        Ok(doomed.len())
    }

    /// Durably removes every record with an LSN above `lsn` (Raft dropping conflicting
    /// entries); the next record gets `lsn + 1`. Appends wait while it runs.
    ///
    /// # Errors
    ///
    /// [`Error::LsnOutOfRange`] if `lsn` is below what [`purge_before`](Self::purge_before) kept;
    /// I/O errors (which poison the log).
    pub fn truncate_after(&self, lsn: Lsn) -> Result<()> {
        let _maintenance = self.inner.maintenance.lock();
        let mut state = self.inner.state.lock();
        while state.exclusive {
            self.inner.changed.wait(&mut state);
        }
        // From here on new appends wait; those already queued are written first, so the cut
        // falls between acknowledged records and no queued record keeps a stale LSN.
        state.exclusive = true;
        let ready = self.ready_to_cut(&mut state, lsn);
        if !matches!(ready, Ok(true)) {
            state.exclusive = false;
            wake_waiters(&mut state);
            self.inner.changed.notify_all();
            return ready.map(|_| ());
        }
        let writer = state.writer.take();
        let segments = state.segments.clone();
        let dir = self.inner.dir.clone();
        let outcome = MutexGuard::unlocked(&mut state, || {
            drop(writer);
            cut_suffix(&dir, &segments, lsn)
        });
        state.exclusive = false;
        let result = match outcome {
            Ok((kept, writer, tail_bytes)) => {
                // Keep by first LSN, not by position: the list is the one this cut worked on
                // (purges wait for the maintenance lock), but say what is meant.
                let last_kept = segments[kept - 1].header.first_lsn;
                state.segments.retain(|s| s.header.first_lsn <= last_kept);
                state.tail = TailPlan {
                    header: writer.header,
                    projected_bytes: tail_bytes,
                    has_records: tail_bytes > SEGMENT_HEADER_BYTES as u64,
                };
                state.writer = Some(writer);
                state.next_lsn = lsn + 1;
                // Every segment before the tail was synced when sealed, and the cut synced the
                // tail: everything that is left is durable.
                state.written_lsn = lsn;
                state.durable_lsn = lsn;
                Ok(())
            }
            Err(e) => {
                state.poisoned = Some(strata_fs::display_chain(&e));
                Err(e)
            }
        };
        wake_waiters(&mut state);
        self.inner.changed.notify_all();
        result
    }

    /// For [`truncate_after`](Self::truncate_after): writes what is queued, waits for the
    /// writer, and checks `lsn`. `Ok(false)` means there is nothing to cut.
    fn ready_to_cut(&self, state: &mut MutexGuard<'_, State>, lsn: Lsn) -> Result<bool> {
        let queued = state.next_lsn - 1;
        self.wait_for(state, queued, false)?;
        while state.writer.is_none() {
            self.inner.changed.wait(state);
        }
        if lsn >= state.next_lsn - 1 {
            return Ok(false);
        }
        let first_lsn = state
            .segments
            .first()
            .map_or(state.next_lsn, |s| s.header.first_lsn);
        // `lsn < next_lsn - 1`, so `lsn + 1` cannot overflow.
        if lsn + 1 < first_lsn {
            return Err(Error::LsnOutOfRange {
                lsn,
                first_lsn,
                next_lsn: state.next_lsn,
            });
        }
        Ok(true)
    }

    /// Reads every record from `lsn` on that was written when this is called.
    ///
    /// A reader made before a [`truncate_after`](Self::truncate_after) may return records
    /// written after the cut under the same LSNs; make a new reader after truncating.
    ///
    /// # Errors
    ///
    /// [`Error::LsnOutOfRange`] if `lsn` was purged or is beyond the next LSN.
    pub fn read_from(&self, lsn: Lsn) -> Result<WalReader> {
        let state = self.inner.state.lock();
        let first_lsn = state
            .segments
            .first()
            .map_or(state.next_lsn, |s| s.header.first_lsn);
        if lsn < first_lsn || lsn > state.written_lsn + 1 {
            return Err(Error::LsnOutOfRange {
                lsn,
                first_lsn,
                next_lsn: state.next_lsn,
            });
        }
        let start = state
            .segments
            .partition_point(|s| s.header.first_lsn <= lsn)
            .saturating_sub(1);
        Ok(WalReader {
            segments: state.segments[start..].to_vec(),
            next_segment: 0,
            current: None,
            offset: 0,
            scan_lsn: 0,
            next_lsn: lsn,
            end_lsn: state.written_lsn,
        })
    }
}

struct WriteDone {
    buffers: Vec<Vec<u8>>,
    new_segments: Vec<Segment>,
    records_written: u64,
}

fn write_chunks(
    dir: &Path,
    writer: &mut Writer,
    chunks: Vec<Chunk>,
    direct: Option<(&[u8], &[u8])>,
    sync: bool,
    already_unsynced: u64,
    counters: &Counters,
) -> Result<WriteDone> {
    let mut done = WriteDone {
        buffers: Vec::with_capacity(chunks.len()),
        new_segments: Vec::new(),
        records_written: 0,
    };
    let mut unsynced = already_unsynced;
    for mut chunk in chunks {
        if let Some(header) = chunk.new_segment {
            // Seal the current segment: durable before anything goes into the next one, so
            // recovery can be strict about every segment but the last.
            sync_segment(writer, unsynced, counters)?;
            unsynced = 0;
            let (file, path) = create_segment(dir, header)?;
            counters.rotations.fetch_add(1, Ordering::Relaxed);
            done.new_segments.push(Segment {
                header,
                path: path.clone(),
            });
            *writer = Writer { file, path, header };
        }
        if !chunk.bytes.is_empty() {
            strata_fs::failpoint::check(crate::FP_WRITE)
                .and_then(|()| writer.file.write_all(&chunk.bytes))
                .map_err(|e| Error::io("write", &writer.path, e))?;
            counters.writes.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes
                .fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
            counters.records.fetch_add(chunk.records, Ordering::Relaxed);
            unsynced += chunk.records;
            done.records_written += chunk.records;
        }
        chunk.bytes.clear();
        done.buffers.push(chunk.bytes);
    }
    if let Some((header, payload)) = direct {
        strata_fs::failpoint::check(crate::FP_WRITE)
            .and_then(|()| write_all_vectored(&mut writer.file, header, payload))
            .map_err(|e| Error::io("write", &writer.path, e))?;
        counters.writes.fetch_add(1, Ordering::Relaxed);
        counters
            .bytes
            .fetch_add((header.len() + payload.len()) as u64, Ordering::Relaxed);
        counters.records.fetch_add(1, Ordering::Relaxed);
        unsynced += 1;
        done.records_written += 1;
    }
    if sync {
        sync_segment(writer, unsynced, counters)?;
    }
    Ok(done)
}

/// Writes `a` then `b` with as few `writev` calls as the kernel allows.
fn write_all_vectored(file: &mut File, a: &[u8], b: &[u8]) -> std::io::Result<()> {
    let mut written = 0;
    let total = a.len() + b.len();
    while written < total {
        let n = if written < a.len() {
            file.write_vectored(&[IoSlice::new(&a[written..]), IoSlice::new(b)])?
        } else {
            file.write(&b[written - a.len()..])?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        written += n;
    }
    Ok(())
}

fn sync_segment(writer: &mut Writer, records: u64, counters: &Counters) -> Result<()> {
    let start = Instant::now();
    strata_fs::failpoint::check(crate::FP_FSYNC)
        .and_then(|()| writer.file.sync_data())
        .map_err(|e| Error::io("fdatasync", &writer.path, e))?;
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    counters.syncs.fetch_add(1, Ordering::Relaxed);
    counters
        .synced_records
        .fetch_add(records, Ordering::Relaxed);
    counters
        .sync_micros_total
        .fetch_add(micros, Ordering::Relaxed);
    counters
        .sync_micros_max
        .fetch_max(micros, Ordering::Relaxed);
    Ok(())
}

/// Removes records after `lsn` from `segments` on disk. Returns how many segments remain, a
/// writer for the new tail, and its length.
fn cut_suffix(dir: &Path, segments: &[Segment], lsn: Lsn) -> Result<(usize, Writer, u64)> {
    // The segment that holds `lsn + 1`: the last whose first LSN is at most that. If `lsn + 1`
    // starts a segment (and it is not the first), the previous one becomes the tail whole.
    let mut keep = segments.partition_point(|s| s.header.first_lsn <= lsn + 1);
    if keep > 1 && segments[keep - 1].header.first_lsn == lsn + 1 {
        keep -= 1;
    }
    let keep = keep.max(1);
    for segment in segments[keep..].iter().rev() {
        std::fs::remove_file(&segment.path)
            .map_err(|e| Error::io("remove segment", &segment.path, e))?;
    }
    strata_fs::sync_dir(dir)?;
    let tail = &segments[keep - 1];
    let bytes = read_file(&tail.path)?;
    let mut cut_at = SEGMENT_HEADER_BYTES as u64;
    for record in RecordScanner::new(&bytes, tail.header, u32::MAX) {
        match record {
            Ok(record) if record.lsn <= lsn => {
                cut_at = record.offset + (RECORD_HEADER_BYTES + record.payload.len()) as u64;
            }
            Ok(_) => break,
            Err((offset, damage)) => {
                return Err(Error::Corruption {
                    segment: tail.path.clone(),
                    offset,
                    reason: damage.describe(),
                });
            }
        }
    }
    let file = OpenOptions::new()
        .append(true)
        .open(&tail.path)
        .map_err(|e| Error::io("open segment", &tail.path, e))?;
    file.set_len(cut_at)
        .map_err(|e| Error::io("truncate", &tail.path, e))?;
    file.sync_all()
        .map_err(|e| Error::io("fsync", &tail.path, e))?;
    Ok((
        keep,
        Writer {
            file,
            path: tail.path.clone(),
            header: tail.header,
        },
        cut_at,
    ))
}

/// The name of the lock file in a log's directory.
const LOCK_FILE_NAME: &str = "LOCK";

/// Creates and locks `DIR/LOCK` for the life of the log.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open lock file", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}

fn spawn_interval_syncer(
    dir: &Path,
    inner: std::sync::Weak<Inner>,
    interval: Duration,
) -> Result<()> {
    let spawned = std::thread::Builder::new()
        .name("strata-wal-sync".into())
        .spawn(move || {
            loop {
                // A timer, not a wait for a condition. Ticking at half the interval keeps the
                // promise when a tick finds a leader busy and has to skip.
                std::thread::sleep(interval / 2);
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let wal = Wal { inner };
                let mut state = wal.inner.state.lock();
                if state.poisoned.is_some() {
                    return;
                }
                if state.written_lsn > state.durable_lsn && state.writer.is_some() {
                    let _ = wal.lead(&mut state, true, None);
                }
            }
        });
    // Without the thread the interval promise could not be kept: fail the open instead.
    spawned
        .map(|_| ())
        .map_err(|e| Error::io("start the interval sync thread for", dir, e))
}

/// An iterator over records from some LSN on, as [`Wal::read_from`] returns it.
///
/// Reads one whole segment at a time (bounded by the segment size plus one record).
#[derive(Debug)]
pub struct WalReader {
    segments: Vec<Segment>,
    next_segment: usize,
    /// The segment being read, once loaded.
    current: Option<Vec<u8>>,
    /// Where the next record starts in `current`, and the LSN it must have.
    offset: u64,
    scan_lsn: Lsn,
    /// The first LSN to return, and the last that was written when the reader was made.
    next_lsn: Lsn,
    end_lsn: Lsn,
}

impl Iterator for WalReader {
    type Item = Result<(Lsn, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.next_lsn > self.end_lsn {
                return None;
            }
            let segment = self.segments.get(self.next_segment)?;
            let header = segment.header;
            if self.current.is_none() {
                match read_file(&segment.path) {
                    Ok(bytes) => self.current = Some(bytes),
                    Err(e) => return Some(Err(e)),
                }
                self.offset = SEGMENT_HEADER_BYTES as u64;
                self.scan_lsn = header.first_lsn;
            }
            let bytes = self.current.as_deref().unwrap_or_default();
            let mut scanner =
                RecordScanner::resume(bytes, header, self.scan_lsn, self.offset, u32::MAX);
            match scanner.next() {
                None => {
                    self.next_segment += 1;
                    self.current = None;
                }
                Some(Ok(record)) => {
                    self.offset = scanner.offset();
                    self.scan_lsn = record.lsn + 1;
                    if record.lsn >= self.next_lsn {
                        self.next_lsn = record.lsn + 1;
                        return Some(Ok((record.lsn, record.payload.to_vec())));
                    }
                }
                // A write still in flight when the reader was made ends the tail: not damage.
                Some(Err(_)) if self.scan_lsn > self.end_lsn => return None,
                Some(Err((offset, damage))) => {
                    return Some(Err(Error::Corruption {
                        segment: segment.path.clone(),
                        offset,
                        reason: damage.describe(),
                    }));
                }
            }
        }
    }
}
