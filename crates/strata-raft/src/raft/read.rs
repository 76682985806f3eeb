//! Linearizable reads without a log entry: ReadIndex (Ongaro's thesis §6.4).
//!
//! The leader serves a read at its commit index as of when the read was asked, once it has
//! confirmed that it was still the leader after that moment: by a heartbeat round that a
//! quorum answers, by its lease (`lease_read`), or at once when it is the only voter. Until an
//! entry of its own term is committed, its commit index may be behind what an earlier leader
//! committed (§8), so reads asked before then wait for it.
//!
//! Every read asked between two [`Raft::ready`] calls, the leader's own and those followers
//! forwarded, shares one round: one heartbeat per follower carrying one context, the round's
//! number; each read keeps its own index and caller context. An answer to a round confirms it
//! and every earlier one (it was sent after all their reads were asked), and each clock
//! heartbeat carries the newest round still waiting, so a round whose heartbeats were lost is
//! retried without waiting for another read.
//!
//! A follower that knows a leader forwards the reads it is asked for, one
//! [`MessageType::ReadIndex`] per `ready()` naming the batch, and hands out a [`ReadState`]
//! for each read of the batch once the leader answers with its commit index, as etcd's raft
//! does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

use super::{Error, Raft, ReadState, Role};
use crate::message::{Message, MessageType, NodeId};
use crate::storage::Storage;

/// Batches a follower forwarded and has not heard back about, at most. A leader answers a
/// batch within a heartbeat round or so, and a new term drops them all (an answer of the old
/// term would be refused), so only lost messages within one long term fill this; when it is
/// full the oldest batch is forgotten and its callers time out, as they would have anyway.
/// Each costs its reads' contexts.
const FORWARDED_BATCHES_MAX: usize = 1024;

/// Bytes of the round or batch number that starts a read context on the wire (big-endian).
const NUMBER_BYTES: usize = 8;

/// A read asked of the leader.
#[derive(Debug)]
struct Read {
    /// This node, or the follower that forwarded it (and gets the answer).
    from: NodeId,
    /// The caller's context (from a follower: its batch's).
    context: Bytes,
}

/// A read started: it waits for its round to be confirmed.
#[derive(Debug)]
struct StartedRead {
    read: Read,
    /// The commit index when it was asked (or, if it had to wait, when the first entry of
    /// the term committed).
    index: u64,
}

/// One heartbeat round and the reads it confirms.
#[derive(Debug)]
struct Round {
    number: u64,
    /// Voters known to have answered this round or a later one (the leader counts itself).
    acks: BTreeSet<NodeId>,
    reads: Vec<StartedRead>,
}

/// The reads a node has in hand.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// Leader: asked before an entry of its term was committed.
    waiting: Vec<Read>,
    /// Leader: started since the last `ready()`; the next round.
    next_round: Vec<StartedRead>,
    /// Leader: rounds sent and not yet confirmed, oldest (lowest number) first.
    rounds: VecDeque<Round>,
    /// Rounds this node has ever started: round numbers are never reused, so that an answer
    /// to a round of an earlier term can never be taken for a later round (it is refused by
    /// its term anyway).
    rounds_started: u64,
    /// Follower: asked since the last `ready()`, to forward.
    to_forward: Vec<Bytes>,
    /// Follower: batches forwarded and not yet answered, by number: the callers' contexts,
    /// in the order asked (never empty).
    forwarded: BTreeMap<u64, Vec<Bytes>>,
    /// Batches this node has ever forwarded (numbers are not reused either).
    batches_forwarded: u64,
}

impl Reads {
    /// A new term or role: the leader's reads are dropped (a new leader must confirm its own
    /// term; the driver's callers see them time out), and so are batches forwarded (an answer
    /// would be of the old term, refused by the term rules). Reads not yet forwarded stay:
    /// whichever leader they reach answers them safely.
    pub(super) fn reset(&mut self) {
        self.waiting.clear();
        self.next_round.clear();
        self.rounds.clear();
        self.forwarded.clear();
    }
}

/// A context on the wire: `number` (8 bytes, big-endian), then `tag`.
fn numbered(number: u64, tag: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(NUMBER_BYTES + tag.len());
    b.put_u64(number);
    b.put_slice(tag);
    b.freeze()
}

/// The number and the rest of a context `numbered` made; `None` for any other.
fn parse_numbered(context: &[u8]) -> Option<(u64, &[u8])> {
    let (number, rest) = context.split_first_chunk::<NUMBER_BYTES>()?;
    Some((u64::from_be_bytes(*number), rest))
}

