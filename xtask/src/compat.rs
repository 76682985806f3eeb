//! `cargo xtask compat`: one script of etcdctl commands against a real etcd 3.4 and against
//! Strata, outputs compared after removing what legitimately differs.
//!
//! Strata promises that etcdctl, the etcd client libraries and operators' scripts work against it
//! unchanged. This command checks the promise the way a user would notice a break: it starts a
//! cluster of etcd members (Debian's `etcd-server`, installed with `etcd-client` when missing), runs
//! the script `xtask/compat/script.txt` (see [`script`] for its format) with etcdctl, then starts
//! a cluster of `strata server` members from the same command-line template (see
//! [`cluster::member_args`]) and runs the same script. Each command's exit code, stdout and
//! stderr are normalized (see [`normalize`], whose docs say why each rewrite is legitimate) and
//! compared; a difference is printed as a diff.
//!
//! Both clusters start empty and the script's commands are deterministic, so revisions, versions,
//! counts, values and error texts must agree exactly. What the normalizer removes is what no
//! client may depend on: ids, terms, indexes, sizes, hashes, versions, timings, ports and paths.
//!
//! `--against etcd` compares etcd with a second etcd cluster: every command must come out equal,
//! which is how the harness and the normalizer are validated (a difference there is a bug here,
//! not in Strata).
//!
//! `--auth-token VALUE` starts both clusters' members with etcd's `--auth-token` (for example
//! JWT tokens): the script's auth commands then run with those tokens on both sides.
//!
//! Usage: `cargo xtask compat [--against strata|etcd] [--members N] [--strata-bin PATH] [--show]
//! [--keep] [--allow-diff] [--auth-token VALUE]`.

mod background;
mod cluster;
mod gateway;
mod normalize;
mod script;

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use background::Background;
use cluster::{Cluster, Server, etcdctl, free_port, url};
use normalize::{Normalizer, Options};
use script::{Kind, Placeholder, Step};

/// The usage text of `cargo xtask compat`.
pub const USAGE: &str = "\
usage: cargo xtask compat [--against strata|etcd] [--members N] [--strata-bin PATH] [--show]
                          [--keep] [--allow-diff] [--auth-token VALUE]

Runs xtask/compat/script.txt with etcdctl against an etcd cluster and against a Strata cluster
(default; built with `cargo build --release -p strata-cli` unless --strata-bin names a binary) or
a second etcd cluster (--against etcd: validates the harness, everything must be equal), and
compares the normalized outputs. --members N: cluster size (default 3). --keep: keep the data
dirs and logs. --show: print every output, also equal ones. --allow-diff: report differences
without failing. --auth-token VALUE: etcd's flag, given to every member of both clusters
(`jwt,sign-method=ES256,priv-key=FILE`: the script with JWT tokens).";

/// The most members a local cluster may have: each is a process on a shared machine.
const MEMBERS_MAX: usize = 7;
/// How long a `@retry-unhealthy` command is repeated: etcd accepts reconfigurations once its
/// leader has been connected to every member for 5 s; the rest is slack for a loaded machine.
const UNHEALTHY_RETRY_WITHIN: Duration = Duration::from_secs(30);
/// How often a `@retry-unhealthy` command is repeated.
const UNHEALTHY_RETRY_EVERY: Duration = Duration::from_millis(250);

/// The command line of `cargo xtask compat`.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    /// Run the candidate cluster with etcd instead of Strata.
    against_etcd: bool,
    /// Members per cluster.
    members: usize,
    /// A Strata binary to use instead of building one.
    strata_bin: Option<PathBuf>,
    /// Keep the data dirs and logs.
    keep: bool,
    /// Exit successfully even if outputs differ.
    allow_diff: bool,
    /// Print every command's normalized reference output, also when equal.
    show: bool,
    /// `--auth-token` for every member of both clusters.
    auth_token: Option<String>,
}

