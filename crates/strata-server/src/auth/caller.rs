//! Who sent a request, and what a request forwarded to the leader carries to show it.

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use crate::auth::Caller;
use crate::auth::token;
use crate::rpctypes::ApiError;
use crate::server::{Inner, MEMBER_SECRET_HEADER, REQUEST_TIMEOUT};

/// The metadata key of a user a forwarding member knows by its client certificate.
pub const CERTIFIED_USER_HEADER: &str = "strata-certified-user";

/// The metadata key of the members' secret that vouches for [`CERTIFIED_USER_HEADER`] (base64):
/// apart from [`MEMBER_SECRET_HEADER`], so that a member that does not know the pair sees a
/// client without credentials, never one of its own requests.
pub const VOUCHING_SECRET_HEADER: &str = "strata-vouching-secret";

/// What a forwarded request carries to show who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// The client's token.
    Token(String),
    /// The members' shared secret: a member's own request, while auth is on.
    MemberSecret(Vec<u8>),
    /// A user the forwarding member knows by its client certificate, and the members'
    /// secret, vouching for it.
    Vouched(String, Vec<u8>),
}

/// The credentials a request came with, each as given (not yet checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The members' secret.
    pub member_secret: Option<Vec<u8>>,
    /// A user a forwarding member vouches for, with the secret it vouches with.
    pub vouched: Option<(String, Vec<u8>)>,
    /// A token.
    pub token: Option<String>,
    /// The common name of the client certificate this member verified.
    pub certified: Option<String>,
}

