//! What the core reads of the durable log, and an in-memory implementation for tests and the
//! simulator.

use strata_raft_log::{Entry, RaftLog};

/// The durable log as the core reads it. Writes go through the [`Ready`](crate::Ready) the
/// driver persists; the core never writes.
pub trait Storage {
    /// The first index still in the log (one past the compaction point).
    fn first_index(&self) -> u64;
    /// The last index in the log (the compaction point if empty).
    fn last_index(&self) -> u64;
    /// The term at `index`, for the compaction point and every entry after it.
    fn term(&self, index: u64) -> Option<u64>;
    /// Entries `lo..hi`, stopping once over `bytes_max` (at least one).
    ///
    /// # Errors
    ///
    /// A description of the failure (the core reports it as [`Error::Storage`](crate::Error)).
    fn entries(&self, lo: u64, hi: u64, bytes_max: usize) -> Result<Vec<Entry>, String>;
}

impl Storage for RaftLog {
    fn first_index(&self) -> u64 {
        RaftLog::first_index(self)
    }

    fn last_index(&self) -> u64 {
        RaftLog::last_index(self)
    }

    fn term(&self, index: u64) -> Option<u64> {
        RaftLog::term(self, index)
    }

    fn entries(&self, lo: u64, hi: u64, bytes_max: usize) -> Result<Vec<Entry>, String> {
        RaftLog::entries(self, lo, hi, bytes_max).map_err(|e| e.to_string())
    }
}

/// A log in memory: what the simulator's nodes persist to (a crash keeps exactly it).
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    /// Entries after the compaction point, in order.
    pub entries: Vec<Entry>,
    /// Index and term of the compaction point.
    pub compacted: (u64, u64),
}

impl MemStorage {
    /// Appends `entries`, first removing any suffix they overwrite (as
    /// [`RaftLog::append`] does). Entries at or below the compaction point are skipped.
    pub fn append(&mut self, entries: &[Entry]) {
        let skip = entries
            .iter()
            .take_while(|e| e.index <= self.compacted.0)
            .count();
        let entries = &entries[skip..];
        let Some(first) = entries.first() else {
            return;
        };
        let keep = first.index.saturating_sub(self.compacted.0 + 1);
        self.entries
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
        self.entries.extend_from_slice(entries);
    }
}

impl MemStorage {
    /// Compacts the log up to (`index`, `term`), as [`RaftLog::compact`] does: entries up to
    /// it go; the entries after it stay only if the log holds `index` with `term`.
    pub fn compact(&mut self, index: u64, term: u64) {
        if index <= self.compacted.0 {
            return;
        }
        if self.term(index) == Some(term) {
            let drop = usize::try_from(index - self.compacted.0).unwrap_or(usize::MAX);
            self.entries.drain(..drop.min(self.entries.len()));
        } else {
            self.entries.clear();
        }
        self.compacted = (index, term);
    }
}

impl Storage for MemStorage {
    fn first_index(&self) -> u64 {
        self.compacted.0 + 1
    }

    fn last_index(&self) -> u64 {
        self.compacted.0 + self.entries.len() as u64
    }

    fn term(&self, index: u64) -> Option<u64> {
        if index == self.compacted.0 {
            return Some(self.compacted.1);
        }
        let at = index.checked_sub(self.compacted.0 + 1)?;
        self.entries.get(usize::try_from(at).ok()?).map(|e| e.term)
    }

    fn entries(&self, lo: u64, hi: u64, bytes_max: usize) -> Result<Vec<Entry>, String> {
        if lo <= self.compacted.0 || hi > self.last_index() + 1 || lo > hi {
            return Err(format!("entries {lo}..{hi} are not in the log"));
        }
        let from = usize::try_from(lo - self.compacted.0 - 1).map_err(|e| e.to_string())?;
        let to = usize::try_from(hi - self.compacted.0 - 1).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &self.entries[from..to] {
            if bytes > bytes_max && !out.is_empty() {
                break;
            }
            bytes += e.size();
            out.push(e.clone());
        }
        Ok(out)
    }
}

impl<T: Storage + ?Sized> Storage for std::sync::Arc<T> {
    fn first_index(&self) -> u64 {
        (**self).first_index()
    }

    fn last_index(&self) -> u64 {
        (**self).last_index()
    }

    fn term(&self, index: u64) -> Option<u64> {
        (**self).term(index)
    }

    fn entries(&self, lo: u64, hi: u64, bytes_max: usize) -> Result<Vec<Entry>, String> {
        (**self).entries(lo, hi, bytes_max)
    }
}
