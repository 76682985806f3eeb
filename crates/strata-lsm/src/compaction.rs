//! Leveled compaction: choosing what to compact, and merging it into new tables.
//!
//! Level 0 holds flushed tables, which may overlap; every other level holds tables with
//! disjoint user-key ranges, and every version of a user key lives in one table. A compaction
//! merges some tables of level `n` with the tables of level `n + 1` they overlap, and writes
//! the result to level `n + 1`, dropping versions no reader can see.

use std::ops::Bound;
use std::path::Path;

use strata_memtable::ValueKind;
use strata_sstable::TableBuilder;

use crate::error::Result;
use crate::keys::{encode_internal_key, filter_key, parse_internal_key};
use crate::manifest::FileMeta;
use crate::prefix::TableSpec;
use crate::scan::{Direction, Source, SourceHeap, TableSource};

/// Compaction settings (part of [`Options`](crate::Options)).
#[derive(Debug, Clone)]
pub struct CompactionOptions {
    /// Compact level 0 once it holds this many tables. Default 4.
    pub l0_trigger: usize,
    /// Split compaction output into tables of about this size. Default 16 MiB.
    pub target_file_bytes: u64,
    /// Level 1 is compacted down once it holds more than this. Default 256 MiB: about what
    /// level 0 holds when it is compacted (`l0_trigger` memtables of the default 64 MiB), so
    /// that a level-0 compaction rewrites about as much of level 1 as it brings, and level 1
    /// is not pushed down again by every one (RocksDB's rule and default).
    pub level_base_bytes: u64,
    /// Each level below holds this many times more than the one above. Default 10.
    pub level_multiplier: u64,
    /// Backpressure: once level 0 holds this many tables, each group of writes is delayed by
    /// a millisecond, so that compaction catches up before writes must stop. Default 8.
    pub l0_slowdown_trigger: usize,
    /// Backpressure: once level 0 holds this many tables, writes wait until compaction brings
    /// it below. Default 12.
    pub l0_stop_trigger: usize,
}

impl Default for CompactionOptions {
    fn default() -> Self {
        Self {
            l0_trigger: 4,
            target_file_bytes: 16 * 1024 * 1024,
            level_base_bytes: 256 * 1024 * 1024,
            level_multiplier: 10,
            l0_slowdown_trigger: 8,
            l0_stop_trigger: 12,
        }
    }
}

/// What to compact.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// `(level, table)` of every input.
    pub inputs: Vec<FileMeta>,
    pub output_level: u8,
    /// No level below the output holds any key in the inputs' range: tombstones can go.
    pub bottom: bool,
}

impl Plan {
    /// The one table of a plan that overlaps nothing in the next level: it can move there as
    /// it is, a manifest edit instead of a rewrite (its versions and tombstones stay until a
    /// later merge drops them). A background compaction's move; a manual one merges, to drop
    /// what it can.
    pub fn trivial_move(&self) -> Option<&FileMeta> {
        match self.inputs.as_slice() {
            [only] if only.level + 1 == self.output_level => Some(only),
            _ => None,
        }
    }
}

fn user_range(files: &[&FileMeta]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut low: Option<Vec<u8>> = None;
    let mut high: Option<Vec<u8>> = None;
    for f in files {
        let s = parse_internal_key(&f.smallest)?.user_key;
        let l = parse_internal_key(&f.largest)?.user_key;
        if low.as_ref().is_none_or(|x| s < *x) {
            low = Some(s);
        }
        if high.as_ref().is_none_or(|x| l > *x) {
            high = Some(l);
        }
    }
    Some((low?, high?))
}

fn overlaps(f: &FileMeta, low: &[u8], high: &[u8]) -> bool {
    match (
        parse_internal_key(&f.smallest),
        parse_internal_key(&f.largest),
    ) {
        (Some(s), Some(l)) => !(l.user_key.as_slice() < low || s.user_key.as_slice() > high),
        // A table whose keys do not parse overlaps everything: never drop data because of it.
        _ => true,
    }
}

