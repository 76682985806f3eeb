//! Compaction's second part: removing from the LSM the versions that the recorded compaction
//! ([`Batch::compact`](crate::Batch::compact)) made unreachable, in bounded steps beside the
//! writers, resumable after a crash.
//!
//! A step scans the data keyspace from a cursor, deletes what no read at the compacted revision
//! or later can see (for each key, every version older than its newest at or below the
//! compacted revision, and that one too if it is a deletion), and writes the deletions with the
//! new cursor in one LSM batch: a crash leaves the deletions and the cursor together or
//! neither. After the data keyspace, the revision keyspace up to the compacted revision goes
//! the same way; then `compacted_done` records the end. Writers only add versions above the
//! current revision, never touched here, and readers never read below the compacted revision,
//! so neither waits for a step.

use std::ops::Bound;

use strata_lsm::{Direction, WriteBatch, WriteOptions};

use crate::error::{Error, Result};
use crate::keys::{self, Revision};
use crate::store::{COMPACT_CURSOR, COMPACTED_DONE, Store};
use crate::view::TOMBSTONE;

/// Deletions one step of [`Store::compact_physical`] writes at most: one LSM batch of about
/// this many keys (each a data key, some tens of bytes), so a step holds the memtable's write
/// lock briefly and keeps this many keys in memory.
pub const COMPACTION_STEP_DELETES: usize = 10_000;

/// Entries a step visits at most per deletion allowed, so that a step over a keyspace with
/// little to remove still ends soon (a step visits `deletes_max * this` entries at most).
const VISITS_PER_DELETE: usize = 16;

/// Where a compaction is: the phase, and where in it to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    /// The compacted revision this cursor works towards.
    target: i64,
    phase: Phase,
    /// Data phase: whether the key `at` belongs to already met its newest version at or below
    /// the target.
    kept: bool,
    /// Data phase: that version, if it is a deletion (empty if not). It is deleted only with
    /// or after the key's last older version: until then it hides them from readers.
    tomb: Vec<u8>,
    /// The LSM key to resume at (included).
    at: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Data = 0,
    Revisions = 1,
}

impl Cursor {
    fn start(target: i64) -> Self {
        Self {
            target,
            phase: Phase::Data,
            kept: false,
            tomb: Vec::new(),
            at: vec![keys::DATA],
        }
    }

    /// `target` (i64 LE), phase (u8), kept (u8), the tombstone's length (u32 LE) and bytes,
    /// then the key to resume at (`docs/formats/mvcc.md`).
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + self.tomb.len() + self.at.len());
        out.extend_from_slice(&self.target.to_le_bytes());
        out.push(self.phase as u8);
        out.push(u8::from(self.kept));
        out.extend_from_slice(&(self.tomb.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.tomb);
        out.extend_from_slice(&self.at);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let bad = || Error::Corrupt("a compaction cursor that does not decode");
        if bytes.len() < 14 {
            return Err(bad());
        }
        let target = i64::from_le_bytes(bytes[..8].try_into().map_err(|_| bad())?);
        let phase = match bytes[8] {
            0 => Phase::Data,
            1 => Phase::Revisions,
            _ => return Err(bad()),
        };
        let kept = match bytes[9] {
            0 => false,
            1 => true,
            _ => return Err(bad()),
        };
        let tomb_bytes = u32::from_le_bytes(bytes[10..14].try_into().map_err(|_| bad())?) as usize;
        let tomb = bytes.get(14..14 + tomb_bytes).ok_or_else(bad)?.to_vec();
        Ok(Self {
            target,
            phase,
            kept,
            tomb,
            at: bytes[14 + tomb_bytes..].to_vec(),
        })
    }
}

impl Store {
    /// Removes from the LSM every version the recorded compaction made unreachable, in steps
    /// of [`COMPACTION_STEP_DELETES`] deletions; returns once [`compacted_done_revision`]
    /// reaches the compacted revision (at once if it already has). Resumes where a previous
    /// run, in this process or before a crash, stopped. Run it beside the apply path (on a
    /// blocking thread): it never waits for a batch, nor a batch for it, beyond one step.
    ///
    /// [`compacted_done_revision`]: Self::compacted_done_revision
    ///
    /// # Errors
    ///
    /// The LSM's; what is done stays done, and a later call resumes from there.
    pub fn compact_physical(&self) -> Result<()> {
        while !self.compact_physical_step(COMPACTION_STEP_DELETES)? {}
        Ok(())
    }

