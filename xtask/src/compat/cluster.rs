//! Starting a local cluster of etcd or Strata members from one command-line template, and
//! running etcdctl against it.
//!
//! Every member gets free loopback ports (picked by binding port 0), a data dir and a log file
//! under the cluster's directory, and etcd's flags with etcd's meaning (see [`member_args`]). The
//! [`Cluster`] guard kills the members when dropped, so an error or a panic in the middle of a run
//! leaves no process behind.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Cluster-wide limits, chosen small so that the script can hit them with small requests.
///
/// `max-request-bytes` is checked on the encoded Raft request, so a put of a value a little
/// larger than this fails with `etcdserver: request is too large` while every other request of
/// the script stays far below it.
pub const MAX_REQUEST_BYTES: u64 = 10_000;
/// A txn with more operations than this in one branch fails with `etcdserver: too many
/// operations in txn request`.
pub const MAX_TXN_OPS: u64 = 4;

/// How long members may take to elect a leader and answer `endpoint health`. etcd needs about
/// one election timeout (1 s here); the bound is generous for a loaded CI machine.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);
/// How long members may take to apply the same entries before a command that asks all of them.
const CONVERGED_WITHIN: Duration = Duration::from_secs(10);
/// How often the two waits above ask again.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// The longest one etcdctl invocation may run before it is killed: etcdctl's own timeouts
/// (2 s dial, 5 s command) end every ordinary command long before.
const ETCDCTL_WITHIN: Duration = Duration::from_secs(60);
/// How much of a member's log an error shows.
const LOG_TAIL_LINES: usize = 30;

/// The program that runs a member: `etcd` itself, or `strata server`.
#[derive(Clone, Debug)]
pub struct Server {
    /// What reports call it (`etcd`, `strata`).
    pub label: String,
    /// The executable.
    pub program: PathBuf,
    /// Arguments before the member's flags (`["server"]` for Strata).
    pub leading: Vec<String>,
}

/// What etcdctl answered.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The exit code, or how the process ended (`signal`, `timeout`).
    pub exit: String,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Answer {
    /// Whether etcdctl exited with 0.
    pub fn ok(&self) -> bool {
        self.exit == "0"
    }
}

/// One member: its name, URLs, files and process.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

/// A running cluster; dropping it kills every member.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    members: Vec<Member>,
}

/// A free port on 127.0.0.1, with its listener: keep the listener until the port is handed to
/// its user, so that two picks never return the same port.
pub fn free_port() -> Result<(u16, TcpListener)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    let port = listener
        .local_addr()
        .context("reading a bound port")?
        .port();
    Ok((port, listener))
}

/// `http://127.0.0.1:<port>`.
pub fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The flags of member `index` (0-based) of `ports` (client, peer) under `dir`: etcd's flags,
/// which `strata server` takes with the same meaning. Values are joined with `=` so that no
/// parser has to guess whether the next word is a value.
pub fn member_args(dir: &Path, ports: &[(u16, u16)], index: usize) -> Vec<String> {
    let name = |i: usize| format!("m{}", i + 1);
    let (client, peer) = ports[index];
    let initial_cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("{}={}", name(i), url(*peer)))
        .collect::<Vec<_>>()
        .join(",");
    [
        ("name", name(index)),
        ("data-dir", dir.join(name(index)).display().to_string()),
        ("listen-client-urls", url(client)),
        ("advertise-client-urls", url(client)),
        ("listen-peer-urls", url(peer)),
        ("initial-advertise-peer-urls", url(peer)),
        ("initial-cluster", initial_cluster),
        ("initial-cluster-state", "new".to_owned()),
        ("initial-cluster-token", "compat".to_owned()),
        ("heartbeat-interval", "100".to_owned()),
        ("election-timeout", "1000".to_owned()),
        ("snapshot-count", "10000".to_owned()),
        ("quota-backend-bytes", (1u64 << 30).to_string()),
        ("max-request-bytes", MAX_REQUEST_BYTES.to_string()),
        ("max-txn-ops", MAX_TXN_OPS.to_string()),
        // Periodic with retention 0 is etcd's default: no automatic compaction, so the script's
        // revisions are only ever compacted by its own `compaction` commands.
        ("auto-compaction-mode", "periodic".to_owned()),
        ("auto-compaction-retention", "0".to_owned()),
    ]
    .into_iter()
    .map(|(flag, value)| format!("--{flag}={value}"))
    .collect()
}

