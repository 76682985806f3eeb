//! TLS on the client port (`--cert-file`, `--key-file`, `--trusted-ca-file`,
//! `--client-cert-auth`, `--client-crl-file`, `--client-cert-allowed-hostname`,
//! `--cipher-suites`), and the channels this member opens to other members' client ports
//! (to forward to the leader), which present the same certificate.
//!
//! Both ends are rustls configurations from strata-transport's builders, read again from
//! the files when they change (etcd reads them at every handshake), so a rotated
//! certificate or a new revocation list takes effect at the next connection, without a
//! restart.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls_pki_types::ServerName;
use strata_transport::tls::{
    Reloading, check_allowed, client_config, client_config_unverified, server_config,
};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::coalesce::Coalesced;
use crate::config::{ListenUrl, ServerConfig, TlsFiles};
use crate::server::ServerError;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once on one listener; more connections wait to be accepted
/// (the kernel's backlog holds them), so a flood of idle connections costs no memory here.
const HANDSHAKES_MAX: usize = 256;

/// Connections handshaken and not yet taken by the HTTP server.
const READY_MAX: usize = 64;

/// How long a certificate made by `--auto-tls` or `--peer-auto-tls` is valid (etcd's year).
const SELF_SIGNED_DAYS: i64 = 365;

/// Makes the self-signed certificates `--auto-tls` and `--peer-auto-tls` ask for, where
/// their files are missing (etcd's `SelfCert`: files already there are used as they are, so
/// a restarted member presents the same certificate).
///
/// # Errors
///
/// [`ServerError::Tls`] if a certificate cannot be made or written.
pub fn make_self_signed(config: &ServerConfig) -> Result<(), ServerError> {
    for (tls, urls) in [
        (&config.client_tls, &config.listen_client_urls),
        (&config.peer_tls, &config.listen_peer_urls),
    ] {
        if let Some(tls) = tls.as_ref().filter(|tls| tls.self_signed) {
            self_signed(tls, urls).map_err(ServerError::Tls)?;
        }
    }
    Ok(())
}