/// Picks the next compaction, if one is due.
///
/// Level 0 goes down whole once it holds `l0_trigger` tables. Otherwise the first level over
/// its size sends one table down: the one whose overlap with the next level is the smallest
/// against its own size (RocksDB's default, `kMinOverlappingRatio`), so that the bytes
/// rewritten per byte moved down stay low; a table that overlaps nothing below is simply
/// moved ([`Plan::trivial_move`]). Ties go to the table with the oldest data.
pub(crate) fn pick(levels: &[Vec<FileMeta>], options: &CompactionOptions) -> Option<Plan> {
    let last_level = levels.len() - 1;
    let (source_level, chosen): (usize, Vec<&FileMeta>) = if levels[0].len() >= options.l0_trigger {
        (0, levels[0].iter().collect())
    } else {
        let mut bytes_max = options.level_base_bytes;
        let mut found = None;
        for (level, files) in levels.iter().enumerate().take(last_level).skip(1) {
            let bytes: u64 = files.iter().map(|f| f.size).sum();
            if bytes > bytes_max {
                let next = &levels[level + 1];
                found = files
                    .iter()
                    .min_by(|a, b| {
                        let (oa, ob) = (overlap_bytes(a, next), overlap_bytes(b, next));
                        // oa / size_a against ob / size_b, without division.
                        (u128::from(oa) * u128::from(b.size.max(1)))
                            .cmp(&(u128::from(ob) * u128::from(a.size.max(1))))
                            .then(a.largest_seq.cmp(&b.largest_seq))
                    })
                    .map(|f| (level, vec![f]));
                break;
            }
            bytes_max = bytes_max.saturating_mul(options.level_multiplier);
        }
        found?
    };
    plan_for(levels, source_level, chosen)
}

/// The bytes of the tables of `next` (a level below 0: sorted, disjoint) that `f`'s user keys
/// overlap. Compares encoded user keys, which sort as user keys do, without decoding them.
fn overlap_bytes(f: &FileMeta, next: &[FileMeta]) -> u64 {
    let (low, high) = (filter_key(&f.smallest), filter_key(&f.largest));
    let start = next.partition_point(|g| filter_key(&g.largest) < low);
    next[start..]
        .iter()
        .take_while(|g| filter_key(&g.smallest) <= high)
        .map(|g| g.size)
        .sum()
}

/// Plans compacting `chosen` (tables of `source_level`) into the next level.
pub(crate) fn plan_for(
    levels: &[Vec<FileMeta>],
    source_level: usize,
    chosen: Vec<&FileMeta>,
) -> Option<Plan> {
    let output_level = source_level + 1;
    if output_level >= levels.len() {
        return None;
    }
    let (low, high) = user_range(&chosen)?;
    let mut inputs: Vec<FileMeta> = chosen.into_iter().cloned().collect();
    inputs.extend(
        levels[output_level]
            .iter()
            .filter(|f| overlaps(f, &low, &high))
            .cloned(),
    );
    // Tombstones may go only if nothing deeper holds any key the output will cover, and the
    // output covers the range of every input, the output level's included.
    let all: Vec<&FileMeta> = inputs.iter().collect();
    let (low, high) = user_range(&all)?;
    let bottom = levels[output_level + 1..]
        .iter()
        .flatten()
        .all(|f| !overlaps(f, &low, &high));
    Some(Plan {
        inputs,
        output_level: output_level as u8,
        bottom,
    })
}

/// Plans installing an ingest's tables (`ingested`, sorted and disjoint) at `level`: the
/// tables of that level they overlap, to be merged with them. Levels above must already hold
/// nothing in their range.
pub(crate) fn plan_ingest(levels: &[Vec<FileMeta>], level: usize, ingested: &[FileMeta]) -> Plan {
    let all: Vec<&FileMeta> = ingested.iter().collect();
    let inputs: Vec<FileMeta> = match user_range(&all) {
        // Level 0 tables may overlap: the ingested ones simply go on top.
        Some((low, high)) if level > 0 => levels[level]
            .iter()
            .filter(|f| overlaps(f, &low, &high))
            .cloned()
            .collect(),
        _ => Vec::new(),
    };
    let all: Vec<&FileMeta> = inputs.iter().chain(ingested).collect();
    let bottom = user_range(&all).is_some_and(|(low, high)| {
        levels[level + 1..]
            .iter()
            .flatten()
            .all(|f| !overlaps(f, &low, &high))
    });
    Plan {
        inputs,
        output_level: level as u8,
        bottom,
    }
}

/// The tables of `level` holding keys in the user-key range of `of`.
pub(crate) fn overlapping<'a>(
    levels: &'a [Vec<FileMeta>],
    level: usize,
    of: &[FileMeta],
) -> Vec<&'a FileMeta> {
    let all: Vec<&FileMeta> = of.iter().collect();
    match user_range(&all) {
        Some((low, high)) => levels[level]
            .iter()
            .filter(|f| overlaps(f, &low, &high))
            .collect(),
        None => levels[level].iter().collect(),
    }
}

