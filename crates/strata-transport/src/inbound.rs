//! The inbound side: accepts connections, checks each one's [`Hello`] (version, cluster,
//! sender, recipient) before anything reaches Raft, then reads frames and hands the messages to
//! the node's inbox. Bad input closes that connection only, and is counted.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Shared;
use crate::frame::{self, FrameError, Hello, Lane, PROTOCOL_VERSION, Welcome};
use crate::metrics::add;
use crate::outbound::HANDSHAKE_BYTES_MAX;
use crate::tls::Conn;

/// Bytes read from a connection at a time, at least: many small frames per read.
const READ_BYTES_MIN: usize = 64 << 10;

/// Connections still in their handshake (TLS and `Hello`), at most: each holds a small buffer
/// for up to the handshake timeout. One more closes the oldest still waiting (counted as
/// refused): a peer's handshake takes milliseconds, so strangers holding connections open
/// without finishing theirs cannot keep a peer out, nor tie up memory. Established connections
/// are bounded by the peers (one per peer and lane: a newer one replaces an older).
pub const HANDSHAKES_MAX: usize = 64;

/// The connections in their handshake, oldest first: each one's number and what closes it.
#[derive(Default)]
struct Handshakes {
    waiting: parking_lot::Mutex<std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>>,
    next: std::sync::atomic::AtomicU64,
}

/// A connection's place among those in their handshake; it leaves when dropped.
struct InHandshake {
    handshakes: Arc<Handshakes>,
    number: u64,
    evicted: Arc<tokio::sync::Notify>,
}

impl Handshakes {
    /// Registers a new connection, closing the oldest waiting one if there are too many.
    fn enter(self: &Arc<Self>, shared: &Shared) -> InHandshake {
        let number = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evicted = Arc::new(tokio::sync::Notify::new());
        let oldest = {
            let mut waiting = self.waiting.lock();
            waiting.push_back((number, Arc::clone(&evicted)));
            if waiting.len() > HANDSHAKES_MAX {
                waiting.pop_front()
            } else {
                None
            }
        };
        if let Some((_, oldest)) = oldest {
            add(&shared.refused, 1);
            tracing::warn!(
                "closed the oldest of {HANDSHAKES_MAX} peer connections still in their handshake"
            );
            oldest.notify_one();
        }
        InHandshake {
            handshakes: Arc::clone(self),
            number,
            evicted,
        }
    }
}

impl Drop for InHandshake {
    fn drop(&mut self) {
        self.handshakes
            .waiting
            .lock()
            .retain(|(n, _)| *n != self.number);
    }
}

/// Bytes of the read buffer until the handshake passed.
const HANDSHAKE_BUFFER_BYTES: usize = 4096;

/// The most DNS names of a dialer's certificate looked up to find its address.
const DNS_NAMES_MAX: usize = 8;

/// How long looking up one of them may take.
const DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Accepts connections until the transport shuts down.
pub(crate) async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let handshakes = Arc::new(Handshakes::default());
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let entered = handshakes.enter(&shared);
                let shared_for_task = Arc::clone(&shared);
                let task = tokio::spawn(serve(stream, addr, shared_for_task, entered));
                shared.keep(task);
            }
            Err(e) => {
                // Out of file descriptors, mostly: wait a little rather than spin.
                tracing::warn!("accepting a peer connection failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why a connection was refused or closed.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no handshake in time")]
    Timeout,
}

async fn serve(tcp: TcpStream, addr: SocketAddr, shared: Arc<Shared>, handshake: InHandshake) {
    let evicted = Arc::clone(&handshake.evicted);
    tokio::select! {
        () = serve_connection(tcp, addr, Arc::clone(&shared), handshake) => {}
        // Only while in the handshake: once it passed, nothing notifies this.
        () = evicted.notified() => {}
    }
}

