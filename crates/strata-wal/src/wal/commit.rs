//! The group commit: appends get consecutive LSNs and are queued under the state lock; one
//! thread at a time leads, writing everything queued with one `write` and one `fdatasync`, and
//! wakes those it finished.

use std::ops::RangeInclusive;
use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::wait::{Waiter, wake_waiters};
use super::write::write_chunks;
use super::{Chunk, Inner, State, TailPlan, Wal, new_salt};
use crate::error::{Error, Result};
use crate::format::{
    FORMAT_VERSION, Lsn, PAYLOAD_CRC_AHEAD_BYTES_MIN, PayloadCrc, RecordHeader,
    SEGMENT_HEADER_BYTES, SegmentHeader, payload_crc, record_header,
};
use crate::options::Durability;

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

impl Wal {
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
        // lock; only the header's is added under it. (Small payloads are checksummed
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
    fn assign(&self, state: &mut State, payload_len: usize, crc: &PayloadCrc<'_>) -> RecordHeader {
        let lsn = state.next_lsn;
        let len = u32::try_from(payload_len).expect("record length was checked against the limit");
        let mut header = record_header(&state.tail.header, lsn, state.durable_lsn, len, crc);
        if state.tail.has_records
            && state.tail.projected_bytes + (header.len() + payload_len) as u64
                > self.inner.options.segment_bytes_max
        {
            let segment = SegmentHeader {
                salt: new_salt(),
                first_lsn: lsn,
                version: FORMAT_VERSION,
            };
            let bytes = state.spare_buffers.pop().unwrap_or_default();
            state.queue.push(Chunk {
                new_segment: Some(segment),
                bytes,
                last_lsn: lsn - 1,
                records: 0,
            });
            state.tail = TailPlan {
                header: segment,
                projected_bytes: SEGMENT_HEADER_BYTES as u64,
                has_records: false,
            };
            // The record is framed as its (new) segment's format says, and its checksum
            // covers that segment's salt.
            header = record_header(&segment, lsn, state.durable_lsn, len, crc);
        }
        state.tail.projected_bytes += (header.len() + payload_len) as u64;
        state.tail.has_records = true;
        state.next_lsn += 1;
        header
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
        // LSNs are handed out consecutively: a record follows the last one of its chunk.
        debug_assert_eq!(chunk.last_lsn + 1, lsn, "a queued LSN skips or repeats");
        chunk.bytes.extend_from_slice(header.as_bytes());
        chunk.bytes.extend_from_slice(payload);
        chunk.last_lsn = lsn;
        chunk.records += 1;
    }

    /// Waits until `lsn` is written (and synced, if `durable`), leading a write itself when no
    /// other thread is: the group commit.
    pub(super) fn wait_for(
        &self,
        state: &mut MutexGuard<'_, State>,
        lsn: Lsn,
        durable: bool,
    ) -> Result<()> {
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
                // A wake-up for a record a `truncate_after` cut (done, and so taken off the
                // list) can find the log grown past it again before this thread runs: then it
                // waits for the record that took the LSN, and must be on the list to be woken.
                if registered.is_some_and(|id| !state.waiters.iter().any(|w| w.id == id)) {
                    registered = None;
                }
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
    pub(super) fn lead(
        &self,
        state: &mut MutexGuard<'_, State>,
        force_sync: bool,
        direct: Option<(&RecordHeader, &[u8], Lsn)>,
    ) -> Result<()> {
        if direct.is_none() && state.waiters.len() > 1 {
            // Writers just woken by the last round are about to queue their next records: let
            // them, so this round's one fsync covers them too.
            MutexGuard::unlocked(state, std::thread::yield_now);
        }
        // Another leader may have failed since the caller last looked (while the lock was
        // released for the yield above, or for the unparks of the caller's previous round).
        // Writing and syncing what is queued now could report success for records the failed
        // write or fsync covered.
        if let Some(cause) = &state.poisoned {
            return Err(Error::Poisoned {
                cause: cause.clone(),
            });
        }
        let Some(mut writer) = state.writer.take() else {
            return Ok(());
        };
        let chunks = std::mem::take(&mut state.queue);
        // LSNs are written consecutively: a round starts right after the last record written,
        // and a direct record follows the queued ones.
        debug_assert!(
            chunks
                .first()
                .is_none_or(|c| c.last_lsn + 1 - c.records == state.written_lsn + 1),
            "a commit round does not start after the last written LSN {}",
            state.written_lsn
        );
        debug_assert!(
            direct.is_none_or(|(_, _, lsn)| {
                lsn == chunks.last().map_or(state.written_lsn, |c| c.last_lsn) + 1
            }),
            "a direct record does not follow the queued ones"
        );
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
        let direct = direct.map(|(header, payload, _)| (header.as_bytes(), payload));
        let pending_unsynced = state.unsynced_records;
        // Borrowed, not cloned: this runs once per commit round.
        let dir: &Path = &self.inner.dir;
        let counters = &self.inner.counters;
        let outcome = MutexGuard::unlocked(state, || {
            write_chunks(
                dir,
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
                    // The durable LSN never goes backwards: a sync covers all that was written.
                    debug_assert!(state.written_lsn >= state.durable_lsn);
                    state.durable_lsn = state.written_lsn;
                    state.unsynced_records = 0;
                    state.last_sync = Instant::now();
                }
                state.debug_assert_watermarks();
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
}

pub(super) fn spawn_interval_syncer(
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
