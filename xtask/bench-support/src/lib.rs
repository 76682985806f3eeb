//! What every `cargo xtask bench` harness shares, so the bench binaries print and compute
//! their figures the same way.
//!
//! A harness prints one `BENCH <name> <value> <unit>` line per figure ([`print_bench`]) and one
//! `RATIO <name> <value>` line per comparison against a baseline measured in the same run
//! ([`print_ratio`]; above 1 means Strata is ahead). Figures are medians of several runs
//! ([`median`], [`bench()`]); runs of two competitors alternate ([`alternate`]) so that drift in a
//! shared machine's disk or CPU hits both alike. Flags come from [`Args`]. A long harness shows
//! where it is with [`Steps`] (a bar with an ETA on a terminal, a line per step elsewhere).
//!
//! This crate is not a layer of Strata and is never published: only bench targets depend on it
//! (as a dev-dependency), which the tidy check allows for unpublished workspace crates.
//!
//! # Examples
//!
//! ```
//! use bench_support::{Args, median, print_ratio};
//!
//! let args = Args::new(["bench", "--runs", "5", "--quick"]);
//! assert_eq!(args.value_or("--runs", 3_usize), 5);
//! assert!(args.has("--quick"));
//! assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
//! print_ratio("example_vs_baseline", 2.0 / 1.0); // RATIO example_vs_baseline 2.00
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The median of the finite values in `values`: the middle one, or the mean of the two middle
/// ones for an even count. `0.0` when there are none, so a harness whose runs all failed prints
/// an obviously wrong figure instead of panicking after minutes of work.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The `p`-th quantile (`0.0..=1.0`, nearest rank) of `sorted` latencies, in microseconds;
/// `0.0` when there are none.
pub fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p.clamp(0.0, 1.0)).round() as usize;
    sorted[at].as_secs_f64() * 1e6
}

