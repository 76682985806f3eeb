//! ReadIndex reads (Ongaro's thesis §6.4): reads asked together share one heartbeat round, a
//! follower forwards its reads to the leader and serves them at the leader's commit index,
//! and no read ever misses a write acknowledged before it was asked, under message loss,
//! duplication, reordering, partitions, leader changes and restarts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use proptest::prelude::*;
use strata_raft::{Config, Error, Message, MessageType, NodeId, Role};
use strata_raft_node::sim::Cluster;

fn followers(c: &Cluster, leader: NodeId) -> Vec<NodeId> {
    c.nodes.keys().copied().filter(|&id| id != leader).collect()
}

/// Takes the queued messages of `kind`, leaving the others queued.
fn take_queued(c: &mut Cluster, kind: MessageType) -> Vec<Message> {
    let (taken, kept): (Vec<Message>, Vec<Message>) =
        c.queue.drain(..).partition(|m| m.kind() == kind);
    c.queue = VecDeque::from(kept);
    taken
}

#[test]
fn a_forwarded_read_is_answered_with_the_leaders_commit_index() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.propose(leader, b"x");
    let f = followers(&c, leader)[0];
    c.node(f)
        .read_index(Bytes::from_static(b"at-f"))
        .expect("a follower that knows the leader forwards");
    c.ready_all();
    let forwarded = take_queued(&mut c, MessageType::ReadIndex);
    assert_eq!(forwarded.len(), 1, "one ReadIndex for the follower's batch");
    assert_eq!(forwarded[0].to, leader);
    c.queue.extend(forwarded);
    c.settle();
    let commit = c.node(leader).commit();
    let reads = &c.reads[&f];
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].index, commit);
    assert_eq!(&reads[0].context[..], b"at-f");
    assert!(
        c.reads[&leader].is_empty(),
        "the leader's own reads are apart"
    );
}

/// The follower lags (it missed the write's commit): a read served from its own commit
/// index would miss the write; the leader's index does not.
#[test]
fn a_read_at_a_follower_sees_a_write_acknowledged_before_it() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.propose(leader, b"before");
    let f = followers(&c, leader)[0];
    c.isolated.insert(f);
    let write = c.propose(leader, b"w");
    assert!(
        c.commands(leader).contains(&Bytes::from_static(b"w")),
        "the write is applied at the leader: acknowledged"
    );
    assert!(c.node(f).commit() < write, "the follower has not seen it");
    c.isolated.clear();
    c.node(f)
        .read_index(Bytes::from_static(b"after-w"))
        .expect("read");
    c.settle();
    let reads = c.reads[&f].clone();
    assert_eq!(reads.len(), 1);
    assert!(
        reads[0].index >= write,
        "read index {} misses the write at {write}",
        reads[0].index
    );
    // Once the follower has applied up to the read's index, the write is there.
    c.tick_all(2);
    assert!(c.digest[&f].0 >= reads[0].index);
    assert!(c.commands(f).contains(&Bytes::from_static(b"w")));
}

#[test]
fn reads_asked_together_share_one_heartbeat_round() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.propose(leader, b"x");
    let f = followers(&c, leader)[0];
    // A follower's read reaches the leader in the same iteration as the leader's own.
    c.node(f)
        .read_index(Bytes::from_static(b"f"))
        .expect("read");
    c.ready_all();
    for m in take_queued(&mut c, MessageType::ReadIndex) {
        c.node(leader).step(m).expect("step");
    }
    for i in 0..10u8 {
        c.node(leader)
            .read_index(Bytes::from(vec![i]))
            .expect("read");
    }
    let ready = c.node(leader).ready().expect("ready");
    assert!(ready.read_states.is_empty(), "not before the round");
    let heartbeats: Vec<&Message> = ready
        .messages
        .iter()
        .filter(|m| m.kind() == MessageType::Heartbeat)
        .collect();
    let mut to: Vec<NodeId> = heartbeats.iter().map(|m| m.to).collect();
    to.sort_unstable();
    assert_eq!(to, followers(&c, leader), "one heartbeat per follower");
    assert!(!heartbeats[0].context.is_empty());
    assert!(
        heartbeats
            .iter()
            .all(|m| m.context == heartbeats[0].context)
    );
    c.queue.extend(ready.messages.iter().cloned());
    c.node(leader).advance(&ready);
    c.settle();
    let commit = c.node(leader).commit();
    let reads = &c.reads[&leader];
    let contexts: Vec<Bytes> = reads.iter().map(|r| r.context.clone()).collect();
    let want: Vec<Bytes> = (0..10u8).map(|i| Bytes::from(vec![i])).collect();
    assert_eq!(
        contexts, want,
        "one ReadState per read, with its own context"
    );
    assert!(reads.iter().all(|r| r.index == commit));
    assert_eq!(c.reads[&f].len(), 1);
    assert_eq!(&c.reads[&f][0].context[..], b"f");
}

