//! The core's view of the log: what storage holds, plus entries not yet persisted.

use strata_raft_log::Entry;

use crate::storage::Storage;

/// Storage's entries, overlaid by `unstable` (entries from `unstable_offset` on, not yet
/// handed to the driver or not yet persisted by it). An unstable suffix may replace storage's
/// tail (a leader overwrote it); storage catches up when the driver persists it.
#[derive(Debug)]
pub(crate) struct LogView<S: Storage> {
    pub storage: S,
    pub unstable: Vec<Entry>,
    pub unstable_offset: u64,
    /// How many of `unstable` were already handed out in a `Ready`.
    pub handed_out: usize,
    pub committed: u64,
    /// The last index handed out for applying.
    pub applied: u64,
    /// A snapshot installed since the start, (index, term): entries up to it are covered by
    /// it (storage may not have caught up yet: the driver makes it start there when it
    /// persists the `Ready` that carries the snapshot).
    pub installed: Option<(u64, u64)>,
}

impl<S: Storage> LogView<S> {
    pub fn new(storage: S, committed: u64) -> Self {
        let last = storage.last_index();
        let first = storage.first_index();
        Self {
            storage,
            unstable: Vec::new(),
            unstable_offset: last + 1,
            handed_out: 0,
            committed: committed.min(last),
            applied: first - 1,
            installed: None,
        }
    }

    pub fn last_index(&self) -> u64 {
        if self.unstable.is_empty() {
            let stored = self.storage.last_index().min(self.unstable_offset - 1);
            self.installed
                .map_or(stored, |(index, _)| stored.max(index))
        } else {
            self.unstable_offset + self.unstable.len() as u64 - 1
        }
    }

    pub fn term(&self, index: u64) -> Option<u64> {
        if index >= self.unstable_offset {
            let at = usize::try_from(index - self.unstable_offset).ok()?;
            return self.unstable.get(at).map(|e| e.term);
        }
        // (Until storage is compacted past it.)
        if let Some((at, term)) = self.installed
            && at >= self.storage.first_index().saturating_sub(1)
        {
            if index == at {
                return Some(term);
            }
            if index < at {
                return None;
            }
        }
        self.storage.term(index)
    }

    /// Installs a snapshot ending at (`index`, `term`), past the commit index: entries after
    /// it are kept only if the log holds `index` with `term` (Raft's Figure 13, rule 7);
    /// otherwise the log ends at the snapshot.
    pub fn restore(&mut self, index: u64, term: u64) {
        // The commit index never goes down: a snapshot is installed only past it.
        debug_assert!(
            index > self.committed,
            "snapshot at {index} below the commit index {}",
            self.committed
        );
        let keep = self.term(index) == Some(term);
        if keep && index >= self.unstable_offset {
            let n = usize::try_from(index + 1 - self.unstable_offset).unwrap_or(usize::MAX);
            let n = n.min(self.unstable.len());
            self.unstable.drain(..n);
            self.handed_out = self.handed_out.saturating_sub(n);
            self.unstable_offset = index + 1;
        } else if !keep {
            self.unstable.clear();
            self.handed_out = 0;
            self.unstable_offset = index + 1;
        }
        self.installed = Some((index, term));
        self.committed = index;
        self.applied = index;
    }

    pub fn last_term(&self) -> u64 {
        self.term(self.last_index()).unwrap_or(0)
    }

    /// Is a log ending at (`index`, `term`) at least as up to date as this one (Raft §5.4.1)?
    pub fn is_up_to_date(&self, index: u64, term: u64) -> bool {
        let last_term = self.last_term();
        term > last_term || (term == last_term && index >= self.last_index())
    }

    pub fn matches(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// Entries `lo..hi`, at most about `bytes_max` (at least one).
    pub fn entries(&self, lo: u64, hi: u64, bytes_max: usize) -> Result<Vec<Entry>, String> {
        let mut out = Vec::new();
        if lo < self.unstable_offset {
            let stable_hi = hi.min(self.unstable_offset);
            out = self.storage.entries(lo, stable_hi, bytes_max)?;
            if (out.len() as u64) < stable_hi - lo {
                return Ok(out);
            }
        }
        let mut bytes: usize = out.iter().map(Entry::size).sum();
        let from = lo.max(self.unstable_offset);
        for index in from..hi {
            let Some(e) = usize::try_from(index - self.unstable_offset)
                .ok()
                .and_then(|at| self.unstable.get(at))
            else {
                break;
            };
            if bytes > bytes_max && !out.is_empty() {
                break;
            }
            bytes += e.size();
            out.push(e.clone());
        }
        Ok(out)
    }

    /// Appends entries after `self.last_index()` or overwriting a suffix from
    /// `entries[0].index` (which must be > committed).
    pub fn append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else {
            return;
        };
        let at = first.index;
        // Appends are contiguous: right after the log, or over a suffix above the commit index.
        debug_assert!(
            at <= self.last_index() + 1 && at > self.committed,
            "append at {at}: last index {}, commit index {}",
            self.last_index(),
            self.committed
        );
        // An appended batch has consecutive indexes and non-decreasing terms (from the entry
        // before it on).
        debug_assert!(
            self.term(at - 1).is_none_or(|before| before <= first.term)
                && entries
                    .windows(2)
                    .all(|w| w[1].index == w[0].index + 1 && w[1].term >= w[0].term),
            "append at {at}: indexes not consecutive or terms decreasing"
        );
        if at >= self.unstable_offset {
            // After storage: extend or overwrite part of the unstable suffix.
            let keep = usize::try_from(at - self.unstable_offset).unwrap_or(usize::MAX);
            self.unstable.truncate(keep);
            self.handed_out = self.handed_out.min(keep);
            self.unstable.extend(entries);
        } else {
            // Replacing storage's tail: the driver's append will cut it.
            self.unstable_offset = at;
            self.unstable = entries;
            self.handed_out = 0;
        }
    }

    /// The index of the first entry of `entries` that this log does not hold with the same
    /// term (`None`: all held).
    pub fn find_conflict(&self, entries: &[Entry]) -> Option<usize> {
        entries.iter().position(|e| !self.matches(e.index, e.term))
    }

    /// The largest index at or before `index` whose term is at most `term` (for the fast
    /// back-off of rejected appends).
    pub fn find_conflict_by_term(&self, index: u64, term: u64) -> u64 {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term => {
                    if i == 0 {
                        return 0;
                    }
                    i -= 1;
                }
                _ => return i,
            }
        }
    }

    /// Entries not yet handed to the driver.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let out = self.unstable[self.handed_out..].to_vec();
        self.handed_out = self.unstable.len();
        out
    }

    /// The driver persisted everything up to `index` (whose term is `term`).
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if index < self.unstable_offset || self.term(index) != Some(term) {
            return;
        }
        let n = usize::try_from(index + 1 - self.unstable_offset).unwrap_or(usize::MAX);
        let n = n.min(self.unstable.len());
        self.unstable.drain(..n);
        self.handed_out = self.handed_out.saturating_sub(n);
        self.unstable_offset += n as u64;
    }

    /// The last index that is persisted (in storage and not overridden by unstable entries).
    pub fn persisted_last(&self) -> u64 {
        self.storage.last_index().min(self.unstable_offset - 1)
    }

    pub fn commit_to(&mut self, index: u64) -> bool {
        let index = index.min(self.last_index());
        if index > self.committed {
            self.committed = index;
            true
        } else {
            false
        }
    }
}
