//! Range scans: a merge of every memtable and table, newest visible version per key.

use std::cmp::Ordering;
use std::ops::Bound;

use strata_memtable::ValueKind;
use strata_sstable::TableIter;

use crate::error::{Error, Result};
use crate::keys::{parse_internal_key_into, seek_key};

/// Which way a scan goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Reverse,
}

/// A cursor over versions in scan order: for `Forward`, user key ascending and newest first;
/// for `Reverse`, user key descending and oldest first. The current version is borrowed from
/// the source (a memtable's arena, a table's block), so a scan copies nothing it skips.
pub(crate) trait Source {
    /// Moves to the next version (the first, on the first call); false once there is none.
    fn advance(&mut self) -> Result<bool>;
    /// The current version's user key. Only after `advance` returned true.
    fn user_key(&self) -> &[u8];
    /// The current version's sequence number.
    fn seq(&self) -> u64;
    /// The current version's kind.
    fn kind(&self) -> ValueKind;
    /// The current version's value.
    fn value(&self) -> &[u8];
}

pub(crate) struct MemtableSource<'a, I: Iterator<Item = strata_memtable::Entry<'a>>> {
    entries: I,
    current: Option<strata_memtable::Entry<'a>>,
}

impl<'a, I: Iterator<Item = strata_memtable::Entry<'a>>> MemtableSource<'a, I> {
    pub fn new(entries: I) -> Self {
        Self {
            entries,
            current: None,
        }
    }
}

impl<'a, I: Iterator<Item = strata_memtable::Entry<'a>>> Source for MemtableSource<'a, I> {
    fn advance(&mut self) -> Result<bool> {
        self.current = self.entries.next();
        Ok(self.current.is_some())
    }

    fn user_key(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |e| e.user_key)
    }

    fn seq(&self) -> u64 {
        self.current.as_ref().map_or(0, |e| e.seq)
    }

    fn kind(&self) -> ValueKind {
        self.current.as_ref().map_or(ValueKind::Delete, |e| e.kind)
    }

    fn value(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |e| e.value)
    }
}

pub(crate) struct TableSource<'a> {
    iter: TableIter<'a>,
    /// For errors.
    path: &'a std::path::Path,
    direction: Direction,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    started: bool,
    /// The current version's user key (unescaped into a reused buffer), sequence number and
    /// kind.
    user_key: Vec<u8>,
    seq: u64,
    kind: ValueKind,
}

impl<'a> TableSource<'a> {
    pub fn new(
        table: &'a strata_sstable::Table,
        direction: Direction,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> Self {
        Self {
            iter: table.iter(),
            path: table.path(),
            direction,
            lower,
            upper,
            started: false,
            user_key: Vec::new(),
            seq: 0,
            kind: ValueKind::Delete,
        }
    }

    fn start(&mut self) {
        match (self.direction, &self.lower, &self.upper) {
            (Direction::Forward, Bound::Included(k) | Bound::Excluded(k), _) => {
                self.iter.seek(&seek_key(k, crate::keys::SEQ_MAX));
            }
            (Direction::Forward, Bound::Unbounded, _) => self.iter.seek_to_first(),
            (Direction::Reverse, _, Bound::Unbounded) => self.iter.seek_to_last(),
            (Direction::Reverse, _, Bound::Included(k) | Bound::Excluded(k)) => {
                // Land just past every version of `k`, then step back.
                let mut past = k.clone();
                past.push(0);
                self.iter.seek(&seek_key(&past, crate::keys::SEQ_MAX));
                if self.iter.valid() {
                    self.iter.prev();
                } else if self.iter.status().is_none() {
                    self.iter.seek_to_last();
                }
            }
        }
    }
}

fn in_lower(k: &[u8], lower: &Bound<Vec<u8>>) -> bool {
    match lower {
        Bound::Unbounded => true,
        Bound::Included(l) => k >= &l[..],
        Bound::Excluded(l) => k > &l[..],
    }
}

fn in_upper(k: &[u8], upper: &Bound<Vec<u8>>) -> bool {
    match upper {
        Bound::Unbounded => true,
        Bound::Included(u) => k <= &u[..],
        Bound::Excluded(u) => k < &u[..],
    }
}

impl Source for TableSource<'_> {
    fn advance(&mut self) -> Result<bool> {
        loop {
            if self.started {
                match self.direction {
                    Direction::Forward => self.iter.advance(),
                    Direction::Reverse => self.iter.prev(),
                }
            } else {
                self.start();
                self.started = true;
            }
            if let Some(e) = self.iter.take_error() {
                return Err(e.into());
            }
            if !self.iter.valid() {
                return Ok(false);
            }
            let (seq, kind) = parse_internal_key_into(self.iter.key(), &mut self.user_key)
                .ok_or_else(|| Error::Corruption {
                    path: self.path.to_path_buf(),
                    offset: 0,
                    reason: "table key is not an internal key",
                })?;
            let (inside_lower, inside_upper) = (
                in_lower(&self.user_key, &self.lower),
                in_upper(&self.user_key, &self.upper),
            );
            match self.direction {
                Direction::Forward if !inside_upper => return Ok(false),
                Direction::Reverse if !inside_lower => return Ok(false),
                _ if !(inside_lower && inside_upper) => continue,
                _ => {}
            }
            self.seq = seq;
            self.kind = kind;
            return Ok(true);
        }
    }

