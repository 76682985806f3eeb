//! The TLS flags of each side (client and peer): which files are given, and whether they
//! make a usable set.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{ConfigError, ListenUrl, Scheme, TlsFiles, parse_go_bool, path_parser};

/// etcd's TLS flags as clap reads them (flattened into [`ServerArgs`](super::ServerArgs)).
#[derive(Debug, Clone, PartialEq, Eq, Default, clap::Args)]
pub struct TlsArgs {
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE", value_name = "FILE", value_parser = path_parser())]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE", value_name = "FILE", value_parser = path_parser())]
    pub key_file: Option<PathBuf>,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE", value_name = "FILE", value_parser = path_parser())]
    pub trusted_ca_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(
        long,
        env = "ETCD_CLIENT_CERT_AUTH",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub client_cert_auth: bool,
    /// Path to the client certificate revocation list file (PEM or DER): a client whose
    /// certificate it lists is refused. Needs --trusted-ca-file.
    #[arg(long, env = "ETCD_CLIENT_CRL_FILE", value_name = "FILE", value_parser = path_parser())]
    pub client_crl_file: Option<PathBuf>,
    /// A host name a client's certificate must be valid for. Needs --trusted-ca-file.
    #[arg(long, env = "ETCD_CLIENT_CERT_ALLOWED_HOSTNAME", value_name = "HOST")]
    pub client_cert_allowed_hostname: Option<String>,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE", value_name = "FILE", value_parser = path_parser())]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE", value_name = "FILE", value_parser = path_parser())]
    pub peer_key_file: Option<PathBuf>,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE", value_name = "FILE", value_parser = path_parser())]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(
        long,
        env = "ETCD_PEER_CLIENT_CERT_AUTH",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub peer_client_cert_auth: bool,
    /// The common name a peer's certificate must have, checked both ways (with
    /// --peer-cert-allowed-hostname too, either is enough). Needs --peer-trusted-ca-file.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_CN", value_name = "CN")]
    pub peer_cert_allowed_cn: Option<String>,
    /// A host name a peer's certificate must be valid for, checked both ways. Needs
    /// --peer-trusted-ca-file.
    #[arg(long, env = "ETCD_PEER_CERT_ALLOWED_HOSTNAME", value_name = "HOST")]
    pub peer_cert_allowed_hostname: Option<String>,
    /// Skip verification of SAN field in client certificate for peer connections (a
    /// dialing member must still connect from its configured address).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_PEER_SKIP_CLIENT_SAN_VERIFICATION",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub experimental_peer_skip_client_san_verification: bool,
    /// Path to the peer certificate revocation list file (PEM or DER): a member whose
    /// certificate it lists is refused. Needs --peer-trusted-ca-file.
    #[arg(long, env = "ETCD_PEER_CRL_FILE", value_name = "FILE", value_parser = path_parser())]
    pub peer_crl_file: Option<PathBuf>,
    /// Client TLS using generated certificates (self-signed, in DATA-DIR/fixtures/client)
    /// when --cert-file and --key-file are not given.
    #[arg(
        long,
        env = "ETCD_AUTO_TLS",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub auto_tls: bool,
    /// Peer TLS using self-generated certificates (in DATA-DIR/fixtures/peer) if
    /// --peer-key-file and --peer-cert-file are not provided: encrypted, not authenticated.
    #[arg(
        long,
        env = "ETCD_PEER_AUTO_TLS",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = parse_go_bool
    )]
    pub peer_auto_tls: bool,
    /// Comma-separated list of TLS 1.2 cipher suites offered and accepted on the client and
    /// peer ports, by Go's names (empty: rustls's defaults; TLS 1.3's are always offered).
    #[arg(long, env = "ETCD_CIPHER_SUITES", value_name = "SUITES")]
    pub cipher_suites: Option<String>,
}

/// What the TLS flags make: each side's files, and the cipher suites.
pub(super) struct TlsSettings {
    pub(super) client: Option<TlsFiles>,
    pub(super) peer: Option<TlsFiles>,
    pub(super) cipher_suites: Vec<String>,
    pub(super) peer_skip_client_san_verification: bool,
    auto: (bool, bool),
}

impl TlsSettings {
    /// `--auto-tls` and `--peer-auto-tls`, in `data_dir`: a side without files gets the
    /// self-signed certificate the member makes at start in `fixtures/client` or
    /// `fixtures/peer` (etcd's places); a side with files keeps them, with etcd's warning.
    pub(super) fn with_auto_tls(mut self, data_dir: &Path) -> Self {
        for (tls, auto, side) in [
            (&mut self.client, self.auto.0, "client"),
            (&mut self.peer, self.auto.1, "peer"),
        ] {
            if !auto {
                continue;
            }
            if tls.is_some() {
                tracing::warn!("ignoring {side} auto TLS since certs given");
                continue;
            }
            let dir = data_dir.join("fixtures").join(side);
            *tls = Some(TlsFiles {
                cert_file: dir.join("cert.pem"),
                key_file: dir.join("key.pem"),
                trusted_ca_file: None,
                client_cert_auth: false,
                allowed_names: (None, None),
                crl_file: None,
                self_signed: true,
            });
        }
        self
    }
}

