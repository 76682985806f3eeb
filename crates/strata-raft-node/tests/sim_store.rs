//! The simulator's in-memory snapshot store (`SimStore`) against the real receiver
//! (`strata_snapshot::Receiver` on a temporary directory), each driven as its node drives it:
//! a received chunk goes to `SimStore::stage` in the simulator and to `Receiver::receive` in
//! the driver, whose answer becomes the acknowledgement; a snapshot the node took itself goes
//! to `SimStore::install` and to `Receiver::adopt`. The same chunks, in order or not,
//! duplicated, damaged in transit, with gaps, from a newer snapshot in the middle of a
//! transfer or from a stale one, with restarts in between, must get the same
//! acknowledgements and leave the same installed set (its metadata and its files' bytes).

use bytes::Bytes;
use proptest::prelude::*;
use strata_raft_node::sim::SimStore;
use strata_snapshot::{Ack, Chunk, FileInfo, Position, Receiver, SnapshotMeta};

/// A snapshot the leader holds: its metadata and its files.
#[derive(Debug, Clone)]
struct Set {
    meta: SnapshotMeta,
    files: Vec<Bytes>,
}

/// Sets with last indexes from a small range, so that two sets can be as new as each other or
/// older than the one installed; with empty files often (they need no chunk). The test gives
/// each set of a case its own id (`with_own_ids`): an id names one snapshot, and a leader never
/// sends two different sets under one id (the real receiver refuses to install a set under the
/// installed set's id; the simulator never makes one).
fn a_set() -> impl Strategy<Value = Set> {
    let file = prop_oneof![
        1 => Just(Vec::new()),
        3 => prop::collection::vec(any::<u8>(), 1..40),
    ];
    (1u64..=4, 1u64..=6, prop::collection::vec(file, 0..4)).prop_map(|(id, last_index, files)| {
        let files: Vec<Bytes> = files.into_iter().map(Bytes::from).collect();
        let meta = SnapshotMeta {
            id,
            last_index,
            last_term: 1,
            membership: Bytes::from(vec![id as u8]),
            files: files
                .iter()
                .enumerate()
                .map(|(i, data)| FileInfo {
                    name: format!("f{i}"),
                    size: data.len() as u64,
                    crc: crc32fast::hash(data),
                })
                .collect(),
        };
        Set { meta, files }
    })
}

/// `sets` with ids 1, 2, ... in order: each a snapshot of its own.
fn with_own_ids(mut sets: Vec<Set>) -> Vec<Set> {
    for (i, set) in sets.iter_mut().enumerate() {
        set.meta.id = i as u64 + 1;
    }
    sets
}

/// Added to a set's id when the node takes it itself.
const OWN_IDS: u64 = 100;

/// What reaches the follower next. `set` picks one of the case's sets (modulo their number);
/// the leader keeps, for each set, the position the follower last asked for.
#[derive(Debug, Clone)]
enum Step {
    /// The chunk at the leader's position, `len` bytes at most (as its sender reads it).
    Next { set: usize, len: u64 },
    /// The same, damaged in transit: its checksum does not match its data.
    Damaged { set: usize, len: u64 },
    /// The same with other bytes than the file holds, under their own right checksum: the
    /// file's checksum fails when it completes.
    Forged { set: usize, len: u64 },
    /// A chunk from anywhere in the set (a duplicate behind, a gap ahead, past the last file).
    At {
        set: usize,
        file: u32,
        offset: u64,
        len: u64,
    },
    /// The chunk at the leader's position with bytes past its file's end (only a misbehaving
    /// leader sends one: a sender reads within the file).
    Overlong { set: usize, extra: u64 },
    /// The node took this snapshot itself and installs it in its store.
    Take { set: usize },
    /// The node restarts: the real receiver is opened again from its directory; the
    /// simulator's store, like a disk, keeps what it had.
    Restart,
}

fn a_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0usize..3, 1u64..24).prop_map(|(set, len)| Step::Next { set, len }),
        1 => (0usize..3, 1u64..24).prop_map(|(set, len)| Step::Damaged { set, len }),
        1 => (0usize..3, 1u64..24).prop_map(|(set, len)| Step::Forged { set, len }),
        2 => (0usize..3, 0u32..5, 0u64..45, 1u64..24)
            .prop_map(|(set, file, offset, len)| Step::At { set, file, offset, len }),
        1 => (0usize..3, 1u64..4).prop_map(|(set, extra)| Step::Overlong { set, extra }),
        1 => (0usize..3).prop_map(|set| Step::Take { set }),
        1 => Just(Step::Restart),
    ]
}

/// The chunk of `set` at `at` with `len` bytes at most, as a sender reads it; past the last
/// file it has no data (the driver sends such a chunk as the core made it).
fn chunk_at(set: &Set, at: Position, len: u64) -> Chunk {
    let Some(file) = set.files.get(at.file as usize) else {
        return Chunk {
            snapshot_id: set.meta.id,
            file: at.file,
            offset: at.offset,
            ..Chunk::default()
        };
    };
    let size = file.len() as u64;
    let from = at.offset.min(size);
    let to = from.saturating_add(len).min(size);
    let data = file.slice(from as usize..to as usize);
    Chunk {
        snapshot_id: set.meta.id,
        file: at.file,
        offset: from,
        crc: crc32fast::hash(&data),
        done: at.file as usize + 1 == set.files.len() && to == size,
        data,
    }
}

