//! Strata's automation, run as `cargo xtask <command>` (an alias in `.cargo/config.toml`).
//!
//! Everything a contributor or CI runs lives here rather than in shell scripts or Makefiles, so it
//! works the same on every platform and is checked by the same compiler and lints as the crates:
//!
//! - `cargo xtask ci`: the gate before every push: rustfmt, clippy with `-D warnings`, the
//!   workspace tests, rustdoc with `-D warnings`, and the tidy test. It stops at the first failing
//!   step and names it.
//! - `cargo xtask bench NAME [ARGS...]`: runs one of the `harness = false` bench targets that live
//!   inside the crates, looked up by a short name in [`BENCHES`]; `--plot` also draws its chart
//!   (`plot.rs`), and `cargo xtask plot NAME FILE` draws one from a saved output.
//! - `cargo xtask compat`: the same etcdctl script against etcd and against Strata, outputs
//!   compared after normalization (see `compat.rs`).
//! - `cargo xtask chaos`: real `strata server` processes under client load and faults, the
//!   history checked for linearizability, lost writes and watch gaps
//!   (`crates/strata-cli/benches/chaos/`).
//!
//! The tidy checks (layer order, crate docs, format docs pointing at real code) are `#[test]`s in
//! `tidy.rs`, so `cargo test` runs them too and a failure reads like any other test failure.
//!
//! Arguments are parsed by hand: the surface is two commands, and keeping clap out keeps
//! `cargo xtask` fast to build on a clean checkout.

mod compat;
mod plot;
#[cfg(test)]
mod tidy;

use std::env;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The usage text for `cargo xtask help` and for mistakes on the command line.
const USAGE: &str = "\
usage: cargo xtask <command> [args...]

commands:
  ci                   fmt, clippy (-D warnings), tests, docs (-D warnings), tidy, then
                       `compat --members 3` (with simple, then JWT tokens),
                       `chaos --selftest`, a 60 s `chaos` and a 20 s `chaos --proxy`;
                       stops at the first failing step
  bench NAME [ARGS]    run the benchmark NAME, passing ARGS to the bench binary;
                       `cargo xtask bench` lists the names; with --plot, also write
                       its chart to docs/bench/NAME.svg
  plot NAME FILE [OUT] the chart of bench NAME from its saved output FILE (SVG, to OUT,
                       default docs/bench/NAME.svg)
  fuzz NAME [SECONDS]  run the cargo-fuzz target NAME (nightly; installs cargo-fuzz if
                       missing) for SECONDS (default 60); `cargo xtask fuzz` lists them
  sim [ARGS]           the Raft simulator over many seeds (release build): --seeds N
                       (default 1000), --seed S (replay one), --nodes 3|5, --steps, fault
                       rates in percent --drop, --dup, --partition, --crash;
                       --no-snapshots, --trace
  compat [ARGS]        the etcdctl script xtask/compat/script.txt against etcd and against
                       Strata, normalized outputs compared: --against strata|etcd (etcd:
                       validates the harness), --members N (default 3), --strata-bin PATH,
                       --show, --keep, --allow-diff
  chaos [ARGS]         a cluster of `strata server` processes under load and faults
                       (kill -9, SIGSTOP, partitions, member replacement, a full disk;
                       the leader on purpose too), the history checked: --seconds
                       (default 60), --members 3|5, --seed S, --clients, --keys,
                       --watchers, --faults a,b, --no-partitions, --proxy (partitions
                       through proxies, not namespaces), --strata-bin PATH; --selftest
                       checks the checker on wrong histories
  help                 print this text";

/// A benchmark that `cargo xtask bench` knows by a short name.
struct Bench {
    /// What the user types: `cargo xtask bench <name>`.
    name: &'static str,
    /// The workspace package that holds the bench target.
    package: &'static str,
    /// The `[[bench]]` target's name inside that package (a `harness = false` binary).
    target: &'static str,
}

