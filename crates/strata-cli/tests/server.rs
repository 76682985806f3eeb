//! The server against real clients: three `strata server` processes on 127.0.0.1, driven by
//! the `etcd-client` crate (the same library many Rust services use against etcd).

mod support;

use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};
use support::cluster::{Cluster, client, free_port, runtime, wait_ready, wait_value};

/// What a client of etcd relies on, on every member: revisions, versions, txn, errors.
#[test]
fn etcd_client_sees_etcd_semantics_on_every_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &[]);
    runtime().block_on(async {
        let endpoints = cluster.endpoints();
        let mut c0 = wait_ready(&endpoints[0]).await;
        let mut c1 = wait_ready(&endpoints[1]).await;
        let mut c2 = wait_ready(&endpoints[2]).await;

        // One revision per write, from 2; versions count puts.
        let r = c0.put("foo", "bar", None).await.expect("put");
        let first = r.header().expect("header").revision();
        let r = c1
            .put("foo", "baz", Some(PutOptions::new().with_prev_key()))
            .await
            .expect("put via another member");
        assert_eq!(r.header().expect("header").revision(), first + 1);
        assert_eq!(r.prev_key().expect("prev kv").value(), b"bar");
        let got = c2.get("foo", None).await.expect("linearizable get");
        let kv = &got.kvs()[0];
        assert_eq!(
            (
                kv.value(),
                kv.version(),
                kv.create_revision(),
                kv.mod_revision()
            ),
            (&b"baz"[..], 2, first, first + 1)
        );
        // Serializable reads at the member that forwarded the write see it at once.
        let got = c1
            .get("foo", Some(GetOptions::new().with_serializable()))
            .await
            .expect("serializable get");
        assert_eq!(got.kvs()[0].value(), b"baz");

        // Ranges: prefix, limit with more and count, sort.
        for k in ["a/1", "a/2", "a/3"] {
            c0.put(k, k, None).await.expect("put");
        }
        let got = c2
            .get(
                "a/",
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_limit(2)
                        .with_sort(SortTarget::Key, SortOrder::Descend),
                ),
            )
            .await
            .expect("range");
        assert_eq!(got.count(), 3);
        assert!(got.more());
        let keys: Vec<&[u8]> = got.kvs().iter().map(|kv| kv.key()).collect();
        assert_eq!(keys, vec![&b"a/3"[..], b"a/2"]);

        // A txn: compare then branch, one revision for its writes.
        let before = c0
            .get("foo", None)
            .await
            .expect("get")
            .header()
            .expect("h")
            .revision();
        let txn = Txn::new()
            .when(vec![Compare::value("foo", CompareOp::Equal, "baz")])
            .and_then(vec![
                TxnOp::put("foo", "qux", None),
                TxnOp::put("other", "x", None),
            ])
            .or_else(vec![TxnOp::get("foo", None)]);
        let r = c1.txn(txn).await.expect("txn");
        assert!(r.succeeded());
        assert_eq!(r.header().expect("h").revision(), before + 1);

        // Deletes count what they removed; a delete of nothing makes no revision.
        let r = c2
            .delete("a/", Some(DeleteOptions::new().with_prefix()))
            .await
            .expect("delete");
        assert_eq!(r.deleted(), 3);
        let rev = r.header().expect("h").revision();
        let r = c0
            .delete("nothing-here", None)
            .await
            .expect("delete nothing");
        assert_eq!(r.header().expect("h").revision(), rev);

        // Compaction: older revisions are gone with etcd's error text; newer ones are read.
        c0.compact(rev, None).await.expect("compact");
        let e = c1
            .get("foo", Some(GetOptions::new().with_revision(rev - 1)))
            .await
            .expect_err("compacted");
        assert!(
            e.to_string()
                .contains("etcdserver: mvcc: required revision has been compacted"),
            "{e}"
        );
        let e = c1
            .get("foo", Some(GetOptions::new().with_revision(rev + 100)))
            .await
            .expect_err("future");
        assert!(
            e.to_string()
                .contains("etcdserver: mvcc: required revision is a future revision"),
            "{e}"
        );
        let e = c1.put("", "v", None).await.expect_err("empty key");
        assert!(
            e.to_string().contains("etcdserver: key is not provided"),
            "{e}"
        );

        // Every member agrees on the hash of the store at one revision (above the compacted
        // one: etcd refuses to hash at it).
        let top = c0
            .put("last", "1", None)
            .await
            .expect("put")
            .header()
            .expect("h")
            .revision();
        let mut hashes = Vec::new();
        for c in [&mut c0, &mut c1, &mut c2] {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let status = c.status().await.expect("status");
                if status.raft_applied_index() >= status.raft_index() {
                    break;
                }
                assert!(Instant::now() < deadline, "member did not catch up");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            hashes.push(c.hash_kv(top).await.expect("hashkv").hash());
        }
        assert!(
            hashes.windows(2).all(|w| w[0] == w[1]),
            "hashes differ: {hashes:?}"
        );

        // Members: three, named, with their client URLs.
        let list = c0.member_list().await.expect("member list");
        let mut names: Vec<&str> = list.members().iter().map(|m| m.name()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["m1", "m2", "m3"]);
    });
}