/// Reads the arguments after `compat`.
fn parse_args(args: &[String]) -> Result<Args> {
    let mut parsed = Args {
        against_etcd: false,
        members: 3,
        strata_bin: None,
        keep: false,
        allow_diff: false,
        show: false,
        auth_token: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_owned())),
            None => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            inline
                .clone()
                .or_else(|| args.next().cloned())
                .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match flag {
            "--against" => match value("--against")?.as_str() {
                "etcd" => parsed.against_etcd = true,
                "strata" => parsed.against_etcd = false,
                other => bail!("--against takes `strata` or `etcd`, got `{other}`"),
            },
            "--members" => {
                let text = value("--members")?;
                let members: usize = text
                    .parse()
                    .with_context(|| format!("--members needs a number, got `{text}`"))?;
                if members == 0 || members > MEMBERS_MAX {
                    bail!("--members must be 1 to {MEMBERS_MAX}, got {members}");
                }
                parsed.members = members;
            }
            "--strata-bin" => parsed.strata_bin = Some(PathBuf::from(value("--strata-bin")?)),
            "--keep" => parsed.keep = true,
            "--allow-diff" => parsed.allow_diff = true,
            "--show" => parsed.show = true,
            "--auth-token" => parsed.auth_token = Some(value("--auth-token")?),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    Ok(parsed)
}

/// `cargo xtask compat [ARGS]`.
///
/// # Errors
///
/// If etcd cannot be installed, a cluster cannot be started, or (without `--allow-diff`) any
/// command's normalized output differs.
pub fn compat(root: &Path, cargo: &std::ffi::OsStr, args: &[String]) -> Result<()> {
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let args = parse_args(args)?;
    let steps = script::parse(script::SCRIPT)?;
    ensure_etcd()?;
    // Flags both clusters' members take before the template's (etcd reads flags in any order).
    let shared: Vec<String> = args
        .auth_token
        .iter()
        .map(|token| format!("--auth-token={token}"))
        .collect();
    let reference = Server {
        label: "etcd".to_owned(),
        program: PathBuf::from("etcd"),
        leading: shared.clone(),
    };
    let candidate = if args.against_etcd {
        Server {
            label: "etcd (again)".to_owned(),
            ..reference.clone()
        }
    } else {
        Server {
            label: "strata".to_owned(),
            program: strata_binary(root, cargo, args.strata_bin.as_deref())?,
            leading: std::iter::once("server".to_owned()).chain(shared).collect(),
        }
    };
    let started = Instant::now();
    let work = TempDir::new(args.keep)?;
    println!(
        "==> compat: {} commands, {} vs {}, {} member(s), in {}",
        steps.len(),
        reference.label,
        candidate.label,
        args.members,
        work.path.display()
    );
    let hint = if args.keep {
        ""
    } else {
        " (rerun with --keep to keep the data dirs and logs)"
    };
    let (expected, expected_crash) = run_side(
        &reference,
        args.members,
        &work.path.join("reference"),
        &steps,
    )
    .with_context(|| format!("the {} run failed{hint}", reference.label))?;
    let (actual, actual_crash) = run_side(
        &candidate,
        args.members,
        &work.path.join("candidate"),
        &steps,
    )
    .with_context(|| format!("the {} run failed{hint}", candidate.label))?;
    let (mut equal, mut total) = (0, 0);
    for ((step, expected), actual) in steps.iter().zip(&expected).zip(&actual) {
        let (Some(expected), Some(actual)) = (expected, actual) else {
            continue;
        };
        total += 1;
        if expected == actual {
            equal += 1;
            println!("same  line {:>3}  {}", step.line, step.text);
            if args.show {
                for line in expected.lines() {
                    println!("        {line}");
                }
            }
        } else {
            println!("DIFF  line {:>3}  {}", step.line, step.text);
            println!(
                "      --- {}\n      +++ {}",
                reference.label, candidate.label
            );
            for line in diff_lines(expected, actual) {
                println!("      {line}");
            }
        }
    }
    println!(
        "COMPAT {equal}/{total} commands equal ({} vs {}, {} member(s), {:.1}s)",
        reference.label,
        candidate.label,
        args.members,
        started.elapsed().as_secs_f64()
    );
    if args.keep {
        println!("kept data dirs and logs in {}", work.path.display());
    }
    // A member that died fails the run even with --allow-diff: that is never compatible.
    for (label, crash) in [
        (&reference.label, expected_crash),
        (&candidate.label, actual_crash),
    ] {
        if let Some(crash) = crash {
            return Err(crash.context(format!("a {label} member died during the script{hint}")));
        }
    }
    if equal != total && !args.allow_diff {
        bail!("{} of {total} commands differ", total - equal);
    }
    Ok(())
}