impl<S: Storage> Raft<S> {
    /// Asks for a linearizable read. A [`ReadState`] with `context` comes out of
    /// [`ready`](Self::ready) once confirmed: once the state machine has applied its index, a
    /// read there sees every write acknowledged before this call.
    ///
    /// On the leader: the index is its commit index now (or, before an entry of its term is
    /// committed, then), confirmed by a heartbeat round that every read asked before the next
    /// `ready()` shares, by its lease with `lease_read`, or at once if it is the only voter.
    /// On a follower that knows a leader: the read is forwarded (with the others asked before
    /// the next `ready()`) and the index is the leader's commit index when it received it;
    /// if the request or its answer is lost, or the term changes first, no `ReadState` comes
    /// (the driver times the read out).
    ///
    /// Contexts should be unique for the node's lifetime, across restarts too: an answer
    /// delayed across a restart is told apart from one to a later read by the batch's first
    /// context.
    ///
    /// # Errors
    ///
    /// [`Error::NotLeader`] with `leader: 0` on a node that knows no leader.
    pub fn read_index(&mut self, context: Bytes) -> Result<(), Error> {
        if self.role == Role::Leader {
            self.ask_read(Read {
                from: self.id,
                context,
            });
        } else if self.leader != 0 {
            self.reads.to_forward.push(context);
        } else {
            return Err(Error::NotLeader { leader: 0 });
        }
        Ok(())
    }

    /// A read asked of this leader, by itself or forwarded: it waits for the term's first
    /// commit, or starts.
    fn ask_read(&mut self, read: Read) {
        if self.log.term(self.log.committed) == Some(self.term) {
            self.start_read(read);
        } else {
            // Until an entry of this term commits, the commit index may be behind what an
            // earlier leader committed (§8).
            self.reads.waiting.push(read);
        }
    }

    fn start_read(&mut self, read: Read) {
        debug_assert_eq!(
            self.log.term(self.log.committed),
            Some(self.term),
            "leader {}: a read started before the term's first commit",
            self.id
        );
        let index = self.log.committed;
        let alone = self.membership.all_voters().into_iter().eq([self.id]);
        if alone || self.lease_valid() {
            self.answer_read(read, index);
        } else {
            self.reads.next_round.push(StartedRead { read, index });
        }
    }

    /// A confirmed read: to the caller, here or at the follower that forwarded it.
    fn answer_read(&mut self, read: Read, index: u64) {
        // The index was this leader's commit index when the read was asked.
        debug_assert!(
            index <= self.log.committed,
            "leader {}: read index {index} past the commit index {}",
            self.id,
            self.log.committed
        );
        if read.from == self.id {
            self.read_states.push(ReadState {
                index,
                context: read.context,
            });
        } else {
            let mut m = Message::new(
                MessageType::ReadIndexResponse,
                self.id,
                read.from,
                self.term,
            );
            m.index = index;
            m.context = read.context;
            self.send(m);
        }
    }

    /// A quorum answered heartbeats sent within the lease window: no other leader can have
    /// been elected since (voters that heard from this leader within an election timeout
    /// refuse to vote, and the drift allowance covers clocks that run at different rates).
    pub(super) fn lease_valid(&self) -> bool {
        if !(self.config.lease_read && self.config.check_quorum) {
            return false;
        }
        let window = self
            .config
            .election_tick
            .saturating_sub(self.config.lease_drift_ticks);
        let fresh = |id: NodeId| {
            id == self.id
                || self.progress.get(&id).is_some_and(|p| {
                    p.last_ack_tick
                        .is_some_and(|sent| self.ticks.saturating_sub(sent) < window)
                })
        };
        self.membership.quorum_met(fresh)
    }

    /// The term's first entry committed: the reads that waited for it start, at the commit
    /// index now.
    pub(super) fn release_waiting_reads(&mut self) {
        if self.log.term(self.log.committed) == Some(self.term) {
            for read in std::mem::take(&mut self.reads.waiting) {
                self.start_read(read);
            }
        }
    }

    /// Whether `ready()` has reads to send: a round to start, or a batch to forward.
    pub(super) fn has_reads_to_send(&self) -> bool {
        if self.role == Role::Leader {
            !self.reads.next_round.is_empty()
        } else {
            self.leader != 0 && !self.reads.to_forward.is_empty()
        }
    }

    /// From `ready()`: on the leader, the reads started since the last call go out as one
    /// round; on a follower that knows a leader, those asked go to it as one batch.
    pub(super) fn send_reads(&mut self) {
        if self.role == Role::Leader {
            if self.reads.next_round.is_empty() {
                return;
            }
            self.reads.rounds_started += 1;
            let number = self.reads.rounds_started;
            let round = Round {
                number,
                acks: BTreeSet::from([self.id]),
                reads: std::mem::take(&mut self.reads.next_round),
            };
            self.reads.rounds.push_back(round);
            self.broadcast_heartbeat(numbered(number, &[]));
        } else if self.leader != 0 && !self.reads.to_forward.is_empty() {
            if self.reads.forwarded.len() >= FORWARDED_BATCHES_MAX {
                self.reads.forwarded.pop_first();
            }
            self.reads.batches_forwarded += 1;
            let number = self.reads.batches_forwarded;
            let contexts = std::mem::take(&mut self.reads.to_forward);
            let mut m = Message::new(MessageType::ReadIndex, self.id, self.leader, self.term);
            // The batch's first context after its number: numbers start again at a restart,
            // contexts need not (see `read_index`).
            m.context = numbered(number, &contexts[0]);
            self.reads.forwarded.insert(number, contexts);
            self.send(m);
        }
    }

