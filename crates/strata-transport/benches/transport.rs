//! `cargo xtask bench transport`: Raft over TCP on loopback against the in-process network,
//! and the transport's frames against a plain Tokio echo; fsync on; 16-byte commands.
//!
//! - `raft_tcp_commits_per_s_p256`: three nodes in three processes (the `transport_node`
//!   example, which `cargo xtask bench transport` builds and names in `STRATA_BENCH_NODE`) on
//!   loopback, 256 proposers at the leader; `raft_mem_commits_per_s_p256`: three nodes over
//!   `MemNetwork` in this process, each on its own Tokio runtime (two workers, as a process has
//!   on this 2-core machine). In turn (each first every other run); `RATIO raft_tcp_vs_mem` is
//!   the median of each pair's ratio (goal: at least 0.8). `raft_tcp_latency_p50_us_p1` and
//!   `_p99_` with one proposer, in three processes. Without `STRATA_BENCH_NODE` the TCP nodes
//!   run in this process, each on its own runtime, a line on stderr says so, and the snapshot
//!   part is skipped.
//! - `snapshot_tcp_install_mb_per_s`: a leader process sends a 1 GiB snapshot of 64 files over
//!   TCP to a new learner process, which stages, fsyncs, verifies and installs it (timed by the
//!   leader, until the learner's match index reaches the snapshot), against the disk's sequential
//!   write rate measured in pairs of runs in both orders (`RATIO snapshot_tcp_install_vs_disk`,
//!   the median of the pairs' geometric means; goal at least 0.7).
//! - `frames_round_trips_per_s`: small frames (a heartbeat) from one transport to another and
//!   back, 64 in flight, against a plain Tokio TCP echo of the same bytes with as many in
//!   flight (`RATIO frames_vs_tokio_echo`, goal at least 0.9); two transports on their own
//!   sockets in this process.
//!
//! Each figure is the median of `--runs` (default 3) runs of `--seconds` (default 2) each;
//! `--only NAME` runs the parts whose name contains NAME (`raft`, `snapshot`, `frames`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::{Args, median, print_bench, print_ratio, ratio_in_both_orders, write_files};
use bytes::{Bytes, BytesMut};
use strata_raft::{Config, Message, MessageType, NodeId, Role};
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{
    Committed, CommittedKind, Inbox, MemNetwork, NodeOptions, RaftNode, SnapshotWriter,
    StateMachine, Transport, inbox,
};
use strata_transport::{TcpTransport, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(120);
const CLUSTER: u64 = 0xbe;
const FILES: usize = 64;
const FILE_BYTES: usize = 16 << 20;

fn no_answers(batch: &[Committed]) -> Vec<Bytes> {
    batch
        .iter()
        .filter(|c| matches!(c.kind, CommittedKind::Command(_)))
        .map(|_| Bytes::new())
        .collect()
}

/// A state machine that answers commands and holds nothing.
struct Nothing;

impl StateMachine for Nothing {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        Ok(no_answers(&batch))
    }

    fn applied_index(&self) -> u64 {
        0
    }

    async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter> {
        Ok(Box::new(|_: &Path| Ok(Vec::new())))
    }

    async fn restore(&mut self, _: &Path, _: &[String], _: u64) -> std::io::Result<()> {
        Ok(())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// How the nodes reach each other.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Net {
    Tcp,
    Mem,
}

/// The network the nodes share: which one, and the addresses (TCP) or the in-process
/// network (`Mem`).
struct Links {
    net: Net,
    mem: Arc<MemNetwork>,
    addrs: BTreeMap<NodeId, SocketAddr>,
}

impl Links {
    fn new(net: Net, ids: &[NodeId]) -> Self {
        Self {
            net,
            mem: MemNetwork::new(),
            addrs: ids.iter().map(|&id| (id, free_addr())).collect(),
        }
    }
}

/// A node on its own runtime.
struct Node {
    runtime: tokio::runtime::Runtime,
    raft: Arc<RaftNode>,
    _transport: Option<Arc<TcpTransport>>,
}

/// Starts node `id` of `voters` (with `peers` as its address book) on its own runtime.
fn start_node(
    root: &Path,
    id: NodeId,
    config: Config,
    links: &Links,
    machine: Nothing,
    options: impl FnOnce(&mut NodeOptions),
) -> Node {
    let runtime = runtime();
    let log = RaftLog::open(&root.join(format!("{id}.log")), LogOptions::default()).expect("log");
    let mut node_options =
        NodeOptions::new(Duration::from_millis(10), root.join(format!("{id}.snap")));
    options(&mut node_options);
    let (raft, transport) = runtime.block_on(async {
        let (transport, inbox): (Arc<dyn Transport>, Inbox) = match links.net {
            Net::Mem => {
                let (transport, inbox) = links.mem.join(id);
                (transport, inbox)
            }
            Net::Tcp => {
                let peers = links
                    .addrs
                    .iter()
                    .filter(|(p, _)| **p != id)
                    .map(|(p, a)| (*p, *a))
                    .collect();
                let (sender, inbox) = inbox();
                let tcp = TcpTransport::bind(
                    TransportConfig::new(id, CLUSTER, links.addrs[&id], peers),
                    sender,
                )
                .await
                .expect("bind");
                return (
                    RaftNode::start(
                        config,
                        node_options,
                        Arc::new(log),
                        machine,
                        Arc::clone(&tcp) as Arc<dyn Transport>,
                        inbox,
                    )
                    .expect("start"),
                    Some(tcp),
                );
            }
        };
        (
            RaftNode::start(
                config,
                node_options,
                Arc::new(log),
                machine,
                transport,
                inbox,
            )
            .expect("start"),
            None,
        )
    });
    Node {
        runtime,
        raft: Arc::new(raft),
        _transport: transport,
    }
}

fn stop(nodes: Vec<Node>) {
    for node in nodes {
        if let Ok(raft) = Arc::try_unwrap(node.raft) {
            node.runtime.block_on(raft.shutdown());
        }
        node.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

fn wait_leader(nodes: &[Node]) -> usize {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(at) = nodes
            .iter()
            .position(|n| n.raft.status().borrow().role == Role::Leader)
        {
            return at;
        }
        assert!(Instant::now() < deadline, "no leader in time");
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Figures {
    commits_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Three nodes over `net`, `proposers` proposing 16-byte commands at the leader for
/// `seconds`.
fn commits(root: &Path, net: Net, proposers: usize, seconds: f64) -> Figures {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).expect("dir");
    let ids = [1u64, 2, 3];
    let links = Links::new(net, &ids);
    let nodes: Vec<Node> = ids
        .iter()
        .map(|&id| {
            let config = Config::new(id, ids.to_vec());
            start_node(root, id, config, &links, Nothing, |_| {})
        })
        .collect();
    let leader = Arc::clone(&nodes[wait_leader(&nodes)].raft);
    let client = runtime();
    let load = client.block_on(bench_support::closed_loop(
        proposers,
        seconds,
        move |_, _| {
            let leader = Arc::clone(&leader);
            async move {
                leader
                    .propose(
                        Bytes::from_static(b"0123456789abcdef"),
                        Duration::from_secs(10),
                    )
                    .await
                    .is_ok()
            }
        },
    ));
    let figures = Figures {
        commits_per_s: load.per_s(),
        p50_us: load.percentile_us(0.5),
        p99_us: load.percentile_us(0.99),
    };
    stop(nodes);
    figures
}

/// Three nodes in three processes (`node`, the `transport_node` example) on loopback;
/// `proposers` at whichever is elected leader for `seconds`.
fn commits_in_processes(node: &Path, root: &Path, proposers: usize, seconds: f64) -> Figures {
    let _ = std::fs::remove_dir_all(root);
    let ids = [1u64, 2, 3];
    let addrs: BTreeMap<NodeId, SocketAddr> = ids.iter().map(|&id| (id, free_addr())).collect();
    let processes = ids
        .iter()
        .map(|&id| {
            let mut args = vec![
                "--id".to_owned(),
                id.to_string(),
                "--listen".to_owned(),
                addrs[&id].to_string(),
                "--proposers".to_owned(),
                proposers.to_string(),
                "--seconds".to_owned(),
                seconds.to_string(),
            ];
            for (peer, addr) in addrs.iter().filter(|(p, _)| **p != id) {
                args.extend(["--peer".to_owned(), format!("{peer}={addr}")]);
            }
            args
        })
        .collect();
    let result = run_processes(node, root, processes);
    let numbers: Vec<f64> = result
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect();
    Figures {
        commits_per_s: numbers[0],
        p50_us: numbers[1],
        p99_us: numbers[2],
    }
}

/// A leader (node 1, a process of its own) with the 1 GiB set in `source` sends it over TCP to
/// a new learner (node 2, another process); MB/s, as the leader times it.
fn install_in_processes(node: &Path, root: &Path, source: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(root);
    let (one, two) = (free_addr(), free_addr());
    let leader = [
        "--id",
        "1",
        "--voters",
        "1",
        "--listen",
        &one.to_string(),
        "--peer",
        &format!("2={two}"),
        "--add-learner",
        "2",
    ]
    .map(str::to_owned)
    .into_iter()
    .chain(["--tables".to_owned(), source.display().to_string()]);
    let learner = [
        "--id",
        "2",
        "--voters",
        "1",
        "--listen",
        &two.to_string(),
        "--peer",
        &format!("1={one}"),
    ]
    .map(str::to_owned);
    let result = run_processes(node, root, vec![leader.collect(), learner.to_vec()]);
    result.parse().expect("MB/s")
}

/// Starts `node` once per argument list (each with `--dir` under `root`), returns the first
/// `RESULT` line any of them prints (without the prefix), and stops them all.
fn run_processes(node: &Path, root: &Path, processes: Vec<Vec<String>>) -> String {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut children = Vec::new();
    for (i, args) in processes.into_iter().enumerate() {
        let dir = root.join(i.to_string());
        std::fs::create_dir_all(&dir).expect("dir");
        let child = Command::new(node)
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn a node");
        children.push(child);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    for child in &mut children {
        let stdout = child.stdout.take().expect("piped");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(result) = line.strip_prefix("RESULT ") {
                    let _ = tx.send(result.to_owned());
                }
            }
        });
    }
    let result = rx
        .recv_timeout(WAIT + Duration::from_secs(10))
        .expect("a result in time");
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

/// Round trips per second of heartbeats between two transports, `window` in flight.
fn transport_round_trips(seconds: f64, window: usize) -> f64 {
    let rt = runtime();
    rt.block_on(async {
        let (a_addr, b_addr) = (free_addr(), free_addr());
        let (a_sender, mut a_inbox) = inbox();
        let (b_sender, mut b_inbox) = inbox();
        let a = TcpTransport::bind(
            TransportConfig::new(1, CLUSTER, a_addr, BTreeMap::from([(2, b_addr)])),
            a_sender,
        )
        .await
        .expect("bind");
        let b = TcpTransport::bind(
            TransportConfig::new(2, CLUSTER, b_addr, BTreeMap::from([(1, a_addr)])),
            b_sender,
        )
        .await
        .expect("bind");
        let heartbeat = |from, to| Message {
            msg_type: MessageType::Heartbeat as i32,
            from,
            to,
            term: 1,
            commit: 1,
            ..Message::default()
        };
        // B answers every heartbeat.
        let echo = {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                while let Some(m) = b_inbox.recv().await {
                    b.send(vec![heartbeat(2, m.from)]);
                }
            })
        };
        for _ in 0..window {
            a.send(vec![heartbeat(1, 2)]);
        }
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let mut trips = 0u64;
        while Instant::now() < deadline {
            if a_inbox.recv().await.is_none() {
                break;
            }
            trips += 1;
            a.send(vec![heartbeat(1, 2)]);
        }
        let rate = trips as f64 / started.elapsed().as_secs_f64();
        echo.abort();
        a.shutdown();
        b.shutdown();
        rate
    })
}

/// Round trips per second of `bytes`-long messages over a plain Tokio TCP echo, `window` in
/// flight.
fn echo_round_trips(bytes: usize, seconds: f64, window: usize) -> f64 {
    let rt = runtime();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream.set_nodelay(true).expect("nodelay");
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        client.set_nodelay(true).expect("nodelay");
        let message = vec![7u8; bytes];
        for _ in 0..window {
            client.write_all(&message).await.expect("write");
        }
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let mut trips = 0u64;
        let mut buf = vec![0u8; bytes];
        while Instant::now() < deadline {
            client.read_exact(&mut buf).await.expect("read");
            trips += 1;
            client.write_all(&message).await.expect("write");
        }
        let rate = trips as f64 / started.elapsed().as_secs_f64();
        drop(client);
        server.abort();
        rate
    })
}

