//! Mutual TLS between peers: a cluster with certificates from its CA works; a dialer without
//! TLS, or with a certificate from another CA, is refused and counted, and the cluster is
//! unaffected; unusable TLS files are refused at start; with an allowed common name or host
//! name (etcd's --peer-cert-allowed-cn and -hostname), a certificate of the cluster's CA
//! without it is refused too.

#[allow(dead_code)]
mod support {
    pub mod cluster;
}

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use strata_raft::{Message, MessageType, NodeId};
use strata_raft_node::{Transport, inbox};
use strata_transport::{BindError, TcpTransport, TlsConfig, TransportConfig};
use support::cluster::{CLUSTER, Cluster, WAIT};

/// A certificate authority.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn new_ca() -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Ca {
        cert: params.self_signed(&key).expect("self-signed"),
        key,
    }
}

/// Writes a certificate for 127.0.0.1 signed by `ca`, its key and the CA's certificate into
/// `dir` under `name`; the node's TLS files.
fn node_files(dir: &Path, name: &str, ca: &Ca) -> TlsConfig {
    files_for(dir, name, ca, "127.0.0.1")
}

/// As [`node_files`], for a certificate that names `ip`.
fn files_for(dir: &Path, name: &str, ca: &Ca, ip: &str) -> TlsConfig {
    files_with(dir, name, ca, &[ip], None)
}

/// As [`node_files`], for a certificate with the subject alternative names `names` and, if
/// given, the common name `cn`.
fn files_with(dir: &Path, name: &str, ca: &Ca, names: &[&str], cn: Option<&str>) -> TlsConfig {
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("params");
    if let Some(cn) = cn {
        params.distinguished_name.push(DnType::CommonName, cn);
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("signed");
    let files = TlsConfig::new(
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}-ca.crt")),
    );
    std::fs::write(&files.cert_file, cert.pem()).expect("cert");
    std::fs::write(&files.key_file, key.serialize_pem()).expect("key");
    std::fs::write(&files.trusted_ca_file, ca.cert.pem()).expect("ca");
    files
}

/// A transport with `files` that claims to be node 2 and sends `target` (at `addr`) a
/// heartbeat of a high term; kept by the caller until its refusal is counted.
async fn send_as_node_2(
    files: TlsConfig,
    target: NodeId,
    addr: std::net::SocketAddr,
) -> std::sync::Arc<TcpTransport> {
    let mut config = TransportConfig::new(
        2,
        CLUSTER,
        "127.0.0.1:0".parse().expect("addr"),
        BTreeMap::from([(target, addr)]),
    );
    config.tls = Some(files);
    let (sender, _inbox) = inbox();
    let transport = TcpTransport::bind(config, sender).await.expect("bind");
    transport.send(vec![Message {
        msg_type: MessageType::Heartbeat as i32,
        from: 2,
        to: target,
        term: 1_000,
        ..Message::default()
    }]);
    transport
}

