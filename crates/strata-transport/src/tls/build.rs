//! rustls configurations from PEM files, as etcd's TLS flags describe them.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::WebPkiClientVerifier;
use rustls::{CipherSuite, RootCertStore, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};

use super::{TlsError, certificates, file_error};

/// etcd's `--cipher-suites` names (Go's) of the TLS 1.2 suites rustls implements. etcd also
/// knows CBC, RC4, 3DES and static-RSA suites; rustls has none of them, so those names are
/// refused rather than ignored.
pub const CIPHER_SUITES: &[(&str, CipherSuite)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The suites Go (so etcd) knows that rustls does not implement.
const GO_ONLY_CIPHER_SUITES: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// The ring provider with the TLS 1.2 suites `names` (Go's names, in the order of
/// preference given; empty: rustls's defaults). TLS 1.3's suites are kept whatever the
/// names, as Go ignores its cipher suite list for TLS 1.3.
///
/// # Errors
///
/// [`TlsError::CipherSuite`] naming the first name rustls does not implement or nobody
/// knows.
pub fn crypto_provider(names: &[String]) -> Result<Arc<CryptoProvider>, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if names.is_empty() {
        return Ok(Arc::new(provider));
    }
    let available = std::mem::take(&mut provider.cipher_suites);
    let find = |suite: CipherSuite| available.iter().find(|s| s.suite() == suite).copied();
    let mut chosen: Vec<SupportedCipherSuite> = available
        .iter()
        .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
        .copied()
        .collect();
    for name in names {
        let suite = CIPHER_SUITES
            .iter()
            .find(|(known, _)| known == name)
            .and_then(|&(_, suite)| find(suite))
            .ok_or_else(|| {
                let why = if GO_ONLY_CIPHER_SUITES.contains(&name.as_str()) {
                    "is not implemented by rustls (no CBC, RC4, 3DES or static-RSA suites)"
                } else {
                    "is not a TLS cipher suite"
                };
                TlsError::CipherSuite(format!(
                    "cipher suite {name:?} {why}; the suites offered are {}",
                    CIPHER_SUITES
                        .iter()
                        .map(|(name, _)| *name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        if !chosen.contains(&suite) {
            chosen.push(suite);
        }
    }
    provider.cipher_suites = chosen;
    Ok(Arc::new(provider))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(path)? {
        roots.add(ca)?;
    }
    Ok(Arc::new(roots))
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// A CRL file's lists: PEM blocks, or one DER list (Go's `x509.ParseCRL` reads both).
fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let pem = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if !pem.is_empty() {
        return Ok(pem);
    }
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Err(file_error(
        path,
        "no certificate revocation list in the file",
    ))
}

/// A server's configuration: it presents `cert` with `key`; with `ca`, it asks clients for
/// a certificate signed by it (and refuses those `crl` lists), which `require_client_cert`
/// makes mandatory (etcd's `--client-cert-auth`); without, any client is served. ALPN offers
/// HTTP/2 and HTTP/1.1.
///
/// Revocation is etcd's rule: only the client's own certificate is looked up, and one whose
/// issuer has no list in `crl` passes.
///
/// # Errors
///
/// A file that cannot be read or used.
pub fn server_config(
    cert: &Path,
    key_file: &Path,
    ca: Option<&Path>,
    require_client_cert: bool,
    crl: Option<&Path>,
    provider: &Arc<CryptoProvider>,
) -> Result<rustls::ServerConfig, TlsError> {
    let chain = certificates(cert)?;
    let key = key(key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()?;
    let builder = match ca {
        Some(ca) => {
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(roots(ca)?, Arc::clone(provider));
            if let Some(crl) = crl {
                verifier = verifier
                    .with_crls(crls(crl)?)
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status();
            }
            if !require_client_cert {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A client's configuration: it trusts `ca` (no CA: no server is trusted) and presents
/// `cert` with `key` when asked. ALPN offers HTTP/2 (the peer transport ignores it).
///
/// # Errors
///
/// A file that cannot be read or used.
pub fn client_config(
    cert: &Path,
    key_file: &Path,
    ca: Option<&Path>,
    provider: &Arc<CryptoProvider>,
) -> Result<rustls::ClientConfig, TlsError> {
    let roots = match ca {
        Some(ca) => roots(ca)?,
        None => Arc::new(RootCertStore::empty()),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certificates(cert)?, key(key_file)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A client's configuration that accepts any server certificate (etcd's
/// `InsecureSkipVerify`, which its `--auto-tls` and `--peer-auto-tls` use: self-signed
/// certificates nobody can check): the connection is encrypted, and bound to the key of the
/// certificate presented, but not authenticated. It presents `cert` with `key` when asked.
///
/// # Errors
///
/// A file that cannot be read or used.
pub fn client_config_unverified(
    cert: &Path,
    key_file: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(Arc::clone(provider))))
        .with_client_auth_cert(certificates(cert)?, key(key_file)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts any certificate, and checks the handshake's signatures with its key.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls12(provider: &CryptoProvider) -> Vec<CipherSuite> {
        provider
            .cipher_suites
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls12(_)))
            .map(SupportedCipherSuite::suite)
            .collect()
    }

    #[test]
    fn cipher_suites_keep_tls13_and_the_named_tls12_suites_in_order() {
        let default = crypto_provider(&[]).expect("defaults");
        assert!(tls12(&default).len() >= 6);
        let names = [
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ]
        .map(str::to_owned);
        let chosen = crypto_provider(&names).expect("known names");
        assert_eq!(
            tls12(&chosen),
            [
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            ]
        );
        let tls13 = |p: &CryptoProvider| {
            p.cipher_suites
                .iter()
                .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
                .count()
        };
        assert_eq!(tls13(&chosen), tls13(&default));
    }

    #[test]
    fn cipher_suites_refuse_names_rustls_lacks_or_nobody_knows() {
        let cbc = crypto_provider(&["TLS_RSA_WITH_AES_128_CBC_SHA".to_owned()])
            .expect_err("CBC is refused");
        assert!(
            cbc.to_string().contains("not implemented by rustls"),
            "{cbc}"
        );
        let typo = crypto_provider(&["TLS_ECDHE_RSA_WITH_AES_128_GCM".to_owned()])
            .expect_err("a typo is refused");
        assert!(
            typo.to_string().contains("is not a TLS cipher suite"),
            "{typo}"
        );
        assert!(
            typo.to_string()
                .contains("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
        );
    }
}
