//! Deterministic simulation: a cluster of cores in memory, where one seed decides everything
//! (the clock with drift, message loss, duplication and reordering, partitions, persists that
//! take time, crashes that lose what was not yet persisted, restarts, and client requests),
//! checked against Raft's safety properties (election safety and state machine safety after
//! every step, leader completeness every step, log matching every 25 steps), then healed:
//! every node must catch up and a client operation must complete (liveness), and the
//! clients' history must be linearizable. The seed also picks pre-vote, check-quorum and the
//! in-flight window.
//!
//! `cargo xtask sim` runs it over many seeds; a failure names its seed, and
//! `cargo xtask sim --seed N` replays it exactly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use prost::Message as _;
use strata_raft_log::{Entry, EntryKind, HardState};
use strata_snapshot::{Ack, Chunk, FileInfo, Position, SnapshotMeta};

use crate::linearizability::{self, Op, Operation};
use crate::{
    Change, ChangeKind, ConfChange, ConfState, Config, MemStorage, Membership, Message,
    MessageType, NodeId, Raft, ReadState, Role, Storage,
};

/// How the simulated nodes take snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnapshotPolicy {
    /// Take one every this many applied entries (0: never).
    pub every: u64,
    /// Entries kept in the log before a snapshot's last index.
    pub compaction_overhead: u64,
    /// Filler bytes in each snapshot, so that transfers take many chunks.
    pub filler: usize,
}

/// A node's snapshot store, in memory; like a disk, it survives crashes. It receives a
/// transfer as `strata_snapshot::Receiver` does: chunks only at the expected position,
/// duplicates acknowledged and ignored, a gap answered with the position needed, each file's
/// checksum verified when it completes, and the set installed only whole and only if newer.
#[derive(Debug, Clone, Default)]
pub struct SimStore {
    /// Sets kept, by id: metadata and each file's contents.
    pub sets: BTreeMap<u64, (SnapshotMeta, Vec<Bytes>)>,
    /// The installed set.
    pub current: Option<u64>,
    /// A transfer being received: its metadata, the files so far, the next position.
    pub staging: Option<(SnapshotMeta, Vec<Vec<u8>>, Position)>,
}

impl SimStore {
    /// The installed set's metadata.
    pub fn current_meta(&self) -> Option<&SnapshotMeta> {
        self.current
            .and_then(|id| self.sets.get(&id))
            .map(|(meta, _)| meta)
    }

    fn skip_empty(meta: &SnapshotMeta, mut file: u32) -> Position {
        while meta.files.get(file as usize).is_some_and(|f| f.size == 0) {
            file += 1;
        }
        Position { file, offset: 0 }
    }

    /// Installs `meta` with `files` if it is newer than the current set.
    pub fn install(&mut self, meta: SnapshotMeta, files: Vec<Bytes>) {
        if self
            .current_meta()
            .is_some_and(|c| c.last_index >= meta.last_index)
        {
            return;
        }
        self.current = Some(meta.id);
        self.sets.insert(meta.id, (meta, files));
    }

    /// Stages a chunk of `meta`.
    pub fn stage(&mut self, meta: &SnapshotMeta, chunk: &Chunk) -> Ack {
        if self.current_meta() == Some(meta) {
            return Ack::Complete;
        }
        if self.staging.as_ref().is_none_or(|(m, _, _)| m != meta) {
            let start = Self::skip_empty(meta, 0);
            self.staging = Some((meta.clone(), vec![Vec::new(); meta.files.len()], start));
        }
        let Some((staged, files, next)) = &mut self.staging else {
            return Ack::Gap {
                need: Position { file: 0, offset: 0 },
            };
        };
        let at = Position {
            file: chunk.file,
            offset: chunk.offset,
        };
        let end = staged.files.len() as u32;
        if next.file < end {
            if crc32fast::hash(&chunk.data) != chunk.crc || at > *next {
                return Ack::Gap { need: *next };
            }
            if at < *next {
                return Ack::Duplicate { next: *next };
            }
            let info = &staged.files[at.file as usize];
            let file = &mut files[at.file as usize];
            if file.len() as u64 + chunk.data.len() as u64 > info.size {
                return Ack::Gap { need: *next };
            }
            file.extend_from_slice(&chunk.data);
            next.offset = file.len() as u64;
            if next.offset < info.size {
                return Ack::Accepted { next: *next };
            }
            if crc32fast::hash(file) != info.crc {
                file.clear();
                next.offset = 0;
                return Ack::Gap { need: *next };
            }
            *next = Self::skip_empty(staged, at.file + 1);
            if next.file < end {
                return Ack::Accepted { next: *next };
            }
        }
        let Some((meta, files, _)) = self.staging.take() else {
            return Ack::Complete;
        };
        self.install(meta, files.into_iter().map(Bytes::from).collect());
        Ack::Complete
    }

