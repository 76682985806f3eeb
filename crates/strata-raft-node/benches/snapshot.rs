//! `cargo xtask bench snapshot`: snapshot transfer between Raft nodes in one process on the
//! in-memory network, each with its own `strata-raft-log` (fsync on) and snapshot store, all
//! on the same disk.
//!
//! - `snapshot_install_mb_per_s`: a leader's 1 GiB snapshot of 64 files (16 MiB each) is
//!   streamed in 1 MiB chunks to a new learner, which stages, fsyncs, verifies and installs
//!   it; timed from adding the learner to its state machine being restored.
//!   `disk_seq_write_mb_per_s` is the disk's rate for the same 64 files written in 1 MiB
//!   writes with an fsync per file, measured in the same run;
//!   `RATIO snapshot_install_vs_disk` is the first over the second (goal: at least 0.7).
//! - `catchup_1m_entries_s`: a follower of three is cut off while the leader commits 1M
//!   16-byte commands (a snapshot every 100,000 entries, 5,000 kept in the log; `--entries`
//!   changes the count, and these in proportion); then the
//!   time until it has applied up to the leader's commit index again.
//!   `catchup_1m_entries_replay_s` is the same with snapshots off (it replays the log), and
//!   `RATIO catchup_snapshot_vs_replay` the second over the first.
//! - The same two with the LSM state machine of the tests (`tests/support/lsm_machine.rs`):
//!   `snapshot_lsm_install_mb_per_s`, a learner installing a leader's LSM snapshot of about
//!   1 GiB of tables (a store loaded once, then hard-linked for each run), with
//!   `RATIO snapshot_lsm_install_vs_disk` against the disk's rate measured in turn with it
//!   (goal: at least 0.7); and `catchup_lsm_1gib_s`, a follower of three cut off while the
//!   leader commits 1 GiB of puts (16 KiB values, 256 proposers, snapshots every 256 MiB),
//!   then the time until it has applied up to the leader's commit index again (through the
//!   latest snapshot and the log after it). `--lsm-mib` changes the 1 GiB.
//!
//! Each figure is the median of `--runs` (default 5) runs. An install and the disk are measured
//! in pairs of runs in both orders (install then disk, disk then install; `--runs` rounded up
//! to pairs), because this kind of disk writes the second GiB in a row slower than the first:
//! the install ratios are the median of the pairs' geometric means, and each pair goes to
//! stderr. Over TCP: `cargo xtask bench transport`.

// Shared with the tests, which use the rest of them.
#[allow(dead_code)]
#[path = "../tests/support/lsm_machine.rs"]
mod lsm_machine;
#[allow(dead_code)]
#[path = "../tests/support/node.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::{Args, fill, median, print_bench, print_ratio, ratio_in_both_orders};
use bytes::Bytes;
use strata_raft::{ChangeKind, ConfChange, Config, NodeId, Role};
use strata_raft_log::{LogOptions, RaftLog};
use strata_raft_node::{
    Committed, CommittedKind, MemNetwork, NodeOptions, RaftNode, SnapshotWriter, StateMachine,
};

const FILES: usize = 64;
const FILE_BYTES: usize = 16 << 20;
const WAIT: Duration = Duration::from_secs(120);

/// Writes the 64 files into `dir` in 1 MiB writes, each fsynced; MB/s.
fn write_files(dir: &Path) -> f64 {
    bench_support::write_files(dir, FILES, FILE_BYTES)
}

/// A state machine whose state is a set of table files (as the LSM's will be): a snapshot
/// hard-links them, a restore checks they are all there.
struct Tables {
    dir: PathBuf,
}

impl StateMachine for Tables {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        Ok(support::no_answers(&batch))
    }

    fn applied_index(&self) -> u64 {
        0
    }

    async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter> {
        let from = self.dir.clone();
        Ok(Box::new(move |to: &Path| {
            let mut names = Vec::new();
            for i in 0..FILES {
                let name = format!("{i:06}.sst");
                std::fs::hard_link(from.join(&name), to.join(&name))?;
                names.push(name);
            }
            Ok(names)
        }))
    }

    async fn restore(&mut self, dir: &Path, files: &[String], _: u64) -> std::io::Result<()> {
        for name in files {
            if std::fs::metadata(dir.join(name))?.len() != FILE_BYTES as u64 {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
        }
        self.dir = dir.to_path_buf();
        Ok(())
    }
}