impl Cluster {
    /// Starts `count` members of `server` under `dir` (created) and waits until every one answers
    /// `endpoint health`.
    ///
    /// # Errors
    ///
    /// If a member cannot be started, exits, or the cluster is not healthy within
    /// [`HEALTHY_WITHIN`]; the error shows the end of each member's log.
    pub fn start(server: &Server, count: usize, dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut listeners = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..count {
            let (client, client_listener) = free_port()?;
            let (peer, peer_listener) = free_port()?;
            listeners.push(client_listener);
            listeners.push(peer_listener);
            ports.push((client, peer));
        }
        // The members bind these ports next; a listener kept open would make them fail.
        drop(listeners);
        let mut cluster = Self {
            dir: dir.to_path_buf(),
            members: Vec::new(),
        };
        for (index, (client_port, peer_port)) in ports.iter().copied().enumerate() {
            let name = format!("m{}", index + 1);
            let log = dir.join(format!("{name}.log"));
            let log_file =
                File::create(&log).with_context(|| format!("creating {}", log.display()))?;
            let log_err = log_file.try_clone().context("sharing a log file")?;
            let mut command = Command::new(&server.program);
            command
                .args(&server.leading)
                .args(member_args(dir, &ports, index))
                .stdin(Stdio::null())
                .stdout(log_file)
                .stderr(log_err);
            // etcd reads `ETCD_*` variables as flags: none from the caller's environment may
            // change the members' configuration.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("ETCD") {
                    command.env_remove(key);
                }
            }
            let child = command.spawn().with_context(|| {
                format!(
                    "starting {} {}",
                    server.program.display(),
                    server.leading.join(" ")
                )
            })?;
            cluster.members.push(Member {
                name,
                client_port,
                peer_port,
                log,
                child: Some(child),
            });
        }
        cluster.wait_healthy()?;
        Ok(cluster)
    }

    /// The cluster's directory (data dirs, logs, and files the script writes).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The members' names with their client and peer ports, in order.
    pub fn ports(&self) -> Vec<(String, u16, u16)> {
        self.members
            .iter()
            .map(|m| (m.name.clone(), m.client_port, m.peer_port))
            .collect()
    }

    /// Every member's client URL, comma-separated, for `--endpoints`.
    pub fn all_endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| url(m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The first member's client URL: the endpoint of every command that does not choose one.
    pub fn first_endpoint(&self) -> String {
        url(self.members[0].client_port)
    }

    /// The first member's peer URL.
    pub fn first_peer(&self) -> String {
        url(self.members[0].peer_port)
    }

    /// How many members the cluster has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Polls `endpoint health` on every member until all are healthy, failing early if a member
    /// exits.
    fn wait_healthy(&mut self) -> Result<()> {
        let started = Instant::now();
        let endpoints = format!("--endpoints={}", self.all_endpoints());
        loop {
            self.check_running()?;
            let answer = etcdctl(
                &[
                    endpoints.as_str(),
                    "--dial-timeout=1s",
                    "--command-timeout=2s",
                    "endpoint",
                    "health",
                ],
                "",
            )?;
            if answer.ok() {
                return Ok(());
            }
            if started.elapsed() > HEALTHY_WITHIN {
                bail!(
                    "the cluster was not healthy within {HEALTHY_WITHIN:?}; last answer:\n{}{}\n{}",
                    answer.stdout,
                    answer.stderr,
                    self.log_tails()
                );
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// Fails if a member has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let mut exited = Vec::new();
        for member in &mut self.members {
            if let Some(child) = member.child.as_mut()
                && let Some(status) = child.try_wait().context("polling a member")?
            {
                exited.push(format!("{} exited ({status})", member.name));
            }
        }
        if !exited.is_empty() {
            bail!("{}\n{}", exited.join(", "), self.log_tails());
        }
        Ok(())
    }

    /// Waits until every member reports the same revision and applied index in `endpoint status`,
    /// so that a command asking all of them sees one state. Gives up quietly after
    /// [`CONVERGED_WITHIN`], or at once if a member has died: the command then shows the
    /// difference itself, and a death is reported when the script ends.
    pub fn wait_converged(&mut self) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < CONVERGED_WITHIN {
            if self.check_running().is_err() {
                return Ok(());
            }
            if let Some(statuses) = self.statuses()? {
                let points: Vec<(i64, u64)> = statuses
                    .iter()
                    .map(|s| {
                        let revision = s.pointer("/header/revision").and_then(Value::as_i64);
                        let applied = s.get("raftAppliedIndex").and_then(Value::as_u64);
                        (revision.unwrap_or(0), applied.unwrap_or(0))
                    })
                    .collect();
                if points.len() == self.members.len() && points.windows(2).all(|w| w[0] == w[1]) {
                    return Ok(());
                }
            }
            thread::sleep(POLL_EVERY);
        }
        Ok(())
    }

    /// Every member's `Status` from `endpoint status -w json`, in member order; `None` if the
    /// command failed or its output is not that.
    fn statuses(&self) -> Result<Option<Vec<Value>>> {
        let endpoints = format!("--endpoints={}", self.all_endpoints());
        let answer = etcdctl(
            &[endpoints.as_str(), "endpoint", "status", "-w", "json"],
            "",
        )?;
        if !answer.ok() {
            return Ok(None);
        }
        let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&answer.stdout) else {
            return Ok(None);
        };
        Ok(Some(
            items
                .into_iter()
                .filter_map(|item| item.get("Status").cloned())
                .collect(),
        ))
    }

    /// The leader's id and a follower's id (the leader's if it has no follower), both as
    /// etcdctl prints ids (unpadded hex), from the members' own `endpoint status`.
    ///
    /// # Errors
    ///
    /// If no member names a leader.
    pub fn leader_and_follower(&self) -> Result<(String, String)> {
        let statuses = self.statuses()?.unwrap_or_default();
        let leader = statuses
            .iter()
            .find_map(|s| s.get("leader").and_then(Value::as_u64))
            .filter(|&id| id != 0)
            .context("no member's `endpoint status` names a leader")?;
        let follower = statuses
            .iter()
            .filter_map(|s| s.pointer("/header/member_id").and_then(Value::as_u64))
            .find(|&id| id != leader)
            .unwrap_or(leader);
        Ok((format!("{leader:x}"), format!("{follower:x}")))
    }

    /// The last lines of every member's log, for errors.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            let log = fs::read_to_string(&member.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            out.push_str(&format!(
                "--- {} ({}), last {} lines:\n{}\n",
                member.name,
                member.log.display(),
                tail.len(),
                tail.join("\n")
            ));
        }
        out
    }

    /// Kills every member and waits for it; idempotent.
    pub fn stop(&mut self) {
        for member in &mut self.members {
            if let Some(mut child) = member.child.take() {
                // A member that already exited makes `kill` fail; `wait` still reaps it.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Kills the members on every way out of a run but a signal. The members stay in the harness's
/// process group, so a Ctrl-C in the terminal reaches them as it reaches the harness (which then
/// ends without unwinding). Only the started process is killed: a wrapper script that forks the
/// real server rather than `exec`ing it would leave that server behind.
impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `etcdctl ARGS` with API version 3 and `stdin`, and collects its answer. A run past
/// [`ETCDCTL_WITHIN`] is killed and answered with exit `timeout`.
///
/// # Errors
///
/// Only if etcdctl cannot be started or its pipes fail; a failing command is an [`Answer`].
pub fn etcdctl(args: &[&str], stdin: &str) -> Result<Answer> {
    let mut command = Command::new("etcdctl");
    command
        .args(args)
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("ETCDCTL") && key_text != "ETCDCTL_API" {
            command.env_remove(key);
        }
    }
    let mut child = command.spawn().context("starting etcdctl")?;
    let mut input = child.stdin.take().context("etcdctl's stdin")?;
    let stdin = stdin.to_owned();
    // Written from a thread so that a command that does not read stdin cannot block us.
    let writer = thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let stdout = reader(child.stdout.take().context("etcdctl's stdout")?);
    let stderr = reader(child.stderr.take().context("etcdctl's stderr")?);
    let started = Instant::now();
    let exit = loop {
        if let Some(status) = child.try_wait().context("waiting for etcdctl")? {
            break status
                .code()
                .map_or_else(|| "signal".to_owned(), |code| code.to_string());
        }
        if started.elapsed() > ETCDCTL_WITHIN {
            let _ = child.kill();
            let _ = child.wait();
            break "timeout".to_owned();
        }
        thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let join = |handle: thread::JoinHandle<String>| handle.join().unwrap_or_default();
    Ok(Answer {
        exit,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

/// Reads a pipe to its end on a thread of its own, lossily as UTF-8.
fn reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Member names by client port, for naming ports in outputs.
pub fn port_names(cluster: &Cluster) -> BTreeMap<u16, String> {
    let mut names = BTreeMap::new();
    for (name, client, peer) in cluster.ports() {
        names.insert(client, format!("{name}-client"));
        names.insert(peer, format!("{name}-peer"));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_gets_etcds_flags_with_the_whole_initial_cluster() {
        let dir = Path::new("/d");
        let args = member_args(dir, &[(1, 2), (3, 4)], 1);
        assert!(args.contains(&"--name=m2".to_owned()));
        assert!(args.contains(&"--data-dir=/d/m2".to_owned()));
        assert!(args.contains(&"--listen-client-urls=http://127.0.0.1:3".to_owned()));
        assert!(args.contains(&"--initial-advertise-peer-urls=http://127.0.0.1:4".to_owned()));
        assert!(
            args.contains(
                &"--initial-cluster=m1=http://127.0.0.1:2,m2=http://127.0.0.1:4".to_owned()
            )
        );
        assert!(
            args.iter()
                .all(|arg| arg.starts_with("--") && arg.contains('='))
        );
    }
}