/// Every benchmark `cargo xtask bench` can run. A new bench target becomes reachable by adding a
/// row here; the short name lets the command line stay stable if a bench moves between crates.
const BENCHES: &[Bench] = &[
    Bench {
        name: "snaplog",
        package: "strata-snaplog",
        target: "snaplog",
    },
    Bench {
        name: "wal",
        package: "strata-wal",
        target: "wal",
    },
    Bench {
        name: "memtable",
        package: "strata-memtable",
        target: "memtable",
    },
    Bench {
        name: "lsm",
        package: "strata-lsm",
        target: "lsm",
    },
    Bench {
        name: "sstable",
        package: "strata-sstable",
        target: "sstable",
    },
    Bench {
        name: "raft",
        package: "strata-raft-node",
        target: "raft",
    },
    Bench {
        name: "snapshot",
        package: "strata-raft-node",
        target: "snapshot",
    },
    Bench {
        name: "transport",
        package: "strata-transport",
        target: "transport",
    },
    Bench {
        name: "cluster",
        package: "strata-cli",
        target: "cluster",
    },
    Bench {
        name: "watch",
        package: "strata-cli",
        target: "watch",
    },
];

fn main() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "ci" => {
            if !rest.is_empty() {
                bail!("`cargo xtask ci` takes no arguments, got {rest:?}\n\n{USAGE}");
            }
            ci()
        }
        "bench" => bench(rest),
        "fuzz" => fuzz(rest),
        "sim" => sim(rest),
        "compat" => compat::compat(&workspace_root()?, &cargo(), rest),
        "chaos" => chaos(rest),
        "plot" => plot_command(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// The workspace root: the parent of this crate's directory.
///
/// `cargo run` sets `CARGO_MANIFEST_DIR` at run time; the compile-time value is the fallback for
/// when the binary is started some other way. Either way every command then runs from the root,
/// so `cargo xtask` behaves the same from any subdirectory.
fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = manifest_dir
        .parent()
        .with_context(|| format!("{} has no parent directory", manifest_dir.display()))?;
    Ok(root.to_path_buf())
}

/// The cargo to run: the one that started us (`CARGO`), so a `cargo +toolchain xtask` run does
/// not silently switch toolchains for its sub-steps.
fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// One step of `cargo xtask ci`: a cargo invocation and any environment it needs.
struct Step {
    /// Arguments after `cargo`.
    args: &'static [&'static str],
    /// Extra environment variables, also shown in the step's header so it can be pasted.
    env: &'static [(&'static str, &'static str)],
}

/// The CI steps, cheapest and most likely to fail first, so a formatting slip costs seconds rather
/// than a full test run.
const CI_STEPS: &[Step] = &[
    Step {
        args: &["fmt", "--all", "--", "--check"],
        env: &[],
    },
    Step {
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        env: &[],
    },
    Step {
        args: &["test", "--workspace"],
        env: &[],
    },
    Step {
        args: &["doc", "--workspace", "--no-deps"],
        env: &[("RUSTDOCFLAGS", "-D warnings")],
    },
    // The tidy tests already ran inside `cargo test --workspace`; running them again by name
    // makes their verdict a step of its own in the log instead of one line among hundreds.
    Step {
        args: &["test", "-p", "xtask", "--quiet", "tidy"],
        env: &[],
    },
];

