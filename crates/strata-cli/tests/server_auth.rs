//! Auth against real processes, driven by the etcd-client crate and raw gRPC: every RPC is
//! refused without the permission it needs and served with it, tokens and passwords are
//! checked, a change to a user's roles or password takes effect at once, members refuse
//! forwarded requests without credentials, and Kvdb sessions obey the same users.

mod support;

use std::time::Duration;

use etcd_client::{
    AlarmAction, AlarmType, Client, Compare, CompareOp, ConnectOptions, GetOptions,
    LeaseTimeToLiveOptions, LockOptions, Permission, PutOptions, Txn, TxnOp,
};
use strata_server::proto::clientpb::kvdb_client::KvdbClient;
use strata_server::proto::clientpb::{Auth, Command, KvPair, Operate, PutCommand, ReadonlyQuery};
use strata_server::proto::etcdserverpb::auth_client::AuthClient;
use strata_server::proto::etcdserverpb::kv_client::KvClient;
use strata_server::proto::etcdserverpb::lease_client::LeaseClient;
use strata_server::proto::etcdserverpb::{
    AuthStatusRequest, AuthenticateRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
};
use strata_server::proto::strataserverpb::internal_client::InternalClient;
use strata_server::proto::strataserverpb::{
    Forwarded, ForwardedBatch, MemberAttributes, RaftRequest, raft_request,
};
use support::cluster::{Cluster, FAST, client, runtime, wait_ready};

/// Flags every test's members start with: fast elections, cheap hashes.
fn flags() -> Vec<&'static str> {
    let mut flags = FAST.to_vec();
    flags.extend(["--bcrypt-cost", "4"]);
    flags
}

/// A client logged in as `user`.
async fn login(endpoints: &[String], user: &str, password: &str) -> Client {
    Client::connect(
        endpoints,
        Some(ConnectOptions::new().with_user(user, password)),
    )
    .await
    .unwrap_or_else(|e| panic!("log in as {user}: {e}"))
}

/// Logs in as `user`, only to see whether it is refused.
async fn try_login(
    endpoints: &[String],
    user: &str,
    password: &str,
) -> Result<(), etcd_client::Error> {
    let options = ConnectOptions::new().with_user(user, password);
    Client::connect(endpoints, Some(options)).await.map(|_| ())
}

/// Creates root (with the root role) and alice (no role), a role `kv` (read and write on the
/// prefix `k`), and enables auth.
async fn set_up(c: &mut Client) {
    c.user_add("root", "rootpw", None).await.expect("add root");
    c.role_add("root").await.expect("add the root role");
    c.user_grant_role("root", "root").await.expect("grant root");
    c.user_add("alice", "alicepw", None)
        .await
        .expect("add alice");
    c.role_add("kv").await.expect("add kv");
    c.role_grant_permission("kv", Permission::read_write("k").with_prefix())
        .await
        .expect("grant kv");
    c.auth_enable().await.expect("enable");
}

/// The error text of a call that must fail with `text`.
fn refused<T: std::fmt::Debug>(result: Result<T, etcd_client::Error>, text: &str, what: &str) {
    match result {
        Ok(ok) => panic!("{what}: served ({ok:?}), expected {text:?}"),
        Err(e) => assert!(e.to_string().contains(text), "{what}: {e}"),
    }
}

const DENIED: &str = "etcdserver: permission denied";

/// A token for `user`, by raw gRPC (etcd-client does not show the one it holds).
async fn token(endpoint: &str, user: &str, password: &str) -> String {
    let mut auth = AuthClient::connect(endpoint.to_owned())
        .await
        .expect("connect");
    auth.authenticate(AuthenticateRequest {
        name: user.into(),
        password: password.into(),
    })
    .await
    .expect("authenticate")
    .into_inner()
    .token
}

/// `message` with `token` in its metadata.
fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut call = tonic::Request::new(message);
    call.metadata_mut()
        .insert("token", token.parse().expect("ascii"));
    call
}