/// The installed set and its files' bytes, as the real receiver has it on disk.
fn installed_on_disk(receiver: &Receiver) -> Option<(SnapshotMeta, Vec<Vec<u8>>)> {
    let (meta, dir) = receiver.installed().expect("the installed set reads")?;
    let files = meta
        .files
        .iter()
        .map(|f| std::fs::read(dir.join(&f.name)).expect("an installed file reads"))
        .collect();
    Some((meta, files))
}

/// The installed set and its files' bytes, as the simulator's store has it.
fn installed_in_memory(store: &SimStore) -> Option<(SnapshotMeta, Vec<Vec<u8>>)> {
    let meta = store.current_meta()?.clone();
    let files = store.sets[&meta.id].1.iter().map(|f| f.to_vec()).collect();
    Some((meta, files))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn sim_store_acknowledges_like_the_real_receiver(
        sets in prop::collection::vec(a_set(), 1..4).prop_map(with_own_ids),
        steps in prop::collection::vec(a_step(), 1..60),
    ) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut receiver = Receiver::open(dir.path()).expect("the receiver opens");
        let mut store = SimStore::default();
        // Where the leader sends each set from next: what the follower last asked for.
        let mut cursors = vec![Position { file: 0, offset: 0 }; sets.len()];
        for (i, step) in steps.iter().enumerate() {
            let (at, chunk) = match *step {
                Step::Restart => {
                    drop(receiver);
                    receiver = Receiver::open(dir.path()).expect("the receiver reopens");
                    continue;
                }
                Step::Take { set } => {
                    let set = &sets[set % sets.len()];
                    // A snapshot a node takes has an id of its own (from the node, the index
                    // and the clock in the driver), never that of one a leader sends it.
                    let meta = SnapshotMeta {
                        id: set.meta.id + OWN_IDS,
                        ..set.meta.clone()
                    };
                    let local = receiver.local_dir().expect("a local directory");
                    for (info, data) in meta.files.iter().zip(&set.files) {
                        std::fs::write(local.join(&info.name), data).expect("a local file");
                    }
                    receiver.adopt(&meta).expect("adopt");
                    store.install(meta, set.files.clone());
                    prop_assert_eq!(
                        installed_on_disk(&receiver),
                        installed_in_memory(&store),
                        "step {} ({:?})", i, step
                    );
                    continue;
                }
                Step::Next { set, len } => {
                    let at = set % sets.len();
                    (at, chunk_at(&sets[at], cursors[at], len))
                }
                Step::Damaged { set, len } => {
                    let at = set % sets.len();
                    let mut chunk = chunk_at(&sets[at], cursors[at], len);
                    chunk.crc ^= 1;
                    (at, chunk)
                }
                Step::Forged { set, len } => {
                    let at = set % sets.len();
                    let mut chunk = chunk_at(&sets[at], cursors[at], len);
                    chunk.data = chunk.data.iter().map(|b| b ^ 0x5a).collect();
                    chunk.crc = crc32fast::hash(&chunk.data);
                    (at, chunk)
                }
                Step::At { set, file, offset, len } => {
                    let at = set % sets.len();
                    (at, chunk_at(&sets[at], Position { file, offset }, len))
                }
                Step::Overlong { set, extra } => {
                    let at = set % sets.len();
                    let mut chunk = chunk_at(&sets[at], cursors[at], u64::MAX);
                    let mut data = chunk.data.to_vec();
                    data.extend((0..extra).map(|b| b as u8));
                    chunk.data = Bytes::from(data);
                    chunk.crc = crc32fast::hash(&chunk.data);
                    (at, chunk)
                }
            };
            let meta = &sets[at].meta;
            let simulated = store.stage(meta, &chunk);
            let real = receiver.receive(meta, &chunk);
            match real {
                Ok(real) => prop_assert_eq!(real, simulated, "step {} ({:?})", i, step),
                // The one difference: a chunk at the expected position that runs past its
                // file's end is refused by both, the real receiver with an error (which the
                // driver counts as a malformed message and drops), the simulator's store by
                // asking again for the position it needs.
                Err(strata_snapshot::Error::Invalid(_)) => {
                    let expected = Position { file: chunk.file, offset: chunk.offset };
                    prop_assert!(
                        matches!(step, Step::Overlong { .. }),
                        "step {} ({:?})", i, step
                    );
                    prop_assert_eq!(
                        simulated,
                        Ack::Gap { need: expected },
                        "step {} ({:?})", i, step
                    );
                }
                Err(e) => {
                    prop_assert!(false, "step {i} ({step:?}): the real receiver failed: {e}");
                }
            }
            match simulated {
                Ack::Accepted { next } | Ack::Duplicate { next } => cursors[at] = next,
                Ack::Gap { need } => cursors[at] = need,
                Ack::Complete => {}
            }
            prop_assert_eq!(
                installed_on_disk(&receiver),
                installed_in_memory(&store),
                "step {} ({:?})", i, step
            );
        }
    }
}
