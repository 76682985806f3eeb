//! `--large`: past etcd's ceiling (its largest allowed quota is 8 GiB). Strata alone: a fresh
//! 3-member cluster (no quota, a snapshot every 5,000 entries) is filled with `--large-gib`
//! GiB (default 10) of 64 KiB values that do not compress, with put throughput measured
//! empty and full (the `put` workload at `--large-clients`, default 50), then a fourth member
//! is added as a learner and timed until it has caught up (it gets the store by snapshot),
//! against the disk's sequential write rate measured in the same run.
//!
//! Right after the fill the members are still compacting what it wrote: put throughput is
//! measured then (`BENCH cluster_put_<N>gib_compacting`) and again once every member's flush
//! and compaction counters (`/metrics`) have stood still for 6 s (`BENCH cluster_settle_s`:
//! the wait), which is the figure the ratio takes.
//!
//! Prints `BENCH cluster_put_empty`, `BENCH cluster_put_<N>gib` (ops/s),
//! `RATIO cluster_put_<N>gib_vs_empty` (goal at least 0.8), `BENCH cluster_fill_mb_per_s`,
//! `BENCH cluster_catchup_<N>gib_s`, `BENCH cluster_catchup_mb_per_s`, `BENCH disk_write_mb_per_s`
//! and `RATIO cluster_catchup_<N>gib_vs_disk` (goal at least 0.5). Needs about 5.5 times the
//! fill in free disk (three members, the learner, logs and compactions); checked first.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench_support::{Args, print_bench, print_ratio};
use etcd_client::{Client, MemberAddOptions};

use crate::cluster::{Cluster, MemberSpec};
use crate::grpc::{Connection, Rpc};
use crate::{PutResponse, Workload, point, put_request, ready_connections};

/// The fill's value size: large, so the fill is quick, and random, so it does not compress.
const FILL_VALUE_BYTES: usize = 64 * 1024;

/// Concurrent fillers.
const FILLERS: usize = 32;

/// Free disk needed per byte of fill.
const DISK_PER_FILL_BYTE: f64 = 5.5;

/// How often the fill and the catch-up are looked at.
const POLL: Duration = Duration::from_millis(500);

/// How long the members' LSM counters must stay still for the store to be at rest.
const SETTLE_QUIET: Duration = Duration::from_secs(6);

/// How often they are read.
const SETTLE_POLL: Duration = Duration::from_secs(1);

/// The longest wait for the store to come to rest.
const SETTLE_MAX: Duration = Duration::from_secs(900);

