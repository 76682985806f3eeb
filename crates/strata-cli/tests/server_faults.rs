//! The server under faults, with real processes on 127.0.0.1: members joining under load,
//! members removed, leaders killed, restarts, snapshots restored, the quota, a full disk.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, GetOptions};
use strata_server::proto::clientpb::kvdb_client::KvdbClient;
use strata_server::proto::clientpb::{Auth, Command, KvPair, Operate, PutCommand, Request};
use support::cluster::http_get;
use support::cluster::{
    Cluster, FAST, MemberSpec, client, free_port, leader_index, put_retrying, runtime,
    until_healthy, wait_ready, wait_value,
};
use support::disk::SmallDisk;

/// Writes `prefix{n}` keys through `endpoint` until `stop`; returns the keys acknowledged.
async fn write_until(endpoint: String, prefix: &'static str, stop: Arc<AtomicBool>) -> Vec<String> {
    let mut c = client(&[endpoint]).await;
    let mut acked = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("{prefix}{n:06}");
        n += 1;
        if c.put(key.as_str(), key.as_str(), None).await.is_ok() {
            acked.push(key);
        }
    }
    acked
}

/// Every key in `keys` is on the member at `endpoint` (serializable reads there).
async fn assert_has_all(endpoint: &str, prefix: &str, keys: &[String]) {
    let mut c = client(&[endpoint.to_owned()]).await;
    let got = c
        .get(
            prefix,
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_serializable()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("range");
    let present: std::collections::BTreeSet<&[u8]> = got.kvs().iter().map(|kv| kv.key()).collect();
    for key in keys {
        assert!(
            present.contains(key.as_bytes()),
            "{endpoint} lacks acknowledged {key}"
        );
    }
}

/// A member added while clients write joins with `--initial-cluster-state existing`, catches
/// up from a snapshot sent over the peer port, and then holds every acknowledged write.
#[test]
fn a_member_added_under_load_catches_up_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, &["--snapshot-count", "50"]);
    let rt = runtime();
    let endpoints = cluster.endpoints();
    rt.block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writer = rt.spawn(write_until(
        endpoints[0].clone(),
        "load/",
        Arc::clone(&stop),
    ));
    let spec = MemberSpec::local(dir.path(), "m4");
    rt.block_on(async {
        // Enough writes first that the log is compacted behind a snapshot.
        let mut c = client(&endpoints[1..2]).await;
        for i in 0..200 {
            c.put(format!("pre/{i:04}"), "x", None).await.expect("put");
        }
        until_healthy(|| {
            let (mut c, url) = (c.clone(), spec.peer_url());
            async move { c.member_add([url], None).await }
        })
        .await
        .expect("member add");
    });
    let new = cluster.join(spec.clone());
    rt.block_on(async {
        let e = spec.client_url();
        let mut joined = wait_ready(&e).await;
        let mut c = client(&endpoints[..1]).await;
        // The joiner learned the cluster id (from the log or the snapshot).
        let cluster_id = |r: etcd_client::GetResponse| r.header().expect("header").cluster_id();
        let theirs = cluster_id(c.get("x", None).await.expect("get"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while cluster_id(joined.get("x", None).await.expect("get")) != theirs {
            assert!(
                Instant::now() < deadline,
                "the new member never learned the cluster id"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.put("marker", "after-join", None).await.expect("put");
        wait_value(&e, "marker", Some("after-join")).await;
        stop.store(true, Ordering::Relaxed);
        let acked = writer.await.expect("writer");
        assert!(!acked.is_empty(), "the load acknowledged nothing");
        let last = acked.last().expect("acked");
        wait_value(&e, last, Some(last)).await;
        assert_has_all(&e, "load/", &acked).await;
        // The new member publishes its name and client URLs through the log.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = c.member_list().await.expect("member list");
            if list
                .members()
                .iter()
                .any(|m| m.name() == "m4" && !m.client_urls().is_empty())
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the new member did not publish itself: {:?}",
                list.members()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert!(
        dir.path().join("m4/member/snap/CURRENT").exists(),
        "the new member installed no snapshot:\n{}",
        cluster.log(new)
    );
}

/// A removed member that keeps running cannot disrupt the others: they keep their leader and
/// term and go on committing.
#[test]
fn a_removed_member_cannot_disrupt_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, FAST);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let mut c = client(&endpoints[..1]).await;
        let list = c.member_list().await.expect("member list");
        let m3 = list
            .members()
            .iter()
            .find(|m| m.name() == "m3")
            .expect("m3")
            .id();
        // Not the leader: move leadership off m3 first if it leads.
        let status = c.status().await.expect("status");
        if status.leader() == m3 {
            let m1 = list
                .members()
                .iter()
                .find(|m| m.name() == "m1")
                .expect("m1")
                .id();
            let mut on_m3 = client(&endpoints[2..3]).await;
            on_m3.move_leader(m1).await.expect("move leader");
        }
        until_healthy(|| {
            let mut c = c.clone();
            async move { c.member_remove(m3).await }
        })
        .await
        .expect("member remove");
        let before = client(&endpoints[..1])
            .await
            .status()
            .await
            .expect("status");
        // m3 runs on, cut off from the log: with no leader to hear from it would campaign
        // after every election timeout. Ten timeouts of writes must not see a new term.
        let deadline = Instant::now() + Duration::from_millis(5000);
        let mut writes = 0;
        while Instant::now() < deadline {
            c.put(format!("after-remove/{writes}"), "x", None)
                .await
                .expect("writes go on");
            writes += 1;
        }
        let after = c.status().await.expect("status");
        assert_eq!(
            after.raft_term(),
            before.raft_term(),
            "the removed member raised the term"
        );
        assert_eq!(after.leader(), before.leader());
        assert!(writes > 0);
        let list = c.member_list().await.expect("member list");
        assert_eq!(list.members().len(), 2);
    });
}

fn kvdb_put(client_id: u64, seq: u64, key: &str, value: &str) -> Request {
    Request {
        client_id,
        seq,
        cmd: Some(Command {
            operate_type: Operate::Put as i32,
            put: Some(PutCommand {
                data: vec![KvPair {
                    key: key.as_bytes().to_vec(),
                    value: value.as_bytes().to_vec(),
                }],
            }),
            del: None,
        }),
        query: None,
    }
}

/// The seed's Kvdb service applies a put once per (client id, seq): a retry (even with another
/// value) gets the first answer, after a leader change and after every member restarts.
#[test]
fn kvdb_puts_apply_once_across_a_leader_kill_and_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token file");
    let token_arg = token.to_string_lossy().into_owned();
    let mut extra = FAST.to_vec();
    extra.extend(["--kvdb-token-file", token_arg.as_str()]);
    let mut cluster = Cluster::start(dir.path(), 3, &extra);
    let rt = runtime();
    let endpoints = cluster.endpoints();
    let (client_id, first_rev) = rt.block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let mut k = KvdbClient::connect(endpoints[0].clone())
            .await
            .expect("connect");
        let bad = k
            .register(Auth {
                token: "wrong".to_owned(),
            })
            .await;
        assert!(bad.is_err(), "a wrong token registered");
        let id = k
            .register(Auth {
                token: "s3cret".to_owned(),
            })
            .await
            .expect("register")
            .into_inner()
            .client_id;
        assert_ne!(id, 0);
        let r = k
            .put(kvdb_put(id, 1, "once", "first"))
            .await
            .expect("put")
            .into_inner();
        assert!(r.success, "{}", r.msg);
        // The retry, through another member, with another value: answered, not applied.
        let mut k2 = KvdbClient::connect(endpoints[1].clone())
            .await
            .expect("connect");
        let r = k2
            .put(kvdb_put(id, 1, "once", "second"))
            .await
            .expect("retry")
            .into_inner();
        assert!(r.success, "{}", r.msg);
        let mut c = client(&endpoints[..1]).await;
        let kv = c.get("once", None).await.expect("get");
        let kv = &kv.kvs()[0];
        assert_eq!(kv.value(), b"first");
        (id, kv.mod_revision())
    });
    // Kill the leader, retry through a survivor.
    let leader = rt.block_on(async {
        let mut c = client(&endpoints[..1]).await;
        c.status().await.expect("status").leader()
    });
    let names = rt.block_on(async {
        let mut c = client(&endpoints[..1]).await;
        c.member_list()
            .await
            .expect("list")
            .members()
            .iter()
            .map(|m| (m.id(), m.name().to_owned()))
            .collect::<Vec<_>>()
    });
    let leader_name = &names
        .iter()
        .find(|(id, _)| *id == leader)
        .expect("leader listed")
        .1;
    let killed = cluster
        .members
        .iter()
        .position(|m| &m.spec.name == leader_name)
        .expect("leader process");
    cluster.kill(killed);
    let survivor = endpoints[(killed + 1) % 3].clone();
    rt.block_on(async {
        wait_ready(&survivor).await;
        let mut k = KvdbClient::connect(survivor.clone())
            .await
            .expect("connect");
        let r = k
            .put(kvdb_put(client_id, 1, "once", "third"))
            .await
            .expect("retry")
            .into_inner();
        assert!(r.success, "{}", r.msg);
    });
    // Every member restarts: the session table is durable and replicated.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    rt.block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let mut k = KvdbClient::connect(endpoints[2].clone())
            .await
            .expect("connect");
        let r = k
            .put(kvdb_put(client_id, 1, "once", "fourth"))
            .await
            .expect("retry")
            .into_inner();
        assert!(r.success, "{}", r.msg);
        let mut c = client(&endpoints[..1]).await;
        let got = c.get("once", None).await.expect("get");
        assert_eq!(got.kvs()[0].value(), b"first");
        assert_eq!(
            got.kvs()[0].mod_revision(),
            first_rev,
            "a retry was applied again"
        );
        // The next seq applies; an older one is refused.
        let r = k
            .put(kvdb_put(client_id, 2, "once", "next"))
            .await
            .expect("put")
            .into_inner();
        assert!(r.success, "{}", r.msg);
        assert_eq!(
            c.get("once", None).await.expect("get").kvs()[0].value(),
            b"next"
        );
        let stale = k.put(kvdb_put(client_id, 1, "once", "old")).await;
        assert!(stale.is_err(), "a stale seq was accepted");
    });
}

