//! A linearizability checker for key-value histories (Wing and Gong's search, with Lowe's
//! memoization of visited states), used by the simulator (`sim`) and by `cargo xtask chaos`
//! against real servers; it needs nothing else from the crate.
//!
//! A history is a list of operations, each invoked at some time and, if it completed,
//! answered at a later time. The history is linearizable if every operation can be placed at
//! one instant between its invocation and its response so that the results match a
//! sequential key-value store. An operation that never completed may take effect at any time
//! after its invocation, or never. Keys are independent (linearizability is compositional),
//! so each key is checked on its own.
//!
//! Values must be unique per write (a writer's id and sequence number, say): the search then
//! knows which write a read saw, and its memo of visited states stays small.

use std::collections::{BTreeMap, HashSet};

/// States one key's search may visit before it gives up undecided
/// ([`Violation::Undecided`]): a history with many operations that never completed can make
/// the search exponential, and a checker that runs forever proves nothing either.
pub const SEARCH_STATES_MAX: usize = 20_000_000;

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Set the key to the value.
    Put(u64),
    /// Read the key: what it returned (`None`: absent), or unknown if it never completed.
    Get(Option<u64>),
    /// Set the key to `new` if it holds `expect` (etcd: a Txn comparing the value, with a Put
    /// on success). `succeeded` is what it answered, `None` if it never completed (then it
    /// may have taken effect, if the key held `expect`, or not).
    Cas {
        /// The value compared with.
        expect: u64,
        /// The value written on success.
        new: u64,
        /// Whether the compare held, as answered.
        succeeded: Option<bool>,
    },
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// The key.
    pub key: u64,
    /// What it did.
    pub op: Op,
    /// When it was invoked.
    pub invoked: u64,
    /// When its response came (`None`: it never completed).
    pub returned: Option<u64>,
}

/// Why a history was not found linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// No order of this key's operations explains what they returned.
    NotLinearizable {
        /// The key.
        key: u64,
        /// Its operations.
        ops: Vec<Operation>,
    },
    /// The search of this key gave up after [`SEARCH_STATES_MAX`] states.
    Undecided {
        /// The key.
        key: u64,
        /// How many operations it had.
        ops: usize,
    },
}

/// Checks a history; on failure, returns the key whose operations cannot be linearized.
///
/// # Errors
///
/// The first key with no linearization, and its operations.
pub fn check(history: &[Operation]) -> Result<(), (u64, Vec<Operation>)> {
    match check_bounded(history, usize::MAX) {
        Ok(()) => Ok(()),
        Err(Violation::NotLinearizable { key, ops }) => Err((key, ops)),
        // Unbounded, the search always decides; were it not to, that is no proof either.
        Err(Violation::Undecided { key, .. }) => Err((key, Vec::new())),
    }
}

/// [`check`] with a bound on each key's search (states visited; [`SEARCH_STATES_MAX`] is a
/// sane one), for histories from real servers, which can be long.
///
/// # Errors
///
/// The first key with no linearization, or whose search ran out of states.
pub fn check_bounded(history: &[Operation], states_max: usize) -> Result<(), Violation> {
    let mut by_key: BTreeMap<u64, Vec<Operation>> = BTreeMap::new();
    for op in history {
        // A read that never answered constrains nothing.
        if op.returned.is_none() && matches!(op.op, Op::Get(_)) {
            continue;
        }
        by_key.entry(op.key).or_default().push(op.clone());
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|op| op.invoked);
        match check_key(&ops, states_max) {
            Some(true) => {}
            Some(false) => return Err(Violation::NotLinearizable { key, ops }),
            None => {
                return Err(Violation::Undecided {
                    key,
                    ops: ops.len(),
                });
            }
        }
    }
    Ok(())
}

/// What `op` does to a key holding `value`: the value after it, or `None` if it cannot take
/// effect there (a read of something else, a compare that held though it was answered as
/// failed, or the other way round). A CAS that never answered is tried here as succeeding
/// only; leaving it out is the search's other choice.
fn step(op: &Op, value: Option<u64>) -> Option<Option<u64>> {
    match *op {
        Op::Put(v) => Some(Some(v)),
        Op::Get(read) => (read == value).then_some(value),
        Op::Cas {
            expect,
            new,
            succeeded,
        } => {
            let holds = value == Some(expect);
            match succeeded {
                Some(true) | None => holds.then_some(Some(new)),
                Some(false) => (!holds).then_some(value),
            }
        }
    }
}

