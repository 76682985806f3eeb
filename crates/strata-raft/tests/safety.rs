//! The simulator over a few hundred seeds (the closing note of each Raft change reports a run
//! of thousands with `cargo xtask sim`): random loss, duplication, reordering, partitions and
//! crash-restarts, checked for election safety, log matching, leader completeness, state
//! machine safety and linearizability of the clients' history.

use strata_raft::sim::{self, SimOptions};

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

#[test]
fn the_same_seed_replays_the_same_run() {
    let options = SimOptions {
        seed: 42,
        ..SimOptions::default()
    };
    assert_eq!(sim::run(&options), sim::run(&options));
}