/// Starts a cluster of `server` under `dir`, runs every step, and returns each step's normalized
/// output (`None` for a step skipped at this cluster size), with the error of a member that died
/// during the script: the outputs are still compared, so the report shows what broke first. The
/// cluster is stopped on return, also on error.
fn run_side(
    server: &Server,
    members: usize,
    dir: &Path,
    steps: &[Step],
) -> Result<(Vec<Option<String>>, Option<anyhow::Error>)> {
    println!("==> starting {members} {} member(s)", server.label);
    let started = Instant::now();
    let mut cluster = Cluster::start(server, members, dir)
        .with_context(|| format!("starting the {} cluster", server.label))?;
    println!(
        "<== healthy in {:.1}s; running the script",
        started.elapsed().as_secs_f64()
    );
    let mut normalizer = Normalizer::new();
    normalizer.name_literal(&cluster.dir().display().to_string(), "{tmp}");
    for (port, name) in cluster::port_names(&cluster) {
        normalizer.name_literal(&format!("127.0.0.1:{port}"), &name);
    }
    // The members' ids, learned once from the cluster itself, name them in every output.
    let first = format!("--endpoints={}", cluster.first_endpoint());
    let members_json = etcdctl(&[first.as_str(), "member", "list", "-w", "json"], "")?;
    match serde_json::from_str::<Value>(&members_json.stdout) {
        Ok(value) => normalizer.learn(&value),
        // Not fatal: every member id then shows as `<unknown member>`, and the script's own
        // `member list` shows why.
        Err(_) => println!(
            "    warning: `member list -w json` of the {} cluster is not JSON, so member ids \
             stay unnamed: {}{}",
            server.label,
            members_json.stdout.trim(),
            members_json.stderr.trim()
        ),
    }

    let mut state = RunState::default();
    let mut outputs = Vec::with_capacity(steps.len());
    for step in steps {
        if step.multi && cluster.len() == 1 {
            outputs.push(None);
            continue;
        }
        // Once a member has died every later command would wait out etcdctl's timeouts; the
        // death itself is reported when the script ends.
        if cluster.check_running().is_err() {
            outputs.push(Some("not run: a member died\n".to_owned()));
            continue;
        }
        let shown = run_step(&mut cluster, &mut normalizer, &mut state, step)?;
        // A started background command shows its output when it is stopped.
        let started = matches!(step.kind, Kind::Start(_)) && shown.is_empty();
        outputs.push((!started).then_some(shown));
    }
    let crash = cluster.check_running().err();
    // Background commands the script never stopped are killed (by dropping them).
    state.background.clear();
    cluster.stop();
    Ok((outputs, crash))
}

/// What a run remembers between steps.
#[derive(Debug, Default)]
struct RunState {
    /// The URL given to each `{peer:NAME}`.
    peers: BTreeMap<String, String>,
    /// The id (hex) of the member added by the latest successful `member add -w json`.
    added_id: Option<String>,
    /// The id (hex) of the lease granted by the latest successful `lease grant`.
    lease_id: Option<String>,
    /// The commands running in the background, by name.
    background: BTreeMap<String, Background>,
}

