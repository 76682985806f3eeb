//! `cargo xtask chaos`: a cluster of real `strata server` processes on 127.0.0.1 under client
//! load and faults chosen by a seed, with the history checked, not eyeballed.
//!
//! - Clients (`--clients`, default 8) put, read (linearizable) and compare-and-set (a Txn
//!   comparing the value, then a put) keys `chaos/0000 ..` (`--keys`, default 16) through the
//!   etcd API, each value unique (the client and its sequence number); each operation is
//!   recorded with its invocation and response times, or as never answered (an error or a
//!   timeout: a write may then have happened or not).
//! - Watchers (`--watchers`, default 2) watch the whole range from revision 1, resuming from
//!   the revision after their last event whenever their stream breaks.
//! - Faults, one at a time with quiet gaps between, drawn from the seed (`nemesis.rs`): kill -9
//!   of a member and its restart, kill -9 of the leader specifically, SIGSTOP/SIGCONT of a
//!   member or of the leader (past the election timeout), a minority partitioned from the
//!   rest (with the leader in it, or not), one link between two members cut, a member cut off
//!   from the clients, and a member replaced under load (MemberRemove, MemberAdd of a learner
//!   on the same address, its start with `--initial-cluster-state existing`, MemberPromote
//!   once it has caught up; a slot whose new member could not be added, with no quorum say,
//!   is filled by the next replacement instead of another member being removed), and a
//!   member's disk filled to below its `--disk-reserve-bytes` (NOSPACE must be raised, and
//!   writes must resume once it is freed and the alarm disarmed; a member that still stops on
//!   a failed write, as etcd does on a failed WAL write, is started again once the disk is
//!   freed, and counted). Partitions use the run's own network (`net.rs`: a
//!   namespace per member, as root) or, where that cannot be made (not root, no `ip`) or with `--proxy`, a TCP proxy
//!   in front of every member's peer and client ports (`proxy.rs`), which holds a cut link's
//!   connections; `--no-partitions` leaves them out. The full disk needs a tmpfs per member
//!   (`tests/support/disk.rs`, root); without one the members run on the machine's disk and
//!   the other faults run.
//! - After `--seconds` (default 60) the faults stop, every member runs again, a final write
//!   marks the end, and the checks run: every key's history is linearizable (the WGL search
//!   of `strata_raft_node::linearizability`, with compare-and-set); every member gives
//!   the same event history of the range (a watch from revision 1) and the same HashKV at the
//!   final revision; every acknowledged write is in that history at the revision it was
//!   told; every watcher received exactly that history, once each, in order, with no gap.
//!
//! Prints the seed first (`--seed N` replays the same choices; the timing is real, so not the
//! same run), then operations by kind and outcome, faults by kind, and each violation with
//! the seed and the shortest failing history; exits 1 on any violation. `--members` (3 or 5)
//! sizes the cluster; `--faults kill,pause,...` picks the kinds (`kill`, `kill-leader`,
//! `pause`, `pause-leader`, `partition`, `partition-leader`, `partition-link`,
//! `partition-clients`, `replace`, `disk-full`; default all); `--strata-bin PATH` runs another
//! `strata` binary (a copy, for a long run while the tree is rebuilt). `--selftest` runs the checks on recorded histories that are wrong (a
//! stale read, a lost write, a watch gap, ...) and fails if one goes unnoticed.

#[path = "../../tests/support/cluster.rs"]
mod cluster;
#[path = "../../tests/support/disk.rs"]
mod disk;

mod check;
mod nemesis;
mod net;
mod proxy;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bench_support::Args;
use check::{Acked, Event, History};
use cluster::{Cluster, MemberSpec, put_retrying, runtime, wait_ready};
use disk::SmallDisk;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, WatchOptions};
use nemesis::{Fault, Nemesis};
use net::{Namespaces, Net};
use proxy::Proxies;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use strata_raft_node::linearizability::{Op, Operation};

/// The range every client and watcher works on.
const PREFIX: &str = "chaos/";

/// The cluster's members' client URLs now (membership changes replace them).
pub type Endpoints = Arc<Mutex<Vec<String>>>;

/// The key of the final write: a watcher that sees it has everything before it.
const END_KEY: &str = "chaos/~end";

