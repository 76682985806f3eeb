//! `cargo xtask bench lsm`: Strata's LSM against RocksDB's own `db_bench` (Debian's
//! `rocksdb-tools`, which `cargo xtask bench lsm` installs if missing) and against fjall
//! (`bench/fjall`, which it builds), same disk, same settings: 16-byte keys, 100-byte values,
//! 1M keys (`-- --keys N` for N, `-- --large` for 10M; `-- --quick`: 200k and one round), WAL
//! on without per-write sync, a 32 MiB block cache, compression off, 64 MiB memtables, 10-bit
//! bloom filters.
//! Everything else is each engine's default (compaction and level-0 triggers included).
//!
//! Workloads as db_bench defines them: `fillseq`, `fillrandom`, `overwrite`, `readrandom`
//! (random keys over the key space, about 63% present after fillrandom), `seekrandom` (seek,
//! then 10 nexts), `readwhilewriting` (one reader, one writer; reader ops/s), and `fillsync`
//! (16 writers, sync every write). Strata and fjall run the same code
//! (`benches/common/workloads.rs`).
//!
//! Every engine runs in a process of its own, so that the kernel's accounting of each process
//! gives the bytes it wrote to disk (`ru_oublock`), and its memory is sampled from `/proc/PID`
//! every 20 ms:
//!
//! - `peak_anon`: the peak of its anonymous memory (`RssAnon`: heap and stacks, so memtables,
//!   block cache, indexes), which is what the engine itself holds.
//! - `peak_rss`: the peak of its resident memory (`VmRSS`) less the resident pages of mapped
//!   files inside the store's directory (from `smaps`). Those are the page cache: the kernel's,
//!   shared, clean and reclaimable at any time. RocksDB and fjall read their tables with
//!   `pread`, through the same page cache, and their resident memory never shows it; Strata
//!   maps its tables, and the kernel counts the resident pages of a mapping in the process's
//!   RSS. Leaving them out measures every engine the same way.
//! - `peak_rss_kernel`: the kernel's own peak (`ru_maxrss`), mapped table pages included,
//!   printed for reference (no ratio).
//!
//! Write amplification is measured by a separate run per engine of `fillrandom` then
//! `overwrite` (2N writes), a wait for the engine's background flushes and compactions to
//! finish (db_bench's `waitforcompaction`), and a close: disk bytes written over the key and
//! value bytes written. Without the wait the figure depends on what each engine does with
//! work under way at close (RocksDB abandons a running compaction, after writing most of its
//! output, and redoes it at the next open; Strata finishes it), which favours whichever
//! engine was interrupted.
//!
//! `--runs R` (default 3) repeats the whole comparison, the engines taking turns within each
//! round; every figure printed is the median over the rounds. Prints `BENCH` lines for every
//! engine and `RATIO lsm_<workload>_vs_rocksdb` and `RATIO lsm_<workload>_vs_fjall` (above 1:
//! Strata ahead), and for peak memory and write amplification ratios where above 1 means
//! Strata uses less.

#![allow(unsafe_code)] // `wait4`, for a child's resource usage; see `wait_measured`.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bench_support::{Args, median, print_bench, print_ratio};
use strata_lsm::{Db, Direction, Options, WriteOptions};

#[path = "common/workloads.rs"]
mod workloads;

use workloads::{FILLSYNC_PER_WRITER, KEY_BYTES, VALUE_BYTES};

const CACHE_BYTES: usize = 32 * 1024 * 1024;
const WORKLOADS: [&str; 7] = [
    "fillseq",
    "fillrandom",
    "overwrite",
    "readrandom",
    "seekrandom",
    "readwhilewriting",
    "fillsync",
];

struct Strata(Db);

fn open_strata(dir: &Path) -> Strata {
    let options = Options {
        block_cache_bytes: CACHE_BYTES,
        ..Options::default()
    };
    Strata(Db::open(dir, options).expect("open strata"))
}

impl workloads::Engine for Strata {
    fn put(&self, key: &[u8], value: &[u8]) {
        self.0
            .put(key, value, WriteOptions::default())
            .expect("put");
    }

    fn put_sync(&self, key: &[u8], value: &[u8]) {
        self.0
            .put(key, value, WriteOptions { sync: true })
            .expect("put");
    }

    fn get(&self, key: &[u8]) -> bool {
        self.0.get(key).expect("get").is_some()
    }

