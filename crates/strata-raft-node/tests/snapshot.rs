//! Snapshots in the consensus core: a follower behind the leader's compacted log is streamed
//! the snapshot in chunks and then gets appends again; a lost chunk is resent after two
//! heartbeats; appends to it pause meanwhile; Figure 13's rule 7 on install; a follower that
//! already has what a snapshot covers refuses it (no install loop); a follower that lost what
//! it acknowledged is resent within the window; and the leader does not compact past a
//! snapshot it is sending (no chain of installs while writes go on).

use bytes::Bytes;
use prost::Message as _;
use strata_raft::{
    ConfState, Config, MemStorage, Membership, Message, MessageType, NodeId, Raft, Storage,
};
use strata_raft_log::HardState;
use strata_raft_node::sim::{Cluster, SnapshotPolicy, log_with_terms};
use strata_snapshot::{Ack, Chunk, FileInfo, SnapshotMeta};

/// The simulator's command: key `i % 4` gets value `i`.
fn put(i: u64) -> Vec<u8> {
    let mut put = (i % 4).to_le_bytes().to_vec();
    put.extend_from_slice(&i.to_le_bytes());
    put
}

/// A three-node cluster snapshotting by `policy`, sending chunks of `chunk_bytes`, `window`
/// at a time; a follower is cut off while the leader commits `commands`. The leader and that
/// follower (still cut off).
fn lagging(
    policy: SnapshotPolicy,
    chunk_bytes: usize,
    window: usize,
    commands: u64,
) -> (Cluster, NodeId, NodeId) {
    let mut c = Cluster::new(&[1, 2, 3], |config: &mut Config| {
        config.snapshot_chunk_bytes = chunk_bytes;
        config.snapshot_inflight_chunks_max = window;
    });
    c.snapshots = policy;
    let leader = c.elect();
    let behind = [1, 2, 3]
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    c.isolated.insert(behind);
    for i in 0..commands {
        c.propose(leader, &put(100 + i));
    }
    (c, leader, behind)
}

/// A snapshot every 5 entries with no compaction overhead, chunks of 64 bytes two at a time.
fn cluster_with_a_lagging_follower(filler: usize) -> (Cluster, NodeId, NodeId) {
    let policy = SnapshotPolicy {
        every: 5,
        compaction_overhead_entries: 0,
        filler,
    };
    let (mut c, leader, behind) = lagging(policy, 64, 2, 30);
    let first = c.node(leader).storage().first_index();
    assert!(first > 20, "the leader compacted its log: {first}");
    (c, leader, behind)
}

/// A snapshot every 50 entries, 10 kept, 4 KB of filler, chunks of 256 bytes one at a time;
/// 120 commands missed.
fn cluster_with_a_far_follower() -> (Cluster, NodeId, NodeId) {
    let policy = SnapshotPolicy {
        every: 50,
        compaction_overhead_entries: 10,
        filler: 4000,
    };
    lagging(policy, 256, 1, 120)
}

#[test]
fn a_follower_behind_the_compacted_log_installs_the_snapshot_and_catches_up() {
    let (mut c, leader, behind) = cluster_with_a_lagging_follower(1000);
    c.isolated.clear();
    c.tick_all(50);
    assert_eq!(c.node(behind).commit(), c.node(leader).commit());
    assert!(c.snapshot_counts.0 >= 1, "installed from the leader");
    assert_eq!(c.kv[&behind], c.kv[&leader], "the same state");
    assert_eq!(c.members[&behind], c.members[&leader]);
    // Appends resumed after the snapshot: a new command reaches it as an entry.
    c.propose(leader, &[9u8; 16]);
    c.tick_all(3);
    assert_eq!(c.node(behind).commit(), c.node(leader).commit());
    assert!(c.commands(behind).contains(&Bytes::from(vec![9u8; 16])));
}

