//! What a chaos run recorded, and the checks over it: pure functions, so `--selftest` can run
//! them on recorded histories that are known to be wrong and fail if one passes.

use strata_raft_node::linearizability::{self, Op, Operation, SEARCH_STATES_MAX, Violation};

/// A write a client was told succeeded: a put, or a compare-and-set whose compare held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub key: u64,
    pub value: u64,
    /// The revision its response header gave.
    pub revision: i64,
}

/// One event of the run's key range: a put of `value` at `revision` (the keys are never
/// deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub key: u64,
    pub value: u64,
    pub revision: i64,
}

/// Everything a run recorded.
#[derive(Debug, Default)]
pub struct History {
    /// Every client operation, with its invocation and response times.
    pub ops: Vec<Operation>,
    /// The writes acknowledged to clients.
    pub acked: Vec<Acked>,
    /// What each live watcher received, in order, across its reconnections (each resumed
    /// from the revision after the last it had).
    pub watches: Vec<Vec<Event>>,
    /// The range's whole event history as each member gives it after the run (a watch from
    /// revision 1 up to a final write): the record everything else is checked against.
    pub committed: Vec<Vec<Event>>,
    /// Each member's HashKV at the final revision: (member, revision, hash).
    pub hashes: Vec<(String, i64, u32)>,
    /// What the harness could not do that the cluster should have let it (a membership change
    /// refused until it gave up).
    pub problems: Vec<String>,
}

/// The checks a run failed, each a line to print.
pub fn violations(history: &History, seed: u64) -> Vec<String> {
    let mut found = history.problems.clone();
    let Some(committed) = history.committed.first() else {
        found.push("no member gave its event history".to_owned());
        return found;
    };
    found.extend(linearizable(
        &without_unapplied(&history.ops, committed),
        seed,
    ));
    for (m, other) in history.committed.iter().enumerate().skip(1) {
        if other != committed {
            found.push(format!(
                "member {m}'s event history differs from member 0's ({} and {} events; first \
                 difference at {:?})",
                other.len(),
                committed.len(),
                first_difference(committed, other)
            ));
        }
    }
    found.extend(acknowledged_present(&history.acked, committed));
    for (w, stream) in history.watches.iter().enumerate() {
        found.extend(watch_complete(w, stream, committed));
    }
    found.extend(hashes_agree(&history.hashes));
    found
}

fn first_difference(a: &[Event], b: &[Event]) -> Option<(usize, Option<Event>, Option<Event>)> {
    (0..a.len().max(b.len()))
        .find(|&i| a.get(i) != b.get(i))
        .map(|i| (i, a.get(i).copied(), b.get(i).copied()))
}

/// The operations without the writes that never answered and are not in the committed
/// history: they never took effect. The search may leave any unanswered write out, so this
/// only takes away choices (a history that passes with them gone passes with them in); but
/// every unanswered write it keeps doubles what the search may have to try, and a run with
/// many (a full disk refuses every write for a while) would leave it undecided.
pub fn without_unapplied(ops: &[Operation], committed: &[Event]) -> Vec<Operation> {
    let applied: std::collections::HashSet<(u64, u64)> =
        committed.iter().map(|e| (e.key, e.value)).collect();
    ops.iter()
        .filter(|op| {
            let written = match op.op {
                Op::Put(v) | Op::Cas { new: v, .. } => v,
                Op::Get(_) => return true,
            };
            op.returned.is_some() || applied.contains(&(op.key, written))
        })
        .cloned()
        .collect()
}

/// Linearizability of every key's operations (the WGL search); a failure comes with the
/// shortest prefix of the key's history (by invocation) that already fails.
pub fn linearizable(ops: &[Operation], seed: u64) -> Vec<String> {
    match linearizability::check_bounded(ops, SEARCH_STATES_MAX) {
        Ok(()) => Vec::new(),
        Err(Violation::Undecided { key, ops }) => vec![format!(
            "seed {seed}: key {key}: the linearizability search gave up after \
             {SEARCH_STATES_MAX} states ({ops} operations): undecided, counted as a violation"
        )],
        Err(Violation::NotLinearizable { key, ops }) => {
            let minimal = shortest_failing_prefix(&ops);
            let mut lines = vec![format!(
                "seed {seed}: key {key} is not linearizable ({} operations; the shortest failing \
                 prefix has {}, its last {} below)",
                ops.len(),
                minimal.len(),
                minimal.len().min(MINIMAL_SHOWN)
            )];
            for op in &minimal[minimal.len().saturating_sub(MINIMAL_SHOWN)..] {
                lines.push(format!("    {}", describe(op)));
            }
            vec![lines.join("\n")]
        }
    }
}

