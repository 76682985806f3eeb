//! The core's snapshots: a leader streams the latest one, in chunks, to a follower that needs
//! entries its log no longer holds; a follower hands the chunks to the driver to stage and
//! installs the snapshot once it is complete.

use std::sync::Arc;

use prost::Message as _;
use strata_snapshot::{Ack, Chunk, Position, SnapshotMeta};

use super::{Error, Raft};
use crate::membership::{ConfState, Membership};
use crate::message::{Message, MessageType, NodeId};
use crate::progress::ProgressState;
use crate::storage::Storage;

/// Heartbeat intervals a snapshot transfer may go without the follower moving forward before
/// the chunks from where it is are sent again: one for a chunk's round trip and one of slack,
/// so that a chunk that is merely slow is not sent twice (doubling the traffic), while a lost
/// one costs at most two heartbeats.
const SNAPSHOT_RESEND_HEARTBEATS: u64 = 2;

impl<S: Storage> Raft<S> {
    // ---- follower ----------------------------------------------------------------------

    pub(super) fn handle_snapshot_chunk(&mut self, m: Message) -> Result<(), Error> {
        let (Some(meta), Some(chunk)) = (&m.snapshot, &m.chunk) else {
            self.counters.malformed += 1;
            return Err(Error::BadMessage {
                reason: "a snapshot chunk without its snapshot",
            });
        };
        if chunk.snapshot_id != meta.id {
            self.counters.malformed += 1;
            return Err(Error::BadMessage {
                reason: "a chunk of another snapshot",
            });
        }
        if meta.last_index <= self.log.committed {
            // Everything it covers is here already: the leader resumes appends after our
            // commit index (never an install loop).
            self.refuse_snapshot(m.from);
            return Ok(());
        }
        self.snapshot_chunks.push(m);
        Ok(())
    }

    fn refuse_snapshot(&mut self, to: NodeId) {
        let mut r = Message::new(MessageType::SnapshotResponse, self.id, to, self.term);
        r.reject = true;
        r.index = self.log.committed;
        self.send(r);
    }

    /// The driver staged a chunk of `meta` from `leader` (one of [`Ready::snapshot_chunks`]),
    /// and its receiver answered `ack`: tells the leader where to go on, or, once the whole
    /// snapshot is installed in the driver's store ([`Ack::Complete`]), installs it here: the
    /// log then starts after it (keeping later entries only if they match, Raft's Figure 13
    /// rule 7), the membership is the snapshot's, and the next [`Ready::snapshot`] tells the
    /// driver to compact its log and restore the state machine.
    ///
    /// # Errors
    ///
    /// [`Error::BadMessage`] (counted) for a snapshot whose membership does not decode.
    ///
    /// [`Ready::snapshot_chunks`]: super::Ready::snapshot_chunks
    /// [`Ready::snapshot`]: super::Ready::snapshot
    pub fn snapshot_staged(
        &mut self,
        leader: NodeId,
        meta: &SnapshotMeta,
        ack: Ack,
    ) -> Result<(), Error> {
        let mut r = Message::new(MessageType::SnapshotResponse, self.id, leader, self.term);
        r.index = meta.last_index;
        let position = |at: Position, done: bool| Chunk {
            snapshot_id: meta.id,
            file: at.file,
            offset: at.offset,
            done,
            ..Chunk::default()
        };
        match ack {
            Ack::Accepted { next } | Ack::Duplicate { next } => {
                r.chunk = Some(position(next, false));
            }
            Ack::Gap { need } => {
                r.chunk = Some(position(need, false));
                r.reject = true;
            }
            Ack::Complete => {
                if meta.last_index <= self.log.committed {
                    self.refuse_snapshot(leader);
                    return Ok(());
                }
                let membership = decode_membership(&meta.membership).map_err(|reason| {
                    self.counters.malformed += 1;
                    Error::BadMessage { reason }
                })?;
                self.log.restore(meta.last_index, meta.last_term);
                self.membership = membership;
                self.snapshot = Some(Arc::new(meta.clone()));
                self.pending_snapshot = Some(meta.clone());
                r.chunk = Some(position(Position { file: 0, offset: 0 }, true));
            }
        }
        self.send(r);
        Ok(())
    }