/// Runs the large phase with the flags in `args`.
pub fn large(args: &Args) {
    let gib: f64 = args.value_or("--large-gib", 10.0);
    let clients: usize = args.value_or("--large-clients", 50);
    let seconds: f64 = args.value_or("--seconds", 5.0);
    let fill_bytes = (gib * (1u64 << 30) as f64) as u64;
    let name = if gib.fract() == 0.0 {
        format!("{gib:.0}gib")
    } else {
        format!("{gib}gib").replace('.', "_")
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let free = strata_fs::available_bytes(dir.path()).expect("statvfs");
    let needed = (fill_bytes as f64 * DISK_PER_FILL_BYTE) as u64;
    assert!(
        free >= needed,
        "--large with {gib} GiB needs about {} GiB free under {}, and there are {}",
        needed >> 30,
        dir.path().display(),
        free >> 30
    );
    let mut cluster = Cluster::start(
        dir.path(),
        3,
        &["--quota-backend-bytes", "-1", "--snapshot-count", "5000"],
    );
    let endpoints = cluster.endpoints();
    let pids: Vec<u32> = (0..3).filter_map(|i| cluster.pid(i)).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let connections = rt.block_on(ready_connections(&endpoints, clients));
    let no_cas = Arc::new(Vec::<AtomicI64>::new());
    eprintln!("large: put, empty");
    let empty = rt.block_on(point(
        Workload::Put,
        clients,
        seconds,
        &connections,
        &no_cas,
        &pids,
    ));
    print_bench("cluster_put_empty", empty.per_s, "ops/s");

    eprintln!("large: filling to {gib} GiB");
    let started = Instant::now();
    let filled = rt.block_on(fill(&connections, &endpoints[0], fill_bytes));
    let fill_s = started.elapsed().as_secs_f64();
    print_bench(
        "cluster_fill_mb_per_s",
        filled as f64 / 1e6 / fill_s,
        "MB/s",
    );
    print_bench("cluster_fill_db_bytes", filled as f64, "bytes");

    // Right after the fill the members are still compacting what it wrote: measured then
    // too, but the ratio is taken once the store is at rest at its size.
    eprintln!("large: put, full, while the fill's compactions run");
    let busy = rt.block_on(point(
        Workload::Put,
        clients,
        seconds,
        &connections,
        &no_cas,
        &pids,
    ));
    print_bench(
        &format!("cluster_put_{name}_compacting"),
        busy.per_s,
        "ops/s",
    );
    eprintln!("large: waiting for the members' compactions to finish");
    let settle_s = settle(&endpoints);
    print_bench("cluster_settle_s", settle_s, "s");
    eprintln!("large: put, full");
    let full = rt.block_on(point(
        Workload::Put,
        clients,
        seconds,
        &connections,
        &no_cas,
        &pids,
    ));
    print_bench(&format!("cluster_put_{name}"), full.per_s, "ops/s");
    print_ratio(
        &format!("cluster_put_{name}_vs_empty"),
        full.per_s / empty.per_s.max(f64::MIN_POSITIVE),
    );

    eprintln!("large: the disk's sequential write rate");
    let probe = dir.path().join("disk-probe");
    let disk = bench_support::write_files(&probe, 16, 64 << 20);
    let _ = std::fs::remove_dir_all(&probe);
    print_bench("disk_write_mb_per_s", disk, "MB/s");

    eprintln!("large: a new member catches up");
    let (catchup_s, size) = rt.block_on(catch_up(&mut cluster, dir.path(), &endpoints));
    let rate = size as f64 / 1e6 / catchup_s;
    print_bench(&format!("cluster_catchup_{name}_s"), catchup_s, "s");
    print_bench("cluster_catchup_mb_per_s", rate, "MB/s");
    print_ratio(&format!("cluster_catchup_{name}_vs_disk"), rate / disk);
    let put_ratio = full.per_s / empty.per_s.max(f64::MIN_POSITIVE);
    let catchup_ratio = rate / disk;
    println!(
        "large goals (put at {gib} GiB against empty at least 0.8: {put_ratio:.2}; catch-up \
         against the disk at least 0.5: {catchup_ratio:.2}): {}",
        if put_ratio >= 0.8 && catchup_ratio >= 0.5 {
            "met"
        } else {
            "missed"
        }
    );
}

/// Puts random 64 KiB values under `fill/` until the first member reports a store of
/// `bytes`; returns the store's size then.
async fn fill(connections: &[Connection], first: &str, bytes: u64) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..FILLERS)
        .map(|f| {
            let c = connections[f % connections.len()].clone();
            let done = Arc::clone(&done);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut value = vec![0u8; FILL_VALUE_BYTES];
                while done.load(Ordering::Relaxed) == 0 {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    bench_support::fill(&mut value, n + 1);
                    // A refused put (a leader change) is put again under another key.
                    let put = put_request(format!("fill/{n:012}").into_bytes(), value.clone());
                    let _ = c.call::<_, PutResponse>(Rpc::Put, &put).await;
                }
            })
        })
        .collect();
    let mut status = Client::connect([first], None).await.expect("connect");
    let mut last_report = Instant::now();
    let size = loop {
        let size = status
            .status()
            .await
            .map_or(0, |s| u64::try_from(s.db_size()).unwrap_or(0));
        if size >= bytes {
            break size;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("large: {} of {} MiB", size >> 20, bytes >> 20);
            last_report = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    };
    done.store(1, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    size
}

/// The LSM's flush and compaction byte counters of the member at `endpoint`
/// (`strata_lsm_*_bytes_total` of `/metrics`); `None` if it does not answer.
fn lsm_written(endpoint: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(SETTLE_POLL)).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let sum = answer
        .lines()
        .filter(|l| {
            l.starts_with("strata_lsm_flush_bytes_total ")
                || l.starts_with("strata_lsm_compaction_written_bytes_total ")
        })
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Some(sum)
}

/// Waits until no member has flushed or compacted anything for [`SETTLE_QUIET`] (bounded by
/// [`SETTLE_MAX`]); returns the seconds waited.
fn settle(endpoints: &[String]) -> f64 {
    let started = Instant::now();
    let mut last = None;
    let mut quiet_since = Instant::now();
    while started.elapsed() < SETTLE_MAX {
        let now: Option<Vec<u64>> = endpoints.iter().map(|e| lsm_written(e)).collect();
        if now.is_none() || now != last {
            quiet_since = Instant::now();
            last = now;
        } else if quiet_since.elapsed() >= SETTLE_QUIET {
            return started.elapsed().as_secs_f64();
        }
        std::thread::sleep(SETTLE_POLL);
    }
    eprintln!("large: still compacting after {SETTLE_MAX:?}; measuring anyway");
    started.elapsed().as_secs_f64()
}

/// Adds a fourth member as a learner and waits (bounded) until it has applied what the
/// leader had committed when it was added; returns the seconds that took and the leader's
/// store size.
async fn catch_up(
    cluster: &mut Cluster,
    dir: &std::path::Path,
    endpoints: &[String],
) -> (f64, u64) {
    let mut leader = Client::connect([endpoints[0].as_str()], None)
        .await
        .expect("connect");
    let spec = MemberSpec::local(dir, "m4");
    leader
        .member_add(
            [spec.peer_url()],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .expect("member add");
    let status = leader.status().await.expect("status");
    let target = status.raft_index();
    let size = u64::try_from(status.db_size()).unwrap_or(0);
    let started = Instant::now();
    cluster.join(spec.clone());
    // A generous bound: 20 MB/s at worst.
    let deadline = started + Duration::from_secs(60 + size / 20_000_000);
    loop {
        if let Ok(Ok(mut c)) =
            tokio::time::timeout(POLL, Client::connect([spec.client_url()], None)).await
            && let Ok(Ok(s)) = tokio::time::timeout(POLL, c.status()).await
            && s.raft_applied_index() >= target
        {
            return (started.elapsed().as_secs_f64(), size);
        }
        assert!(
            Instant::now() < deadline,
            "the new member did not catch up with {} MiB in {:?}",
            size >> 20,
            deadline - started
        );
        tokio::time::sleep(POLL).await;
    }
}