#[test]
fn duplicated_requests_and_answers_give_one_read_state() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.propose(leader, b"x");
    let f = followers(&c, leader)[0];
    c.node(f)
        .read_index(Bytes::from_static(b"once"))
        .expect("read");
    c.ready_all();
    // The request arrives twice: the leader answers twice.
    let request = take_queued(&mut c, MessageType::ReadIndex);
    c.queue.extend(request.iter().cloned());
    c.queue.extend(request);
    c.settle_but(MessageType::ReadIndexResponse);
    let answers = take_queued(&mut c, MessageType::ReadIndexResponse);
    assert_eq!(answers.len(), 2);
    // And each answer arrives twice.
    for m in answers.iter().chain(&answers) {
        let _ = c.node(f).step(m.clone());
    }
    c.settle();
    assert_eq!(c.reads[&f].len(), 1, "one ReadState for one read");
}

#[test]
fn a_node_that_knows_no_leader_refuses_reads() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    assert!(matches!(
        c.node(1).read_index(Bytes::from_static(b"r")),
        Err(Error::NotLeader { leader: 0 })
    ));
}

/// A leader elected a moment ago may have a commit index behind what its predecessor
/// committed (§8): a forwarded read waits for the first entry of its term to commit.
#[test]
fn a_forwarded_read_waits_for_the_new_leaders_first_commit() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.propose(leader, b"x");
    let f = followers(&c, leader)[0];
    c.node(leader).transfer_leader(f).expect("transfer");
    // Hand over, and hold back the new leader's appends (its no-op stays uncommitted).
    let mut new_leader_sent = Vec::new();
    for _ in 0..100 {
        c.ready_all();
        if c.queue.is_empty() {
            break;
        }
        while let Some(m) = c.queue.pop_front() {
            if m.from == f && c.node(f).role() == Role::Leader {
                new_leader_sent.push(m);
            } else if let Some(n) = c.nodes.get_mut(&m.to) {
                let _ = n.step(m);
            }
        }
    }
    assert_eq!(c.node(f).role(), Role::Leader);
    let old = leader;
    let noop = c.node(f).storage().entries.last().map(|e| e.index);
    assert!(noop.is_some_and(|i| i > c.node(f).commit()));
    // The old leader learned of the new one from its vote request; it forwards.
    let context = Bytes::from_static(b"\0\0\0\0\0\0\0\x09early");
    let m = Message {
        msg_type: MessageType::ReadIndex as i32,
        from: old,
        to: f,
        term: c.node(f).term(),
        context: context.clone(),
        ..Message::default()
    };
    c.node(f).step(m).expect("step");
    let ready = c.node(f).ready().expect("ready");
    assert!(
        !ready
            .messages
            .iter()
            .any(|m| m.kind() == MessageType::ReadIndexResponse),
        "no answer before the term's first commit"
    );
    c.queue.extend(ready.messages.iter().cloned());
    c.node(f).advance(&ready);
    c.queue.extend(new_leader_sent);
    // Watch the answers the old leader gets.
    let mut answers = Vec::new();
    for _ in 0..100 {
        c.ready_all();
        answers.extend(take_queued(&mut c, MessageType::ReadIndexResponse));
        if c.queue.is_empty() {
            break;
        }
        while c.deliver_one() {}
    }
    assert_eq!(answers.len(), 1);
    assert!(answers[0].index >= noop.unwrap_or(u64::MAX));
    assert_eq!(answers[0].context, context, "the request's context, echoed");
}