/// Every RPC a user without roles sends is refused (except those any user may send); granted
/// the role, the same calls are served. Alice talks to a follower, so forwarded requests are
/// checked too.
#[test]
fn every_rpc_is_refused_without_permission_and_served_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 3, &flags());
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let mut open = client(&endpoints[..1]).await;
        set_up(&mut open).await;
        let mut root = login(&endpoints, "root", "rootpw").await;
        root.put("k1", "v", None).await.expect("root puts");
        let lease = root.lease_grant(60, None).await.expect("root grants").id();
        root.put("k2", "v", Some(PutOptions::new().with_lease(lease)))
            .await
            .expect("root attaches");
        let leader = root.status().await.expect("status").leader();
        let mut follower = None;
        for e in &endpoints {
            let mut one = login(std::slice::from_ref(e), "root", "rootpw").await;
            let status = one.status().await.expect("status");
            if status.header().map(|h| h.member_id()) != Some(leader) {
                follower = Some(e.clone());
            }
        }
        let follower = follower.expect("a follower");
        let mut alice = login(std::slice::from_ref(&follower), "alice", "alicepw").await;

        // Without a role.
        refused(alice.get("k1", None).await, DENIED, "get");
        refused(alice.put("k1", "a", None).await, DENIED, "put");
        refused(alice.delete("k1", None).await, DENIED, "delete");
        let txn = Txn::new()
            .when([Compare::value("k1", CompareOp::Equal, "v")])
            .and_then([TxnOp::put("k1", "a", None)]);
        refused(alice.txn(txn.clone()).await, DENIED, "txn");
        refused(
            alice.get("k", Some(GetOptions::new().with_prefix())).await,
            DENIED,
            "get a prefix",
        );
        // etcd-client sends no token with Lease calls (nor does etcd 3.4 ask for one, but for
        // the keys a lease holds): revoking a lease with keys, or listing them, needs a user
        // with write (read) permission on each.
        const EMPTY: &str = "etcdserver: user name is empty";
        refused(alice.lease_revoke(lease).await, EMPTY, "revoke");
        refused(
            alice
                .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys()))
                .await,
            EMPTY,
            "time to live with keys",
        );
        let alice_token = token(&follower, "alice", "alicepw").await;
        let mut leases = LeaseClient::connect(follower.clone())
            .await
            .expect("connect");
        let revoke = leases
            .lease_revoke(with_token(LeaseRevokeRequest { id: lease }, &alice_token))
            .await
            .expect_err("revoke without permission");
        assert_eq!(revoke.message(), DENIED);
        refused(alice.defragment().await, DENIED, "defragment");
        refused(alice.hash_kv(0).await, DENIED, "hash kv");
        refused(alice.hash().await, DENIED, "hash");
        refused(
            alice.member_add(["http://127.0.0.1:1"], None).await,
            DENIED,
            "member add",
        );
        refused(alice.move_leader(1).await, DENIED, "move leader");
        refused(alice.user_list().await, DENIED, "user list");
        refused(alice.role_list().await, DENIED, "role list");
        refused(alice.user_add("eve", "x", None).await, DENIED, "user add");
        refused(alice.role_get("kv").await, DENIED, "role get");
        refused(alice.auth_disable().await, DENIED, "auth disable");
        refused(
            alice
                .lock("klock", Some(LockOptions::new().with_lease(lease)))
                .await,
            DENIED,
            "lock",
        );
        refused(alice.leader("kelect").await, DENIED, "election leader");
        match alice.snapshot().await {
            Err(e) => assert!(e.to_string().contains(DENIED), "snapshot: {e}"),
            Ok(mut stream) => refused(stream.message().await, DENIED, "snapshot"),
        }
        let mut stream = alice.watch("k1", None).await.expect("watch stream");
        let created = stream.message().await.expect("a reply").expect("created");
        assert!(created.canceled(), "a watch without permission was created");
        assert!(created.cancel_reason().contains(DENIED), "{created:?}");
        // What any user may do.
        alice.status().await.expect("status");
        alice
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .expect("alarm list");
        alice.member_list().await.expect("member list");
        assert!(
            alice
                .user_get("alice")
                .await
                .expect("own roles")
                .roles()
                .is_empty()
        );
        let own = alice.lease_grant(60, None).await.expect("grant").id();
        alice.lease_time_to_live(lease, None).await.expect("ttl");
        alice.leases().await.expect("leases");
        let (mut keeper, mut acks) = alice.lease_keep_alive(lease).await.expect("keep alive");
        keeper.keep_alive().await.expect("send a keep-alive");
        assert!(acks.message().await.expect("an ack").is_some());

        // With the role: the same calls are served, with no new login.
        root.user_grant_role("alice", "kv").await.expect("grant kv");
        alice.put("k1", "a", None).await.expect("put");
        assert_eq!(
            alice.get("k1", None).await.expect("get").kvs()[0].value(),
            b"a"
        );
        alice.txn(txn).await.expect("txn");
        alice
            .put("k3", "v", Some(PutOptions::new().with_lease(own)))
            .await
            .expect("attach");
        leases
            .lease_revoke(with_token(LeaseRevokeRequest { id: lease }, &alice_token))
            .await
            .expect("revoke with permission on the lease's keys");
        alice.delete("k1", None).await.expect("delete");
        let mut stream = alice.watch("k1", None).await.expect("watch");
        let created = stream.message().await.expect("a reply").expect("created");
        assert!(!created.canceled(), "{created:?}");
        let locked = alice
            .lock("klock", Some(LockOptions::new().with_lease(own)))
            .await
            .expect("lock");
        alice.unlock(locked.key()).await.expect("unlock");
        assert_eq!(
            alice
                .role_get("kv")
                .await
                .expect("a role of one's own")
                .permissions()
                .len(),
            1
        );
        // Still outside the role's keys.
        refused(alice.put("other", "x", None).await, DENIED, "put outside");
        refused(
            alice.get("", Some(GetOptions::new().with_all_keys())).await,
            DENIED,
            "get everything",
        );
    });
}