impl Inner {
    /// Who sent a request: the members' secret (a member forwarding its own request), a
    /// member vouching for a user it knows by certificate, a token (`token`, or
    /// `authorization` with an optional `Bearer `, as etcd's gateway), or, with
    /// `--client-cert-auth` and no token, the verified client certificate's subject common
    /// name (etcd's rule; the JSON gateway's calls carry no certificate, as etcd's do not
    /// count its own); else nobody. While auth is off nothing is refused (etcd's), but the
    /// user is still named where the credentials name one.
    ///
    /// # Errors
    ///
    /// [`ApiError::InvalidAuthToken`] for a token no member assigned or that expired (a token
    /// assigned at an index this member has not applied yet is waited for, bounded);
    /// [`ApiError::PermissionDenied`] for a wrong member secret.
    pub async fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Caller, ApiError> {
        let metadata = request.metadata();
        let secret = |header| {
            metadata
                .get(header)
                .map(|secret: &tonic::metadata::MetadataValue<_>| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD
                        .decode(secret.as_bytes())
                        .unwrap_or_default()
                })
        };
        let text = |header| {
            metadata
                .get(header)
                .and_then(|v: &tonic::metadata::MetadataValue<_>| v.to_str().ok())
        };
        let token = text("token")
            .or_else(|| text("authorization"))
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_owned());
        let vouched = text(CERTIFIED_USER_HEADER)
            .map(str::to_owned)
            .zip(secret(VOUCHING_SECRET_HEADER));
        // Read whenever `--client-cert-auth` is on and there is no token (etcd's rule), also
        // while this member's auth is off: it may not have applied an `auth enable` the
        // leader has, and must still know the user, for the checks it makes after catching up
        // and for the leader it forwards to.
        let certified = if token.is_none() {
            self.certified_user(request)
        } else {
            None
        };
        self.caller_from(Credentials {
            member_secret: secret(MEMBER_SECRET_HEADER),
            vouched,
            token,
            certified,
        })
        .await
    }

    /// The subject common name of the certificate a client presented on a TLS connection,
    /// which the handshake verified against the trusted CA; only with `--client-cert-auth`.
    fn certified_user<T>(&self, request: &tonic::Request<T>) -> Option<String> {
        if !self
            .config
            .client_tls
            .as_ref()
            .is_some_and(|tls| tls.client_cert_auth)
        {
            return None;
        }
        let info = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()?;
        let leaf = info.peer_certs()?.first()?.clone();
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        let name = cert.subject().iter_common_name().next()?.as_str().ok()?;
        (!name.is_empty()).then(|| name.to_owned())
    }

    /// Who sent a request, from the credentials it came with, as [`Inner::caller`] reads
    /// them (a forwarded request's come from its `Forwarded` message).
    ///
    /// # Errors
    ///
    /// As [`Inner::caller`].
    pub async fn caller_from(&self, credentials: Credentials) -> Result<Caller, ApiError> {
        let auth = self.auth();
        let vouching = |given: &[u8]| {
            !auth.member_secret.is_empty() && crate::kvdb::same(&auth.member_secret, given)
        };
        if let Some(given) = credentials.member_secret {
            return if vouching(&given) {
                Ok(Caller::Member)
            } else {
                Err(ApiError::PermissionDenied)
            };
        }
        if !auth.enabled {
            // Nothing is checked while auth is off, but this member may lag behind an `auth
            // enable`: the user a certificate or a token names is kept (a token assigned or
            // signed after what this member has applied is waited for, bounded; one that
            // names nobody is ignored, as etcd ignores tokens while auth is off).
            if let Some(token) = credentials.token {
                return Ok(self.token_user(token).await.unwrap_or(Caller::Anonymous));
            }
            return Ok(credentials
                .certified
                .map_or(Caller::Anonymous, |name| Caller::User { name, token: None }));
        }
        if let Some((name, given)) = credentials.vouched {
            return if vouching(&given) {
                Ok(Caller::User { name, token: None })
            } else {
                Err(ApiError::PermissionDenied)
            };
        }
        match (credentials.token, credentials.certified) {
            (Some(token), _) => self.token_user(token).await,
            (None, Some(name)) => Ok(Caller::User { name, token: None }),
            (None, None) => Ok(Caller::Anonymous),
        }
    }

    /// The caller a token names.
    ///
    /// # Errors
    ///
    /// [`ApiError::InvalidAuthToken`].
    pub async fn token_user(&self, token: String) -> Result<Caller, ApiError> {
        if let Some(jwt) = self.config.auth_token.jwt() {
            return self.jwt_user(jwt, token).await;
        }
        if let Some(name) = self.tokens.user(&token) {
            return Ok(Caller::User {
                name,
                token: Some(token),
            });
        }
        // Assigned by an entry this member has not applied yet: wait for it (etcd's).
        let index = token::index_of(&token).ok_or(ApiError::InvalidAuthToken)?;
        let mut applied = self.node.applied();
        let reached = tokio::time::timeout(REQUEST_TIMEOUT, async {
            while *applied.borrow_and_update() < index {
                if applied.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await
        .unwrap_or(false);
        match reached.then(|| self.tokens.user(&token)).flatten() {
            Some(name) => Ok(Caller::User {
                name,
                token: Some(token),
            }),
            None => Err(ApiError::InvalidAuthToken),
        }
    }

    /// The caller a JWT token names: its signature, sign method and expiry must hold, and it
    /// must have been signed at the current auth revision (etcd's rule: any auth change since
    /// may have taken away what it allowed; clients authenticate again). A token signed at an
    /// auth revision this member has not applied yet is waited for, bounded.
    async fn jwt_user(
        &self,
        jwt: &crate::auth::jwt::Jwt,
        token: String,
    ) -> Result<Caller, ApiError> {
        let verified = jwt.verify(&token).ok_or(ApiError::InvalidAuthToken)?;
        if self.auth().revision < verified.revision {
            let mut applied = self.node.applied();
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
                while self.auth().revision < verified.revision {
                    if applied.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
        }
        if verified.revision < self.auth().revision {
            return Err(ApiError::AuthOldRevision);
        }
        Ok(Caller::User {
            name: verified.user,
            token: Some(token),
        })
    }

    /// What `caller`'s requests are forwarded with: its token; for a user known by its
    /// certificate, its name with the members' secret; for this member's own requests while
    /// auth is on, the members' secret.
    pub fn credential(&self, caller: &Caller) -> Option<Credential> {
        match caller {
            Caller::User {
                token: Some(token), ..
            } => Some(Credential::Token(token.clone())),
            Caller::User { name, token: None } => {
                let auth = self.auth();
                (!auth.member_secret.is_empty())
                    .then(|| Credential::Vouched(name.clone(), auth.member_secret.clone()))
            }
            Caller::Member => {
                let auth = self.auth();
                (!auth.member_secret.is_empty())
                    .then(|| Credential::MemberSecret(auth.member_secret.clone()))
            }
            Caller::Anonymous => None,
        }
    }

    /// `call` with the credentials `caller` forwards with.
    pub fn credentials<T>(&self, caller: &Caller, call: &mut tonic::Request<T>) {
        use base64::Engine;
        let base64 = |secret: &[u8]| base64::engine::general_purpose::STANDARD.encode(secret);
        let headers = match self.credential(caller) {
            Some(Credential::Token(token)) => vec![("token", token)],
            Some(Credential::MemberSecret(secret)) => {
                vec![(MEMBER_SECRET_HEADER, base64(&secret))]
            }
            Some(Credential::Vouched(name, secret)) => vec![
                (CERTIFIED_USER_HEADER, name),
                (VOUCHING_SECRET_HEADER, base64(&secret)),
            ],
            None => Vec::new(),
        };
        for (key, value) in headers {
            if let Ok(value) = value.parse() {
                call.metadata_mut().insert(key, value);
            }
        }
    }
}