/// How long a client waits for one answer before counting the operation as never answered.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// A client's pause after a failed operation (not a wait for a condition: it keeps a client
/// from spinning on a member that is down).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// How long the end of a run may take: members back and caught up, watchers at the end.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The members' timing: short, so a run sees many elections. Snapshots every thousand entries,
/// so a restarted member often catches up from one. NOSPACE below 128 MiB free
/// ([`DISK_RESERVE_BYTES`]). The leader's corruption check every 5 s: through every fault, it
/// must never raise CORRUPT (the run's end looks for it).
const MEMBER_FLAGS: &[&str] = &[
    "--heartbeat-interval",
    "50",
    "--election-timeout",
    "500",
    "--snapshot-count",
    "1000",
    "--disk-reserve-bytes",
    "134217728",
    "--experimental-corrupt-check-time",
    "5s",
];

/// The members' `--disk-reserve-bytes`; a full-disk fault fills a member's file system to half.
pub const DISK_RESERVE_BYTES: u64 = 128 << 20;

/// Each member slot's file system, when the run can mount one (root): a tmpfs of this size
/// (it takes memory only as it fills; a 30-minute run's member stays well under it).
const DISK_MIB: u64 = 2048;

#[derive(Debug, Clone)]
struct Settings {
    seconds: f64,
    members: usize,
    clients: usize,
    keys: u64,
    watchers: usize,
    seed: u64,
    partitions: bool,
    /// Partitions through proxies even where namespaces can be made (`--proxy`).
    proxy: bool,
    /// The `strata` binary to run (default: the one built with this harness).
    strata_bin: Option<String>,
    /// The kinds of fault to inject (`--faults a,b`; default all).
    faults: Vec<Fault>,
}

fn main() {
    let args = Args::from_env();
    if args.has("--selftest") {
        let missed = check::selftest();
        if missed.is_empty() {
            println!("selftest: every wrong history caught, the good one passed");
            return;
        }
        for line in &missed {
            println!("selftest FAILED: {line}");
        }
        std::process::exit(1);
    }
    let settings = Settings {
        seconds: args.value_or("--seconds", 60.0),
        members: args.value_or("--members", 3),
        clients: args.value_or("--clients", 8),
        keys: args.value_or("--keys", 16),
        watchers: args.value_or("--watchers", 2),
        seed: args
            .value("--seed")
            .unwrap_or_else(|| rand::random::<u64>() % 1_000_000),
        partitions: !args.has("--no-partitions"),
        proxy: args.has("--proxy"),
        strata_bin: args.value("--strata-bin"),
        faults: match args.value::<String>("--faults") {
            None => Fault::ALL.to_vec(),
            Some(list) => list
                .split(',')
                .filter(|name| !name.is_empty())
                .map(|name| {
                    Fault::ALL
                        .into_iter()
                        .find(|f| f.short() == name)
                        .unwrap_or_else(|| {
                            let known: Vec<&str> = Fault::ALL.iter().map(|f| f.short()).collect();
                            eprintln!("unknown fault `{name}`; known: {}", known.join(","));
                            std::process::exit(2)
                        })
                })
                .collect(),
        },
    };
    println!(
        "chaos: seed {} ({} members, {} s, {} clients on {} keys, {} watchers)",
        settings.seed,
        settings.members,
        settings.seconds,
        settings.clients,
        settings.keys,
        settings.watchers
    );
    remove_orphan_disks();
    // Named after the run's process, so that a later run can tell it was killed.
    let dir = tempfile::Builder::new()
        .prefix(&format!("chaos-{}-", std::process::id()))
        .tempdir()
        .expect("tempdir");
    let outcome = run(dir.path(), &settings);
    let found = check::violations(&outcome.history, settings.seed);
    report(&outcome, &found);
    if !found.is_empty() {
        println!("chaos: FAILED with seed {}", settings.seed);
        std::process::exit(1);
    }
    println!("chaos: ok (seed {})", settings.seed);
}

