//! One simulation run, the `Sim` value: the seed's choices of protocol options, the steps
//! (time passing and message delivery here; client requests in `clients`, faults in `faults`,
//! the checks after every step in `checks`), and the report.

use std::collections::BTreeMap;

use bytes::Bytes;
use strata_raft_log::{Entry, EntryKind};

use super::checks::{check_leader_completeness, check_log_matching};
use super::clients::Pending;
use super::cluster::log_of;
use super::linearizability::{self, Operation};
use super::{Cluster, SimRng, SnapshotPolicy};
use strata_raft::{Config, NodeId, Storage};

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
    pub term_max: u64,
    /// Membership changes committed (entering and leaving joint configurations).
    pub membership_changes: usize,
    /// Snapshots taken.
    pub snapshots_taken: usize,
    /// Snapshots installed from a leader.
    pub snapshots_installed: usize,
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
    trace: Option<&mut dyn FnMut(&str)>,
) -> Result<SimReport, String> {
    Sim::new(options, trace).run()
}

/// What the seed picked for every node's configuration.
#[derive(Debug, Clone)]
pub(super) struct Protocol {
    /// The initial voters.
    voters: Vec<NodeId>,
    /// Every node: the initial voters and the outsiders.
    peers: Vec<NodeId>,
    pre_vote: bool,
    check_quorum: bool,
    /// The in-flight window (messages).
    window: usize,
    chunk_bytes: usize,
    /// The snapshot chunks in flight.
    snapshot_window: usize,
}

impl Protocol {
    /// Sets the picked options in `config` (its id and seed are the caller's).
    pub(super) fn configure(&self, config: &mut Config) {
        config.voters.clone_from(&self.voters);
        config.peers.clone_from(&self.peers);
        config.pre_vote = self.pre_vote;
        config.check_quorum = self.check_quorum;
        config.inflight_msgs_max = self.window;
        config.snapshot_chunk_bytes = self.chunk_bytes;
        config.snapshot_inflight_chunks_max = self.snapshot_window;
    }
}

/// One simulation under way: the cluster, the seed's generator and what it picked, the
/// clients' pending operations and history, and what the checks have seen so far.
///
/// Each [`step`](Self::step) draws from the generator which kind of step it is (time passes,
/// messages are delivered, a client request, a fault), then persists, answers clients and
/// checks the safety properties; [`run`](Self::run) runs the steps and the final checks. One
/// seed gives one sequence of draws, so a run replays exactly.
pub struct Sim<'t> {
    pub(super) options: SimOptions,
    pub(super) rng: SimRng,
    /// Every node: the initial voters, and two more nodes that start outside the cluster.
    pub(super) ids: Vec<NodeId>,
    pub(super) protocol: Protocol,
    pub(super) cluster: Cluster,
    /// Each committed index's entry, and the lowest term of a node seen with it committed.
    pub(super) committed: BTreeMap<u64, (Entry, u64)>,
    pub(super) history: Vec<Operation>,
    /// Each client's operation waiting for its answer.
    pub(super) pending: Vec<Option<Pending>>,
    /// The last applied index whose entry was looked at for answering clients.
    pub(super) applied_seen: BTreeMap<NodeId, u64>,
    /// How many of each node's confirmed reads were looked at.
    pub(super) reads_seen: BTreeMap<NodeId, usize>,
    /// The read index each node confirmed for a read's context.
    pub(super) confirmed: BTreeMap<(NodeId, Bytes), u64>,
    pub(super) next_value: u64,
    /// The clients' clock: one unit a step.
    pub(super) now: u64,
    /// Steps run so far.
    pub(super) step: usize,
    pub(super) report: SimReport,
    /// After the faults, the healed cluster runs until a client operation completes (at least
    /// 400 steps, at most 20,000): one that never does is a liveness failure.
    pub(super) completed_after_healing: bool,
    /// ... and every node has caught up with the commit index.
    pub(super) caught_up: bool,
    pub(super) trace: Option<&'t mut dyn FnMut(&str)>,
    /// The last line traced for each node.
    pub(super) traced: BTreeMap<NodeId, String>,
}