    /// On becoming leader: reads asked as a follower and never forwarded are this leader's
    /// own now (they wait for the term's first commit, as every read does).
    pub(super) fn keep_unforwarded_reads(&mut self) {
        let id = self.id;
        let reads = std::mem::take(&mut self.reads.to_forward)
            .into_iter()
            .map(|context| Read { from: id, context });
        self.reads.waiting.extend(reads);
    }

    /// The context of a heartbeat sent on the clock: the newest round not yet confirmed (or
    /// none), so that a round whose own heartbeats were lost is retried; an answer confirms
    /// that round and the earlier ones, whose reads were all asked before it was sent.
    pub(super) fn heartbeat_context(&self) -> Bytes {
        self.reads
            .rounds
            .back()
            .map_or_else(Bytes::new, |r| numbered(r.number, &[]))
    }

    /// `from` answered a heartbeat of round `context` (or a clock heartbeat carrying it): it
    /// acknowledged this leader after every read of that round and the earlier ones was
    /// asked. Once a quorum has, those reads are confirmed.
    pub(super) fn ack_read(&mut self, context: &[u8], from: NodeId) {
        let Some((number, [])) = parse_numbered(context) else {
            return;
        };
        let mut confirmed = None;
        for (at, round) in self.reads.rounds.iter_mut().enumerate() {
            if round.number > number {
                break;
            }
            round.acks.insert(from);
            if self.membership.quorum_met(|id| round.acks.contains(&id)) {
                confirmed = Some(at);
            }
        }
        let Some(at) = confirmed else {
            return;
        };
        // This round and every earlier one are confirmed.
        let rounds: Vec<Round> = self.reads.rounds.drain(..=at).collect();
        for r in rounds {
            for started in r.reads {
                self.answer_read(started.read, started.index);
            }
        }
    }

    /// Checks, in debug builds, what holds of the reads in hand after every `ready` and
    /// `advance`.
    pub(super) fn debug_assert_reads(&self) {
        let r = &self.reads;
        // Only a leader confirms reads: a new role or term drops them.
        debug_assert!(
            self.role == Role::Leader
                || (r.waiting.is_empty() && r.next_round.is_empty() && r.rounds.is_empty()),
            "node {}: a {:?} holds leader reads",
            self.id,
            self.role
        );
        // Rounds are confirmed oldest first, and a leader forwards nothing.
        debug_assert!(
            r.rounds
                .iter()
                .zip(r.rounds.iter().skip(1))
                .all(|(a, b)| a.number < b.number),
            "node {}: rounds out of order",
            self.id
        );
        debug_assert!(
            self.role != Role::Leader || r.forwarded.is_empty(),
            "node {}: a leader with forwarded batches",
            self.id
        );
        debug_assert!(
            r.forwarded.len() <= FORWARDED_BATCHES_MAX,
            "node {}: {} forwarded batches",
            self.id,
            r.forwarded.len()
        );
    }

    /// Leader: a follower forwarded a batch of reads.
    pub(super) fn handle_read_index(&mut self, m: Message) {
        self.ask_read(Read {
            from: m.from,
            context: m.context,
        });
    }

    /// Follower: the leader confirmed a batch this node forwarded; each of its reads gets a
    /// [`ReadState`] at the leader's index.
    ///
    /// Why that index is safe: it is the leader's commit index when the request reached it,
    /// which was after the reads were asked here, and the leader confirmed after that moment
    /// that it still led its term; so every write acknowledged to anyone before the reads
    /// were asked was committed by then, and is at or below the index. That stays true if
    /// the leader has lost its leadership since it answered: a read may take effect at any
    /// moment between its call and its answer, so later writes are not owed. Only the term
    /// rules keep an answer of an older term out (a new term drops the batches in hand
    /// anyway), and a batch is answered once: a duplicated or replayed answer finds it gone.
    pub(super) fn handle_read_index_response(&mut self, m: &Message) {
        let Some((number, tag)) = parse_numbered(&m.context) else {
            return;
        };
        let first = self.reads.forwarded.get(&number).and_then(|b| b.first());
        if first.is_none_or(|c| c.as_ref() != tag) {
            return;
        }
        let Some(batch) = self.reads.forwarded.remove(&number) else {
            return;
        };
        for context in batch {
            self.read_states.push(ReadState {
                index: m.index,
                context,
            });
        }
    }
}