async fn serve_connection(
    tcp: TcpStream,
    addr: SocketAddr,
    shared: Arc<Shared>,
    handshake: InHandshake,
) {
    let _ = tcp.set_nodelay(true);
    // The dialer's certificate (with TLS), to check against the node it claims to be.
    let mut certificate = None;
    let mut stream: Box<dyn Conn> = match &shared.tls {
        None => Box::new(tcp),
        Some(tls) => {
            let accepted =
                tokio::time::timeout(shared.config.handshake_timeout, tls.acceptor().accept(tcp))
                    .await;
            match accepted {
                Ok(Ok(stream)) => {
                    certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|c| c.clone().into_owned());
                    Box::new(stream)
                }
                Ok(Err(e)) => {
                    add(&shared.refused, 1);
                    tracing::warn!(%addr, "refused a peer connection at TLS: {e}");
                    return;
                }
                Err(_) => {
                    add(&shared.refused, 1);
                    tracing::warn!(%addr, "refused a peer connection: no TLS handshake in time");
                    return;
                }
            }
        }
    };
    let mut buffer = BytesMut::with_capacity(HANDSHAKE_BUFFER_BYTES);
    let hello = tokio::time::timeout(
        shared.config.handshake_timeout,
        read_hello(&mut stream, &mut buffer),
    )
    .await
    .map_err(|_| Refusal::Timeout)
    .and_then(|read| read);
    let hello = match hello {
        Ok(hello) => hello,
        Err(e) => {
            add(&shared.refused, 1);
            tracing::warn!(%addr, "refused a peer connection: {e}");
            return;
        }
    };
    let identity = match check(&hello, &shared) {
        Ok(()) => check_identity(&hello, addr, certificate.as_ref(), &shared).await,
        Err(e) => Err(e),
    };
    if let Err(reason) = identity.and_then(|()| match &shared.config.tls {
        Some(tls) => tls
            .check_allowed(certificate.as_ref())
            .map_err(|e| format!("node {}: {e}", hello.from)),
        None => Ok(()),
    }) {
        add(&shared.refused, 1);
        tracing::warn!(
            %addr,
            from = hello.from,
            cluster_id = hello.cluster_id,
            "refused a peer connection: {reason}"
        );
        let mut out = BytesMut::new();
        frame::encode(
            &Welcome {
                accepted: false,
                reason,
                version: PROTOCOL_VERSION,
            },
            &mut out,
        );
        let _ = stream.write_all(&out).await;
        return;
    }
    let lane = Lane::try_from(hello.lane).unwrap_or(Lane::Control);
    let counters = shared.counters(hello.from, lane);
    // One connection per peer and lane: this one replaces an older one (whose dialer has
    // reconnected, or vanished without closing it). Registered before the dialer is
    // welcomed: a newer connection it dials after the welcome always comes later here too.
    let serving = Serving::start(&shared, hello.from, lane);
    let mut out = BytesMut::new();
    frame::encode(
        &Welcome {
            accepted: true,
            reason: String::new(),
            version: PROTOCOL_VERSION,
        },
        &mut out,
    );
    if stream.write_all(&out).await.is_err() {
        return;
    }
    drop(handshake);
    let max = shared.config.frame_bytes_max;
    loop {
        loop {
            let body = match frame::split_frame(&mut buffer, max) {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(e) => return bad(&shared, addr, hello.from, &e.to_string()),
            };
            let len = body.len() as u64;
            let message = match frame::decode_message(body) {
                Ok(message) => message,
                Err(e) => return bad(&shared, addr, hello.from, &e.to_string()),
            };
            if message.from != hello.from || message.to != shared.config.id {
                return bad(
                    &shared,
                    addr,
                    hello.from,
                    "a message from or to another node than the handshake said",
                );
            }
            add(&counters.bytes_received, len + frame::LENGTH_BYTES as u64);
            // A full inbox lane drops it and counts (Raft resends).
            if shared.inbox.deliver(message) {
                add(&counters.frames_received, 1);
            }
        }
        if buffer.capacity() - buffer.len() < READ_BYTES_MIN / 2 {
            buffer.reserve(READ_BYTES_MIN);
        }
        tokio::select! {
            read = stream.read_buf(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            () = serving.replaced.notified() => return,
        }
    }
}

/// The inbound connection serving one peer and lane; it ends when a newer one replaces it.
struct Serving {
    shared: Arc<Shared>,
    key: (u64, Lane),
    number: u64,
    replaced: Arc<tokio::sync::Notify>,
}