/// `value` with as many decimals as a figure of its size needs: none from 1,000 up, one from 10
/// up, two below (a throughput of 241008 ops/s, a rate of 21.5 MB/s, a time of 0.06 s).
fn format_figure(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1_000.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// Prints `BENCH <name> <value> <unit>`.
pub fn print_bench(name: &str, value: f64, unit: &str) {
    println!("BENCH {name} {} {unit}", format_figure(value));
}

/// Prints `RATIO <name> <value>` with two decimals. Above 1 must mean Strata is ahead: pass
/// `strata / baseline` for a rate, `baseline / strata` for a time or a size.
pub fn print_ratio(name: &str, value: f64) {
    println!("RATIO {name} {value:.2}");
}

/// Runs `run` `runs` times, prints the median of what it returns as a `BENCH` line, and returns
/// that median.
pub fn bench(name: &str, unit: &str, runs: usize, mut run: impl FnMut() -> f64) -> f64 {
    let value = median((0..runs).map(|_| run()));
    print_bench(name, value, unit);
    value
}

/// Runs `a` and `b` alternately, `runs` times each, and returns what each returned, in order:
/// drift in the machine's disk or CPU over the run hits both alike.
pub fn alternate(
    runs: usize,
    mut a: impl FnMut() -> f64,
    mut b: impl FnMut() -> f64,
) -> (Vec<f64>, Vec<f64>) {
    let mut xs = Vec::with_capacity(runs);
    let mut ys = Vec::with_capacity(runs);
    for _ in 0..runs {
        xs.push(a());
        ys.push(b());
    }
    (xs, ys)
}

/// Measures `a` against `b` in pairs of runs in both orders (`a` then `b`, then `b` then `a`),
/// `pairs` times, and returns every run of `a`, every run of `b`, and each pair's ratio of `a`
/// to `b` as the geometric mean of its two runs' ratios. On a disk whose second large write in a
/// row is slower than the first (a host cache filling), whichever goes second is handicapped;
/// the two orders cancel that out, where one order per run would hand the median to chance.
pub fn ratio_in_both_orders(
    pairs: usize,
    mut a: impl FnMut() -> f64,
    mut b: impl FnMut() -> f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut xs, mut ys, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..pairs {
        let (x1, y1) = (a(), b());
        let y2 = b();
        let x2 = a();
        eprintln!("pair {pair}: {x1:.0} then {y1:.0}; {y2:.0} then {x2:.0}");
        ratios.push(((x1 / y1) * (x2 / y2)).sqrt());
        xs.extend([x1, x2]);
        ys.extend([y1, y2]);
    }
    (xs, ys, ratios)
}

/// `root/name`, emptied: removed if it was there, then created.
///
/// # Panics
///
/// If the directory cannot be created: a harness cannot run without it.
pub fn fresh_dir(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create bench directory {}: {e}", dir.display()));
    dir
}

/// Fills `buf` with deterministic, incompressible-looking bytes (xorshift64 from `seed`).
pub fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        // xorshift64's shifts.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// Writes `files` files of `file_bytes` each (named `000000.sst`, ...) into `dir` (created)
/// in 1 MiB writes, fsyncing each file and then the directory; MB/s. The disk's sequential
/// write rate, which snapshot installs are measured against.
///
/// # Panics
///
/// On an I/O error: a harness cannot measure without its disk.
pub fn write_files(dir: &Path, files: usize, file_bytes: usize) -> f64 {
    std::fs::create_dir_all(dir).expect("dir");
    // The data is made before the clock starts: each write only stamps a counter in.
    let mut buf = vec![0u8; 1 << 20];
    fill(&mut buf, 42);
    let started = Instant::now();
    for i in 0..files {
        let mut file = std::fs::File::create(dir.join(format!("{i:06}.sst"))).expect("create");
        for j in 0..file_bytes.div_ceil(buf.len()) {
            buf[..8].copy_from_slice(&((i * 1000 + j) as u64).to_le_bytes());
            let n = buf.len().min(file_bytes - j * buf.len());
            file.write_all(&buf[..n]).expect("write");
        }
        file.sync_all().expect("fsync");
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("sync dir");
    (files * file_bytes) as f64 / 1e6 / started.elapsed().as_secs_f64()
}

/// What a closed-loop load measured ([`closed_loop`]).
#[derive(Debug, Clone, Default)]
pub struct Load {
    /// Each completed operation's latency, sorted.
    pub latencies: Vec<Duration>,
    /// How long the load ran, in seconds.
    pub seconds: f64,
}

impl Load {
    /// Completed operations per second.
    pub fn per_s(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    /// The `p` quantile of the latencies in microseconds (see [`percentile_us`]).
    pub fn percentile_us(&self, p: f64) -> f64 {
        percentile_us(&self.latencies, p)
    }
}

/// The kernel's USER_HZ, the unit of `/proc/<pid>/stat`'s CPU times (100 on Linux).
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// The CPU time process `pid` has used so far (user and system, all its threads), in seconds,
/// from `/proc/<pid>/stat`; 0 if it cannot be read (no such process, or not Linux). The
/// difference over a load is the process's cost of it: on a shared machine a steadier figure
/// than throughput, which also moves with whatever else runs.
pub fn process_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields are counted after its closing parenthesis,
    // where utime and stime are the 12th and 13th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / CLOCK_TICKS_PER_S
}

/// Runs `clients` tasks on the current Tokio runtime, each calling `op(client, step)` again as
/// soon as its previous call ends, until `seconds` have passed. A call that returns `false`
/// failed and is not counted.
///
/// # Panics
///
/// If a client task panics.
pub async fn closed_loop<F, Fut>(clients: usize, seconds: f64, op: F) -> Load
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut step = 0;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    if op(client, step).await {
                        latencies.push(start.elapsed());
                    }
                    step += 1;
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a client task"));
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    Load { latencies, seconds }
}

/// A harness's command line: `--flag` switches and `--name value` pairs, as `cargo xtask bench
/// NAME -- ARGS` passes them.
#[derive(Debug, Clone)]
pub struct Args(Vec<String>);

impl Args {
    /// The process's own arguments.
    pub fn from_env() -> Self {
        Args(std::env::args().collect())
    }

    /// Arguments from a list (for tests and examples).
    pub fn new<S: Into<String>>(args: impl IntoIterator<Item = S>) -> Self {
        Args(args.into_iter().map(Into::into).collect())
    }

    /// Whether the switch `flag` (such as `--quick`) was given.
    pub fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }

    /// The value after `name` (`--runs 5`), parsed; `None` if `name` was not given.
    ///
    /// # Panics
    ///
    /// If `name` is given without a value or with one that does not parse as `T`: a mistyped
    /// flag must stop the harness rather than silently run with the default.
    pub fn value<T: FromStr>(&self, name: &str) -> Option<T> {
        let at = self.0.iter().position(|a| a == name)?;
        let Some(raw) = self.0.get(at + 1) else {
            panic!("{name} needs a value");
        };
        match raw.parse() {
            Ok(value) => Some(value),
            Err(_) => panic!("{name}: cannot parse {raw:?}"),
        }
    }

    /// The value after `name`, or `default` when it is not given; panics as [`Args::value`].
    pub fn value_or<T: FromStr>(&self, name: &str, default: T) -> T {
        self.value(name).unwrap_or(default)
    }
}

