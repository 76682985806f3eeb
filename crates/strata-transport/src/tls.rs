//! Mutual TLS between peers, configured as etcd's peer flags: every connection is TLS, each
//! side presents its certificate, and each checks the other's against the trusted CA.
//!
//! The building blocks are public ([`server_config`], [`client_config`], [`crypto_provider`],
//! [`Reloading`]) so that a server's client port can be configured the same way: etcd's
//! `--cipher-suites` and CRL files, and certificates read again when they change.

mod build;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use build::{
    CIPHER_SUITES, client_config, client_config_unverified, crypto_provider, server_config,
};
pub use reload::Reloading;

/// Where a node's peer TLS material is (PEM files), as etcd's flags name it.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// This node's certificate chain (`--peer-cert-file`): presented to peers both when it
    /// dials and when it accepts. It must name the address peers reach it at (an IP SAN for
    /// an IP address).
    pub cert_file: PathBuf,
    /// Its private key (`--peer-key-file`).
    pub key_file: PathBuf,
    /// The CA peers' certificates must be signed by (`--peer-trusted-ca-file`).
    pub trusted_ca_file: PathBuf,
    /// Refuse a dialer without a certificate signed by the trusted CA
    /// (`--peer-client-cert-auth`). Default true.
    pub client_cert_auth: bool,
    /// The subject common name a peer's certificate must have (`--peer-cert-allowed-cn`),
    /// checked both ways: on a dialer's certificate and on the certificate of the peer dialed.
    /// With [`allowed_hostname`](Self::allowed_hostname) too, either is enough (etcd's rule).
    pub allowed_cn: Option<String>,
    /// A host name a peer's certificate must be valid for (`--peer-cert-allowed-hostname`),
    /// checked both ways as [`allowed_cn`](Self::allowed_cn).
    pub allowed_hostname: Option<String>,
    /// A certificate revocation list (`--peer-crl-file`, PEM or DER): a dialer whose
    /// certificate it lists is refused. Read again when it changes, as the certificate is.
    pub crl_file: Option<PathBuf>,
    /// The TLS 1.2 cipher suites offered and accepted, by Go's names (etcd's
    /// `--cipher-suites`, see [`CIPHER_SUITES`]); empty: rustls's defaults. TLS 1.3's suites
    /// are always offered, as Go does.
    pub cipher_suites: Vec<String>,
    /// Self-signed certificates (etcd's `--peer-auto-tls`): no peer's certificate is checked,
    /// either way, and [`trusted_ca_file`](Self::trusted_ca_file) is not read. Connections
    /// are encrypted, not authenticated. See [`TlsConfig::self_signed`].
    pub unverified: bool,
    /// Do not check that a dialer's certificate names the address it connects from (etcd's
    /// `--experimental-peer-skip-client-san-verification`); it must still connect from the
    /// address configured for the node it claims to be.
    pub skip_client_san_verification: bool,
}

impl TlsConfig {
    /// Mutual TLS with these files.
    pub fn new(
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
        trusted_ca_file: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            trusted_ca_file: trusted_ca_file.into(),
            client_cert_auth: true,
            allowed_cn: None,
            allowed_hostname: None,
            crl_file: None,
            cipher_suites: Vec::new(),
            unverified: false,
            skip_client_san_verification: false,
        }
    }

    /// TLS with a self-signed certificate, as etcd's `--peer-auto-tls`: peers' certificates
    /// are not checked ([`unverified`](Self::unverified)).
    pub fn self_signed(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        Self {
            client_cert_auth: false,
            unverified: true,
            ..Self::new(cert_file, key_file, PathBuf::new())
        }
    }

    /// Checks a peer's certificate (`leaf`, the first of its chain, already verified against
    /// the trusted CA) against [`allowed_cn`](Self::allowed_cn) and
    /// [`allowed_hostname`](Self::allowed_hostname): with neither set, any passes; else one
    /// of those given must match.
    ///
    /// # Errors
    ///
    /// Why it does not pass, for the log.
    pub fn check_allowed(&self, leaf: Option<&CertificateDer<'_>>) -> Result<(), String> {
        check_allowed(
            self.allowed_cn.as_deref(),
            self.allowed_hostname.as_deref(),
            leaf,
        )
    }
}

