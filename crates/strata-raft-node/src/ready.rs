//! The one function that acts on a [`Ready`], in the order Raft's safety needs: the
//! [`RaftNode`](crate::RaftNode) runs it over its durable log and snapshot store, and the
//! simulator (`sim`, with the `sim` feature) over memory, so that the order the simulator
//! checks is the order the node uses.
//!
//! The order, and why:
//! 1. A snapshot installed from the leader: the log starts after it (keeping the entries after
//!    it only if they match) and the state machine is to be restored from it, before anything
//!    after it is persisted or applied.
//! 2. `messages` go out at once (with the data of their snapshot chunks read in): a leader's
//!    appends need not wait for its own persist, so followers persist in parallel with it.
//! 3. Committed entries and confirmed reads are handed to the state machine, also before the
//!    persist: the core hands out only entries this node had persisted before this `Ready`
//!    (and committed ones are never replaced), so applying them need not wait for this
//!    `Ready`'s appends (etcd applies in parallel with its WAL write too). Waiting would make
//!    a write under load wait for two `fdatasync`s, its own and the next batch's. A restart
//!    that finds the state machine past the durable commit index takes it as committed.
//! 4. The entries, then the hard state, are persisted: a commit index must never be durable
//!    before the entries it covers (after a crash in between, a restart would apply entries
//!    that a leader had replaced).
//! 5. Only then `persisted_messages` go out (votes and acknowledgements promise what is now
//!    durable).
//! 6. The core is told the persist is done ([`Raft::advance`]).
//! 7. Received snapshot chunks are staged, and each outcome reported to the core.
//!
//! [`begin`] does 1–3, [`persist`] 4, [`finish`] 5–7; [`process_ready`] does all three. The
//! simulator may run them apart (a persist that takes time, and a crash before it ends).

use strata_raft::{Message, MessageType, NodeId, Raft, ReadState, Ready, Storage};
use strata_raft_log::{Entry, HardState};
use strata_snapshot::{Ack, SnapshotMeta};

/// What processing a `Ready` acts on: a node's storage, network, state machine and snapshot
/// store. The storage and snapshot steps may block (the node runs [`process_ready`] on
/// Tokio's blocking pool when [`needs_io`] says so); [`send`](ReadyIo::send) and
/// [`apply`](ReadyIo::apply) must not wait.
pub trait ReadyIo<S: Storage> {
    /// Why a step failed: processing stops, and the node with it, as a crash would.
    type Error;

    /// A snapshot installed from the leader (its files are in the snapshot store): make the
    /// log start after it, as `RaftLog::compact` does, and have the state machine restored
    /// from it before anything after it is applied.
    ///
    /// # Errors
    ///
    /// The log could not be compacted.
    fn install_snapshot(&mut self, storage: &mut S, meta: &SnapshotMeta)
    -> Result<(), Self::Error>;

    /// Reads the data of the `InstallSnapshot` chunks among `messages` in place. A chunk that
    /// cannot be read is taken out of `messages`, and its recipient and snapshot id returned
    /// (the core drops that transfer).
    ///
    /// # Errors
    ///
    /// A failure that must stop the node.
    fn fill_chunks(
        &mut self,
        messages: &mut Vec<Message>,
    ) -> Result<Vec<(NodeId, u64)>, Self::Error>;

    /// Hands `messages` to the transport; must not wait.
    fn send(&mut self, messages: Vec<Message>);

    /// Makes `entries` (overwriting the log from the first one's index), then `hard_state`,
    /// durable.
    ///
    /// # Errors
    ///
    /// The log failed: nothing after this step happens.
    fn persist(
        &mut self,
        storage: &mut S,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), Self::Error>;

    /// Hands committed entries (consecutive, in order) and confirmed reads to the state
    /// machine, without waiting for it.
    ///
    /// # Errors
    ///
    /// The state machine is gone.
    fn apply(&mut self, committed: Vec<Entry>, reads: Vec<ReadState>) -> Result<(), Self::Error>;

    /// Stages one received `InstallSnapshot` chunk in the snapshot store: its
    /// acknowledgement, or `None` if the store refused it as invalid (the sender's fault; the
    /// store is unchanged).
    ///
    /// # Errors
    ///
    /// The store failed (this node's disk).
    fn stage(&mut self, chunk: &Message) -> Result<Option<Ack>, Self::Error>;
}