    fn seek_scan(&self, key: &[u8], n: usize) -> usize {
        let mut seen = 0;
        self.0
            .scan(
                Bound::Included(key),
                Bound::Unbounded,
                Direction::Forward,
                |k, v| {
                    std::hint::black_box((k, v));
                    seen += 1;
                    seen < n
                },
            )
            .expect("scan");
        seen
    }

    fn settle(&self) {
        self.0
            .wait_for_background()
            .expect("background flushes and compactions");
    }
}

/// What the kernel counted for a finished child.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    /// Resident memory without the store's mapped files (see the module docs), sampled.
    peak_rss_bytes: u64,
    /// `ru_maxrss`: every resident page, mapped files included.
    peak_rss_kernel_bytes: u64,
    /// The peak of anonymous memory (heap and stacks, without mapped files), sampled.
    peak_anon_bytes: u64,
    written_bytes: u64,
}

/// Runs `command` (an engine working in `store`) to completion, returning its standard output
/// and resource usage.
#[allow(clippy::zombie_processes)] // `wait_measured` reaps it.
fn run_measured(command: &mut Command, store: &Path) -> (String, Usage) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    // The kernel keeps only the peak of all resident memory, mapped files included; the
    // anonymous part and the part outside the store's mapped files are sampled from /proc
    // while the child runs.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, pid, store) = (Arc::clone(&done), child.id(), store.to_path_buf());
        std::thread::spawn(move || {
            let (mut anon, mut rss) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                anon = anon.max(anon_bytes(pid).unwrap_or(0));
                rss = rss.max(rss_outside(pid, &store).unwrap_or(0));
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            (anon, rss)
        })
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut out)
        .expect("read the child's output");
    done.store(true, Ordering::Relaxed);
    let (peak_anon_bytes, peak_rss_bytes) = sampler.join().expect("sampler thread");
    let usage = wait_measured(child.id());
    (
        out,
        Usage {
            peak_anon_bytes,
            peak_rss_bytes,
            ..usage
        },
    )
}

/// The resident bytes of process `pid` (`VmRSS`) less those of its mapped files inside
/// `store` (summed from `smaps`). The total comes from the kernel's counter rather than from
/// summing `smaps`, which is not read atomically: a region freed and another allocated during
/// the read could be counted twice.
fn rss_outside(pid: u32, store: &Path) -> Option<u64> {
    let total = status_bytes(pid, "VmRSS:")?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let store = store.to_str()?;
    let (mut store_kib, mut in_store) = (0u64, false);
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first == "Rss:" {
            if in_store {
                store_kib += words.next()?.parse::<u64>().ok()?;
            }
        } else if !first.ends_with(':') {
            // A mapping's header: `start-end perms offset dev inode [path]`.
            in_store = words.nth(4).is_some_and(|path| path.starts_with(store));
        }
    }
    Some(total.saturating_sub(store_kib * 1024))
}

/// A `kB` field of process `pid`'s `/proc/PID/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `RssAnon` of process `pid`.
fn anon_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "RssAnon:")
}

/// Reaps the child `pid` with `wait4`, which (unlike `Child::wait`) returns its `rusage`.
fn wait_measured(pid: u32) -> Usage {
    let pid = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    let mut status = 0;
    // SAFETY: `rusage` is plain old data, for which all zero bytes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (std never waits for it: the `Child` is
    // dropped unwaited); `status` and `usage` are valid for writes for the call.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "benchmark child {pid} failed (status {status})"
    );
    Usage {
        // Linux reports kilobytes, and output blocks of 512 bytes.
        peak_rss_bytes: 0,
        peak_rss_kernel_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
        peak_anon_bytes: 0,
        written_bytes: u64::try_from(usage.ru_oublock).unwrap_or(0) * 512,
    }
}

/// Parses the `RESULT <workload> <ops/s>` lines of a child.
fn parse_results(output: &str) -> BTreeMap<String, f64> {
    output
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("RESULT ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
        })
        .collect()
}

/// One engine's figures from one round.
#[derive(Debug, Default)]
struct Round {
    ops: BTreeMap<String, f64>,
    peak_rss_bytes: u64,
    peak_rss_kernel_bytes: u64,
    peak_anon_bytes: u64,
    /// Disk bytes written per key and value byte, in the separate writes run.
    write_amplification: f64,
}