/// A runtime for a test's own dialers.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Polls `count` until it passes `before`, with a bound.
fn wait_counted(count: impl Fn() -> u64, before: u64, what: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while count() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} not counted in time"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn peers_with_certificates_from_the_cluster_ca_replicate_and_strangers_are_refused() {
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = new_ca();
    let mut c = Cluster::new(3);
    for id in c.ids.clone() {
        c.tls
            .insert(id, node_files(certs.path(), &format!("node{id}"), &ca));
    }
    c.start_all();
    let mut last = 0;
    for i in 0..20 {
        last = c.put(&format!("k{i}"), &format!("v{i}"));
    }
    for id in c.ids.clone() {
        c.wait_applied(id, last);
    }
    let target: NodeId = 1;
    let refused = || c.nodes[&target].transport.metrics().refused;

    // A stranger with a certificate from another CA, claiming to be node 2.
    let other = new_ca();
    let stranger_files = node_files(certs.path(), "stranger", &other);
    let before = refused();
    let runtime = runtime();
    let stranger = runtime.block_on(send_as_node_2(stranger_files, target, c.addrs[&target]));
    wait_counted(refused, before, "a certificate from another CA");
    drop(stranger);

    // A certificate from the cluster's CA, but for another address, claiming to be node 2.
    let before = refused();
    let impostor_files = files_for(certs.path(), "impostor", &ca, "127.0.0.2");
    let impostor = runtime.block_on(send_as_node_2(impostor_files, target, c.addrs[&target]));
    wait_counted(refused, before, "a cluster certificate for another address");
    drop(impostor);

    // A dialer that trusts the cluster's CA but presents no certificate of its own.
    let before = refused();
    let ca_file = c.tls[&target].trusted_ca_file.clone();
    let addr = c.addrs[&target];
    runtime.block_on(async {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for ca in rustls_pki_types::CertificateDer::pem_file_iter(&ca_file).expect("ca") {
            roots.add(ca.expect("ca")).expect("root");
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        // With TLS 1.3 the client may finish before the server refuses: either way is fine.
        if let Ok(mut tls) = connector.connect(name, tcp).await {
            // A valid Hello as node 2: only the missing certificate can keep it out.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut hello = bytes::BytesMut::new();
            strata_transport::encode(
                &strata_transport::Hello {
                    version: strata_transport::PROTOCOL_VERSION,
                    cluster_id: CLUSTER,
                    from: 2,
                    to: target,
                    lane: 0,
                },
                &mut hello,
            );
            let _ = tls.write_all(&hello).await;
            let mut byte = [0u8; 1];
            let _ = tls.read(&mut byte).await;
        }
    });
    wait_counted(refused, before, "a dialer without a client certificate");

    // A dialer without TLS at all.
    let before = refused();
    let addr = c.addrs[&target];
    runtime.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut hello = bytes::BytesMut::new();
        strata_transport::encode(
            &strata_transport::Hello {
                version: strata_transport::PROTOCOL_VERSION,
                cluster_id: CLUSTER,
                from: 2,
                to: target,
                lane: 0,
            },
            &mut hello,
        );
        let _ = plain.write_all(&hello).await;
        let _ = plain.shutdown().await;
    });
    wait_counted(refused, before, "a dialer without TLS");

    // The cluster carries on: no term was raised by the stranger's heartbeat.
    let next = c.put("after", "strangers");
    for id in c.ids.clone() {
        c.wait_applied(id, next);
        assert!(c.raft(id).status().borrow().term < 1_000, "node {id}");
    }
}

#[test]
fn unusable_tls_files_are_refused_at_start() {
    let certs = tempfile::tempdir().expect("tempdir");
    let missing = TlsConfig::new(
        certs.path().join("none.crt"),
        certs.path().join("none.key"),
        certs.path().join("none-ca.crt"),
    );
    let empty = certs.path().join("empty.crt");
    std::fs::write(&empty, "").expect("write");
    let empty = TlsConfig::new(&empty, &empty, &empty);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for tls in [missing, empty] {
        let mut config = TransportConfig::new(
            1,
            CLUSTER,
            "127.0.0.1:0".parse().expect("addr"),
            BTreeMap::new(),
        );
        config.tls = Some(tls);
        let (sender, _inbox) = inbox();
        let bound = runtime.block_on(TcpTransport::bind(config, sender));
        assert!(matches!(bound, Err(BindError::Tls(_))), "{bound:?}");
    }
}

