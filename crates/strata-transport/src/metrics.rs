//! Counters per peer and lane, as plain numbers the server exports.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use strata_raft::NodeId;

use crate::frame::Lane;

/// One lane's counters toward one peer (outbound) or from it (inbound).
#[derive(Debug, Default)]
pub(crate) struct LaneCounters {
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) frames_received: AtomicU64,
}

/// Adds `n` to `counter`.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl LaneCounters {
    pub(crate) fn snapshot(&self) -> LaneMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LaneMetrics {
            bytes_sent: get(&self.bytes_sent),
            frames_sent: get(&self.frames_sent),
            dropped: get(&self.dropped),
            connects: get(&self.connects),
            connect_failures: get(&self.connect_failures),
            bytes_received: get(&self.bytes_received),
            frames_received: get(&self.frames_received),
        }
    }
}

/// One lane's counters, read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneMetrics {
    /// Frame bytes written to the peer (length prefixes included).
    pub bytes_sent: u64,
    /// Frames written to the peer (handshakes not counted).
    pub frames_sent: u64,
    /// Messages dropped because the lane's queue was full.
    pub dropped: u64,
    /// Connections established (the first, then each reconnect).
    pub connects: u64,
    /// Attempts to connect that failed (refused, timed out, or refused at the handshake).
    pub connect_failures: u64,
    /// Frame bytes read from the peer.
    pub bytes_received: u64,
    /// Frames read from the peer and handed to Raft.
    pub frames_received: u64,
}

/// The transport's counters, read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// Per peer and lane.
    pub lanes: BTreeMap<(NodeId, Lane), LaneMetrics>,
    /// Connections refused at the handshake (another cluster, an unknown node, another
    /// version, a wrong recipient) or before it (no handshake in time, TLS).
    pub refused: u64,
    /// Connections closed for bad input after the handshake: an oversized frame, one that does
    /// not decode, or a message that claims another sender.
    pub bad_frames: u64,
}