/// An answer from a leader of an older term is refused by the term rules (and counted).
#[test]
fn an_answer_from_an_old_term_gives_no_read_state() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.propose(leader, b"x");
    let f = followers(&c, leader)[0];
    c.node(f)
        .read_index(Bytes::from_static(b"r"))
        .expect("read");
    c.ready_all();
    let request = take_queued(&mut c, MessageType::ReadIndex);
    for m in request {
        c.node(leader).step(m).expect("step");
    }
    c.settle_but(MessageType::ReadIndexResponse);
    let answers = take_queued(&mut c, MessageType::ReadIndexResponse);
    assert_eq!(answers.len(), 1);
    // A new term starts before the answer arrives.
    c.node(leader).transfer_leader(f).expect("transfer");
    c.settle();
    assert_eq!(c.node(f).role(), Role::Leader);
    let stale_before = c.node(f).status().counters.stale_term;
    let _ = c.node(f).step(answers[0].clone());
    c.settle();
    assert!(c.reads[&f].is_empty());
    assert_eq!(c.node(f).status().counters.stale_term, stale_before + 1);
}

/// Settles with `side` cut off from the rest (messages across are dropped).
fn settle_split(c: &mut Cluster, side: &BTreeSet<NodeId>) {
    for _ in 0..10_000 {
        c.ready_all();
        if c.queue.is_empty() {
            return;
        }
        while let Some(m) = c.queue.pop_front() {
            deliver(c, side, m);
        }
    }
    panic!("no settle");
}

/// Without check-quorum, a leader cut off in a minority keeps leading its old term, and a
/// follower on its side keeps forwarding to it, while the majority elects a new leader and
/// commits: the old leader must not answer (it cannot get a quorum for the round), or the
/// follower would read before a write acknowledged on the other side.
#[test]
fn a_leader_cut_off_in_a_minority_does_not_answer_a_forwarded_read() {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5], |config| config.check_quorum = false);
    let old = c.elect();
    c.propose(old, b"x");
    let f = followers(&c, old)[0];
    let side: BTreeSet<NodeId> = [old, f].into();
    let mut new = None;
    for _ in 0..100 {
        for id in 1..=5 {
            c.node(id).tick();
        }
        settle_split(&mut c, &side);
        new = c
            .nodes
            .iter()
            .find(|(id, n)| !side.contains(id) && n.role() == Role::Leader)
            .map(|(id, _)| *id);
        if new.is_some() {
            break;
        }
    }
    let new = new.expect("the majority elects a leader");
    let write = c
        .node(new)
        .propose(Bytes::from_static(b"w"))
        .expect("propose");
    settle_split(&mut c, &side);
    assert!(c.commands(new).contains(&Bytes::from_static(b"w")));
    assert_eq!(c.node(old).role(), Role::Leader, "still leads its old term");
    assert_eq!(c.node(f).leader(), old);
    c.node(f)
        .read_index(Bytes::from_static(b"r"))
        .expect("forwarded to the old leader");
    for _ in 0..20 {
        for id in 1..=5 {
            c.node(id).tick();
        }
        settle_split(&mut c, &side);
    }
    assert!(
        c.reads[&f].is_empty(),
        "answered without a quorum: {:?} (the write is at {write})",
        c.reads[&f]
    );
}

/// A round whose heartbeats were all lost is confirmed by the next heartbeat on the clock,
/// which carries it.
#[test]
fn a_round_whose_heartbeats_were_lost_is_confirmed_by_the_next_heartbeat() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.propose(leader, b"x");
    c.node(leader)
        .read_index(Bytes::from_static(b"r"))
        .expect("read");
    c.ready_all();
    c.queue.clear();
    c.settle();
    assert!(c.reads[&leader].is_empty());
    c.tick(leader);
    assert_eq!(c.reads[&leader].len(), 1);
}