/// Runs an embedded engine's child binary (this one for Strata, fjall's) in both modes.
fn embedded(binary: &Path, dir: &Path, n: u64) -> Round {
    let child = |mode: &str| {
        run_measured(
            Command::new(binary).args([
                "--child",
                mode,
                "--dir",
                &dir.display().to_string(),
                "--keys",
                &n.to_string(),
            ]),
            dir,
        )
    };
    let (out, main) = child("main");
    let (_, writes) = child("writes");
    Round {
        ops: parse_results(&out),
        peak_rss_bytes: main.peak_rss_bytes,
        peak_rss_kernel_bytes: main.peak_rss_kernel_bytes,
        peak_anon_bytes: main.peak_anon_bytes,
        write_amplification: writes.written_bytes as f64 / user_bytes(2 * n),
    }
}

fn user_bytes(writes: u64) -> f64 {
    (writes * (KEY_BYTES + VALUE_BYTES) as u64) as f64
}

/// Parses `name : ... X ops/sec` from db_bench's output.
fn parse_db_bench(output: &str, name: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.trim_start().strip_prefix(':')?;
        let ops_at = rest.find(" ops/sec")?;
        rest[..ops_at].split_whitespace().last()?.parse().ok()
    })
}

fn db_bench(dir: &Path, benchmarks: &str, num: u64, extra: &[&str]) -> (String, Usage) {
    let _ = std::fs::remove_dir_all(dir);
    let mut command = Command::new("db_bench");
    command
        .arg(format!("--benchmarks={benchmarks}"))
        .arg(format!("--num={num}"))
        .arg(format!("--db={}", dir.display()))
        .args([
            "--key_size=16",
            "--value_size=100",
            "--compression_type=none",
            "--cache_size=33554432",
            "--write_buffer_size=67108864",
            "--sync=0",
            "--seek_nexts=10",
            "--statistics=0",
            // Strata's tables carry a 10-bits-per-key bloom filter; give RocksDB the same.
            "--bloom_bits=10",
        ])
        .args(extra);
    let result = run_measured(&mut command, dir);
    let _ = std::fs::remove_dir_all(dir);
    result
}

fn rocksdb(dir: &Path, n: u64) -> Round {
    let mut round = Round::default();
    let mut peak = |usage: Usage| {
        round.peak_rss_bytes = round.peak_rss_bytes.max(usage.peak_rss_bytes);
        round.peak_rss_kernel_bytes = round.peak_rss_kernel_bytes.max(usage.peak_rss_kernel_bytes);
        round.peak_anon_bytes = round.peak_anon_bytes.max(usage.peak_anon_bytes);
    };
    let (seq, usage) = db_bench(dir, "fillseq", n, &[]);
    peak(usage);
    let main_names = &WORKLOADS[1..6];
    let (main, usage) = db_bench(dir, &main_names.join(","), n, &[]);
    peak(usage);
    // db_bench's fillsync draws keys from `num / 1000` and does `--writes` writes per thread
    // (without `--writes`, `num` of them: 1000 times more than the key count suggests).
    let (sync, usage) = db_bench(
        dir,
        "fillsync",
        FILLSYNC_PER_WRITER * 1000,
        &["--threads=16", &format!("--writes={FILLSYNC_PER_WRITER}")],
    );
    peak(usage);
    for (name, output) in [("fillseq", &seq), ("fillsync", &sync)]
        .into_iter()
        .chain(main_names.iter().map(|name| (*name, &main)))
    {
        if let Some(ops) = parse_db_bench(output, name) {
            round.ops.insert(name.to_owned(), ops);
        }
    }
    // The same 2N random writes as the embedded engines' writes run, a wait for the
    // background work (db_bench checks every 10 s), then a close. (`--writes` random writes
    // over `--num` keys.)
    let (_, writes) = db_bench(
        dir,
        "fillrandom,waitforcompaction",
        n,
        &[&format!("--writes={}", 2 * n)],
    );
    round.write_amplification = writes.written_bytes as f64 / user_bytes(2 * n);
    round
}

/// The medians of one engine's rounds.
struct Summary {
    ops: BTreeMap<&'static str, f64>,
    peak_rss_mib: f64,
    peak_rss_kernel_mib: f64,
    peak_anon_mib: f64,
    write_amplification: f64,
}

