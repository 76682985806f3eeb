//! `cargo xtask bench cluster`: a 3-member cluster of `strata server` processes against a
//! 3-member etcd 3.4 cluster on the same machine, in the same run, driven by the same load
//! generator (this file: the same code for both, so the comparison is fair). `cargo xtask
//! bench cluster` installs Debian's `etcd-server` when it is missing.
//!
//! Both clusters are started with the same flags (etcd's defaults), on loopback, and each has
//! its leader moved to the first member before the load, so that neither gains from where its
//! election happened to land. Each workload runs on a fresh cluster of each system in turn,
//! at every client count (`--clients`, default `1,50,500,1000`), each point a closed loop of
//! `--seconds` (default 5) in which every client sends its next request as soon as the last
//! one is answered:
//!
//! - `put`: a new 256-byte key with a 1 KiB value (`etcdctl check perf`'s shape);
//! - `get_linearizable`, `get_serializable`: one of 10,000 such keys loaded first;
//! - `txn_cas`: compare-and-set, each client on its own key: `mod_revision == last` then put;
//! - `range_100`: 100 consecutive keys of the 10,000 (100 KiB per answer);
//! - `mixed_80_20`: 80% linearizable gets, 20% puts over the 10,000 keys.
//!
//! The load generator runs on the same cores as the servers, so its cost per request (the
//! same for both systems) narrows every ratio towards 1. To keep that cost small it sends
//! etcd's KV calls as plain gRPC on the `h2` crate (`../support/grpc.rs`: a request's HEADERS
//! and DATA in one write, no task or buffer between the caller and the connection) rather than
//! through the etcd-client crate, which took about as much CPU per linearizable get as the
//! three members together; and it allocates with mimalloc, as the `strata` binary does, which
//! took a quarter off that cost before. The setup (moving the leader) uses the etcd-client
//! crate.
//!
//! Each member gets its share of the machine's cores for its runtime (`--member-threads`,
//! default a third of the cores, at least 1): the same number in `GOMAXPROCS` for etcd's Go
//! runtime and in `STRATA_WORKER_THREADS` for Strata's Tokio workers, both set for both
//! systems. Left at one per core, three members and the generator contend for two cores with
//! seven runtimes' worth of threads.
//!
//! Clients share `--connections` HTTP/2 connections (default 100, and never more than there
//! are clients), spread over the three members in turn, as a client library balancing over
//! its endpoints does: requests that reach a follower are forwarded by it, in both systems.
//!
//! Prints for each point `BENCH cluster_<workload>_<clients>c` (ops/s) with `_p50` and `_p99`
//! (µs), the CPU time per completed request of the three members together
//! (`_servers_cpu_per_op`, µs, from `/proc/<pid>/stat`) and of the load generator
//! (`_client_cpu_per_op`), the same for etcd (`etcd_cluster_...`), and `RATIO
//! cluster_<workload>_<clients>c_vs_etcd` (throughput; above 1: Strata ahead) and `RATIO
//! cluster_<workload>_<clients>c_servers_cpu_per_op_vs_etcd` (etcd's CPU per request over
//! Strata's); medians over `--rounds` (default 1). With every core busy, throughput is about
//! the cores over the servers' and the generator's CPU per request together: the generator's
//! share, the same for both, bounds the throughput ratio below the CPU ratio. A failed request is not counted as done, and the number of
//! failures is printed: a system that answers errors quickly does not look fast. Then a table
//! for people, and which of the goals hold (every ratio at least 1; put and
//! linearizable get at 500 clients at least 2).
//!
//! Then `etcdctl check perf --load=<load>` for each of `--check-perf` (default `s,m,l,xl`;
//! `none` skips it) against a fresh cluster of each system: `BENCH check_perf_<load>_strata
//! PASS|FAIL` and `BENCH check_perf_<load>_etcd PASS|FAIL`, with the throughput check perf
//! measured (`..._throughput`, writes/s) and its own lines. Each load runs 60 s. Before each
//! load, check perf's request generator runs alone (`checkperf_generator.go`, built with
//! Debian's Go, which `cargo xtask bench cluster` installs when missing) against a server
//! that answers at once: `BENCH check_perf_<load>_generator_ceiling` (requests/s) is the most
//! check perf can measure on this machine, whatever the server.
//!
//! `--workloads a,b` runs some of the workloads (`none`: only check perf); `--no-etcd` runs
//! Strata alone; `--baseline PATH` runs another `strata` binary where etcd would run
//! (before/after figures in one run). `--large` runs only the large-store phase instead
//! (`large.rs`: a 10 GiB store's put throughput against an empty one's, and a new member's
//! catch-up against the disk; long, not in CI).