/// `allowed_cn` and `allowed_hostname` as each is given alone and both together: a
/// certificate passes with the common name, or (when a host name is allowed) with a name
/// valid for it; with neither set, any certificate passes, and with one set, none is refused.
#[test]
fn the_allowed_common_name_or_host_name_is_checked() {
    use rustls_pki_types::pem::PemObject;
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = new_ca();
    let leaf = |name: &str, names: &[&str], cn: Option<&str>| {
        let files = files_with(certs.path(), name, &ca, names, cn);
        rustls_pki_types::CertificateDer::from_pem_file(&files.cert_file).expect("pem")
    };
    let peer = leaf("peer", &["127.0.0.1", "member.example"], Some("peer"));
    let other = leaf("other", &["127.0.0.1"], Some("intruder"));
    let nameless = leaf("nameless", &["127.0.0.1"], None);
    let mut config = node_files(certs.path(), "self", &ca);
    assert!(config.check_allowed(Some(&other)).is_ok());
    assert!(config.check_allowed(None).is_ok());
    config.allowed_cn = Some("peer".to_owned());
    assert!(config.check_allowed(Some(&peer)).is_ok());
    for refused in [Some(&other), Some(&nameless), None] {
        let reason = config
            .check_allowed(refused)
            .expect_err("not the allowed CN");
        assert!(
            reason.contains("\"peer\"") || reason.contains("no certificate"),
            "{reason}"
        );
    }
    config.allowed_cn = None;
    config.allowed_hostname = Some("member.example".to_owned());
    assert!(config.check_allowed(Some(&peer)).is_ok());
    let reason = config.check_allowed(Some(&other)).expect_err("not named");
    assert!(reason.contains("member.example"), "{reason}");
    // Both: either passes.
    config.allowed_cn = Some("intruder".to_owned());
    assert!(config.check_allowed(Some(&peer)).is_ok());
    assert!(config.check_allowed(Some(&other)).is_ok());
    assert!(config.check_allowed(Some(&nameless)).is_err());
}

/// A cluster whose peers allow only the common name `peer` replicates; a dialer with a
/// certificate of the cluster's CA for the right address but another common name, claiming to
/// be node 2, is refused and counted.
#[test]
fn a_certificate_without_the_allowed_common_name_is_refused() {
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = new_ca();
    let mut c = Cluster::new(3);
    for id in c.ids.clone() {
        let mut files = files_with(
            certs.path(),
            &format!("node{id}"),
            &ca,
            &["127.0.0.1"],
            Some("peer"),
        );
        files.allowed_cn = Some("peer".to_owned());
        c.tls.insert(id, files);
    }
    c.start_all();
    let last = c.put("k", "v");
    for id in c.ids.clone() {
        c.wait_applied(id, last);
    }
    let intruder = files_with(
        certs.path(),
        "intruder",
        &ca,
        &["127.0.0.1"],
        Some("intruder"),
    );
    refused_and_unaffected(
        &c,
        intruder,
        "a cluster certificate with another common name",
    );
}

/// A dialer with `files`, claiming to be node 2, is refused by node 1 and counted; the
/// cluster then carries on, no term raised by the dialer's heartbeat.
fn refused_and_unaffected(c: &Cluster, files: TlsConfig, what: &str) {
    let target: NodeId = 1;
    let refused = || c.nodes[&target].transport.metrics().refused;
    let before = refused();
    let runtime = runtime();
    let sent = runtime.block_on(send_as_node_2(files, target, c.addrs[&target]));
    wait_counted(refused, before, what);
    drop(sent);
    let next = c.put("after", what);
    for id in c.ids.clone() {
        c.wait_applied(id, next);
        assert!(c.raft(id).status().borrow().term < 1_000, "node {id}");
    }
}

/// A revocation list signed by `ca` that lists `revoked` (serial numbers), as PEM.
fn crl(ca: &Ca, number: u64, revoked: &[u64]) -> String {
    let params = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2124, 1, 1),
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|&serial| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(serial),
                revocation_time: rcgen::date_time_ymd(2024, 1, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&ca.cert, &ca.key).expect("signed CRL");
    crl.pem().expect("PEM")
}