/// Merges the sources into new tables at `plan.output_level`, keeping, for each user key, every
/// version newer than `oldest_snapshot` and the newest one at or below it (dropped too if it is
/// a tombstone at the bottom). `new_file` gives each output table a number and path. With
/// `assign_seq`, every version written carries that sequence number instead of its own (an
/// ingest: `oldest_snapshot` is then `u64::MAX`, so one version per key is kept).
pub(crate) fn run(
    sources: Vec<Box<dyn Source + '_>>,
    plan: &Plan,
    oldest_snapshot: u64,
    assign_seq: Option<u64>,
    spec: TableSpec<'_>,
    target_file_bytes: u64,
    mut new_file: impl FnMut() -> (u64, std::path::PathBuf),
) -> Result<Vec<FileMeta>> {
    // On failure, the tables written so far are removed: they are in no manifest.
    let mut created = Vec::new();
    let result = merge_into_tables(
        sources,
        plan,
        oldest_snapshot,
        assign_seq,
        spec,
        target_file_bytes,
        || {
            let (number, path) = new_file();
            created.push(path.clone());
            (number, path)
        },
    );
    if result.is_err() {
        for path in &created {
            let _ = std::fs::remove_file(path);
        }
    }
    result
}

fn merge_into_tables(
    sources: Vec<Box<dyn Source + '_>>,
    plan: &Plan,
    oldest_snapshot: u64,
    assign_seq: Option<u64>,
    spec: TableSpec<'_>,
    target_file_bytes: u64,
    mut new_file: impl FnMut() -> (u64, std::path::PathBuf),
) -> Result<Vec<FileMeta>> {
    let mut merged = Merged::new(sources)?;
    let mut outputs = Vec::new();
    let mut current: Option<Output> = None;
    let mut key = Vec::new();
    while merged.next_group()? {
        // The group holds every version of one user key, newest first.
        // Every version up to the newest that all readers see; older ones are shadowed.
        let mut kept = merged
            .versions
            .iter()
            .position(|&(seq, _, _)| seq <= oldest_snapshot)
            .map_or(merged.versions.len(), |newest_seen| newest_seen + 1);
        if plan.bottom
            && kept > 0
            && let (seq, ValueKind::Delete, _) = merged.versions[kept - 1]
            && seq <= oldest_snapshot
        {
            kept -= 1;
        }
        if kept == 0 {
            continue;
        }
        // Close the table at a user-key boundary once it is big enough (every version of a
        // key stays in one table, so a lookup below level 0 reads one table per level).
        if current
            .as_ref()
            .is_some_and(|o| o.bytes >= target_file_bytes)
            && let Some(done) = current.take()
        {
            outputs.push(done.finish(plan.output_level)?);
        }
        let out = match &mut current {
            Some(out) => out,
            None => {
                let (number, path) = new_file();
                current.insert(Output::new(number, &path, spec)?)
            }
        };
        for (seq, kind, value) in &merged.versions[..kept] {
            let seq = assign_seq.unwrap_or(*seq);
            key.clear();
            encode_internal_key(&mut key, &merged.key, seq, *kind);
            out.add(spec, &key, seq, &merged.values[value.clone()], &merged.key)?;
        }
    }
    if let Some(done) = current.take() {
        outputs.push(done.finish(plan.output_level)?);
    }
    Ok(outputs)
}

struct Output {
    number: u64,
    builder: TableBuilder,
    bytes: u64,
    smallest: Option<Vec<u8>>,
    largest: Vec<u8>,
    smallest_seq: u64,
    largest_seq: u64,
}

impl Output {
    fn new(number: u64, path: &Path, spec: TableSpec<'_>) -> Result<Self> {
        Ok(Self {
            number,
            builder: spec.create(path)?,
            bytes: 0,
            smallest: None,
            largest: Vec::new(),
            smallest_seq: u64::MAX,
            largest_seq: 0,
        })
    }

    fn add(
        &mut self,
        spec: TableSpec<'_>,
        key: &[u8],
        seq: u64,
        value: &[u8],
        user_key: &[u8],
    ) -> Result<()> {
        spec.add(&mut self.builder, key, value, user_key)?;
        self.bytes += (key.len() + value.len()) as u64;
        if self.smallest.is_none() {
            self.smallest = Some(key.to_vec());
        }
        self.largest.clear();
        self.largest.extend_from_slice(key);
        self.smallest_seq = self.smallest_seq.min(seq);
        self.largest_seq = self.largest_seq.max(seq);
        Ok(())
    }

    fn finish(self, level: u8) -> Result<FileMeta> {
        let summary = self.builder.finish()?;
        Ok(FileMeta {
            number: self.number,
            level,
            size: summary.file_bytes,
            smallest: self.smallest.unwrap_or_default(),
            largest: self.largest,
            smallest_seq: self.smallest_seq.min(self.largest_seq),
            largest_seq: self.largest_seq,
        })
    }
}