#[path = "../../tests/support/cluster.rs"]
mod cluster;
// Its watch stream is the watch bench's.
#[allow(dead_code)]
#[path = "../support/grpc.rs"]
mod grpc;
mod large;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bench_support::{
    Args, Baseline, Load, Steps, closed_loop, median, print_bench, print_ratio, process_cpu_s,
};
use cluster::{Cluster, client, wait_ready};
use grpc::{Connection, Rpc};
use strata_server::proto::etcdserverpb::{
    Compare, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader,
    TxnRequest, TxnResponse, compare, request_op,
};

/// The load generator allocates per request (its messages, h2's buffers). With glibc's
/// malloc that cost the etcd-client generator it had before about 7 µs of CPU per
/// linearizable get (27 µs against 20), on the two cores the servers share: the same for
/// both systems, but CPU taken from them. The same allocator as the `strata` binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keys loaded before the read workloads (and overwritten by `mixed_80_20`).
const KEYS: usize = 10_000;
/// Bytes of every key, and of every value (`etcdctl check perf`'s shape).
const KEY_BYTES: usize = 256;
const VALUE_BYTES: usize = 1024;
/// Keys in one `range_100` request.
const RANGE_KEYS: usize = 100;
/// Clients that load the keys before a read workload.
const LOADERS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Put,
    GetLinearizable,
    GetSerializable,
    TxnCas,
    Range100,
    Mixed8020,
}

const WORKLOADS: [Workload; 6] = [
    Workload::Put,
    Workload::GetLinearizable,
    Workload::GetSerializable,
    Workload::TxnCas,
    Workload::Range100,
    Workload::Mixed8020,
];

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::GetLinearizable => "get_linearizable",
            Workload::GetSerializable => "get_serializable",
            Workload::TxnCas => "txn_cas",
            Workload::Range100 => "range_100",
            Workload::Mixed8020 => "mixed_80_20",
        }
    }

    /// Whether the workload reads the `KEYS` loaded keys.
    fn reads_loaded_keys(self) -> bool {
        matches!(
            self,
            Workload::GetLinearizable
                | Workload::GetSerializable
                | Workload::Range100
                | Workload::Mixed8020
        )
    }
}

/// Loaded key `i`: `k/<i, 8 digits>` padded to `KEY_BYTES`, so keys sort by `i`.
fn loaded_key(i: usize) -> Vec<u8> {
    let mut key = format!("k/{i:08}/").into_bytes();
    key.resize(KEY_BYTES, b'x');
    key
}

/// The `step`-th new key of client `client` (`put`): unique, `KEY_BYTES` long.
fn new_key(client: usize, step: u64) -> Vec<u8> {
    let mut key = format!("p/{client:04}/{step:012}/").into_bytes();
    key.resize(KEY_BYTES, b'x');
    key
}

/// Client `client`'s compare-and-set key.
fn cas_key(client: usize) -> Vec<u8> {
    let mut key = format!("c/{client:04}/").into_bytes();
    key.resize(KEY_BYTES, b'x');
    key
}

