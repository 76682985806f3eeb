//! The simulator over a few hundred seeds (the closing note of each Raft change reports a run
//! of thousands with `cargo xtask sim`): random loss, duplication, reordering, partitions and
//! crash-restarts, checked for election safety, log matching, leader completeness, state
//! machine safety and linearizability of the clients' history.

use strata_raft_node::sim::linearizability::Operation;
use strata_raft_node::sim::{self, Sim, SimOptions};

fn run_seeds(nodes: u64, seeds: std::ops::Range<u64>, steps: usize) -> sim::SimReport {
    let mut total = sim::SimReport::default();
    for seed in seeds {
        let report = sim::run(&SimOptions {
            seed,
            nodes,
            steps,
            ..SimOptions::default()
        })
        .unwrap_or_else(|failure| {
            panic!("{failure}\nreplay: cargo xtask sim --seed {seed} --nodes {nodes}")
        });
        total.committed += report.committed;
        total.completed += report.completed;
        total.invoked += report.invoked;
    }
    total
}

#[test]
fn three_node_clusters_stay_safe_and_linearizable() {
    let total = run_seeds(3, 1..151, 1000);
    assert!(total.completed > 1000, "clients got answers: {total:?}");
}

#[test]
fn five_node_clusters_stay_safe_and_linearizable() {
    let total = run_seeds(5, 10_001..10_101, 1000);
    assert!(total.completed > 500, "clients got answers: {total:?}");
}

/// What a run showed: every line of its trace, the clients' history, and the report.
#[derive(Debug, PartialEq)]
struct Replay {
    trace: Vec<String>,
    history: Vec<Operation>,
    report: Result<sim::SimReport, String>,
}

fn replay(options: &SimOptions) -> Replay {
    let mut trace = Vec::new();
    let mut sink = |line: &str| trace.push(line.to_owned());
    let mut run = Sim::new(options, Some(&mut sink));
    let report = run.run();
    let history = run.history().to_vec();
    drop(run);
    Replay {
        trace,
        history,
        report,
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    for (seed, nodes) in [(42, 3), (43, 5)] {
        let options = SimOptions {
            seed,
            nodes,
            ..SimOptions::default()
        };
        let first = replay(&options);
        let second = replay(&options);
        assert!(
            first.trace.len() > 100 && !first.history.is_empty(),
            "seed {seed}: a run that shows something ({} trace lines, {} operations)",
            first.trace.len(),
            first.history.len()
        );
        // The first line that differs, rather than two whole traces.
        if let Some((a, b)) = first.trace.iter().zip(&second.trace).find(|(a, b)| a != b) {
            panic!("seed {seed}: the replay diverged:\n{a}\n{b}");
        }
        assert_eq!(first.trace.len(), second.trace.len(), "seed {seed}");
        assert_eq!(first.history, second.history, "seed {seed}");
        assert_eq!(first.report, second.report, "seed {seed}");
        assert!(first.report.is_ok(), "seed {seed}: {:?}", first.report);
    }
}
