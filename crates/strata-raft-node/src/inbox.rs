//! A node's inbox: two bounded lanes, one for Raft's small messages and one for snapshot
//! chunks, filled by a transport without ever waiting.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use strata_raft::{Message, MessageType, NodeId};
use tokio::sync::mpsc;

/// Messages (votes, appends, heartbeats and their answers) waiting in one inbox, at most. An
/// append carries up to `Config::append_bytes_max` (1 MiB by default) and a leader keeps up to
/// `Config::inflight_msgs_max` (256) of them in flight to one follower, so a full window fits.
pub const INBOX_MESSAGES_MAX: usize = 1024;

/// Snapshot chunks waiting in one inbox, at most: each holds up to
/// `Config::snapshot_chunk_bytes` (1 MiB by default), and a leader keeps
/// `Config::snapshot_inflight_chunks_max` (4) in flight; 16 MiB at the defaults.
pub const INBOX_CHUNKS_MAX: usize = 16;

/// The longest silence of a peer that [`PeerActivity`] does not count as a break, unless set
/// otherwise ([`PeerActivity::set_gap`]): the default election timeout.
pub const ACTIVITY_GAP_DEFAULT: Duration = Duration::from_secs(1);

/// Senders [`PeerActivity`] keeps, at most (far more than any cluster's members).
pub const ACTIVITY_PEERS_MAX: usize = 1024;

/// Since when each peer's messages have been arriving without a break: etcd's "active since"
/// of a peer, which its membership checks ask (`--strict-reconfig-check`). A peer is active
/// while its last message is at most the gap old; its activity started at the first message
/// after the last silence longer than the gap. A leader hears from every follower at least
/// every heartbeat; a follower only from its leader.
#[derive(Debug)]
pub struct PeerActivity {
    /// Per peer: the first message of its current run, and its last message.
    peers: Mutex<HashMap<NodeId, (Instant, Instant)>>,
    gap_nanos: AtomicU64,
}

impl Default for PeerActivity {
    fn default() -> Self {
        PeerActivity {
            peers: Mutex::new(HashMap::new()),
            gap_nanos: AtomicU64::new(ACTIVITY_GAP_DEFAULT.as_nanos() as u64),
        }
    }
}

