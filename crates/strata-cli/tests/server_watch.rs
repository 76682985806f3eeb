//! Watch against real processes, driven by the etcd-client crate: history then live events,
//! exactly once and in order, from any member; a compacted start revision cancels the watcher
//! with the compact revision, as etcd does; a client that resumes from its last revision on
//! another member after a leader dies or a member restarts loses and repeats nothing; a watcher
//! that does not read while many events are written gets them all later; big responses are
//! fragmented for watchers that ask, and split at revisions for the others.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, Txn, TxnOp, WatchOptions};
use support::cluster::{Cluster, FAST, client, leader_index, runtime, wait_ready};

/// Reads watch responses until `n` events came (bounded); returns them as (type, key, value,
/// mod revision).
async fn take_events(
    stream: &mut etcd_client::WatchStream,
    n: usize,
) -> Vec<(EventType, String, String, i64)> {
    let mut got = Vec::new();
    while got.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("events in time")
            .expect("a watch response")
            .expect("the stream is open");
        // Everything up to a response's header revision has been sent: its events are
        // never past it, and come in revision order.
        let revisions: Vec<i64> = message
            .events()
            .iter()
            .map(|e| e.kv().expect("kv").mod_revision())
            .collect();
        assert!(revisions.is_sorted(), "{revisions:?}");
        if let (Some(last), Some(header)) = (revisions.last(), message.header()) {
            assert!(*last <= header.revision(), "{revisions:?} past {header:?}");
        }
        for e in message.events() {
            let kv = e.kv().expect("kv");
            got.push((
                e.event_type(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision(),
            ));
        }
    }
    got
}

#[test]
fn watchers_see_history_then_live_events_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &[]);
    let endpoints = cluster.endpoints();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            for e in &endpoints {
                wait_ready(e).await;
            }
            let mut c = client(&endpoints[..1]).await;
            let first = c
                .put("w/a", "1", None)
                .await
                .expect("put")
                .header()
                .expect("h")
                .revision();
            c.put("w/b", "2", None).await.expect("put");
            c.put("other", "x", None).await.expect("put");
            c.delete("w/a", None).await.expect("delete");

            // From the first revision, on another member: the history, then what comes next.
            let mut w = client(&endpoints[2..3]).await;
            let mut stream = w
                .watch(
                    "w/",
                    Some(WatchOptions::new().with_prefix().with_start_revision(first)),
                )
                .await
                .expect("watch");
            let history = take_events(&mut stream, 3).await;
            assert_eq!(
                history,
                vec![
                    (EventType::Put, "w/a".to_owned(), "1".to_owned(), first),
                    (EventType::Put, "w/b".to_owned(), "2".to_owned(), first + 1),
                    (
                        EventType::Delete,
                        "w/a".to_owned(),
                        String::new(),
                        first + 3
                    ),
                ]
            );
            for i in 0..50 {
                c.put(format!("w/live{i:02}"), i.to_string(), None)
                    .await
                    .expect("put");
            }
            let live = take_events(&mut stream, 50).await;
            let revisions: Vec<i64> = live.iter().map(|e| e.3).collect();
            let expected: Vec<i64> = (first + 4..first + 54).collect();
            assert_eq!(revisions, expected, "each live event once, in order");

            // Compacted history cancels the watcher with the compact revision.
            let now = c
                .put("w/last", "z", None)
                .await
                .expect("put")
                .header()
                .expect("h")
                .revision();
            c.compact(now, None).await.expect("compact");
            let mut late = w
                .watch(
                    "w/",
                    Some(WatchOptions::new().with_prefix().with_start_revision(first)),
                )
                .await
                .expect("watch");
            let canceled = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    let m = late.message().await.expect("response").expect("open");
                    if m.canceled() {
                        return m;
                    }
                }
            })
            .await
            .expect("a cancel in time");
            assert_eq!(canceled.compact_revision(), now);
        });
}