    fn user_key(&self) -> &[u8] {
        &self.user_key
    }

    fn seq(&self) -> u64 {
        self.seq
    }

    fn kind(&self) -> ValueKind {
        self.kind
    }

    fn value(&self) -> &[u8] {
        self.iter.value_slice()
    }
}

/// A table of a level below 0, with its smallest and largest internal keys.
pub(crate) struct LevelTable<'a> {
    pub table: &'a strata_sstable::Table,
    pub smallest: &'a [u8],
    pub largest: &'a [u8],
}

/// One level below 0 as a single source: its tables are sorted and disjoint, so a scan reads
/// them one after another, opening (and seeking) only the tables the bounds reach, instead of
/// seeking in every table of the level.
pub(crate) struct LevelSource<'a> {
    tables: Vec<LevelTable<'a>>,
    direction: Direction,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    /// The first internal key of the lower bound's user key, and the last of the upper's.
    lower_key: Option<Vec<u8>>,
    upper_key: Option<Vec<u8>>,
    /// The table to open next, if any.
    next: Option<usize>,
    current: Option<TableSource<'a>>,
}

impl<'a> LevelSource<'a> {
    pub fn new(
        tables: Vec<LevelTable<'a>>,
        direction: Direction,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> Self {
        let lower_key = match &lower {
            Bound::Included(k) | Bound::Excluded(k) => Some(seek_key(k, crate::keys::SEQ_MAX)),
            Bound::Unbounded => None,
        };
        let upper_key = match &upper {
            Bound::Included(k) | Bound::Excluded(k) => {
                Some(crate::keys::internal_key(k, 0, ValueKind::Delete))
            }
            Bound::Unbounded => None,
        };
        let next = match direction {
            // The first table whose largest key reaches the lower bound.
            Direction::Forward => Some(match &lower_key {
                Some(low) => tables.partition_point(|t| t.largest < low.as_slice()),
                None => 0,
            }),
            // The last table whose smallest key is within the upper bound.
            Direction::Reverse => match &upper_key {
                Some(high) => tables
                    .partition_point(|t| t.smallest <= high.as_slice())
                    .checked_sub(1),
                None => tables.len().checked_sub(1),
            },
        };
        Self {
            tables,
            direction,
            lower,
            upper,
            lower_key,
            upper_key,
            next,
            current: None,
        }
    }

    /// Opens the next table, unless the bounds end before it.
    fn open_next(&mut self) -> bool {
        let Some(table) = self.next.and_then(|i| self.tables.get(i)) else {
            return false;
        };
        let beyond = match self.direction {
            Direction::Forward => self
                .upper_key
                .as_ref()
                .is_some_and(|high| table.smallest > high.as_slice()),
            Direction::Reverse => self
                .lower_key
                .as_ref()
                .is_some_and(|low| table.largest < low.as_slice()),
        };
        if beyond {
            return false;
        }
        self.current = Some(TableSource::new(
            table.table,
            self.direction,
            self.lower.clone(),
            self.upper.clone(),
        ));
        true
    }
}

impl Source for LevelSource<'_> {
    fn advance(&mut self) -> Result<bool> {
        loop {
            if self.current.is_none() && !self.open_next() {
                return Ok(false);
            }
            if let Some(current) = &mut self.current
                && current.advance()?
            {
                return Ok(true);
            }
            self.current = None;
            self.next = match self.direction {
                Direction::Forward => self.next.map(|i| i + 1),
                Direction::Reverse => self.next.and_then(|i| i.checked_sub(1)),
            };
        }
    }