/// Operations of a minimal history printed with a violation.
const MINIMAL_SHOWN: usize = 30;

/// The shortest prefix (operations sorted by invocation) that is not linearizable: a prefix
/// of a linearizable history is linearizable, so a binary search finds it.
fn shortest_failing_prefix(ops: &[Operation]) -> Vec<Operation> {
    let fails = |n: usize| linearizability::check_bounded(&ops[..n], SEARCH_STATES_MAX).is_err();
    let (mut lo, mut hi) = (0, ops.len());
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if fails(mid) { hi = mid } else { lo = mid }
    }
    ops[..hi].to_vec()
}

fn describe(op: &Operation) -> String {
    let what = match &op.op {
        Op::Put(v) => format!("put {v}"),
        Op::Get(v) => format!("get -> {v:?}"),
        Op::Cas {
            expect,
            new,
            succeeded,
        } => format!("cas {expect} -> {new}: {succeeded:?}"),
    };
    let returned = op
        .returned
        .map_or_else(|| "never".to_owned(), |t| format!("{:.6}s", t as f64 / 1e9));
    format!(
        "{what:<40} invoked {:.6}s, returned {returned}",
        op.invoked as f64 / 1e9
    )
}

/// Every acknowledged write is in the committed history, at the revision it was told.
pub fn acknowledged_present(acked: &[Acked], committed: &[Event]) -> Vec<String> {
    let by_revision: std::collections::HashMap<i64, Event> =
        committed.iter().map(|e| (e.revision, *e)).collect();
    acked
        .iter()
        .filter(|a| {
            by_revision.get(&a.revision)
                != Some(&Event {
                    key: a.key,
                    value: a.value,
                    revision: a.revision,
                })
        })
        .map(|a| {
            format!(
                "acknowledged write lost: key {} = {} at revision {} (the history has {:?} there)",
                a.key,
                a.value,
                a.revision,
                by_revision.get(&a.revision)
            )
        })
        .collect()
}

/// A watcher saw every committed event of its range once, in revision order, with no gap: what
/// it received is the committed history's first events, exactly.
pub fn watch_complete(watcher: usize, stream: &[Event], committed: &[Event]) -> Vec<String> {
    if let Some(w) = stream.windows(2).find(|w| w[1].revision <= w[0].revision) {
        return vec![format!(
            "watcher {watcher}: revision {} after {} (out of order or repeated)",
            w[1].revision, w[0].revision
        )];
    }
    match first_difference(&committed[..stream.len().min(committed.len())], stream) {
        None if stream.len() <= committed.len() => {
            if stream.len() < committed.len() {
                vec![format!(
                    "watcher {watcher}: received {} events of {} (stalled)",
                    stream.len(),
                    committed.len()
                )]
            } else {
                Vec::new()
            }
        }
        None => vec![format!(
            "watcher {watcher}: {} events beyond the committed history",
            stream.len() - committed.len()
        )],
        Some((i, expected, got)) => vec![format!(
            "watcher {watcher}: event {i} is {got:?}, the history has {expected:?} (a gap or a \
             wrong event)"
        )],
    }
}

/// Every member's HashKV at the same revision is the same.
pub fn hashes_agree(hashes: &[(String, i64, u32)]) -> Vec<String> {
    let Some((first, revision, hash)) = hashes.first() else {
        return vec!["no member answered HashKV".to_owned()];
    };
    hashes
        .iter()
        .skip(1)
        .filter(|(_, r, h)| (r, h) != (revision, hash))
        .map(|(m, r, h)| {
            format!("HashKV differs: {first} has {hash:#x} at {revision}, {m} has {h:#x} at {r}")
        })
        .collect()
}

