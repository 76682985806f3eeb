//! `cargo xtask bench watch`: events delivered per second to many watchers of one
//! `strata server` member, and of one etcd member under the same load when `etcd` is
//! installed, in the same run. Writers and watchers use the cluster bench's lean gRPC client
//! (`support/grpc.rs`), which costs the shared cores about half as much per put as the
//! etcd-client crate; its watch stream decodes of each response only the fields the harness
//! counts and checks (the watch id, created, canceled, and each event's value, where the
//! send time is), skipping the rest.
//!
//! Two phases, each on a fresh single-member cluster:
//! - `1stream`: one gRPC watch stream carrying `--watchers` watchers (default 10,000);
//! - `100k`: `--streams` streams (default 10) of `--watchers` watchers each, over
//!   `--connections` HTTP/2 connections (default 2): 100,000 watchers by default.
//!
//! Every stream carries the same watchers: watcher `i` watches the key `w/<i>`, except every
//! hundredth one (`i % 100 == 99`), which watches the prefix of its block of a hundred keys, so
//! both the hub's by-key lookup and its range check are exercised. A put to a watched key is
//! then delivered to two watchers of every stream (to one for the last key of a block).
//!
//! `--writers` clients (default 128: fewer leave both systems waiting on their group commits
//! rather than busy) sharing their own connection put 64-byte values (their send time, for
//! latency) to the keys `w/0 .. w/<watchers - 1>` in turn. Each phase runs two loads of
//! `--seconds` (default 5), the same for both systems:
//! - a fixed offered rate (`--rate` puts/s in all, default 500) that both sustain: both then
//!   deliver the same events/s, so what it measures is delivery latency, put to receipt
//!   (`..._fixed_p50`, `..._fixed_p99`);
//! - a saturating closed loop (each writer puts again as soon as its put returns): events/s
//!   delivered is every event the load caused divided by the time from its first put to the
//!   last of its events received, so a server that falls behind and delivers a backlog late
//!   pays for it rather than hiding it.
//!
//! After each load the harness polls (bounded) until every watcher has received exactly the
//! events of the puts to its keys, lets a quiet period pass, and checks again: a lost or a
//! repeated event stops the bench.
//!
//! Prints, per phase, events/s delivered (`BENCH watch_events_1stream`,
//! `BENCH watch_events_100k`), puts/s of the saturating load, delivery latency at the fixed
//! rate, the server's CPU time (all threads) per event delivered in the saturating load, the
//! time to create the watchers, the server's RSS once they exist and its peak RSS over the
//! phase (VmHWM of `/proc/<pid>/status`), the same for etcd (`etcd_watch_*`), and
//! `RATIO watch_events_vs_etcd`: the geometric mean of the two phases' events/s ratios (each
//! phase's ratio is printed too; above 1: Strata ahead). Medians over `--rounds` (default 3);
//! the two systems alternate within a round. `--no-etcd` runs Strata alone (for profiling);
//! `--baseline PATH` runs another `strata` binary (an older build) where etcd would run, for a
//! before/after comparison in one run (its figures are then `baseline_watch_*`, and the ratios
//! are against it).
//!
//! The harness's client shares the machine with the server and decodes every event, so
//! events/s also counts the client's cost, the same for both systems: that narrows the ratio
//! towards 1. The CPU time per event (`RATIO watch_<phase>_cpu_per_event_vs_etcd`) is the
//! server's alone, and the figure least moved by whatever else runs on the machine.

#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "support/grpc.rs"]
mod grpc;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench_support::{Args, Baseline, Steps, median, print_bench, print_ratio, process_cpu_s};
use cluster::{Cluster, wait_ready};
use grpc::{Connection, Rpc, WatchReceiver, WatchResponse, WatchSender};
use strata_server::proto::etcdserverpb::{
    PutRequest, PutResponse, WatchCreateRequest, WatchRequest, watch_request,
};