/// etcd's `--peer-crl-file`, read again when it changes: the nodes start with an empty list;
/// once it names a certificate of the cluster's CA, a dialer presenting that certificate
/// (for the right address, claiming to be node 2) is refused and counted, and the cluster,
/// whose own certificates the list does not name, carries on.
#[test]
fn a_certificate_the_revocation_list_names_is_refused_once_it_does() {
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = new_ca();
    let list = certs.path().join("peers.crl");
    std::fs::write(&list, crl(&ca, 1, &[])).expect("CRL");
    let mut c = Cluster::new(3);
    for id in c.ids.clone() {
        let mut files = node_files(certs.path(), &format!("node{id}"), &ca);
        files.crl_file = Some(list.clone());
        c.tls.insert(id, files);
    }
    c.start_all();
    let last = c.put("k", "v");
    for id in c.ids.clone() {
        c.wait_applied(id, last);
    }
    // A certificate of the cluster's CA for the right address, serial number 99, revoked
    // (a new file renamed over the list, as rotation tools write).
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(rcgen::SerialNumber::from(99));
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("signed");
    let revoked = TlsConfig::new(
        certs.path().join("revoked.crt"),
        certs.path().join("revoked.key"),
        certs.path().join("node1-ca.crt"),
    );
    std::fs::write(&revoked.cert_file, cert.pem()).expect("cert");
    std::fs::write(&revoked.key_file, key.serialize_pem()).expect("key");
    let next = certs.path().join("peers.crl.next");
    std::fs::write(&next, crl(&ca, 2, &[99])).expect("CRL");
    std::fs::rename(&next, &list).expect("rename");

    refused_and_unaffected(&c, revoked, "a revoked certificate");
}

/// Certificates that name host names, not addresses (etcd's deployments often give peers DNS
/// names): a node dialed by its host name must present a certificate for that name, and a
/// dialer's certificate passes the identity check when one of its names resolves to the
/// address it connects from (etcd's rule). Here every node's certificate names `localhost`
/// alone, peers are dialed as `localhost`, and the cluster replicates with client
/// certificates checked; dialed as `127.0.0.1`, a node refuses the same certificate.
#[test]
fn certificates_naming_host_names_pass_when_the_names_resolve_to_the_peer() {
    let (_certs, c) = localhost_cluster(true);
    let mut last = 0;
    for i in 0..10 {
        last = c.put(&format!("k{i}"), &format!("v{i}"));
    }
    for id in c.ids.clone() {
        c.wait_applied(id, last);
    }
}

/// Three started nodes whose certificates name only `localhost`, dialed as `localhost` or
/// (`by_name` false) by their addresses; the certificates' directory goes with them.
fn localhost_cluster(by_name: bool) -> (tempfile::TempDir, Cluster) {
    let certs = tempfile::tempdir().expect("tempdir");
    let ca = new_ca();
    let mut c = Cluster::new(3);
    for id in c.ids.clone() {
        let name = format!("node{id}");
        let files = files_with(certs.path(), &name, &ca, &["localhost"], None);
        c.tls.insert(id, files);
        if by_name {
            c.hosts.insert(id, "localhost".to_owned());
        }
    }
    c.start_all();
    (certs, c)
}

/// A dialer that reaches a node by its address when the node's certificate names only
/// `localhost` cannot verify it: the name checked is the one dialed.
#[test]
fn a_node_dialed_by_address_must_have_a_certificate_for_the_address() {
    let (_certs, c) = localhost_cluster(false);
    // Every dial fails verification: wait until each node has counted a failed connect,
    // then no link may have connected.
    let lanes = |id: NodeId| c.nodes[&id].transport.metrics().lanes;
    for id in c.ids.clone() {
        wait_counted(
            || lanes(id).values().map(|lane| lane.connect_failures).sum(),
            0,
            "a failed connect",
        );
    }
    for id in c.ids.clone() {
        assert!(
            lanes(id).values().all(|lane| lane.connects == 0),
            "node {id} connected to a peer whose certificate does not name its address"
        );
    }
}