/// A delete of more than one LSM write holds (etcdctl check perf's clean-up of its keys is
/// one): applied whole on every member, which all go on serving. Before strata-mvcc wrote
/// large requests ahead, every member failed on this entry, for good.
#[test]
fn a_delete_larger_than_one_lsm_write_is_applied_on_every_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &[]);
    runtime().block_on(async {
        let endpoints = cluster.endpoints();
        let mut c = wait_ready(&endpoints[0]).await;
        // 10,000 keys of 1,000 bytes: their delete writes about 21 MB to the LSM, whose
        // batches hold at most 16 MiB by default.
        const KEYS: usize = 10_000;
        let key = |i: usize| {
            let mut key = format!("big/{i:05}/").into_bytes();
            key.resize(1_000, b'k');
            key
        };
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(128) {
            let puts: Vec<TxnOp> = chunk
                .iter()
                .map(|&i| TxnOp::put(key(i), "", None))
                .collect();
            c.txn(Txn::new().and_then(puts)).await.expect("load");
        }
        let deleted = c
            .delete("big/", Some(DeleteOptions::new().with_prefix()))
            .await
            .expect("delete the prefix");
        assert_eq!(deleted.deleted(), KEYS as i64);
        let revision = deleted.header().expect("header").revision();
        let mut hashes = Vec::new();
        for e in &endpoints {
            // Each member applied it (read there), and still takes writes.
            let mut c = client(std::slice::from_ref(e)).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let left = c
                    .get(
                        "big/",
                        Some(
                            GetOptions::new()
                                .with_prefix()
                                .with_count_only()
                                .with_serializable(),
                        ),
                    )
                    .await
                    .map_or(-1, |r| r.count());
                if left == 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "{e} still holds {left} keys");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            c.put("after", e.as_str(), None)
                .await
                .expect("a write after");
            hashes.push(c.hash_kv(revision).await.expect("hashkv").hash());
        }
        assert!(
            hashes.windows(2).all(|w| w[0] == w[1]),
            "hashes differ: {hashes:?}"
        );
    });
}