fn start(
    root: &Path,
    id: NodeId,
    config: Config,
    options: impl FnOnce(&mut NodeOptions),
    state_machine: impl StateMachine,
    net: &Arc<MemNetwork>,
) -> RaftNode {
    let log = RaftLog::open(&root.join(format!("{id}.log")), LogOptions::default()).expect("log");
    let mut node_options =
        NodeOptions::new(Duration::from_millis(50), root.join(format!("{id}.snap")));
    options(&mut node_options);
    let (transport, inbox) = net.join(id);
    RaftNode::start(
        config,
        node_options,
        Arc::new(log),
        state_machine,
        transport,
        inbox,
    )
    .expect("start")
}

async fn wait_leader(node: &RaftNode) {
    support::wait_leader([node], WAIT).await;
}

async fn wait_applied(node: &RaftNode, index: u64) {
    support::wait_applied(node, index, WAIT).await;
}

/// One transfer of the 1 GiB set from `source` to a new learner; MB/s.
async fn install_once(root: &Path, source: &Path) -> f64 {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).expect("dir");
    let leader = Tables {
        dir: source.to_path_buf(),
    };
    let learner = Tables {
        dir: PathBuf::new(),
    };
    install_with(root, leader, learner, Bytes::from_static(b"x")).await
}

/// One transfer of the LSM snapshot of the store in `source` (linked for the run) to a new
/// learner; MB/s of tables shipped.
async fn install_lsm_once(root: &Path, source: &strata_lsm::Db) -> f64 {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).expect("dir");
    source.checkpoint(&root.join("1.lsm")).expect("checkpoint");
    let machine = |id: NodeId| {
        lsm_machine::LsmMachine::open(
            &root.join(format!("{id}.lsm")),
            strata_lsm::Options::default(),
        )
        .expect("lsm")
    };
    install_with(root, machine(1), machine(2), lsm_machine::put(b"x", b"1")).await
}

/// A leader (node 1, with `leader`'s state) commits `first`, takes a snapshot, and adds node
/// 2 (with `learner`) as a learner; MB/s of the snapshot's files, from the add until the
/// learner has applied the snapshot.
async fn install_with<M: StateMachine>(root: &Path, leader: M, learner: M, first: Bytes) -> f64 {
    let net = MemNetwork::new();
    let no_auto = |o: &mut NodeOptions| {
        o.snapshot_entries = 0;
        o.snapshot_bytes = 0;
        o.compaction_overhead_entries = 0;
    };
    let mut config = Config::new(1, vec![1]);
    config.peers = vec![2];
    let leader = start(root, 1, config, no_auto, leader, &net);
    wait_leader(&leader).await;
    leader.propose(first, WAIT).await.expect("propose");
    let meta = leader
        .request_snapshot(WAIT)
        .await
        .expect("snapshot")
        .expect("taken");
    let mut config = Config::new(2, vec![1]);
    config.peers = vec![1];
    let learner = start(root, 2, config, no_auto, learner, &net);
    let started = Instant::now();
    leader
        .change_membership(ConfChange::single(ChangeKind::AddLearner, 2), WAIT)
        .await
        .expect("add learner");
    wait_applied(&learner, meta.last_index).await;
    let elapsed = started.elapsed().as_secs_f64();
    leader.shutdown().await;
    learner.shutdown().await;
    let bytes: u64 = meta.files.iter().map(|f| f.size).sum();
    bytes as f64 / 1e6 / elapsed
}

/// A key-value map of u64s; a command is key and value, 8 bytes each.
#[derive(Default)]
struct Kv(HashMap<u64, u64>);

impl StateMachine for Kv {
    async fn apply(&mut self, batch: Vec<Committed>) -> std::io::Result<Vec<Bytes>> {
        let answers = support::no_answers(&batch);
        for entry in batch {
            let CommittedKind::Command(command) = entry.kind else {
                continue;
            };
            if let (Some(k), Some(v)) = (command.get(..8), command.get(8..16)) {
                let key = u64::from_le_bytes(k.try_into().unwrap_or_default());
                let value = u64::from_le_bytes(v.try_into().unwrap_or_default());
                self.0.insert(key, value);
            }
        }
        Ok(answers)
    }

    fn applied_index(&self) -> u64 {
        0
    }