    fn user_key(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |c| c.user_key())
    }

    fn seq(&self) -> u64 {
        self.current.as_ref().map_or(0, |c| c.seq())
    }

    fn kind(&self) -> ValueKind {
        self.current
            .as_ref()
            .map_or(ValueKind::Delete, |c| c.kind())
    }

    fn value(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |c| c.value())
    }
}

/// The sources of a merge in a binary heap ordered by their current versions, so that each
/// step costs a logarithm of the fan-in; an exhausted source leaves the heap.
pub(crate) struct SourceHeap<'a> {
    sources: Vec<Box<dyn Source + 'a>>,
    /// Indexes into `sources`, in heap order.
    heap: Vec<usize>,
    direction: Direction,
}

impl<'a> SourceHeap<'a> {
    /// Moves every source onto its first version and orders them.
    pub fn new(mut sources: Vec<Box<dyn Source + 'a>>, direction: Direction) -> Result<Self> {
        let mut heap = Vec::with_capacity(sources.len());
        for (i, source) in sources.iter_mut().enumerate() {
            if source.advance()? {
                heap.push(i);
            }
        }
        let mut this = Self {
            sources,
            heap,
            direction,
        };
        for i in (0..this.heap.len() / 2).rev() {
            this.sift_down(i);
        }
        Ok(this)
    }

    /// The source whose current version comes first, if any is left.
    pub fn top(&self) -> Option<&(dyn Source + 'a)> {
        self.heap.first().map(|&i| &*self.sources[i])
    }

    /// Moves the first source on to its next version.
    pub fn advance_top(&mut self) -> Result<()> {
        let Some(&first) = self.heap.first() else {
            return Ok(());
        };
        if !self.sources[first].advance()? {
            self.heap.swap_remove(0);
        }
        self.sift_down(0);
        Ok(())
    }

    /// True if source `a`'s current version comes before source `b`'s.
    fn before(&self, a: usize, b: usize) -> bool {
        let (a, b) = (&self.sources[a], &self.sources[b]);
        let order = match self.direction {
            Direction::Forward => a.user_key().cmp(b.user_key()).then(b.seq().cmp(&a.seq())),
            Direction::Reverse => b.user_key().cmp(a.user_key()).then(a.seq().cmp(&b.seq())),
        };
        order == Ordering::Less
    }

    /// Restores the heap order below position `i`.
    fn sift_down(&mut self, mut i: usize) {
        loop {
            let left = 2 * i + 1;
            if left >= self.heap.len() {
                return;
            }
            let right = left + 1;
            let child = if right < self.heap.len() && self.before(self.heap[right], self.heap[left])
            {
                right
            } else {
                left
            };
            if !self.before(self.heap[child], self.heap[i]) {
                return;
            }
            self.heap.swap(child, i);
            i = child;
        }
    }
}

/// Merges `sources` and calls `visit` with each live key and value at `seq`, in `direction`
/// order, until `visit` returns false. Each key visited and its value are copied once into
/// buffers the merge reuses: nothing is allocated per entry.
pub(crate) fn merge(
    sources: Vec<Box<dyn Source + '_>>,
    direction: Direction,
    seq: u64,
    mut visit: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<()> {
    let mut heap = SourceHeap::new(sources, direction)?;
    let mut key: Vec<u8> = Vec::new();
    let mut value: Vec<u8> = Vec::new();
    while let Some(first) = heap.top() {
        key.clear();
        key.extend_from_slice(first.user_key());
        // Take every version of this user key from every source; keep the newest visible.
        let mut visible: Option<(u64, ValueKind)> = None;
        while let Some(source) = heap.top()
            && source.user_key() == key.as_slice()
        {
            let version = source.seq();
            if version <= seq && visible.is_none_or(|(best, _)| version > best) {
                visible = Some((version, source.kind()));
                value.clear();
                value.extend_from_slice(source.value());
            }
            heap.advance_top()?;
        }
        if let Some((_, ValueKind::Put)) = visible
            && !visit(&key, &value)
        {
            return Ok(());
        }
    }
    Ok(())
}

/// The bounds that select every key starting with `prefix`.
pub fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lower = Bound::Included(prefix.to_vec());
    // The successor: the prefix with its last non-0xFF byte incremented and the rest dropped.
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < 0xff {
            upper.push(last + 1);
            return (lower, Bound::Excluded(upper));
        }
    }
    (lower, Bound::Unbounded)
}