/// Runs every CI step in order and stops at the first failure.
fn ci() -> Result<()> {
    let root = workspace_root()?;
    let started = Instant::now();
    for step in CI_STEPS {
        let mut command = Command::new(cargo());
        command.args(step.args).current_dir(&root);
        for (key, value) in step.env {
            command.env(key, value);
        }
        run(&mut command, &step_label(step))?;
    }
    // The same etcdctl script against etcd 3.4 and Strata, three members each: the check that
    // what operators run against etcd works against Strata (installs etcd when missing).
    // Then again with JWT tokens on both sides (a test key from strata-server's tests).
    let jwt = format!(
        "jwt,sign-method=ES256,priv-key={}",
        root.join("crates/strata-server/tests/data/jwt/ec256-sec1.pem")
            .display()
    );
    for extra in [Vec::new(), vec!["--auth-token".to_owned(), jwt]] {
        let mut args = vec!["--members".to_owned(), "3".to_owned()];
        args.extend(extra);
        let label = format!("cargo xtask compat {}", args.join(" "));
        println!("==> {label}");
        let compat_started = Instant::now();
        compat::compat(&root, &cargo(), &args).with_context(|| format!("step `{label}` failed"))?;
        println!(
            "<== {label}: ok in {:.1}s",
            compat_started.elapsed().as_secs_f64()
        );
    }
    // The checker must catch wrong histories before a clean run means anything.
    chaos(&["--selftest".to_owned()])?;
    chaos(&["--seconds".to_owned(), "60".to_owned()])?;
    // The fallback for machines without network namespaces cuts links too.
    chaos(&[
        "--seconds".to_owned(),
        "20".to_owned(),
        "--proxy".to_owned(),
        "--faults".to_owned(),
        "partition,partition-leader,partition-link,partition-clients,kill".to_owned(),
    ])?;
    println!("==> ci passed in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// How a step appears in headers and errors: the shell command that reproduces it.
fn step_label(step: &Step) -> String {
    let env = step
        .env
        .iter()
        .map(|(key, value)| format!("{key}='{value}' "))
        .collect::<String>();
    format!("{env}cargo {}", step.args.join(" "))
}

/// Runs `command` with inherited stdio under a `==> label` header, then prints how long it took.
///
/// # Errors
///
/// If the command cannot be started or exits unsuccessfully; the error names `label`.
fn run(command: &mut Command, label: &str) -> Result<()> {
    step(label, || {
        command
            .status()
            .with_context(|| format!("could not start `{label}`"))
    })
}

/// Runs `body` (which runs a command and returns its exit status) under a `==> label` header,
/// then prints how long it took; an unsuccessful exit is an error naming `label`.
fn step(label: &str, body: impl FnOnce() -> Result<std::process::ExitStatus>) -> Result<()> {
    println!("==> {label}");
    let started = Instant::now();
    let status = body()?;
    let elapsed = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("step `{label}` failed ({status}) after {elapsed:.1}s");
    }
    println!("<== {label}: ok in {elapsed:.1}s");
    Ok(())
}

/// `cargo xtask bench [NAME [ARGS...]]`: lists the benchmarks, or runs one.
fn bench(args: &[String]) -> Result<()> {
    let Some((name, extra)) = args.split_first() else {
        println!(
            "benchmarks (cargo xtask bench NAME [ARGS...]):\n{}",
            bench_list()
        );
        return Ok(());
    };
    let Some(bench) = BENCHES.iter().find(|bench| bench.name == name) else {
        bail!(
            "unknown benchmark `{name}`; known benchmarks:\n{}",
            bench_list()
        );
    };
    // `cargo xtask bench snaplog -- --flag` reads naturally; the alias already ends in `--`, so
    // that second `--` would otherwise reach the bench binary as an argument.
    // `--plot` is xtask's, not the bench binary's, on either side of that `--`.
    let plot = extra.iter().any(|a| a == "--plot");
    let extra: Vec<String> = extra.iter().filter(|a| *a != "--plot").cloned().collect();
    let extra = match extra.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => extra.as_slice(),
    };
    let root = workspace_root()?;
    let mut command = Command::new(cargo());
    if bench.name == "lsm" {
        ensure_db_bench()?;
        command.env("STRATA_BENCH_FJALL", build_fjall_bench(&root)?);
    }
    if bench.name == "transport" {
        command.env("STRATA_BENCH_NODE", build_transport_node(&root)?);
    }
    // The server benches measure against etcd 3.4 on this machine, unless told otherwise.
    let etcd_wanted = !extra
        .iter()
        .any(|a| a == "--no-etcd" || a == "--baseline" || a == "--large");
    if matches!(bench.name, "cluster" | "watch") && etcd_wanted {
        compat::ensure_etcd()?;
    }
    // The cluster bench measures what `etcdctl check perf`'s generator reaches alone (Go).
    let check_perf_wanted = !extra.iter().any(|a| a == "--large")
        && !extra
            .windows(2)
            .any(|w| w[0] == "--check-perf" && w[1] == "none");
    if bench.name == "cluster" && check_perf_wanted {
        compat::ensure_go();
    }
    command
        .args(["bench", "-p", bench.package, "--bench", bench.target])
        .current_dir(&root);
    let mut label = format!("cargo bench -p {} --bench {}", bench.package, bench.target);
    if !extra.is_empty() {
        command.arg("--").args(extra);
        label = format!("{label} -- {}", extra.join(" "));
    }
    if !plot {
        return run(&mut command, &label);
    }
    let output = run_tee(&mut command, &label)?;
    plot::write(bench.name, &output, &default_plot_path(&root, bench.name))
}