/// kill -9 of a member while a client writes (each of the other two in turn, the leader among
/// them whenever it is one): every acknowledged write is on every member once the killed ones
/// are back.
#[test]
fn kill9_of_a_member_during_writes_loses_no_acknowledged_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(
        dir.path(),
        3,
        &["--heartbeat-interval", "50", "--election-timeout", "500"],
    );
    let rt = runtime();
    let endpoints = cluster.endpoints();
    rt.block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let endpoint = endpoints[0].clone();
        rt.spawn(async move {
            let mut c = client(&[endpoint]).await;
            let mut acked = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("k{n:06}");
                n += 1;
                if c.put(key.as_str(), key.as_str(), None).await.is_ok() {
                    acked.push(key);
                }
            }
            acked
        })
    };
    let acked_so_far = |n: usize| {
        // Poll (bounded) until the writer got `n` more acknowledgements through.
        rt.block_on(async {
            let mut c = client(&endpoints[..1]).await;
            let start = c
                .get("k", Some(GetOptions::new().with_prefix().with_count_only()))
                .await
                .map_or(0, |r| r.count());
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let now = c
                    .get("k", Some(GetOptions::new().with_prefix().with_count_only()))
                    .await
                    .map_or(0, |r| r.count());
                if now >= start + n as i64 {
                    return;
                }
                assert!(Instant::now() < deadline, "writes stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for victim in [1, 2] {
        acked_so_far(50);
        cluster.kill(victim);
        acked_so_far(50);
        cluster.restart(victim);
    }
    acked_so_far(50);
    stop.store(true, Ordering::Relaxed);
    let acked = rt.block_on(writer).expect("writer");
    rt.block_on(async {
        let last = acked.last().expect("something was acknowledged");
        for e in &endpoints {
            wait_value(e, last, Some(last)).await;
            let mut c = client(std::slice::from_ref(e)).await;
            let got = c
                .get(
                    "k",
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_serializable()
                            .with_keys_only(),
                    ),
                )
                .await
                .expect("range");
            let keys: std::collections::BTreeSet<&[u8]> =
                got.kvs().iter().map(|kv| kv.key()).collect();
            for key in &acked {
                assert!(keys.contains(key.as_bytes()), "{e} lost acknowledged {key}");
            }
        }
    });
}

/// A member's LSM keeps no WAL of its own: after snapshots have compacted the Raft log, a
/// kill -9 still loses no acknowledged write. The snapshots flushed the LSM before the log was
/// compacted behind them (its tables hold data, though no memtable filled), and the restart
/// re-applies the rest of the log.
#[test]
fn kill9_after_snapshots_compacted_the_log_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 1, &["--snapshot-count", "100"]);
    let rt = runtime();
    let endpoint = cluster.endpoints()[0].clone();
    let written = 1_000;
    let db = cluster.members[0].spec.data_dir.join("member").join("db");
    // The LSM's tables, by file name: what flushes wrote.
    let tables = || -> std::collections::BTreeSet<std::ffi::OsString> {
        std::fs::read_dir(&db)
            .expect("the member's LSM")
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
            .map(|e| e.file_name())
            .collect()
    };
    rt.block_on(wait_ready(&endpoint));
    let before = tables();
    rt.block_on(async {
        let mut c = wait_ready(&endpoint).await;
        for i in 0..written {
            let key = format!("k{i:05}");
            c.put(key.as_str(), key.as_str(), None).await.expect("put");
        }
    });
    // 1,000 small puts fill no memtable: only the snapshots' flushes wrote new tables.
    assert!(!tables().is_subset(&before), "no snapshot flushed the LSM");
    cluster.kill(0);
    cluster.restart(0);
    rt.block_on(async {
        let mut c = wait_ready(&endpoint).await;
        let got = c
            .get("k", Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .expect("range");
        assert_eq!(got.count(), written, "acknowledged puts after the restart");
        let last = format!("k{:05}", written - 1);
        wait_value(&endpoint, &last, Some(&last)).await;
    });
}

/// The README's main command: `strata dev` starts three members on etcd's development ports,
/// prints the endpoints, serves etcd's clients and the Kvdb service, and stops on Ctrl-C.
#[test]
fn strata_dev_serves_three_members_and_stops_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["dev", "--data-dir", &dir.path().to_string_lossy()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn strata dev");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("read");
        let done = line.contains("Ctrl-C");
        printed.push(line);
        if done {
            break;
        }
    }
    let endpoints = "http://127.0.0.1:2379,http://127.0.0.1:22379,http://127.0.0.1:32379";
    assert!(printed.iter().any(|l| l.contains(endpoints)), "{printed:?}");
    runtime().block_on(async {
        let mut c = wait_ready("http://127.0.0.1:22379").await;
        c.put("greeting", "hello", None).await.expect("put");
        wait_value("http://127.0.0.1:32379", "greeting", Some("hello")).await;
        let list = c.member_list().await.expect("member list");
        let mut names: Vec<&str> = list.members().iter().map(|m| m.name()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["infra1", "infra2", "infra3"]);
    });
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(interrupted.success());
    let status = child.wait().expect("wait");
    assert!(status.success(), "strata dev exited with {status}");
    assert!(lines.any(|l| l.is_ok_and(|l| l.contains("stopping"))));
}

