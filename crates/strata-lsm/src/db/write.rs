//! The write path: batches are checked, queued and committed in groups (one WAL write and at
//! most one `fdatasync` per group), then inserted into the active memtable and made visible at
//! once. Making room switches full memtables out and applies backpressure.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use strata_sstable::KEY_BYTES_MAX;

use super::stats::bump;
use super::{Db, Inner, MemtableHandle, State, WriteOptions, batch_bytes_max, batch_memory_bytes};
use crate::batch::{Logged, WriteBatch};
use crate::error::{Error, Result};
use crate::keys::{INTERNAL_KEY_OVERHEAD_BYTES, escaped_len};

/// At most this many queued batches are committed together.
const GROUP_BATCHES_MAX: usize = 256;

/// How long a group is delayed once level 0 reaches the slowdown trigger: enough to hand the
/// compaction thread the CPU, little enough that one write barely notices.
const SLOWDOWN_DELAY: Duration = Duration::from_millis(1);

/// A batch waiting in the write queue.
#[derive(Debug)]
pub(super) struct Pending {
    batch: Mutex<Option<WriteBatch>>,
    sync: bool,
    /// Set by the leader that committed it: the batch's last sequence number, or the failure.
    result: Mutex<Option<std::result::Result<u64, String>>>,
}

/// The committing leader's buffers, kept between commits so that a commit allocates nothing.
#[derive(Debug, Default)]
pub(super) struct WriteScratch {
    group: Vec<Arc<Pending>>,
    batches: Vec<Logged>,
    last_seqs: Vec<u64>,
}

impl Db {
    /// The most one [`WriteBatch`] may hold, as [`write`](Self::write) counts it (see
    /// [`Db::batch_bytes`]): a quarter of
    /// [`Options::memtable_bytes`](crate::Options::memtable_bytes). A larger batch is refused
    /// with [`Error::BatchTooLarge`](crate::Error::BatchTooLarge); a caller with more splits
    /// it.
    pub fn batch_bytes_max(&self) -> usize {
        batch_bytes_max(&self.inner.options)
    }

    /// What `batch` counts for against [`batch_bytes_max`](Self::batch_bytes_max): its keys and
    /// values plus an estimate of each operation's memtable overhead.
    pub fn batch_bytes(batch: &WriteBatch) -> usize {
        batch_memory_bytes(batch)
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn put(&self, key: &[u8], value: &[u8], options: WriteOptions) -> Result<u64> {
        let mut batch = WriteBatch::with_capacity(key.len() + value.len());
        batch.put(key, value);
        self.write(batch, options)
    }

    /// Deletes `key`.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn delete(&self, key: &[u8], options: WriteOptions) -> Result<u64> {
        let mut batch = WriteBatch::with_capacity(key.len());
        batch.delete(key);
        self.write(batch, options)
    }

    /// Applies `batch` atomically: readers see all of it or none of it, and after a crash it
    /// is all there or all gone. Returns the sequence number of its last operation.
    ///
    /// # Errors
    ///
    /// A WAL error (a failed fsync makes the store refuse further writes), or an earlier
    /// background flush failure. A batch committed by another writer's group reports that
    /// group's failure as [`Error::WriteFailed`]. Without a WAL (`Options::wal`), a `sync`
    /// write flushes the memtable, and reports the flush's error.
    pub fn write(&self, batch: WriteBatch, options: WriteOptions) -> Result<u64> {
        let seq = self.commit(batch, options)?;
        if options.sync && !self.inner.options.wal {
            self.flush()?;
        }
        Ok(seq)
    }

