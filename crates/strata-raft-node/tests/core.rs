//! The consensus core in a deterministic in-memory cluster: elections, replication, the Raft
//! paper's Figure 7 and Figure 8 scenarios, pre-vote, check-quorum, reads, leader transfer and
//! bad input.

fn msg(kind: MessageType, from: u64, to: u64, term: u64, index: u64) -> Message {
    Message {
        msg_type: kind as i32,
        from,
        to,
        term,
        index,
        ..Message::default()
    }
}

use bytes::Bytes;
use prost::Message as _;
use strata_raft::{Message, MessageType, Raft, Role, Storage};
use strata_raft_log::HardState;
use strata_raft_node::sim::{Cluster, log_with_terms};

#[test]
fn three_nodes_elect_one_leader_and_apply_the_same_commands() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    for i in 0..50u32 {
        c.propose(leader, &i.to_le_bytes());
    }
    c.tick_all(3);
    let want: Vec<Bytes> = (0..50u32)
        .map(|i| Bytes::copy_from_slice(&i.to_le_bytes()))
        .collect();
    for id in [1, 2, 3] {
        assert_eq!(c.commands(id), want, "node {id}");
    }
}

#[test]
fn proposals_made_together_go_out_as_one_append_per_follower() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.tick_all(2);
    for i in 0..10u8 {
        c.node(leader)
            .propose(Bytes::from(vec![i]))
            .expect("propose");
    }
    let ready = c.node(leader).ready().expect("ready");
    assert_eq!(ready.entries.len(), 10, "one persist for the whole batch");
    let appends: Vec<&Message> = ready
        .messages
        .iter()
        .filter(|m| m.kind() == MessageType::Append)
        .collect();
    assert_eq!(appends.len(), 2, "one append per follower");
    assert!(appends.iter().all(|m| m.entries.len() == 10));
}

#[test]
fn a_partitioned_leader_steps_down_and_its_uncommitted_entries_are_replaced() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let old = c.elect();
    c.propose(old, b"committed");
    c.isolated.insert(old);
    // Accepted by the old leader, never committed: it cannot reach a quorum.
    c.node(old)
        .propose(Bytes::from_static(b"lost"))
        .expect("propose");
    c.settle();
    let old_term = c.node(old).term();
    c.tick_all(40);
    let new = c.leader().expect("a new leader among the majority");
    assert_ne!(new, old);
    assert!(c.node(new).term() > old_term);
    // Check-quorum: the old leader noticed it lost its quorum (and, cut off, now only asks
    // for pre-votes, which move no term).
    assert_ne!(c.node(old).role(), Role::Leader);
    assert_eq!(c.node(old).term(), old_term);
    c.propose(new, b"after");
    c.isolated.clear();
    c.tick_all(10);
    for id in [1, 2, 3] {
        assert_eq!(
            c.commands(id),
            vec![
                Bytes::from_static(b"committed"),
                Bytes::from_static(b"after")
            ],
            "node {id}"
        );
    }
}

#[test]
fn pre_vote_keeps_a_returning_partitioned_node_from_disrupting_the_cluster() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    let term = c.node(leader).term();
    let outsider = [1, 2, 3]
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    c.isolated.insert(outsider);
    c.tick_all(100);
    // Its pre-votes found no quorum: its term did not move.
    assert_eq!(c.node(outsider).term(), term);
    c.isolated.clear();
    c.tick_all(10);
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.node(leader).term(), term);
}

#[test]
fn without_pre_vote_the_returning_node_forces_an_election() {
    let mut c = Cluster::new(&[1, 2, 3], |config| {
        config.pre_vote = false;
        config.check_quorum = false;
    });
    let leader = c.elect();
    let term = c.node(leader).term();
    let outsider = [1, 2, 3]
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    c.isolated.insert(outsider);
    c.tick_all(100);
    assert!(c.node(outsider).term() > term, "it kept starting elections");
    c.isolated.clear();
    c.tick_all(30);
    assert!(c.node(c.leader().expect("leader")).term() > term);
}