/// The client allocates per event and per request (tonic's buffers, etcd-client's
/// messages): with glibc's malloc that cost CPU on the cores the server shares. The same
/// allocator as the `strata` binary's, the same for both systems.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Creates sent together (about 30 KiB; see `WatchSender::send`).
const CREATES_PER_SEND: usize = 1_000;

/// Keys per prefix watcher: every `PREFIX_BLOCK`-th watcher watches the prefix of a block of
/// this many keys.
const PREFIX_BLOCK: usize = 100;

/// Digits of a key's index (`w/0000042`); a prefix watcher's prefix drops the last two.
const KEY_DIGITS_MAX: usize = 7;

/// The value written: 8 bytes of send time, then padding.
const VALUE_BYTES: usize = 64;

/// How long the watchers may take to be created, and the events of a load to arrive.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);

/// How long the harness watches for events beyond those expected (a repeat) after a load.
const QUIET: Duration = Duration::from_millis(500);

/// How often the harness polls the delivered counts.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The load's shape, from the flags.
#[derive(Debug, Clone, Copy)]
struct Settings {
    watchers: usize,
    streams: usize,
    connections: usize,
    writers: usize,
    seconds: f64,
    rate: f64,
}

/// One phase's figures for one system.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    create_s: f64,
    events_per_s: f64,
    puts_per_s: f64,
    fixed_p50_ms: f64,
    fixed_p99_ms: f64,
    /// Server CPU time (user and system, all threads) per event of the saturating load.
    cpu_us_per_event: f64,
    rss_watchers_mib: f64,
    peak_rss_mib: f64,
}

/// What one stream's drain task counted.
struct Tally {
    /// Events received per watcher (watch id − 1).
    events_per_watcher: Vec<AtomicU32>,
    created: AtomicUsize,
    /// Events received in all; bumped after `events_per_watcher`, read with Acquire.
    events: AtomicU64,
    /// When the last event was received, in ns since the run's epoch.
    last_event_ns: AtomicU64,
    /// Put-to-receipt latency of each event, in microseconds.
    latencies_us: Mutex<Vec<u32>>,
    failure: Mutex<Option<String>>,
}

impl Tally {
    fn new(watchers: usize) -> Self {
        Tally {
            events_per_watcher: (0..watchers).map(|_| AtomicU32::new(0)).collect(),
            created: AtomicUsize::new(0),
            events: AtomicU64::new(0),
            last_event_ns: AtomicU64::new(0),
            latencies_us: Mutex::new(Vec::new()),
            failure: Mutex::new(None),
        }
    }

    fn fail(&self, why: String) {
        self.failure.lock().expect("tally lock").get_or_insert(why);
    }

    fn check(&self) {
        if let Some(why) = self.failure.lock().expect("tally lock").as_ref() {
            panic!("watch stream failed: {why}");
        }
    }
}

fn key(i: usize) -> String {
    format!("w/{i:0KEY_DIGITS_MAX$}")
}

fn is_prefix_watcher(i: usize) -> bool {
    i % PREFIX_BLOCK == PREFIX_BLOCK - 1
}

/// Watcher `i`'s key, or its prefix for a prefix watcher.
fn watched(i: usize) -> String {
    if is_prefix_watcher(i) {
        format!("w/{:0width$}", i / PREFIX_BLOCK, width = KEY_DIGITS_MAX - 2)
    } else {
        key(i)
    }
}

/// Watcher `i`'s create request (its watch id is `i + 1`: 0 asks the server to pick).
fn create_of(i: usize) -> WatchRequest {
    let key = watched(i).into_bytes();
    let range_end = if is_prefix_watcher(i) {
        // The prefix's end: its last byte (an ASCII digit) plus one.
        let mut end = key.clone();
        *end.last_mut().expect("a prefix is not empty") += 1;
        end
    } else {
        Vec::new()
    };
    WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key,
                range_end,
                watch_id: i as i64 + 1,
                ..WatchCreateRequest::default()
            },
        )),
    }
}