impl std::fmt::Debug for Sim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("options", &self.options)
            .field("step", &self.step)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl<'t> Sim<'t> {
    /// A simulation of `options`: the seed picks the protocol options and snapshot settings,
    /// and the cluster starts. `trace` gets a line whenever a node's role, term, commit index,
    /// configuration or log changes.
    pub fn new(options: &SimOptions, trace: Option<&'t mut dyn FnMut(&str)>) -> Self {
        let seed = options.seed;
        // The cluster starts with `nodes` voters; two more nodes start outside it, for
        // membership changes to add (and any member may be removed).
        let initial: Vec<NodeId> = (1..=options.nodes).collect();
        let ids: Vec<NodeId> = (1..=options.nodes + 2).collect();
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
                compaction_overhead_entries: rng.below(8),
                filler: rng.below(1000) as usize,
            }
        } else {
            SnapshotPolicy::default()
        };
        let chunk_bytes = [32, 64, 256, 1024][rng.below(4) as usize];
        let snapshot_window = 1 + rng.below(4) as usize;
        let protocol = Protocol {
            voters: initial,
            peers,
            pre_vote,
            check_quorum,
            window,
            chunk_bytes,
            snapshot_window,
        };
        let mut cluster = Cluster::new(&ids, |config: &mut Config| {
            protocol.configure(config);
            config.seed = seed ^ config.id;
        });
        cluster.snapshots = policy;
        // Persisting takes time: a crash can catch a node with handed-out, unsaved Readies.
        cluster.defer_saves = true;
        Self {
            options: options.clone(),
            rng,
            pending: (0..options.clients).map(|_| None).collect(),
            applied_seen: ids.iter().map(|&id| (id, 0)).collect(),
            reads_seen: ids.iter().map(|&id| (id, 0)).collect(),
            ids,
            protocol,
            cluster,
            committed: BTreeMap::new(),
            history: Vec::new(),
            confirmed: BTreeMap::new(),
            next_value: 0,
            now: 0,
            step: 0,
            report: SimReport::default(),
            completed_after_healing: false,
            caught_up: false,
            trace,
            traced: BTreeMap::new(),
        }
    }

    /// The clients' history so far.
    pub fn history(&self) -> &[Operation] {
        &self.history
    }

    /// Runs the steps, then the final checks: log matching, leader completeness,
    /// linearizability of the clients' history, and liveness after healing.
    ///
    /// # Errors
    ///
    /// As [`run`](fn@run).
    pub fn run(&mut self) -> Result<SimReport, String> {
        while self.running() {
            self.step()?;
        }
        self.finish()
    }

    /// Whether [`run`](Self::run) takes another step: the steps asked for, then at least 400
    /// steps of healing, and more (20,000 at most) until a client operation completed and
    /// every node caught up.
    fn running(&self) -> bool {
        let total_steps = self.options.steps;
        self.step < total_steps + 400
            || (!(self.completed_after_healing && self.caught_up)
                && self.step < total_steps + 20_000)
    }

    /// Runs one step: the generator picks its kind (time passes, messages are delivered, a
    /// client request, a partition, a membership change, a crash; no fault once healing),
    /// then the nodes persist, clients get their answers, and the checks run.
    ///
    /// # Errors
    ///
    /// As [`run`](fn@run).
    pub fn step(&mut self) -> Result<(), String> {
        self.step += 1;
        self.now += 1;
        let healing = self.step >= self.options.steps;
        if healing {
            self.cluster.isolated.clear();
        }
        let roll = self.rng.below(100);
        if roll < 30 {
            self.tick();
        } else if roll < 75 {
            self.deliver(healing);
        } else if roll < 92 {
            self.client_request();
        } else if roll < 92 + self.options.partition_percent && !healing {
            self.partition();
        } else if self.rng.chance(10) && !healing && self.protocol.pre_vote {
            self.membership_request();
        } else if self.rng.chance(self.options.crash_percent * 20) && !healing {
            self.crash()?;
        }
        self.persist();
        self.answer_clients(healing);
        self.check(healing)
    }

    /// Time passes: each node's clock ticks, most of the time (clocks drift).
    fn tick(&mut self) {
        for &id in &self.ids {
            if self.rng.chance(80) {
                self.cluster.node(id).tick();
            }
        }
    }

    /// Some messages are delivered, in random order; before healing, some are lost, and
    /// some are delivered twice.
    fn deliver(&mut self, healing: bool) {
        let Self {
            cluster: c,
            rng,
            options,
            ..
        } = self;
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
    }

    /// Every node's `Ready` is handed out; persists complete, each after a random delay.
    fn persist(&mut self) {
        self.cluster.ready_all();
        // Persists complete, each after a random delay.
        for &id in &self.ids {
            while self.rng.chance(60) && self.cluster.save_one(id) {}
        }
        self.cluster.ready_all();
    }

    /// Gives the trace a line for each node whose role, term, commit index, configuration or
    /// log changed in this step.
    pub(super) fn trace_changes(&mut self) {
        let Self {
            cluster: c,
            trace,
            traced,
            step,
            ..
        } = self;
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
    }

    /// The checks after the last step: log matching, leader completeness, linearizability
    /// of the clients' history, and liveness after healing; the report.
    fn finish(&mut self) -> Result<SimReport, String> {
        let seed = self.options.seed;
        let c = &self.cluster;
        let committed = &self.committed;
        let history = &self.history;
        check_log_matching(c, seed)?;
        check_leader_completeness(c, committed, seed)?;
        if let Err((key, ops)) = linearizability::check(history) {
            return Err(format!(
                "seed {seed}: the history of key {key} is not linearizable: {ops:?}"
            ));
        }
        let report = &mut self.report;
        report.committed = committed.len();
        report.membership_changes = committed
            .values()
            .filter(|(e, _)| e.kind == EntryKind::ConfChange as i32)
            .count();
        report.invoked = history.len();
        report.snapshots_installed = c.snapshot_counts.0;
        report.snapshots_taken = c.snapshot_counts.1;
        report.completed = history.iter().filter(|o| o.returned.is_some()).count();
        if !self.completed_after_healing {
            return Err(format!(
                "seed {seed}: no client operation completed in the 20,000 steps after healing (liveness)"
            ));
        }
        if !self.caught_up {
            let commits: Vec<u64> = c.hard.values().map(|h| h.commit).collect();
            return Err(format!(
                "seed {seed}: not every node caught up with the commit index within 20,000 steps after healing: {commits:?} (liveness)"
            ));
        }
        Ok(report.clone())
    }
}