/// Figure 7: whatever a follower's log (missing entries, extra uncommitted entries, or
/// both), the leader brings it to exactly its own.
#[test]
fn figure_7_followers_converge_to_the_leaders_log() {
    let leader_log = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    let followers: [&[u64]; 6] = [
        &[1, 1, 1, 4, 4, 5, 5, 6, 6],
        &[1, 1, 1, 4],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
        &[1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
        &[1, 1, 1, 4, 4, 4, 4],
        &[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    ];
    for (case, follower) in followers.iter().enumerate() {
        let mut c = Cluster::with_logs(
            &[1, 2, 3],
            |config| config.pre_vote = false,
            |id| {
                let terms: &[u64] = if id == 2 { follower } else { &leader_log };
                (
                    log_with_terms(terms),
                    HardState {
                        term: 7,
                        vote: 0,
                        commit: 0,
                    },
                )
            },
        );
        // Node 1 times out first and wins with node 3's vote (term 8).
        while c.node(1).role() != Role::Leader {
            c.tick(1);
        }
        assert_eq!(c.node(1).term(), 8, "case {case}");
        c.tick_all(5);
        let log = |c: &mut Cluster, id| {
            let s = c.node(id).storage();
            s.entries(1, s.last_index() + 1, usize::MAX)
                .expect("entries")
        };
        let leaders = log(&mut c, 1);
        assert_eq!(leaders.len(), 11, "the leader's log plus its no-op");
        assert_eq!(
            log(&mut c, 2),
            leaders,
            "case ({})",
            (b'a' + case as u8) as char
        );
        assert_eq!(log(&mut c, 3), leaders);
    }
}

/// Figure 8: a leader must not count replicas of an entry from an earlier term to commit it
/// (it could still be overwritten); it commits it only with an entry of its own term.
#[test]
fn figure_8_an_old_term_entry_is_not_committed_by_counting_replicas() {
    // S1 led term 2 and got index 2 only onto S2; S5 led term 3 with its own index 2; now
    // S1 leads again, in term 4.
    let mut s1 = Raft::new(
        {
            let mut config = strata_raft::Config::new(1, vec![1, 2, 3, 4, 5]);
            config.pre_vote = false;
            config
        },
        log_with_terms(&[1, 2]),
        HardState {
            term: 3,
            vote: 0,
            commit: 1,
        },
    )
    .expect("node");
    while s1.role() != Role::Candidate {
        s1.tick();
    }
    for from in [2, 3] {
        s1.step(msg(MessageType::VoteResponse, from, 1, 4, 0))
            .expect("vote");
    }
    assert_eq!(s1.role(), Role::Leader);
    assert_eq!(s1.term(), 4);
    // Index 2 (term 2) is now on S1, S2 and S3: a majority.
    for from in [2, 3] {
        s1.step(msg(MessageType::AppendResponse, from, 1, 4, 2))
            .expect("ack");
    }
    assert_eq!(
        s1.commit(),
        1,
        "index 2 must not be committed by counting (§5.4.2)"
    );
    // Once the leader's own no-op (index 3, term 4) is on a majority, both commit.
    let ready = s1.ready().expect("ready");
    s1.storage_mut().append(&ready.entries);
    s1.advance(&ready);
    for from in [2, 3] {
        s1.step(msg(MessageType::AppendResponse, from, 1, 4, 3))
            .expect("ack");
    }
    assert_eq!(s1.commit(), 3);
}

#[test]
fn read_index_waits_for_a_heartbeat_quorum() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.propose(leader, b"x");
    let commit = c.node(leader).commit();
    c.node(leader)
        .read_index(Bytes::from_static(b"r1"))
        .expect("read");
    // Not before the heartbeat round.
    let ready = c.node(leader).ready().expect("ready");
    assert!(ready.read_states.is_empty());
    c.queue.extend(ready.messages.iter().cloned());
    c.node(leader).advance(&ready);
    c.settle();
    let reads = &c.reads[&leader];
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].index, commit);
    assert_eq!(&reads[0].context[..], b"r1");
}