impl TlsArgs {
    /// Checks the flags together: each side's files (see [`tls_files`]), the names and
    /// revocation lists that need client certificates, the cipher suites' names.
    pub(super) fn check(self) -> Result<TlsSettings, ConfigError> {
        let client = tls_files(
            TlsFlags::CLIENT,
            [self.cert_file, self.key_file, self.trusted_ca_file],
            self.client_cert_auth,
        )?;
        let client = with_allowed_names(
            TlsFlags::CLIENT,
            client,
            None,
            self.client_cert_allowed_hostname,
        )?;
        let client = with_crl(TlsFlags::CLIENT, client, self.client_crl_file)?;
        let peer = tls_files(
            TlsFlags::PEER,
            [
                self.peer_cert_file,
                self.peer_key_file,
                self.peer_trusted_ca_file,
            ],
            self.peer_client_cert_auth,
        )?;
        let peer = with_allowed_names(
            TlsFlags::PEER,
            peer,
            self.peer_cert_allowed_cn,
            self.peer_cert_allowed_hostname,
        )?;
        let peer = with_crl(TlsFlags::PEER, peer, self.peer_crl_file)?;
        let given = self.cipher_suites.unwrap_or_default();
        let cipher_suites: Vec<String> = given
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        strata_transport::tls::crypto_provider(&cipher_suites).map_err(|e| {
            ConfigError::InvalidCipherSuites {
                value: given.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok(TlsSettings {
            client,
            peer,
            cipher_suites,
            peer_skip_client_san_verification: self.experimental_peer_skip_client_san_verification,
            auto: (self.auto_tls, self.peer_auto_tls),
        })
    }
}

/// The flag names of one side's TLS material.
pub(super) struct TlsFlags {
    pub(super) cert: &'static str,
    pub(super) key: &'static str,
    pub(super) trusted_ca: &'static str,
    pub(super) client_cert_auth: &'static str,
    pub(super) allowed_cn: &'static str,
    pub(super) allowed_hostname: &'static str,
    pub(super) crl: &'static str,
    /// Why the allowed names need client certificates checked, as an error says it.
    names_need: &'static str,
}

impl TlsFlags {
    pub(super) const CLIENT: TlsFlags = TlsFlags {
        cert: "cert-file",
        key: "key-file",
        trusted_ca: "trusted-ca-file",
        client_cert_auth: "client-cert-auth",
        allowed_cn: "",
        allowed_hostname: "client-cert-allowed-hostname",
        crl: "client-crl-file",
        names_need: "trusted-ca-file (the name is checked on clients' certificates)",
    };
    pub(super) const PEER: TlsFlags = TlsFlags {
        cert: "peer-cert-file",
        key: "peer-key-file",
        trusted_ca: "peer-trusted-ca-file",
        client_cert_auth: "peer-client-cert-auth",
        allowed_cn: "peer-cert-allowed-cn",
        allowed_hostname: "peer-cert-allowed-hostname",
        crl: "peer-crl-file",
        names_need: "peer-trusted-ca-file (the names are checked on peers' certificates)",
    };
}

/// One side's TLS files: none given is no TLS; a certificate needs its key and the other way
/// round; a CA or a client-certificate check needs the certificate; client-certificate checks
/// need a CA. Every file given must be readable now, not at the first connection.
fn tls_files(
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
        crl_file: None,
        self_signed: false,
    }))
}

/// etcd's `--peer-cert-allowed-cn`, `--peer-cert-allowed-hostname` and
/// `--client-cert-allowed-hostname` (empty: not given): they check the certificate the other
/// side presents, so they need a trusted CA (which makes client certificates required: etcd's
/// rule).
fn with_allowed_names(
    flags: TlsFlags,
    tls: Option<TlsFiles>,
    cn: Option<String>,
    hostname: Option<String>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let cn = cn.filter(|cn| !cn.is_empty());
    let hostname = hostname.filter(|host| !host.is_empty());
    let given = match (&cn, &hostname) {
        (None, None) => return Ok(tls),
        (Some(_), _) => flags.allowed_cn,
        (None, Some(_)) => flags.allowed_hostname,
    };
    match tls {
        Some(mut tls) if tls.trusted_ca_file.is_some() => {
            tls.allowed_names = (cn, hostname);
            Ok(Some(tls))
        }
        _ => Err(ConfigError::TlsIncomplete {
            given,
            missing: flags.names_need,
        }),
    }
}

/// `--client-crl-file` and `--peer-crl-file`: the list is checked against the certificates
/// clients present, which a trusted CA asks for; the file must be readable now.
fn with_crl(
    flags: TlsFlags,
    tls: Option<TlsFiles>,
    crl: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let Some(crl) = crl.filter(|path| !path.as_os_str().is_empty()) else {
        return Ok(tls);
    };
    let Some(mut tls) = tls.filter(|tls| tls.trusted_ca_file.is_some()) else {
        return Err(ConfigError::TlsIncomplete {
            given: flags.crl,
            missing: flags.trusted_ca,
        });
    };
    check_readable_file(&crl).map_err(|source| ConfigError::TlsFile {
        flag: flags.crl,
        path: crl.clone(),
        source,
    })?;
    tls.crl_file = Some(crl);
    Ok(Some(tls))
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
