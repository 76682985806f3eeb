//! Property and concurrency tests for `LamportClock`'s invariants.

use std::sync::Arc;
use std::thread;

use proptest::prelude::*;
use strata_clock::{LAMPORT_TIME_MAX, LamportClock};

#[derive(Debug, Clone)]
enum Op {
    Increment,
    Witness(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Increment),
        // Mostly small values so witnesses interleave with increments, plus the edges.
        (0u64..64).prop_map(Op::Witness),
        any::<u64>().prop_map(Op::Witness),
        Just(Op::Witness(LAMPORT_TIME_MAX)),
        Just(Op::Witness(LAMPORT_TIME_MAX - 1)),
    ]
}

proptest! {
    #[test]
    fn time_is_monotonic_under_any_sequence_of_operations(
        start in prop_oneof![0u64..100, (LAMPORT_TIME_MAX - 3)..=LAMPORT_TIME_MAX],
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let clock = LamportClock::starting_at(start);
        let mut previous = clock.time();
        for op in ops {
            match op {
                Op::Increment => {
                    let returned = clock.increment();
                    prop_assert_eq!(returned, clock.time());
                    if previous < LAMPORT_TIME_MAX {
                        prop_assert_eq!(returned, previous + 1, "increment advances by exactly one");
                    } else {
                        prop_assert_eq!(returned, LAMPORT_TIME_MAX, "increment saturates");
                    }
                }
                Op::Witness(v) => clock.witness(v),
            }
            let now = clock.time();
            prop_assert!(now >= previous, "clock went backwards: {previous} -> {now}");
            previous = now;
        }
    }

    #[test]
    fn after_witness_time_is_greater_than_the_witnessed_value(
        start in any::<u64>(),
        v in prop_oneof![any::<u64>(), 0u64..1000],
    ) {
        let clock = LamportClock::starting_at(start);
        clock.witness(v);
        if v < LAMPORT_TIME_MAX {
            prop_assert!(clock.time() > v);
        } else {
            prop_assert_eq!(clock.time(), LAMPORT_TIME_MAX);
        }
        prop_assert_eq!(clock.time(), start.max(v.saturating_add(1)));
    }
}

/// Several threads increment and witness at once; no increment is lost, every thread sees the
/// clock move forward, and the clock ends past every witnessed value.
#[test]
fn concurrent_increments_and_witnesses_lose_nothing() {
    const THREADS: u64 = 4;
    const INCREMENTS_PER_THREAD: u64 = 20_000;

    let clock = Arc::new(LamportClock::new());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let clock = Arc::clone(&clock);
            thread::spawn(move || {
                let mut last_seen = 0;
                let mut max_witnessed = 0;
                for i in 0..INCREMENTS_PER_THREAD {
                    let now = clock.increment();
                    assert!(
                        now > last_seen,
                        "increment did not advance: {last_seen} -> {now}"
                    );
                    last_seen = now;
                    if i % 97 == t {
                        let v = now + 5;
                        clock.witness(v);
                        max_witnessed = max_witnessed.max(v);
                        let after = clock.time();
                        assert!(after > v, "witness({v}) left the clock at {after}");
                        last_seen = after;
                    }
                }
                max_witnessed
            })
        })
        .collect();
    let max_witnessed = handles
        .into_iter()
        .map(|h| h.join().expect("thread panicked"))
        .max()
        .unwrap_or(0);

    let end = clock.time();
    // Every increment added exactly one; witnesses can only add more.
    assert!(
        end >= THREADS * INCREMENTS_PER_THREAD,
        "lost increments: {end}"
    );
    assert!(end > max_witnessed);
}