#[test]
fn a_lost_chunk_is_sent_again_after_two_heartbeats_and_appends_pause_meanwhile() {
    let (mut c, leader, behind) = cluster_with_a_lagging_follower(1000);
    c.isolated.clear();
    // A heartbeat round: the follower's answer shows it needs compacted entries.
    c.node(leader).tick();
    let mut first_chunks = Vec::new();
    for _ in 0..20 {
        c.ready_all();
        if c.queue
            .iter()
            .any(|m| m.kind() == MessageType::InstallSnapshot)
        {
            break;
        }
        c.deliver_one();
    }
    // Lose every chunk in flight.
    c.queue.retain(|m| {
        let chunk = m.kind() == MessageType::InstallSnapshot;
        if chunk {
            first_chunks.push(m.chunk.clone().expect("a chunk"));
        }
        !chunk
    });
    assert_eq!(first_chunks.len(), 2, "a window of two chunks");
    assert_eq!((first_chunks[0].file, first_chunks[0].offset), (0, 0));
    // Appends to the follower pause while it is being sent the snapshot.
    c.node(leader)
        .propose(Bytes::from(vec![1u8; 16]))
        .expect("propose");
    c.ready_all();
    assert!(
        !c.queue
            .iter()
            .any(|m| m.kind() == MessageType::Append && m.to == behind),
        "no appends to a follower receiving a snapshot"
    );
    let resent = |c: &mut Cluster| {
        c.ready_all();
        c.queue
            .iter()
            .filter(|m| m.kind() == MessageType::InstallSnapshot)
            .filter_map(|m| m.chunk.clone())
            .collect::<Vec<Chunk>>()
    };
    c.node(leader).tick();
    assert!(resent(&mut c).is_empty(), "not after one heartbeat");
    c.node(leader).tick();
    let again = resent(&mut c);
    assert_eq!(again.len(), 2, "after two heartbeats, the window again");
    assert_eq!(
        (again[0].file, again[0].offset),
        (0, 0),
        "from the lost one"
    );
    // And the transfer completes.
    c.tick_all(50);
    assert_eq!(c.node(behind).commit(), c.node(leader).commit());
    assert_eq!(c.kv[&behind], c.kv[&leader]);
}

fn meta(last_index: u64, last_term: u64, voters: &[NodeId]) -> SnapshotMeta {
    let cs = ConfState {
        voters: voters.to_vec(),
        ..ConfState::default()
    };
    SnapshotMeta {
        id: 77,
        last_index,
        last_term,
        membership: Bytes::from(cs.encode_to_vec()),
        files: vec![FileInfo {
            name: "state".to_owned(),
            size: 10,
            crc: 0,
        }],
    }
}

fn chunk_message(meta: &SnapshotMeta, term: u64) -> Message {
    Message {
        msg_type: MessageType::InstallSnapshot as i32,
        from: 1,
        to: 2,
        term,
        snapshot: Some(meta.clone()),
        chunk: Some(Chunk {
            snapshot_id: meta.id,
            ..Chunk::default()
        }),
        ..Message::default()
    }
}

/// A follower (node 2 of {1, 2, 3}) with `terms` in its log, installing `meta` from leader 1
/// in `term`; its last index afterwards, and the Ready that carries the snapshot.
fn install(
    terms: &[u64],
    meta: &SnapshotMeta,
    term: u64,
) -> (Raft<MemStorage>, strata_raft::Ready) {
    let hs = HardState {
        term: 1,
        vote: 0,
        commit: 1,
    };
    let mut node =
        Raft::new(Config::new(2, vec![1, 2, 3]), log_with_terms(terms), hs).expect("node");
    node.step(chunk_message(meta, term)).expect("step");
    let ready = node.ready().expect("ready");
    assert_eq!(
        ready.snapshot_chunks.len(),
        1,
        "handed to the driver to stage"
    );
    node.advance(&ready);
    node.snapshot_staged(1, meta, Ack::Complete)
        .expect("staged");
    let ready = node.ready().expect("ready");
    (node, ready)
}

#[test]
fn an_installed_snapshot_keeps_the_entries_after_it_only_if_they_match() {
    // Rule 7: the log holds the snapshot's last entry with its term: what follows stays.
    let (node, ready) = install(&[1, 1, 1, 1, 1], &meta(3, 1, &[1, 2, 3, 4]), 2);
    assert_eq!(ready.snapshot.as_ref().map(|m| m.last_index), Some(3));
    assert_eq!(node.status().last_index, 5, "entries 4 and 5 kept");
    assert_eq!(node.commit(), 3);
    assert_eq!(
        node.membership(),
        &Membership::new(&[1, 2, 3, 4], &[]),
        "the snapshot's membership"
    );
    let done = ready
        .persisted_messages
        .iter()
        .find(|m| m.kind() == MessageType::SnapshotResponse)
        .expect("installed, once persisted");
    assert!(done.chunk.as_ref().is_some_and(|c| c.done));

    // A different term there: everything after it goes.
    let (mut node, ready) = install(&[1, 1, 2, 2, 2], &meta(4, 3, &[1, 2, 3]), 3);
    assert_eq!(node.status().last_index, 4, "the log ends at the snapshot");
    // The driver makes storage start after it, then persists the Ready.
    node.storage_mut().compact(4, 3);
    node.advance(&ready);
    assert_eq!(node.storage().first_index(), 5);
    assert_eq!(node.storage().term(4), Some(3));
}

#[test]
fn a_follower_that_has_what_a_snapshot_covers_refuses_it() {
    let hs = HardState {
        term: 2,
        vote: 0,
        commit: 5,
    };
    let mut node = Raft::new(
        Config::new(2, vec![1, 2, 3]),
        log_with_terms(&[1, 1, 2, 2, 2]),
        hs,
    )
    .expect("node");
    node.step(chunk_message(&meta(4, 2, &[1, 2, 3]), 2))
        .expect("step");
    let ready = node.ready().expect("ready");
    assert!(ready.snapshot_chunks.is_empty(), "nothing to stage");
    let refusal = ready
        .messages
        .iter()
        .find(|m| m.kind() == MessageType::SnapshotResponse)
        .expect("an answer");
    assert!(refusal.reject && refusal.chunk.is_none());
    assert_eq!(refusal.index, 5, "appends resume after its commit index");
}

