//! A linearizability checker for key-value histories (Wing and Gong's search, with Lowe's
//! memoization of visited states), used by the simulator.
//!
//! A history is a list of operations, each invoked at some time and, if it completed,
//! answered at a later time. The history is linearizable if every operation can be placed at
//! one instant between its invocation and its response so that the results match a
//! sequential key-value store. An operation that never completed may take effect at any time
//! after its invocation, or never. Keys are independent (linearizability is compositional),
//! so each key is checked on its own.

use std::collections::{BTreeMap, HashSet};

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Set the key to the value.
    Put(u64),
    /// Read the key: what it returned (`None`: absent), or unknown if it never completed.
    Get(Option<u64>),
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

/// Checks a history; on failure, returns the key whose operations cannot be linearized.
///
/// # Errors
///
/// The first key with no linearization, and its operations.
pub fn check(history: &[Operation]) -> Result<(), (u64, Vec<Operation>)> {
    let mut by_key: BTreeMap<u64, Vec<Operation>> = BTreeMap::new();
    for op in history {
        // A read that never answered constrains nothing.
        if op.returned.is_none() && matches!(op.op, Op::Get(_)) {
            continue;
        }
        by_key.entry(op.key).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        if !check_key(&ops) {
            return Err((key, ops));
        }
    }
    Ok(())
}

/// The search for one key: depth first over which operation takes effect next, among those
/// invoked before every pending operation's response; states already seen (the set of
/// operations done, and the value) are not explored again.
fn check_key(ops: &[Operation]) -> bool {
    let n = ops.len();
    let mut done = vec![false; n];
    let mut seen: HashSet<(Vec<bool>, Option<u64>)> = HashSet::new();
    search(ops, &mut done, None, &mut seen)
}

fn search(
    ops: &[Operation],
    done: &mut Vec<bool>,
    value: Option<u64>,
    seen: &mut HashSet<(Vec<bool>, Option<u64>)>,
) -> bool {
    // Finished when every completed operation took effect (pending ones may be left out).
    if ops
        .iter()
        .zip(done.iter())
        .all(|(op, &d)| d || op.returned.is_none())
    {
        return true;
    }
    if !seen.insert((done.clone(), value)) {
        return false;
    }
    // An operation may go next only if it was invoked before every remaining completed
    // operation returned.
    let deadline = ops
        .iter()
        .zip(done.iter())
        .filter(|(_, d)| !**d)
        .filter_map(|(op, _)| op.returned)
        .min()
        .unwrap_or(u64::MAX);
    for i in 0..ops.len() {
        if done[i] || ops[i].invoked > deadline {
            continue;
        }
        let next = match ops[i].op {
            Op::Put(v) => Some(Some(v)),
            Op::Get(read) => (read == value).then_some(value),
        };
        let Some(next) = next else { continue };
        done[i] = true;
        if search(ops, done, next, seen) {
            return true;
        }
        done[i] = false;
    }
    false
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
