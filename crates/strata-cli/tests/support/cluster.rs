//! Real `strata server` processes on 127.0.0.1 for the server's integration tests: a cluster
//! of members started with etcd's flags, killed with SIGKILL or stopped, restarted, and
//! reached with the `etcd-client` crate.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions};

/// Fast elections (heartbeat 50 ms, election timeout 500 ms), for tests that kill leaders or
/// wait for leases: the minimum lease TTL is then 1 s.
pub const FAST: &[&str] = &["--heartbeat-interval", "50", "--election-timeout", "500"];

/// A multi-threaded runtime for a test's clients (two workers: the machine has two cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// How long a cluster may take to elect a leader and answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A free port on 127.0.0.1, bound and released (a test that loses the race fails loudly).
/// Picked at random below Linux's ephemeral range (32768 and up), where the kernel never
/// hands ports to outgoing connections: a port taken from that range could go to one of the
/// tests' many client connections between its release and the member's bind. Never the same
/// port twice in one process: the tests of a binary run at once, and two of them could pick
/// the same free port before either's member binds it (a CI run lost one that way).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..1_000 {
        let port = 20_000 + rand::random::<u16>() % 12_000;
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in 20000..32000 on 127.0.0.1")
}

/// One member's settings.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    /// `https` for a client port with TLS.
    pub client_scheme: &'static str,
    /// The address it listens on: `127.0.0.1`, or its own in a network namespace.
    pub host: String,
    /// What the member's command line is run under (`ip netns exec NAME`), if anything.
    pub wrapper: Vec<String>,
    /// The port it listens on for peers when that is not `peer_port`: `peer_port` is then
    /// a proxy's, which the member advertises and its peers dial.
    pub peer_listen_port: Option<u16>,
}

impl MemberSpec {
    /// A member on 127.0.0.1 with free ports, its data in `dir/name`.
    pub fn local(dir: &Path, name: &str) -> MemberSpec {
        MemberSpec {
            name: name.to_owned(),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: dir.join(name),
            client_scheme: "http",
            host: "127.0.0.1".to_owned(),
            wrapper: Vec::new(),
            peer_listen_port: None,
        }
    }

    pub fn client_url(&self) -> String {
        format!(
            "{}://{}:{}",
            self.client_scheme, self.host, self.client_port
        )
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.host, self.peer_port)
    }

    /// Where it listens for peers: its peer URL unless a proxy stands in front of it.
    pub fn listen_peer_url(&self) -> String {
        let port = self.peer_listen_port.unwrap_or(self.peer_port);
        format!("http://{}:{port}", self.host)
    }
}

/// A running (or stopped) member process.
#[derive(Debug)]
pub struct Member {
    pub spec: MemberSpec,
    pub child: Option<Child>,
    pub log: PathBuf,
}

/// A cluster of member processes; killed when dropped.
#[derive(Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
    pub dir: PathBuf,
    pub token: String,
    pub extra: Vec<String>,
    /// The program and its first arguments: `strata server`, or `etcd` (same flags).
    pub program: Vec<String>,
}

