//! TLS on the client port (`--cert-file`, `--key-file`, `--trusted-ca-file`,
//! `--client-cert-auth`): three members with https client URLs, so that writes forwarded from a
//! follower to the leader go over TLS too.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use support::cluster::Cluster;

/// Writes a CA and, signed by it, a certificate for 127.0.0.1 (server and client use) into
/// `dir`; returns the paths (ca, cert, key).
fn certificates(dir: &Path, name: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("self-signed");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca, &ca_key).expect("signed");
    let path = |file: &str| {
        dir.join(format!("{name}-{file}"))
            .to_string_lossy()
            .into_owned()
    };
    std::fs::write(path("ca.crt"), ca.pem()).expect("ca");
    std::fs::write(path("cert.crt"), cert.pem()).expect("cert");
    std::fs::write(path("cert.key"), key.serialize_pem()).expect("key");
    (path("ca.crt"), path("cert.crt"), path("cert.key"))
}

fn tls(ca: &str, identity: Option<(&str, &str)>) -> ConnectOptions {
    let mut options =
        TlsOptions::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("ca")));
    if let Some((cert, key)) = identity {
        options = options.identity(Identity::from_pem(
            std::fs::read(cert).expect("cert"),
            std::fs::read(key).expect("key"),
        ));
    }
    ConnectOptions::new().with_tls(options)
}

#[test]
fn client_tls_requires_a_certificate_signed_by_the_trusted_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(dir.path(), "server");
    let (_, other_cert, other_key) = certificates(dir.path(), "stranger");
    let cluster = Cluster::start_tls(
        dir.path(),
        3,
        &[
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "--trusted-ca-file",
            &ca,
            "--client-cert-auth",
        ],
    );
    let endpoints = cluster.endpoints();
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            // Every member serves over TLS, and a write through a follower reaches the leader.
            let deadline = Instant::now() + Duration::from_secs(30);
            for (i, e) in endpoints.iter().enumerate() {
                loop {
                    let connected =
                        Client::connect([e.as_str()], Some(tls(&ca, Some((&cert, &key))))).await;
                    if let Ok(mut c) = connected
                        && c.put(format!("tls/{i}"), "x", None).await.is_ok()
                    {
                        break;
                    }
                    assert!(Instant::now() < deadline, "{e} never served over TLS");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            // No client certificate, or one from another CA: refused.
            for identity in [None, Some((other_cert.as_str(), other_key.as_str()))] {
                let refused = match Client::connect(
                    [endpoints[0].as_str()],
                    Some(tls(&ca, identity)),
                )
                .await
                {
                    Ok(mut c) => c.put("tls/refused", "x", None).await.is_err(),
                    Err(_) => true,
                };
                assert!(refused, "a client with {identity:?} was served");
            }
            // Plain HTTP/2 to a TLS port fails too.
            let plain = match Client::connect([endpoints[0].replace("https", "http")], None).await {
                Ok(mut c) => c.get("tls/0", None).await.is_err(),
                Err(_) => true,
            };
            assert!(plain, "a plaintext client was served");
        });
}

/// Peer TLS with `--peer-cert-allowed-cn`: members whose certificates have the allowed common
/// name form a cluster; members that allow another name refuse each other's connections, so
/// none becomes leader.
#[test]
fn peers_must_have_the_allowed_common_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = certificates(dir.path(), "peers");
    let flags = |cn: &str| -> Vec<String> {
        vec![
            format!("--peer-cert-file={cert}"),
            format!("--peer-key-file={key}"),
            format!("--peer-trusted-ca-file={ca}"),
            "--peer-client-cert-auth".to_owned(),
            format!("--peer-cert-allowed-cn={cn}"),
            "--heartbeat-interval=50".to_owned(),
            "--election-timeout=500".to_owned(),
        ]
    };
    let started = |name: &str, cn: &str| {
        let flags = flags(cn);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Cluster::start(&dir.path().join(name), 3, &flags)
    };
    // rcgen's default subject.
    let allowed = started("allowed", "rcgen self signed cert");
    let refused = started("refused", "another name");
    let leaders = |cluster: &Cluster| {
        let endpoints = cluster.endpoints();
        support::cluster::runtime().block_on(async {
            let mut leaders = Vec::new();
            for e in &endpoints {
                if let Ok(mut c) = Client::connect([e.as_str()], None).await
                    && let Ok(status) = c.status().await
                    && status.leader() != 0
                {
                    leaders.push(status.leader());
                }
            }
            leaders
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while leaders(&allowed).len() < 3 {
        assert!(Instant::now() < deadline, "no leader with the allowed name");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The other cluster's members refuse each other's connections (polled in the logs), and
    // have by then had several election timeouts in which to elect a leader.
    let said = |cluster: &Cluster| {
        (0..3).all(|i| {
            cluster
                .log(i)
                .contains("common name is not \"another name\"")
        })
    };
    while !said(&refused) {
        assert!(
            Instant::now() < deadline,
            "no refusal logged: {}",
            refused.log(0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(leaders(&refused).is_empty(), "a leader among peers refused");
}