/// `--selftest`: the checks on recorded histories, one good and several wrong; returns what
/// went unnoticed (empty: the checker caught every wrong history and passed the good one).
pub fn selftest() -> Vec<String> {
    let mut missed = Vec::new();
    let good = good_history();
    let found = violations(&good, 0);
    if !found.is_empty() {
        missed.push(format!("the good history was refused: {found:?}"));
    }
    for (name, bad) in bad_histories() {
        let found = violations(&bad, 0);
        println!("selftest: {name}: {} violation(s)", found.len());
        for line in &found {
            println!("  {line}");
        }
        if found.is_empty() {
            missed.push(format!("not caught: {name}"));
        }
    }
    missed
}

fn op(key: u64, op: Op, invoked: u64, returned: Option<u64>) -> Operation {
    Operation {
        key,
        op,
        invoked,
        returned,
    }
}

/// Two keys, puts, reads, a compare-and-set each way and a write that never answered (but
/// took effect), one watcher that saw everything and one that is behind by none.
fn good_history() -> History {
    let ev = |key, value, revision| Event {
        key,
        value,
        revision,
    };
    let committed = vec![ev(1, 10, 2), ev(2, 20, 3), ev(1, 11, 4), ev(2, 21, 5)];
    History {
        ops: vec![
            op(1, Op::Put(10), 0, Some(10)),
            op(2, Op::Put(20), 5, Some(15)),
            op(1, Op::Get(Some(10)), 20, Some(25)),
            op(
                1,
                Op::Cas {
                    expect: 10,
                    new: 11,
                    succeeded: Some(true),
                },
                30,
                Some(35),
            ),
            op(
                1,
                Op::Cas {
                    expect: 10,
                    new: 12,
                    succeeded: Some(false),
                },
                40,
                Some(45),
            ),
            op(2, Op::Put(21), 50, None),
            op(1, Op::Get(Some(11)), 60, Some(65)),
            op(2, Op::Get(Some(21)), 70, Some(75)),
        ],
        acked: vec![
            Acked {
                key: 1,
                value: 10,
                revision: 2,
            },
            Acked {
                key: 2,
                value: 20,
                revision: 3,
            },
            Acked {
                key: 1,
                value: 11,
                revision: 4,
            },
        ],
        watches: vec![committed.clone(), committed.clone()],
        committed: vec![committed.clone(), committed.clone(), committed],
        hashes: vec![
            ("m1".into(), 5, 7),
            ("m2".into(), 5, 7),
            ("m3".into(), 5, 7),
        ],
        problems: Vec::new(),
    }
}

/// The good history, broken one way each.
fn bad_histories() -> Vec<(&'static str, History)> {
    let mut cases = Vec::new();

    let mut stale = good_history();
    // After the compare-and-set to 11 returned, a read still sees 10.
    stale.ops.push(op(1, Op::Get(Some(10)), 80, Some(85)));
    cases.push(("a stale read", stale));

    let mut lost = good_history();
    // A write acknowledged at revision 6 that the history does not have.
    lost.acked.push(Acked {
        key: 1,
        value: 13,
        revision: 6,
    });
    lost.ops.push(op(1, Op::Put(13), 80, Some(85)));
    lost.ops.push(op(1, Op::Get(Some(11)), 90, Some(95)));
    cases.push(("a lost write", lost));

    let mut gap = good_history();
    gap.watches[1].remove(1);
    cases.push(("a watch gap", gap));

    let mut repeat = good_history();
    let again = repeat.watches[0][1];
    repeat.watches[0].insert(2, again);
    cases.push(("a repeated watch event", repeat));

    let mut stalled = good_history();
    stalled.watches[0].pop();
    cases.push(("a watch that stops short", stalled));

    let mut cas = good_history();
    // The compare held (the key was 11), but the answer said it failed.
    cas.ops.push(op(
        1,
        Op::Cas {
            expect: 11,
            new: 14,
            succeeded: Some(false),
        },
        80,
        Some(85),
    ));
    cases.push(("a compare-and-set answered wrongly", cas));

    let mut diverged = good_history();
    diverged.committed[2][3].value = 22;
    diverged.hashes[2].2 = 8;
    cases.push(("members that diverged", diverged));

    cases
}