impl PeerActivity {
    /// Sets the longest silence that does not break a peer's run (the election timeout suits:
    /// a follower silent that long is what check-quorum counts as gone).
    pub fn set_gap(&self, gap: Duration) {
        self.gap_nanos.store(
            u64::try_from(gap.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn gap(&self) -> Duration {
        Duration::from_nanos(self.gap_nanos.load(Ordering::Relaxed))
    }

    /// Notes a message from `peer` received at `now`.
    pub fn record(&self, peer: NodeId, now: Instant) {
        let gap = self.gap();
        let mut peers = self.peers.lock();
        if peers.len() >= ACTIVITY_PEERS_MAX && !peers.contains_key(&peer) {
            // Bounded whatever ids senders claim: the longest silent makes room.
            if let Some(stalest) = peers.iter().min_by_key(|(_, run)| run.1).map(|(&id, _)| id) {
                peers.remove(&stalest);
            }
        }
        let run = peers.entry(peer).or_insert((now, now));
        if now.saturating_duration_since(run.1) > gap {
            run.0 = now;
        }
        run.1 = run.1.max(now);
    }

    /// Since when `peer` has been active, as of `now`; `None` if it is not active (never heard
    /// from, or silent for longer than the gap).
    pub fn active_since(&self, peer: NodeId, now: Instant) -> Option<Instant> {
        let gap = self.gap();
        let peers = self.peers.lock();
        let &(first, last) = peers.get(&peer)?;
        (now.saturating_duration_since(last) <= gap).then_some(first)
    }
}

/// The sending half of an [`Inbox`]: what a transport delivers received messages to. Never
/// waits: a message that finds its lane full is dropped and counted.
#[derive(Debug, Clone)]
pub struct InboxSender {
    messages: mpsc::Sender<Message>,
    chunks: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
    activity: Arc<PeerActivity>,
}

/// A node's inbox, given to [`RaftNode::start`](crate::RaftNode::start).
#[derive(Debug)]
pub struct Inbox {
    pub(crate) messages: mpsc::Receiver<Message>,
    pub(crate) chunks: mpsc::Receiver<Message>,
}

/// An inbox with the default lane sizes ([`INBOX_MESSAGES_MAX`], [`INBOX_CHUNKS_MAX`]).
pub fn inbox() -> (InboxSender, Inbox) {
    inbox_with(INBOX_MESSAGES_MAX, INBOX_CHUNKS_MAX)
}

/// An inbox whose lanes hold `messages_max` messages and `chunks_max` snapshot chunks (each at
/// least 1).
pub fn inbox_with(messages_max: usize, chunks_max: usize) -> (InboxSender, Inbox) {
    let (messages_tx, messages) = mpsc::channel(messages_max.max(1));
    let (chunks_tx, chunks) = mpsc::channel(chunks_max.max(1));
    (
        InboxSender {
            messages: messages_tx,
            chunks: chunks_tx,
            dropped: Arc::new(AtomicU64::new(0)),
            activity: Arc::new(PeerActivity::default()),
        },
        Inbox { messages, chunks },
    )
}

impl Inbox {
    /// The next message from either lane, Raft's own messages first; `None` once every
    /// sender is gone. (The node reads its inbox itself; this is for transports' tests and
    /// tools.)
    pub async fn recv(&mut self) -> Option<Message> {
        tokio::select! {
            biased;
            Some(m) = self.messages.recv() => Some(m),
            Some(m) = self.chunks.recv() => Some(m),
            else => None,
        }
    }
}

impl InboxSender {
    /// Delivers `message` to its lane, noting its sender as active; false if it was dropped
    /// (the lane is full, or the node stopped).
    pub fn deliver(&self, message: Message) -> bool {
        self.activity.record(message.from, Instant::now());
        let lane = if message.kind() == MessageType::InstallSnapshot {
            &self.chunks
        } else {
            &self.messages
        };
        let delivered = lane.try_send(message).is_ok();
        if !delivered {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        delivered
    }

    /// Messages dropped so far because a lane was full or the node had stopped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Since when each peer has been sending to this inbox.
    pub fn activity(&self) -> Arc<PeerActivity> {
        Arc::clone(&self.activity)
    }

    /// Whether the node reading the inbox has stopped.
    pub fn is_closed(&self) -> bool {
        self.messages.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_active_since_its_first_message_after_a_silence_longer_than_the_gap() {
        let activity = PeerActivity::default();
        activity.set_gap(Duration::from_millis(100));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(activity.active_since(2, t0), None, "never heard from");
        activity.record(2, at(0));
        activity.record(2, at(90));
        activity.record(2, at(180));
        assert_eq!(activity.active_since(2, at(200)), Some(at(0)));
        assert_eq!(
            activity.active_since(2, at(281)),
            None,
            "silent past the gap"
        );
        assert_eq!(activity.active_since(3, at(200)), None, "another peer");
        activity.record(2, at(400));
        assert_eq!(
            activity.active_since(2, at(450)),
            Some(at(400)),
            "a new run"
        );
    }

    #[test]
    fn peer_activity_is_bounded_whatever_ids_senders_claim() {
        let activity = PeerActivity::default();
        let t0 = Instant::now();
        for id in 0..(ACTIVITY_PEERS_MAX as u64 + 10) {
            activity.record(id, t0 + Duration::from_micros(id));
        }
        assert_eq!(activity.peers.lock().len(), ACTIVITY_PEERS_MAX);
        let newest = ACTIVITY_PEERS_MAX as u64 + 9;
        let now = t0 + Duration::from_millis(1);
        assert!(
            activity.active_since(newest, now).is_some(),
            "the newest is kept"
        );
        assert!(
            activity.active_since(0, now).is_none(),
            "the stalest made room"
        );
    }
}