/// One side's certificate: ECDSA P-256 (etcd's is P-521, which ring cannot sign with),
/// organization `etcd`, valid a year, for server and client use, naming the listen URLs'
/// addresses. The key is written first, mode 0600, each file durably replaced, so a crash
/// leaves no certificate without its key.
fn self_signed(tls: &TlsFiles, urls: &[ListenUrl]) -> Result<(), String> {
    if tls.cert_file.exists() && tls.key_file.exists() {
        return Ok(());
    }
    let dir = tls.cert_file.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let names: Vec<String> = urls.iter().map(|url| url.addr.ip().to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now;
    params.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(rcgen::SerialNumber::from(
        rand::random::<[u8; 16]>().to_vec(),
    ));
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    for (path, contents, mode) in [
        (&tls.key_file, key.serialize_pem(), 0o600),
        (&tls.cert_file, cert.pem(), 0o644),
    ] {
        let temp = path.with_extension("pem.tmp");
        strata_fs::write_synced(&temp, mode, |w| w.write_all(contents.as_bytes()))
            .and_then(|_| strata_fs::rename_durable(&temp, path))
            .map_err(|e| e.to_string())?;
    }
    tracing::info!(cert = %tls.cert_file.display(), "made a self-signed certificate");
    Ok(())
}

/// The client port's TLS: how it accepts, and the host name a client's certificate must be
/// valid for.
#[derive(Debug)]
pub struct ServerTls {
    acceptor: Reloading<TlsAcceptor>,
    allowed_hostname: Option<String>,
}

/// The client port's TLS, if configured.
///
/// # Errors
///
/// [`ServerError::Tls`] if a file cannot be read or used.
pub fn server_tls(config: &ServerConfig) -> Result<Option<Arc<ServerTls>>, ServerError> {
    let Some(tls) = config.client_tls.clone() else {
        return Ok(None);
    };
    let provider = strata_transport::tls::crypto_provider(&config.cipher_suites)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let mut files = vec![tls.cert_file.clone(), tls.key_file.clone()];
    files.extend(tls.trusted_ca_file.clone());
    files.extend(tls.crl_file.clone());
    let allowed_hostname = tls.allowed_names.1.clone();
    let acceptor = Reloading::new("client TLS", files, move || {
        let config = server_config(
            &tls.cert_file,
            &tls.key_file,
            tls.trusted_ca_file.as_deref(),
            // etcd's rule: a trusted CA makes client certificates required, whether or not
            // --client-cert-auth is given (which also makes a certificate's name its user).
            true,
            tls.crl_file.as_deref(),
            &provider,
        )?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    })
    .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(Some(Arc::new(ServerTls {
        acceptor,
        allowed_hostname,
    })))
}

/// A client port's connection below TLS.
pub type Client = Coalesced<TcpStream>;

/// The TLS connections of `incoming`: each handshake runs in its own task (at most 256 at
/// once, each within 10 s), so a slow client holds up no other. A refused client is a warning in the log, as etcd logs it.
pub fn accept<S>(
    mut incoming: S,
    tls: Arc<ServerTls>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<tokio_rustls::server::TlsStream<Client>>>
where
    S: tokio_stream::Stream<Item = io::Result<Client>> + Send + Unpin + 'static,
{
    use tokio_stream::StreamExt as _;
    let (ready, ready_rx) = mpsc::channel(READY_MAX);
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                return;
            };
            let tcp = tokio::select! {
                next = incoming.next() => next,
                () = ready.closed() => return,
            };
            let tcp = match tcp {
                Some(Ok(tcp)) => tcp,
                Some(Err(e)) => {
                    tracing::warn!("accept on the client port: {e}");
                    continue;
                }
                None => return,
            };
            let (tls, ready) = (Arc::clone(&tls), ready.clone());
            tokio::spawn(async move {
                let peer = tcp.get_ref().peer_addr().ok();
                let acceptor = tls.acceptor.get();
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::warn!(?peer, "refused a client connection at TLS: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(
                                ?peer,
                                "refused a client connection: no TLS handshake in time"
                            );
                            return;
                        }
                    };
                drop(permit);
                let leaf = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(<[_]>::first);
                if let Err(e) = check_allowed(None, tls.allowed_hostname.as_deref(), leaf) {
                    tracing::warn!(?peer, "refused a client connection: {e}");
                    return;
                }
                let _ = ready.send(Ok(stream)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(ready_rx)
}

/// The channels this member opens to other members' client ports, one per member, made
/// again when its URL changes.
#[derive(Debug)]
pub struct Channels {
    /// How they dial `https` URLs: this member's client certificate, read again when the
    /// files change.
    tls: Option<Arc<Reloading<TlsConnector>>>,
    open: Mutex<BTreeMap<u64, (String, Channel)>>,
}

impl Channels {
    /// Channels that present the client port's certificate, if it has one.
    ///
    /// # Errors
    ///
    /// [`ServerError::Tls`] if a file cannot be read or used.
    pub fn new(config: &ServerConfig) -> Result<Self, ServerError> {
        let tls = match config.client_tls.clone() {
            None => None,
            Some(tls) => {
                let provider = strata_transport::tls::crypto_provider(&config.cipher_suites)
                    .map_err(|e| ServerError::Tls(e.to_string()))?;
                let mut files = vec![tls.cert_file.clone(), tls.key_file.clone()];
                files.extend(tls.trusted_ca_file.clone());
                let connector = Reloading::new("client TLS (forwarding)", files, move || {
                    // Members with --auto-tls check nothing of each other (etcd's rule).
                    let config = if tls.self_signed {
                        client_config_unverified(&tls.cert_file, &tls.key_file, &provider)?
                    } else {
                        client_config(
                            &tls.cert_file,
                            &tls.key_file,
                            tls.trusted_ca_file.as_deref(),
                            &provider,
                        )?
                    };
                    Ok(TlsConnector::from(Arc::new(config)))
                })
                .map_err(|e| ServerError::Tls(e.to_string()))?;
                Some(Arc::new(connector))
            }
        };
        Ok(Self {
            tls,
            open: Mutex::new(BTreeMap::new()),
        })
    }

    /// The channel to `member`'s client port at `url`, connecting lazily.
    ///
    /// # Errors
    ///
    /// A URL that does not parse, or an `https` URL when this member has no certificate.
    pub fn get(&self, member: u64, url: &str) -> Result<Channel, String> {
        if let Some((at, channel)) = self.open.lock().get(&member)
            && at == url
        {
            return Ok(channel.clone());
        }
        let endpoint = |url: String| {
            Endpoint::from_shared(url)
                .map(|e| e.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true))
        };
        let channel = if let Some(rest) = url.strip_prefix("https://") {
            let Some(tls) = &self.tls else {
                return Err("an https URL, and this member has no --cert-file".to_owned());
            };
            // tonic would add TLS of its own to an `https` URI; `Dial` does it instead.
            endpoint(format!("http://{rest}"))
                .map_err(|e| e.to_string())?
                .connect_with_connector_lazy(Dial(Arc::clone(tls)))
        } else {
            endpoint(url.to_owned())
                .map_err(|e| e.to_string())?
                .connect_lazy()
        };
        self.open
            .lock()
            .insert(member, (url.to_owned(), channel.clone()));
        Ok(channel)
    }
}

/// Dials a member's `https` client URL (given to it as `http`, see [`Channels::get`]): TCP,
/// then TLS with the name (or IP address) the URL gives, which the member's certificate
/// must be valid for.
#[derive(Clone)]
struct Dial(Arc<Reloading<TlsConnector>>);

type Dialed = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<Uri> for Dial {
    type Response = Dialed;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Dialed, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.0.get();
        Box::pin(async move {
            let host = uri.host().ok_or("a URL without a host")?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host)?;
            Ok(TokioIo::new(connector.connect(name, tcp).await?))
        })
    }
}