/// Where `--plot` writes bench `name`'s chart: `docs/bench/NAME.svg`, which the README shows.
fn default_plot_path(root: &std::path::Path, name: &str) -> PathBuf {
    root.join("docs").join("bench").join(format!("{name}.svg"))
}

/// `cargo xtask plot NAME FILE [OUT]`: the chart of a saved bench output.
fn plot_command(args: &[String]) -> Result<()> {
    let (name, file, out) = match args {
        [name, file] => (name, file, None),
        [name, file, out] => (name, file, Some(PathBuf::from(out))),
        _ => bail!("usage: cargo xtask plot NAME FILE [OUT]\n\n{USAGE}"),
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read bench output {file}"))?;
    let out = match out {
        Some(out) => out,
        None => default_plot_path(&workspace_root()?, name),
    };
    plot::write(name, &text, &out)
}

/// [`run`], echoing the command's stdout as it comes and returning it.
fn run_tee(command: &mut Command, label: &str) -> Result<String> {
    use std::io::{BufRead, Write};
    let mut output = String::new();
    step(label, || {
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start `{label}`"))?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("read the bench's output")?;
            println!("{line}");
            let _ = std::io::stdout().flush();
            output.push_str(&line);
            output.push('\n');
        }
        child.wait().with_context(|| format!("wait for `{label}`"))
    })?;
    Ok(output)
}

/// `cargo xtask chaos [ARGS]`: the chaos harness, a `harness = false` bench target of
/// strata-cli (so that it gets the release `strata` binary's path), with `ARGS`.
fn chaos(args: &[String]) -> Result<()> {
    let mut command = Command::new(cargo());
    command
        .args(["bench", "-p", "strata-cli", "--bench", "chaos", "--"])
        .args(args)
        .current_dir(workspace_root()?);
    run(
        &mut command,
        &format!(
            "cargo bench -p strata-cli --bench chaos -- {}",
            args.join(" ")
        ),
    )
}

/// `cargo xtask sim [ARGS]`: the deterministic Raft simulator (`strata_raft_node::sim`) over many
/// seeds, built in release mode; the arguments go to `crates/strata-raft-node/examples/sim.rs`.
/// The simulator is compiled only with strata-raft-node's `sim` feature (its dev-dependency on
/// itself turns it on for the example too; naming it keeps this command independent of that).
fn sim(args: &[String]) -> Result<()> {
    let mut command = Command::new(cargo());
    command
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "strata-raft-node",
            "--features",
            "sim",
            "--example",
            "sim",
            "--",
        ])
        .args(args)
        .current_dir(workspace_root()?);
    run(
        &mut command,
        &format!(
            "cargo run --release -p strata-raft-node --features sim --example sim -- {}",
            args.join(" ")
        ),
    )
}

/// The cargo-fuzz targets in `fuzz/fuzz_targets/`, and what each one exercises.
const FUZZ_TARGETS: &[(&str, &str)] = &[
    ("wal", "the WAL's recovery reader on arbitrary bytes"),
    (
        "sstable",
        "opening and reading a table made of arbitrary bytes",
    ),
    (
        "frame",
        "the transport's frame reader and decoders on arbitrary bytes in arbitrary reads",
    ),
];

