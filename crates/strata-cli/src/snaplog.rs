//! `strata snaplog`: dump, compact and demo Serf-compatible snapshot logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::output::{self, Table, outln};
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use strata_clock::LamportClock;
use strata_snaplog::{
    Event, LogOptions, Member, MemberEvent, MemberEventKind, Query, Replay, ReplayOptions,
    Snapshotter, SnapshotterConfig, State, UserEvent, compact_file, replay_file,
};

/// The `strata snaplog` subcommands.
#[derive(Debug, Subcommand)]
pub enum SnaplogCommand {
    /// Replay a snapshot file and print its state: the members alive, the clocks, the lines
    /// skipped and why. Reads only.
    #[command(after_help = "Examples:
  strata snaplog dump /var/lib/serf/snapshot
  strata snaplog dump /var/lib/serf/snapshot --json | jq .alive")]
    Dump {
        /// The snapshot file.
        file: PathBuf,
        /// Ignore `leave` lines, as an agent that rejoins after leaving does.
        #[arg(long)]
        rejoin_after_leave: bool,
        /// The state as one JSON object (fields in the documented order).
        #[arg(long)]
        json: bool,
    },
    /// Compact a snapshot file in place (atomically); it replays to the same state afterwards.
    /// Do not run it on a file a live agent has open.
    #[command(after_help = "Example:
  strata snaplog compact /var/lib/serf/snapshot   # with the agent stopped")]
    Compact {
        /// The snapshot file.
        file: PathBuf,
        /// Which `leave` semantics to report the state under (the compacted file replays the
        /// same under both).
        #[arg(long)]
        rejoin_after_leave: bool,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Write a snapshot log for a simulated cluster, compact it, replay it, print the state.
    #[command(after_help = "Examples:
  strata snaplog demo
  strata snaplog demo --nodes 100 --events 50000 --json")]
    Demo {
        /// Where to write the snapshot (default: a temporary directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Members in the simulated cluster.
        #[arg(long, default_value_t = 12)]
        nodes: u32,
        /// Membership changes and events to simulate.
        #[arg(long, default_value_t = 2000)]
        events: u32,
        /// Seed of the simulation.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `strata snaplog` subcommand.
pub fn run(command: SnaplogCommand) -> Result<()> {
    match command {
        SnaplogCommand::Dump {
            file,
            rejoin_after_leave,
            json,
        } => dump(&file, rejoin_after_leave, json),
        SnaplogCommand::Compact {
            file,
            rejoin_after_leave,
            json,
        } => compact(&file, rejoin_after_leave, json),
        SnaplogCommand::Demo {
            dir,
            nodes,
            events,
            seed,
            json,
        } => demo(dir, nodes, events, seed, json),
    }
}

#[derive(Serialize)]
struct DumpWarning {
    line: u64,
    text: String,
    reason: String,
}

/// The JSON `strata snaplog dump` prints; field order is the documented order.
#[derive(Serialize)]
struct Dump {
    alive: BTreeMap<String, String>,
    last_clock: u64,
    last_event_clock: u64,
    last_query_clock: u64,
    warnings: Vec<DumpWarning>,
    torn_tail_bytes: u64,
}

fn dump_of(replay: &Replay, rejoin_after_leave: bool) -> Dump {
    let state = replay.state(rejoin_after_leave);
    Dump {
        alive: state.alive.into_iter().collect(),
        last_clock: state.last_clock,
        last_event_clock: state.last_event_clock,
        last_query_clock: state.last_query_clock,
        warnings: replay
            .warnings
            .iter()
            .map(|w| DumpWarning {
                line: w.line,
                text: w.text.clone(),
                reason: w.reason.to_string(),
            })
            .collect(),
        torn_tail_bytes: replay.torn_tail_bytes,
    }
}

fn all_warnings() -> ReplayOptions {
    // The dump promises one entry per skipped line, so keep them all.
    ReplayOptions {
        warnings_max: usize::MAX,
    }
}

fn read_replay(file: &Path) -> Result<Replay> {
    replay_file(file, &all_warnings())
        .with_context(|| format!("cannot read snapshot {}", file.display()))
}

fn dump(file: &Path, rejoin_after_leave: bool, json: bool) -> Result<()> {
    let replay = read_replay(file)?;
    let dump = dump_of(&replay, rejoin_after_leave);
    if json {
        return output::json(&dump, false);
    }
    outln!("snapshot {}", file.display())?;
    print_state(&dump)
}

/// A replayed state for people: the clocks, the members alive as a table, what was skipped.
fn print_state(dump: &Dump) -> Result<()> {
    output::fields(&[
        ("members alive", dump.alive.len().to_string()),
        (
            "clocks",
            format!(
                "member {}, event {}, query {}",
                dump.last_clock, dump.last_event_clock, dump.last_query_clock
            ),
        ),
        ("lines skipped", dump.warnings.len().to_string()),
        ("torn tail", output::bytes(dump.torn_tail_bytes)),
    ])?;
    if !dump.alive.is_empty() {
        outln!()?;
        let mut table = Table::new(&["member", "address"]);
        for (name, addr) in &dump.alive {
            table.row(vec![name.clone(), addr.clone()]);
        }
        outln!("{}", table.plain())?;
    }
    if !dump.warnings.is_empty() {
        outln!()?;
        let mut table = Table::new(&["line", "skipped because", "text"]);
        for w in &dump.warnings {
            table.row(vec![w.line.to_string(), w.reason.clone(), w.text.clone()]);
        }
        outln!("{}", table.plain())?;
    }
    Ok(())
}

#[derive(Serialize)]
struct CompactReport {
    path: PathBuf,
    bytes_before: u64,
    bytes_after: u64,
    torn_tail_bytes_truncated: u64,
    state: Dump,
}

fn compact(file: &Path, rejoin_after_leave: bool, json: bool) -> Result<()> {
    let bytes_before = std::fs::metadata(file)
        .with_context(|| format!("cannot read snapshot {}", file.display()))?
        .len();
    let options = LogOptions {
        rejoin_after_leave,
        replay: all_warnings(),
        ..LogOptions::default()
    };
    let report = compact_file(file, options)
        .with_context(|| format!("cannot compact snapshot {}", file.display()))?;
    let after = read_replay(file)?;
    let before_state = report.replay.state(rejoin_after_leave);
    if after.state(rejoin_after_leave) != before_state {
        bail!("BUG: the compacted file replays to a different state; the original was replaced");
    }
    let bytes_after = std::fs::metadata(file)
        .with_context(|| format!("cannot read snapshot {}", file.display()))?
        .len();
    let mut state = dump_of(&after, rejoin_after_leave);
    // Report what the original file said was wrong, not the (clean) compacted file.
    state.warnings = dump_of(&report.replay, rejoin_after_leave).warnings;
    state.torn_tail_bytes = report.replay.torn_tail_bytes;
    let out = CompactReport {
        path: file.to_path_buf(),
        bytes_before,
        bytes_after,
        torn_tail_bytes_truncated: report.torn_tail_bytes_truncated,
        state,
    };
    if json {
        return output::json(&out, false);
    }
    outln!(
        "compacted {}: {} -> {}{}",
        file.display(),
        output::bytes(out.bytes_before),
        output::bytes(out.bytes_after),
        if out.torn_tail_bytes_truncated > 0 {
            format!(
                " (a torn tail of {} cut)",
                output::bytes(out.torn_tail_bytes_truncated)
            )
        } else {
            String::new()
        }
    )?;
    print_state(&out.state)
}

#[derive(Serialize)]
struct DemoReport {
    path: Option<PathBuf>,
    events: u64,
    records: u64,
    compactions: u64,
    fsyncs: u64,
    errors: u64,
    bytes_appended: u64,
    file_bytes: u64,
    compacted_bytes: u64,
    replay_matches_live_state: bool,
    replayed: Dump,
}

fn demo(dir: Option<PathBuf>, nodes: u32, events: u32, seed: u64, json: bool) -> Result<()> {
    if nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let temp;
    let keep = dir.is_some();
    let dir = match dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            dir
        }
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let path = dir.join("serf.snapshot");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the Tokio runtime")?;
    let progress = Progress::new("snaplog demo", Some(u64::from(events)), "events");
    let (stats, live, file_bytes) =
        runtime.block_on(simulate(&path, nodes, events, seed, &progress))?;
    progress.finish();
    // A last compaction by hand, as `strata snaplog compact` does it, then a cold replay.
    compact_file(&path, LogOptions::default())
        .with_context(|| format!("cannot compact snapshot {}", path.display()))?;
    let compacted_bytes = std::fs::metadata(&path)?.len();
    let replay = read_replay(&path)?;
    let report = DemoReport {
        path: Some(path).filter(|_| keep),
        events: stats.events,
        records: stats.log.records,
        compactions: stats.log.compactions,
        fsyncs: stats.log.fsyncs,
        errors: stats.log.errors,
        bytes_appended: stats.log.bytes_appended,
        file_bytes,
        compacted_bytes,
        replay_matches_live_state: replay.state(false) == live,
        replayed: dump_of(&replay, false),
    };
    if json {
        output::json(&report, true)?;
    } else {
        outln!(
            "snaplog demo: {} events from {nodes} simulated members; {} records appended \
             ({}), {} compactions, {} fsyncs, {} errors",
            output::count(report.events),
            output::count(report.records),
            output::bytes(report.bytes_appended),
            report.compactions,
            report.fsyncs,
            report.errors
        )?;
        output::fields(&[
            ("file", output::bytes(report.file_bytes)),
            ("compacted", output::bytes(report.compacted_bytes)),
            (
                "replay matches live state",
                output::yes_no(report.replay_matches_live_state).into(),
            ),
        ])?;
        if let Some(path) = &report.path {
            outln!("  kept in {}", path.display())?;
        }
    }
    if !report.replay_matches_live_state {
        bail!("the replayed state differs from the snapshotter's live state");
    }
    Ok(())
}

/// Drives a [`Snapshotter`] with a random but reproducible cluster history.
async fn simulate(
    path: &Path,
    nodes: u32,
    events: u32,
    seed: u64,
    progress: &Progress,
) -> Result<(strata_snaplog::SnapshotterStats, State, u64)> {
    let clock = Arc::new(LamportClock::new());
    let config = SnapshotterConfig {
        log: LogOptions {
            // Small, so the demo compacts several times.
            compact_bytes_min: 4 * 1024,
            ..LogOptions::default()
        },
        flush_interval: Duration::from_millis(20),
        ..SnapshotterConfig::default()
    };
    let (output_tx, mut output_rx) = tokio::sync::mpsc::channel(256);
    // A consumer of the passed-through events, as a Serf agent's user would have.
    let consumer = tokio::spawn(async move {
        let mut seen = 0u64;
        while output_rx.recv().await.is_some() {
            seen += 1;
        }
        seen
    });
    let (sender, snapshotter) =
        Snapshotter::open(path, config, Arc::clone(&clock), Some(output_tx))
            .await
            .with_context(|| format!("cannot open snapshot {}", path.display()))?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut user_time = 0u64;
    let mut query_time = 0u64;
    for _ in 0..events {
        let node = rng.random_range(0..nodes);
        let member = Member {
            name: format!("node-{node}"),
            addr: std::net::SocketAddr::from((
                [10, 0, (node / 250) as u8, (node % 250) as u8],
                7946,
            )),
        };
        let event = match rng.random_range(0..10) {
            0..=4 => member_event(MemberEventKind::Join, member),
            5 => member_event(MemberEventKind::Leave, member),
            6 => member_event(MemberEventKind::Failed, member),
            7 => member_event(MemberEventKind::Update, member),
            8 => {
                user_time += rng.random_range(0..3);
                Event::User(UserEvent {
                    ltime: user_time,
                    name: "deploy".into(),
                    payload: Vec::new(),
                    coalesce: true,
                })
            }
            _ => {
                query_time += rng.random_range(0..3);
                Event::Query(Query {
                    ltime: query_time,
                    name: "health".into(),
                    payload: Vec::new(),
                })
            }
        };
        if matches!(event, Event::Member(_)) {
            clock.increment();
        }
        sender.send(event).await.context("snapshotter stopped")?;
        progress.inc(1);
    }
    drop(sender);
    let shutdown = snapshotter.shutdown().await.context("shutdown failed")?;
    let passed_through = consumer.await.context("event consumer failed")?;
    if passed_through != u64::from(events) {
        bail!("only {passed_through} of {events} events were passed through");
    }
    let file_bytes = std::fs::metadata(path)?.len();
    Ok((shutdown.stats, shutdown.state, file_bytes))
}

fn member_event(kind: MemberEventKind, member: Member) -> Event {
    Event::Member(MemberEvent {
        kind,
        members: vec![member],
    })
}
