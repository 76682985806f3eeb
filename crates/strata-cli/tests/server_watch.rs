//! Watch against real processes, driven by the etcd-client crate: history then live events,
//! exactly once and in order, from any member; a compacted start revision cancels the watcher
//! with the compact revision, as etcd does.

mod support;

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use support::cluster::{Cluster, client, wait_ready};

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
