//! `--strict-reconfig-check` (etcd's, on by default) on real processes: member changes that
//! could cost the cluster its quorum are refused with etcd's errors, and let through with
//! `--strict-reconfig-check=false`. And `--force-new-cluster`: the one member left of a
//! cluster that lost its quorum becomes a cluster of its own, with its data, and grows again.

mod support;

use std::time::{Duration, Instant};

use etcd_client::{Client, MemberAddOptions};
use support::cluster::{
    Cluster, FAST, MemberSpec, client, http_get, leader_index, put_retrying, runtime,
    until_healthy, wait_ready, wait_value,
};

/// How long the leader may take to see a killed member as down (a few election timeouts).
const DOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// The id of the member named `name` (a name of `--initial-cluster`, listed from the start,
/// unlike client URLs, which a member publishes once it runs).
async fn id_of(c: &mut Client, name: &str) -> u64 {
    let list = c.member_list().await.expect("member list");
    list.members()
        .iter()
        .find(|m| m.name() == name)
        .map(etcd_client::Member::id)
        .expect("a member of that name")
}

/// Starts three members with `flags`, kills a follower and waits until the leader sees it as
/// down: the cluster, the leader's index, a live follower's and the killed one's, and the
/// killed member's id.
fn one_member_down(dir: &std::path::Path, flags: &[&str]) -> (Cluster, usize, usize, u64) {
    let mut cluster = Cluster::start(dir, 3, flags);
    let endpoints = cluster.endpoints();
    let (leader, victim, victim_id) = runtime().block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let leader = leader_index(&endpoints).await;
        let victim = (leader + 1) % 3;
        let mut c = client(&endpoints[leader..=leader]).await;
        let name = cluster.members[victim].spec.name.clone();
        (leader, victim, id_of(&mut c, &name).await)
    });
    // First, with every member up, a change passes once the leader has heard from all for
    // 5 s: a learner added and removed again (never started, so nothing else changes).
    runtime().block_on(async {
        let c = client(&endpoints[leader..=leader]).await;
        let added = until_healthy(|| {
            let mut c = c.clone();
            async move {
                c.member_add(
                    ["http://127.0.0.1:1"],
                    Some(MemberAddOptions::new().with_is_learner()),
                )
                .await
            }
        })
        .await
        .expect("a learner added to a healthy cluster");
        let id = added.member().expect("the member").id();
        c.clone()
            .member_remove(id)
            .await
            .expect("a learner removed");
    });
    cluster.kill(victim);
    let gone = format!("strata_raft_peer_active{{peer=\"{victim_id:x}\"}} 0");
    let deadline = Instant::now() + DOWN_TIMEOUT;
    while !http_get(endpoints[leader].trim_start_matches("http://"), "/metrics").contains(&gone) {
        assert!(
            Instant::now() < deadline,
            "the leader still sees the killed member as active after {DOWN_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let live = 3 - leader - victim;
    (cluster, leader, live, victim_id)
}

/// With a member down: adding a member (voter or learner) and removing a live one are refused
/// (`unhealthy cluster`), removing the one that is down is not; then a voter that has not
/// started counts against the quorum (`not enough started members`).
#[test]
fn member_changes_that_could_cost_the_quorum_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cluster, leader, live, victim_id) = one_member_down(dir.path(), FAST);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        let mut c = client(&endpoints[leader..=leader]).await;
        let unhealthy = "etcdserver: unhealthy cluster";
        for learner in [false, true] {
            let options = learner.then(|| MemberAddOptions::new().with_is_learner());
            let refused = c
                .member_add(["http://127.0.0.1:2"], options)
                .await
                .expect_err("an add with a member down");
            assert!(refused.to_string().contains(unhealthy), "{refused}");
        }
        let live_id = id_of(&mut c, &cluster.members[live].spec.name).await;
        let refused = c
            .member_remove(live_id)
            .await
            .expect_err("removing a live member with another down");
        assert!(refused.to_string().contains(unhealthy), "{refused}");
        c.member_remove(victim_id)
            .await
            .expect("the member that is down is removed");
        // Two voters, both started: a third that never starts may join (two of three
        // started), a fourth may not (two of four).
        until_healthy(|| {
            let mut c = c.clone();
            async move { c.member_add(["http://127.0.0.1:3"], None).await }
        })
        .await
        .expect("a third voter");
        let refused = c
            .member_add(["http://127.0.0.1:4"], None)
            .await
            .expect_err("a fourth voter with two started");
        assert!(
            refused
                .to_string()
                .contains("etcdserver: re-configuration failed due to not enough started members"),
            "{refused}"
        );
    });
}

/// `--strict-reconfig-check=false`: the same add with a member down is made.
#[test]
fn without_the_strict_check_a_member_is_added_with_one_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut flags = FAST.to_vec();
    flags.push("--strict-reconfig-check=false");
    let (cluster, leader, _, _) = one_member_down(dir.path(), &flags);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        let mut c = client(&endpoints[leader..=leader]).await;
        c.member_add(
            ["http://127.0.0.1:2"],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .expect("a learner added with a member down");
    });
}

/// Three members lose two for good: the last one, restarted with `--force-new-cluster`, is a
/// one-member cluster with every key it held, takes writes, and grows again with `member add`.
#[test]
fn force_new_cluster_makes_the_last_member_a_cluster_with_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 3, FAST);
    let endpoints = cluster.endpoints();
    let survivor = 0;
    runtime().block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let mut c = client(&endpoints[leader_index(&endpoints).await..][..1]).await;
        for i in 0..20 {
            c.put(format!("k{i:02}"), "v", None).await.expect("put");
        }
        // Every member holds the last write: the survivor's data is the cluster's.
        wait_value(&endpoints[survivor], "k19", Some("v")).await;
    });
    for i in 0..3 {
        cluster.kill(i);
    }
    cluster.extra.push("--force-new-cluster".to_owned());
    cluster.restart(survivor);
    cluster.extra.pop();

    let alone = &endpoints[survivor..=survivor];
    runtime().block_on(async {
        let mut c = wait_ready(&alone[0]).await;
        let list = c.member_list().await.expect("member list");
        let names: Vec<&str> = list
            .members()
            .iter()
            .map(etcd_client::Member::name)
            .collect();
        assert_eq!(names, ["m1"], "only the forced member is left");
        for i in 0..20 {
            let got = c.get(format!("k{i:02}"), None).await.expect("get");
            assert_eq!(got.kvs().len(), 1, "k{i:02} kept");
        }
        put_retrying(&mut c, "after", "forced").await;
        // It grows again: a new member joins and receives everything.
        let spec = MemberSpec::local(dir.path(), "m4");
        until_healthy(|| {
            let (mut c, url) = (c.clone(), spec.peer_url());
            async move { c.member_add([url], None).await }
        })
        .await
        .expect("a member added to the forced cluster");
        let joined = cluster.join_among(spec, &[survivor]);
        wait_value(&cluster.endpoints()[joined], "after", Some("forced")).await;
        wait_value(&cluster.endpoints()[joined], "k00", Some("v")).await;
    });
}