/// A 128-bit label for operation `i` (splitmix64 twice): the set of operations placed is
/// kept as the XOR of their labels, so the memo stores 24 bytes per state whatever the
/// history's length (two sets colliding is a 2^-128 chance per pair of states).
fn label(i: usize) -> u128 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let i = i as u64;
    (u128::from(splitmix(2 * i)) << 64) | u128::from(splitmix(2 * i + 1))
}

/// The search for one key (`ops` sorted by invocation): depth first over which operation
/// takes effect next, among those invoked before the earliest response of the completed
/// operations not yet placed; states already seen (the operations placed, and the value)
/// are not explored again. The operations not yet placed are a linked list in invocation
/// order (Lowe's), so a step looks only at its candidates. `Some(linearizable)`, or `None`
/// past `states_max` states.
fn check_key(ops: &[Operation], states_max: usize) -> Option<bool> {
    let n = ops.len();
    // The list of operations not placed: `next[head]` is the first; `head` is `n`.
    let head = n;
    let mut next: Vec<usize> = (1..=n + 1).collect();
    let mut prev: Vec<usize> = (0..=n).map(|i| if i == 0 { head } else { i - 1 }).collect();
    next[head] = if n == 0 { head } else { 0 };
    if n > 0 {
        next[n - 1] = head;
        prev[head] = n - 1;
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        next[prev[i]] = next[i];
        prev[next[i]] = prev[i];
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        next[prev[i]] = i;
        prev[next[i]] = i;
    };
    // The responses of completed operations not placed, earliest first.
    let mut pending: std::collections::BTreeSet<(u64, usize)> = ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| op.returned.map(|r| (r, i)))
        .collect();
    let mut placed: u128 = 0;
    let mut value: Option<u64> = None;
    let mut seen: HashSet<(u128, Option<u64>)> = HashSet::new();
    // The placements so far: (operation, the value before it).
    let mut path: Vec<(usize, Option<u64>)> = Vec::new();
    let mut candidate = next[head];
    loop {
        let Some(&(deadline, _)) = pending.first() else {
            return Some(true);
        };
        let mut advanced = false;
        while candidate != head && ops[candidate].invoked <= deadline {
            let i = candidate;
            candidate = next[i];
            let Some(after) = step(&ops[i].op, value) else {
                continue;
            };
            if seen.len() >= states_max {
                return None;
            }
            if !seen.insert((placed ^ label(i), after)) {
                continue;
            }
            placed ^= label(i);
            unlink(&mut next, &mut prev, i);
            if let Some(r) = ops[i].returned {
                pending.remove(&(r, i));
            }
            path.push((i, value));
            value = after;
            candidate = next[head];
            advanced = true;
            break;
        }
        if advanced {
            continue;
        }
        // A dead end: undo the last placement and try the candidates after it (at the root,
        // with nothing placed, there is nothing left to try).
        let Some((last, before)) = path.pop() else {
            return Some(false);
        };
        relink(&mut next, &mut prev, last);
        placed ^= label(last);
        if let Some(r) = ops[last].returned {
            pending.insert((r, last));
        }
        value = before;
        candidate = next[last];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: u64, op: Op, invoked: u64, returned: Option<u64>) -> Operation {
        Operation {
            key,
            op,
            invoked,
            returned,
        }
    }

    #[test]
    fn sequential_reads_of_the_last_write_are_linearizable() {
        let h = [
            op(1, Op::Put(1), 0, Some(1)),
            op(1, Op::Get(Some(1)), 2, Some(3)),
            op(1, Op::Put(2), 4, Some(5)),
            op(1, Op::Get(Some(2)), 6, Some(7)),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_not() {
        let h = [
            op(1, Op::Put(1), 0, Some(1)),
            op(1, Op::Put(2), 2, Some(3)),
            op(1, Op::Get(Some(1)), 4, Some(5)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        // The read overlaps the write: old or new value are both fine.
        for read in [None, Some(7)] {
            let h = [
                op(1, Op::Put(7), 0, Some(10)),
                op(1, Op::Get(read), 5, Some(6)),
            ];
            assert!(check(&h).is_ok(), "{read:?}");
        }
    }

    #[test]
    fn reads_cannot_go_back_once_a_newer_value_was_seen() {
        // Two overlapping writes, both done before the reads; one read sees 2, a later read
        // sees 1: no order explains it. (Had the writes still been running, one could.)
        let h = [
            op(1, Op::Put(1), 0, Some(5)),
            op(1, Op::Put(2), 0, Some(5)),
            op(1, Op::Get(Some(2)), 10, Some(11)),
            op(1, Op::Get(Some(1)), 12, Some(13)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_write_that_never_returned_may_or_may_not_have_happened() {
        let happened = [
            op(1, Op::Put(5), 0, None),
            op(1, Op::Get(Some(5)), 10, Some(11)),
        ];
        assert!(check(&happened).is_ok());
        let not = [
            op(1, Op::Put(5), 0, None),
            op(1, Op::Get(None), 10, Some(11)),
        ];
        assert!(check(&not).is_ok());
        // But a value nobody wrote can never be read.
        let invented = [op(1, Op::Get(Some(9)), 10, Some(11))];
        assert!(check(&invented).is_err());
    }

    fn cas(expect: u64, new: u64, succeeded: Option<bool>) -> Op {
        Op::Cas {
            expect,
            new,
            succeeded,
        }
    }

    #[test]
    fn a_compare_and_set_that_held_changes_the_value_and_one_that_failed_does_not() {
        let h = [
            op(1, Op::Put(1), 0, Some(1)),
            op(1, cas(1, 2, Some(true)), 2, Some(3)),
            op(1, cas(1, 3, Some(false)), 4, Some(5)),
            op(1, Op::Get(Some(2)), 6, Some(7)),
        ];
        assert!(check(&h).is_ok());
    }

    #[test]
    fn a_compare_and_set_answered_wrongly_is_caught() {
        // The key held 1, so the compare must hold.
        let failed_wrongly = [
            op(1, Op::Put(1), 0, Some(1)),
            op(1, cas(1, 2, Some(false)), 2, Some(3)),
        ];
        assert!(check(&failed_wrongly).is_err());
        // The key held 1, not 5: a success is a lie, and so is the read of its value.
        let held_wrongly = [
            op(1, Op::Put(1), 0, Some(1)),
            op(1, cas(5, 2, Some(true)), 2, Some(3)),
            op(1, Op::Get(Some(2)), 4, Some(5)),
        ];
        assert!(check(&held_wrongly).is_err());
    }

    #[test]
    fn a_compare_and_set_that_never_answered_may_or_may_not_have_taken_effect() {
        for read in [1, 2] {
            let h = [
                op(1, Op::Put(1), 0, Some(1)),
                op(1, cas(1, 2, None), 2, None),
                op(1, Op::Get(Some(read)), 10, Some(11)),
            ];
            assert!(check(&h).is_ok(), "{read}");
        }
        // It could not have taken effect on a key that never held what it compared.
        let h = [
            op(1, Op::Put(1), 0, Some(1)),
            op(1, cas(7, 2, None), 2, None),
            op(1, Op::Get(Some(2)), 10, Some(11)),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_long_sequential_history_is_checked_without_deep_recursion() {
        let mut h = Vec::new();
        for i in 0..20_000u64 {
            h.push(op(1, Op::Put(i), 4 * i, Some(4 * i + 1)));
            h.push(op(1, Op::Get(Some(i)), 4 * i + 2, Some(4 * i + 3)));
        }
        assert!(check(&h).is_ok());
        h.push(op(1, Op::Get(Some(3)), 1_000_000, Some(1_000_001)));
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_bounded_search_gives_up_undecided_rather_than_wrong() {
        // Many writes that never answered, then a read nobody could have seen: the search
        // tries every subset before it can say no.
        let mut h: Vec<Operation> = (0..40).map(|i| op(1, Op::Put(i), 0, None)).collect();
        h.push(op(1, Op::Get(Some(99)), 10, Some(11)));
        assert_eq!(
            check_bounded(&h, 1_000),
            Err(Violation::Undecided { key: 1, ops: 41 })
        );
    }

    #[test]
    fn keys_are_checked_independently() {
        let h = [
            op(1, Op::Put(1), 0, Some(1)),
            op(2, Op::Get(None), 2, Some(3)),
            op(2, Op::Put(3), 4, Some(5)),
            op(1, Op::Get(Some(1)), 6, Some(7)),
            op(2, Op::Get(None), 8, Some(9)),
        ];
        assert_eq!(check(&h).map_err(|(k, _)| k), Err(2));
    }
}
