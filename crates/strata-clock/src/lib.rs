//! A Lamport clock with HashiCorp Serf's semantics that never wraps.
//!
//! A Lamport clock orders events across processes without synchronised wall clocks: every
//! process keeps a counter, [`increment`](LamportClock::increment)s it for each local event it
//! stamps, and [`witness`](LamportClock::witness)es every time it receives from a peer so its own
//! counter moves past it. Serf uses three of them (member, user-event and query clocks) and
//! `strata-snaplog` records them so a restart does not replay old events.
//!
//! # Invariants
//!
//! - **Monotonic.** [`time`](LamportClock::time) never decreases, under any interleaving of
//!   concurrent `increment` and `witness` calls. Every operation is one compare-and-swap loop on
//!   an [`AtomicU64`]; there is no lock.
//! - **Witness moves past.** After `witness(v)` returns, `time() > v`, for every `v < u64::MAX`.
//! - **Saturates, never wraps.** Serf's clock is a bare `atomic.AddUint64`, so at `u64::MAX` it
//!   wraps to 0 and every later event looks older than every earlier one. This clock *saturates*
//!   at [`LAMPORT_TIME_MAX`]: `increment` at the maximum returns the maximum again and `witness`
//!   of the maximum leaves the clock there. A clock that stops advancing is still monotonic; a
//!   clock that wraps is not. Reaching the maximum needs 2^64 events, or a peer that sends
//!   `u64::MAX`; callers that want to notice use [`checked_increment`](LamportClock::checked_increment)
//!   or [`is_exhausted`](LamportClock::is_exhausted).
//!
//! This crate knows nothing about files, networks or what the times order.
//!
//! # Examples
//!
//! ```
//! use strata_clock::LamportClock;
//!
//! let clock = LamportClock::new();
//! assert_eq!(clock.time(), 0);
//! assert_eq!(clock.increment(), 1);
//!
//! // A message stamped 41 arrives from a peer: our next event must order after it.
//! clock.witness(41);
//! assert_eq!(clock.time(), 42);
//!
//! // Witnessing an older time changes nothing.
//! clock.witness(7);
//! assert_eq!(clock.time(), 42);
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

use std::sync::atomic::{AtomicU64, Ordering};

/// A Lamport timestamp.
///
/// A plain `u64` rather than a newtype: it is written to disk and to the wire as a decimal or
/// fixed-width integer, and every caller does arithmetic-free comparisons on it.
pub type LamportTime = u64;

/// The largest time a [`LamportClock`] can hold; it saturates here instead of wrapping.
pub const LAMPORT_TIME_MAX: LamportTime = u64::MAX;

/// A thread-safe, lock-free Lamport clock.
///
/// Share it with `Arc<LamportClock>`; every method takes `&self`.
#[derive(Debug, Default)]
pub struct LamportClock {
    counter: AtomicU64,
}

impl LamportClock {
    /// A clock at time 0.
    pub const fn new() -> Self {
        Self::starting_at(0)
    }

    /// A clock at `time`, for example one restored from a snapshot log.
    pub const fn starting_at(time: LamportTime) -> Self {
        Self {
            counter: AtomicU64::new(time),
        }
    }

    /// The current time.
    pub fn time(&self) -> LamportTime {
        self.counter.load(Ordering::Acquire)
    }

    /// Advances the clock by one and returns the new time.
    ///
    /// At [`LAMPORT_TIME_MAX`] the clock saturates: this returns `LAMPORT_TIME_MAX` and the clock
    /// stays there (see the crate docs for why it does not wrap).
    pub fn increment(&self) -> LamportTime {
        self.checked_increment().unwrap_or(LAMPORT_TIME_MAX)
    }

    /// Advances the clock by one and returns the new time, or `None` (leaving the clock at
    /// [`LAMPORT_TIME_MAX`]) if it is already at the maximum.
    pub fn checked_increment(&self) -> Option<LamportTime> {
        self.counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(1)
            })
            .ok()
            .map(|previous| previous + 1)
    }

    /// Records that a time `v` was seen elsewhere: if `v >= time()`, the clock moves to `v + 1`.
    ///
    /// Afterwards `time() > v`, unless `v` is [`LAMPORT_TIME_MAX`], where the clock saturates.
    /// Concurrent callers may race; the compare-and-swap loop makes the clock end at the largest
    /// `v + 1` any of them asked for, never lower.
    pub fn witness(&self, v: LamportTime) {
        let target = v.saturating_add(1);
        // `fetch_max` is exactly "move forward to `target` unless already past it", and it is a
        // single atomic instruction on the platforms we run on.
        self.counter.fetch_max(target, Ordering::AcqRel);
    }

    /// True once the clock has reached [`LAMPORT_TIME_MAX`] and can no longer advance.
    pub fn is_exhausted(&self) -> bool {
        self.time() == LAMPORT_TIME_MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_returns_the_new_time() {
        let clock = LamportClock::new();
        assert_eq!(clock.increment(), 1);
        assert_eq!(clock.increment(), 2);
        assert_eq!(clock.time(), 2);
    }

    #[test]
    fn witness_moves_past_newer_times_only() {
        let clock = LamportClock::starting_at(10);
        clock.witness(3);
        assert_eq!(clock.time(), 10);
        clock.witness(10);
        assert_eq!(clock.time(), 11);
        clock.witness(20);
        assert_eq!(clock.time(), 21);
    }

    #[test]
    fn saturates_at_the_maximum_instead_of_wrapping() {
        let clock = LamportClock::starting_at(LAMPORT_TIME_MAX - 1);
        assert_eq!(clock.checked_increment(), Some(LAMPORT_TIME_MAX));
        assert!(clock.is_exhausted());
        assert_eq!(clock.checked_increment(), None);
        assert_eq!(clock.increment(), LAMPORT_TIME_MAX);
        assert_eq!(clock.time(), LAMPORT_TIME_MAX);

        let clock = LamportClock::new();
        clock.witness(LAMPORT_TIME_MAX);
        assert_eq!(clock.time(), LAMPORT_TIME_MAX);
        clock.witness(5);
        assert_eq!(clock.time(), LAMPORT_TIME_MAX);
    }
}