/// A spread of the loaded keys over clients and steps (a multiplicative hash: neighbouring
/// steps land far apart, so no client reads one key over and over).
fn pick(client: usize, step: u64, modulus: usize) -> usize {
    let x = (client as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(step.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    ((x >> 17) % modulus as u64) as usize
}

/// One point's figures.
#[derive(Debug, Clone, Copy)]
struct Point {
    per_s: f64,
    p50_us: f64,
    p99_us: f64,
    /// Requests that failed (not counted in `per_s`).
    failed: u64,
    /// CPU time of the cluster's members (all three) per completed request, µs.
    servers_cpu_us: f64,
    /// CPU time of the load generator (this process) per completed request, µs.
    client_cpu_us: f64,
}

/// Moves the leader of the cluster at `endpoints` to the first member (through the current
/// leader, which is the member that can hand it over), and waits until the first member
/// reports itself leader.
async fn lead_from_first(endpoints: &[String]) {
    let deadline = std::time::Instant::now() + cluster::READY_TIMEOUT;
    loop {
        let mut first = client(&endpoints[..1]).await;
        if let Ok(status) = first.status().await
            && status.leader() == status.header().map_or(0, |h| h.member_id())
        {
            return;
        }
        let target = first
            .status()
            .await
            .ok()
            .and_then(|s| s.header().map(|h| h.member_id()));
        if let Some(target) = target {
            for e in endpoints {
                let mut c = client(std::slice::from_ref(e)).await;
                if let Ok(s) = c.status().await
                    && s.leader() == s.header().map_or(0, |h| h.member_id())
                {
                    let _ = c.move_leader(target).await;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the leader did not move to {} in time",
            endpoints[0]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every member answers, moves the leader to the first, and opens `n` (at least
/// one) connections spread over the members in turn.
async fn ready_connections(endpoints: &[String], n: usize) -> Vec<Connection> {
    for e in endpoints {
        wait_ready(e).await;
    }
    lead_from_first(endpoints).await;
    let mut connections = Vec::new();
    for i in 0..n.max(1) {
        let endpoint = &endpoints[i % endpoints.len()];
        let connection = Connection::connect(endpoint)
            .await
            .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"));
        connections.push(connection);
    }
    connections
}

fn put_request(key: Vec<u8>, value: Vec<u8>) -> PutRequest {
    PutRequest {
        key,
        value,
        ..PutRequest::default()
    }
}

/// Puts the `KEYS` loaded keys with `LOADERS` clients.
async fn load_keys(connections: &[Connection]) {
    let tasks: Vec<_> = (0..LOADERS)
        .map(|l| {
            let c = connections[l % connections.len()].clone();
            tokio::spawn(async move {
                for i in (l..KEYS).step_by(LOADERS) {
                    let put = put_request(loaded_key(i), vec![b'v'; VALUE_BYTES]);
                    c.call::<_, PutResponse>(Rpc::Put, &put)
                        .await
                        .unwrap_or_else(|e| panic!("load a key: {e}"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("a loader");
    }
}

/// The revision a response's header carries (0 without a header).
fn revision_of(header: Option<&ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

/// One request of `workload` by `client` at its `step`: whether it succeeded (a read must find
/// what was loaded, a compare-and-set must succeed).
async fn request(
    c: &Connection,
    workload: Workload,
    client: usize,
    step: u64,
    cas_revisions: &[AtomicI64],
) -> bool {
    let get = |key: Vec<u8>, range_end: Vec<u8>, serializable: bool| RangeRequest {
        key,
        range_end,
        serializable,
        ..RangeRequest::default()
    };
    let range = async |request: RangeRequest, count: usize| {
        c.call::<_, RangeResponse>(Rpc::Range, &request)
            .await
            .is_ok_and(|r| r.kvs.len() == count)
    };
    let put = async |key: Vec<u8>| {
        c.call::<_, PutResponse>(Rpc::Put, &put_request(key, vec![b'v'; VALUE_BYTES]))
            .await
            .is_ok()
    };
    match workload {
        Workload::Put => put(new_key(client, step)).await,
        Workload::GetLinearizable => {
            range(
                get(loaded_key(pick(client, step, KEYS)), Vec::new(), false),
                1,
            )
            .await
        }
        Workload::GetSerializable => {
            range(
                get(loaded_key(pick(client, step, KEYS)), Vec::new(), true),
                1,
            )
            .await
        }
        Workload::Range100 => {
            let start = pick(client, step, KEYS - RANGE_KEYS);
            let request = get(loaded_key(start), loaded_key(start + RANGE_KEYS), false);
            range(request, RANGE_KEYS).await
        }
        Workload::Mixed8020 => {
            let key = loaded_key(pick(client, step, KEYS));
            if step % 5 == 4 {
                put(key).await
            } else {
                range(get(key, Vec::new(), false), 1).await
            }
        }
        Workload::TxnCas => {
            let key = cas_key(client);
            let last = &cas_revisions[client];
            let txn = TxnRequest {
                compare: vec![Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Mod as i32,
                    key: key.clone(),
                    range_end: Vec::new(),
                    target_union: Some(compare::TargetUnion::ModRevision(
                        last.load(Ordering::Relaxed),
                    )),
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(put_request(
                        key,
                        vec![b'v'; VALUE_BYTES],
                    ))),
                }],
                failure: Vec::new(),
            };
            match c.call::<_, TxnResponse>(Rpc::Txn, &txn).await {
                Ok(r) if r.succeeded => {
                    last.store(revision_of(r.header.as_ref()), Ordering::Relaxed);
                    true
                }
                // The compare failed: this client alone writes its key, so that is a lost
                // or doubled write, which the bench reports.
                _ => false,
            }
        }
    }
}

/// Runs one workload at one client count against `connections`.
async fn point(
    workload: Workload,
    clients: usize,
    seconds: f64,
    connections: &[Connection],
    cas_revisions: &Arc<Vec<AtomicI64>>,
    pids: &[u32],
) -> Point {
    let servers_cpu_s = || pids.iter().map(|&pid| process_cpu_s(pid)).sum::<f64>();
    let client_cpu_s = || process_cpu_s(std::process::id());
    let (servers_before, client_before) = (servers_cpu_s(), client_cpu_s());
    let used: Arc<Vec<Connection>> =
        Arc::new(connections[..clients.min(connections.len())].to_vec());
    let failed = Arc::new(AtomicU64::new(0));
    let load: Load = {
        let failed = Arc::clone(&failed);
        let cas_revisions = Arc::clone(cas_revisions);
        closed_loop(clients, seconds, move |client, step| {
            let used = Arc::clone(&used);
            let failed = Arc::clone(&failed);
            let cas_revisions = Arc::clone(&cas_revisions);
            async move {
                let c = &used[client % used.len()];
                let ok = request(c, workload, client, step, &cas_revisions).await;
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                ok
            }
        })
        .await
    };
    let per_op_us = |cpu_s: f64| cpu_s * 1e6 / load.latencies.len().max(1) as f64;
    Point {
        per_s: load.per_s(),
        p50_us: load.percentile_us(0.5),
        p99_us: load.percentile_us(0.99),
        failed: failed.load(Ordering::Relaxed),
        servers_cpu_us: per_op_us(servers_cpu_s() - servers_before),
        client_cpu_us: per_op_us(client_cpu_s() - client_before),
    }
}

/// One system's run of one workload on a fresh cluster of `program`: a point per client
/// count.
fn run(
    program: &[&str],
    workload: Workload,
    client_counts: &[usize],
    seconds: f64,
    connections_max: usize,
) -> Vec<Point> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start_program(program, dir.path(), 3, &[]);
    let endpoints = cluster.endpoints();
    let pids: Vec<u32> = (0..3).filter_map(|i| cluster.pid(i)).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let points = runtime.block_on(async {
        let clients_max = client_counts.iter().copied().max().unwrap_or(1);
        let connections = ready_connections(&endpoints, connections_max.min(clients_max)).await;
        if workload.reads_loaded_keys() {
            load_keys(&connections).await;
        }
        let cas_revisions: Arc<Vec<AtomicI64>> =
            Arc::new((0..clients_max).map(|_| AtomicI64::new(0)).collect());
        if workload == Workload::TxnCas {
            for (client, revision) in cas_revisions.iter().enumerate() {
                let put = put_request(cas_key(client), b"0".to_vec());
                let put: PutResponse = connections[client % connections.len()]
                    .call(Rpc::Put, &put)
                    .await
                    .unwrap_or_else(|e| panic!("create a compare-and-set key: {e}"));
                revision.store(revision_of(put.header.as_ref()), Ordering::Relaxed);
            }
        }
        let mut points = Vec::new();
        for &clients in client_counts {
            points.push(
                point(
                    workload,
                    clients,
                    seconds,
                    &connections,
                    &cas_revisions,
                    &pids,
                )
                .await,
            );
        }
        points
    });
    drop(cluster);
    points
}

/// `etcdctl check perf`'s loads: the writes per second each asks for (it passes above 90% of
/// that), and its clients.
const CHECK_PERF_LOADS: [(&str, u32, u32); 4] = [
    ("s", 150, 50),
    ("m", 1_000, 200),
    ("l", 8_000, 500),
    ("xl", 15_000, 1_000),
];

/// Builds `checkperf_generator.go` (check perf's request generator alone) with the machine's
/// Go and Debian's golang.org/x/time; the binary's path, or why not.
fn build_generator(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/cluster/checkperf_generator.go"
    );
    let binary = dir.join("checkperf_generator");
    let out = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&binary)
        .arg(source)
        // Debian's golang-golang-x-time-dev, in GOPATH mode: no module download.
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", dir.join("go-cache"))
        .output()
        .map_err(|e| {
            format!("go did not run ({e}): apt-get install golang-go golang-golang-x-time-dev")
        })?;
    if !out.status.success() {
        return Err(format!(
            "go build failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(binary)
}

/// What check perf's own request generator reaches for `load` against a server that answers
/// at once (`BENCH check_perf_<load>_generator_ceiling`, requests/s): the most check perf can
/// measure on this machine, whatever the server. On Go 1.19 (Debian's etcdctl 3.4) a timer
/// shorter than a millisecond waits about a millisecond in a process with nothing else to
/// do, and the limiter's burst of 1 cannot make up for a late wake-up.
fn generator_ceiling(generator: &Result<std::path::PathBuf, String>, load: &str) {
    let Some(&(_, limit, clients)) = CHECK_PERF_LOADS.iter().find(|(l, ..)| *l == load) else {
        return;
    };
    let generator = match generator {
        Ok(path) => path,
        Err(why) => {
            println!("check_perf_{load}: generator ceiling not measured: {why}");
            return;
        }
    };
    let out = std::process::Command::new(generator)
        .args([limit.to_string(), clients.to_string(), "10".to_owned()])
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            match text.trim().parse::<f64>() {
                Ok(rate) => {
                    print_bench(
                        &format!("check_perf_{load}_generator_ceiling"),
                        rate,
                        "requests/s",
                    );
                    println!(
                        "check_perf_{load}: its generator alone reaches {rate:.0} of the {limit} \
                         writes/s the load asks for (it passes above {:.0})",
                        f64::from(limit) * 0.9
                    );
                }
                Err(_) => println!("check_perf_{load}: the generator printed {text:?}"),
            }
        }
        Ok(out) => println!(
            "check_perf_{load}: the generator failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => println!("check_perf_{load}: the generator did not run: {e}"),
    }
}

/// Runs `etcdctl check perf --load=<load>` against a fresh 3-member cluster of `program` and
/// prints its verdict, its measured throughput, and its own lines.
fn check_perf(program: &[&str], name: &str, load: &str) {
    eprintln!("check perf {load}: {name}");
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start_program(program, dir.path(), 3, &[]);
    let endpoints = cluster.endpoints();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            for e in &endpoints {
                wait_ready(e).await;
            }
            lead_from_first(&endpoints).await;
        });
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["check", "perf", &format!("--load={load}")])
        .output();
    drop(cluster);
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            println!("check_perf_{load}_{name}: etcdctl did not run: {e}");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // The verdict lines, without what the progress bar etcdctl draws left before them. Two of
    // check perf's failures have no "FAIL:" of their own ("Slowest request took too long:
    // 0.78s", "Stddev too high: 0.12s"): they get one here.
    const UNMARKED_FAILURES: [&str; 2] = ["Slowest request took too long", "Stddev too high"];
    let lines: Vec<String> = text
        .split(['\n', '\r'])
        .filter_map(|l| {
            let marked = [l.find("PASS"), l.find("FAIL")].into_iter().flatten();
            let unmarked = UNMARKED_FAILURES.iter().filter_map(|f| l.find(f));
            let at = marked.chain(unmarked).min()?;
            let line = l[at..].trim();
            Some(if line.starts_with("PASS") || line.starts_with("FAIL") {
                line.to_owned()
            } else {
                format!("FAIL: {line}")
            })
        })
        .collect();
    let verdict = match lines.last().map(String::as_str) {
        Some("PASS") if out.status.success() => "PASS",
        _ => "FAIL",
    };
    println!("BENCH check_perf_{load}_{name} {verdict}");
    // "PASS: Throughput is 151 writes/s", or "FAIL: Throughput too low: 3725 writes/s".
    let throughput = lines.iter().find_map(|l| {
        let rest = l
            .split("Throughput is ")
            .nth(1)
            .or_else(|| l.split("Throughput too low: ").nth(1))?;
        rest.split_whitespace().next()?.parse::<f64>().ok()
    });
    if let Some(throughput) = throughput {
        print_bench(
            &format!("check_perf_{load}_{name}_throughput"),
            throughput,
            "writes/s",
        );
    }
    for line in &lines[..lines.len().saturating_sub(1)] {
        println!("check_perf_{load}_{name}: {line}");
    }
    if lines.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        println!("check_perf_{load}_{name}: {}", err.trim());
    }
}

/// The median point of `runs` (each figure on its own).
fn median_point(runs: &[Point]) -> Point {
    Point {
        per_s: median(runs.iter().map(|p| p.per_s)),
        p50_us: median(runs.iter().map(|p| p.p50_us)),
        p99_us: median(runs.iter().map(|p| p.p99_us)),
        failed: runs.iter().map(|p| p.failed).max().unwrap_or(0),
        servers_cpu_us: median(runs.iter().map(|p| p.servers_cpu_us)),
        client_cpu_us: median(runs.iter().map(|p| p.client_cpu_us)),
    }
}

fn print_point(prefix: &str, name: &str, point: Point) {
    print_bench(&format!("{prefix}_{name}"), point.per_s, "ops/s");
    print_bench(&format!("{prefix}_{name}_p50"), point.p50_us, "us");
    print_bench(&format!("{prefix}_{name}_p99"), point.p99_us, "us");
    print_bench(
        &format!("{prefix}_{name}_servers_cpu_per_op"),
        point.servers_cpu_us,
        "us",
    );
    print_bench(
        &format!("{prefix}_{name}_client_cpu_per_op"),
        point.client_cpu_us,
        "us",
    );
    if point.failed > 0 {
        println!("{prefix}_{name}: {} requests failed", point.failed);
    }
}

/// Each member's share of the machine's cores, at least one: three members share them.
fn member_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 3).max(1))
}

/// The `env` prefix that gives a member `threads` threads for its runtime, whichever system
/// it is: `GOMAXPROCS` for etcd (Go), `STRATA_WORKER_THREADS` for Strata (Tokio's workers).
fn member_env(threads: usize) -> Vec<String> {
    vec![
        "env".to_owned(),
        format!("GOMAXPROCS={threads}"),
        format!("STRATA_WORKER_THREADS={threads}"),
    ]
}

fn main() {
    let args = Args::from_env();
    if args.has("--large") {
        large::large(&args);
        return;
    }
    let seconds = args.value_or("--seconds", 5.0f64);
    let rounds = args.value_or("--rounds", 1usize).max(1);
    let connections_max = args.value_or("--connections", 100usize).max(1);
    let client_counts: Vec<usize> = args
        .value::<String>("--clients")
        .unwrap_or_else(|| "1,50,500,1000".to_owned())
        .split(',')
        .map(|c| c.trim().parse().expect("--clients: a list of numbers"))
        .collect();
    assert!(
        client_counts.iter().all(|&c| c > 0),
        "--clients: counts must be positive"
    );
    let workloads: Vec<Workload> = match args.value::<String>("--workloads") {
        None => WORKLOADS.to_vec(),
        Some(none) if none == "none" => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|name| {
                *WORKLOADS
                    .iter()
                    .find(|w| w.name() == name.trim())
                    .unwrap_or_else(|| panic!("--workloads: unknown workload {name}"))
            })
            .collect(),
    };
    let baseline = Baseline::from_args(&args);
    let compare = baseline.is_some();
    let etcd = baseline.as_ref().is_some_and(|b| b.name == "etcd");
    let their_name = baseline.as_ref().map_or("", |b| b.name);
    let threads = args
        .value("--member-threads")
        .unwrap_or_else(member_threads);
    assert!(threads > 0, "--member-threads: at least 1");
    println!(
        "each member runs with {threads} runtime thread(s): GOMAXPROCS={threads} and \
         STRATA_WORKER_THREADS={threads}, for both systems"
    );
    let env = member_env(threads);
    let with_env = |program: Vec<&str>| -> Vec<String> {
        env.iter()
            .cloned()
            .chain(program.into_iter().map(str::to_owned))
            .collect()
    };
    let their_program = with_env(baseline.as_ref().map_or_else(Vec::new, Baseline::command));
    let their_program: Vec<&str> = their_program.iter().map(String::as_str).collect();
    let their_prefix = format!("{their_name}_cluster");
    let strata = with_env(vec![env!("CARGO_BIN_EXE_strata"), "server"]);
    let strata: Vec<&str> = strata.iter().map(String::as_str).collect();

    // ours[w][c] and theirs[w][c]: one point per round.
    let mut ours = vec![vec![Vec::new(); client_counts.len()]; workloads.len()];
    let mut theirs = vec![vec![Vec::new(); client_counts.len()]; workloads.len()];
    let systems = if compare { 2 } else { 1 };
    let mut steps = Steps::new(rounds * workloads.len() * systems);
    for round in 0..rounds {
        for (w, &workload) in workloads.iter().enumerate() {
            steps.begin(&format!("round {round}, {}: strata", workload.name()));
            let points = run(&strata, workload, &client_counts, seconds, connections_max);
            for (c, p) in points.into_iter().enumerate() {
                ours[w][c].push(p);
            }
            if compare {
                steps.begin(&format!("round {round}, {}: {their_name}", workload.name()));
                let points = run(
                    &their_program,
                    workload,
                    &client_counts,
                    seconds,
                    connections_max,
                );
                for (c, p) in points.into_iter().enumerate() {
                    theirs[w][c].push(p);
                }
            }
        }
    }
    steps.finish();

    let mut table = Vec::new();
    let mut missed = Vec::new();
    for (w, &workload) in workloads.iter().enumerate() {
        for (c, &clients) in client_counts.iter().enumerate() {
            let name = format!("{}_{clients}c", workload.name());
            let our = median_point(&ours[w][c]);
            print_point("cluster", &name, our);
            let mut row = (name.clone(), our, None, None);
            if compare {
                let their = median_point(&theirs[w][c]);
                print_point(&their_prefix, &name, their);
                let ratio = our.per_s / their.per_s.max(f64::MIN_POSITIVE);
                print_ratio(&format!("cluster_{name}_vs_{their_name}"), ratio);
                print_ratio(
                    &format!("cluster_{name}_servers_cpu_per_op_vs_{their_name}"),
                    their.servers_cpu_us / our.servers_cpu_us.max(f64::MIN_POSITIVE),
                );
                let goal = if clients == 500
                    && matches!(workload, Workload::Put | Workload::GetLinearizable)
                {
                    2.0
                } else {
                    1.0
                };
                if ratio < goal {
                    missed.push(format!("{name}: {ratio:.2} (goal {goal})"));
                }
                row.2 = Some(their);
                row.3 = Some(ratio);
            }
            table.push(row);
        }
    }

    if !table.is_empty() {
        println!();
        println!(
            "{:<24} {:>10} {:>9} {:>9} {:>9}   {:>10} {:>9} {:>9} {:>9}   {:>6}",
            "workload",
            "strata/s",
            "p50 ms",
            "p99 ms",
            "cpu us",
            their_name,
            "p50 ms",
            "p99 ms",
            "cpu us",
            "ratio"
        );
        let columns = |p: &Point| {
            format!(
                "{:>10.0} {:>9.2} {:>9.2} {:>9.0}",
                p.per_s,
                p.p50_us / 1e3,
                p.p99_us / 1e3,
                p.servers_cpu_us
            )
        };
        for (name, our, their, ratio) in &table {
            let theirs = their.as_ref().map_or_else(
                || format!("{:>10} {:>9} {:>9} {:>9}", "-", "-", "-", "-"),
                columns,
            );
            println!(
                "{name:<24} {}   {theirs}   {:>6}",
                columns(our),
                ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
            );
        }
    }
    let loads = args
        .value::<String>("--check-perf")
        .unwrap_or_else(|| "s,m,l,xl".to_owned());
    let generator_dir = tempfile::tempdir().expect("tempdir");
    let mut generator = None;
    for load in loads.split(',').map(str::trim).filter(|l| *l != "none") {
        let generator = generator.get_or_insert_with(|| build_generator(generator_dir.path()));
        generator_ceiling(generator, load);
        check_perf(&strata, "strata", load);
        if compare {
            check_perf(&their_program, their_name, load);
        }
    }

    if etcd && !table.is_empty() {
        if missed.is_empty() {
            println!(
                "goals: every ratio at least 1, put and linearizable get at 500 clients at least 2: met"
            );
        } else {
            println!("goals missed: {}", missed.join("; "));
        }
    }
}