/// The cluster's current revision, as a linearizable read at the first member sees it.
fn current_revision(cluster: &Cluster) -> Result<i64> {
    let first = format!("--endpoints={}", cluster.first_endpoint());
    let answer = etcdctl(
        &[first.as_str(), "get", "compat-revision-probe", "-w", "json"],
        "",
    )?;
    serde_json::from_str::<Value>(&answer.stdout)
        .ok()
        .and_then(|v| v.pointer("/header/revision").and_then(Value::as_i64))
        .with_context(|| {
            format!(
                "no revision in `get -w json`: {}{}",
                answer.stdout, answer.stderr
            )
        })
}

/// Shows every live lease's id as `<lease>`: `lock` and `elect` grant their session's lease
/// themselves (random on both sides), and their keys end in its id.
fn learn_leases(cluster: &Cluster, normalizer: &mut Normalizer) -> Result<()> {
    let first = format!("--endpoints={}", cluster.first_endpoint());
    let answer = etcdctl(&[first.as_str(), "lease", "list", "-w", "json"], "")?;
    let leases = serde_json::from_str::<Value>(&answer.stdout)
        .ok()
        .and_then(|v| v.get("leases").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    for id in leases
        .iter()
        // etcdctl 3.4 prints `{"id": N}` here (the proto's JSON name), not `ID`.
        .filter_map(|lease| {
            lease
                .get("id")
                .or_else(|| lease.get("ID"))
                .and_then(Value::as_u64)
        })
    {
        normalizer.name_literal(&format!("{id:x}"), "<lease>");
        normalizer.name_literal(&id.to_string(), "<lease>");
    }
    Ok(())
}

/// Runs a `? NAME TEXT` or `! NAME [TEXT]` step and returns its output, normalized.
fn run_background_step(
    cluster: &Cluster,
    normalizer: &mut Normalizer,
    state: &mut RunState,
    step: &Step,
) -> Result<String> {
    let (Kind::Wait(name, _) | Kind::Stop(name, _)) = &step.kind else {
        bail!("line {}: not a background step", step.line);
    };
    let Some(command) = state.background.get_mut(name) else {
        return Ok(format!("not run: `{name}` is not running\n"));
    };
    match &step.kind {
        Kind::Wait(_, text) => Ok(command.wait_for(text)),
        Kind::Stop(_, until) => {
            // Its session's lease is still granted while it runs.
            learn_leases(cluster, normalizer)?;
            let answer = command.stop(until.as_deref());
            state.background.remove(name);
            Ok(normalizer.output(
                &answer.exit,
                &answer.stdout,
                &answer.stderr,
                Options::default(),
            ))
        }
        _ => bail!("line {}: not a background step", step.line),
    }
}

/// Runs one step and returns its normalized output.
fn run_step(
    cluster: &mut Cluster,
    normalizer: &mut Normalizer,
    state: &mut RunState,
    step: &Step,
) -> Result<String> {
    if matches!(step.kind, Kind::Wait(..) | Kind::Stop(..)) {
        return run_background_step(cluster, normalizer, state, step);
    }
    if let Kind::Gateway(path, body) = &step.kind {
        let (status, answer) = gateway::post(&cluster.first_endpoint(), path, body)?;
        let answer = match serde_json::from_str::<Value>(answer.trim()) {
            Ok(json) => gateway::numbers(json).to_string(),
            Err(_) => answer,
        };
        let shown = normalizer.output("0", &answer, "", Options::default());
        // `exit 0` is etcdctl's line; a gateway answer shows its HTTP status instead.
        let shown = shown.strip_prefix("exit 0\n").unwrap_or(&shown);
        return Ok(format!("http {status}\n{shown}"));
    }
    let mut needs_all = false;
    let mut needs_leader = false;
    let mut scan = |p: &Placeholder| {
        needs_all |= *p == Placeholder::All;
        needs_leader |= matches!(p, Placeholder::LeaderId | Placeholder::FollowerId);
        Ok(String::new())
    };
    for text in step.args.iter().chain(&step.stdin) {
        script::expand(text, &mut scan)?;
    }
    if needs_all || needs_leader {
        cluster.wait_converged()?;
    }
    let leader = if needs_leader {
        match cluster.leader_and_follower() {
            Ok(ids) => Some(ids),
            Err(error) => return Ok(format!("not run: {error}\n")),
        }
    } else {
        None
    };
    let mut resolve = |p: &Placeholder| -> Result<String> {
        Ok(match p {
            Placeholder::All => cluster.all_endpoints(),
            Placeholder::Tmp => cluster.dir().display().to_string(),
            Placeholder::FirstPeer => cluster.first_peer(),
            Placeholder::Peer(name) => match state.peers.get(name) {
                Some(peer) => peer.clone(),
                None => {
                    // Nothing ever listens there: the script adds members it never starts.
                    let (port, _listener) = free_port()?;
                    normalizer.name_literal(&format!("127.0.0.1:{port}"), &format!("{name}-peer"));
                    state.peers.insert(name.clone(), url(port));
                    url(port)
                }
            },
            Placeholder::LeaderId => leader.clone().map(|(l, _)| l).unwrap_or_default(),
            Placeholder::FollowerId => leader.clone().map(|(_, f)| f).unwrap_or_default(),
            Placeholder::AddedId => state
                .added_id
                .clone()
                .context("{added_id} has no value: no earlier `member add -w json` succeeded")?,
            Placeholder::LeaseId => state
                .lease_id
                .clone()
                .context("{lease_id} has no value: no earlier `lease grant` succeeded")?,
            Placeholder::Filler(count) => "x".repeat(*count),
            Placeholder::Rev(offset) => (current_revision(cluster)? + offset).to_string(),
        })
    };
    let args: Result<Vec<String>> = step
        .args
        .iter()
        .map(|a| script::expand(a, &mut resolve))
        .collect();
    let stdin: Result<Vec<String>> = step
        .stdin
        .iter()
        .map(|l| script::expand(l, &mut resolve))
        .collect();
    let (args, stdin) = match (args, stdin) {
        (Ok(args), Ok(stdin)) => (args, stdin),
        // The same on both sides when both lack the value, so it compares like any output.
        (Err(error), _) | (_, Err(error)) => return Ok(format!("not run: {error}\n")),
    };
    let mut full: Vec<&str> = Vec::with_capacity(args.len() + 1);
    let first = format!("--endpoints={}", cluster.first_endpoint());
    if !args.iter().any(|a| a.starts_with("--endpoints")) {
        full.push(&first);
    }
    full.extend(args.iter().map(String::as_str));
    let stdin = if stdin.is_empty() {
        String::new()
    } else {
        stdin.join("\n") + "\n"
    };
    if let Kind::Start(name) = &step.kind {
        if state.background.contains_key(name) {
            return Ok(format!("not run: `{name}` is already running\n"));
        }
        state
            .background
            .insert(name.clone(), Background::start(&full, &stdin)?);
        return Ok(String::new());
    }
    let asked = Instant::now();
    let answer = loop {
        let answer = etcdctl(&full, &stdin)?;
        let unhealthy = !answer.ok() && answer.stderr.contains("etcdserver: unhealthy cluster");
        if !(step.retry_unhealthy && unhealthy) || asked.elapsed() > UNHEALTHY_RETRY_WITHIN {
            break answer;
        }
        if cluster.check_running().is_err() {
            // Reported once the script has ended; retrying cannot help.
            break answer;
        }
        thread::sleep(UNHEALTHY_RETRY_EVERY);
    };
    if args.len() >= 2 && args[0] == "member" && args[1] == "add" {
        state.added_id = serde_json::from_str::<Value>(&answer.stdout)
            .ok()
            .and_then(|v| v.pointer("/member/ID").and_then(Value::as_u64))
            .filter(|_| answer.ok())
            .map(|id| format!("{id:x}"));
    }
    if args.len() >= 2 && args[0] == "lease" && args[1] == "grant" && answer.ok() {
        // "lease 694d7d9f7d2d1c05 granted with TTL(10s)": ids are random on both sides, so
        // every one is shown as `<lease>`, in hex and in decimal.
        let hex = answer
            .stdout
            .strip_prefix("lease ")
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|id| u64::from_str_radix(id, 16).is_ok())
            .map(str::to_owned);
        if let Some(hex) = &hex {
            normalizer.name_literal(hex, "<lease>");
            if let Ok(id) = u64::from_str_radix(hex, 16) {
                normalizer.name_literal(&id.to_string(), "<lease>");
            }
        }
        state.lease_id = hex;
    }
    if matches!(args.first().map(String::as_str), Some("lock" | "elect")) {
        learn_leases(cluster, normalizer)?;
    }
    let options = Options {
        any_member: step.any_member,
        no_header: step.no_header,
    };
    let mut shown = normalizer.output(&answer.exit, &answer.stdout, &answer.stderr, options);
    if step.snapshot {
        let file = args.last().map(PathBuf::from).unwrap_or_default();
        shown.push_str(&snapshot_shape(&file));
    }
    Ok(shown)
}