    /// [`write`](Self::write) up to the point where the batch is visible (and, with a WAL,
    /// logged, and synced if asked).
    fn commit(&self, batch: WriteBatch, options: WriteOptions) -> Result<u64> {
        self.inner.writable()?;
        if batch.is_empty() {
            return Ok(self.inner.state.lock().last_seq);
        }
        // Refuse what could not be stored before it reaches the WAL: once logged, a write
        // must never fail.
        if batch.escaped_key_max() + INTERNAL_KEY_OVERHEAD_BYTES > KEY_BYTES_MAX {
            let too_large =
                |key: &&[u8]| escaped_len(key) + INTERNAL_KEY_OVERHEAD_BYTES > KEY_BYTES_MAX;
            let len = batch
                .ops()
                .map(|(_, key, _)| key)
                .find(too_large)
                .map_or(0, <[u8]>::len);
            return Err(Error::KeyTooLarge { len });
        }
        let bytes = batch_memory_bytes(&batch);
        let max = batch_bytes_max(&self.inner.options);
        if bytes > max {
            return Err(Error::BatchTooLarge { bytes, max });
        }
        let mut queue = self.inner.queue.lock();
        // Alone: nobody queued and nobody committing. Commit directly, without queueing; a
        // writer arriving meanwhile queues and leads the next group.
        if queue.is_empty()
            && let Some(mut scratch) = self.inner.write_lock.try_lock()
        {
            drop(queue);
            let scratch = &mut *scratch;
            scratch.batches.clear();
            scratch.batches.push(Logged(batch));
            let committed = self.inner.commit_batches(
                &mut scratch.batches,
                &mut scratch.last_seqs,
                options.sync,
            );
            scratch.batches.clear();
            return committed.map(|()| scratch.last_seqs[0]);
        }
        let pending = Arc::new(Pending {
            batch: Mutex::new(Some(batch)),
            sync: options.sync,
            result: Mutex::new(None),
        });
        queue.push_back(Arc::clone(&pending));
        // Group commit: the writer at the front leads, committing every batch queued behind
        // it with one WAL write and at most one fdatasync; the others wait for their result.
        loop {
            if let Some(result) = pending.result.lock().take() {
                return result.map_err(|cause| Error::WriteFailed { cause });
            }
            if queue
                .front()
                .is_some_and(|front| Arc::ptr_eq(front, &pending))
            {
                break;
            }
            self.inner.queue_changed.wait(&mut queue);
        }
        // Only the leader pops the queue: it stays at the front while it waits for the write
        // lock (not held across that wait, so that writers keep queueing).
        drop(queue);
        let mut scratch = self.inner.write_lock.lock();
        let scratch = &mut *scratch;
        {
            // The group is capped by count and by memory, so that it always fits the memtable
            // `make_room` gives it.
            let queue = self.inner.queue.lock();
            let mut group_bytes = 0usize;
            scratch.group.clear();
            scratch.group.extend(
                queue
                    .iter()
                    .take(GROUP_BATCHES_MAX)
                    .take_while(|p| {
                        let bytes = p.batch.lock().as_ref().map_or(0, batch_memory_bytes);
                        let fits = group_bytes == 0
                            || group_bytes + bytes <= batch_bytes_max(&self.inner.options);
                        group_bytes += bytes;
                        fits
                    })
                    .cloned(),
            );
        }
        let committed = self.inner.commit_group(scratch);
        let mut queue = self.inner.queue.lock();
        let own = match committed {
            Ok(()) => {
                // Every batch of the group has its sequence number.
                debug_assert_eq!(scratch.last_seqs.len(), scratch.group.len());
                for (p, last) in scratch.group.iter().zip(&scratch.last_seqs).skip(1) {
                    *p.result.lock() = Some(Ok(*last));
                }
                Ok(scratch.last_seqs[0])
            }
            Err(e) => {
                let cause = strata_fs::display_chain(&e);
                for p in scratch.group.iter().skip(1) {
                    *p.result.lock() = Some(Err(cause.clone()));
                }
                Err(e)
            }
        };
        for _ in 0..scratch.group.len() {
            queue.pop_front();
        }
        scratch.group.clear();
        self.inner.queue_changed.notify_all();
        own
    }
}

impl Inner {
    /// Commits the group of queued batches in `scratch` (whose holder holds the write lock):
    /// sequence numbers in order, one WAL write, one `fdatasync` if any of them asked for it,
    /// then the memtable, then visibility. Leaves each batch's last sequence number in
    /// `scratch.last_seqs`.
    fn commit_group(&self, scratch: &mut WriteScratch) -> Result<()> {
        let WriteScratch {
            group,
            batches,
            last_seqs,
        } = scratch;
        batches.clear();
        for p in group.iter() {
            batches.push(Logged(
                p.batch
                    .lock()
                    .take()
                    .expect("a queued batch is committed by one leader, once"),
            ));
        }
        let sync = group.iter().any(|p| p.sync);
        let committed = self.commit_batches(batches, last_seqs, sync);
        // The batches' buffers go now, on failure too, not at the next commit.
        batches.clear();
        committed
    }