    async fn snapshot(&mut self) -> std::io::Result<SnapshotWriter> {
        let pairs: Vec<(u64, u64)> = self.0.iter().map(|(k, v)| (*k, *v)).collect();
        Ok(Box::new(move |dir: &Path| {
            let mut out = Vec::with_capacity(pairs.len() * 16);
            for (k, v) in pairs {
                out.extend_from_slice(&k.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
            std::fs::write(dir.join("kv"), out)?;
            Ok(vec!["kv".to_owned()])
        }))
    }

    async fn restore(&mut self, dir: &Path, _files: &[String], _: u64) -> std::io::Result<()> {
        let bytes = std::fs::read(dir.join("kv"))?;
        self.0.clear();
        for pair in bytes.chunks_exact(16) {
            let key = u64::from_le_bytes(pair[..8].try_into().unwrap_or_default());
            let value = u64::from_le_bytes(pair[8..].try_into().unwrap_or_default());
            self.0.insert(key, value);
        }
        Ok(())
    }
}

/// A follower misses `entries` commands; seconds until it has applied them.
async fn catchup_once(root: &Path, entries: u64, snapshots: bool) -> f64 {
    let options = |o: &mut NodeOptions| {
        o.tick = Duration::from_millis(10);
        // For 1M entries: a snapshot every 100,000, 5,000 kept (the defaults).
        o.snapshot_entries = (entries / 10).max(1);
        o.compaction_overhead_entries = entries / 200;
        if !snapshots {
            o.snapshot_entries = 0;
            o.snapshot_bytes = 0;
        }
    };
    let command = |i: u64| {
        let mut command = (i % 100_000).to_le_bytes().to_vec();
        command.extend_from_slice(&i.to_le_bytes());
        Bytes::from(command)
    };
    catchup_with(
        root,
        |_| Kv::default(),
        options,
        entries,
        command,
        snapshots,
    )
    .await
}

/// A follower of three (LSM state machines) misses `mib` MiB of puts; seconds until it has
/// applied up to the leader's commit index again.
async fn catchup_lsm_once(root: &Path, mib: u64) -> f64 {
    const VALUE_BYTES: usize = 16 << 10;
    let machine = |id: NodeId| {
        lsm_machine::LsmMachine::open(
            &root.join(format!("{id}.lsm")),
            strata_lsm::Options::default(),
        )
        .expect("lsm")
    };
    let options = |o: &mut NodeOptions| {
        o.tick = Duration::from_millis(10);
        // For 1 GiB: a snapshot every 256 MiB (the default).
        o.snapshot_bytes = (mib << 20) / 4;
    };
    let command = |i: u64| {
        let mut value = vec![0u8; VALUE_BYTES];
        fill(&mut value, i + 1);
        lsm_machine::put(&i.to_be_bytes(), &value)
    };
    let puts = (mib << 20) / VALUE_BYTES as u64;
    catchup_with(root, machine, options, puts, command, true).await
}

/// Three nodes (`machine`, `options`); node 3 is cut off while 256 proposers commit
/// `commands(0..count)` at the leader, then reconnected: seconds until it has applied up to
/// the leader's commit index (through a snapshot, if `snapshots`).
async fn catchup_with<M: StateMachine>(
    root: &Path,
    machine: impl Fn(NodeId) -> M,
    options: impl Fn(&mut NodeOptions) + Copy,
    count: u64,
    command: impl Fn(u64) -> Bytes + Copy + Send + 'static,
    snapshots: bool,
) -> f64 {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).expect("dir");
    let net = MemNetwork::new();
    let ids = [1u64, 2, 3];
    let mut nodes = Vec::new();
    for id in ids {
        let mut config = Config::new(id, ids.to_vec());
        // Elections among 1 and 2: 3 is the one cut off.
        config.seed = id * 7919;
        nodes.push(Arc::new(start(
            root,
            id,
            config,
            options,
            machine(id),
            &net,
        )));
    }
    let leader = loop {
        if let Some(n) = nodes[..2]
            .iter()
            .find(|n| n.status().borrow().role == Role::Leader)
        {
            break Arc::clone(n);
        }
        if nodes[2].status().borrow().role == Role::Leader {
            // Not the one to cut off: hand leadership to node 1.
            let _ = nodes[2].transfer_leader(1).await;
        }
        let mut status = nodes[0].status();
        let _ = tokio::time::timeout(Duration::from_millis(50), status.changed()).await;
    };
    net.set_cut_off(3, true);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let tasks: Vec<_> = (0..256)
        .map(|_| {
            let leader = Arc::clone(&leader);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    leader.propose(command(i), WAIT).await.expect("committed");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("proposer");
    }
    let commit = leader.status().borrow().commit;
    let started = Instant::now();
    net.set_cut_off(3, false);
    wait_applied(&nodes[2], commit).await;
    let elapsed = started.elapsed().as_secs_f64();
    if snapshots {
        assert!(
            nodes[2].status().borrow().snapshot > 0,
            "the follower caught up through a snapshot"
        );
    }
    for node in nodes {
        if let Ok(node) = Arc::try_unwrap(node) {
            node.shutdown().await;
        }
    }
    elapsed
}

/// Loads a store in `dir` with about `mib` MiB of incompressible 1 KiB values (outside Raft:
/// the state a leader's snapshot will hold), flushed to tables.
fn load_lsm(dir: &Path, mib: u64) {
    let db = strata_lsm::Db::open(dir, strata_lsm::Options::default()).expect("lsm");
    let mut value = vec![0u8; 1024];
    let values = mib * 1024;
    let mut key = Vec::with_capacity(9);
    for batch in 0..values.div_ceil(1000) {
        let mut write = strata_lsm::WriteBatch::new();
        for i in batch * 1000..((batch + 1) * 1000).min(values) {
            fill(&mut value, i + 1);
            // The data keys as the LSM machine names them.
            key.clear();
            key.push(b'd');
            key.extend_from_slice(&i.to_be_bytes());
            write.put(&key, &value);
        }
        db.write(write, strata_lsm::WriteOptions { sync: false })
            .expect("write");
    }
    db.flush().expect("flush");
}

/// Measures `install` against the disk (`probe`) in pairs of runs in both orders (`--runs`
/// rounded up to pairs; see `bench_support::ratio_in_both_orders`), and prints the medians and
/// the median of the pairs' ratios as `snapshot{label}_install_…` lines.
fn install_vs_disk(
    label: &str,
    runs: usize,
    probe: impl FnMut() -> f64,
    install: impl FnMut() -> f64,
) {
    let (installs, disks, ratios) = ratio_in_both_orders(runs.div_ceil(2), install, probe);
    print_bench(
        &format!("disk_seq_write{label}_mb_per_s"),
        median(disks),
        "MB/s",
    );
    print_bench(
        &format!("snapshot{label}_install_mb_per_s"),
        median(installs),
        "MB/s",
    );
    print_ratio(&format!("snapshot{label}_install_vs_disk"), median(ratios));
}

fn main() {
    let args = Args::from_env();
    let runs: usize = args.value_or("--runs", 5);
    let entries: u64 = args.value_or("--entries", 1_000_000);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-snapshot");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let source = root.join("source");
    write_files(&source);
    // Disks (and virtual disks' host caches) write the first GiB after a pause faster than
    // the ones that follow: both measurements run in turn (each first every other run), each
    // after the other's files are deleted, after one probe not counted.
    let probe = root.join("disk-probe");
    let probe_once = || {
        let rate = write_files(&probe);
        let _ = std::fs::remove_dir_all(&probe);
        rate
    };
    probe_once();
    let install_run = || {
        let rate = runtime.block_on(install_once(&root.join("install"), &source));
        let _ = std::fs::remove_dir_all(root.join("install"));
        rate
    };
    install_vs_disk("", runs, probe_once, install_run);

    // The LSM state machine: install against the disk, in turn, then catch-up.
    let lsm_mib: u64 = args.value_or("--lsm-mib", 1024);
    let loaded = root.join("lsm-source");
    load_lsm(&loaded, lsm_mib);
    let source = strata_lsm::Db::open(&loaded, strata_lsm::Options::default()).expect("lsm");
    let install_lsm_run = || {
        let rate = runtime.block_on(install_lsm_once(&root.join("install-lsm"), &source));
        let _ = std::fs::remove_dir_all(root.join("install-lsm"));
        rate
    };
    install_vs_disk("_lsm", runs, probe_once, install_lsm_run);
    drop(source);
    let _ = std::fs::remove_dir_all(&loaded);
    let catchup: Vec<f64> = (0..runs)
        .map(|_| runtime.block_on(catchup_lsm_once(&root.join("catchup-lsm"), lsm_mib)))
        .collect();
    let _ = std::fs::remove_dir_all(root.join("catchup-lsm"));
    let name = if lsm_mib == 1024 {
        "1gib".to_owned()
    } else {
        format!("{lsm_mib}mib")
    };
    print_bench(&format!("catchup_lsm_{name}_s"), median(catchup), "s");

    let mut with = Vec::new();
    let mut replay = Vec::new();
    for _ in 0..runs {
        with.push(runtime.block_on(catchup_once(&root.join("catchup"), entries, true)));
        replay.push(runtime.block_on(catchup_once(&root.join("catchup"), entries, false)));
    }
    let (with, replay) = (median(with), median(replay));
    let m = entries / 1_000_000;
    let name = if m > 0 && entries.is_multiple_of(1_000_000) {
        format!("{m}m")
    } else {
        entries.to_string()
    };
    print_bench(&format!("catchup_{name}_entries_s"), with, "s");
    print_bench(&format!("catchup_{name}_entries_replay_s"), replay, "s");
    print_ratio("catchup_snapshot_vs_replay", replay / with);
    let _ = std::fs::remove_dir_all(&root);
}