#[test]
fn a_lease_read_needs_no_heartbeat_round_while_the_quorum_is_fresh() {
    let mut c = Cluster::new(&[1, 2, 3], |config| config.lease_read = true);
    let leader = c.elect();
    c.tick_all(2);
    c.node(leader)
        .read_index(Bytes::from_static(b"lease"))
        .expect("read");
    let ready = c.node(leader).ready().expect("ready");
    assert_eq!(ready.read_states.len(), 1, "served from the lease");
    c.node(leader).advance(&ready);
}

#[test]
fn leadership_transfer_hands_over_without_an_election_timeout() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.propose(leader, b"before");
    let target = [1, 2, 3]
        .into_iter()
        .find(|&id| id != leader)
        .expect("target");
    let term = c.node(leader).term();
    c.node(leader).transfer_leader(target).expect("transfer");
    c.settle();
    assert_eq!(c.leader(), Some(target));
    assert_eq!(c.node(target).term(), term + 1);
    c.propose(target, b"after");
    c.tick_all(3);
    assert_eq!(
        c.commands(leader),
        vec![Bytes::from_static(b"before"), Bytes::from_static(b"after")]
    );
}

#[test]
fn bad_input_is_refused_and_counted_never_a_panic() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    let node = c.node(leader);
    assert!(
        node.step(msg(MessageType::Append, 9, leader, 100, 0))
            .is_err()
    );
    assert!(node.step_bytes(&[0xff, 0xff, 0xff]).is_err());
    let wrong_type = Message {
        msg_type: 77,
        ..msg(
            MessageType::Append,
            if leader == 1 { 2 } else { 1 },
            leader,
            1,
            0,
        )
    };
    assert!(node.step_bytes(&wrong_type.encode_to_vec()).is_err());
    let status = node.status();
    assert_eq!(status.counters.unknown_sender, 1);
    assert_eq!(status.counters.malformed, 2);
    assert_eq!(status.role, Role::Leader, "nothing changed");
    assert_eq!(status.term, c.node(leader).term());
}

#[test]
fn uncommitted_bytes_are_capped() {
    let mut c = Cluster::new(&[1, 2, 3], |config| {
        config.uncommitted_bytes_max = 1000;
        config.entry_bytes_max = 1000;
    });
    let leader = c.elect();
    c.isolated
        .extend([1, 2, 3].into_iter().filter(|&id| id != leader));
    let mut accepted = 0;
    while c.node(leader).propose(Bytes::from(vec![0; 100])).is_ok() {
        accepted += 1;
        assert!(accepted < 100, "the cap holds");
    }
    assert_eq!(accepted, 10);
    assert_eq!(c.node(leader).status().counters.dropped_proposals, 1);
}

/// Appends lost while a follower was cut off fill the in-flight window; heartbeat answers
/// must free it, or the follower would never receive another entry.
#[test]
fn a_follower_whose_appends_were_lost_catches_up() {
    for window in [4, 256] {
        let mut c = Cluster::new(&[1, 2, 3], |config| config.inflight_msgs_max = window);
        let leader = c.elect();
        c.propose(leader, b"warm-up");
        c.tick_all(3);
        let f = [1, 2, 3]
            .into_iter()
            .find(|&i| i != leader)
            .expect("follower");
        c.isolated.insert(f);
        for i in 0..300u32 {
            c.propose(leader, &i.to_le_bytes());
        }
        c.isolated.clear();
        c.tick_all(50);
        assert_eq!(c.node(leader).role(), Role::Leader);
        assert_eq!(
            c.node(f).storage().last_index(),
            c.node(leader).commit(),
            "window {window}: the follower caught up"
        );
    }
}