/// The events watcher `i` must receive for `puts` puts per key.
fn expected_of(i: usize, puts: &[u64]) -> u64 {
    if is_prefix_watcher(i) {
        let block = i / PREFIX_BLOCK * PREFIX_BLOCK;
        puts[block..block + PREFIX_BLOCK].iter().sum()
    } else {
        puts[i]
    }
}

fn now_ns(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).expect("a run shorter than 584 years")
}

/// Counts what one stream delivers until it closes.
async fn drain(mut responses: WatchReceiver, tally: Arc<Tally>, epoch: Instant) {
    loop {
        let response = match responses.message::<WatchResponse>().await {
            Ok(Some(response)) => response,
            Ok(None) => return,
            Err(e) => return tally.fail(format!("stream error: {e}")),
        };
        if response.canceled {
            return tally.fail(format!(
                "watcher {} canceled: {:?} (compact revision {})",
                response.watch_id, response.cancel_reason, response.compact_revision
            ));
        }
        if response.created {
            tally.created.fetch_add(1, Ordering::Relaxed);
        }
        let events = &response.events;
        if events.is_empty() {
            continue;
        }
        let now = now_ns(epoch);
        let slot = usize::try_from(response.watch_id - 1)
            .ok()
            .and_then(|i| tally.events_per_watcher.get(i));
        let Some(slot) = slot else {
            return tally.fail(format!("events for unknown id {}", response.watch_id));
        };
        slot.fetch_add(events.len() as u32, Ordering::Relaxed);
        {
            let mut latencies = tally.latencies_us.lock().expect("tally lock");
            for event in events {
                let sent = event
                    .kv
                    .as_ref()
                    .and_then(|kv| kv.value.get(..8))
                    .map_or(now, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                latencies.push(u32::try_from(now.saturating_sub(sent) / 1_000).unwrap_or(u32::MAX));
            }
        }
        tally.last_event_ns.fetch_max(now, Ordering::Relaxed);
        tally
            .events
            .fetch_add(events.len() as u64, Ordering::Release);
    }
}

/// Opens a watch stream on `connection` and sends the creates of `watchers` watchers; its
/// responses are counted into `tally`. The sender must live as long as the stream should.
async fn open_stream(
    connection: Connection,
    watchers: usize,
    tally: Arc<Tally>,
    epoch: Instant,
) -> (WatchSender, tokio::task::JoinHandle<()>) {
    let (mut sender, responses) = connection.watch().await.expect("open a watch stream");
    for first in (0..watchers).step_by(CREATES_PER_SEND) {
        let creates: Vec<WatchRequest> = (first..watchers.min(first + CREATES_PER_SEND))
            .map(create_of)
            .collect();
        sender.send(&creates).expect("send creates");
    }
    let task = tokio::spawn(drain(responses, tally, epoch));
    (sender, task)
}

/// One writer: puts to its share of the keys until `seconds` pass, paced to `interval` per
/// put if given; returns its successful puts per key and its failed puts.
async fn write(
    connection: Connection,
    writer: usize,
    settings: Settings,
    interval: Option<Duration>,
    epoch: Instant,
) -> (Vec<u64>, u64) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(settings.seconds);
    let mut puts = vec![0u64; settings.watchers];
    let mut failed = 0;
    let mut value = vec![b'v'; VALUE_BYTES];
    for step in 0usize.. {
        if let Some(interval) = interval {
            // Writers are spread over the interval rather than putting in bursts.
            let offset = step as f64 + writer as f64 / settings.writers as f64;
            let at = start + interval.mul_f64(offset);
            if at >= deadline {
                break;
            }
            tokio::time::sleep_until(at.into()).await;
        } else if Instant::now() >= deadline {
            break;
        }
        let k = (writer + step * settings.writers) % settings.watchers;
        value[..8].copy_from_slice(&now_ns(epoch).to_le_bytes());
        let put = PutRequest {
            key: key(k).into_bytes(),
            value: value.clone(),
            ..PutRequest::default()
        };
        match connection.call::<_, PutResponse>(Rpc::Put, &put).await {
            Ok(_) => puts[k] += 1,
            Err(_) => failed += 1,
        }
    }
    (puts, failed)
}