/// What a server bench compares `strata server` with, from its flags: another `strata`
/// binary with `--baseline PATH` (before/after figures in one run), nothing with `--no-etcd`
/// or when `etcd` is not installed, etcd otherwise. Says which on stdout.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// The command that starts one member (etcd's flags follow it).
    pub program: Vec<String>,
    /// `etcd` or `baseline`: the prefix of its BENCH lines and the suffix of the RATIO ones.
    pub name: &'static str,
}

impl Baseline {
    /// The baseline `args` ask for, if any.
    pub fn from_args(args: &Args) -> Option<Baseline> {
        if let Some(path) = args.value::<String>("--baseline") {
            println!("--baseline: against {path}");
            return Some(Baseline {
                program: vec![path, "server".to_owned()],
                name: "baseline",
            });
        }
        if args.has("--no-etcd") {
            println!("--no-etcd: Strata alone");
            return None;
        }
        let installed = std::process::Command::new("etcd")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            println!("etcd is not installed: no comparison (apt-get install etcd-server)");
            return None;
        }
        Some(Baseline {
            program: vec!["etcd".to_owned()],
            name: "etcd",
        })
    }

    /// Its command as the cluster helpers take it.
    pub fn command(&self) -> Vec<&str> {
        self.program.iter().map(String::as_str).collect()
    }
}

/// Where a long bench is, on stderr (stdout holds its figures): on a terminal, a bar with the
/// step, the elapsed time and an ETA (indicatif); elsewhere, one line per step with the ETA
/// from the steps done so far.
pub struct Steps {
    total: usize,
    done: usize,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl Steps {
    /// `total` steps to come.
    pub fn new(total: usize) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{pos}/{len}] {msg} | {elapsed} elapsed, ETA {eta}",
            ) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            total,
            done: 0,
            started: Instant::now(),
            bar,
        }
    }

    /// The next step begins (`round 1, put: strata`); the one before it is done.
    pub fn begin(&mut self, what: &str) {
        let done = self.done;
        self.done += 1;
        match &self.bar {
            Some(bar) => {
                bar.set_position(done as u64);
                bar.set_message(what.to_owned());
            }
            None => {
                let eta = (done > 0).then(|| {
                    let per_step = self.started.elapsed().as_secs_f64() / done as f64;
                    per_step * self.total.saturating_sub(done) as f64
                });
                match eta {
                    Some(eta) => eprintln!("[{}/{}] {what} (ETA {eta:.0}s)", done + 1, self.total),
                    None => eprintln!("[{}/{}] {what}", done + 1, self.total),
                }
            }
        }
    }

    /// Every step is done: the bar goes (the figures follow on stdout).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_two_middle_finite_values() {
        assert_eq!(median([5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median([f64::NAN, 2.0, f64::INFINITY]), 2.0);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn percentile_us_picks_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&sorted, 0.5), 51.0);
        assert_eq!(percentile_us(&sorted, 0.99), 99.0);
        assert_eq!(percentile_us(&sorted, 1.0), 100.0);
        assert_eq!(percentile_us(&[], 0.5), 0.0);
    }

    #[test]
    fn figures_get_decimals_by_size() {
        assert_eq!(format_figure(241_008.4), "241008");
        assert_eq!(format_figure(21.54), "21.5");
        assert_eq!(format_figure(0.061), "0.06");
    }

    #[test]
    fn args_read_switches_and_values() {
        let args = Args::new(["bench", "--quick", "--runs", "7", "--seconds", "1.5"]);
        assert!(args.has("--quick") && !args.has("--large"));
        assert_eq!(args.value::<usize>("--runs"), Some(7));
        assert_eq!(args.value_or("--seconds", 2.0), 1.5);
        assert_eq!(args.value_or("--entries", 10_u64), 10);
    }

    #[test]
    #[should_panic(expected = "--runs: cannot parse")]
    fn a_value_that_does_not_parse_stops_the_harness() {
        Args::new(["bench", "--runs", "many"]).value::<usize>("--runs");
    }

    #[test]
    fn alternate_interleaves_the_runs() {
        let mut order = Vec::new();
        let order_cell = std::cell::RefCell::new(&mut order);
        let (a, b) = alternate(
            2,
            || {
                order_cell.borrow_mut().push('a');
                1.0
            },
            || {
                order_cell.borrow_mut().push('b');
                2.0
            },
        );
        assert_eq!((a, b), (vec![1.0, 1.0], vec![2.0, 2.0]));
        assert_eq!(order, vec!['a', 'b', 'a', 'b']);
    }
}