/// A lease counts from when the answered heartbeat was sent: a delayed or duplicated old
/// answer does not keep a deposed leader's lease alive.
#[test]
fn an_old_duplicated_heartbeat_answer_does_not_extend_a_lease() {
    let mut c = Cluster::new(&[1, 2, 3], |config| {
        config.lease_read = true;
        config.check_quorum = false;
    });
    let old = c.elect();
    c.propose(old, b"a");
    c.tick_all(2);
    let f = [1, 2, 3].into_iter().find(|&i| i != old).expect("follower");
    let dup = Message {
        sent_tick: 0,
        ..msg(
            MessageType::HeartbeatResponse,
            f,
            old,
            c.node(old).term(),
            0,
        )
    };
    c.isolated.insert(old);
    let mut new = None;
    for _ in 0..300 {
        for id in [1, 2, 3] {
            c.node(id).tick();
        }
        let _ = c.node(old).step(dup.clone());
        c.settle();
        if let Some(l) = c.leader()
            && l != old
        {
            new = Some(l);
            break;
        }
    }
    let new = new.expect("a new leader");
    c.propose(new, b"b");
    let _ = c.node(old).step(dup);
    assert_eq!(
        c.node(old).role(),
        Role::Leader,
        "cut off, it still thinks it leads"
    );
    c.node(old)
        .read_index(Bytes::from_static(b"r"))
        .expect("read");
    let ready = c.node(old).ready().expect("ready");
    assert!(
        ready.read_states.is_empty(),
        "no lease read from a stale lease"
    );
}

/// Joint consensus end to end: a learner joins and catches up without voting, is promoted,
/// and the leader removes itself; every change passes through a joint configuration that
/// the leader leaves by itself.
#[test]
fn membership_changes_go_through_joint_configurations() {
    use strata_raft::{ChangeKind, ConfChange};
    let mut c = Cluster::new(&[1, 2, 3, 4], |config| {
        config.voters = vec![1, 2, 3];
        config.peers = vec![1, 2, 3, 4];
    });
    let leader = c.elect();
    assert_ne!(leader, 4, "node 4 is not a voter yet");
    c.propose(leader, b"before");
    c.node(leader)
        .propose_conf_change(&ConfChange::single(ChangeKind::AddLearner, 4))
        .expect("add learner");
    // Another change must wait until this one (and leaving its joint state) is applied.
    assert!(
        c.node(leader)
            .propose_conf_change(&ConfChange::single(ChangeKind::AddVoter, 4))
            .is_err()
    );
    c.tick_all(5);
    let m = c.node(leader).membership().clone();
    assert!(!m.is_joint(), "the leader left the joint configuration");
    assert!(m.learners.contains(&4));
    assert_eq!(
        c.commands(4),
        vec![Bytes::from_static(b"before")],
        "the learner has the log"
    );
    c.node(leader)
        .propose_conf_change(&ConfChange::single(ChangeKind::AddVoter, 4))
        .expect("promote");
    c.tick_all(5);
    assert!(c.node(leader).membership().voters.contains(&4));
    c.node(leader)
        .propose_conf_change(&ConfChange::single(ChangeKind::RemoveNode, leader))
        .expect("remove the leader");
    c.tick_all(60);
    let next = c.leader().expect("a new leader among the remaining voters");
    assert_ne!(next, leader);
    let m = c.node(next).membership().clone();
    assert!(!m.is_member(leader) && m.voters.len() == 3 && !m.is_joint());
    c.propose(next, b"after");
    c.tick_all(3);
    for id in m.voters.iter().copied() {
        assert_eq!(
            c.commands(id),
            vec![Bytes::from_static(b"before"), Bytes::from_static(b"after")],
            "node {id}"
        );
    }
}