/// The Lock service (what etcd-client's `lock` calls): the second locker waits until the first
/// unlocks, and a lock held on a lease goes with the lease.
/// A watcher that asks for progress notifications gets, while idle, a response with no events
/// whose header revision is the store's, every
/// `--experimental-watch-progress-notify-interval`; one that did not ask gets none.
#[test]
fn idle_watchers_that_ask_get_progress_notifications_at_the_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut extra = FAST.to_vec();
    extra.extend(["--experimental-watch-progress-notify-interval", "200ms"]);
    let cluster = Cluster::start(dir.path(), 1, &extra);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        let mut c = wait_ready(&endpoints[0]).await;
        // Two watchers on one stream: ids 5 (no progress) and 7 (progress).
        let mut stream = c
            .watch(
                "quiet",
                Some(WatchOptions::new().with_prefix().with_watch_id(5)),
            )
            .await
            .expect("a watcher without progress");
        stream
            .watch(
                "p",
                Some(WatchOptions::new().with_progress_notify().with_watch_id(7)),
            )
            .await
            .expect("a watcher with progress");
        let revision = c
            .put("p", "1", None)
            .await
            .expect("put")
            .header()
            .map_or(0, |h| h.revision());
        let started = Instant::now();
        let mut notified = Vec::new();
        while notified.len() < 3 {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("responses in time")
                .expect("a watch response")
                .expect("the stream is open");
            assert!(
                message.watch_id() != 5 || message.created(),
                "a watcher that did not ask: {message:?}"
            );
            if message.events().is_empty() && !message.created() {
                assert_eq!(message.watch_id(), 7);
                assert_eq!(message.header().map(|h| h.revision()), Some(revision));
                notified.push(started.elapsed());
            }
        }
        // Three at 200 ms apart, not etcd's default 10 minutes.
        assert!(notified[2] < Duration::from_secs(5), "{notified:?}");
    });
}

#[test]
fn locks_are_held_in_turn_and_go_with_their_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &[]);
    let endpoints = cluster.endpoints();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            for e in &endpoints {
                wait_ready(e).await;
            }
            let mut a = client(&endpoints[..1]).await;
            let mut b = client(&endpoints[1..2]).await;
            let lease_a = a.lease_grant(60, None).await.expect("grant").id();
            let lease_b = b.lease_grant(60, None).await.expect("grant").id();
            let held = a
                .lock(
                    "job",
                    Some(etcd_client::LockOptions::new().with_lease(lease_a)),
                )
                .await
                .expect("lock");
            let key = held.key().to_vec();
            assert!(key.starts_with(b"job/"));
            let mut waiting = tokio::spawn(async move {
                b.lock(
                    "job",
                    Some(etcd_client::LockOptions::new().with_lease(lease_b)),
                )
                .await
                .map(|r| r.key().to_vec())
            });
            // Still waiting while the first holds it.
            assert!(
                tokio::time::timeout(Duration::from_millis(500), &mut waiting)
                    .await
                    .is_err(),
                "the second locker got the lock while it was held"
            );
            a.unlock(key).await.expect("unlock");
            let second = tokio::time::timeout(Duration::from_secs(10), waiting)
                .await
                .expect("the lock passed on in time")
                .expect("task")
                .expect("lock");
            assert!(second.starts_with(b"job/"));
            // The second holder's lease goes: so does its lock, and a third locker gets it.
            a.lease_revoke(lease_b).await.expect("revoke");
            let lease_c = a.lease_grant(60, None).await.expect("grant").id();
            let third = tokio::time::timeout(
                Duration::from_secs(10),
                a.lock(
                    "job",
                    Some(etcd_client::LockOptions::new().with_lease(lease_c)),
                ),
            )
            .await
            .expect("in time")
            .expect("lock");
            assert!(third.key().starts_with(b"job/"));
        });
}