    /// The driver's store refused a chunk as invalid (past its file's end, a file name that is
    /// not a plain name): a peer's bad message, counted as malformed and dropped. The store is
    /// unchanged, so a sound leader's resend (after two heartbeats without progress) carries
    /// the transfer on; one bad peer never stops this node.
    pub fn snapshot_chunk_refused(&mut self) {
        self.counters.malformed += 1;
    }

    // ---- the driver's snapshots -----------------------------------------------------------

    /// A snapshot the driver took (and installed in its store) or restored: followers that
    /// need entries before the log's start are sent the latest one. An older one than the
    /// latest known is ignored.
    pub fn set_snapshot(&mut self, meta: SnapshotMeta) {
        if self
            .snapshot
            .as_ref()
            .is_none_or(|s| s.last_index < meta.last_index)
        {
            self.snapshot = Some(Arc::new(meta));
        }
    }

    /// The driver could not read a chunk of snapshot `snapshot_id` for follower `to`: the
    /// transfer is dropped, and the next append to it starts one of the latest snapshot.
    pub fn snapshot_unreadable(&mut self, to: NodeId, snapshot_id: u64) {
        if let Some(p) = self.progress.get_mut(&to)
            && p.transfer
                .as_ref()
                .is_some_and(|t| t.meta.id == snapshot_id)
        {
            p.become_probe();
        }
    }

    /// The lowest last index among the snapshots being streamed to followers (that answered
    /// within an election timeout): compacting the log past it would leave a follower that
    /// installs one needing another at once.
    pub fn transfer_floor(&self) -> Option<u64> {
        self.progress
            .values()
            .filter_map(|p| p.transfer.as_ref().map(|t| t.meta.last_index))
            .min()
    }