/// No token, a wrong password, a made-up token: each refused with etcd's text. A token dies
/// with its user and with a password change, and its user's roles are read at each request.
#[test]
fn tokens_and_passwords_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut extra = flags();
    extra.extend(["--auth-token-ttl", "2"]);
    let cluster = Cluster::start(dir.path(), 1, &extra);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        wait_ready(&endpoints[0]).await;
        let mut open = client(&endpoints).await;
        refused(
            open.auth_enable().await,
            "root user does not exist",
            "enable",
        );
        set_up(&mut open).await;
        refused(
            open.get("k", None).await,
            "etcdserver: user name is empty",
            "anonymous get",
        );
        refused(
            try_login(&endpoints, "alice", "wrong").await,
            "etcdserver: authentication failed, invalid user ID or password",
            "wrong password",
        );
        refused(
            try_login(&endpoints, "nobody", "x").await,
            "etcdserver: authentication failed, invalid user ID or password",
            "unknown user",
        );
        // A made-up token, by raw gRPC.
        let mut raw = InternalClient::connect(endpoints[0].clone())
            .await
            .expect("connect");
        let mut call = tonic::Request::new(RaftRequest::default());
        call.metadata_mut()
            .insert("token", "abcdefghijklmnop.1".parse().expect("ascii"));
        let bad = raw.propose(call).await.expect_err("a made-up token");
        assert_eq!(bad.code(), tonic::Code::Unauthenticated);
        assert_eq!(bad.message(), "etcdserver: invalid auth token");

        let mut root = login(&endpoints, "root", "rootpw").await;
        root.user_grant_role("alice", "kv").await.expect("grant");
        let mut alice = login(&endpoints, "alice", "alicepw").await;
        alice.put("k", "1", None).await.expect("put");
        root.user_revoke_role("alice", "kv").await.expect("revoke");
        refused(alice.put("k", "2", None).await, DENIED, "put after revoke");
        root.user_change_password("alice", "newpw")
            .await
            .expect("change password");
        refused(
            alice.put("k", "3", None).await,
            "etcdserver: invalid auth token",
            "an old token after a password change",
        );
        refused(
            try_login(&endpoints, "alice", "alicepw").await,
            "authentication failed",
            "the old password",
        );
        let mut alice = login(&endpoints, "alice", "newpw").await;
        alice.user_get("alice").await.expect("own roles");
        // Unused for longer than --auth-token-ttl (2 s), a token expires. (Not a wait for a
        // condition: the token has to age, and any use of it would renew it.)
        tokio::time::sleep(Duration::from_secs(3)).await;
        refused(
            alice.user_get("alice").await,
            "etcdserver: invalid auth token",
            "an expired token",
        );
        let mut root = login(&endpoints, "root", "rootpw").await;
        let mut alice = login(&endpoints, "alice", "newpw").await;
        root.user_delete("alice").await.expect("delete alice");
        refused(
            alice.user_get("alice").await,
            "etcdserver: invalid auth token",
            "a deleted user's token",
        );
        refused(
            root.user_delete("root").await,
            "etcdserver: invalid auth management",
            "delete root",
        );
        refused(
            root.user_revoke_role("root", "root").await,
            "etcdserver: invalid auth management",
            "revoke root's role",
        );
        root.auth_disable().await.expect("disable");
        open.put("k", "open again", None).await.expect("auth off");
    });
}