/// The Election service (what etcd-client's `campaign` calls): one leader at a time, the next
/// candidate leads once the first resigns, observers see each leader, proclaim needs the key.
#[test]
fn elections_have_one_leader_at_a_time_and_observers_see_each() {
    use etcd_client::{ProclaimOptions, ResignOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &[]);
    let endpoints = cluster.endpoints();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            for e in &endpoints {
                wait_ready(e).await;
            }
            let mut a = client(&endpoints[..1]).await;
            let mut b = client(&endpoints[1..2]).await;
            let mut o = client(&endpoints[2..3]).await;
            let lease_a = a.lease_grant(60, None).await.expect("grant").id();
            let lease_b = b.lease_grant(60, None).await.expect("grant").id();
            let won = a
                .campaign("chief", "alice", lease_a)
                .await
                .expect("campaign");
            let leader_a = won.leader().expect("leader key").clone();
            let mut observed = o.observe("chief").await.expect("observe");
            let first = tokio::time::timeout(Duration::from_secs(10), observed.message())
                .await
                .expect("in time")
                .expect("message")
                .expect("open");
            assert_eq!(first.kv().expect("kv").value(), b"alice");
            let mut waiting =
                tokio::spawn(async move { b.campaign("chief", "bob", lease_b).await.map(|_| b) });
            assert!(
                tokio::time::timeout(Duration::from_millis(500), &mut waiting)
                    .await
                    .is_err(),
                "a second candidate led while the first did"
            );
            a.proclaim(
                "alice-2",
                Some(ProclaimOptions::new().with_leader(leader_a.clone())),
            )
            .await
            .expect("proclaim");
            let now = a.leader("chief").await.expect("leader");
            assert_eq!(now.kv().expect("kv").value(), b"alice-2");
            a.resign(Some(ResignOptions::new().with_leader(leader_a.clone())))
                .await
                .expect("resign");
            let mut b = tokio::time::timeout(Duration::from_secs(10), waiting)
                .await
                .expect("the next candidate led in time")
                .expect("task")
                .expect("campaign");
            assert_eq!(
                b.leader("chief")
                    .await
                    .expect("leader")
                    .kv()
                    .expect("kv")
                    .value(),
                b"bob"
            );
            // The observer saw the proclamation, then the new leader.
            let mut values = Vec::new();
            while values.last().map(Vec::as_slice) != Some(&b"bob"[..]) {
                let m = tokio::time::timeout(Duration::from_secs(10), observed.message())
                    .await
                    .expect("in time")
                    .expect("message")
                    .expect("open");
                values.push(m.kv().expect("kv").value().to_vec());
            }
            assert_eq!(values, vec![b"alice-2".to_vec(), b"bob".to_vec()]);
            // A resigned leader cannot proclaim.
            let refused = a
                .proclaim("late", Some(ProclaimOptions::new().with_leader(leader_a)))
                .await
                .expect_err("not the leader");
            assert!(
                refused.to_string().contains("election: not leader"),
                "{refused}"
            );
        });
}

/// One event as the tests compare them: (type, key, value, mod revision).
type Seen = (EventType, String, String, i64);

fn seen(e: &etcd_client::Event) -> Seen {
    let kv = e.kv().expect("an event has a kv");
    (
        e.event_type(),
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
        kv.mod_revision(),
    )
}

/// The key whose put ends a run of writes: every watcher reads until it sees it.
const END_KEY: &str = "r/~end";