/// A snapshot streamed to a client (as `etcdctl snapshot save` takes it) restores into the
/// first member of a new cluster with the same keys and revision.
#[test]
fn a_saved_snapshot_restores_into_a_new_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("backup.db");
    let (revision, count) = {
        let cluster = Cluster::start(&dir.path().join("old"), 1, &[]);
        let endpoints = cluster.endpoints();
        runtime().block_on(async {
            let mut c = wait_ready(&endpoints[0]).await;
            for i in 0..100 {
                c.put(format!("backup/{i:03}"), format!("v{i}"), None)
                    .await
                    .expect("put");
            }
            let bytes = snapshot_bytes(&mut c).await;
            assert_eq!(bytes.len() % 512, 32, "etcdctl's size check");
            std::fs::write(&file, &bytes).expect("write the snapshot");
            let got = c
                .get(
                    "backup/",
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .expect("count");
            (got.header().expect("h").revision(), got.count())
        })
    };
    std::fs::create_dir_all(dir.path().join("new")).expect("dir");
    let peer = free_port();
    let data = dir.path().join("new/r1");
    let peer_url = format!("http://127.0.0.1:{peer}");
    restore(&file, &data, "r1", &peer_url, &format!("r1={peer_url}"));
    // A damaged file is refused.
    let mut damaged = std::fs::read(&file).expect("read");
    let at = damaged.len() / 2;
    damaged[at] ^= 1;
    std::fs::write(dir.path().join("damaged.db"), &damaged).expect("write");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["snapshot", "restore"])
        .arg(dir.path().join("damaged.db"))
        .args(["--data-dir", &dir.path().join("new/bad").to_string_lossy()])
        .args(["--name", "r1"])
        .args(["--initial-cluster", &format!("r1=http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .output()
        .expect("run strata snapshot restore");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("SHA-256"));

    let client_port = free_port();
    let url = format!("http://127.0.0.1:{client_port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("server")
        .args(["--name", "r1", "--data-dir", &data.to_string_lossy()])
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args(["--initial-cluster", &format!("r1=http://127.0.0.1:{peer}")])
        .args(["--initial-cluster-token", "restored"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the restored member");
    let result = std::panic::catch_unwind(|| {
        runtime().block_on(async {
            let mut c = wait_ready(&url).await;
            let got = c
                .get("backup/", Some(GetOptions::new().with_prefix()))
                .await
                .expect("range");
            assert_eq!(got.count(), count);
            assert_eq!(got.kvs()[99].value(), b"v99");
            assert!(got.header().expect("h").revision() >= revision);
            let put = c.put("after-restore", "x", None).await.expect("put");
            assert_eq!(put.header().expect("h").revision(), revision + 1);
        });
    });
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A snapshot of `c`'s member, as `etcdctl snapshot save` takes it.
async fn snapshot_bytes(c: &mut etcd_client::Client) -> Vec<u8> {
    let mut stream = c.snapshot().await.expect("snapshot");
    let mut bytes = Vec::new();
    while let Some(message) = stream.message().await.expect("snapshot message") {
        bytes.extend_from_slice(message.blob());
    }
    bytes
}

/// `strata snapshot restore` of `file` into `data`, as member `name` of `initial_cluster`.
fn restore(file: &Path, data: &Path, name: &str, peer_url: &str, initial_cluster: &str) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["snapshot", "restore"])
        .arg(file)
        .args(["--data-dir", &data.to_string_lossy()])
        .args(["--name", name])
        .args(["--initial-cluster", initial_cluster])
        .args(["--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster-token", "restored"])
        .status()
        .expect("run strata snapshot restore");
    assert!(status.success(), "restore {name}");
}

/// Three restored members, r0 and r1 from one cluster's snapshot, r2 from another's with the
/// same revision and another value of `k` ("right", "wrong"): r2's store differs from its
/// peers' as a corrupt one would. Killed when dropped; the logs are printed if a test fails.
struct Mixed {
    dir: tempfile::TempDir,
    ports: Vec<(u16, u16)>,
    initial: String,
    children: Vec<std::process::Child>,
}

impl Mixed {
    fn new() -> Mixed {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = Vec::new();
        for value in ["right", "wrong"] {
            let cluster = Cluster::start(&dir.path().join(value), 1, &[]);
            let endpoints = cluster.endpoints();
            let bytes = runtime().block_on(async {
                let mut c = wait_ready(&endpoints[0]).await;
                c.put("k", value, None).await.expect("put");
                snapshot_bytes(&mut c).await
            });
            let file = dir.path().join(format!("{value}.db"));
            std::fs::write(&file, &bytes).expect("write the snapshot");
            files.push(file);
        }
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let mut mixed = Mixed {
            dir,
            ports,
            initial: String::new(),
            children: Vec::new(),
        };
        mixed.initial = (0..3)
            .map(|i| format!("r{i}={}", mixed.peer_url(i)))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..3 {
            let file = &files[usize::from(i == 2)];
            restore(
                file,
                &mixed.data(i),
                &format!("r{i}"),
                &mixed.peer_url(i),
                &mixed.initial,
            );
        }
        mixed
    }

    fn peer_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i].1)
    }

    fn client_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i].0)
    }

    fn data(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("r{i}"))
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("r{i}.log"))).unwrap_or_default()
    }

    /// Starts member `i` with `extra` flags; its log goes on in `r<i>.log`.
    fn start(&self, i: usize, extra: &[&str]) -> std::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("r{i}.log")))
            .expect("log");
        std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("server")
            .args(["--name", &format!("r{i}")])
            .args(["--data-dir", &self.data(i).to_string_lossy()])
            .args(["--listen-client-urls", &self.client_url(i)])
            .args(["--advertise-client-urls", &self.client_url(i)])
            .args(["--listen-peer-urls", &self.peer_url(i)])
            .args(["--initial-advertise-peer-urls", &self.peer_url(i)])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-token", "restored"])
            .args(FAST)
            .args(extra)
            .stderr(log)
            .spawn()
            .expect("start a restored member")
    }
}