fn initial_cluster(specs: &[MemberSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{}={}", s.name, s.peer_url()))
        .collect::<Vec<_>>()
        .join(",")
}

impl Cluster {
    /// `n` members under `dir`, started with `--initial-cluster-state new` and `extra` flags.
    pub fn start(dir: &Path, n: usize, extra: &[&str]) -> Cluster {
        Self::start_program(&[env!("CARGO_BIN_EXE_strata"), "server"], dir, n, extra)
    }

    /// As [`start`](Self::start), with another program taking etcd's flags (`etcd` itself).
    pub fn start_program(program: &[&str], dir: &Path, n: usize, extra: &[&str]) -> Cluster {
        Self::start_with(program, "http", dir, n, extra)
    }

    /// As [`start`](Self::start), with `https` client URLs (`extra` names the TLS files).
    pub fn start_tls(dir: &Path, n: usize, extra: &[&str]) -> Cluster {
        Self::start_with(
            &[env!("CARGO_BIN_EXE_strata"), "server"],
            "https",
            dir,
            n,
            extra,
        )
    }

    fn start_with(
        program: &[&str],
        client_scheme: &'static str,
        dir: &Path,
        n: usize,
        extra: &[&str],
    ) -> Cluster {
        let specs: Vec<MemberSpec> = (1..=n)
            .map(|i| MemberSpec {
                client_scheme,
                ..MemberSpec::local(dir, &format!("m{i}"))
            })
            .collect();
        Self::start_specs(program, dir, specs, extra)
    }

    /// Members as `specs` say (addresses, wrappers), started with `--initial-cluster-state new`.
    pub fn start_specs(
        program: &[&str],
        dir: &Path,
        specs: Vec<MemberSpec>,
        extra: &[&str],
    ) -> Cluster {
        std::fs::create_dir_all(dir).expect("make the cluster's directory");
        let mut cluster = Cluster {
            members: Vec::new(),
            dir: dir.to_path_buf(),
            token: "strata-test".to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            program: program.iter().map(|s| (*s).to_owned()).collect(),
        };
        let all = initial_cluster(&specs);
        for spec in specs {
            let log = dir.join(format!("{}.log", spec.name));
            let mut member = Member {
                spec,
                child: None,
                log,
            };
            cluster.spawn(&mut member, &all, "new");
            cluster.members.push(member);
        }
        cluster
    }

    fn spawn(&self, member: &mut Member, initial: &str, state: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("open the member's log");
        let s = &member.spec;
        let mut command = match s.wrapper.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).args(&self.program);
                command
            }
            None => {
                let mut command = Command::new(&self.program[0]);
                command.args(&self.program[1..]);
                command
            }
        };
        let child = command
            .args(["--name", &s.name])
            .args(["--data-dir", &s.data_dir.to_string_lossy()])
            .args(["--listen-client-urls", &s.client_url()])
            .args(["--advertise-client-urls", &s.client_url()])
            .args(["--listen-peer-urls", &s.listen_peer_url()])
            .args(["--initial-advertise-peer-urls", &s.peer_url()])
            .args(["--initial-cluster", initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", self.program));
        member.child = Some(child);
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.spec.client_url()).collect()
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts member `i` with its original flags.
    pub fn restart(&mut self, i: usize) {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.restart_among(i, &all);
    }

    /// As [`restart`](Self::restart), with `--initial-cluster` naming only the members
    /// `among` (the cluster's members now, after removals: a removed member's address may
    /// have been reused).
    pub fn restart_among(&mut self, i: usize, among: &[usize]) {
        let specs: Vec<MemberSpec> = among
            .iter()
            .map(|&m| self.members[m].spec.clone())
            .collect();
        let all = initial_cluster(&specs);
        let spec = self.members[i].spec.clone();
        let mut member = std::mem::replace(
            &mut self.members[i],
            Member {
                spec,
                child: None,
                log: PathBuf::new(),
            },
        );
        self.spawn(&mut member, &all, "new");
        self.members[i] = member;
    }

    /// Starts a new member that joins with `--initial-cluster-state existing` (after a
    /// MemberAdd of its peer URL); returns its index.
    pub fn join(&mut self, spec: MemberSpec) -> usize {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.join_among(spec, &all)
    }

    /// As [`join`](Self::join), with `--initial-cluster` naming only the members `among` (the
    /// cluster's members after earlier removals) and the new one.
    pub fn join_among(&mut self, spec: MemberSpec, among: &[usize]) -> usize {
        let mut specs: Vec<MemberSpec> = among
            .iter()
            .map(|&i| self.members[i].spec.clone())
            .collect();
        specs.push(spec.clone());
        let all = initial_cluster(&specs);
        let log = self.dir.join(format!("{}.log", spec.name));
        let mut member = Member {
            spec,
            child: None,
            log,
        };
        self.spawn(&mut member, &all, "existing");
        self.members.push(member);
        self.members.len() - 1
    }

    /// How member `i`'s process ended, if it has (without waiting; `None` while it runs or if
    /// it was never started). It is reaped: a later call says `None`.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let child = self.members[i].child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        self.members[i].child = None;
        Some(status)
    }

    /// How member `i`'s process ended, once it has (polled, bounded by `within`).
    ///
    /// # Panics
    ///
    /// If it still runs after `within`.
    pub fn wait_exited(&mut self, i: usize, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited(i) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "member {i} still runs after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of member `i`, if it runs (benches read its `/proc/<pid>/status`).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// The log of member `i` (for failure messages).
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        // A failing test shows what its members said (their logs go with the directory).
        if std::thread::panicking() {
            for i in 0..self.members.len() {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                eprintln!("--- {} (last lines):", self.members[i].spec.name);
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// A client of `endpoints`.
pub async fn client(endpoints: &[String]) -> Client {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match Client::connect(endpoints, None).await {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect to {endpoints:?}: {e}"),
        }
    }
}

/// Polls (bounded) until `endpoint` answers a linearizable read: it has a leader and has
/// caught up.
pub async fn wait_ready(endpoint: &str) -> Client {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(mut c) = Client::connect([endpoint], None).await
            && c.get("ready-probe", None).await.is_ok()
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{endpoint} not ready in {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The index of the member that leads, as the members say (bounded).
pub async fn leader_index(endpoints: &[String]) -> usize {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        for (i, e) in endpoints.iter().enumerate() {
            if let Ok(mut c) = Client::connect([e.as_str()], None).await
                && let Ok(status) = c.status().await
                && status
                    .header()
                    .is_some_and(|h| h.member_id() == status.leader())
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader in {READY_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Puts `key` = `value`, retrying (bounded) while the cluster has no leader or is changing
/// it: for writes made right after a member is killed, which may have been the leader. A
/// retried put may be applied twice, so this is only for writes whose revision no test reads.
pub async fn put_retrying(c: &mut Client, key: &str, value: &str) {
    put_retrying_with(c, key, value, None).await;
}

/// `put_retrying` with options (a lease, say). A leader may also change on a loaded machine
/// with the tests' short election timeout, after every member has answered a read.
pub async fn put_retrying_with(
    c: &mut Client,
    key: &str,
    value: &str,
    options: Option<PutOptions>,
) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match c.put(key, value, options.clone()).await {
            Ok(_) => return,
            Err(e) => assert!(
                Instant::now() < deadline,
                "put {key}: no leader in {READY_TIMEOUT:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a member change until it is no longer refused with etcd's `unhealthy cluster`
/// (bounded): with `--strict-reconfig-check`, the default, the leader refuses member changes
/// until it has heard from every voting member for 5 s, as after a start or a leader change.
/// A refused change changed nothing, so it can be made again.
pub async fn until_healthy<T, F, Fut>(mut change: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match change().await {
            Err(e)
                if e.to_string().contains("etcdserver: unhealthy cluster")
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answer => return answer,
        }
    }
}

/// Polls (bounded) until a serializable read of `key` at `endpoint` gives `value`.
pub async fn wait_value(endpoint: &str, key: &str, value: Option<&str>) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(mut c) = Client::connect([endpoint], None).await
            && let Ok(r) = c
                .get(key, Some(GetOptions::new().with_serializable()))
                .await
        {
            let got = r.kvs().first().map(|kv| kv.value().to_vec());
            if got.as_deref() == value.map(str::as_bytes) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{endpoint}: {key} did not become {value:?} in {READY_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole answer (status line, headers, body) to `GET path` on `addr`'s client port.
pub fn http_get(addr: &str, path: &str) -> String {
    http_get_as(addr, addr, path)
}

/// [`http_get`] with `host` in the `Host` header.
pub fn http_get_as(addr: &str, host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
}