/// What a client does when its watch stream breaks: it watches `prefix` again from its last
/// revision + 1 on the next member of `endpoints`, until it has seen [`END_KEY`] (bounded by
/// `within`). Returns every event it saw, in order, and how many times it resumed.
async fn watch_resuming(
    endpoints: Vec<String>,
    first: usize,
    prefix: &str,
    from_revision: i64,
    within: Duration,
) -> (Vec<Seen>, usize) {
    let deadline = Instant::now() + within;
    let mut events: Vec<Seen> = Vec::new();
    let mut next = from_revision;
    let mut resumes = 0;
    let mut member = first;
    'watch: loop {
        assert!(
            Instant::now() < deadline,
            "the watcher did not see the end in {within:?}: {} events, {resumes} resumes",
            events.len()
        );
        let endpoint = &endpoints[member % endpoints.len()];
        if let Ok(mut c) = Client::connect([endpoint.as_str()], None).await
            && let Ok(mut stream) = c
                .watch(
                    prefix,
                    Some(WatchOptions::new().with_prefix().with_start_revision(next)),
                )
                .await
        {
            // Read until the end, the stream breaks, or it stays silent too long (a member
            // partitioned without a reset looks like that).
            while let Ok(Ok(Some(message))) =
                tokio::time::timeout(Duration::from_secs(5), stream.message()).await
            {
                if message.canceled() {
                    break;
                }
                for e in message.events() {
                    let e = seen(e);
                    next = e.3 + 1;
                    let end = e.1 == END_KEY;
                    events.push(e);
                    if end {
                        break 'watch;
                    }
                }
            }
        }
        resumes += 1;
        member += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (events, resumes)
}

/// Writes `r/NNNN` keys through `endpoints` (a client per member, the next one after an
/// error) until `stop` is set, then puts [`END_KEY`]. Returns the writes acknowledged (key and
/// revision) and the keys whose put failed (applied or not: the client cannot know).
async fn write_until(
    endpoints: Vec<String>,
    acked: Arc<Mutex<Vec<(String, i64)>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<String> {
    let mut clients = Vec::new();
    for e in &endpoints {
        clients.push(
            Client::connect([e.as_str()], None)
                .await
                .expect("a lazy client"),
        );
    }
    let mut failed = Vec::new();
    let mut member = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 0;
    loop {
        let done = stop.load(std::sync::atomic::Ordering::SeqCst);
        let key = if done {
            END_KEY.to_owned()
        } else {
            format!("r/{i:05}")
        };
        let n = clients.len();
        let c = &mut clients[member % n];
        let put = tokio::time::timeout(
            Duration::from_secs(5),
            c.put(key.as_str(), format!("v{i}"), None),
        )
        .await;
        match put {
            Ok(Ok(r)) => {
                let revision = r.header().expect("a header").revision();
                acked.lock().expect("not poisoned").push((key, revision));
                if done {
                    return failed;
                }
            }
            _ => {
                assert!(Instant::now() < deadline, "writes did not resume in time");
                if !done {
                    failed.push(key);
                }
                member += 1;
            }
        }
        i += 1;
    }
}

/// Polls (bounded) until `n` writes have been acknowledged.
async fn wait_acked(acked: &Mutex<Vec<(String, i64)>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("not poisoned").len() < n {
        assert!(
            Instant::now() < deadline,
            "{n} writes not acknowledged in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a fault does to the cluster while the writes go on.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL the leader.
    KillLeader,
    /// SIGKILL a follower, then start it again.
    RestartFollower,
}

/// Watchers on a follower and on the leader while writes go on and `fault` happens; each
/// resumes from its last revision + 1 on another member when its stream breaks. Each must see
/// exactly the store's history of the prefix: every acknowledged write, a failed write at most
/// once (it may or may not have been applied), nothing twice, in revision order.
fn watchers_resume_through(fault: Fault) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, FAST);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let leader = leader_index(&endpoints).await;
        let follower = (leader + 1) % endpoints.len();
        let from = client(&endpoints[leader..=leader])
            .await
            .put("before", "x", None)
            .await
            .expect("put")
            .header()
            .expect("header")
            .revision()
            + 1;
        let within = Duration::from_secs(120);
        let on_leader = tokio::spawn(watch_resuming(
            endpoints.clone(),
            leader,
            "r/",
            from,
            within,
        ));
        let on_follower = tokio::spawn(watch_resuming(
            endpoints.clone(),
            follower,
            "r/",
            from,
            within,
        ));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = tokio::spawn(write_until(
            endpoints.clone(),
            Arc::clone(&acked),
            Arc::clone(&stop),
        ));

        wait_acked(&acked, 100).await;
        let victim = match fault {
            Fault::KillLeader => leader,
            Fault::RestartFollower => follower,
        };
        cluster.kill(victim);
        let at_kill = acked.lock().expect("not poisoned").len();
        wait_acked(&acked, at_kill + 100).await;
        if let Fault::RestartFollower = fault {
            cluster.restart(victim);
            wait_ready(&endpoints[victim]).await;
            let at_restart = acked.lock().expect("not poisoned").len();
            wait_acked(&acked, at_restart + 100).await;
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let failed = writer.await.expect("the writer");
        let acked = acked.lock().expect("not poisoned").clone();
        let (_, end) = acked.last().cloned().expect("the end was acknowledged");

        // The store's history of the prefix, caught up from a member that never went away.
        let survivor = (victim + 2) % endpoints.len();
        let mut c = client(&endpoints[survivor..=survivor]).await;
        let mut stream = c
            .watch(
                "r/",
                Some(WatchOptions::new().with_prefix().with_start_revision(from)),
            )
            .await
            .expect("watch");
        let mut history: Vec<Seen> = Vec::new();
        while history.last().is_none_or(|e| e.3 < end) {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("history in time")
                .expect("a response")
                .expect("open");
            history.extend(message.events().iter().map(seen));
        }
        assert!(
            history.windows(2).all(|w| w[0].3 < w[1].3),
            "one event per revision, in order"
        );
        let in_history: std::collections::BTreeMap<&str, i64> =
            history.iter().map(|e| (e.1.as_str(), e.3)).collect();
        for (key, revision) in &acked {
            assert_eq!(
                in_history.get(key.as_str()),
                Some(revision),
                "acknowledged write {key} at {revision} is in the history"
            );
        }
        let acked_keys: std::collections::BTreeSet<&str> =
            acked.iter().map(|(k, _)| k.as_str()).collect();
        for e in &history {
            assert!(
                acked_keys.contains(e.1.as_str()) || failed.contains(&e.1),
                "{e:?} was never written"
            );
        }

        let (leader_events, leader_resumes) = on_leader.await.expect("the leader's watcher");
        let (follower_events, _) = on_follower.await.expect("the follower's watcher");
        assert_eq!(
            leader_events, history,
            "the leader's watcher saw the history"
        );
        assert_eq!(
            follower_events, history,
            "the follower's watcher saw the history"
        );
        if let Fault::KillLeader = fault {
            assert!(
                leader_resumes >= 1,
                "the leader's watcher never had to resume"
            );
        }
        if let Fault::RestartFollower = fault {
            // The restarted member serves the whole history from its own store.
            let (again, _) = watch_resuming(endpoints.clone(), victim, "r/", from, within).await;
            assert_eq!(again, history, "the restarted member's history");
        }
    });
}