/// The forward merge of the sources, one user key (all its versions, newest first) at a time,
/// into buffers reused from one key to the next.
struct Merged<'a> {
    heap: SourceHeap<'a>,
    /// The current group's user key.
    key: Vec<u8>,
    /// Its versions, newest first: sequence number, kind, and the value's range in `values`.
    versions: Vec<(u64, ValueKind, std::ops::Range<usize>)>,
    values: Vec<u8>,
}

impl<'a> Merged<'a> {
    fn new(sources: Vec<Box<dyn Source + 'a>>) -> Result<Self> {
        Ok(Self {
            heap: SourceHeap::new(sources, Direction::Forward)?,
            key: Vec::new(),
            versions: Vec::new(),
            values: Vec::new(),
        })
    }

    /// Gathers the next user key's versions; false once the sources are exhausted.
    fn next_group(&mut self) -> Result<bool> {
        let Some(first) = self.heap.top() else {
            return Ok(false);
        };
        self.key.clear();
        self.key.extend_from_slice(first.user_key());
        self.versions.clear();
        self.values.clear();
        // The heap yields a user key's versions newest first, whichever source holds them.
        while let Some(source) = self.heap.top()
            && source.user_key() == self.key.as_slice()
        {
            let start = self.values.len();
            self.values.extend_from_slice(source.value());
            self.versions
                .push((source.seq(), source.kind(), start..self.values.len()));
            self.heap.advance_top()?;
        }
        Ok(true)
    }
}

/// A source over one input table.
pub(crate) fn table_source(table: &strata_sstable::Table) -> Box<dyn Source + '_> {
    Box::new(TableSource::new(
        table,
        Direction::Forward,
        Bound::Unbounded,
        Bound::Unbounded,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::internal_key;

    fn file(number: u64, level: u8, low: &[u8], high: &[u8]) -> FileMeta {
        FileMeta {
            number,
            level,
            size: 100,
            smallest: internal_key(low, 9, ValueKind::Put),
            largest: internal_key(high, 1, ValueKind::Put),
            smallest_seq: 1,
            largest_seq: 9,
        }
    }

    #[test]
    fn the_bottom_test_covers_the_output_levels_inputs_too() {
        // L1 [c, d] pulls in L2 [a, z]; L3 holds x, inside [a, z] but outside [c, d]. A
        // tombstone for x in L2 must survive, or the L3 value would come back.
        let mut levels = vec![Vec::new(); 7];
        levels[1].push(file(1, 1, b"c", b"d"));
        levels[2].push(file(2, 2, b"a", b"z"));
        levels[3].push(file(3, 3, b"x", b"x"));
        let chosen: Vec<&FileMeta> = levels[1].iter().collect();
        let plan = plan_for(&levels, 1, chosen).expect("a plan");
        assert_eq!(plan.inputs.len(), 2);
        assert!(!plan.bottom);
        // Without the L3 table it is the bottom.
        levels[3].clear();
        let chosen: Vec<&FileMeta> = levels[1].iter().collect();
        assert!(plan_for(&levels, 1, chosen).expect("a plan").bottom);
    }

    fn sized(mut f: FileMeta, size: u64, largest_seq: u64) -> FileMeta {
        f.size = size;
        f.largest_seq = largest_seq;
        f
    }

    #[test]
    fn a_full_level_sends_down_the_table_that_overlaps_least_for_its_size() {
        let options = CompactionOptions {
            level_base_bytes: 100,
            ..CompactionOptions::default()
        };
        let mut levels = vec![Vec::new(); 7];
        // The oldest table overlaps a big one below; the newest overlaps nothing.
        levels[1].push(sized(file(1, 1, b"a", b"c"), 60, 1));
        levels[1].push(sized(file(2, 1, b"m", b"p"), 60, 5));
        levels[1].push(sized(file(3, 1, b"x", b"z"), 60, 9));
        levels[2].push(sized(file(4, 2, b"b", b"b"), 1000, 1));
        levels[2].push(sized(file(5, 2, b"n", b"n"), 10, 1));
        let plan = pick(&levels, &options).expect("level 1 is over its size");
        assert_eq!(plan.trivial_move().map(|f| f.number), Some(3));
        // Without it, the small overlap beats the big one.
        levels[1].retain(|f| f.number != 3);
        let plan = pick(&levels, &options).expect("level 1 is over its size");
        assert_eq!(plan.trivial_move(), None);
        let numbers: Vec<u64> = plan.inputs.iter().map(|f| f.number).collect();
        assert_eq!(numbers, [2, 5]);
        // Equal ratios: the oldest data first.
        levels[2].clear();
        let plan = pick(&levels, &options).expect("level 1 is over its size");
        assert_eq!(plan.trivial_move().map(|f| f.number), Some(1));
    }
}