impl Drop for Mixed {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for i in 0..3 {
                eprintln!("--- r{i}'s log:\n{}", self.log(i));
            }
        }
    }
}

/// `--experimental-initial-corrupt-check`: a member whose store differs from its peers' at the
/// same revision refuses to start, naming the peers; a consistent member restarted with the
/// check starts and serves.
#[test]
fn the_initial_corrupt_check_refuses_a_store_that_differs_from_its_peers() {
    let mut mixed = Mixed::new();
    mixed.children = vec![mixed.start(0, &[]), mixed.start(1, &[])];
    let check = ["--experimental-initial-corrupt-check"];
    runtime().block_on(async {
        wait_ready(&mixed.client_url(0)).await;
    });
    // r2 holds the other cluster's value at the same revision: it must stop, not serve.
    let mut wrong = mixed.start(2, &check);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = wrong.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = wrong.kill();
            panic!("r2 still runs with a store that differs");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = mixed.log(2);
    assert!(!status.success(), "{status}: {log}");
    assert!(
        log.contains("found data inconsistency with peers"),
        "r2's log: {log}"
    );
    // A consistent member restarted with the check passes it and serves.
    let mut r1 = mixed.children.remove(1);
    let _ = r1.kill();
    let _ = r1.wait();
    let restarted = mixed.start(1, &check);
    mixed.children.push(restarted);
    runtime().block_on(async {
        let mut c = wait_ready(&mixed.client_url(1)).await;
        let got = c.get("k", None).await.expect("get");
        assert_eq!(got.kvs()[0].value(), b"right");
    });
    let log = mixed.log(1);
    assert!(
        log.contains("initial corruption check passed"),
        "r1's log: {log}"
    );
}