#[test]
fn watchers_resume_after_the_leader_dies_with_nothing_lost_or_repeated() {
    watchers_resume_through(Fault::KillLeader);
}

#[test]
fn watchers_resume_after_a_member_restarts_with_nothing_lost_or_repeated() {
    watchers_resume_through(Fault::RestartFollower);
}

/// A watcher whose client reads nothing while far more events are written than its flow-control
/// window, the stream's queue and the watcher's buffer hold together: the server falls back to
/// the store for it, and once the client reads it gets every event, once, in order.
#[test]
fn a_watcher_that_stops_reading_gets_every_event_once_when_it_reads_again() {
    const TXNS: usize = 40;
    const PUTS_PER_TXN: usize = 100;
    const VALUE_BYTES: usize = 8 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 1, &[]);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        wait_ready(&endpoints[0]).await;
        let mut c = client(&endpoints).await;
        let mut w = client(&endpoints).await;
        // Live from now: the created reply is read, then nothing until every write is done.
        let mut stream = w
            .watch("slow/", Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch");
        let value = "v".repeat(VALUE_BYTES);
        let mut revisions = Vec::new();
        for t in 0..TXNS {
            let puts: Vec<TxnOp> = (0..PUTS_PER_TXN)
                .map(|p| TxnOp::put(format!("slow/{t:03}/{p:03}"), value.as_str(), None))
                .collect();
            let r = c.txn(Txn::new().and_then(puts)).await.expect("txn");
            revisions.push(r.header().expect("header").revision());
        }
        // 40 revisions of 100 events, 32 MiB in all.
        let mut got: Vec<(String, i64)> = Vec::new();
        while got.len() < TXNS * PUTS_PER_TXN {
            let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .expect("events in time")
                .expect("a response")
                .expect("open");
            for e in message.events() {
                let kv = e.kv().expect("kv");
                assert_eq!(kv.value().len(), VALUE_BYTES);
                got.push((
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.mod_revision(),
                ));
            }
        }
        let expected: Vec<(String, i64)> = (0..TXNS)
            .flat_map(|t| {
                let revision = revisions[t];
                (0..PUTS_PER_TXN).map(move |p| (format!("slow/{t:03}/{p:03}"), revision))
            })
            .collect();
        assert_eq!(got, expected, "every event once, in order");
    });
}