#[test]
fn a_lease_read_needs_no_round_for_a_forwarded_read_either() {
    let mut c = Cluster::new(&[1, 2, 3], |config| config.lease_read = true);
    let leader = c.elect();
    c.tick_all(2);
    let f = followers(&c, leader)[0];
    c.node(f)
        .read_index(Bytes::from_static(b"lease"))
        .expect("read");
    c.ready_all();
    for m in take_queued(&mut c, MessageType::ReadIndex) {
        c.node(leader).step(m).expect("step");
    }
    let ready = c.node(leader).ready().expect("ready");
    assert!(
        ready
            .messages
            .iter()
            .all(|m| m.kind() != MessageType::Heartbeat),
        "no heartbeat round"
    );
    let answers: Vec<&Message> = ready
        .messages
        .iter()
        .filter(|m| m.kind() == MessageType::ReadIndexResponse)
        .collect();
    assert_eq!(answers.len(), 1, "answered from the lease");
    assert_eq!(answers[0].index, c.node(leader).commit());
    c.node(leader).advance(&ready);
}

/// A follower's reads not yet forwarded when it becomes leader are served as its own.
#[test]
fn reads_asked_before_becoming_leader_are_served_by_the_new_leader() {
    let mut c = Cluster::new(&[1, 2, 3], |_| {});
    let leader = c.elect();
    c.propose(leader, b"x");
    let f = followers(&c, leader)[0];
    c.node(f)
        .read_index(Bytes::from_static(b"r"))
        .expect("read");
    // Before its next ready(), it is told to take over.
    let m = Message {
        msg_type: MessageType::TimeoutNow as i32,
        from: leader,
        to: f,
        term: c.node(f).term(),
        ..Message::default()
    };
    c.node(f).step(m).expect("step");
    c.settle();
    assert_eq!(c.node(f).role(), Role::Leader);
    let commit = c.node(f).commit();
    let reads = &c.reads[&f];
    assert_eq!(reads.len(), 1);
    assert_eq!(reads[0].index, commit);
}

/// One step of [`a_read_sees_every_write_acknowledged_before_it`]: a client request, a
/// clock tick, or something the network does.
#[derive(Debug, Clone)]
enum Step {
    Propose,
    Read(usize),
    /// Ticks every node this many times (an election takes 10 to 20).
    Tick(usize),
    Deliver(usize),
    /// Delivers everything queued but what goes to one node (a slow link: it lags).
    DeliverAllBut(usize),
    Drop,
    Duplicate,
    Swap,
    /// Cuts the nodes whose bits are set off from the others.
    Partition(u8),
    /// Cuts the leader off in a minority (with one follower, of five): it may keep leading
    /// an old term there, with a follower that still forwards its reads to it.
    PartitionLeader(usize),
    Heal,
    Restart(usize),
}

fn step_strategy(nodes: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::Propose),
        4 => (0..nodes).prop_map(Step::Read),
        3 => (1..8usize).prop_map(Step::Tick),
        6 => (1..8usize).prop_map(Step::Deliver),
        3 => (0..nodes).prop_map(Step::DeliverAllBut),
        2 => Just(Step::Drop),
        1 => Just(Step::Duplicate),
        1 => Just(Step::Swap),
        1 => any::<u8>().prop_map(Step::Partition),
        1 => (0..nodes).prop_map(Step::PartitionLeader),
        1 => Just(Step::Heal),
        1 => (0..nodes).prop_map(Step::Restart),
    ]
}