    /// The latest snapshot this node knows.
    pub fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_deref()
    }

    /// The ids of the snapshots this node needs to keep: the latest, and those being
    /// streamed to followers (older ones, if a newer one was taken meanwhile: a transfer
    /// under way is finished rather than restarted).
    pub fn snapshots_in_use(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.snapshot.iter().map(|m| m.id).collect();
        for p in self.progress.values() {
            if let Some(t) = &p.transfer
                && !ids.contains(&t.meta.id)
            {
                ids.push(t.meta.id);
            }
        }
        ids
    }

    // ---- leader ------------------------------------------------------------------------

    /// Resends stalled snapshot chunks, and stops streaming to followers gone silent
    /// (called on each leader tick).
    pub(super) fn tick_snapshot_transfers(&mut self) {
        // A snapshot chunk not acknowledged within two heartbeats is sent again (with the
        // ones after it). A follower silent for an election timeout is no longer sent it: its
        // set need not be kept, nor the log entries after it (it starts again with the latest
        // snapshot when it answers a heartbeat).
        let (ticks, patience) = (
            self.ticks,
            SNAPSHOT_RESEND_HEARTBEATS * self.config.heartbeat_tick,
        );
        let silence = self.config.election_tick;
        let mut stalled = Vec::new();
        for (id, p) in &mut self.progress {
            if p.transfer.is_some() && ticks.saturating_sub(p.heard_tick) >= silence {
                p.become_probe();
            }
            if let Some(t) = &mut p.transfer
                && ticks.saturating_sub(t.progress_tick) >= patience
            {
                t.sent = t.acked;
                t.resent_from = Some(t.acked);
                t.progress_tick = ticks;
                stalled.push(*id);
            }
        }
        for id in stalled {
            self.send_snapshot_chunks(id);
        }
    }

    /// `to` needs entries the log no longer holds: starts streaming it the latest snapshot.
    pub(super) fn start_snapshot_transfer(&mut self, to: NodeId) {
        // The entries it needs are compacted away: it needs the latest snapshot, if it is
        // there to take it (one silent for an election timeout is sent it when it answers
        // a heartbeat again).
        let (ticks, silence) = (self.ticks, self.config.election_tick);
        let Some(p) = self.progress.get(&to) else {
            return;
        };
        let alive = ticks.saturating_sub(p.heard_tick) < silence;
        if let Some(meta) = self.snapshot.clone()
            && alive
        {
            if let Some(p) = self.progress.get_mut(&to) {
                p.become_snapshot(meta, ticks);
            }
            self.send_snapshot_chunks(to);
        }
    }

    pub(super) fn handle_snapshot_response(&mut self, m: &Message) -> Result<(), Error> {
        let from = m.from;
        let ticks = self.ticks;
        let Some(p) = self.progress.get_mut(&from) else {
            return Ok(());
        };
        let Some(chunk) = &m.chunk else {
            // Not needed: the follower's commit index is past the snapshot. Its log matches
            // up to there; appends go on after it.
            if m.reject && (p.state == ProgressState::Snapshot || p.matched < m.index) {
                p.maybe_update(m.index);
                p.become_replicate();
                self.send_append(from)?;
            }
            return Ok(());
        };
        let Some(t) = &mut p.transfer else {
            return Ok(());
        };
        if t.meta.id != chunk.snapshot_id {
            return Ok(());
        }
        if chunk.done {
            // Installed: replication resumes after the snapshot's last entry.
            let index = t.meta.last_index;
            p.maybe_update(index);
            p.become_replicate();
            return self.send_append(from);
        }
        let at = Position {
            file: chunk.file,
            offset: chunk.offset,
        };
        if at > t.end() {
            return Ok(());
        }
        if at > t.acked {
            t.acked = at;
            t.progress_tick = ticks;
            if t.resent_from.is_some_and(|r| r < at) {
                t.resent_from = None;
            }
        }
        if t.sent < at {
            t.sent = at;
        }
        if m.reject && at < t.acked {
            // The follower lost what it had acknowledged (its staged files did not survive a
            // crash, or one failed its checksum): it is where it says.
            t.acked = at;
        }
        if m.reject && at < t.sent && t.resent_from != Some(at) {
            // A gap (a chunk lost or damaged): go back to where the follower is. Further
            // gap reports at the same place are answered by this resend.
            t.sent = at;
            t.resent_from = Some(at);
            t.progress_tick = ticks;
        }
        self.send_snapshot_chunks(from);
        Ok(())
    }

    /// Sends the chunks that fit in `to`'s window.
    fn send_snapshot_chunks(&mut self, to: NodeId) {
        let chunk_bytes = self.config.snapshot_chunk_bytes as u64;
        let window = self.config.snapshot_inflight_chunks_max.max(1);
        let (id, term, commit) = (self.id, self.term, self.log.committed);
        let Some(t) = self.progress.get_mut(&to).and_then(|p| p.transfer.as_mut()) else {
            return;
        };
        let end = t.end();
        let mut out = Vec::new();
        if t.acked >= end {
            // Nothing but empty files: one message carries the metadata.
            out.push(end);
        }
        while t.sent < end && t.in_flight(chunk_bytes) < window {
            out.push(t.sent);
            t.sent = t.after(t.sent, chunk_bytes);
        }
        let meta = Arc::clone(&t.meta);
        for at in out {
            let mut m = Message::new(MessageType::InstallSnapshot, id, to, term);
            m.index = meta.last_index;
            m.log_term = meta.last_term;
            m.commit = commit;
            m.chunk = Some(Chunk {
                snapshot_id: meta.id,
                file: at.file,
                offset: at.offset,
                ..Chunk::default()
            });
            m.snapshot = Some((*meta).clone());
            self.send(m);
        }
    }
}

/// The membership a snapshot records (its metadata's `membership`: a protobuf [`ConfState`]).
///
/// # Errors
///
/// A reason if the bytes do not decode or describe no valid configuration.
pub fn decode_membership(bytes: &[u8]) -> Result<Membership, &'static str> {
    let cs = ConfState::decode(bytes).map_err(|_| "snapshot membership does not decode")?;
    Membership::from_conf_state(&cs)
}