/// What one load measured.
struct LoadFigures {
    /// Events the load delivered.
    events: f64,
    events_per_s: f64,
    puts_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs one load (paced to `rate` puts/s, or saturating), waits until every watcher of every
/// stream has exactly its events, and measures.
async fn load(
    writer_connection: &Connection,
    tallies: &[Arc<Tally>],
    settings: Settings,
    rate: Option<f64>,
    epoch: Instant,
) -> LoadFigures {
    let before: Vec<Vec<u32>> = tallies
        .iter()
        .map(|t| {
            t.events_per_watcher
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect()
        })
        .collect();
    let delivered = || -> u64 {
        tallies
            .iter()
            .map(|t| t.events.load(Ordering::Acquire))
            .sum()
    };
    let delivered_before = delivered();
    for t in tallies {
        t.latencies_us.lock().expect("tally lock").clear();
    }
    let interval =
        rate.map(|r| Duration::from_secs_f64(settings.writers as f64 / r.max(f64::MIN_POSITIVE)));
    let start_ns = now_ns(epoch);
    let started = Instant::now();
    let writers: Vec<_> = (0..settings.writers)
        .map(|w| {
            tokio::spawn(write(
                writer_connection.clone(),
                w,
                settings,
                interval,
                epoch,
            ))
        })
        .collect();
    let mut puts = vec![0u64; settings.watchers];
    let mut failed = 0;
    for w in writers {
        let (p, f) = w.await.expect("a writer task");
        for (total, n) in puts.iter_mut().zip(p) {
            *total += n;
        }
        failed += f;
    }
    let write_s = started.elapsed().as_secs_f64();
    assert_eq!(
        failed, 0,
        "{failed} puts failed: the expected events are unknown"
    );
    let puts_total: u64 = puts.iter().sum();
    let expected: Vec<u64> = (0..settings.watchers)
        .map(|i| expected_of(i, &puts))
        .collect();
    let expected_total = expected.iter().sum::<u64>() * tallies.len() as u64;

    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while delivered() - delivered_before < expected_total {
        tallies.iter().for_each(|t| t.check());
        assert!(
            Instant::now() < deadline,
            "{} of {expected_total} events delivered in {SETTLE_TIMEOUT:?}",
            delivered() - delivered_before
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    let last_ns = tallies
        .iter()
        .map(|t| t.last_event_ns.load(Ordering::Relaxed))
        .max()
        .unwrap_or(start_ns);
    // Long enough for a repeated event to show up as a count above the expected one.
    tokio::time::sleep(QUIET).await;
    for (s, (tally, before)) in tallies.iter().zip(&before).enumerate() {
        tally.check();
        for (i, (count, before)) in tally.events_per_watcher.iter().zip(before).enumerate() {
            let got = u64::from(count.load(Ordering::Relaxed) - before);
            assert_eq!(
                got,
                expected[i],
                "stream {s}, watcher {i} ({:?}): events received vs puts to its keys",
                watched(i)
            );
        }
    }
    let mut latencies: Vec<u32> = Vec::new();
    for t in tallies {
        latencies.extend(t.latencies_us.lock().expect("tally lock").iter());
    }
    latencies.sort_unstable();
    let percentile_ms = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let at = ((latencies.len() - 1) as f64 * p).round() as usize;
        f64::from(latencies[at]) / 1_000.0
    };
    LoadFigures {
        events: expected_total as f64,
        events_per_s: expected_total as f64 / ((last_ns - start_ns) as f64 / 1e9).max(1e-9),
        puts_per_s: puts_total as f64 / write_s,
        p50_ms: percentile_ms(0.5),
        p99_ms: percentile_ms(0.99),
    }
}

/// A field of `/proc/<pid>/status` in MiB (`VmRSS`, `VmHWM`); 0 if it cannot be read.
fn proc_mib(pid: Option<u32>, field: &str) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One phase (`streams` streams of `settings.watchers` watchers) against a fresh member that
/// `program` starts.
fn phase(program: &[&str], streams: usize, settings: Settings) -> Figures {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start_program(program, dir.path(), 1, &[]);
    let endpoints = cluster.endpoints();
    let pid = cluster.pid(0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        wait_ready(&endpoints[0]).await;
        let mut connections = Vec::new();
        for _ in 0..settings.connections.clamp(1, streams) {
            connections.push(
                Connection::connect(&endpoints[0])
                    .await
                    .expect("connect the watchers"),
            );
        }
        let writer_connection = Connection::connect(&endpoints[0])
            .await
            .expect("connect the writers");
        let epoch = Instant::now();
        let tallies: Vec<Arc<Tally>> = (0..streams)
            .map(|_| Arc::new(Tally::new(settings.watchers)))
            .collect();

        let started = Instant::now();
        let opening: Vec<_> = tallies
            .iter()
            .enumerate()
            .map(|(s, tally)| {
                let connection = connections[s % connections.len()].clone();
                tokio::spawn(open_stream(
                    connection,
                    settings.watchers,
                    Arc::clone(tally),
                    epoch,
                ))
            })
            .collect();
        let mut open = Vec::new();
        for o in opening {
            open.push(o.await.expect("a stream opener"));
        }
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while tallies
            .iter()
            .any(|t| t.created.load(Ordering::Relaxed) < settings.watchers)
        {
            tallies.iter().for_each(|t| t.check());
            assert!(
                Instant::now() < deadline,
                "watchers not created in {SETTLE_TIMEOUT:?}"
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let create_s = started.elapsed().as_secs_f64();
        let rss_watchers_mib = proc_mib(pid, "VmRSS");

        let fixed = load(
            &writer_connection,
            &tallies,
            settings,
            Some(settings.rate),
            epoch,
        )
        .await;
        let cpu_before_s = pid.map_or(0.0, process_cpu_s);
        let saturating = load(&writer_connection, &tallies, settings, None, epoch).await;
        let cpu_s = pid.map_or(0.0, process_cpu_s) - cpu_before_s;
        let peak_rss_mib = proc_mib(pid, "VmHWM");
        for (sender, task) in open {
            drop(sender);
            task.abort();
        }
        Figures {
            create_s,
            events_per_s: saturating.events_per_s,
            puts_per_s: saturating.puts_per_s,
            fixed_p50_ms: fixed.p50_ms,
            fixed_p99_ms: fixed.p99_ms,
            cpu_us_per_event: cpu_s * 1e6 / saturating.events,
            rss_watchers_mib,
            peak_rss_mib,
        }
    })
}

/// Prints one system's figures for one phase (`prefix` is `watch` or `etcd_watch`).
fn report(prefix: &str, phase: &str, runs: &[Figures]) -> Figures {
    let m = |f: fn(&Figures) -> f64| median(runs.iter().map(f));
    let figures = Figures {
        create_s: m(|f| f.create_s),
        events_per_s: m(|f| f.events_per_s),
        puts_per_s: m(|f| f.puts_per_s),
        fixed_p50_ms: m(|f| f.fixed_p50_ms),
        fixed_p99_ms: m(|f| f.fixed_p99_ms),
        cpu_us_per_event: m(|f| f.cpu_us_per_event),
        rss_watchers_mib: m(|f| f.rss_watchers_mib),
        peak_rss_mib: m(|f| f.peak_rss_mib),
    };
    print_bench(
        &format!("{prefix}_events_{phase}"),
        figures.events_per_s,
        "events/s",
    );
    print_bench(
        &format!("{prefix}_{phase}_puts"),
        figures.puts_per_s,
        "ops/s",
    );
    print_bench(
        &format!("{prefix}_{phase}_fixed_p50"),
        figures.fixed_p50_ms,
        "ms",
    );
    print_bench(
        &format!("{prefix}_{phase}_fixed_p99"),
        figures.fixed_p99_ms,
        "ms",
    );
    print_bench(
        &format!("{prefix}_{phase}_cpu_per_event"),
        figures.cpu_us_per_event,
        "us",
    );
    print_bench(&format!("{prefix}_{phase}_create"), figures.create_s, "s");
    print_bench(
        &format!("{prefix}_{phase}_rss_watchers"),
        figures.rss_watchers_mib,
        "MiB",
    );
    print_bench(
        &format!("{prefix}_{phase}_peak_rss"),
        figures.peak_rss_mib,
        "MiB",
    );
    figures
}

fn main() {
    let args = Args::from_env();
    let settings = Settings {
        watchers: args.value_or("--watchers", 10_000usize),
        streams: args.value_or("--streams", 10usize),
        connections: args.value_or("--connections", 2usize),
        writers: args.value_or("--writers", 128usize),
        seconds: args.value_or("--seconds", 5.0f64),
        rate: args.value_or("--rate", 500.0f64),
    };
    let rounds = args.value_or("--rounds", 3usize);
    assert!(
        settings.watchers >= PREFIX_BLOCK
            && settings.watchers.is_multiple_of(PREFIX_BLOCK)
            && settings.watchers < 10usize.pow(KEY_DIGITS_MAX as u32),
        "--watchers must be a multiple of {PREFIX_BLOCK} below 10^{KEY_DIGITS_MAX}"
    );
    assert!(
        settings.writers > 0 && settings.streams > 0,
        "--writers and --streams must be positive"
    );
    let baseline = Baseline::from_args(&args);
    let compare = baseline.is_some();
    let their_name = baseline.as_ref().map_or("", |b| b.name);
    let their_program = baseline.as_ref().map_or_else(Vec::new, Baseline::command);
    let their_prefix = format!("{their_name}_watch");
    let strata = [env!("CARGO_BIN_EXE_strata"), "server"];
    let phases = [("1stream", 1), ("100k", settings.streams)];
    let mut ours: Vec<Vec<Figures>> = vec![Vec::new(); phases.len()];
    let mut theirs: Vec<Vec<Figures>> = vec![Vec::new(); phases.len()];
    let mut steps = Steps::new(rounds * phases.len() * if compare { 2 } else { 1 });
    for round in 0..rounds {
        for (p, &(name, streams)) in phases.iter().enumerate() {
            steps.begin(&format!("round {round}, phase {name}: strata"));
            ours[p].push(phase(&strata, streams, settings));
            if compare {
                steps.begin(&format!("round {round}, phase {name}: {their_name}"));
                theirs[p].push(phase(&their_program, streams, settings));
            }
        }
    }
    steps.finish();
    let mut ratios = Vec::new();
    for (p, &(name, _)) in phases.iter().enumerate() {
        let our = report("watch", name, &ours[p]);
        if compare {
            let their = report(&their_prefix, name, &theirs[p]);
            let ratio = our.events_per_s / their.events_per_s;
            print_ratio(&format!("watch_events_{name}_vs_{their_name}"), ratio);
            print_ratio(
                &format!("watch_{name}_cpu_per_event_vs_{their_name}"),
                their.cpu_us_per_event / our.cpu_us_per_event,
            );
            print_ratio(
                &format!("watch_{name}_peak_rss_vs_{their_name}"),
                their.peak_rss_mib / our.peak_rss_mib,
            );
            ratios.push(ratio);
        }
    }
    if compare {
        let geomean = ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64;
        print_ratio(&format!("watch_events_vs_{their_name}"), geomean.exp());
    }
}