    /// Commits `batches` (the caller holds the write lock), leaving each one's last sequence
    /// number in `last_seqs`; see [`commit_group`](Self::commit_group).
    fn commit_batches(
        &self,
        batches: &mut [Logged],
        last_seqs: &mut Vec<u64>,
        sync: bool,
    ) -> Result<()> {
        last_seqs.clear();
        let needed: usize = batches.iter().map(|b| batch_memory_bytes(&b.0)).sum();
        // A write group fits a memtable: it is within the group limit...
        debug_assert!(needed <= batch_bytes_max(&self.options));
        let active = self.make_room(needed)?;
        // ...and within what `make_room` let into this memtable (only this leader inserts).
        debug_assert!(
            active.table.is_empty()
                || active.table.approximate_bytes() + needed <= self.options.memtable_bytes
        );
        let first_seq = self.state.lock().last_seq + 1;
        let mut next_seq = first_seq;
        for Logged(batch) in batches.iter_mut() {
            batch.set_first_seq(next_seq);
            next_seq += batch.len() as u64;
            last_seqs.push(next_seq - 1);
        }
        // Without a WAL the group goes to the memtable alone (`Options::wal`).
        let lsns = if self.options.wal {
            Some(self.wal()?.append_batch(batches)?)
        } else {
            None
        };
        let user_bytes: usize = batches.iter().map(|b| b.0.data_bytes()).sum();
        bump(&self.counters.user_bytes, user_bytes as u64);
        // From here the group is in the WAL (if there is one): any failure would leave memory
        // and log disagreeing, so it makes the store read-only (a reopen replays the log).
        let applied = (|| {
            if sync && self.options.wal {
                self.wal()?.sync()?;
            }
            for Logged(batch) in batches.iter() {
                let first_seq = batch.first_seq();
                for (i, op) in batch.ops().enumerate() {
                    active.insert(op.0, first_seq + i as u64, op.1, op.2)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = applied {
            self.fail(&e);
            return Err(e);
        }
        if let Some(lsns) = lsns {
            active.wal_lsn_max.store(*lsns.end(), Ordering::Release);
        }
        // Visible only now, all at once: readers never see part of a batch.
        let mut state = self.state.lock();
        // Sequence numbers only grow: the group starts right after the last one assigned, which
        // nobody moved while this leader held the write lock.
        debug_assert_eq!(state.last_seq + 1, first_seq);
        state.last_seq = next_seq - 1;
        Ok(())
    }

    /// Returns the memtable to write into, switching to a new one when the active one is
    /// full. Backpressure happens here, with the write lock held so that every writer feels
    /// it: a group is delayed by a millisecond once level 0 reaches the slowdown trigger, and
    /// waits while level 0 is at the stop trigger or too many memtables wait for a flush.
    fn make_room(&self, needed: usize) -> Result<Arc<MemtableHandle>> {
        let mut state = self.state.lock();
        let mut slowed = false;
        let mut stalled_since: Option<std::time::Instant> = None;
        let room = loop {
            if let Some(cause) = &state.background_error {
                return Err(Error::ReadOnly {
                    cause: cause.clone(),
                });
            }
            let l0 = state.version.levels[0].len();
            let compaction = &self.options.compaction;
            if l0 >= compaction.l0_stop_trigger && !state.closing {
                if stalled_since.is_none() {
                    bump(&self.counters.stops, 1);
                    stalled_since = Some(std::time::Instant::now());
                }
                self.changed.wait(&mut state);
                continue;
            }
            if l0 >= compaction.l0_slowdown_trigger && !slowed && stalled_since.is_none() {
                slowed = true;
                bump(&self.counters.slowdowns, 1);
                let start = std::time::Instant::now();
                // Not a wait for a condition: a deliberate delay that hands the compaction
                // thread time (and, on a small machine, the CPU) before writes must stop.
                parking_lot::MutexGuard::unlocked(&mut state, || {
                    std::thread::sleep(SLOWDOWN_DELAY);
                });
                bump(&self.counters.stall_micros, micros(start));
                continue;
            }
            let used = state.active.table.approximate_bytes();
            if used + needed <= self.options.memtable_bytes || state.active.table.is_empty() {
                break Arc::clone(&state.active);
            }
            if state.immutables.len() >= self.options.immutable_memtables_max {
                if stalled_since.is_none() {
                    bump(&self.counters.stops, 1);
                    stalled_since = Some(std::time::Instant::now());
                }
                self.changed.wait(&mut state);
                continue;
            }
            self.rotate(&mut state);
        };
        if let Some(since) = stalled_since {
            bump(&self.counters.stall_micros, micros(since));
        }
        Ok(room)
    }

    pub(super) fn rotate(&self, state: &mut State) {
        state.active.table.freeze();
        let full = std::mem::replace(
            &mut state.active,
            Arc::new(MemtableHandle::new(&self.options)),
        );
        state.immutables.insert(0, full);
        self.changed.notify_all();
    }
}

fn micros(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}
