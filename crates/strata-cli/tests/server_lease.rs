//! Leases against real processes, driven by the etcd-client crate: grant, attach, keep alive,
//! time to live, revoke, expiry, a leader killed while a client keeps its lease alive, and lease
//! checkpoints across leader changes.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{GetOptions, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions};
use support::cluster::{
    Cluster, FAST, client, leader_index, put_retrying, put_retrying_with, runtime, wait_ready,
};

/// Grant, attach, keep alive, time to live, list and revoke, with etcd's answers and errors.
#[test]
fn leases_answer_as_etcds_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &[]);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let mut c = client(&endpoints[1..2]).await;
        // Below the minimum (1.5 election timeouts: 2 s with etcd's defaults): raised.
        let short = c.lease_grant(1, None).await.expect("grant");
        assert_eq!(short.ttl(), 2);
        assert!(short.id() > 0);
        let lease = c
            .lease_grant(60, Some(LeaseGrantOptions::new().with_id(4242)))
            .await
            .expect("grant with an id");
        assert_eq!((lease.id(), lease.ttl()), (4242, 60));
        let again = c
            .lease_grant(60, Some(LeaseGrantOptions::new().with_id(4242)))
            .await
            .expect_err("a live id");
        assert!(
            again
                .to_string()
                .contains("etcdserver: lease already exists"),
            "{again}"
        );
        let too_long = c
            .lease_grant(9_000_000_001, None)
            .await
            .expect_err("too long");
        assert!(
            too_long
                .to_string()
                .contains("etcdserver: too large lease TTL"),
            "{too_long}"
        );
        let unknown = c
            .put("k", "v", Some(PutOptions::new().with_lease(777)))
            .await
            .expect_err("unknown lease");
        assert!(
            unknown
                .to_string()
                .contains("etcdserver: requested lease not found"),
            "{unknown}"
        );

        for key in ["leased/a", "leased/b"] {
            c.put(key, "v", Some(PutOptions::new().with_lease(4242)))
                .await
                .expect("put with the lease");
        }
        let ttl = c
            .lease_time_to_live(4242, Some(LeaseTimeToLiveOptions::new().with_keys()))
            .await
            .expect("time to live");
        assert_eq!(ttl.granted_ttl(), 60);
        assert!(ttl.ttl() > 50 && ttl.ttl() <= 60, "{}", ttl.ttl());
        assert_eq!(ttl.keys(), &[b"leased/a".to_vec(), b"leased/b".to_vec()]);
        let (mut keeper, mut stream) = c.lease_keep_alive(4242).await.expect("keep alive");
        keeper.keep_alive().await.expect("send");
        let answer = stream.message().await.expect("answer").expect("one");
        assert_eq!((answer.id(), answer.ttl()), (4242, 60));
        let listed: Vec<i64> = c
            .leases()
            .await
            .expect("leases")
            .leases()
            .iter()
            .map(|l| l.id())
            .collect();
        assert!(listed.contains(&4242) && listed.contains(&short.id()));

        // Revoke: every attached key goes, in one revision.
        let before = c
            .get("x", None)
            .await
            .expect("get")
            .header()
            .expect("h")
            .revision();
        let revoked = c.lease_revoke(4242).await.expect("revoke");
        assert_eq!(revoked.header().expect("h").revision(), before + 1);
        let left = c
            .get("leased/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("range");
        assert_eq!(left.count(), 0);
        let gone = c
            .lease_time_to_live(4242, None)
            .await
            .expect("time to live");
        assert_eq!((gone.ttl(), gone.granted_ttl()), (-1, 0));
        let again = c.lease_revoke(4242).await.expect_err("revoked twice");
        assert!(
            again
                .to_string()
                .contains("etcdserver: requested lease not found"),
            "{again}"
        );
    });
}

/// A lease nobody keeps alive expires: the leader revokes it through Raft and its keys go.
#[test]
fn an_expired_lease_deletes_its_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 1, FAST);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        let mut c = wait_ready(&endpoints[0]).await;
        let lease = c.lease_grant(1, None).await.expect("grant");
        c.put(
            "expiring",
            "v",
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
        .expect("put");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if c.get("expiring", None).await.expect("get").count() == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the lease never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ttl = c.lease_time_to_live(lease.id(), None).await.expect("ttl");
        assert_eq!(ttl.ttl(), -1);
    });
}