impl Serving {
    fn start(shared: &Arc<Shared>, from: u64, lane: Lane) -> Self {
        let number = shared
            .next_connection
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let replaced = Arc::new(tokio::sync::Notify::new());
        let older = shared
            .serving
            .lock()
            .insert((from, lane), (number, Arc::clone(&replaced)));
        if let Some((_, older)) = older {
            // A stored permit: the older connection ends at its next wait.
            older.notify_one();
        }
        Self {
            shared: Arc::clone(shared),
            key: (from, lane),
            number,
            replaced,
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let mut serving = self.shared.serving.lock();
        if serving
            .get(&self.key)
            .is_some_and(|(n, _)| *n == self.number)
        {
            serving.remove(&self.key);
        }
    }
}

async fn read_hello(stream: &mut Box<dyn Conn>, buffer: &mut BytesMut) -> Result<Hello, Refusal> {
    loop {
        if let Some(body) = frame::split_frame(buffer, HANDSHAKE_BYTES_MAX)? {
            return Ok(frame::decode_handshake(body)?);
        }
        if stream.read_buf(buffer).await? == 0 {
            return Err(Refusal::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Whether the dialer may talk to this node; the reason if not.
fn check(hello: &Hello, shared: &Shared) -> Result<(), String> {
    if hello.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} (this node speaks {PROTOCOL_VERSION})",
            hello.version
        ));
    }
    if hello.cluster_id != shared.config.cluster_id {
        return Err(format!(
            "cluster {:#x}, not this node's {:#x}",
            hello.cluster_id, shared.config.cluster_id
        ));
    }
    if hello.to != shared.config.id {
        return Err(format!(
            "meant for node {}, this is node {}",
            hello.to, shared.config.id
        ));
    }
    if shared.addr(hello.from).is_none() {
        return Err(format!("node {} is not a known peer", hello.from));
    }
    if Lane::try_from(hello.lane).is_err() {
        return Err(format!("unknown lane {}", hello.lane));
    }
    Ok(())
}

/// Whether the dialer is the node it claims to be, as far as this node can tell: it connects
/// from that node's configured IP address, and with client certificates its certificate names
/// that address, or a host name that resolves to it (etcd's rule), so a certificate of the
/// cluster's CA cannot pass for another node's. (A peer configured at an unspecified address
/// is not checked by address; `skip_client_san_verification` skips the certificate's part.)
async fn check_identity(
    hello: &Hello,
    addr: SocketAddr,
    certificate: Option<&rustls_pki_types::CertificateDer<'static>>,
    shared: &Shared,
) -> Result<(), String> {
    let Some(configured) = shared.addr(hello.from) else {
        return Err(format!("node {} is not a known peer", hello.from));
    };
    let ip = configured.ip();
    if ip.is_unspecified() {
        return Ok(());
    }
    if addr.ip() != ip {
        return Err(format!(
            "node {} is at {ip}, not at {}",
            hello.from,
            addr.ip()
        ));
    }
    // With client certificates demanded (etcd's --peer-client-cert-auth), the certificate
    // must name the address too.
    if !shared
        .config
        .tls
        .as_ref()
        .is_some_and(|tls| tls.client_cert_auth && !tls.skip_client_san_verification)
    {
        return Ok(());
    }
    let Some(der) = certificate else {
        return Err(format!("node {} presented no certificate", hello.from));
    };
    let name = rustls_pki_types::ServerName::IpAddress(ip.into());
    let Err(e) = webpki::EndEntityCert::try_from(der)
        .and_then(|cert| cert.verify_is_valid_for_subject_name(&name))
    else {
        return Ok(());
    };
    let names = dns_names(der);
    for name in &names {
        if resolves_to(name, ip).await {
            return Ok(());
        }
    }
    let names = if names.is_empty() {
        String::new()
    } else {
        format!(" and none of {names:?} resolves to it")
    };
    Err(format!(
        "node {}'s certificate does not name {ip}{names}: {e}",
        hello.from
    ))
}

/// The DNS names a certificate's subject alternative names give (at most
/// [`DNS_NAMES_MAX`], so that a dialer cannot make this node look up many).
fn dns_names(der: &rustls_pki_types::CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(names)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(name) => Some((*name).to_owned()),
            _ => None,
        })
        .take(DNS_NAMES_MAX)
        .collect()
}

/// Whether `name` resolves to `ip`, within [`DNS_TIMEOUT`]. Wildcard names are not looked
/// up.
async fn resolves_to(name: &str, ip: std::net::IpAddr) -> bool {
    if name.contains('*') {
        return false;
    }
    tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((name, 0)))
        .await
        .ok()
        .and_then(Result::ok)
        .is_some_and(|mut addrs| addrs.any(|a| a.ip() == ip))
}

fn bad(shared: &Shared, addr: SocketAddr, from: u64, reason: &str) {
    add(&shared.bad_frames, 1);
    tracing::warn!(%addr, from, "closed a peer connection: {reason}");
}
