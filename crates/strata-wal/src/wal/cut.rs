//! Removing records: whole segments below a watermark (`purge_before`) and a durable suffix
//! cut (`truncate_after`).

use std::path::Path;

use parking_lot::MutexGuard;

use super::wait::wake_waiters;
use super::{State, TailPlan, Wal, Writer};
use crate::error::{Error, Result};
use crate::format::{Lsn, RecordScanner, SEGMENT_HEADER_BYTES};
use crate::recovery::{Segment, read_file};

impl Wal {
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
        let mapped = self.inner.options.mapped_tail;
        let segments = state.segments.clone();
        let dir = self.inner.dir.clone();
        let outcome = MutexGuard::unlocked(&mut state, || {
            drop(writer);
            cut_suffix(&dir, &segments, lsn, mapped)
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
                // The one step that lowers the durable LSN: a cut lowers the written LSN with it.
                state.durable_lsn = lsn;
                state.debug_assert_watermarks();
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
}

/// Removes records after `lsn` from `segments` on disk. Returns how many segments remain, a
/// writer for the new tail, and its length.
fn cut_suffix(
    dir: &Path,
    segments: &[Segment],
    lsn: Lsn,
    mapped: bool,
) -> Result<(usize, Writer, u64)> {
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
                cut_at = record.end;
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
    let writer = Writer::open(&tail.path, tail.header, cut_at, mapped)?;
    strata_fs::truncate_synced(&writer.file, &tail.path, cut_at)?;
    Ok((keep, writer, cut_at))
}