/// A client keeps its lease alive through a follower while the leader is killed: the new
/// leader gives the lease its whole TTL again, so it never expires early.
#[test]
fn a_lease_kept_alive_survives_a_leader_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, FAST);
    let endpoints = cluster.endpoints();
    let rt = runtime();
    let (lease, leader) = rt.block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let mut c = client(&endpoints[..1]).await;
        let lease = c.lease_grant(3, None).await.expect("grant").id();
        c.put("kept", "v", Some(PutOptions::new().with_lease(lease)))
            .await
            .expect("put");
        (lease, c.status().await.expect("status").leader())
    });
    let names = rt.block_on(async {
        let mut c = client(&endpoints[..1]).await;
        let list = c.member_list().await.expect("list");
        list.members()
            .iter()
            .map(|m| (m.id(), m.name().to_owned()))
            .collect::<Vec<_>>()
    });
    let leader_name = names
        .iter()
        .find(|(id, _)| *id == leader)
        .expect("leader")
        .1
        .clone();
    let killed = cluster
        .members
        .iter()
        .position(|m| m.spec.name == leader_name)
        .expect("leader process");
    let survivor = endpoints[(killed + 1) % 3].clone();
    cluster.kill(killed);
    rt.block_on(async {
        // Keep alive every second (a third of the TTL, as clients do) for three TTLs.
        let mut c = client(std::slice::from_ref(&survivor)).await;
        let until = Instant::now() + Duration::from_secs(9);
        while Instant::now() < until {
            // An error (no leader yet) is retried on the next round.
            if let Ok((mut keeper, mut stream)) = c.lease_keep_alive(lease).await
                && keeper.keep_alive().await.is_ok()
                && let Ok(Some(answer)) = stream.message().await
            {
                assert!(answer.ttl() > 0, "the lease expired under a new leader");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let got = c
            .get("kept", Some(GetOptions::new().with_serializable()))
            .await
            .expect("get");
        assert_eq!(got.count(), 1, "the kept-alive lease's key was deleted");
    });
}

/// A lease's keys are known again after a restart (the index is rebuilt from the store) and
/// after a member installs a snapshot: time-to-live lists them, and a revoke deletes them all
/// on the restarted member too (read there, from its own store).
#[test]
fn a_leases_keys_survive_restarts_and_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut extra = FAST.to_vec();
    // Snapshots every few entries: the restarted member below catches up from one.
    extra.extend(["--snapshot-count", "5"]);
    let mut cluster = Cluster::start(dir.path(), 3, &extra);
    let endpoints = cluster.endpoints();
    let rt = runtime();
    let lease = rt.block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let mut c = client(&endpoints).await;
        let lease = c.lease_grant(600, None).await.expect("grant").id();
        // A leader change on a loaded machine fails a put; a retried one is the same write.
        for key in ["l/a", "l/b", "l/c"] {
            put_retrying_with(&mut c, key, "v", Some(PutOptions::new().with_lease(lease))).await;
        }
        put_retrying(&mut c, "l/b", "moved").await;
        lease
    });
    cluster.kill(2);
    rt.block_on(async {
        let mut c = client(&endpoints[..2]).await;
        // Enough entries for the others to snapshot and compact their logs past the third's.
        // Member 2 may have been the leader: the first puts wait for a new one.
        for i in 0..30 {
            put_retrying(&mut c, &format!("filler/{i}"), "v").await;
        }
    });
    cluster.restart(2);
    rt.block_on(async {
        wait_ready(&endpoints[2]).await;
        let mut c = client(&endpoints[2..]).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // An error (the member still catching up with the leader) is retried.
            let mut keys: Vec<Vec<u8>> = c
                .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
                .await
                .map(|ttl| ttl.keys().to_vec())
                .unwrap_or_default();
            keys.sort();
            if keys == vec![b"l/a".to_vec(), b"l/c".to_vec()] {
                break;
            }
            assert!(Instant::now() < deadline, "keys after restart: {keys:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.lease_revoke(lease).await.expect("revoke");
        let left = c
            .get("l/", Some(GetOptions::new().with_prefix()))
            .await
            .expect("get");
        let left: Vec<&[u8]> = left.kvs().iter().map(|kv| kv.key()).collect();
        assert_eq!(left, vec![&b"l/b"[..]]);
    });
}

/// The lease's TTL as `endpoint` answers once it can (it forwards to the leader, which may be
/// being elected): polled, bounded.
async fn ttl_at(endpoint: &str, lease: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = etcd_client::Client::connect([endpoint], None).await
            && let Ok(answer) = c.lease_time_to_live(lease, None).await
        {
            return answer.ttl();
        }
        assert!(Instant::now() < deadline, "{endpoint}: no TTL in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lease checkpoints (on by default; every second here): a new leader gives a lease what the
/// old leader recorded was left of it, not its whole TTL again (etcd's default, under which
/// leader changes can keep a lease alive forever); and a keep-alive clears that record before
/// it is answered, so a leader elected right after it (here: the whole cluster restarted) gives
/// the lease the whole TTL its client was just promised.
#[test]
fn a_new_leader_gives_a_lease_what_was_left_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut flags = FAST.to_vec();
    flags.push("--experimental-lease-checkpoint-interval=1s");
    let mut cluster = Cluster::start(dir.path(), 3, &flags);
    let endpoints = cluster.endpoints();
    let rt = runtime();
    let (lease, leader) = rt.block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let mut c = client(&endpoints[..1]).await;
        let lease = c.lease_grant(20, None).await.expect("grant").id();
        // Ten seconds gone: several checkpoints have recorded at most 11 s left.
        let deadline = Instant::now() + Duration::from_secs(30);
        while ttl_at(&endpoints[0], lease).await > 10 {
            assert!(Instant::now() < deadline, "the TTL does not go down");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (lease, leader_index(&endpoints).await)
    });
    cluster.kill(leader);
    let survivor = endpoints[(leader + 1) % 3].clone();
    let ttl = rt.block_on(ttl_at(&survivor, lease));
    assert!(
        ttl <= 13,
        "the new leader gave the lease {ttl} s of its 20: its whole TTL again"
    );

    cluster.restart(leader);
    rt.block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let mut c = client(std::slice::from_ref(&survivor)).await;
        let (mut keeper, mut stream) = c.lease_keep_alive(lease).await.expect("keep alive");
        keeper.keep_alive().await.expect("send");
        let answer = stream.message().await.expect("answer").expect("an answer");
        assert_eq!(answer.ttl(), 20);
    });
    // At once (well before the next checkpoint could record about 20 s again, which would hide
    // a record the keep-alive failed to clear), the whole cluster goes and comes back.
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    // Asked as soon as there is a leader: its clock for the lease runs from its election.
    let ttl = rt.block_on(ttl_at(&endpoints[0], lease));
    assert!(
        ttl >= 15,
        "the lease kept alive to 20 s has {ttl} s under the next leader: the record from before \
         the keep-alive was used"
    );
}