/// A node restarting on a long committed log hands it out for applying over several
/// Readies, at most `committed_bytes_per_ready_max` bytes in each (one entry always goes,
/// and the last may cross it): in order, with no gap or repeat, and `has_ready` stays true
/// until everything is handed out, so applying goes on without waiting for another event.
#[test]
fn committed_entries_past_the_per_ready_limit_come_in_the_next_readies() {
    use strata_raft::{Config, MemStorage};
    use strata_raft_log::{Entry, EntryKind};

    const ENTRIES: u64 = 200;
    const LIMIT_BYTES: usize = 300;
    let log = MemStorage {
        entries: (1..=ENTRIES)
            .map(|i| Entry::new(1, i, EntryKind::Normal, format!("command {i}")))
            .collect(),
        compacted: (0, 0),
    };
    let hs = HardState {
        term: 1,
        vote: 0,
        commit: ENTRIES,
    };
    let mut config = Config::new(1, vec![1, 2, 3]);
    config.committed_bytes_per_ready_max = LIMIT_BYTES;
    let mut node = Raft::new(config, log, hs).expect("node");
    let mut applied = Vec::new();
    let mut readies = 0;
    while node.has_ready() {
        let ready = node.ready().expect("ready");
        let batch = &ready.committed_entries;
        if let Some((_, before_last)) = batch.split_last() {
            readies += 1;
            let bytes: usize = before_last.iter().map(Entry::size).sum();
            assert!(bytes <= LIMIT_BYTES, "{bytes} bytes before the last entry");
        }
        applied.extend(batch.iter().map(|e| e.index));
        node.advance(&ready);
    }
    assert_eq!(
        applied,
        (1..=ENTRIES).collect::<Vec<_>>(),
        "in order, no gap or repeat"
    );
    assert!(readies > 10, "spread over several Readies, not {readies}");
    assert_eq!(node.status().applied, ENTRIES);
}

/// The same limit in a cluster: leader and followers apply every command, in the same order.
#[test]
fn three_nodes_with_a_small_per_ready_limit_apply_the_same_commands() {
    let mut c = Cluster::new(&[1, 2, 3], |config| {
        config.committed_bytes_per_ready_max = 64;
    });
    let leader = c.elect();
    for i in 0..100u32 {
        c.node(leader)
            .propose(Bytes::copy_from_slice(&i.to_le_bytes()))
            .expect("propose");
    }
    c.tick_all(5);
    let want: Vec<Bytes> = (0..100u32)
        .map(|i| Bytes::copy_from_slice(&i.to_le_bytes()))
        .collect();
    for id in [1, 2, 3] {
        assert_eq!(c.commands(id), want, "node {id}");
    }
}

#[test]
fn a_zero_per_ready_limit_is_refused() {
    use strata_raft::{Config, Error, MemStorage};
    let mut config = Config::new(1, vec![1]);
    config.committed_bytes_per_ready_max = 0;
    assert!(matches!(
        Raft::new(config, MemStorage::default(), HardState::default()),
        Err(Error::Config(_))
    ));
}

#[test]
fn an_entry_larger_than_entry_bytes_max_is_refused_before_the_log() {
    use strata_raft::{ChangeKind, ConfChange, Error};

    let mut c = Cluster::new(&[1, 2, 3], |config| config.entry_bytes_max = 100);
    let leader = c.elect();
    c.tick_all(2);
    let last = c.node(leader).status().last_index;
    assert_eq!(
        c.node(leader).propose(Bytes::from(vec![0; 101])),
        Err(Error::EntryTooLarge {
            bytes: 101,
            max: 100
        })
    );
    // A change whose context makes it too large, too.
    let change = ConfChange::single(ChangeKind::AddLearner, 4).with_context(vec![b'a'; 100]);
    assert!(matches!(
        c.node(leader).propose_conf_change(&change),
        Err(Error::EntryTooLarge { max: 100, .. })
    ));
    let status = c.node(leader).status();
    assert_eq!(status.last_index, last, "nothing reached the log");
    assert_eq!(status.counters.dropped_proposals, 2);
    assert!(!c.node(leader).has_ready());
    // At the limit it goes.
    assert_eq!(
        c.node(leader).propose(Bytes::from(vec![0; 100])),
        Ok(last + 1)
    );
    // A follower refuses it for its size too: it could not succeed anywhere.
    let follower = [1, 2, 3]
        .into_iter()
        .find(|&id| id != leader)
        .expect("follower");
    assert!(matches!(
        c.node(follower).propose(Bytes::from(vec![0; 101])),
        Err(Error::EntryTooLarge { .. })
    ));
}

