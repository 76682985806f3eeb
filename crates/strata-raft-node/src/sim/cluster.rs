//! The `Cluster` harness: nodes in memory, their persisted state, the network queue, and the
//! simulated key-value state machine each one applies to.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use prost::Message as _;
use strata_raft_log::{Entry, EntryKind, HardState};
use strata_snapshot::{FileInfo, Position, SnapshotMeta};

use super::SimStore;
use strata_raft::{
    ConfChange, ConfState, Config, MemStorage, Membership, Message, MessageType, NodeId, Raft,
    ReadState, Role, Storage,
};

/// How the simulated nodes take snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotPolicy {
    /// Take one every this many applied entries (0: never).
    pub every: u64,
    /// Entries kept in the log before a snapshot's last index.
    pub compaction_overhead_entries: u64,
    /// Filler bytes in each snapshot, so that transfers take many chunks.
    pub filler: usize,
}

fn digest_of(before: u64, e: &Entry) -> u64 {
    let mut x =
        before ^ e.index.rotate_left(17) ^ e.term.rotate_left(41) ^ u64::from(e.kind as u32);
    x ^= u64::from(crc32fast::hash(&e.data)) << 7;
    // splitmix64's finalizer.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Nodes, their persisted state, the network queue, and what each node applied.
#[derive(Debug)]
pub struct Cluster {
    /// The nodes.
    pub nodes: BTreeMap<NodeId, Raft<MemStorage>>,
    /// Each node's last persisted hard state (a restart starts from it).
    pub hard: BTreeMap<NodeId, HardState>,
    /// Messages in flight.
    pub queue: VecDeque<Message>,
    /// Nodes whose messages (both ways) are dropped.
    pub isolated: BTreeSet<NodeId>,
    /// What each node applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Reads each node confirmed.
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// The leader seen in each term (election safety: at most one).
    pub leaders: BTreeMap<u64, NodeId>,
    /// With this set, a node's `Ready` is persisted later, by [`save_one`](Self::save_one):
    /// until then its `persisted_messages` are held back, and a crash loses it.
    pub defer_saves: bool,
    /// Readies handed out and not yet persisted, per node, oldest first.
    pub unsaved: BTreeMap<NodeId, VecDeque<strata_raft::Ready>>,
    /// Each node's key-value state (the simulated state machine).
    pub kv: BTreeMap<NodeId, BTreeMap<u64, u64>>,
    /// Each node's configuration as of what it applied (what its snapshots record).
    pub members: BTreeMap<NodeId, Membership>,
    /// Each node's last applied index and the digest of everything applied up to it.
    pub digest: BTreeMap<NodeId, (u64, u64)>,
    /// The digest of the applied sequence up to each index, as the first node to apply it
    /// had it: every other node must agree (state machine safety, including what came from
    /// snapshots).
    pub digests: BTreeMap<u64, u64>,
    /// Each node's snapshot store.
    pub stores: BTreeMap<NodeId, SimStore>,
    /// When the nodes take snapshots.
    pub snapshots: SnapshotPolicy,
    /// Snapshots installed from a leader, and taken, so far.
    pub snapshot_counts: (usize, usize),
    next_snapshot_id: u64,
    /// The initial configuration, for nodes restarting without a snapshot.
    initial: Membership,
}

impl Cluster {
    /// A cluster of fresh nodes, each configured by `configure`.
    pub fn new(ids: &[NodeId], configure: impl Fn(&mut Config)) -> Self {
        Self::with_logs(ids, configure, |_| {
            (MemStorage::default(), HardState::default())
        })
    }

    /// A cluster whose nodes start from the given logs and hard states.
    pub fn with_logs(
        ids: &[NodeId],
        configure: impl Fn(&mut Config),
        initial: impl Fn(NodeId) -> (MemStorage, HardState),
    ) -> Self {
        let mut nodes = BTreeMap::new();
        let mut hard = BTreeMap::new();
        let mut first = Membership::default();
        for &id in ids {
            let mut config = Config::new(id, ids.to_vec());
            configure(&mut config);
            first = Membership::new(&config.voters, &config.learners);
            let (storage, hs) = initial(id);
            nodes.insert(id, Raft::new(config, storage, hs).expect("config"));
            hard.insert(id, hs);
        }
        Self {
            kv: ids.iter().map(|&id| (id, BTreeMap::new())).collect(),
            members: ids.iter().map(|&id| (id, first.clone())).collect(),
            digest: ids.iter().map(|&id| (id, (0, 0))).collect(),
            digests: BTreeMap::new(),
            stores: ids.iter().map(|&id| (id, SimStore::default())).collect(),
            snapshots: SnapshotPolicy::default(),
            snapshot_counts: (0, 0),
            next_snapshot_id: 1,
            initial: first,
            nodes,
            hard,
            queue: VecDeque::new(),
            isolated: BTreeSet::new(),
            applied: ids.iter().map(|&id| (id, Vec::new())).collect(),
            reads: ids.iter().map(|&id| (id, Vec::new())).collect(),
            leaders: BTreeMap::new(),
            defer_saves: false,
            unsaved: BTreeMap::new(),
        }
    }

    /// Node `id`.
    ///
    /// # Panics
    ///
    /// If there is no such node.
    pub fn node(&mut self, id: NodeId) -> &mut Raft<MemStorage> {
        self.nodes.get_mut(&id).expect("a node")
    }

    /// Handles every node's `Ready` with the node's own Ready-processing functions
    /// ([`crate::begin`], [`crate::persist`], [`crate::finish`]) over memory, queueing their
    /// messages, and checks election safety and state machine safety. With
    /// [`defer_saves`](Self::defer_saves), each node's persist (and what follows it) waits
    /// for [`save_one`](Self::save_one), one `Ready` at a time as in the node's loop (whose
    /// core, unlike here, steps nothing while it persists).
    ///
    /// # Panics
    ///
    /// When a property does not hold.
    pub fn ready_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            while self.nodes.get(&id).is_some_and(Raft::has_ready)
                && self.unsaved.get(&id).is_none_or(VecDeque::is_empty)
            {
                let ready = self
                    .node(id)
                    .ready()
                    .unwrap_or_else(|e| panic!("node {id}: ready: {e}"));
                let ready = self.with_io(id, |node, io| crate::begin(node, io, ready));
                self.unsaved.entry(id).or_default().push_back(ready);
                if !self.defer_saves {
                    self.save_one(id);
                }
            }
            let node = self.nodes.get_mut(&id).expect("node");
            if node.role() == Role::Leader {
                let term = node.term();
                let seen = *self.leaders.entry(term).or_insert(id);
                assert_eq!(
                    seen, id,
                    "two leaders in term {term} (election safety, §5.2)"
                );
            }
        }
        self.check_state_machine_safety();
    }

    /// Runs `f` on node `id`'s core and the I/O of its `Ready`s here.
    fn with_io<T>(
        &mut self,
        id: NodeId,
        f: impl FnOnce(&mut Raft<MemStorage>, &mut SimIo<'_>) -> Result<T, Never>,
    ) -> T {
        let mut node = self.nodes.remove(&id).expect("a node");
        let chunk_bytes = node.config().snapshot_chunk_bytes;
        let result = f(
            &mut node,
            &mut SimIo {
                cluster: self,
                id,
                chunk_bytes,
            },
        );
        self.nodes.insert(id, node);
        match result {
            Ok(value) => value,
        }
    }

    /// Persists node `id`'s unsaved `Ready`, then finishes it ([`crate::persist`], then
    /// [`crate::finish`]: its `persisted_messages`, committed entries and reads, `advance`,
    /// and the snapshot chunks it received), and takes a snapshot if the policy says so.
    /// False if none.
    ///
    /// # Panics
    ///
    /// If there is no such node.
    pub fn save_one(&mut self, id: NodeId) -> bool {
        let Some(ready) = self.unsaved.get_mut(&id).and_then(VecDeque::pop_front) else {
            return false;
        };
        self.with_io(id, |node, io| {
            crate::persist(node, io, &ready)?;
            crate::finish(node, io, ready)
        });
        self.maybe_snapshot(id);
        true
    }

    /// Applies a committed entry to node `id`'s state, checking that every node applies
    /// the same sequence (§5.4.3).
    fn apply(&mut self, id: NodeId, e: &Entry) {
        let (at, before) = self.digest[&id];
        assert_eq!(
            e.index,
            at + 1,
            "node {id} applied {} after {at} (applied out of order)",
            e.index
        );
        let digest = digest_of(before, e);
        let seen = *self.digests.entry(e.index).or_insert(digest);
        assert_eq!(
            seen, digest,
            "node {id} applied a different sequence up to {} (state machine safety, §5.4.3)",
            e.index
        );
        self.digest.insert(id, (e.index, digest));
        if e.kind == EntryKind::ConfChange as i32 {
            if let Ok(change) = ConfChange::decode(e.data.as_ref()) {
                let _ = self.members.entry(id).or_default().apply(&change);
            }
        } else if let Some((key, value)) = decode_put(&e.data) {
            self.kv.entry(id).or_default().insert(key, value);
        }
        self.applied.entry(id).or_default().push(e.clone());
    }

    /// Node `id`'s state becomes snapshot `meta`'s (from its store), checked against what
    /// the nodes that applied the same entries have.
    fn restore(&mut self, id: NodeId, meta: &SnapshotMeta) {
        let (_, files) = self.stores[&id]
            .sets
            .get(&meta.id)
            .cloned()
            .expect("an installed snapshot is in the store");
        let mut kv = BTreeMap::new();
        for pair in files[0].chunks_exact(16) {
            if let Some((key, value)) = decode_put(pair) {
                kv.insert(key, value);
            }
        }
        let digest = files[1]
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        let seen = *self.digests.entry(meta.last_index).or_insert(digest);
        assert_eq!(
            seen, digest,
            "node {id} restored a snapshot of a different sequence up to {} (state machine safety)",
            meta.last_index
        );
        let membership = ConfState::decode(meta.membership.as_ref())
            .ok()
            .and_then(|cs| Membership::from_conf_state(&cs).ok())
            .expect("a snapshot's membership decodes");
        self.kv.insert(id, kv);
        self.members.insert(id, membership);
        self.digest.insert(id, (meta.last_index, digest));
        self.applied.insert(id, Vec::new());
    }

    /// Takes a snapshot of node `id`'s state if the policy says so, and compacts its log.
    fn maybe_snapshot(&mut self, id: NodeId) {
        let (index, digest) = self.digest[&id];
        let every = self.snapshots.every;
        let last = self.stores[&id].current_meta().map_or(0, |m| m.last_index);
        if every == 0 || index < last + every {
            return;
        }
        let Some(term) = self.node(id).storage().term(index) else {
            return;
        };
        let mut state = Vec::new();
        for (key, value) in &self.kv[&id] {
            state.extend_from_slice(&encode_put(*key, *value));
        }
        let mut tail = digest.to_le_bytes().to_vec();
        tail.extend((0..self.snapshots.filler).map(|i| (i as u64 ^ index) as u8));
        let files = vec![Bytes::from(state), Bytes::from(tail)];
        let meta = SnapshotMeta {
            id: self.next_snapshot_id,
            last_index: index,
            last_term: term,
            membership: Bytes::from(self.members[&id].to_conf_state().encode_to_vec()),
            files: ["state", "digest"]
                .iter()
                .zip(&files)
                .map(|(name, data)| FileInfo {
                    name: (*name).to_owned(),
                    size: data.len() as u64,
                    crc: crc32fast::hash(data),
                })
                .collect(),
        };
        self.next_snapshot_id += 1;
        self.snapshot_counts.1 += 1;
        self.stores
            .entry(id)
            .or_default()
            .install(meta.clone(), files);
        self.node(id).set_snapshot(meta);
        let keep = self.snapshots.compaction_overhead_entries;
        let floor = self.node(id).transfer_floor().unwrap_or(u64::MAX);
        let to = index.saturating_sub(keep).min(floor);
        let storage = self.node(id).storage_mut();
        if let Some(term) = storage.term(to) {
            storage.compact(to, term);
        }
        self.prune_store(id);
    }

    /// Drops the sets node `id` no longer needs.
    fn prune_store(&mut self, id: NodeId) {
        let keep = self.node(id).snapshots_in_use();
        if let Some(store) = self.stores.get_mut(&id) {
            let current = store.current;
            store
                .sets
                .retain(|set, _| Some(*set) == current || keep.contains(set));
        }
    }

    /// Restarts node `id` as after a crash, with `config`: from its persisted log and hard
    /// state and its installed snapshot (the log compacted to it first if a crash came
    /// between installing it and compacting the log); its state is the snapshot's, and it
    /// applies the log after it again.
    ///
    /// # Errors
    ///
    /// If the core refuses the restart.
    pub fn restart(&mut self, id: NodeId, config: Config) -> Result<(), String> {
        let mut storage = self.node(id).storage().clone();
        let hard = self.hard[&id];
        let snapshot = self.stores.entry(id).or_default().current_meta().cloned();
        if let Some(meta) = &snapshot
            && storage.term(meta.last_index) != Some(meta.last_term)
        {
            storage.compact(meta.last_index, meta.last_term);
        }
        *self.node(id) = Raft::with_snapshot(config, storage, hard, snapshot.as_ref())
            .map_err(|e| format!("node {id} cannot restart: {e}"))?;
        self.unsaved.remove(&id);
        self.reads.insert(id, Vec::new());
        self.queue.retain(|m| m.to != id);
        match &snapshot {
            Some(meta) => self.restore(id, meta),
            None => {
                self.kv.insert(id, BTreeMap::new());
                self.members.insert(id, self.initial.clone());
                self.digest.insert(id, (0, 0));
                self.applied.insert(id, Vec::new());
            }
        }
        Ok(())
    }

    /// Every node's applied state agrees with what the others applied up to the same index
    /// (§5.4.3; each entry is also checked as it is applied).
    ///
    /// # Panics
    ///
    /// When two nodes applied different sequences.
    pub fn check_state_machine_safety(&self) {
        for (id, (index, digest)) in &self.digest {
            if *index > 0 {
                assert_eq!(
                    self.digests.get(index),
                    Some(digest),
                    "node {id} applied a different sequence up to {index} (state machine safety, §5.4.3)"
                );
            }
        }
    }

    /// Delivers one queued message (dropping it if either end is isolated); false if none.
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.queue.pop_front() else {
            return false;
        };
        if self.isolated.contains(&m.from) || self.isolated.contains(&m.to) {
            return true;
        }
        if let Some(node) = self.nodes.get_mut(&m.to) {
            let _ = node.step(m);
        }
        true
    }

    /// Runs until no node has anything to do and no message is queued.
    ///
    /// # Panics
    ///
    /// If the cluster keeps exchanging messages forever.
    pub fn settle(&mut self) {
        for _ in 0..100_000 {
            self.ready_all();
            if self.queue.is_empty() {
                return;
            }
            while self.deliver_one() {}
        }
        panic!("the cluster did not settle");
    }

    /// Ticks node `id`, then settles.
    pub fn tick(&mut self, id: NodeId) {
        self.node(id).tick();
        self.settle();
    }

    /// Ticks every node `times` times, settling after each round.
    pub fn tick_all(&mut self, times: usize) {
        for _ in 0..times {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.node(id).tick();
            }
            self.settle();
        }
    }

    /// The leader with the highest term, among nodes not isolated.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter(|(id, n)| n.role() == Role::Leader && !self.isolated.contains(id))
            .max_by_key(|(_, n)| n.term())
            .map(|(id, _)| *id)
    }

    /// Ticks everyone until there is a leader.
    ///
    /// # Panics
    ///
    /// If no leader emerges within 1000 rounds.
    pub fn elect(&mut self) -> NodeId {
        for _ in 0..1000 {
            if let Some(id) = self.leader() {
                return id;
            }
            self.tick_all(1);
        }
        panic!("no leader elected");
    }

    /// Proposes `data` at node `id` and settles; the entry's index.
    ///
    /// # Panics
    ///
    /// If the node refuses.
    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> u64 {
        let index = self
            .node(id)
            .propose(Bytes::copy_from_slice(data))
            .expect("propose");
        self.settle();
        index
    }

    /// The commands (non-empty normal entries) node `id` applied.
    pub fn commands(&self, id: NodeId) -> Vec<Bytes> {
        self.applied[&id]
            .iter()
            .filter(|e| !e.data.is_empty() && e.kind == EntryKind::Normal as i32)
            .map(|e| e.data.clone())
            .collect()
    }
}