fn main() {
    let args = Args::from_env();
    let runs: usize = args.value_or("--runs", 3);
    let seconds: f64 = args.value_or("--seconds", 2.0);
    let only: String = args.value_or("--only", String::new());
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-transport");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench dir");

    let node = std::env::var_os("STRATA_BENCH_NODE").map(PathBuf::from);
    if node.is_none() {
        eprintln!(
            "STRATA_BENCH_NODE is not set (cargo xtask bench transport sets it): the raft part's \
             TCP nodes run in this process, and the snapshot part is skipped"
        );
    }
    if "raft".contains(&only) {
        let tcp_run = |proposers| match &node {
            Some(node) => commits_in_processes(node, &root.join("raft"), proposers, seconds),
            None => commits(&root.join("raft"), Net::Tcp, proposers, seconds),
        };
        let (mut tcp, mut mem, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let once = |net| match net {
                Net::Tcp => tcp_run(256).commits_per_s,
                Net::Mem => commits(&root.join("raft"), net, 256, seconds).commits_per_s,
            };
            let (t, m) = if run % 2 == 0 {
                let t = once(Net::Tcp);
                (t, once(Net::Mem))
            } else {
                let m = once(Net::Mem);
                (once(Net::Tcp), m)
            };
            eprintln!("run {run}: tcp {t:.0} commits/s, mem {m:.0} commits/s");
            tcp.push(t);
            mem.push(m);
            ratios.push(t / m.max(1.0));
        }
        print_bench("raft_tcp_commits_per_s_p256", median(tcp), "commits/s");
        print_bench("raft_mem_commits_per_s_p256", median(mem), "commits/s");
        print_ratio("raft_tcp_vs_mem", median(ratios));
        let one: Vec<Figures> = (0..runs).map(|_| tcp_run(1)).collect();
        print_bench(
            "raft_tcp_latency_p50_us_p1",
            median(one.iter().map(|f| f.p50_us)),
            "us",
        );
        print_bench(
            "raft_tcp_latency_p99_us_p1",
            median(one.iter().map(|f| f.p99_us)),
            "us",
        );
    }

    if let (true, Some(node)) = ("snapshot".contains(&only), &node) {
        let source = root.join("source");
        write_files(&source, FILES, FILE_BYTES);
        let probe = root.join("disk-probe");
        let probe_once = || {
            let rate = write_files(&probe, FILES, FILE_BYTES);
            let _ = std::fs::remove_dir_all(&probe);
            rate
        };
        // The first GiB after a pause writes faster on this kind of disk: one probe first.
        probe_once();
        let install_once = || {
            let rate = install_in_processes(node, &root.join("install"), &source);
            let _ = std::fs::remove_dir_all(root.join("install"));
            rate
        };
        let (tcp, disk, ratios) = ratio_in_both_orders(runs.div_ceil(2), install_once, probe_once);
        print_bench("disk_seq_write_mb_per_s", median(disk), "MB/s");
        print_bench("snapshot_tcp_install_mb_per_s", median(tcp), "MB/s");
        print_ratio("snapshot_tcp_install_vs_disk", median(ratios));
    }

    if "frames".contains(&only) {
        const WINDOW: usize = 64;
        // The bytes of one heartbeat frame, for the echo to carry the same.
        let mut frame = BytesMut::new();
        strata_transport::encode(
            &Message {
                msg_type: MessageType::Heartbeat as i32,
                from: 1,
                to: 2,
                term: 1,
                commit: 1,
                ..Message::default()
            },
            &mut frame,
        );
        let (mut ours, mut echo, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            let (o, e) = if run % 2 == 0 {
                let o = transport_round_trips(seconds, WINDOW);
                (o, echo_round_trips(frame.len(), seconds, WINDOW))
            } else {
                let e = echo_round_trips(frame.len(), seconds, WINDOW);
                (transport_round_trips(seconds, WINDOW), e)
            };
            eprintln!("run {run}: frames {o:.0}/s, tokio echo {e:.0}/s");
            ours.push(o);
            echo.push(e);
            ratios.push(o / e.max(1.0));
        }
        print_bench("frames_round_trips_per_s", median(ours), "trips/s");
        print_bench("tokio_echo_round_trips_per_s", median(echo), "trips/s");
        print_ratio("frames_vs_tokio_echo", median(ratios));
    }
    let _ = std::fs::remove_dir_all(&root);
}