/// Big values: a watcher that asks for fragments gets responses under `--max-request-bytes`
/// (each part of one with two events or more), `fragment` set on all parts but the last; the
/// parts rejoin to every event, both for a catch-up (20 revisions, 420 KiB) and for a live
/// revision (two puts of 20 KiB, 80 KiB with their previous values). One that does not ask, with
/// etcd-client's default 4 MiB receive limit, still gets a catch-up of 6 MiB (etcd sends it as
/// one response, which that client cannot receive).
#[test]
fn big_responses_are_fragmented_on_request_and_split_at_revisions_otherwise() {
    use strata_server::proto::etcdserverpb::watch_client::WatchClient;
    use strata_server::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};
    use tonic::codegen::tokio_stream::{self, StreamExt};
    const LIMIT_BYTES: usize = 64 * 1024;
    const VALUE_BYTES: usize = 20 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let limit = LIMIT_BYTES.to_string();
    let cluster = Cluster::start(dir.path(), 1, &["--max-request-bytes", &limit]);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        wait_ready(&endpoints[0]).await;
        let mut c = client(&endpoints).await;
        let value = "f".repeat(VALUE_BYTES);
        let mut expected = Vec::new();
        let mut first = 0;
        for i in 0..20 {
            let r = c
                .put(format!("f/{i:02}"), value.as_str(), None)
                .await
                .expect("put");
            let revision = r.header().expect("header").revision();
            if i == 0 {
                first = revision;
            }
            expected.push((format!("f/{i:02}"), revision));
        }

        // Both clients catch up from `first`, with previous values and fragments.
        let mut w = client(&endpoints).await;
        let mut stream = w
            .watch(
                "f/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(first)
                        .with_prev_key()
                        .with_fragment(),
                ),
            )
            .await
            .expect("watch");
        let mut raw = WatchClient::connect(endpoints[0].clone())
            .await
            .expect("connect");
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: b"f/".to_vec(),
                    range_end: b"f0".to_vec(),
                    start_revision: first,
                    prev_kv: true,
                    fragment: true,
                    ..WatchCreateRequest::default()
                },
            )),
        };
        let requests = tokio_stream::iter(vec![create]).chain(tokio_stream::pending());
        let mut responses = raw.watch(requests).await.expect("watch").into_inner();

        // etcd-client: every response small; the events come in order.
        let read = async |stream: &mut etcd_client::WatchStream, n: usize| {
            let mut got = Vec::new();
            let mut messages = 0;
            while got.len() < n {
                let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
                    .await
                    .expect("events in time")
                    .expect("a response")
                    .expect("open");
                let bytes: usize = message
                    .events()
                    .iter()
                    .map(|e| {
                        let kv = e.kv().expect("kv");
                        kv.key().len()
                            + kv.value().len()
                            + e.prev_kv().map_or(0, |p| p.value().len())
                    })
                    .sum();
                assert!(
                    message.events().len() <= 1 || bytes < LIMIT_BYTES,
                    "a response of {} events and {bytes} bytes",
                    message.events().len()
                );
                messages += usize::from(!message.events().is_empty());
                for e in message.events() {
                    let kv = e.kv().expect("kv");
                    got.push((
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        kv.mod_revision(),
                    ));
                }
            }
            (got, messages)
        };
        // The generated client sees the flags: parts rejoin to whole responses.
        let mut read_raw = async |n: usize| {
            let mut rejoined: Vec<Vec<(String, i64)>> = Vec::new();
            let mut open = false;
            let mut events = 0;
            let mut fragments = 0;
            while events < n || open {
                let r = tokio::time::timeout(Duration::from_secs(10), responses.message())
                    .await
                    .expect("in time")
                    .expect("a response")
                    .expect("open");
                if r.created || r.events.is_empty() {
                    continue;
                }
                let bytes = prost::Message::encoded_len(&r);
                assert!(
                    r.events.len() <= 1 || bytes < LIMIT_BYTES,
                    "a part of {bytes} bytes"
                );
                if !open {
                    rejoined.push(Vec::new());
                }
                let last = rejoined.last_mut().expect("a response");
                for e in &r.events {
                    let kv = e.kv.as_ref().expect("kv");
                    last.push((
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        kv.mod_revision,
                    ));
                }
                events += r.events.len();
                fragments += usize::from(r.fragment);
                open = r.fragment;
            }
            (rejoined, fragments)
        };

        let (got, _) = read(&mut stream, expected.len()).await;
        assert_eq!(
            got, expected,
            "the catch-up's fragments rejoin to every event"
        );
        let (rejoined, fragments) = read_raw(expected.len()).await;
        assert!(fragments > 0, "the catch-up was not fragmented");
        assert_eq!(rejoined.concat(), expected);

        // Live: two puts in one revision (40 KiB of request, 80 KiB of response).
        let r = c
            .txn(Txn::new().and_then(vec![
                TxnOp::put("f/00", value.as_str(), None),
                TxnOp::put("f/01", value.as_str(), None),
            ]))
            .await
            .expect("txn");
        let txn_revision = r.header().expect("header").revision();
        let live = vec![
            ("f/00".to_owned(), txn_revision),
            ("f/01".to_owned(), txn_revision),
        ];
        let (got, messages) = read(&mut stream, 2).await;
        assert_eq!((got, messages), (live.clone(), 2), "two fragments");
        let (rejoined, fragments) = read_raw(2).await;
        assert_eq!(
            (rejoined, fragments),
            (vec![live], 1),
            "one response in two parts"
        );
    });

    // Default limits: a catch-up of six 1 MiB values (and 1,000 small ones) reaches etcd-client
    // (4 MiB receive limit).
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 1, &[]);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        wait_ready(&endpoints[0]).await;
        let mut c = client(&endpoints).await;
        let value = "b".repeat(1024 * 1024);
        let mut first = 0;
        for i in 0..6 {
            let r = c
                .put(format!("b/{i}"), value.as_str(), None)
                .await
                .expect("put");
            if i == 0 {
                first = r.header().expect("header").revision();
            }
        }
        // A thousand revisions more: the first catch-up poll then stops short of the current
        // revision, so the six big ones would all be in its one response.
        for i in 0..1000 {
            c.put(format!("b/small{i:04}"), "s", None)
                .await
                .expect("put");
        }
        let mut w = client(&endpoints).await;
        let mut stream = w
            .watch(
                "b/",
                Some(WatchOptions::new().with_prefix().with_start_revision(first)),
            )
            .await
            .expect("watch");
        let mut revisions = Vec::new();
        while revisions.len() < 1006 {
            let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("events in time")
                .expect("a response within the client's receive limit")
                .expect("open");
            revisions.extend(
                message
                    .events()
                    .iter()
                    .map(|e| e.kv().expect("kv").mod_revision()),
            );
        }
        assert_eq!(revisions, (first..first + 1006).collect::<Vec<_>>());
    });
}
