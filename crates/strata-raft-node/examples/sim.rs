//! `cargo xtask sim`: the deterministic simulator over many seeds (see `strata_raft_node::sim`).
//!
//! `--seeds N` (default 1000) runs seeds 1..=N, `--seed S` one seed (a replay), `--nodes 3|5`,
//! `--steps`, and the fault rates in percent: `--drop`, `--dup`, `--partition`, `--crash`;
//! `--no-snapshots` turns snapshots off (otherwise the seed picks their settings);
//! `--trace` prints every change of a node's role, term, commit index or log.
//! A failure prints its seed and how to replay it, and exits 1.

use std::process::ExitCode;

use strata_raft_node::sim::{self, SimOptions, SimReport};

fn value(args: &[String], name: &str) -> Option<u64> {
    let at = args.iter().position(|a| a == name)?;
    match args.get(at + 1).map(|v| v.parse()) {
        Some(Ok(v)) => Some(v),
        _ => {
            eprintln!("{name} needs a number");
            std::process::exit(2);
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let defaults = SimOptions::default();
    let nodes = value(&args, "--nodes").unwrap_or(3);
    let seeds: Vec<u64> = match value(&args, "--seed") {
        Some(seed) => vec![seed],
        None => (1..=value(&args, "--seeds").unwrap_or(1000)).collect(),
    };
    let base = SimOptions {
        nodes,
        steps: value(&args, "--steps").map_or(defaults.steps, |s| s as usize),
        drop_percent: value(&args, "--drop").unwrap_or(defaults.drop_percent),
        duplicate_percent: value(&args, "--dup").unwrap_or(defaults.duplicate_percent),
        partition_percent: value(&args, "--partition").unwrap_or(defaults.partition_percent),
        crash_percent: value(&args, "--crash").unwrap_or(defaults.crash_percent),
        snapshots: !args.iter().any(|a| a == "--no-snapshots"),
        ..defaults
    };
    // Panics inside the cluster's checks carry the details; keep the output to one line each.
    std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    let started = std::time::Instant::now();
    let mut total = SimReport::default();
    for &seed in &seeds {
        let options = SimOptions {
            seed,
            ..base.clone()
        };
        let trace = args.iter().any(|a| a == "--trace");
        let outcome = std::panic::catch_unwind(|| {
            let mut print = |line: &str| println!("{line}");
            sim::run_traced(
                &options,
                trace.then_some(&mut print as &mut dyn FnMut(&str)),
            )
        });
        match outcome {
            Ok(Ok(report)) => {
                total.committed += report.committed;
                total.completed += report.completed;
                total.invoked += report.invoked;
                total.term_max = total.term_max.max(report.term_max);
                total.membership_changes += report.membership_changes;
                total.snapshots_taken += report.snapshots_taken;
                total.snapshots_installed += report.snapshots_installed;
            }
            Ok(Err(failure)) => {
                eprintln!("FAILED {failure}");
                eprintln!("replay: cargo xtask sim --seed {seed} --nodes {nodes}");
                return ExitCode::FAILURE;
            }
            Err(_) => {
                eprintln!("FAILED seed {seed}: an invariant check panicked (above)");
                eprintln!("replay: cargo xtask sim --seed {seed} --nodes {nodes}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "sim: {} seeds x {} steps, {nodes} nodes: all passed in {:.1}s; {} entries committed ({} membership changes), {} of {} client operations answered, highest term {}; {} snapshots taken, {} installed from a leader",
        seeds.len(),
        base.steps,
        started.elapsed().as_secs_f64(),
        total.committed,
        total.membership_changes,
        total.completed,
        total.invoked,
        total.term_max,
        total.snapshots_taken,
        total.snapshots_installed,
    );
    ExitCode::SUCCESS
}
