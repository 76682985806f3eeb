//! The leader's view of each follower's log.

use std::collections::VecDeque;
use std::sync::Arc;

use strata_snapshot::{Position, SnapshotMeta};

/// How the leader sends to a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Where the follower's log matches is not known: one append at a time, each answered
    /// before the next.
    Probe,
    /// The follower is known to match up to `matched`: appends are pipelined, within the
    /// in-flight window.
    Replicate,
    /// The follower needs entries the leader no longer has: the leader streams it a snapshot,
    /// and sends no appends until it is installed.
    Snapshot,
}

/// A snapshot being streamed to one follower.
#[derive(Debug, Clone)]
pub(crate) struct Transfer {
    pub meta: Arc<SnapshotMeta>,
    /// Where the follower said it needs data from.
    pub acked: Position,
    /// The next chunk to send.
    pub sent: Position,
    /// The leader's tick when the follower last moved forward (or the chunks were resent).
    pub progress_tick: u64,
    /// Where the chunks were last resent from: a second gap report at the same place is one
    /// the resend already answers.
    pub resent_from: Option<Position>,
}

impl Transfer {
    /// Where the transfer ends.
    pub fn end(&self) -> Position {
        Position {
            file: self.meta.files.len() as u32,
            offset: 0,
        }
    }

    /// The position after the chunk at `at`, `chunk_bytes` long (empty files take no chunk).
    pub fn after(&self, at: Position, chunk_bytes: u64) -> Position {
        let Some(info) = self.meta.files.get(at.file as usize) else {
            return self.end();
        };
        let end = at.offset.saturating_add(chunk_bytes.max(1)).min(info.size);
        if end < info.size {
            return Position {
                file: at.file,
                offset: end,
            };
        }
        self.skip_empty(at.file + 1)
    }

    /// The first position at or after file `file` with data.
    pub fn skip_empty(&self, mut file: u32) -> Position {
        while self
            .meta
            .files
            .get(file as usize)
            .is_some_and(|f| f.size == 0)
        {
            file += 1;
        }
        Position { file, offset: 0 }
    }

    /// Chunks sent and not yet acknowledged.
    pub fn in_flight(&self, chunk_bytes: u64) -> usize {
        let mut at = self.acked;
        let mut n = 0;
        while at < self.sent {
            at = self.after(at, chunk_bytes);
            n += 1;
        }
        n
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub matched: u64,
    pub next: u64,
    pub state: ProgressState,
    /// In probe state: an append was sent and not yet answered.
    pub probe_sent: bool,
    /// Appends in flight: last index and bytes of each.
    pub inflight: VecDeque<(u64, usize)>,
    pub inflight_bytes: usize,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// The leader's tick when it sent the latest heartbeat this follower answered.
    pub last_ack_tick: Option<u64>,
    pub is_learner: bool,
    /// The leader's tick when it last heard from the follower (or began to lead it).
    pub heard_tick: u64,
    /// In snapshot state: the transfer.
    pub transfer: Option<Transfer>,
}

impl Progress {
    pub fn new(next: u64, is_learner: bool) -> Self {
        Self {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: false,
            last_ack_tick: None,
            is_learner,
            heard_tick: 0,
            transfer: None,
        }
    }

    pub fn paused(&self, msgs_max: usize, bytes_max: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => {
                self.inflight.len() >= msgs_max || self.inflight_bytes >= bytes_max
            }
            ProgressState::Snapshot => true,
        }
    }

    /// Starts streaming `meta`.
    pub fn become_snapshot(&mut self, meta: Arc<SnapshotMeta>, tick: u64) {
        self.state = ProgressState::Snapshot;
        self.inflight.clear();
        self.inflight_bytes = 0;
        self.probe_sent = false;
        let mut transfer = Transfer {
            meta,
            acked: Position { file: 0, offset: 0 },
            sent: Position { file: 0, offset: 0 },
            progress_tick: tick,
            resent_from: None,
        };
        transfer.acked = transfer.skip_empty(0);
        transfer.sent = transfer.acked;
        self.transfer = Some(transfer);
    }

    pub fn become_probe(&mut self) {
        self.transfer = None;
        self.state = ProgressState::Probe;
        self.next = self.matched + 1;
        self.probe_sent = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    pub fn become_replicate(&mut self) {
        self.transfer = None;
        self.state = ProgressState::Replicate;
        self.next = self.matched + 1;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// An append ending at `last` (with `bytes` of entries) was sent.
    pub fn sent(&mut self, last: u64, bytes: usize, carried_entries: bool) {
        match self.state {
            ProgressState::Replicate if carried_entries => {
                self.next = last + 1;
                self.inflight.push_back((last, bytes));
                self.inflight_bytes += bytes;
            }
            ProgressState::Replicate | ProgressState::Snapshot => {}
            ProgressState::Probe => self.probe_sent = true,
        }
    }

    /// The follower answered a heartbeat while its appends may have been lost: with the
    /// window full, free its oldest slot so that replication goes on (a gap is then rejected
    /// and probed, as usual).
    pub fn free_first_if_full(&mut self, msgs_max: usize, bytes_max: usize) {
        if self.state == ProgressState::Replicate
            && self.paused(msgs_max, bytes_max)
            && let Some((_, bytes)) = self.inflight.pop_front()
        {
            self.inflight_bytes -= bytes;
        }
    }

    /// The follower accepted up to `index`. Whether that is news.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        while self
            .inflight
            .front()
            .is_some_and(|&(last, _)| last <= index)
        {
            if let Some((_, bytes)) = self.inflight.pop_front() {
                self.inflight_bytes -= bytes;
            }
        }
        updated
    }

    /// The follower rejected the append after `rejected`, and may match at `hint`. Whether
    /// that changes anything (a rejection of an old append does not).
    pub fn maybe_decrease(&mut self, rejected: u64, hint: u64) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.matched {
                    return false;
                }
                self.become_probe();
                self.next = (hint + 1).clamp(self.matched + 1, rejected.max(self.matched + 1));
                true
            }
            ProgressState::Probe => {
                if self.next == 0 || self.next - 1 != rejected {
                    return false;
                }
                self.next = (hint + 1).min(rejected).max(self.matched + 1);
                self.probe_sent = false;
                true
            }
            // Appends sent before the snapshot started: their answers no longer matter.
            ProgressState::Snapshot => false,
        }
    }
}