/// A signal that ends a member leaves a line in its log naming the signal and its sender, and
/// the member still ends by that signal (its exit status names it). Before, `SIGHUP` ended it
/// with nothing in the log, and a first `SIGBUS` from `kill` was swallowed by the standard
/// library's stack overflow handler.
#[cfg(unix)]
#[test]
fn a_signal_that_ends_a_member_is_said_in_its_log() {
    use std::os::unix::process::ExitStatusExt;
    for (signal, number) in [("HUP", 1), ("BUS", 7)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = Cluster::start(dir.path(), 1, &[]);
        runtime().block_on(async {
            wait_ready(&cluster.endpoints()[0]).await;
        });
        let pid = cluster.pid(0).expect("the member runs");
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let status = cluster.wait_exited(0, Duration::from_secs(10));
        assert_eq!(status.signal(), Some(number), "SIG{signal}: {status}");
        let log = cluster.log(0);
        assert!(
            log.lines().any(|l| l.starts_with(&format!(
                "strata: fatal signal SIG{signal} sent by process "
            )) && l.contains(", in thread ")),
            "SIG{signal}: {log}"
        );
    }
}

/// A member runs without transparent huge pages (`thp.rs`), unless `MIMALLOC_ALLOW_THP` in its
/// environment leaves them to mimalloc and the system.
#[test]
fn a_member_turns_transparent_huge_pages_off_unless_told_not_to() {
    let thp_enabled = |pid: u32| -> Option<String> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .map(|v| v.trim().to_owned())
    };
    // A kernel built without them says 0 for every process, and an old one says nothing.
    if thp_enabled(std::process::id()).as_deref() != Some("1") {
        eprintln!("skipped: this kernel gives the test process no transparent huge pages");
        return;
    }
    for (program, expected) in [
        (vec![env!("CARGO_BIN_EXE_strata"), "server"], "0"),
        (
            vec![
                "env",
                "MIMALLOC_ALLOW_THP=1",
                env!("CARGO_BIN_EXE_strata"),
                "server",
            ],
            "1",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cluster = Cluster::start_program(&program, dir.path(), 1, &[]);
        runtime().block_on(async {
            wait_ready(&cluster.endpoints()[0]).await;
        });
        let pid = cluster.pid(0).expect("the member runs");
        assert_eq!(
            thp_enabled(pid).as_deref(),
            Some(expected),
            "{program:?}: {}",
            cluster.log(0)
        );
    }
}

/// A member's stderr is its log, as etcd's is: warnings about its flags and its Raft role
/// changes at the default level (`info`), nothing below `--log-level`.
#[test]
fn the_log_shows_warnings_and_role_changes_down_to_the_chosen_level() {
    const RISKY: [&str; 2] = ["--quota-backend-bytes", "9000000000"];
    let dir = tempfile::tempdir().expect("tempdir");
    let default = Cluster::start(&dir.path().join("default"), 1, &RISKY);
    let quiet = Cluster::start(
        &dir.path().join("quiet"),
        1,
        &[RISKY[0], RISKY[1], "--log-level", "error"],
    );
    let rt = runtime();
    rt.block_on(async {
        wait_ready(&default.endpoints()[0]).await;
        wait_ready(&quiet.endpoints()[0]).await;
    });
    let log = default.log(0);
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("--quota-backend-bytes exceeds 8 GiB")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO ") && l.contains("role=Leader")),
        "{log}"
    );
    let log = quiet.log(0);
    assert!(log.contains("serving clients on"), "{log}");
    assert!(
        !log.contains(" WARN ") && !log.contains(" INFO "),
        "--log-level error: {log}"
    );
}

/// `--max-concurrent-streams 1`: a connection with a watch stream open has no room for a
/// second call until the watch ends (HTTP/2's limit, which the client obeys).
#[test]
fn max_concurrent_streams_bounds_the_calls_of_one_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 1, &["--max-concurrent-streams", "1"]);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        wait_ready(&endpoints[0]).await;
        let mut c = client(&endpoints).await;
        c.get("k", None).await.expect("a call alone");
        let stream = c.watch("k", None).await.expect("watch");
        let waiting = tokio::time::timeout(Duration::from_millis(500), c.get("k", None)).await;
        assert!(waiting.is_err(), "a second stream opened: {waiting:?}");
        drop(stream);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout(Duration::from_millis(500), c.get("k", None)).await {
                Ok(answer) => {
                    answer.expect("get once the watch ended");
                    break;
                }
                Err(_) => assert!(Instant::now() < deadline, "the watch never ended"),
            }
        }
    });
}

