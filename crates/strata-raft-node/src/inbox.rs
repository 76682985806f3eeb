//! A node's inbox: two bounded lanes, one for Raft's small messages and one for snapshot
//! chunks, filled by a transport without ever waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use strata_raft::{Message, MessageType};
use tokio::sync::mpsc;

/// Messages (votes, appends, heartbeats and their answers) waiting in one inbox, at most. An
/// append carries up to `Config::append_bytes_max` (1 MiB by default) and a leader keeps up to
/// `Config::inflight_msgs_max` (256) of them in flight to one follower, so a full window fits.
pub const INBOX_MESSAGES_MAX: usize = 1024;

/// Snapshot chunks waiting in one inbox, at most: each holds up to
/// `Config::snapshot_chunk_bytes` (1 MiB by default), and a leader keeps
/// `Config::snapshot_inflight_chunks_max` (4) in flight; 16 MiB at the defaults.
pub const INBOX_CHUNKS_MAX: usize = 16;

/// The sending half of an [`Inbox`]: what a transport delivers received messages to. Never
/// waits: a message that finds its lane full is dropped and counted.
#[derive(Debug, Clone)]
pub struct InboxSender {
    messages: mpsc::Sender<Message>,
    chunks: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
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
    /// Delivers `message` to its lane; false if it was dropped (the lane is full, or the node
    /// stopped).
    pub fn deliver(&self, message: Message) -> bool {
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

    /// Whether the node reading the inbox has stopped.
    pub fn is_closed(&self) -> bool {
        self.messages.is_closed()
    }
}