#[test]
fn entry_bytes_max_must_fit_one_append_and_the_uncommitted_cap() {
    use strata_raft::{Config, Error, MemStorage};

    let build = |configure: &dyn Fn(&mut Config)| {
        let mut config = Config::new(1, vec![1, 2, 3]);
        configure(&mut config);
        Raft::new(config, MemStorage::default(), HardState::default()).map(|_| ())
    };
    assert_eq!(build(&|_| {}), Ok(()), "the defaults fit");
    for configure in [
        &(|c: &mut Config| c.entry_bytes_max = 0) as &dyn Fn(&mut Config),
        &|c: &mut Config| c.entry_bytes_max = c.append_bytes_max + 1,
        &|c: &mut Config| c.uncommitted_bytes_max = c.entry_bytes_max - 1,
    ] {
        assert!(matches!(build(configure), Err(Error::Config(_))));
    }
    // No uncommitted cap: only the append's budget bounds it.
    assert_eq!(build(&|c| c.uncommitted_bytes_max = 0), Ok(()));
}

/// The transport reports a follower unreachable: the leader stops pipelining appends to it
/// (one probe at a time instead of one per proposal) and resends from its match index once
/// it answers again.
#[test]
fn report_unreachable_stops_the_pipeline_to_a_follower_until_it_answers() {
    // Appends to `f` in three rounds of proposals at the leader, none of them answered.
    fn appends_in_three_rounds(c: &mut Cluster, leader: u64, f: u64) -> usize {
        let mut appends = 0;
        for i in 0..3u8 {
            c.node(leader)
                .propose(Bytes::from(vec![i]))
                .expect("propose");
            let ready = c.node(leader).ready().expect("ready");
            c.node(leader).storage_mut().append(&ready.entries);
            appends += ready
                .messages
                .iter()
                .filter(|m| m.kind() == MessageType::Append && m.to == f)
                .count();
            c.node(leader).advance(&ready);
        }
        appends
    }
    for unreachable in [false, true] {
        let mut c = Cluster::new(&[1, 2, 3], |_| {});
        let leader = c.elect();
        c.propose(leader, b"warm-up");
        let f = [1, 2, 3]
            .into_iter()
            .find(|&i| i != leader)
            .expect("follower");
        if unreachable {
            c.node(leader).report_unreachable(f);
        }
        let appends = appends_in_three_rounds(&mut c, leader, f);
        assert_eq!(appends, if unreachable { 1 } else { 3 }, "{unreachable}");
        // Nothing was delivered: the follower catches up from the heartbeats' answers.
        c.tick_all(5);
        assert_eq!(c.commands(f), c.commands(leader));
        assert_eq!(c.commands(f).len(), 4);
    }
}

#[test]
fn report_unreachable_changes_nothing_on_a_follower_or_for_an_unknown_peer() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.propose(leader, b"x");
    let f = [1, 2, 3]
        .into_iter()
        .find(|&i| i != leader)
        .expect("follower");
    c.node(f).report_unreachable(leader);
    c.node(leader).report_unreachable(99);
    c.node(leader).report_unreachable(leader);
    assert!(!c.node(f).has_ready() && !c.node(leader).has_ready());
    c.propose(leader, b"y");
    assert_eq!(c.commands(f), c.commands(leader));
}
