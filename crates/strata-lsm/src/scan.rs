//! Range scans: a merge of every memtable and table, newest visible version per key.

use std::cmp::Ordering;
use std::ops::Bound;

use strata_memtable::ValueKind;
use strata_sstable::TableIter;

use crate::error::{Error, Result};
use crate::keys::{parse_internal_key, seek_key};

/// Which way a scan goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ascending keys.
    Forward,
    /// Descending keys.
    Reverse,
}

/// One version from one source.
pub(crate) struct Version {
    pub user_key: Vec<u8>,
    pub seq: u64,
    pub kind: ValueKind,
    pub value: Vec<u8>,
}

/// A source of versions in scan order: for `Forward`, user key ascending and newest first;
/// for `Reverse`, user key descending and oldest first.
pub(crate) trait Source {
    fn next_version(&mut self) -> Result<Option<Version>>;
}

pub(crate) struct MemtableSource<'a, I: Iterator<Item = strata_memtable::Entry<'a>>> {
    pub entries: I,
}

impl<'a, I: Iterator<Item = strata_memtable::Entry<'a>>> Source for MemtableSource<'a, I> {
    fn next_version(&mut self) -> Result<Option<Version>> {
        Ok(self.entries.next().map(|e| Version {
            user_key: e.user_key.to_vec(),
            seq: e.seq,
            kind: e.kind,
            value: e.value.to_vec(),
        }))
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
    fn next_version(&mut self) -> Result<Option<Version>> {
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
                return Ok(None);
            }
            let parsed = parse_internal_key(self.iter.key()).ok_or_else(|| Error::Corruption {
                path: self.path.to_path_buf(),
                offset: 0,
                reason: "table key is not an internal key",
            })?;
            let (inside_lower, inside_upper) = (
                in_lower(&parsed.user_key, &self.lower),
                in_upper(&parsed.user_key, &self.upper),
            );
            match self.direction {
                Direction::Forward if !inside_upper => return Ok(None),
                Direction::Reverse if !inside_lower => return Ok(None),
                _ if !(inside_lower && inside_upper) => continue,
                _ => {}
            }
            return Ok(Some(Version {
                user_key: parsed.user_key,
                seq: parsed.seq,
                kind: parsed.kind,
                value: self.iter.value().to_vec(),
            }));
        }
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
    fn next_version(&mut self) -> Result<Option<Version>> {
        loop {
            if self.current.is_none() && !self.open_next() {
                return Ok(None);
            }
            if let Some(current) = &mut self.current
                && let Some(v) = current.next_version()?
            {
                return Ok(Some(v));
            }
            self.current = None;
            self.next = match self.direction {
                Direction::Forward => self.next.map(|i| i + 1),
                Direction::Reverse => self.next.and_then(|i| i.checked_sub(1)),
            };
        }
    }
}

/// Merges `sources` and calls `visit` with each live key and value at `seq`, in `direction`
/// order, until `visit` returns false.
pub(crate) fn merge(
    mut sources: Vec<Box<dyn Source + '_>>,
    direction: Direction,
    seq: u64,
    mut visit: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<()> {
    // The head of each source; small fan-in, so a linear pick beats a heap's bookkeeping.
    let mut heads: Vec<Option<Version>> = Vec::with_capacity(sources.len());
    for s in &mut sources {
        heads.push(s.next_version()?);
    }
    let order = |a: &Version, b: &Version| -> Ordering {
        match direction {
            Direction::Forward => a.user_key.cmp(&b.user_key).then(b.seq.cmp(&a.seq)),
            Direction::Reverse => b.user_key.cmp(&a.user_key).then(a.seq.cmp(&b.seq)),
        }
    };
    loop {
        // The source whose head comes first.
        let mut best: Option<usize> = None;
        for (i, head) in heads.iter().enumerate() {
            if let Some(v) = head
                && best.is_none_or(|b| {
                    heads[b]
                        .as_ref()
                        .is_none_or(|bv| order(v, bv) == Ordering::Less)
                })
            {
                best = Some(i);
            }
        }
        let Some(first) = best else {
            return Ok(());
        };
        let user_key = heads[first]
            .as_ref()
            .map(|v| v.user_key.clone())
            .unwrap_or_default();
        // Take every version of this user key from every source; keep the newest visible.
        let mut visible: Option<Version> = None;
        for (i, source) in sources.iter_mut().enumerate() {
            while heads[i].as_ref().is_some_and(|v| v.user_key == user_key) {
                let v = heads[i].take().expect("checked just above");
                if v.seq <= seq && visible.as_ref().is_none_or(|best| v.seq > best.seq) {
                    visible = Some(v);
                }
                heads[i] = source.next_version()?;
            }
        }
        if let Some(v) = visible
            && v.kind == ValueKind::Put
            && !visit(&v.user_key, &v.value)
        {
            return Ok(());
        }
    }
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
