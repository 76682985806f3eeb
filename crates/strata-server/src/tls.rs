//! TLS on the client port (`--cert-file`, `--key-file`, `--trusted-ca-file`,
//! `--client-cert-auth`), and the channels this member opens to other members' client ports
//! (to forward to the leader), which present the same certificate.

use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

use crate::config::ServerConfig;
use crate::server::ServerError;

fn read(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The client port's TLS, if configured.
///
/// # Errors
///
/// [`ServerError::Tls`] if a file cannot be read.
pub fn server_tls(config: &ServerConfig) -> Result<Option<ServerTlsConfig>, ServerError> {
    let Some(tls) = &config.client_tls else {
        return Ok(None);
    };
    let cert = read(&tls.cert_file).map_err(ServerError::Tls)?;
    let key = read(&tls.key_file).map_err(ServerError::Tls)?;
    let mut server = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &tls.trusted_ca_file {
        let ca = read(ca).map_err(ServerError::Tls)?;
        server = server
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(!tls.client_cert_auth);
    }
    Ok(Some(server))
}

/// A lazily connecting channel to another member's client URL.
///
/// # Errors
///
/// A URL that does not parse, or TLS files that cannot be read.
pub fn client_channel(config: &ServerConfig, url: &str) -> Result<Channel, String> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(server) = &config.client_tls {
            if let Some(ca) = &server.trusted_ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            tls = tls.identity(Identity::from_pem(
                read(&server.cert_file)?,
                read(&server.key_file)?,
            ));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
    }
    Ok(endpoint.connect_lazy())
}
