//! [`MemNetwork`]: an in-process [`Transport`] for tests and examples.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::Transport;
use crate::message::{Message, NodeId};

/// An in-process network: one inbox per node; nodes can be cut off for tests.
#[derive(Debug, Default)]
pub struct MemNetwork {
    inboxes: Mutex<HashMap<NodeId, mpsc::UnboundedSender<Message>>>,
    cut_off: Mutex<HashSet<NodeId>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Joins node `id`: the receiver is its inbox (give it to
    /// [`RaftNode::start`](super::RaftNode::start)).
    pub fn join(&self, id: NodeId) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inboxes.lock().insert(id, tx);
        rx
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
}

#[async_trait::async_trait]
impl Transport for MemNetwork {
    async fn send(&self, messages: Vec<Message>) {
        let cut = self.cut_off.lock().clone();
        let inboxes = self.inboxes.lock();
        for m in messages {
            if cut.contains(&m.from) || cut.contains(&m.to) {
                continue;
            }
            if let Some(inbox) = inboxes.get(&m.to) {
                let _ = inbox.send(m);
            }
        }
    }
}