/// A simulated step cannot fail (a crash is the simulator's own decision, between steps).
#[derive(Debug)]
pub(super) enum Never {}

/// The I/O of node `id`'s `Ready`s, in memory: its log is the core's `MemStorage`; its hard
/// state, snapshot store and state machine are the cluster's; its messages go on the
/// cluster's queue.
struct SimIo<'a> {
    cluster: &'a mut Cluster,
    id: NodeId,
    chunk_bytes: usize,
}

impl crate::ReadyIo<MemStorage> for SimIo<'_> {
    type Error = Never;

    fn install_snapshot(
        &mut self,
        storage: &mut MemStorage,
        meta: &SnapshotMeta,
    ) -> Result<(), Never> {
        // Installed from a leader: the log starts after it, the state is its.
        storage.compact(meta.last_index, meta.last_term);
        self.cluster.restore(self.id, meta);
        self.cluster.snapshot_counts.0 += 1;
        Ok(())
    }

    fn fill_chunks(&mut self, messages: &mut Vec<Message>) -> Result<Vec<(NodeId, u64)>, Never> {
        let store = self.cluster.stores.entry(self.id).or_default();
        let mut unreadable = Vec::new();
        messages.retain_mut(|m| {
            if m.kind() != MessageType::InstallSnapshot {
                return true;
            }
            let to = m.to;
            let Some(chunk) = m.chunk.as_mut() else {
                return false;
            };
            let at = Position {
                file: chunk.file,
                offset: chunk.offset,
            };
            match store.read(chunk.snapshot_id, at, self.chunk_bytes) {
                Some(data) => {
                    chunk.crc = crc32fast::hash(&data);
                    chunk.data = data;
                    true
                }
                None => {
                    unreadable.push((to, chunk.snapshot_id));
                    false
                }
            }
        });
        Ok(unreadable)
    }

    fn send(&mut self, messages: Vec<Message>) {
        self.cluster.queue.extend(messages);
    }

    fn persist(
        &mut self,
        storage: &mut MemStorage,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), Never> {
        storage.append(entries);
        if let Some(hs) = hard_state {
            self.cluster.hard.insert(self.id, hs);
        }
        Ok(())
    }

    fn apply(&mut self, committed: Vec<Entry>, reads: Vec<ReadState>) -> Result<(), Never> {
        for e in &committed {
            self.cluster.apply(self.id, e);
        }
        self.cluster.reads.entry(self.id).or_default().extend(reads);
        Ok(())
    }

    fn stage(&mut self, chunk: &Message) -> Result<Option<strata_snapshot::Ack>, Never> {
        let (Some(meta), Some(data)) = (&chunk.snapshot, &chunk.chunk) else {
            return Ok(None);
        };
        let store = self.cluster.stores.entry(self.id).or_default();
        Ok(Some(store.stage(meta, data)))
    }
}

/// A log with the given terms at indexes 1, 2, ...
pub fn log_with_terms(terms: &[u64]) -> MemStorage {
    MemStorage {
        entries: terms
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                Entry::new(
                    t,
                    i as u64 + 1,
                    EntryKind::Normal,
                    Bytes::from(format!("{i}@{t}")),
                )
            })
            .collect(),
        compacted: (0, 0),
    }
}

/// The key-value command in an entry: key and value, 8 bytes each.
pub(super) fn encode_put(key: u64, value: u64) -> Bytes {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
    Bytes::from(out)
}

pub(super) fn decode_put(data: &[u8]) -> Option<(u64, u64)> {
    let key = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    let value = u64::from_le_bytes(data.get(8..16)?.try_into().ok()?);
    Some((key, value))
}

pub(super) fn log_of(node: &Raft<MemStorage>) -> Vec<Entry> {
    let s = node.storage();
    if s.last_index() < s.first_index() {
        return Vec::new();
    }
    s.entries(s.first_index(), s.last_index() + 1, usize::MAX)
        .unwrap_or_default()
}