/// A JWT test key (`strata-server/tests/data/jwt/`).
fn jwt_key(name: &str) -> String {
    format!(
        "{}/../strata-server/tests/data/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A JWT's claims, decoded (not checked).
fn jwt_claims(token: &str) -> String {
    use base64::Engine;
    let claims = token.split('.').nth(1).expect("a JWT has three parts");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .expect("base64url claims");
    String::from_utf8(bytes).expect("JSON claims")
}

/// A linearizable read of `key` through `endpoint` with `token`, polled (bounded) until the
/// member, started again, has a leader and has caught up.
async fn read_with_token(
    endpoint: &str,
    token: &str,
    key: &str,
) -> strata_server::proto::etcdserverpb::RangeResponse {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let read = async {
            let mut kv = KvClient::connect(endpoint.to_owned()).await?;
            let range = RangeRequest {
                key: key.as_bytes().to_vec(),
                ..RangeRequest::default()
            };
            Ok::<_, Box<dyn std::error::Error>>(kv.range(with_token(range, token)).await?)
        };
        match read.await {
            Ok(got) => return got.into_inner(),
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "read {key} through {endpoint}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// JWT tokens (`--auth-token jwt,...`): one member signs, every member with the same keys
/// accepts the token, also after a restart; any auth change makes earlier tokens old (etcd's
/// "revision of auth store is old": a revoked role or a changed password cannot live on in a
/// token nobody stores); a forged token is refused; a member given the public key alone
/// checks tokens and refuses to sign, with etcd's error.
#[test]
fn jwt_tokens_are_signed_by_one_member_and_checked_by_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signing = format!(
        "jwt,sign-method=RS256,priv-key={},pub-key={},ttl=10m",
        jwt_key("rsa-pkcs1.pem"),
        jwt_key("rsa-pkcs1.pub")
    );
    let mut extra = flags();
    extra.extend(["--auth-token", &signing]);
    let mut cluster = Cluster::start(dir.path(), 3, &extra);
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        for e in &endpoints {
            wait_ready(e).await;
        }
        let mut open = client(&endpoints[..1]).await;
        set_up(&mut open).await;
        let root_token = token(&endpoints[0], "root", "rootpw").await;
        let revision = AuthClient::connect(endpoints[0].clone())
            .await
            .expect("connect")
            .auth_status(with_token(AuthStatusRequest {}, &root_token))
            .await
            .expect("auth status")
            .into_inner()
            .auth_revision;
        let claims = jwt_claims(&root_token);
        assert!(
            claims.contains(r#""username":"root""#)
                && claims.contains(&format!(r#""revision":{revision}"#)),
            "claims {claims} (auth revision {revision})"
        );
        // Signed by m0, taken by every member (m2's writes go to the leader with it).
        for (i, e) in endpoints.iter().enumerate() {
            let mut kv = KvClient::connect(e.clone()).await.expect("connect");
            let put = PutRequest {
                key: format!("k{i}").into_bytes(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            };
            kv.put(with_token(put, &root_token))
                .await
                .unwrap_or_else(|e| panic!("put through m{i} with m0's token: {e}"));
        }
        // A forged token: alice's claims under root's signature.
        let parts: Vec<&str> = root_token.split('.').collect();
        let forged = {
            use base64::Engine;
            let claims =
                jwt_claims(&root_token).replace(r#""username":"root""#, r#""username":"alice""#);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims)
        };
        let forged = format!("{}.{forged}.{}", parts[0], parts[2]);
        let mut kv = KvClient::connect(endpoints[1].clone())
            .await
            .expect("connect");
        let bad = kv
            .range(with_token(
                RangeRequest {
                    key: b"k0".to_vec(),
                    ..RangeRequest::default()
                },
                &forged,
            ))
            .await
            .expect_err("a forged token");
        assert_eq!(bad.code(), tonic::Code::Unauthenticated);
        assert_eq!(bad.message(), "etcdserver: invalid auth token");

        // Alice, granted kv, writes; once any auth change is made, her token is old
        // everywhere, and a new one carries the change.
        let mut root = login(&endpoints, "root", "rootpw").await;
        root.user_grant_role("alice", "kv").await.expect("grant");
        let alice_token = token(&endpoints[1], "alice", "alicepw").await;
        let put = || PutRequest {
            key: b"k".to_vec(),
            value: b"a".to_vec(),
            ..PutRequest::default()
        };
        kv.put(with_token(put(), &alice_token))
            .await
            .expect("alice puts");
        // Root's own token is old too after its change (etcd's JWT rule; Go clients
        // authenticate again by themselves, etcd-client when asked).
        refused(
            root.user_revoke_role("alice", "kv").await,
            "etcdserver: revision of auth store is old",
            "root's token from before its own grant",
        );
        root.refresh_token().await.expect("authenticate again");
        root.user_revoke_role("alice", "kv").await.expect("revoke");
        for e in &endpoints {
            let mut kv = KvClient::connect(e.clone()).await.expect("connect");
            // Bounded: a member may not have applied the revoke yet (it then serves).
            let mut status = None;
            for _ in 0..100 {
                match kv.put(with_token(put(), &alice_token)).await {
                    Err(s) => {
                        status = Some(s);
                        break;
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            let status = status.expect("an old token refused");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{e}");
            assert_eq!(
                status.message(),
                "etcdserver: revision of auth store is old",
                "{e}"
            );
        }
        let alice_token = token(&endpoints[2], "alice", "alicepw").await;
        let denied = kv
            .put(with_token(put(), &alice_token))
            .await
            .expect_err("revoked");
        assert_eq!(denied.message(), DENIED);
        root.refresh_token().await.expect("authenticate again");
        root.user_change_password("alice", "newpw")
            .await
            .expect("change password");
        refused(
            try_login(&endpoints, "alice", "alicepw").await,
            "authentication failed",
            "the old password",
        );
        refused(
            kv.put(with_token(put(), &alice_token))
                .await
                .map_err(etcd_client::Error::GRpcStatus),
            "etcdserver: revision of auth store is old",
            "a token from before a password change",
        );

        // A restarted member keeps no tokens, and needs none: the signature is the proof.
        let root_token = token(&endpoints[0], "root", "rootpw").await;
        cluster.kill(1);
        cluster.restart(1);
        let got = read_with_token(&endpoints[1], &root_token, "k0").await;
        assert_eq!(got.kvs.len(), 1, "a token from before the restart");

        // m2 with the public key alone: checks tokens, signs none.
        cluster.kill(2);
        let verify_only = format!("jwt,sign-method=RS256,pub-key={}", jwt_key("rsa-pkcs1.pub"));
        let mut extra = flags();
        extra.extend(["--auth-token", &verify_only]);
        cluster.extra = extra.iter().map(|s| (*s).to_owned()).collect();
        cluster.restart(2);
        read_with_token(&endpoints[2], &root_token, "k0").await;
        let mut auth = AuthClient::connect(endpoints[2].clone())
            .await
            .expect("connect");
        let refused_sign = auth
            .authenticate(AuthenticateRequest {
                name: "root".into(),
                password: "rootpw".into(),
            })
            .await
            .expect_err("a verify-only member signs");
        assert_eq!(refused_sign.code(), tonic::Code::Unknown);
        assert_eq!(
            refused_sign.message(),
            "auth: token signing attempted with verify-only key"
        );
    });
}

/// The client port's forwarding service refuses a request without credentials once auth is
/// on: a client cannot pass for a member (publish, authenticate) or skip its permissions.
#[test]
fn forwarded_requests_need_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 1, &flags());
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        wait_ready(&endpoints[0]).await;
        let mut open = client(&endpoints).await;
        set_up(&mut open).await;
        let mut raw = InternalClient::connect(endpoints[0].clone())
            .await
            .expect("connect");
        let put = |key: &str| RaftRequest {
            now_ms: 0,
            request: Some(raft_request::Request::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: b"forged".to_vec(),
                ..PutRequest::default()
            })),
            auth_revision: u64::MAX,
            internal: true,
        };
        let anonymous = raw.propose(put("k")).await.expect_err("anonymous");
        assert_eq!(anonymous.message(), "etcdserver: user name is empty");
        let mut forged = tonic::Request::new(put("k"));
        forged.metadata_mut().insert(
            strata_server::server::MEMBER_SECRET_HEADER,
            "bm90IHRoZSBzZWNyZXQ=".parse().expect("ascii"),
        );
        let forged = raw.propose(forged).await.expect_err("a wrong secret");
        assert_eq!(forged.message(), DENIED);
        // Alice's own token does not let her publish as a member.
        let mut root = login(&endpoints, "root", "rootpw").await;
        let token = token(&endpoints[0], "alice", "alicepw").await;
        let publish = RaftRequest {
            now_ms: 0,
            request: Some(raft_request::Request::Publish(MemberAttributes {
                id: 1,
                name: "evil".into(),
                client_urls: vec!["http://127.0.0.1:1".into()],
                cluster_id: 0,
            })),
            auth_revision: 0,
            internal: true,
        };
        let refused = raw
            .propose(with_token(publish.clone(), &token))
            .await
            .expect_err("a client's publish");
        assert_eq!(refused.message(), DENIED);
        // The same three on the stream a follower forwards many requests on: each refused.
        let batch = ForwardedBatch {
            requests: vec![
                Forwarded {
                    id: 7,
                    request: Some(put("k")),
                    ..Forwarded::default()
                },
                Forwarded {
                    id: 8,
                    request: Some(put("k")),
                    member_secret: b"not the secret".to_vec(),
                    ..Forwarded::default()
                },
                Forwarded {
                    id: 9,
                    request: Some(publish),
                    token: token.clone(),
                    ..Forwarded::default()
                },
            ],
        };
        let mut answers = raw
            .propose_many(tokio_stream::iter([batch]))
            .await
            .expect("the stream opens")
            .into_inner();
        let mut refusals = std::collections::BTreeMap::new();
        while let Some(message) = answers.message().await.expect("answers") {
            for answer in message.answers {
                assert!(answer.answer.is_none(), "{answer:?} was served");
                refusals.insert(answer.id, answer.error.expect("an error").message);
            }
        }
        assert_eq!(
            refusals.into_iter().collect::<Vec<_>>(),
            [
                (7, "etcdserver: user name is empty".to_owned()),
                (8, DENIED.to_owned()),
                (9, DENIED.to_owned()),
            ]
        );
        // Nothing forged was written.
        assert!(
            root.get("k", None)
                .await
                .expect("root reads")
                .kvs()
                .is_empty()
        );
    });
}

/// With auth on, a Kvdb session is opened with an etcd token and its writes need that user's
/// permissions; `get` needs the token in the metadata.
#[test]
fn kvdb_sessions_obey_etcd_users() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 1, &flags());
    let endpoints = cluster.endpoints();
    runtime().block_on(async {
        wait_ready(&endpoints[0]).await;
        let mut open = client(&endpoints).await;
        set_up(&mut open).await;
        let mut root = login(&endpoints, "root", "rootpw").await;
        root.user_grant_role("alice", "kv").await.expect("grant");
        let token = token(&endpoints[0], "alice", "alicepw").await;
        let mut kvdb = KvdbClient::connect(endpoints[0].clone())
            .await
            .expect("connect");
        let refused_register = kvdb
            .register(Auth {
                token: "not-a-token".into(),
            })
            .await
            .expect_err("a made-up token");
        assert_eq!(refused_register.message(), "etcdserver: invalid auth token");
        let session = kvdb
            .register(Auth {
                token: token.clone(),
            })
            .await
            .expect("register")
            .into_inner()
            .client_id;
        let put = |seq: u64, key: &str| strata_server::proto::clientpb::Request {
            client_id: session,
            seq,
            cmd: Some(Command {
                operate_type: Operate::Put as i32,
                put: Some(PutCommand {
                    data: vec![KvPair {
                        key: key.as_bytes().to_vec(),
                        value: b"v".to_vec(),
                    }],
                }),
                del: None,
            }),
            query: None,
        };
        let ok = kvdb.put(put(1, "kvdb")).await.expect("put").into_inner();
        assert!(ok.success, "{ok:?}");
        let denied = kvdb
            .put(put(2, "other"))
            .await
            .expect("answered")
            .into_inner();
        assert!(!denied.success);
        assert_eq!(denied.msg, DENIED);
        let anonymous = kvdb
            .get(ReadonlyQuery {
                key: b"kvdb".to_vec(),
            })
            .await
            .expect_err("get without a token");
        assert_eq!(anonymous.message(), "etcdserver: user name is empty");
        let get = with_token(
            ReadonlyQuery {
                key: b"kvdb".to_vec(),
            },
            &token,
        );
        let got = kvdb
            .get(get)
            .await
            .expect("get with the token")
            .into_inner();
        assert_eq!(got.data.len(), 1);
        assert!(
            root.get("other", None)
                .await
                .expect("root reads")
                .kvs()
                .is_empty()
        );
    });
}