/// `--experimental-corrupt-check-time`: the leader finds the member whose store differs and
/// raises CORRUPT; writes are then refused everywhere with etcd's `corrupt cluster` (reads are
/// served), and `/health` says why.
#[test]
fn the_periodic_corrupt_check_raises_corrupt_and_writes_stop() {
    let mut mixed = Mixed::new();
    let check = ["--experimental-corrupt-check-time", "300ms"];
    mixed.children = (0..3).map(|i| mixed.start(i, &check)).collect();
    let endpoints: Vec<String> = (0..3).map(|i| mixed.client_url(i)).collect();
    runtime().block_on(async {
        let mut c = wait_ready(&endpoints[0]).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let alarms = loop {
            let alarms = c
                .alarm(AlarmAction::Get, AlarmType::None, None)
                .await
                .expect("list the alarms");
            let corrupt: Vec<u64> = alarms
                .alarms()
                .iter()
                .filter(|a| a.alarm() == AlarmType::Corrupt)
                .map(|a| a.member_id())
                .collect();
            if !corrupt.is_empty() {
                break corrupt;
            }
            assert!(Instant::now() < deadline, "no CORRUPT alarm");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(alarms.len(), 1, "one member named: {alarms:?}");
        for e in &endpoints {
            let mut c = wait_ready(e).await;
            match c.put("k", "after", None).await {
                Err(etcd_client::Error::GRpcStatus(status)) => {
                    assert_eq!(status.code(), tonic::Code::DataLoss, "{e}: {status}");
                    assert_eq!(status.message(), "etcdserver: corrupt cluster");
                }
                other => panic!("a put through {e} while CORRUPT: {other:?}"),
            }
        }
        // Reads are served (r0's store is one of the two that agree).
        let got = c.get("k", None).await.expect("get");
        assert_eq!(got.kvs()[0].value(), b"right");
    });
    let addr = endpoints[0].trim_start_matches("http://").to_owned();
    let health = http_get(&addr, "/health");
    assert!(
        health.starts_with("HTTP/1.1 503") && health.contains("ALARM CORRUPT"),
        "{health}"
    );
}

/// Past `--quota-backend-bytes` the NOSPACE alarm is raised: puts are refused with etcd's
/// text, reads and deletes still work, and the alarm is listed.
#[test]
fn past_the_quota_puts_are_refused_with_nospace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 1, &["--quota-backend-bytes", "300000"]);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        let mut c = wait_ready(&endpoints[0]).await;
        let value = vec![b'x'; 4096];
        let mut refused = None;
        for i in 0..10_000 {
            match c.put(format!("big/{i:05}"), value.clone(), None).await {
                Ok(_) => {}
                Err(e) => {
                    refused = Some(e.to_string());
                    break;
                }
            }
        }
        let refused = refused.expect("the quota never refused a put");
        assert!(
            refused.contains("etcdserver: mvcc: database space exceeded"),
            "{refused}"
        );
        let alarms = c
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        assert!(
            alarms
                .alarms()
                .iter()
                .any(|a| a.alarm() == AlarmType::Nospace)
        );
        c.get("big/00000", None).await.expect("reads go on");
        let deleted = c.delete("big/00000", None).await.expect("deletes go on");
        assert_eq!(deleted.deleted(), 1);
    });
}

