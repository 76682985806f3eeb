//! Mutual TLS between peers, configured as etcd's peer flags: every connection is TLS, each
//! side presents its certificate, and each checks the other's against the trusted CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::{TlsAcceptor, TlsConnector};

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
        if self.allowed_cn.is_none() && self.allowed_hostname.is_none() {
            return Ok(());
        }
        let Some(leaf) = leaf else {
            return Err("no certificate presented".to_owned());
        };
        if let Some(allowed) = &self.allowed_cn {
            let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
                .map_err(|e| format!("the certificate does not parse: {e}"))?;
            let mut names = cert.subject().iter_common_name();
            if names.any(|cn| cn.as_str().is_ok_and(|cn| cn == allowed)) {
                return Ok(());
            }
        }
        if let Some(allowed) = &self.allowed_hostname
            && let Ok(name) = rustls_pki_types::ServerName::try_from(allowed.as_str())
            && webpki::EndEntityCert::try_from(leaf)
                .and_then(|cert| cert.verify_is_valid_for_subject_name(&name))
                .is_ok()
        {
            return Ok(());
        }
        Err(match (&self.allowed_cn, &self.allowed_hostname) {
            (Some(cn), Some(host)) => {
                format!("the certificate's common name is not {cn:?} and it does not name {host}")
            }
            (Some(cn), None) => format!("the certificate's common name is not {cn:?}"),
            (None, _) => format!(
                "the certificate does not name {}",
                self.allowed_hostname.as_deref().unwrap_or_default()
            ),
        })
    }
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

/// Both ends of a node's TLS: how it accepts and how it dials.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) connector: TlsConnector,
}

impl Tls {
    /// Loads the files and builds both ends.
    pub(crate) fn load(config: &TlsConfig) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates(&config.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&config.key_file)
            .map_err(|e| file_error(&config.key_file, e))?;
        let mut roots = RootCertStore::empty();
        for ca in certificates(&config.trusted_ca_file)? {
            roots.add(ca)?;
        }
        let roots = Arc::new(roots);
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let server = if config.client_cert_auth {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::clone(&roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
            server.with_client_cert_verifier(verifier)
        } else {
            server.with_no_client_auth()
        }
        .with_single_cert(chain.clone(), key.clone_key())?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
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
