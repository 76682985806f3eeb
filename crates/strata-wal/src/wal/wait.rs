//! Appenders parked until their record is written or durable, and waking exactly those a
//! round finished.

use parking_lot::MutexGuard;

use super::State;
use crate::format::Lsn;

/// A thread waiting in [`Wal::wait_for`].
#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) lsn: Lsn,
    pub(super) durable: bool,
    pub(super) thread: std::thread::Thread,
}

impl State {
    pub(super) fn reached(&self, lsn: Lsn, durable: bool) -> bool {
        if durable {
            self.durable_lsn >= lsn
        } else {
            self.written_lsn >= lsn
        }
    }

    /// Moves into `wake` the threads of the waiters whose records are done (all of them if the
    /// log is poisoned), and one more to lead if others still wait and nobody is writing.
    fn collect_waiters_to_wake(&mut self, wake: &mut Vec<std::thread::Thread>) {
        let poisoned = self.poisoned.is_some();
        let (durable_lsn, written_lsn) = (self.durable_lsn, self.written_lsn);
        let last_lsn = self.next_lsn - 1;
        self.waiters.retain(|w| {
            // After a `truncate_after`, nothing above the cut will ever be written.
            let lsn = w.lsn.min(last_lsn);
            let done = poisoned
                || if w.durable {
                    durable_lsn >= lsn
                } else {
                    written_lsn >= lsn
                };
            if done {
                wake.push(w.thread.clone());
            }
            !done
        });
        // Whoever is still waiting needs a write (or a sync) that nobody is doing: wake one of
        // them to lead it.
        if self.writer.is_some()
            && let Some(next_leader) = self.waiters.first()
        {
            wake.push(next_leader.thread.clone());
        }
    }
}

/// Wakes the waiters a change finished (see [`State::collect_waiters_to_wake`]). The unparks
/// happen with the lock released: each is a syscall, and each woken thread's first act is to
/// take this lock.
pub(super) fn wake_waiters(state: &mut MutexGuard<'_, State>) {
    let mut wake = std::mem::take(&mut state.wake_buffer);
    state.collect_waiters_to_wake(&mut wake);
    if !wake.is_empty() {
        MutexGuard::unlocked(state, || {
            for thread in wake.drain(..) {
                thread.unpark();
            }
        });
    }
    state.wake_buffer = wake;
}