/// Checks the certificate the other side presented (`leaf`, the first of its chain, already
/// verified against the trusted CA): with neither `allowed_cn` nor `allowed_hostname`, any
/// passes; else it must have that subject common name or be valid for that host name (with
/// both given, either is enough: etcd's rule).
///
/// # Errors
///
/// Why it does not pass, for the log.
pub fn check_allowed(
    allowed_cn: Option<&str>,
    allowed_hostname: Option<&str>,
    leaf: Option<&CertificateDer<'_>>,
) -> Result<(), String> {
    if allowed_cn.is_none() && allowed_hostname.is_none() {
        return Ok(());
    }
    let Some(leaf) = leaf else {
        return Err("no certificate presented".to_owned());
    };
    if let Some(allowed) = allowed_cn {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| format!("the certificate does not parse: {e}"))?;
        let mut names = cert.subject().iter_common_name();
        if names.any(|cn| cn.as_str().is_ok_and(|cn| cn == allowed)) {
            return Ok(());
        }
    }
    if let Some(allowed) = allowed_hostname
        && let Ok(name) = rustls_pki_types::ServerName::try_from(allowed)
        && webpki::EndEntityCert::try_from(leaf)
            .and_then(|cert| cert.verify_is_valid_for_subject_name(&name))
            .is_ok()
    {
        return Ok(());
    }
    Err(match (allowed_cn, allowed_hostname) {
        (Some(cn), Some(host)) => {
            format!("the certificate's common name is not {cn:?} and it does not name {host}")
        }
        (Some(cn), None) => format!("the certificate's common name is not {cn:?}"),
        (None, host) => format!("the certificate does not name {}", host.unwrap_or_default()),
    })
}

/// Why the TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file that cannot be read or holds no usable PEM item.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificates or the key.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The trusted CA cannot verify client certificates.
    #[error("client verification: {0}")]
    Verifier(String),
    /// A cipher suite name that is not one of [`CIPHER_SUITES`].
    #[error("{0}")]
    CipherSuite(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// Both ends of a node's TLS: how it accepts and how it dials, built again from the files
/// when one of them changes (a rotated certificate, a new CRL), for the next connection.
pub(crate) struct Tls {
    ends: Reloading<(TlsAcceptor, TlsConnector)>,
}

impl Tls {
    /// Loads the files and builds both ends.
    pub(crate) fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let provider = crypto_provider(&config.cipher_suites)?;
        let ca = Some(config.trusted_ca_file.as_path()).filter(|_| !config.unverified);
        let build = {
            let config = config.clone();
            move || {
                let ca = Some(config.trusted_ca_file.as_path()).filter(|_| !config.unverified);
                let server = server_config(
                    &config.cert_file,
                    &config.key_file,
                    ca.filter(|_| config.client_cert_auth),
                    config.client_cert_auth,
                    config.crl_file.as_deref(),
                    &provider,
                )?;
                let client = match ca {
                    Some(_) => client_config(&config.cert_file, &config.key_file, ca, &provider)?,
                    None => {
                        client_config_unverified(&config.cert_file, &config.key_file, &provider)?
                    }
                };
                Ok((
                    TlsAcceptor::from(Arc::new(server)),
                    TlsConnector::from(Arc::new(client)),
                ))
            }
        };
        let mut files = vec![config.cert_file.clone(), config.key_file.clone()];
        files.extend(ca.map(Path::to_path_buf));
        files.extend(config.crl_file.clone());
        Ok(Self {
            ends: Reloading::new("peer TLS", files, build)?,
        })
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.ends.get().0.clone()
    }

    pub(crate) fn connector(&self) -> TlsConnector {
        self.ends.get().1.clone()
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// A connection, plain or TLS.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}