fn summarize(rounds: &[Round]) -> Summary {
    Summary {
        ops: WORKLOADS
            .iter()
            .map(|w| {
                let values = rounds.iter().filter_map(|r| r.ops.get(*w).copied());
                (*w, median(values))
            })
            .collect(),
        peak_rss_mib: median(rounds.iter().map(|r| mib(r.peak_rss_bytes))),
        peak_rss_kernel_mib: median(rounds.iter().map(|r| mib(r.peak_rss_kernel_bytes))),
        peak_anon_mib: median(rounds.iter().map(|r| mib(r.peak_anon_bytes))),
        write_amplification: median(rounds.iter().map(|r| r.write_amplification)),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn main() {
    if workloads::child(&open_strata) {
        return;
    }
    let args = Args::from_env();
    let quick = args.has("--quick");
    // `--keys N` sets the key count outright; `--large` is `--keys 10000000`.
    let keys_default: u64 = if quick {
        200_000
    } else if args.has("--large") {
        10_000_000
    } else {
        1_000_000
    };
    let n: u64 = args.value_or("--keys", keys_default);
    let runs: usize = args.value_or("--runs", if quick { 1 } else { 3 });
    let fjall = std::env::var_os("STRATA_BENCH_FJALL").map(PathBuf::from);
    if fjall.is_none() {
        eprintln!(
            "STRATA_BENCH_FJALL is not set: run `cargo xtask bench lsm` to compare with fjall too"
        );
    }
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-lsm");
    std::fs::create_dir_all(&root).expect("bench dir");
    let this = std::env::current_exe().expect("this benchmark's path");
    let (mut ours, mut rocks, mut fj) = (Vec::new(), Vec::new(), Vec::new());
    let engines = if fjall.is_some() { 3 } else { 2 };
    let mut steps = bench_support::Steps::new(runs * engines);
    for round in 0..runs {
        steps.begin(&format!("round {} of {runs}, {n} keys: Strata", round + 1));
        ours.push(embedded(&this, &root.join("strata"), n));
        steps.begin(&format!("round {} of {runs}, {n} keys: RocksDB", round + 1));
        rocks.push(rocksdb(&root.join("rocksdb"), n));
        if let Some(binary) = &fjall {
            steps.begin(&format!("round {} of {runs}, {n} keys: fjall", round + 1));
            fj.push(embedded(binary, &root.join("fjall"), n));
        }
    }
    steps.finish();
    let _ = std::fs::remove_dir_all(&root);
    let ours = summarize(&ours);
    let baselines = [("rocksdb", summarize(&rocks)), ("fjall", summarize(&fj))];
    let baselines: Vec<&(&str, Summary)> = baselines
        .iter()
        .filter(|(_, s)| s.ops.values().any(|v| *v > 0.0))
        .collect();
    println!("# {n} keys, median of {runs} round(s)");
    for workload in WORKLOADS {
        let s = ours.ops[workload];
        print_bench(&format!("lsm_{workload}"), s, "ops/s");
        for (name, theirs) in &baselines {
            let b = theirs.ops[workload];
            print_bench(&format!("{name}_{workload}"), b, "ops/s");
            if b > 0.0 {
                print_ratio(&format!("lsm_{workload}_vs_{name}"), s / b);
            }
        }
    }
    // Resources: for each, Strata's figure, each baseline's, and a ratio above 1 when Strata
    // uses less.
    type Figure = fn(&Summary) -> f64;
    let resources: [(&str, &str, Figure); 3] = [
        ("peak_rss", "MiB", |s| s.peak_rss_mib),
        ("peak_anon", "MiB", |s| s.peak_anon_mib),
        ("write_amplification", "x", |s| s.write_amplification),
    ];
    // The kernel's peak, mapped table pages included: for reference, without a ratio.
    print_bench("lsm_peak_rss_kernel", ours.peak_rss_kernel_mib, "MiB");
    for (baseline, theirs) in &baselines {
        print_bench(
            &format!("{baseline}_peak_rss_kernel"),
            theirs.peak_rss_kernel_mib,
            "MiB",
        );
    }
    for (name, unit, figure) in resources {
        let s = figure(&ours);
        print_bench(&format!("lsm_{name}"), s, unit);
        for (baseline, theirs) in &baselines {
            let b = figure(theirs);
            print_bench(&format!("{baseline}_{name}"), b, unit);
            if s > 0.0 {
                print_ratio(&format!("lsm_{name}_vs_{baseline}"), b / s);
            }
        }
    }
}
