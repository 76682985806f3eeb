//! The TLS flags of each side (client and peer): which files are given, and whether they
//! make a usable set.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{ConfigError, ListenUrl, Scheme, TlsFiles};

/// The flag names of one side's TLS material.
pub(super) struct TlsFlags {
    pub(super) cert: &'static str,
    pub(super) key: &'static str,
    pub(super) trusted_ca: &'static str,
    pub(super) client_cert_auth: &'static str,
}

impl TlsFlags {
    pub(super) const CLIENT: TlsFlags = TlsFlags {
        cert: "cert-file",
        key: "key-file",
        trusted_ca: "trusted-ca-file",
        client_cert_auth: "client-cert-auth",
    };
    pub(super) const PEER: TlsFlags = TlsFlags {
        cert: "peer-cert-file",
        key: "peer-key-file",
        trusted_ca: "peer-trusted-ca-file",
        client_cert_auth: "peer-client-cert-auth",
    };
}

/// One side's TLS files: none given is no TLS; a certificate needs its key and the other way
/// round; a CA or a client-certificate check needs the certificate; client-certificate checks
/// need a CA. Every file given must be readable now, not at the first connection.
pub(super) fn tls_files(
    flags: TlsFlags,
    [cert, key, ca]: [Option<PathBuf>; 3],
    client_cert_auth: bool,
) -> Result<Option<TlsFiles>, ConfigError> {
    let given = |path: Option<PathBuf>| path.filter(|path| !path.as_os_str().is_empty());
    let (cert, key, ca) = (given(cert), given(key), given(ca));
    let incomplete = |given, missing| Err(ConfigError::TlsIncomplete { given, missing });
    let (cert, key) = match (cert, key) {
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => return incomplete(flags.cert, flags.key),
        (None, Some(_)) => return incomplete(flags.key, flags.cert),
        (None, None) if ca.is_some() => return incomplete(flags.trusted_ca, flags.cert),
        (None, None) if client_cert_auth => return incomplete(flags.client_cert_auth, flags.cert),
        (None, None) => return Ok(None),
    };
    if client_cert_auth && ca.is_none() {
        return incomplete(flags.client_cert_auth, flags.trusted_ca);
    }
    for (flag, path) in [
        (flags.cert, Some(&cert)),
        (flags.key, Some(&key)),
        (flags.trusted_ca, ca.as_ref()),
    ] {
        if let Some(path) = path {
            check_readable_file(path).map_err(|source| ConfigError::TlsFile {
                flag,
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(Some(TlsFiles {
        cert_file: cert,
        key_file: key,
        trusted_ca_file: ca,
        client_cert_auth,
        allowed_names: (None, None),
    }))
}

/// etcd's `--peer-cert-allowed-cn` and `--peer-cert-allowed-hostname` (empty: not given):
/// they check the certificate a peer presents, so they need peer TLS with client
/// certificates.
pub(super) fn with_allowed_names(
    tls: Option<TlsFiles>,
    cn: Option<String>,
    hostname: Option<String>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let cn = cn.filter(|cn| !cn.is_empty());
    let hostname = hostname.filter(|host| !host.is_empty());
    let given = match (&cn, &hostname) {
        (None, None) => return Ok(tls),
        (Some(_), _) => "peer-cert-allowed-cn",
        (None, Some(_)) => "peer-cert-allowed-hostname",
    };
    match tls {
        Some(mut tls) if tls.client_cert_auth => {
            tls.allowed_names = (cn, hostname);
            Ok(Some(tls))
        }
        _ => Err(ConfigError::TlsIncomplete {
            given,
            missing: "peer-client-cert-auth (the names are checked on peers' certificates)",
        }),
    }
}

fn check_readable_file(path: &Path) -> io::Result<()> {
    let file = fs::File::open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(())
}

pub(super) fn check_https_has_tls(
    flags: TlsFlags,
    urls: &[ListenUrl],
    tls: Option<&TlsFiles>,
) -> Result<(), ConfigError> {
    match urls.iter().find(|url| url.scheme == Scheme::Https) {
        Some(url) if tls.is_none() => Err(ConfigError::TlsRequired {
            cert_flag: flags.cert,
            key_flag: flags.key,
            url: url.url.clone(),
        }),
        _ => Ok(()),
    }
}
