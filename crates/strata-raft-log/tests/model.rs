//! The log against a model (a vector of entries, a compaction point and a hard state), through
//! random appends (overwriting suffixes too), truncations, compactions (keeping the suffix or
//! not), hard-state changes, reads, reopens and crashes that lose unsynced entries.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strata_raft_log::{Entry, EntryKind, HardState, LogOptions, RaftLog};

#[derive(Debug, Clone)]
enum Op {
    /// Append `count` entries starting `back` entries before the end (0: right after it), in
    /// the last term plus `term_bump`.
    Append {
        back: u8,
        count: u8,
        term_bump: u8,
    },
    Truncate(u8),
    /// Compact up to `back` entries before the end; with `mismatch`, a snapshot whose last
    /// term disagrees with the log (everything goes).
    Compact {
        back: u8,
        mismatch: bool,
    },
    SetHardState {
        term_bump: u8,
        vote: u8,
        commit: u8,
    },
    Read {
        from: u8,
        len: u8,
    },
    Sync,
    Reopen,
    /// Drop the log, cut up to this many bytes off the entry log's last segment, reopen.
    Crash(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 1u8..6, 0u8..2).prop_map(|(back, count, term_bump)| Op::Append { back, count, term_bump }),
        1 => (0u8..4).prop_map(Op::Truncate),
        1 => (0u8..6, proptest::bool::weighted(0.2)).prop_map(|(back, mismatch)| Op::Compact { back, mismatch }),
        2 => (0u8..2, 0u8..4, 0u8..20).prop_map(|(term_bump, vote, commit)| Op::SetHardState { term_bump, vote, commit }),
        3 => (0u8..30, 0u8..8).prop_map(|(from, len)| Op::Read { from, len }),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        1 => (0u16..300).prop_map(Op::Crash),
    ]
}

#[derive(Debug, Clone, Default)]
struct Model {
    compacted: (u64, u64),
    entries: Vec<Entry>,
    hard: HardState,
    /// Entries up to here are durable.
    durable_last: u64,
}

impl Model {
    fn last_index(&self) -> u64 {
        self.compacted.0 + self.entries.len() as u64
    }

    fn term(&self, index: u64) -> u64 {
        if index == self.compacted.0 {
            return self.compacted.1;
        }
        self.entries[(index - self.compacted.0 - 1) as usize].term
    }

    fn last_term(&self) -> u64 {
        self.term(self.last_index())
    }

    fn truncate_from(&mut self, index: u64) {
        self.entries
            .truncate((index - self.compacted.0 - 1) as usize);
        self.durable_last = self.durable_last.min(self.last_index());
    }
}

fn last_segment(dir: &Path) -> Option<PathBuf> {
    let logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("entries-"))
        })
        .collect();
    let log = logs.into_iter().max()?;
    let mut segments: Vec<PathBuf> = std::fs::read_dir(log)
        .ok()?
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments.pop()
}

fn check(log: &RaftLog, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.compacted(), model.compacted);
    prop_assert_eq!(log.first_index(), model.compacted.0 + 1);
    prop_assert_eq!(log.last_index(), model.last_index());
    prop_assert_eq!(log.last_term(), model.last_term());
    for e in &model.entries {
        prop_assert_eq!(log.term(e.index), Some(e.term));
    }
    if !model.entries.is_empty() {
        let got = log
            .entries(model.compacted.0 + 1, model.last_index() + 1, usize::MAX)
            .expect("read all");
        prop_assert_eq!(&got, &model.entries);
    }
    Ok(())
}