/// What a snapshot file's shape says, without its size (the implementation's own): it exists, is
/// not empty, and ends in etcdctl's 32-byte SHA-256 after whole 512-byte pages (etcdctl refuses to
/// save a stream without that checksum).
fn snapshot_shape(file: &Path) -> String {
    match fs::metadata(file) {
        Ok(meta) => format!(
            "snapshot file: non-empty {}, size % 512 == 32 {}\n",
            meta.len() > 0,
            meta.len() % 512 == 32
        ),
        Err(_) => "snapshot file: missing\n".to_owned(),
    }
}

/// The lines of a diff of `expected` against `actual`: every line, prefixed with `-` (only
/// expected), `+` (only actual) or a space (both), in an order a longest common subsequence gives.
fn diff_lines(expected: &str, actual: &str) -> Vec<String> {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // Outputs are short (tens of lines); past this the table would cost more than the diff
    // is worth, and both sides are shown whole instead.
    const CELLS_MAX: usize = 4_000_000;
    if a.len().saturating_mul(b.len()) > CELLS_MAX {
        let mut lines: Vec<String> = a.iter().map(|l| format!("-{l}")).collect();
        lines.extend(b.iter().map(|l| format!("+{l}")));
        return lines;
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut lines = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push(format!(" {}", a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Removals before additions, as unified diffs show a changed line.
            lines.push(format!("-{}", a[i]));
            i += 1;
        } else {
            lines.push(format!("+{}", b[j]));
            j += 1;
        }
    }
    lines
}

/// Builds `strata` in release mode (or takes `given`) and returns its path.
fn strata_binary(root: &Path, cargo: &std::ffi::OsStr, given: Option<&Path>) -> Result<PathBuf> {
    if let Some(given) = given {
        return Ok(given.to_path_buf());
    }
    crate::run(
        Command::new(cargo)
            .args(["build", "--release", "-p", "strata-cli"])
            .current_dir(root),
        "cargo build --release -p strata-cli",
    )?;
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release").join("strata"))
}

/// Installs Debian's `etcd-server` and `etcd-client` if `etcd` or `etcdctl` is missing, then
/// prints both versions.
pub(crate) fn ensure_etcd() -> Result<()> {
    let works = |program: &str, arg: &str| {
        Command::new(program)
            .arg(arg)
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if !works("etcd", "--version") || !works("etcdctl", "version") {
        let sudo = !is_root();
        apt_install(&["etcd-server", "etcd-client"])?;
        // The package may start a service on the default ports; the harness uses its own ports,
        // but a stray member would still cost memory and confuse anyone reading `ss`. Best effort:
        // there may be no service manager at all.
        let mut stop = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "service", "etcd", "stop"]);
            c
        } else {
            let mut c = Command::new("service");
            c.args(["etcd", "stop"]);
            c
        };
        let _ = stop.output();
    }
    for (program, arg) in [("etcd", "--version"), ("etcdctl", "version")] {
        let out = Command::new(program)
            .arg(arg)
            .output()
            .with_context(|| format!("running `{program} {arg}`"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!("    {}", text.lines().next().unwrap_or_default());
    }
    Ok(())
}

/// `apt-get install` of Debian `packages` (through `sudo -n` unless root), after an `apt-get
/// update` if the first try fails.
fn apt_install(packages: &[&str]) -> Result<()> {
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut command = if sudo {
            let mut c = Command::new("sudo");
            c.arg("-n").arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    let install: Vec<&str> = ["install", "-y", "-q"]
        .iter()
        .chain(packages)
        .copied()
        .collect();
    let label = format!("apt-get install -y {}", packages.join(" "));
    if crate::run(&mut apt(&install), &label).is_err() {
        crate::run(&mut apt(&["update", "-q"]), "apt-get update")?;
        crate::run(&mut apt(&install), &label)?;
    }
    Ok(())
}

/// Installs Debian's Go and golang.org/x/time if missing, for the cluster bench's measure of
/// `etcdctl check perf`'s own request generator. Best effort: without them the bench says
/// the ceiling was not measured.
pub(crate) fn ensure_go() {
    let have_go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success());
    let have_time = std::path::Path::new("/usr/share/gocode/src/golang.org/x/time/rate").is_dir();
    if !(have_go && have_time)
        && let Err(e) = apt_install(&["golang-go", "golang-golang-x-time-dev"])
    {
        eprintln!("xtask: no Go for the check perf generator's ceiling: {e:#}");
    }
}

/// Whether this process runs as root (then apt-get needs no sudo).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A directory under the system's temporary directory, removed on drop unless kept.
#[derive(Debug)]
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// Creates `strata-compat-<pid>-<nanos>` under the system's temporary directory.
    fn new(keep: bool) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let path = env::temp_dir().join(format!("strata-compat-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_default_to_strata_with_three_members_and_accept_both_flag_forms() -> Result<()> {
        let default = parse_args(&[])?;
        assert!(!default.against_etcd && default.members == 3 && !default.keep);
        let words = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let parsed = parse_args(&words(
            "--against etcd --members=1 --keep --allow-diff --auth-token jwt,sign-method=HS256",
        ))?;
        assert_eq!(
            parsed,
            Args {
                against_etcd: true,
                members: 1,
                strata_bin: None,
                keep: true,
                allow_diff: true,
                show: false,
                auth_token: Some("jwt,sign-method=HS256".to_owned()),
            }
        );
        for bad in [
            "--members 0",
            "--members 9",
            "--against consul",
            "--members",
            "--auth-token",
            "--nope",
        ] {
            assert!(parse_args(&words(bad)).is_err(), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn diff_marks_only_the_changed_lines() {
        assert_eq!(diff_lines("a\nb\nc\n", "a\nb\nc\n"), [" a", " b", " c"]);
        assert_eq!(
            diff_lines("a\nb\nc\n", "a\nx\nc\n"),
            [" a", "-b", "+x", " c"]
        );
        assert_eq!(diff_lines("a\n", "a\nb\n"), [" a", "+b"]);
        assert_eq!(diff_lines("a\nb\n", ""), ["-a", "-b"]);
    }

    #[test]
    fn a_snapshot_file_shows_its_shape_not_its_size() -> Result<()> {
        let dir = TempDir::new(false)?;
        let file = dir.path.join("snap.db");
        fs::write(&file, vec![0u8; 512 * 3 + 32])?;
        assert_eq!(
            snapshot_shape(&file),
            "snapshot file: non-empty true, size % 512 == 32 true\n"
        );
        fs::write(&file, vec![0u8; 100])?;
        assert!(snapshot_shape(&file).contains("size % 512 == 32 false"));
        assert_eq!(
            snapshot_shape(&dir.path.join("none")),
            "snapshot file: missing\n"
        );
        Ok(())
    }
}