    /// One step of [`compact_physical`](Self::compact_physical): at most `deletes_max`
    /// deletions (and `deletes_max * 16` entries visited), written in one LSM batch with the
    /// cursor. Returns true when the compaction is finished (nothing pending).
    ///
    /// # Errors
    ///
    /// The LSM's; a stored cursor that does not decode.
    pub fn compact_physical_step(&self, deletes_max: usize) -> Result<bool> {
        let _step = self.compaction.lock();
        let deletes_max = deletes_max.max(1);
        let (state, snapshot) = self.read_state();
        let target = state.compacted;
        if target <= state.compacted_done {
            return Ok(true);
        }
        let cursor = match snapshot.get(&keys::meta_key(COMPACT_CURSOR))? {
            Some(bytes) => Cursor::decode(&bytes)?,
            None => Cursor::start(target),
        };
        // A cursor towards an older target restarts: compacting to the newer one subsumes it.
        let cursor = if cursor.target == target {
            cursor
        } else {
            Cursor::start(target)
        };
        let visits_max = deletes_max.saturating_mul(VISITS_PER_DELETE);
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        let mut visits = 0;
        let mut next: Option<Cursor> = None;
        let mut error = None;
        match cursor.phase {
            Phase::Data => {
                // The key at hand (on resuming, the cursor's: its progress is `kept`, `tomb`).
                let mut key: Option<Vec<u8>> = None;
                let mut kept = cursor.kept;
                let mut tomb = (!cursor.tomb.is_empty()).then(|| cursor.tomb.clone());
                snapshot.scan(
                    Bound::Included(&cursor.at[..]),
                    Bound::Excluded(&[keys::DATA + 1][..]),
                    Direction::Forward,
                    |k, v| {
                        let Some((user, at)) = keys::decode_data_key(k) else {
                            error = Some(Error::Corrupt("a data key that does not decode"));
                            return false;
                        };
                        let same = key.as_ref().is_none_or(|key| *key == user);
                        if !same {
                            // Every older version of the previous key is doomed: its
                            // deletion may go now.
                            doomed.extend(tomb.take());
                        }
                        if visits >= visits_max || doomed.len() >= deletes_max {
                            next = Some(Cursor {
                                target,
                                phase: Phase::Data,
                                kept: same && kept,
                                tomb: tomb.take().unwrap_or_default(),
                                at: k.to_vec(),
                            });
                            return false;
                        }
                        visits += 1;
                        if !same {
                            kept = false;
                        }
                        key = Some(user);
                        if at.main as i64 > target {
                            return true;
                        }
                        if kept {
                            doomed.push(k.to_vec());
                        } else {
                            kept = true;
                            if v.first() == Some(&TOMBSTONE) {
                                tomb = Some(k.to_vec());
                            }
                        }
                        true
                    },
                )?;
                if error.is_none() && next.is_none() {
                    doomed.extend(tomb.take());
                    // The data keyspace is done: the revision keyspace from what an earlier
                    // compaction left (it kept its target's own revision).
                    let from = state.compacted_done.max(0) as u64;
                    next = Some(Cursor {
                        target,
                        phase: Phase::Revisions,
                        kept: false,
                        tomb: Vec::new(),
                        at: keys::revision_key(Revision::new(from, 0)).to_vec(),
                    });
                }
            }
            Phase::Revisions => {
                // The compacted revision's own changes stay: a watcher may start at the
                // compacted revision (etcd's `compact_revision` is the first it may ask for),
                // and its deletions are known from the revision keyspace alone.
                let end = keys::revision_key(Revision::end_of((target - 1).max(0) as u64));
                snapshot.scan(
                    Bound::Included(&cursor.at[..]),
                    Bound::Included(&end[..]),
                    Direction::Forward,
                    |k, _| {
                        if doomed.len() >= deletes_max {
                            next = Some(Cursor {
                                at: k.to_vec(),
                                ..cursor.clone()
                            });
                            return false;
                        }
                        doomed.push(k.to_vec());
                        true
                    },
                )?;
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        let mut batch = WriteBatch::new();
        for k in &doomed {
            batch.delete(k);
        }
        let finished = next.is_none();
        match &next {
            Some(cursor) => batch.put(&keys::meta_key(COMPACT_CURSOR), &cursor.encode()),
            None => {
                batch.delete(&keys::meta_key(COMPACT_CURSOR));
                batch.put(&keys::meta_key(COMPACTED_DONE), &target.to_le_bytes());
            }
        }
        self.db().write(batch, WriteOptions { sync: false })?;
        if finished {
            self.set_compacted_done(target);
        }
        Ok(finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_decode_to_what_was_encoded() {
        let cursor = Cursor {
            target: 42,
            phase: Phase::Revisions,
            kept: true,
            tomb: vec![b'k', 1, 0, 0],
            at: vec![b'r', 0, 1],
        };
        assert_eq!(Cursor::decode(&cursor.encode()).expect("decode"), cursor);
        assert!(Cursor::decode(&[0; 13]).is_err());
        let mut bad = cursor.encode();
        bad[8] = 7;
        assert!(Cursor::decode(&bad).is_err());
    }
}