fn run(ops: Vec<Op>, sync: bool, cache_bytes: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || LogOptions {
        cache_bytes,
        // Small segments: compactions free whole segments and reads cross them.
        segment_bytes: 512,
        sync,
    };
    let mut log = RaftLog::open(dir.path(), options()).expect("open");
    let mut model = Model::default();
    let mut serial = 0u32;
    for op in ops {
        match op {
            Op::Append {
                back,
                count,
                term_bump,
            } => {
                let start = (model.last_index() + 1)
                    .saturating_sub(u64::from(back))
                    .max(model.compacted.0 + 1);
                let term = model.last_term().max(model.hard.term) + u64::from(term_bump);
                let entries: Vec<Entry> = (0..u64::from(count))
                    .map(|i| {
                        serial += 1;
                        Entry::new(
                            term,
                            start + i,
                            EntryKind::Normal,
                            serial.to_le_bytes().to_vec(),
                        )
                    })
                    .collect();
                log.append(&entries).expect("append");
                if start <= model.last_index() {
                    model.truncate_from(start);
                }
                model.entries.extend(entries);
                if sync {
                    model.durable_last = model.last_index();
                }
            }
            Op::Truncate(back) => {
                let index = (model.last_index() + 1)
                    .saturating_sub(u64::from(back))
                    .max(model.compacted.0 + 1);
                log.truncate_suffix(index).expect("truncate");
                if index <= model.last_index() {
                    model.truncate_from(index);
                    // A cut syncs what it leaves.
                    model.durable_last = model.last_index();
                }
            }
            Op::Compact { back, mismatch } => {
                let index = model.last_index().saturating_sub(u64::from(back));
                if index <= model.compacted.0 {
                    continue;
                }
                let term = if mismatch {
                    model.term(index) + 1
                } else {
                    model.term(index)
                };
                log.compact(index, term).expect("compact");
                if mismatch {
                    model.entries.clear();
                } else {
                    model.entries.drain(..(index - model.compacted.0) as usize);
                }
                model.compacted = (index, term);
                model.durable_last = model.durable_last.max(index);
            }
            Op::SetHardState {
                term_bump,
                vote,
                commit,
            } => {
                let hard = HardState {
                    term: model.hard.term + u64::from(term_bump),
                    vote: u64::from(vote),
                    commit: u64::from(commit),
                };
                log.set_hard_state(hard).expect("hard state");
                model.hard = hard;
            }
            Op::Read { from, len } => {
                let lo = model.compacted.0 + 1 + u64::from(from);
                let hi = lo + u64::from(len);
                match log.entries(lo, hi, usize::MAX) {
                    Ok(got) => {
                        prop_assert!(hi <= model.last_index() + 1);
                        let at = (lo - model.compacted.0 - 1) as usize;
                        prop_assert_eq!(&got[..], &model.entries[at..at + len as usize]);
                    }
                    Err(_) => prop_assert!(hi > model.last_index() + 1),
                }
            }
            Op::Sync => {
                log.sync().expect("sync");
                model.durable_last = model.last_index();
            }
            Op::Reopen => {
                drop(log);
                log = RaftLog::open(dir.path(), options()).expect("reopen");
                prop_assert_eq!(log.hard_state().term, model.hard.term);
                prop_assert_eq!(log.hard_state().vote, model.hard.vote);
                check(&log, &model)?;
            }
            Op::Crash(cut) => {
                drop(log);
                if !sync && let Some(segment) = last_segment(dir.path()) {
                    // Only unsynced bytes may be lost: cut into them at most.
                    let len = std::fs::metadata(&segment).expect("stat").len();
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&segment)
                        .expect("open");
                    file.set_len(len.saturating_sub(u64::from(cut)).max(32))
                        .expect("cut");
                }
                log = RaftLog::open(dir.path(), options()).expect("reopen after a crash");
                prop_assert_eq!(log.hard_state().term, model.hard.term);
                prop_assert_eq!(log.hard_state().vote, model.hard.vote);
                prop_assert_eq!(log.compacted(), model.compacted);
                let last = log.last_index();
                prop_assert!(last <= model.last_index(), "entries appeared");
                if sync {
                    prop_assert_eq!(last, model.last_index(), "synced entries were lost");
                }
                // What survived is a prefix of what was written.
                let kept = (last - model.compacted.0) as usize;
                model.entries.truncate(kept);
                check(&log, &model)?;
                model.durable_last = model.durable_last.min(last);
            }
        }
    }
    drop(log);
    let log = RaftLog::open(dir.path(), options()).expect("final reopen");
    check(&log, &model)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn log_matches_model_across_reopens_and_crashes(
        ops in proptest::collection::vec(op(), 1..50),
        sync in any::<bool>(),
        small_cache in any::<bool>(),
    ) {
        run(ops, sync, if small_cache { 200 } else { 1 << 20 })?;
    }
}