/// `--wal-dir`: the Raft log lives there (nothing under the data dir's `member/log`), a
/// restart with it holds every write, and a restart without it is refused with a message
/// that names the flag, rather than starting on an empty log.
#[test]
fn the_raft_log_lives_in_the_wal_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal = dir.path().join("fast-disk").join("wal");
    let wal_flag = wal.display().to_string();
    let mut cluster = Cluster::start(dir.path(), 1, &["--wal-dir", &wal_flag]);
    let endpoint = cluster.endpoints()[0].clone();
    runtime().block_on(async {
        let mut c = wait_ready(&endpoint).await;
        for i in 0..100 {
            c.put(format!("k{i:03}"), "v", None).await.expect("put");
        }
    });
    let member_log = cluster.members[0].spec.data_dir.join("member").join("log");
    assert!(!member_log.exists(), "a log under the data dir");
    let files = std::fs::read_dir(&wal).expect("the wal dir").count();
    assert!(files > 0, "nothing in --wal-dir");
    cluster.kill(0);
    cluster.restart(0);
    runtime().block_on(async {
        let mut c = wait_ready(&endpoint).await;
        let got = c
            .get("k", Some(GetOptions::new().with_prefix().with_count_only()))
            .await
            .expect("count");
        assert_eq!(got.count(), 100, "writes after a restart with --wal-dir");
    });

    cluster.kill(0);
    cluster.extra.clear();
    cluster.restart(0);
    let status = cluster.wait_exited(0, Duration::from_secs(30));
    assert!(!status.success());
    let log = cluster.log(0);
    assert!(
        log.contains("has no Raft log at") && log.contains("--wal-dir"),
        "{log}"
    );
    assert!(!member_log.exists(), "an empty log was started");
}

/// `--config-file`: a member started from etcd's YAML file takes its settings from the file
/// alone, as etcd does: a flag and an `ETCD_*` variable given with it are ignored, and so are
/// the keys of etcd's that Strata has no flag for, each with a warning in the log.
#[test]
fn a_member_runs_from_an_etcd_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client_port, peer_port) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let file = dir.path().join("etcd.conf.yml");
    std::fs::write(
        &file,
        format!(
            "name: from-file\n\
             data-dir: {data}\n\
             listen-client-urls: {client_url}\n\
             advertise-client-urls: {client_url}\n\
             listen-peer-urls: {peer_url}\n\
             initial-advertise-peer-urls: {peer_url}\n\
             initial-cluster: from-file={peer_url}\n\
             initial-cluster-token: 'file-cluster'\n\
             enable-v2: true\n\
             max-wals: 5\n\
             log-outputs: [stderr]\n\
             unsafe-no-fsync: false\n\
             client-transport-security:\n  client-cert-auth: false\n  auto-tls: false\n",
            data = dir.path().join("data").display()
        ),
    )
    .expect("write the file");
    let log = dir.path().join("member.log");
    let mut member = std::process::Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["server", "--config-file"])
        .arg(&file)
        .args(["--name", "from-flag"])
        .env("ETCD_NAME", "from-environment")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let names = runtime().block_on(async {
        let mut c = wait_ready(&client_url).await;
        c.put("k", "v", None).await.expect("put");
        let list = c.member_list().await.expect("member list");
        list.members()
            .iter()
            .map(|m| m.name().to_owned())
            .collect::<Vec<_>>()
    });
    let _ = member.kill();
    let _ = member.wait();
    assert_eq!(names, ["from-file"]);
    let log = std::fs::read_to_string(&log).expect("read the log");
    for warned in [
        "--enable-v2=true ignored",
        "--max-wals=5 ignored",
        // etcd 3.5's key for a feature Strata does not have, left off: noted.
        "unsafe-no-fsync: \"false\" ignored",
        "the other flags and ETCD_* variables given are ignored",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(" WARN ") && l.contains(warned)),
            "{warned}: {log}"
        );
    }
}