/// After the follower reports it needs data far behind what it acknowledged before (its
/// staging restarted: a crash losing unsynced chunks, a file whose checksum failed, or a
/// chunk of another snapshot that made it begin again), the leader should resend within
/// its window of `snapshot_inflight_chunks_max` chunks.
#[test]
fn a_gap_behind_the_acked_position_resends_within_the_window() {
    let (mut c, leader, behind) = cluster_with_a_lagging_follower(20_000);
    c.isolated.clear();
    c.node(leader).tick();
    // Run the transfer until the follower acknowledged well into the second file.
    let mut snapshot_id = 0;
    'outer: for _ in 0..100_000 {
        c.ready_all();
        let Some(m) = c.queue.pop_front() else {
            c.node(leader).tick();
            continue;
        };
        let far = m.kind() == MessageType::SnapshotResponse
            && m.from == behind
            && m.chunk
                .as_ref()
                .is_some_and(|ch| ch.file == 1 && ch.offset >= 10_000);
        if let Some(ch) = &m.chunk {
            snapshot_id = ch.snapshot_id;
        }
        let to = m.to;
        let _ = c.node(to).step(m);
        if far {
            break 'outer;
        }
    }
    assert_ne!(snapshot_id, 0);
    c.ready_all();
    c.queue.clear();
    // The follower's receiver restarted the transfer: it needs (0, 0).
    let term = c.node(leader).term();
    let gap = Message {
        msg_type: MessageType::SnapshotResponse as i32,
        from: behind,
        to: leader,
        term,
        reject: true,
        chunk: Some(Chunk {
            snapshot_id,
            ..Chunk::default()
        }),
        ..Message::default()
    };
    c.node(leader).step(gap).expect("step");
    let ready = c.node(leader).ready().expect("ready");
    let chunks = ready
        .messages
        .iter()
        .filter(|m| m.kind() == MessageType::InstallSnapshot && m.to == behind)
        .count();
    assert!(
        chunks <= 2,
        "{chunks} InstallSnapshot messages in one Ready for a window of 2"
    );
}

/// While the leader keeps taking snapshots and compacting (writes go on), a follower that is
/// sent a snapshot finishes installing an older one, finds the entries after it compacted
/// away, and is sent the next one: it installs snapshot after snapshot without ever getting
/// appends.
#[test]
fn a_follower_reinstalls_while_the_leader_compacts_past_the_transfer() {
    let (mut c, leader, behind) = cluster_with_a_far_follower();
    c.isolated.clear();
    let mut installs_seen = Vec::new();
    let mut last_installs = c.snapshot_counts.0;
    // Writes continue: a proposal every few messages.
    for step in 0..20_000u64 {
        if step % 4 == 0 {
            let _ = c.node(leader).propose(Bytes::from(put(step)));
        }
        if step % 50 == 0 {
            c.node(leader).tick();
            c.node(behind).tick();
        }
        c.ready_all();
        c.deliver_one();
        if c.snapshot_counts.0 != last_installs {
            last_installs = c.snapshot_counts.0;
            installs_seen.push((step, c.node(behind).status().snapshot));
        }
    }
    assert!(
        installs_seen.len() <= 2,
        "the follower installed snapshots {installs_seen:?} in a row while writes went on"
    );
}

/// A follower that goes silent mid-transfer is no longer sent the snapshot after an election
/// timeout: the leader compacts again, and the set is no longer kept for it.
#[test]
fn a_follower_gone_mid_transfer_does_not_stop_the_leader_compacting() {
    let (mut c, leader, behind) = cluster_with_a_far_follower();
    c.isolated.clear();
    // Let the transfer start and make a little progress.
    for _ in 0..200 {
        c.node(leader).tick();
        c.ready_all();
        for _ in 0..5 {
            c.deliver_one();
        }
        if c.node(leader).transfer_floor().is_some() {
            break;
        }
    }
    assert!(
        c.node(leader).transfer_floor().is_some(),
        "a transfer started"
    );
    // The follower crashes / is partitioned for good.
    c.isolated.insert(behind);
    for i in 0..2000u64 {
        c.propose(leader, &put(i));
        if i % 10 == 0 {
            c.tick_all(1);
        }
    }
    let first = c.node(leader).storage().first_index();
    let last = c.node(leader).storage().last_index();
    assert!(
        last - first < 200,
        "leader log not compacted: {first}..={last}, floor {:?}",
        c.node(leader).transfer_floor()
    );
    assert_eq!(
        c.node(leader).transfer_floor(),
        None,
        "the transfer was dropped"
    );
}