/// A member whose data directory's disk runs low raises NOSPACE before `ENOSPC` hits: puts
/// are refused with etcd's error, reads go on, nothing is lost; once space is freed and the
/// alarm disarmed (as `etcdctl alarm disarm` does), writes resume. Needs root for the small
/// file system (a tmpfs); CI runs as root.
#[test]
fn a_nearly_full_disk_raises_nospace_and_writes_resume_once_freed_and_disarmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reserve = (128u64 << 20).to_string();
    let Some((cluster, disk)) = member_on_small_disk(dir.path(), 512, &reserve, &[]) else {
        return;
    };
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        let mut c = wait_ready(&endpoints[0]).await;
        c.put("before", "1", None).await.expect("put with room");
        disk.fill_to(64 << 20);
        let deadline = Instant::now() + Duration::from_secs(10);
        let refused = loop {
            match c.put("during", "x", None).await {
                Err(e) => break e.to_string(),
                Ok(_) => assert!(
                    Instant::now() < deadline,
                    "no NOSPACE with {} bytes free",
                    disk.available()
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            refused.contains("etcdserver: mvcc: database space exceeded"),
            "{refused}"
        );
        let alarms = c
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        let raised: Vec<_> = alarms
            .alarms()
            .iter()
            .map(|a| (a.member_id(), a.alarm()))
            .collect();
        assert!(
            raised.iter().any(|&(_, a)| a == AlarmType::Nospace),
            "{raised:?}"
        );
        let got = c.get("before", None).await.expect("reads go on");
        assert_eq!(got.kvs()[0].value(), b"1");

        disk.free();
        for (member, alarm) in raised {
            let mut options = AlarmOptions::new();
            options.with_member(member);
            c.alarm(AlarmAction::Deactivate, alarm, Some(options))
                .await
                .expect("disarm");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = c.put("after", "2", None).await {
            assert!(Instant::now() < deadline, "writes never resumed: {e}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = c
            .get("", Some(GetOptions::new().with_from_key()))
            .await
            .expect("get all");
        let keys: Vec<&[u8]> = got.kvs().iter().map(|kv| kv.key()).collect();
        assert!(
            keys.contains(&&b"before"[..]) && keys.contains(&&b"after"[..]),
            "{keys:?}"
        );
    });
    drop(cluster);
    drop(disk);
}

/// A disk that really fills (no reserve: `ENOSPC` meets the member's own writes): every put
/// that was acknowledged is still there after space is freed and the member restarted, and
/// writes go on. Needs root for the small file system, as above.
#[test]
fn a_disk_that_really_fills_loses_no_acknowledged_write_and_the_member_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((mut cluster, disk)) = member_on_small_disk(dir.path(), 256, "0", &[]) else {
        return;
    };
    let endpoints = cluster.endpoints();
    let value = |i: usize| format!("{i:08}").repeat(8 << 10);
    let acknowledged = runtime().block_on(async {
        let mut c = wait_ready(&endpoints[0]).await;
        c.put("before", "1", None).await.expect("put with room");
        disk.fill_to(4 << 20);
        // 64 KiB values until the disk refuses one (bounded: 256 MiB of them is more than
        // the whole disk).
        let mut acknowledged = Vec::new();
        for i in 0..4096 {
            let put = tokio::time::timeout(
                Duration::from_secs(10),
                c.put(format!("full/{i:06}"), value(i), None),
            )
            .await;
            match put {
                Ok(Ok(_)) => acknowledged.push(i),
                Ok(Err(e)) => {
                    eprintln!("put {i} refused: {e}");
                    break;
                }
                Err(_) => {
                    eprintln!("put {i} unanswered");
                    break;
                }
            }
        }
        acknowledged
    });
    assert!(
        acknowledged.len() < 4096,
        "the disk never refused a write ({} bytes free)",
        disk.available()
    );
    disk.free();
    cluster.kill(0);
    cluster.restart(0);
    runtime().block_on(async {
        let mut c = wait_ready(&endpoints[0]).await;
        let got = c.get("before", None).await.expect("get after the restart");
        assert_eq!(got.kvs()[0].value(), b"1");
        for &i in &acknowledged {
            let got = c
                .get(format!("full/{i:06}"), None)
                .await
                .expect("get an acknowledged key");
            assert!(
                got.kvs()
                    .first()
                    .is_some_and(|kv| kv.value() == value(i).as_bytes()),
                "acknowledged put {i} of {} lost after the disk filled",
                acknowledged.len()
            );
        }
        put_retrying(&mut c, "after", "2").await;
    });
    drop(cluster);
    drop(disk);
}

/// A disk with room above the reserve but less than the LSM's next compaction would take: the
/// LSM holds that compaction back, and level 0 would only grow until writes stop with nothing
/// said. The member raises NOSPACE instead, while the disk still has more than the reserve
/// free, and `/metrics` says why. Freed and disarmed at once, before the compaction's retry has
/// seen the room, the alarm stays down and writes resume. Needs root for the small file system,
/// as above.
#[test]
fn a_disk_too_full_for_the_next_compaction_raises_nospace() {
    /// Level 0 takes four tables before a compaction into level 1.
    const TABLE: u64 = 64 << 20;
    /// Puts between snapshots. A snapshot flushes the memtable (so each level-0 table holds
    /// this many puts), compacts the Raft log and replaces the previous snapshot, whose links
    /// kept the tables compacted since: each frees space. Often and small, they keep those
    /// jumps in free space small and known.
    const SNAPSHOT_PUTS: u64 = 256;
    /// The bytes of that many puts (64 KiB values).
    const SNAPSHOT_BYTES: u64 = SNAPSHOT_PUTS * (64 << 10);
    let dir = tempfile::tempdir().expect("tempdir");
    let reserve = 2 * SNAPSHOT_BYTES;
    let Some((cluster, disk)) = member_on_small_disk(
        dir.path(),
        2048,
        &reserve.to_string(),
        &["--snapshot-count", &SNAPSHOT_PUTS.to_string()],
    ) else {
        return;
    };
    let endpoints = cluster.endpoints();
    let addr = endpoints[0].trim_start_matches("http://").to_owned();
    // A value that does not compress, different for each put.
    let value = |i: u64| -> Vec<u8> {
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..(64 << 10) / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect()
    };
    let level = |name: &str, level: u8| metric(&addr, &format!("{name}{{level=\"{level}\"}}"));
    runtime().block_on(async {
        let mut c = wait_ready(&endpoints[0]).await;
        // Keys over 256 names, so that every table overlaps every other: a compaction must
        // rewrite them all rather than move them down as they are. Every version stays (no
        // MVCC compaction), so level 1 holds all of them once level 0 was compacted into it
        // (three times: 192 MiB); then three more tables in level 0 (the fourth starts a
        // compaction). No compaction may be due or running when the disk is filled, or its new
        // tables would take the room: level 0 below four tables, level 1 within its 256 MiB
        // target (a compaction's inputs stay in their level until it is installed).
        let mut i = 0u64;
        let deadline = Instant::now() + Duration::from_secs(180);
        while !(5 * TABLE / 2..=4 * TABLE).contains(&level("strata_lsm_level_bytes", 1))
            || level("strata_lsm_level_tables", 0) != 3
        {
            assert!(
                Instant::now() < deadline,
                "the store never took shape: {} tables in level 0, {} bytes in level 1",
                level("strata_lsm_level_tables", 0),
                level("strata_lsm_level_bytes", 1)
            );
            c.put(format!("big/{:03}", i % 256), value(i), None)
                .await
                .expect("put with room");
            i += 1;
        }
        // Less free than the next compaction's inputs (levels 0 and 1 as they are now, and
        // the fourth table) by more than a snapshot may free meanwhile (the log, the previous
        // snapshot's flushed memtable, the tables the last compaction replaced: when CI took a
        // snapshot every 256 MiB of log, one freed enough for the compaction to run); more
        // than the reserve plus what the fourth table takes (its log entries, the table, and
        // the snapshot's copy of it).
        let inputs = level("strata_lsm_level_bytes", 0) + level("strata_lsm_level_bytes", 1);
        let free = inputs - 6 * SNAPSHOT_BYTES;
        assert!(
            free > reserve + 4 * SNAPSHOT_BYTES,
            "{inputs} bytes of inputs leave too little room above the reserve"
        );
        disk.fill_to(free);
        // Only as many writes as make the fourth table (at the next snapshot, or should the
        // memtable fill first, once it is switched out: a flush waiting or running holds it in
        // the count), which starts the compaction that must be held back. Writing on while it
        // flushes would take the room the reserve guards (a debug build flushes slowly), and
        // NOSPACE must not come from the reserve.
        let deadline = Instant::now() + Duration::from_secs(120);
        while metric(&addr, "strata_lsm_memtable_bytes") < TABLE
            && level("strata_lsm_level_tables", 0) < 4
        {
            assert!(
                Instant::now() < deadline,
                "the memtable was never switched out"
            );
            c.put(format!("big/{:03}", i % 256), value(i), None)
                .await
                .expect("put above the reserve");
            i += 1;
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        let refused = loop {
            match c.put("small", "1", None).await {
                Err(e) => break e.to_string(),
                Ok(_) => assert!(
                    Instant::now() < deadline,
                    "no NOSPACE with {} bytes free, {} tables in level 0",
                    disk.available(),
                    level("strata_lsm_level_tables", 0)
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            refused.contains("etcdserver: mvcc: database space exceeded"),
            "{refused}"
        );
        let free = disk.available();
        assert!(
            free > reserve,
            "NOSPACE came from the reserve ({free} bytes free), not the held-back compaction"
        );
        assert_eq!(metric(&addr, "strata_lsm_compaction_no_space"), 1);
        c.get("big/000", None).await.expect("reads go on");

        // Room again, and the alarm disarmed at once, as an operator would (`etcdctl alarm
        // disarm`, each alarm by its member), before the compaction's retry (each second) has
        // found the room: the alarm must stay down and writes resume, with no second disarm.
        // (The held-back compaction, still recorded, is no cause once the disk has its room.)
        disk.free();
        let raised = c
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        assert!(!raised.alarms().is_empty(), "NOSPACE was never listed");
        for alarm in raised.alarms() {
            let mut options = AlarmOptions::new();
            options.with_member(alarm.member_id());
            c.alarm(AlarmAction::Deactivate, alarm.alarm(), Some(options))
                .await
                .expect("disarm");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match c.put("after", "1", None).await {
                Ok(_) => break,
                Err(e) => assert!(Instant::now() < deadline, "writes never resumed: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The retry finds the room; nothing raises the alarm again meanwhile.
        let deadline = Instant::now() + Duration::from_secs(60);
        while metric(&addr, "strata_lsm_compaction_no_space") != 0 {
            assert!(Instant::now() < deadline, "the compaction never found room");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let raised = c
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        assert!(
            raised.alarms().is_empty(),
            "an alarm came back after the disk was freed and disarmed: {:?}",
            raised
                .alarms()
                .iter()
                .map(|a| (a.member_id(), a.alarm()))
                .collect::<Vec<_>>()
        );
        c.put("after", "2", None)
            .await
            .expect("a put after the compaction ran");
    });
    drop(cluster);
    drop(disk);
}

/// The value of the metric `name` (with its labels) on the member at `addr`'s `/metrics`, 0 if
/// it has none.
fn metric(addr: &str, name: &str) -> u64 {
    http_get(addr, "/metrics")
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// One member whose data directory is on a tmpfs of `mib` MiB under `dir`, started with
/// `--disk-reserve-bytes reserve` and `flags`; `None` (the test skipped, and says so) when
/// not root. Drop the cluster before the disk.
fn member_on_small_disk(
    dir: &Path,
    mib: u64,
    reserve: &str,
    flags: &[&str],
) -> Option<(Cluster, SmallDisk)> {
    let disk = match SmallDisk::mount(&dir.join("disk"), mib) {
        Ok(disk) => disk,
        Err(e) if !is_root() => {
            eprintln!("skipped: a small file system needs root ({e})");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let spec = MemberSpec {
        data_dir: disk.path.join("m1"),
        ..MemberSpec::local(dir, "m1")
    };
    let program = [env!("CARGO_BIN_EXE_strata"), "server"];
    let cluster = Cluster::start_specs(
        &program,
        dir,
        vec![spec],
        &[&["--disk-reserve-bytes", reserve], flags].concat(),
    );
    Some((cluster, disk))
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Periodic auto-compaction: with a one-second retention, revisions older than a second are
/// compacted away by the server on its own.
#[test]
fn periodic_auto_compaction_compacts_old_revisions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(
        dir.path(),
        1,
        &[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1s",
        ],
    );
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        let mut c = wait_ready(&endpoints[0]).await;
        c.put("k", "1", None).await.expect("put");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Writes keep the current revision moving past the retention window.
            c.put("k", "2", None).await.expect("put");
            let old = c.get("k", Some(GetOptions::new().with_revision(2))).await;
            match old {
                Err(e)
                    if e.to_string()
                        .contains("required revision has been compacted") =>
                {
                    break;
                }
                Err(e) => panic!("unexpected error: {e}"),
                Ok(_) => {}
            }
            assert!(Instant::now() < deadline, "revision 2 was never compacted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// `GET /health`, `/version` and `/metrics` on the client port, beside gRPC (and gRPC's own
/// health service); the same HTTP endpoints alone on `--listen-metrics-urls` (without the JSON
/// gateway, which is the client API).
#[test]
fn the_client_port_answers_health_version_and_metrics_over_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let metrics_url = format!("http://{metrics_addr}");
    let cluster = Cluster::start(dir.path(), 1, &["--listen-metrics-urls", &metrics_url]);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        wait_ready(&endpoints[0]).await;
    });
    let addr = endpoints[0].trim_start_matches("http://").to_owned();
    let get = |path: &str| http_get(&addr, path);
    runtime().block_on(async {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;
        let channel = tonic::transport::Endpoint::from_shared(endpoints[0].clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut health = HealthClient::new(channel);
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("grpc.health.v1 Check")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    });
    let health = get("/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health.contains(r#"{"health":"true","reason":""}"#),
        "{health}"
    );
    let version = get("/version");
    assert!(version.contains(r#""etcdserver":"3.5.0""#), "{version}");
    // etcd's JSON gateway takes POST only (tests/server_gateway.rs).
    let gateway = get("/v3/kv/range");
    assert!(gateway.starts_with("HTTP/1.1 405"), "{gateway}");
    let metrics = get("/metrics");
    for name in [
        "etcd_server_has_leader 1",
        "etcd_server_is_leader 1",
        "etcd_mvcc_db_total_size_in_bytes",
        "process_resident_memory_bytes",
        "strata_grpc_requests_total{method=\"Range\"}",
        "strata_lsm_wal_bytes_total",
        "strata_lsm_no_space_retries_total 0",
        "strata_lsm_compaction_no_space 0",
        "etcd_server_slow_apply_total",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}:\n{metrics}");
    }
    // `--listen-metrics-urls`: the same HTTP endpoints on their own port, and no gRPC API.
    let health = http_get(&metrics_addr, "/health");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains(r#""health":"true""#),
        "{health}"
    );
    let metrics = http_get(&metrics_addr, "/metrics");
    assert!(metrics.contains("etcd_server_has_leader 1"), "{metrics}");
    let gateway = http_get(&metrics_addr, "/v3/kv/range");
    assert!(gateway.starts_with("HTTP/1.1 404"), "{gateway}");
    runtime().block_on(async {
        let mut kv = etcd_client::Client::connect([metrics_url.as_str()], None)
            .await
            .expect("connect (lazily) to the metrics port");
        match kv.get("k", None).await {
            Err(etcd_client::Error::GRpcStatus(status)) => {
                assert_eq!(status.code(), tonic::Code::Unimplemented, "{status}");
            }
            other => panic!("KV on the metrics port: {other:?}"),
        }
    });
}

/// `--logger zap --log-outputs FILE,stderr`: the log is JSON objects, one per line, in the file
/// and on stderr alike.
#[test]
fn the_log_is_json_with_zap_and_goes_to_every_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("member.log");
    let outputs = format!("{},stderr", file.display());
    let cluster = Cluster::start(
        &dir.path().join("c"),
        1,
        &["--logger", "zap", "--log-outputs", &outputs],
    );
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        wait_ready(&endpoints[0]).await;
    });
    let written = std::fs::read_to_string(&file).expect("the log file");
    let elected: Vec<&str> = written
        .lines()
        .filter(|l| l.contains("raft: role, term or leader changed"))
        .collect();
    assert!(!elected.is_empty(), "no election logged: {written}");
    for line in written.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}') && line.contains(r#""level":"#),
            "not a JSON object: {line}"
        );
    }
    // stderr (the cluster's log of the member) has the same events.
    let stderr = cluster.log(0);
    assert!(stderr.contains(elected[0]), "{stderr}");
}

/// Puts `count` keys `prefix{n}` at once through `endpoint` (one connection, its requests
/// multiplexed) and checks, through `check_at`, that each answer is that key's own: the
/// revision a put was answered with is the one its key was written at.
async fn concurrent_puts_answered_each_their_own(
    endpoint: &str,
    check_at: &str,
    prefix: &str,
    count: usize,
    value_bytes: usize,
) {
    // `value of KEY`, padded to `value_bytes`.
    let value_of = move |key: &str| {
        let mut value = format!("value of {key}");
        let pad = value_bytes.saturating_sub(value.len());
        value.extend(std::iter::repeat_n('.', pad));
        value
    };
    let c = client(&[endpoint.to_owned()]).await;
    let puts = (0..count).map(|n| {
        let mut c = c.clone();
        let key = format!("{prefix}{n}");
        tokio::spawn(async move {
            // Bounded: a leader that stops reading the stream must fail the test, not hang it.
            let revision = tokio::time::timeout(
                Duration::from_secs(60),
                c.put(key.as_str(), value_of(&key), None),
            )
            .await
            .unwrap_or_else(|_| panic!("put {key} unanswered"))
            .unwrap_or_else(|e| panic!("put {key}: {e}"))
            .header()
            .expect("header")
            .revision();
            (key, revision)
        })
    });
    let mut answered = Vec::new();
    for put in puts.collect::<Vec<_>>() {
        answered.push(put.await.expect("put task"));
    }
    let mut revisions: Vec<i64> = answered.iter().map(|(_, r)| *r).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        count,
        "two puts answered with one revision"
    );
    let mut check = client(&[check_at.to_owned()]).await;
    for (key, revision) in answered {
        let got = check.get(key.as_str(), None).await.expect("get");
        let kv = got.kvs().first().unwrap_or_else(|| panic!("{key} missing"));
        assert!(
            kv.value_str().expect("utf-8") == value_of(&key),
            "{key} holds another value"
        );
        assert_eq!(
            kv.mod_revision(),
            revision,
            "{key} answered with another put's revision"
        );
    }
}

/// The leader works on at most 64 MiB of one forwarding stream's requests at once
/// (`forward::IN_FLIGHT_BYTES`): 96 concurrent puts of 1 MiB through a follower wait for room
/// past it, and each is still answered with its own revision and holds its own value.
#[test]
fn large_forwarded_writes_past_the_leaders_byte_bound_are_each_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, FAST);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let leader = leader_index(&endpoints).await;
        let follower = &endpoints[(leader + 1) % 3];
        concurrent_puts_answered_each_their_own(follower, &endpoints[leader], "big/", 96, 1 << 20)
            .await;
    });
}

/// A follower forwards its clients' writes to the leader on one stream, many per message:
/// every concurrent write is answered with its own revision, and once the leader is killed
/// (the stream breaks), the follower opens one to the next leader and writes go on.
#[test]
fn a_followers_forwarded_writes_are_each_answered_and_survive_a_leader_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, FAST);
    let endpoints = cluster.endpoints();
    let rt = runtime();
    let leader = rt.block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let leader = leader_index(&endpoints).await;
        let follower = &endpoints[(leader + 1) % 3];
        concurrent_puts_answered_each_their_own(follower, &endpoints[leader], "before/", 500, 0)
            .await;
        leader
    });
    cluster.kill(leader);
    let survivors: Vec<String> = (1..3)
        .map(|k| endpoints[(leader + k) % 3].clone())
        .collect();
    rt.block_on(async {
        // Through the member that was a follower, whichever of the two leads now.
        let mut c = client(&survivors[..1]).await;
        put_retrying(&mut c, "after/first", "v").await;
        let now = leader_index(&survivors).await;
        let follower = &survivors[1 - now];
        concurrent_puts_answered_each_their_own(follower, &survivors[now], "after/", 200, 0).await;
    });
}