/// `cargo xtask fuzz NAME [SECONDS]`: runs a fuzz target with the nightly toolchain. Fuzzing is
/// a long tier, never part of `ci`; a crash leaves its input in `fuzz/artifacts/NAME/`, and
/// `cargo +nightly fuzz run NAME fuzz/artifacts/NAME/<file>` replays it.
fn fuzz(args: &[String]) -> Result<()> {
    let list = || {
        FUZZ_TARGETS
            .iter()
            .map(|(name, what)| format!("  {name:<12} {what}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let Some((name, rest)) = args.split_first() else {
        println!(
            "fuzz targets (cargo xtask fuzz NAME [SECONDS]):\n{}",
            list()
        );
        return Ok(());
    };
    if !FUZZ_TARGETS.iter().any(|(known, _)| known == name) {
        bail!("unknown fuzz target `{name}`; known targets:\n{}", list());
    }
    let seconds: u64 = match rest.first() {
        Some(s) => s
            .parse()
            .with_context(|| format!("SECONDS must be a number, got `{s}`"))?,
        None => 60,
    };
    let root = workspace_root()?;
    // `cargo +nightly` needs rustup's proxy; `CARGO` points at the pinned toolchain's cargo.
    let installed = Command::new("rustup")
        .args(["run", "nightly", "cargo", "fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !installed {
        run(
            Command::new(cargo()).args(["install", "cargo-fuzz", "--locked"]),
            "cargo install cargo-fuzz --locked",
        )?;
    }
    let max_time = format!("-max_total_time={seconds}");
    run(
        Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "fuzz",
                "run",
                name.as_str(),
                "--",
            ])
            .arg(&max_time)
            .current_dir(root),
        &format!("cargo +nightly fuzz run {name} -- {max_time}"),
    )
}

/// The LSM benchmark runs the same workloads on fjall, in `bench/fjall`: a crate outside the
/// workspace, so that only this command ever builds fjall. Returns the binary's path.
fn build_fjall_bench(root: &std::path::Path) -> Result<PathBuf> {
    let target = root.join("target").join("bench-fjall");
    run(
        Command::new(cargo())
            .args([
                "build",
                "--release",
                "--manifest-path",
                "bench/fjall/Cargo.toml",
            ])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(root),
        "cargo build --release --manifest-path bench/fjall/Cargo.toml",
    )?;
    Ok(target.join("release").join("strata-bench-fjall"))
}

/// The transport benchmark runs three nodes as processes of their own: the `transport_node`
/// example, built in release mode in the workspace's target directory.
fn build_transport_node(root: &std::path::Path) -> Result<PathBuf> {
    run(
        Command::new(cargo())
            .args([
                "build",
                "--release",
                "-p",
                "strata-transport",
                "--example",
                "transport_node",
            ])
            .current_dir(root),
        "cargo build --release -p strata-transport --example transport_node",
    )?;
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target
        .join("release")
        .join("examples")
        .join("transport_node"))
}

/// The LSM benchmark runs RocksDB's own `db_bench` beside Strata: install Debian's
/// `rocksdb-tools` if it is missing.
fn ensure_db_bench() -> Result<()> {
    let present = Command::new("db_bench")
        .arg("--help")
        .output()
        .is_ok_and(|out| out.status.success() || !out.stdout.is_empty() || !out.stderr.is_empty());
    if present {
        return Ok(());
    }
    run(
        Command::new("apt-get").args(["update", "-q"]),
        "apt-get update",
    )?;
    run(
        Command::new("apt-get").args(["install", "-y", "-q", "rocksdb-tools"]),
        "apt-get install rocksdb-tools",
    )
}

/// The known benchmarks, one per line, for listings and errors.
fn bench_list() -> String {
    BENCHES
        .iter()
        .map(|bench| {
            format!(
                "  {:<12} package {}, bench target {}",
                bench.name, bench.package, bench.target
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