/// Whether acting on `ready` needs disk I/O (a persist, a snapshot's files); a `Ready` that
/// only sends and hands out committed entries may be processed on the loop's own thread
/// (the node's [`ReadyIo::apply`] never waits: it queues).
pub fn needs_io(ready: &Ready) -> bool {
    begin_needs_io(ready)
        || ready.hard_state.is_some()
        || !ready.entries.is_empty()
        || !ready.snapshot_chunks.is_empty()
}

/// Whether [`begin`] on `ready` needs disk I/O (a snapshot to install, snapshot chunks to
/// read); if not, it may run on the loop's own thread even when the rest of `ready` needs I/O.
pub fn begin_needs_io(ready: &Ready) -> bool {
    ready.snapshot.is_some()
        || ready
            .messages
            .iter()
            .any(|m| m.kind() == MessageType::InstallSnapshot)
}

/// Acts on `ready` (taken from `core`) in the order the module documents.
///
/// # Errors
///
/// The first step that failed; the steps after it did not happen, as after a crash.
pub fn process_ready<S: Storage, Io: ReadyIo<S>>(
    core: &mut Raft<S>,
    io: &mut Io,
    ready: Ready,
) -> Result<(), Io::Error> {
    let ready = begin(core, io, ready)?;
    persist(core, io, &ready)?;
    finish(core, io, ready)
}

/// Steps 1–3: installs a snapshot from the leader, sends what may go before the persist and
/// hands out committed entries and confirmed reads. Returns the rest of `ready`, for
/// [`persist`] and [`finish`].
///
/// # Errors
///
/// As [`process_ready`].
pub fn begin<S: Storage, Io: ReadyIo<S>>(
    core: &mut Raft<S>,
    io: &mut Io,
    mut ready: Ready,
) -> Result<Ready, Io::Error> {
    if let Some(meta) = &ready.snapshot {
        io.install_snapshot(core.storage_mut(), meta)?;
    }
    let mut messages = std::mem::take(&mut ready.messages);
    if !messages.is_empty() {
        if messages
            .iter()
            .any(|m| m.kind() == MessageType::InstallSnapshot)
        {
            for (to, id) in io.fill_chunks(&mut messages)? {
                core.snapshot_unreadable(to, id);
            }
        }
        io.send(messages);
    }
    let committed = std::mem::take(&mut ready.committed_entries);
    let reads = std::mem::take(&mut ready.read_states);
    if !committed.is_empty() || !reads.is_empty() {
        debug_assert!(
            committed.windows(2).all(|w| w[1].index == w[0].index + 1),
            "committed entries are consecutive"
        );
        io.apply(committed, reads)?;
    }
    Ok(ready)
}

/// Step 4: persists `ready`'s entries, then its hard state.
///
/// # Errors
///
/// As [`process_ready`].
pub fn persist<S: Storage, Io: ReadyIo<S>>(
    core: &mut Raft<S>,
    io: &mut Io,
    ready: &Ready,
) -> Result<(), Io::Error> {
    if ready.hard_state.is_some() || !ready.entries.is_empty() {
        io.persist(core.storage_mut(), &ready.entries, ready.hard_state)?;
    }
    Ok(())
}

/// Steps 5–7, once [`persist`] is done: sends what had to wait for it, advances the core,
/// and stages received snapshot chunks.
///
/// # Errors
///
/// As [`process_ready`].
pub fn finish<S: Storage, Io: ReadyIo<S>>(
    core: &mut Raft<S>,
    io: &mut Io,
    mut ready: Ready,
) -> Result<(), Io::Error> {
    let persisted = std::mem::take(&mut ready.persisted_messages);
    if !persisted.is_empty() {
        io.send(persisted);
    }
    core.advance(&ready);
    for chunk in std::mem::take(&mut ready.snapshot_chunks) {
        match io.stage(&chunk)? {
            Some(ack) => {
                if let Some(meta) = &chunk.snapshot {
                    let _ = core.snapshot_staged(chunk.from, meta, ack);
                }
            }
            None => core.snapshot_chunk_refused(),
        }
    }
    Ok(())
}