    /// The data of the chunk at `at` of set `id`, `chunk_bytes` long at most.
    fn read(&self, id: u64, at: Position, chunk_bytes: usize) -> Option<Bytes> {
        let (_, files) = self.sets.get(&id)?;
        let Some(file) = files.get(at.file as usize) else {
            return Some(Bytes::new());
        };
        let from = usize::try_from(at.offset).ok()?.min(file.len());
        let to = (from + chunk_bytes).min(file.len());
        Some(file.slice(from..to))
    }
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
    pub unsaved: BTreeMap<NodeId, VecDeque<crate::Ready>>,
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

    /// Handles every node's `Ready` (persisting at once), queueing their messages, and checks
    /// election safety and state machine safety.
    ///
    /// # Panics
    ///
    /// When a property does not hold.
    pub fn ready_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            while self.nodes.get(&id).is_some_and(Raft::has_ready) {
                let ready = self
                    .node(id)
                    .ready()
                    .unwrap_or_else(|e| panic!("node {id}: ready: {e}"));
                // What needs no persist goes at once (snapshot chunks with their data).
                for m in &ready.messages {
                    if let Some(m) = self.fill_chunk(id, m.clone()) {
                        self.queue.push_back(m);
                    }
                }
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

    /// Persists node `id`'s oldest unsaved `Ready`: storage and hard state, then its
    /// `persisted_messages`, committed entries and reads, then `advance`. False if none.
    ///
    /// # Panics
    ///
    /// If there is no such node.
    pub fn save_one(&mut self, id: NodeId) -> bool {
        let Some(ready) = self.unsaved.get_mut(&id).and_then(VecDeque::pop_front) else {
            return false;
        };
        if let Some(meta) = &ready.snapshot {
            // Installed from a leader: the log starts after it, the state is its.
            self.node(id)
                .storage_mut()
                .compact(meta.last_index, meta.last_term);
            self.restore(id, meta);
            self.snapshot_counts.0 += 1;
        }
        let node = self.nodes.get_mut(&id).expect("node");
        node.storage_mut().append(&ready.entries);
        if let Some(hs) = ready.hard_state {
            self.hard.insert(id, hs);
        }
        self.queue.extend(ready.persisted_messages.iter().cloned());
        for e in &ready.committed_entries {
            self.apply(id, e);
        }
        self.reads
            .get_mut(&id)
            .expect("node")
            .extend(ready.read_states.iter().cloned());
        self.node(id).advance(&ready);
        for m in &ready.snapshot_chunks {
            let (Some(meta), Some(chunk)) = (&m.snapshot, &m.chunk) else {
                continue;
            };
            let store = self.stores.entry(id).or_default();
            let ack = store.stage(meta, chunk);
            let _ = self.node(id).snapshot_staged(m.from, meta, ack);
        }
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
        let keep = self.snapshots.compaction_overhead;
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

    /// Fills in an `InstallSnapshot` chunk's data from node `id`'s store (`None` if the set
    /// is gone); other messages pass as they are.
    fn fill_chunk(&mut self, id: NodeId, mut m: Message) -> Option<Message> {
        if m.kind() != MessageType::InstallSnapshot {
            return Some(m);
        }
        let chunk_bytes = self.chunk_bytes(id);
        let chunk = m.chunk.as_mut()?;
        let at = Position {
            file: chunk.file,
            offset: chunk.offset,
        };
        let read = self
            .stores
            .get(&id)
            .and_then(|store| store.read(chunk.snapshot_id, at, chunk_bytes));
        let Some(data) = read else {
            let snapshot_id = chunk.snapshot_id;
            self.node(id).snapshot_unreadable(m.to, snapshot_id);
            return None;
        };
        chunk.data = data;
        chunk.crc = crc32fast::hash(&chunk.data);
        Some(m)
    }

    fn chunk_bytes(&self, id: NodeId) -> usize {
        self.nodes
            .get(&id)
            .map_or(1 << 20, |n| n.config().snapshot_chunk_bytes)
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

/// What one simulation does.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Decides everything.
    pub seed: u64,
    /// Cluster size.
    pub nodes: u64,
    /// Steps to run before healing and the final checks.
    pub steps: usize,
    /// Percent of delivered messages lost.
    pub drop_percent: u64,
    /// Percent of delivered messages delivered twice.
    pub duplicate_percent: u64,
    /// Percent of steps that cut a node off or heal one.
    pub partition_percent: u64,
    /// Percent of steps that crash a node (it restarts at once from what it persisted).
    pub crash_percent: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Let the seed pick snapshot settings (small thresholds, compaction overheads, chunk
    /// sizes and windows; a quarter of seeds take none).
    pub snapshots: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            nodes: 3,
            steps: 2000,
            drop_percent: 10,
            duplicate_percent: 5,
            partition_percent: 3,
            crash_percent: 1,
            clients: 3,
            snapshots: true,
        }
    }
}

/// What a simulation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Entries committed.
    pub committed: usize,
    /// Client operations that completed.
    pub completed: usize,
    /// Client operations invoked.
    pub invoked: usize,
    /// The highest term reached.
    pub max_term: u64,
    /// Membership changes committed (entering and leaving joint configurations).
    pub membership_changes: usize,
    /// Snapshots taken.
    pub snapshots_taken: usize,
    /// Snapshots installed from a leader.
    pub snapshots_installed: usize,
}

/// The simulator's random source: xorshift, from the seed.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True `percent` percent of the time.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The key-value command in an entry: key and value, 8 bytes each.
fn encode_put(key: u64, value: u64) -> Bytes {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
    Bytes::from(out)
}

fn decode_put(data: &[u8]) -> Option<(u64, u64)> {
    let key = u64::from_le_bytes(data.get(..8)?.try_into().ok()?);
    let value = u64::from_le_bytes(data.get(8..16)?.try_into().ok()?);
    Some((key, value))
}

#[derive(Debug)]
enum Pending {
    Put {
        node: NodeId,
        index: u64,
        value: u64,
        op: usize,
    },
    Get {
        node: NodeId,
        context: Bytes,
        op: usize,
    },
}

fn log_of(node: &Raft<MemStorage>) -> Vec<Entry> {
    let s = node.storage();
    if s.last_index() < s.first_index() {
        return Vec::new();
    }
    s.entries(s.first_index(), s.last_index() + 1, usize::MAX)
        .unwrap_or_default()
}

/// §5.3: if two logs have an entry with the same index and term, they are identical up to it.
fn check_log_matching(c: &Cluster, seed: u64) -> Result<(), String> {
    let logs: Vec<(NodeId, Vec<Entry>)> = c.nodes.iter().map(|(id, n)| (*id, log_of(n))).collect();
    for (a, la) in &logs {
        for (b, lb) in &logs {
            if a >= b {
                continue;
            }
            // Compare over the indexes both still hold (snapshots compact the start).
            let (Some(fa), Some(fb)) = (la.first(), lb.first()) else {
                continue;
            };
            let start = fa.index.max(fb.index);
            let la = &la[usize::try_from(start - fa.index)
                .unwrap_or(usize::MAX)
                .min(la.len())..];
            let lb = &lb[usize::try_from(start - fb.index)
                .unwrap_or(usize::MAX)
                .min(lb.len())..];
            let common = la.len().min(lb.len());
            if let Some(last) = (0..common).rev().find(|&i| la[i].term == lb[i].term)
                && la[..=last] != lb[..=last]
            {
                return Err(format!(
                    "seed {seed}: logs of {a} and {b} differ before a matching entry (log matching, §5.3)"
                ));
            }
        }
    }
    Ok(())
}

/// §5.4: a leader holds every entry committed in an earlier term. `committed` maps each
/// committed index to its entry and the term in which it was first seen committed.
fn check_leader_completeness(
    c: &Cluster,
    committed: &BTreeMap<u64, (Entry, u64)>,
    seed: u64,
) -> Result<(), String> {
    for (id, node) in &c.nodes {
        if node.role() != Role::Leader {
            continue;
        }
        let log = log_of(node);
        // Entries before the log's start are in the leader's snapshot (checked when taken
        // or installed).
        let first = node.storage().first_index();
        for (index, (entry, committed_in)) in committed.range(first..) {
            let at = usize::try_from(index - first).unwrap_or(usize::MAX);
            if *committed_in < node.term() && log.get(at) != Some(entry) {
                return Err(format!(
                    "seed {seed}: leader {id} (term {}) lacks committed entry {index} (term {}); it has {:?} (leader completeness, §5.4)",
                    node.term(),
                    entry.term,
                    log.get(at).map(|e| e.term),
                ));
            }
        }
    }
    Ok(())
}

/// Runs one simulation.
///
/// # Errors
///
/// A description naming the seed and the property that failed (election safety and state
/// machine safety failures panic from inside [`Cluster::ready_all`] with the same details).
pub fn run(options: &SimOptions) -> Result<SimReport, String> {
    run_traced(options, None)
}

/// [`run`], giving `trace` a line whenever a node's role, term, commit index, configuration
/// or log changes (for replaying a failing seed).
///
/// # Errors
///
/// As [`run`].
pub fn run_traced(
    options: &SimOptions,
    mut trace: Option<&mut dyn FnMut(&str)>,
) -> Result<SimReport, String> {
    let seed = options.seed;
    // The cluster starts with `nodes` voters; two more nodes start outside it, for
    // membership changes to add (and any member may be removed).
    let initial: Vec<NodeId> = (1..=options.nodes).collect();
    let ids: Vec<NodeId> = (1..=options.nodes + 2).collect();
    let all = ids.len() as u64;
    let mut rng = SimRng::new(seed);
    // The seed also picks the protocol options, so that every combination is exercised.
    let (pre_vote, check_quorum) = (rng.chance(50), rng.chance(50));
    // A small in-flight window half the time, so that lost appends fill it.
    let window = if rng.chance(50) { 4 } else { 256 };
    let peers = ids.clone();
    // Snapshots: small thresholds, so that followers often need one; chunks of a few bytes,
    // so that a transfer takes many.
    let policy = if options.snapshots && rng.chance(75) {
        SnapshotPolicy {
            every: 3 + rng.below(40),
            compaction_overhead: rng.below(8),
            filler: rng.below(1000) as usize,
        }
    } else {
        SnapshotPolicy::default()
    };
    let chunk_bytes = [32, 64, 256, 1024][rng.below(4) as usize];
    let snapshot_window = 1 + rng.below(4) as usize;
    let configure = move |config: &mut Config| {
        config.voters.clone_from(&initial);
        config.peers.clone_from(&peers);
        config.pre_vote = pre_vote;
        config.check_quorum = check_quorum;
        config.max_inflight_msgs = window;
        config.snapshot_chunk_bytes = chunk_bytes;
        config.max_snapshot_inflight = snapshot_window;
    };
    let mut c = Cluster::new(&ids, |config: &mut Config| {
        configure(config);
        config.seed = seed ^ config.id;
    });
    c.snapshots = policy;
    // Persisting takes time: a crash can catch a node with handed-out, unsaved Readies.
    c.defer_saves = true;
    let mut committed: BTreeMap<u64, (Entry, u64)> = BTreeMap::new();
    let mut history: Vec<Operation> = Vec::new();
    let mut pending: Vec<Option<Pending>> = (0..options.clients).map(|_| None).collect();
    // The last applied index whose entry was looked at for answering clients.
    let mut applied_seen: BTreeMap<NodeId, u64> = ids.iter().map(|&id| (id, 0)).collect();
    let mut reads_seen: BTreeMap<NodeId, usize> = ids.iter().map(|&id| (id, 0)).collect();
    let mut confirmed: BTreeMap<(NodeId, Bytes), u64> = BTreeMap::new();
    let mut next_value = 0u64;
    let mut now = 0u64;
    let mut report = SimReport::default();
    let mut traced: BTreeMap<NodeId, String> = BTreeMap::new();
    let total_steps = options.steps;
    // After the faults, the healed cluster runs until a client operation completes (at least
    // 400 steps, at most 20,000): one that never does is a liveness failure.
    let mut completed_after_healing = false;
    // ... and every node has caught up with the commit index.
    let mut caught_up = false;
    let mut step = 0;
    while step < total_steps + 400
        || (!(completed_after_healing && caught_up) && step < total_steps + 20_000)
    {
        step += 1;
        now += 1;
        let healing = step >= total_steps;
        if healing {
            c.isolated.clear();
        }
        let roll = rng.below(100);
        if roll < 30 {
            // Time passes: each node's clock ticks, most of the time (clocks drift).
            for &id in &ids {
                if rng.chance(80) {
                    c.node(id).tick();
                }
            }
        } else if roll < 75 {
            // Some messages, more when many wait (a real network's throughput keeps up with
            // heartbeats; one that never did would only show a crawling cluster).
            let burst = rng.below(8) + c.queue.len() as u64 / 8;
            for _ in 0..burst {
                if c.queue.is_empty() {
                    break;
                }
                let at = rng.below(c.queue.len() as u64) as usize;
                let Some(m) = c.queue.remove(at) else { break };
                if !healing && rng.chance(options.drop_percent) {
                    continue;
                }
                if rng.chance(options.duplicate_percent) {
                    c.queue.push_back(m.clone());
                }
                c.queue.push_front(m);
                c.deliver_one();
            }
        } else if roll < 92 {
            // A free client invokes an operation at a node.
            let client = rng.below(options.clients as u64) as usize;
            if pending[client].is_none() {
                let node = ids[rng.below(all) as usize];
                let key = rng.below(4);
                if rng.chance(50) {
                    next_value += 1;
                    let value = next_value;
                    if let Ok(index) = c.node(node).propose(encode_put(key, value)) {
                        history.push(Operation {
                            key,
                            op: Op::Put(value),
                            invoked: now,
                            returned: None,
                        });
                        pending[client] = Some(Pending::Put {
                            node,
                            index,
                            value,
                            op: history.len() - 1,
                        });
                    }
                } else {
                    let context = Bytes::from(format!("{client}:{now}"));
                    if c.node(node).read_index(context.clone()).is_ok() {
                        history.push(Operation {
                            key,
                            op: Op::Get(None),
                            invoked: now,
                            returned: None,
                        });
                        pending[client] = Some(Pending::Get {
                            node,
                            context,
                            op: history.len() - 1,
                        });
                    }
                }
            }
        } else if roll < 92 + options.partition_percent && !healing {
            let id = ids[rng.below(all) as usize];
            let minority = (options.nodes as usize - 1) / 2;
            if !c.isolated.remove(&id) && c.isolated.len() < minority {
                c.isolated.insert(id);
            }
        } else if rng.chance(10) && !healing && pre_vote {
            // A membership change, at the leader: add an outsider (as learner or voter),
            // promote a learner, or remove a voter (keeping at least two). Only with pre-vote:
            // without it, a removed node that missed its removal (or a lagging one with an
            // old configuration) keeps raising its term and can keep deposing leaders, which
            // is what pre-vote exists to prevent.
            let leader = c
                .nodes
                .iter()
                .filter(|(_, n)| n.role() == Role::Leader)
                .max_by_key(|(_, n)| n.term())
                .map(|(id, _)| *id);
            if let Some(leader) = leader {
                let m = c.node(leader).membership().clone();
                let outsiders: Vec<NodeId> =
                    ids.iter().copied().filter(|&id| !m.is_member(id)).collect();
                let learners: Vec<NodeId> = m.learners.iter().copied().collect();
                let voters: Vec<NodeId> = m.voters.iter().copied().collect();
                let pick =
                    |rng: &mut SimRng, from: &[NodeId]| from[rng.below(from.len() as u64) as usize];
                let change = match rng.below(4) {
                    // Replace a voter by an outsider in one change: the old and the new
                    // majorities need not overlap, which only joint consensus makes safe.
                    3 if !outsiders.is_empty() && voters.len() > 1 => Some(ConfChange {
                        changes: vec![
                            Change {
                                kind: ChangeKind::AddVoter as i32,
                                node: pick(&mut rng, &outsiders),
                            },
                            Change {
                                kind: ChangeKind::RemoveNode as i32,
                                node: pick(&mut rng, &voters),
                            },
                        ],
                    }),
                    0 if !outsiders.is_empty() => {
                        let kind = if rng.chance(50) {
                            ChangeKind::AddLearner
                        } else {
                            ChangeKind::AddVoter
                        };
                        Some(ConfChange::single(kind, pick(&mut rng, &outsiders)))
                    }
                    1 if !learners.is_empty() => Some(ConfChange::single(
                        ChangeKind::AddVoter,
                        pick(&mut rng, &learners),
                    )),
                    _ if voters.len() > 2 => Some(ConfChange::single(
                        ChangeKind::RemoveNode,
                        pick(&mut rng, &voters),
                    )),
                    _ => None,
                };
                if let Some(change) = change {
                    let _ = c.node(leader).propose_conf_change(&change);
                }
            }
        } else if rng.chance(options.crash_percent * 20) && !healing {
            // A crash: the node restarts from what it persisted (its log, hard state and
            // snapshot store), its state machine rebuilt from its snapshot and log; messages
            // to it and its clients' answers are lost. Half the time, when there is one, the
            // crash hits a node in the middle of a snapshot transfer (sending or receiving)
            // or with an installed snapshot not yet persisted into its log.
            let busy: Vec<NodeId> = ids
                .iter()
                .copied()
                .filter(|id| {
                    c.stores[id].staging.is_some()
                        || c.unsaved
                            .get(id)
                            .is_some_and(|u| u.iter().any(|r| r.snapshot.is_some()))
                        || c.nodes[id].status().matched.len() > 1
                            && c.nodes[id].snapshots_in_use().len() > 1
                })
                .collect();
            let id = if !busy.is_empty() && rng.chance(50) {
                busy[rng.below(busy.len() as u64) as usize]
            } else {
                ids[rng.below(all) as usize]
            };
            let mut config = Config::new(id, ids.clone());
            configure(&mut config);
            config.seed = seed ^ id ^ (step as u64) << 8;
            c.restart(id, config)?;
            applied_seen.insert(id, 0);
            reads_seen.insert(id, 0);
            for p in &mut pending {
                let at_node = match p {
                    Some(Pending::Put { node, .. } | Pending::Get { node, .. }) => *node == id,
                    None => false,
                };
                if at_node {
                    // Never answered: a put may or may not have happened.
                    *p = None;
                }
            }
        }
        c.ready_all();
        // Persists complete, each after a random delay.
        for &id in &ids {
            while rng.chance(60) && c.save_one(id) {}
        }
        c.ready_all();
        // Answer clients from what each node applied (its key-value state is `c.kv`).
        for &id in &ids {
            let applied = &c.applied[&id];
            let seen = applied_seen[&id];
            for e in applied.iter().filter(|e| e.index > seen) {
                if e.kind != EntryKind::Normal as i32 {
                    continue;
                }
                for p in &mut pending {
                    if let Some(Pending::Put {
                        node,
                        index,
                        value,
                        op,
                    }) = p
                        && *node == id
                        && *index == e.index
                    {
                        if decode_put(&e.data).map(|(_, v)| v) == Some(*value) {
                            history[*op].returned = Some(now);
                            completed_after_healing |= healing;
                        }
                        // Either way the client is done: a different entry at its index
                        // means its proposal was overwritten (never committed).
                        *p = None;
                    }
                }
            }
            applied_seen.insert(id, c.digest[&id].0);
            for r in &c.reads[&id][reads_seen[&id]..] {
                confirmed.insert((id, r.context.clone()), r.index);
            }
            reads_seen.insert(id, c.reads[&id].len());
        }
        for p in &mut pending {
            if let Some(Pending::Get { node, context, op }) = p
                && let Some(&index) = confirmed.get(&(*node, context.clone()))
            {
                let applied_to = c.digest[node].0;
                if applied_to >= index {
                    let key = history[*op].key;
                    history[*op].op = Op::Get(c.kv[node].get(&key).copied());
                    history[*op].returned = Some(now);
                    completed_after_healing |= healing;
                    *p = None;
                }
            }
        }
        // Give up on old requests (their outcome stays unknown).
        for p in &mut pending {
            let op = match p {
                Some(Pending::Put { op, .. } | Pending::Get { op, .. }) => *op,
                None => continue,
            };
            if now - history[op].invoked > 300 {
                *p = None;
            }
        }
        for (id, node) in &c.nodes {
            report.max_term = report.max_term.max(node.term());
            // What the node has durably committed: its persisted commit index over its
            // persisted log (in memory, a commit can already cover entries whose persist,
            // replacing older ones, is still under way).
            let log = log_of(node);
            let durable_commit = c.hard.get(id).map_or(0, |h| h.commit);
            for e in log.iter().take_while(|e| e.index <= durable_commit) {
                match committed.get(&e.index) {
                    Some((prev, _)) if prev != e => {
                        return Err(format!(
                            "seed {seed}: node {id} committed a different entry at {} (state machine safety, §5.4.3)",
                            e.index
                        ));
                    }
                    // Committed no later than the lowest term of any node that has it
                    // committed (a node cannot learn of a commit from a later term without
                    // moving to that term).
                    Some(_) => {
                        if let Some((_, term)) = committed.get_mut(&e.index) {
                            *term = (*term).min(node.term());
                        }
                    }
                    None => {
                        committed.insert(e.index, (e.clone(), node.term()));
                    }
                }
            }
        }
        if let Some(trace) = trace.as_mut() {
            for (id, node) in &c.nodes {
                let m = node.membership();
                let line = format!(
                    "{:?} t{} c{} applied {} snapshot {} first {} last {} matched {:?} voters {:?} outgoing {:?} learners {:?} log {:?}",
                    node.role(),
                    node.term(),
                    node.commit(),
                    node.status().applied,
                    node.status().snapshot,
                    node.storage().first_index(),
                    node.status().last_index,
                    node.status().matched,
                    m.voters,
                    m.outgoing,
                    m.learners,
                    log_of(node).iter().map(|e| e.term).collect::<Vec<_>>()
                );
                if traced.get(id) != Some(&line) {
                    trace(&format!("step {step} node {id}: {line}"));
                    traced.insert(*id, line);
                }
            }
        }
        if healing {
            // Every member of the current configuration (the latest leader's) catches up.
            let leader = c
                .nodes
                .values()
                .filter(|n| n.role() == Role::Leader)
                .max_by_key(|n| n.term());
            caught_up = leader.is_some_and(|l| {
                let target = l.commit();
                l.membership()
                    .all_voters()
                    .iter()
                    .chain(&l.membership().learners)
                    .all(|id| c.hard.get(id).is_some_and(|h| h.commit >= target))
            });
        }
        check_leader_completeness(&c, &committed, seed)?;
        if step % 25 == 0 {
            check_log_matching(&c, seed)?;
            check_leader_completeness(&c, &committed, seed)?;
        }
    }
    check_log_matching(&c, seed)?;
    check_leader_completeness(&c, &committed, seed)?;
    if let Err((key, ops)) = linearizability::check(&history) {
        return Err(format!(
            "seed {seed}: the history of key {key} is not linearizable: {ops:?}"
        ));
    }
    report.committed = committed.len();
    report.membership_changes = committed
        .values()
        .filter(|(e, _)| e.kind == EntryKind::ConfChange as i32)
        .count();
    report.invoked = history.len();
    report.snapshots_installed = c.snapshot_counts.0;
    report.snapshots_taken = c.snapshot_counts.1;
    report.completed = history.iter().filter(|o| o.returned.is_some()).count();
    if !completed_after_healing {
        return Err(format!(
            "seed {seed}: no client operation completed in the 20,000 steps after healing (liveness)"
        ));
    }
    if !caught_up {
        let commits: Vec<u64> = c.hard.values().map(|h| h.commit).collect();
        return Err(format!(
            "seed {seed}: not every node caught up with the commit index within 20,000 steps after healing: {commits:?} (liveness)"
        ));
    }
    Ok(report)
}
