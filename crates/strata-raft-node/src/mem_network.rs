//! [`MemNetwork`]: an in-process [`Transport`] for tests and examples.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use strata_raft::{Message, NodeId};

use crate::Transport;
use crate::inbox::{INBOX_CHUNKS_MAX, INBOX_MESSAGES_MAX, Inbox, InboxSender, inbox_with};

/// An in-process network: each node's inbox, reached directly (its bounded lanes are the
/// per-peer queues); nodes can be cut off for tests.
#[derive(Debug, Default)]
pub struct MemNetwork {
    inboxes: Mutex<HashMap<NodeId, InboxSender>>,
    cut_off: Mutex<HashSet<NodeId>>,
}

/// Node `id`'s end of a [`MemNetwork`]: its [`Transport`].
#[derive(Debug)]
pub struct MemTransport {
    net: Arc<MemNetwork>,
    id: NodeId,
    /// Peers a message could not be delivered to since the node last asked.
    unreachable: Mutex<BTreeSet<NodeId>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Joins node `id` (again, after a restart): its transport and its inbox (give both to
    /// [`RaftNode::start`](crate::RaftNode::start)).
    pub fn join(self: &Arc<Self>, id: NodeId) -> (Arc<MemTransport>, Inbox) {
        self.join_with(id, INBOX_MESSAGES_MAX, INBOX_CHUNKS_MAX)
    }

    /// As [`join`](Self::join), with an inbox whose lanes hold `messages_max` messages and
    /// `chunks_max` snapshot chunks.
    pub fn join_with(
        self: &Arc<Self>,
        id: NodeId,
        messages_max: usize,
        chunks_max: usize,
    ) -> (Arc<MemTransport>, Inbox) {
        let (sender, inbox) = inbox_with(messages_max, chunks_max);
        self.inboxes.lock().insert(id, sender);
        let transport = MemTransport {
            net: Arc::clone(self),
            id,
            unreachable: Mutex::new(BTreeSet::new()),
        };
        (Arc::new(transport), inbox)
    }

    /// Cuts node `id` off (every message to or from it is lost), or reconnects it.
    pub fn set_cut_off(&self, id: NodeId, cut: bool) {
        let mut set = self.cut_off.lock();
        if cut {
            set.insert(id);
        } else {
            set.remove(&id);
        }
    }

    /// Messages dropped at node `id`'s inbox because a lane was full.
    pub fn dropped(&self, id: NodeId) -> u64 {
        self.inboxes.lock().get(&id).map_or(0, InboxSender::dropped)
    }
}

impl Transport for MemTransport {
    fn send(&self, messages: Vec<Message>) {
        let mut lost = Vec::new();
        {
            let cut = self.net.cut_off.lock();
            let inboxes = self.net.inboxes.lock();
            for m in messages {
                let to = m.to;
                let delivered = !cut.contains(&self.id)
                    && !cut.contains(&to)
                    && inboxes.get(&to).is_some_and(|inbox| inbox.deliver(m));
                if !delivered {
                    lost.push(to);
                }
            }
        }
        if !lost.is_empty() {
            self.unreachable.lock().extend(lost);
        }
    }

    fn take_unreachable(&self) -> Vec<NodeId> {
        std::mem::take(&mut *self.unreachable.lock())
            .into_iter()
            .collect()
    }
}