/// Unmounts the small file systems of earlier runs that were killed (no drop ran) and removes
/// their directories: tmpfs mounts under a `chaos-<pid>-` directory whose process is gone.
fn remove_orphan_disks() {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return;
    };
    let mut dirs = std::collections::BTreeSet::new();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_), Some(at), Some("tmpfs")) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = std::path::Path::new(at);
        let Some(run_dir) = path.ancestors().find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("chaos-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        }) else {
            continue;
        };
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(path)
            .status();
        dirs.insert(run_dir.to_path_buf());
    }
    for dir in dirs {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// What a run recorded and counted.
struct Run {
    history: History,
    faults: BTreeMap<Fault, u64>,
    /// Full-disk faults whose member stopped on a failed write (and was restarted).
    stopped_on_full_disk: u64,
    /// Why partitions were left out, if they were.
    no_partitions: Option<String>,
}

fn run(dir: &std::path::Path, settings: &Settings) -> Run {
    // Partitions need a network of the run's own (namespaces, as root) or, without one (not
    // root, no `ip`, or `--proxy`), proxies in front of the members' ports.
    let (mut net, no_partitions) = if !settings.partitions {
        (None, Some("--no-partitions".to_owned()))
    } else {
        let namespaces = if settings.proxy {
            Err("--proxy".to_owned())
        } else {
            Namespaces::create(settings.members)
        };
        match namespaces {
            Ok(ns) => (Some(Net::Namespaces(ns)), None),
            Err(why) => match Proxies::new() {
                Ok(proxies) => {
                    println!("chaos: no network namespaces ({why})");
                    (Some(Net::Proxies(proxies)), None)
                }
                Err(e) => (None, Some(format!("{why}; {e}"))),
            },
        }
    };
    match (&net, &no_partitions) {
        (Some(net), _) => println!("chaos: partitions through {}", net.describe()),
        (None, Some(why)) => println!("chaos: no partitions ({why})"),
        (None, None) => {}
    }
    // A small file system per slot for the full-disk fault (root only).
    let mut disks = Vec::new();
    for i in 0..settings.members {
        match SmallDisk::mount(&dir.join(format!("slot{i}")), DISK_MIB) {
            Ok(disk) => disks.push(disk),
            Err(e) => {
                println!("chaos: no full-disk fault ({e})");
                disks.clear();
                break;
            }
        }
    }
    let specs: Vec<MemberSpec> = (0..settings.members)
        .map(|i| {
            let name = format!("m{}", i + 1);
            let mut local = MemberSpec::local(dir, &name);
            if let Some(disk) = disks.get(i) {
                local.data_dir = disk.path.join(&name);
            }
            match net.as_mut() {
                Some(net) => net.spec(i, local),
                None => local,
            }
        })
        .collect();
    let binary = settings
        .strata_bin
        .as_deref()
        .unwrap_or(env!("CARGO_BIN_EXE_strata"));
    let program = [binary, "server"];
    let cluster = Cluster::start_specs(&program, dir, specs, MEMBER_FLAGS);
    let mut nemesis = Nemesis::new(cluster, net, disks, dir.to_path_buf(), settings.seed);
    let endpoints = nemesis.endpoints();
    let shared = Arc::clone(&nemesis.shared);
    let rt = runtime();
    rt.block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
    });
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..settings.clients)
        .map(|id| {
            rt.spawn(client(
                id as u64,
                Arc::clone(&shared),
                settings.clone(),
                epoch,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let streams: Vec<Arc<Mutex<Vec<Event>>>> = (0..settings.watchers)
        .map(|_| Arc::new(Mutex::new(Vec::new())))
        .collect();
    let watchers: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(w, stream)| {
            // Each watcher starts on a different member (it moves on when its stream breaks).
            rt.spawn(watcher(w, Arc::clone(&shared), Arc::clone(stream)))
        })
        .collect();

    nemesis.run(&rt, settings.seconds, &settings.faults);

    stop.store(true, Ordering::Relaxed);
    let mut history = History::default();
    for handle in clients {
        let (ops, acked) = rt.block_on(handle).expect("a client task");
        history.ops.extend(ops);
        history.acked.extend(acked);
    }
    let members = nemesis.endpoints();
    let mut corrupt = Vec::new();
    rt.block_on(async {
        for e in &members {
            wait_ready(e).await;
        }
        let mut c = cluster::client(&members).await;
        put_retrying(&mut c, END_KEY, "end").await;
        // Every watcher reaches the end (bounded: one that does not is reported as stalled).
        let _ = tokio::time::timeout(SETTLE_TIMEOUT, async {
            for handle in watchers {
                let _ = handle.await;
            }
        })
        .await;
        for e in &members {
            let (events, revision) = committed(e).await;
            history.committed.push(events);
            let mut member = Client::connect([e.as_str()], None)
                .await
                .expect("connect for HashKV");
            let hash = member.hash_kv(revision).await.expect("HashKV").hash();
            history.hashes.push((e.clone(), revision, hash));
        }
        // The members' own check found nothing wrong: a CORRUPT alarm through faults is a
        // false alarm (or a real divergence, which HashKV above would show too).
        let alarms = c
            .alarm(
                etcd_client::AlarmAction::Get,
                etcd_client::AlarmType::None,
                None,
            )
            .await
            .expect("list the alarms");
        for alarm in alarms.alarms() {
            if alarm.alarm() == etcd_client::AlarmType::Corrupt {
                corrupt.push(format!(
                    "CORRUPT raised for member {:x} by the leader's corruption check",
                    alarm.member_id()
                ));
            }
        }
    });
    history.watches = streams
        .iter()
        .map(|s| s.lock().expect("a watcher's events").clone())
        .collect();
    history.problems = std::mem::take(&mut nemesis.problems);
    history.problems.extend(corrupt);
    Run {
        history,
        faults: std::mem::take(&mut nemesis.faults),
        stopped_on_full_disk: nemesis.stopped_on_full_disk,
        no_partitions,
    }
}

/// One client's loop: returns its operations and its acknowledged writes.
async fn client(
    id: u64,
    endpoints: Endpoints,
    settings: Settings,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> (Vec<Operation>, Vec<Acked>) {
    let mut rng =
        StdRng::seed_from_u64(settings.seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let current = |endpoints: &Endpoints| endpoints.lock().expect("the endpoints").clone();
    let mut c = cluster::client(&current(&endpoints)).await;
    // Failures since the client was last made: past a few, it is made again from the members
    // of now (a replaced member's address is gone for good).
    let mut failures = 0;
    let mut ops = Vec::new();
    let mut acked = Vec::new();
    // The last value this client read or wrote per key: what its compare-and-sets expect.
    let mut known: HashMap<u64, u64> = HashMap::new();
    let mut seq = 0u64;
    let now = |epoch: Instant| epoch.elapsed().as_nanos() as u64;
    while !stop.load(Ordering::Relaxed) {
        let key = rng.random_range(0..settings.keys);
        let name = key_name(key);
        let roll = rng.random_range(0..100);
        seq += 1;
        let value = (id << 40) | seq;
        let invoked = now(epoch);
        let (op, answer) = if roll < 40 {
            let answer = tokio::time::timeout(OP_TIMEOUT, c.get(name.as_str(), None)).await;
            match answer {
                Ok(Ok(r)) => {
                    let read = r.kvs().first().map(|kv| parse_value(kv.value()));
                    if let Some(v) = read {
                        known.insert(key, v);
                    }
                    (Op::Get(read), Some(None))
                }
                _ => (Op::Get(None), None),
            }
        } else if roll < 80 || !known.contains_key(&key) {
            let answer =
                tokio::time::timeout(OP_TIMEOUT, c.put(name.as_str(), value.to_string(), None))
                    .await;
            match answer {
                Ok(Ok(r)) => {
                    known.insert(key, value);
                    let revision = r.header().map_or(0, |h| h.revision());
                    (Op::Put(value), Some(Some(revision)))
                }
                _ => (Op::Put(value), None),
            }
        } else {
            let expect = known[&key];
            let txn = Txn::new()
                .when([Compare::value(
                    name.as_str(),
                    CompareOp::Equal,
                    expect.to_string(),
                )])
                .and_then([TxnOp::put(name.as_str(), value.to_string(), None)]);
            let answer = tokio::time::timeout(OP_TIMEOUT, c.txn(txn)).await;
            match answer {
                Ok(Ok(r)) => {
                    let revision = r.header().map_or(0, |h| h.revision());
                    if r.succeeded() {
                        known.insert(key, value);
                    } else {
                        known.remove(&key);
                    }
                    let op = Op::Cas {
                        expect,
                        new: value,
                        succeeded: Some(r.succeeded()),
                    };
                    (op, Some(r.succeeded().then_some(revision)))
                }
                _ => (
                    Op::Cas {
                        expect,
                        new: value,
                        succeeded: None,
                    },
                    None,
                ),
            }
        };
        let returned = answer.map(|_| now(epoch));
        if let Some(Some(revision)) = answer {
            acked.push(Acked {
                key,
                value,
                revision,
            });
        }
        if answer.is_none() {
            failures += 1;
            if failures >= 5
                && let Ok(Ok(fresh)) =
                    tokio::time::timeout(OP_TIMEOUT, Client::connect(current(&endpoints), None))
                        .await
            {
                c = fresh;
                failures = 0;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        ops.push(Operation {
            key,
            op,
            invoked,
            returned,
        });
    }
    (ops, acked)
}

fn key_name(key: u64) -> String {
    format!("{PREFIX}{key:04}")
}

/// A key of the range back to its number (`None` for the end marker or a stranger).
fn key_number(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key)
        .ok()?
        .strip_prefix(PREFIX)?
        .parse()
        .ok()
}

/// A value as written (a number); anything else, which no client wrote, becomes `u64::MAX`
/// and fails every check that meets it.
fn parse_value(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

/// What one watch response adds to a stream: its events of the range (a delete, which no
/// client makes, as value `u64::MAX - 1`), and whether the end marker was among them.
fn events_of(response: &etcd_client::WatchResponse) -> (Vec<Event>, bool) {
    let mut events = Vec::new();
    for e in response.events() {
        let Some(kv) = e.kv() else { continue };
        if kv.key() == END_KEY.as_bytes() {
            return (events, true);
        }
        let Some(key) = key_number(kv.key()) else {
            continue;
        };
        let value = match e.event_type() {
            etcd_client::EventType::Put => parse_value(kv.value()),
            etcd_client::EventType::Delete => u64::MAX - 1,
        };
        events.push(Event {
            key,
            value,
            revision: kv.mod_revision(),
        });
    }
    (events, false)
}

/// A live watcher: the range from revision 1 until the end marker, resuming after its last
/// event on the next member whenever a stream breaks or is cancelled.
async fn watcher(first: usize, endpoints: Endpoints, stream: Arc<Mutex<Vec<Event>>>) {
    let mut next = 1;
    for attempt in first.. {
        let e = {
            let endpoints = endpoints.lock().expect("the endpoints");
            endpoints[attempt % endpoints.len()].clone()
        };
        let options = WatchOptions::new().with_prefix().with_start_revision(next);
        let opened = async {
            let mut c = Client::connect([e.as_str()], None).await.ok()?;
            c.watch(PREFIX, Some(options)).await.ok()
        };
        let Some(mut responses) = tokio::time::timeout(OP_TIMEOUT, opened)
            .await
            .ok()
            .flatten()
        else {
            tokio::time::sleep(RETRY_PAUSE).await;
            continue;
        };
        while let Ok(Some(response)) = responses.message().await {
            let (events, end) = events_of(&response);
            if let Some(last) = events.last() {
                next = last.revision + 1;
            }
            stream.lock().expect("a watcher's events").extend(events);
            if end {
                return;
            }
            if response.canceled() {
                break;
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// A member's whole event history of the range (a watch from revision 1 on that member alone,
/// up to the end marker), and the end marker's revision.
async fn committed(endpoint: &str) -> (Vec<Event>, i64) {
    let read = async {
        let mut c = Client::connect([endpoint], None).await.ok()?;
        let options = WatchOptions::new().with_prefix().with_start_revision(1);
        let mut responses = c.watch(PREFIX, Some(options)).await.ok()?;
        let mut all = Vec::new();
        while let Ok(Some(response)) = responses.message().await {
            let (events, end) = events_of(&response);
            all.extend(events);
            if end {
                let revision = response
                    .events()
                    .iter()
                    .filter_map(|e| e.kv())
                    .find(|kv| kv.key() == END_KEY.as_bytes())
                    .map_or(0, |kv| kv.mod_revision());
                return Some((all, revision));
            }
        }
        None
    };
    tokio::time::timeout(SETTLE_TIMEOUT, read)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("{endpoint}: no event history up to the end marker"))
}

fn report(run: &Run, found: &[String]) {
    let mut by_kind: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for op in &run.history.ops {
        let kind = match op.op {
            Op::Put(_) => "put",
            Op::Get(_) => "get",
            Op::Cas { .. } => "cas",
        };
        let outcome = match (&op.op, op.returned) {
            (_, None) => "no answer",
            (
                Op::Cas {
                    succeeded: Some(false),
                    ..
                },
                _,
            ) => "ok, compare failed",
            _ => "ok",
        };
        *by_kind.entry((kind, outcome)).or_insert(0) += 1;
    }
    println!("operations: {}", run.history.ops.len());
    for ((kind, outcome), n) in &by_kind {
        println!("  {kind:<4} {outcome:<20} {n}");
    }
    println!(
        "acknowledged writes: {}; committed events: {}; watch events received: {:?}",
        run.history.acked.len(),
        run.history.committed.first().map_or(0, Vec::len),
        run.history.watches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    println!("faults: {}", run.faults.values().sum::<u64>());
    if let Some(why) = &run.no_partitions {
        println!("  (no partitions: {why})");
    }
    for (fault, n) in &run.faults {
        println!("  {:<32} {n}", fault.name());
    }
    if run.stopped_on_full_disk > 0 {
        println!(
            "  (members that stopped on a full disk, restarted: {})",
            run.stopped_on_full_disk
        );
    }
    println!("violations: {}", found.len());
    for line in found {
        println!("  {line}");
    }
}