/// Steps `m` at its recipient, unless the partition (`side` against the rest) drops it.
fn deliver(c: &mut Cluster, side: &BTreeSet<NodeId>, m: Message) {
    if side.contains(&m.from) == side.contains(&m.to)
        && let Some(n) = c.nodes.get_mut(&m.to)
    {
        let _ = n.step(m);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Linearizable reads: a read asked at any node, once confirmed, has an index at or
    /// past every entry any node had applied (and so every write acknowledged) before it
    /// was asked; and each read is confirmed at most once.
    #[test]
    fn a_read_sees_every_write_acknowledged_before_it(
        five in any::<bool>(),
        // Without check-quorum a cut-off leader keeps leading its old term: its reads, and
        // those its followers forward to it, must still wait for a quorum it cannot get.
        check_quorum in any::<bool>(),
        steps in proptest::collection::vec(step_strategy(5), 1..300),
    ) {
        let ids: Vec<NodeId> = if five { vec![1, 2, 3, 4, 5] } else { vec![1, 2, 3] };
        let configure = |config: &mut Config| config.check_quorum = check_quorum;
        let mut c = Cluster::new(&ids, configure);
        let subset = |mask: u8| -> BTreeSet<NodeId> {
            ids.iter().copied().filter(|&id| mask & (1 << (id - 1)) != 0).collect()
        };
        let mut side = BTreeSet::new();
        // Each read's context: the floor its index must reach.
        let mut floors: BTreeMap<Bytes, u64> = BTreeMap::new();
        let mut confirmed: BTreeMap<Bytes, u64> = BTreeMap::new();
        let mut value = 0u64;
        for step in steps {
            match step {
                Step::Propose => {
                    if let Some(l) = c.leader() {
                        value += 1;
                        let _ = c.node(l).propose(Bytes::from(value.to_le_bytes().to_vec()));
                    }
                }
                Step::Read(at) => {
                    let id = ids[at % ids.len()];
                    let floor = c.digest.values().map(|(applied, _)| *applied).max().unwrap_or(0);
                    let context = Bytes::from(format!("read-{}", floors.len()));
                    if c.node(id).read_index(context.clone()).is_ok() {
                        floors.insert(context, floor);
                    }
                }
                Step::Tick(n) => {
                    for _ in 0..n {
                        for &id in &ids {
                            c.node(id).tick();
                        }
                    }
                }
                Step::Deliver(n) => {
                    for _ in 0..n {
                        if let Some(m) = c.queue.pop_front() {
                            deliver(&mut c, &side, m);
                        }
                    }
                }
                Step::DeliverAllBut(at) => {
                    let slow = ids[at % ids.len()];
                    let queued: Vec<Message> = c.queue.drain(..).collect();
                    for m in queued {
                        if m.to == slow {
                            c.queue.push_back(m);
                        } else {
                            deliver(&mut c, &side, m);
                        }
                    }
                }
                Step::Drop => {
                    c.queue.pop_front();
                }
                Step::Duplicate => {
                    if let Some(m) = c.queue.front().cloned() {
                        c.queue.push_back(m);
                    }
                }
                Step::Swap => {
                    if c.queue.len() > 1 {
                        c.queue.swap(0, 1);
                    }
                }
                Step::Partition(mask) => side = subset(mask),
                Step::PartitionLeader(at) => {
                    side.clear();
                    // The leader c.leader() sees: the one of the highest term.
                    side.extend(c.leader());
                    if ids.len() == 5 {
                        side.insert(ids[at % ids.len()]);
                    }
                }
                Step::Heal => side.clear(),
                Step::Restart(at) => {
                    let id = ids[at % ids.len()];
                    let mut config = Config::new(id, ids.clone());
                    configure(&mut config);
                    c.restart(id, config).expect("restart");
                }
            }
            c.ready_all();
            for reads in c.reads.values_mut() {
                for r in reads.drain(..) {
                    let floor = floors.get(&r.context).copied();
                    prop_assert!(floor.is_some(), "a read nobody asked for: {:?}", r);
                    prop_assert!(
                        r.index >= floor.unwrap_or(0),
                        "read {:?} at {} misses index {} applied before it was asked",
                        r.context, r.index, floor.unwrap_or(0)
                    );
                    prop_assert!(
                        confirmed.insert(r.context.clone(), r.index).is_none(),
                        "read {:?} confirmed twice", r.context
                    );
                }
            }
        }
    }
}

/// Settling while holding back one message kind.
trait SettleBut {
    fn settle_but(&mut self, kind: MessageType);
}

impl SettleBut for Cluster {
    fn settle_but(&mut self, kind: MessageType) {
        let mut held = Vec::new();
        for _ in 0..10_000 {
            self.ready_all();
            held.extend(take_queued(self, kind));
            if self.queue.is_empty() {
                self.queue.extend(held);
                return;
            }
            while self.deliver_one() {}
        }
        panic!("no settle");
    }
}
