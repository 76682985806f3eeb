//! etcd's JWT tokens (`--auth-token jwt,sign-method=RS256,priv-key=<file>,ttl=5m`): signed by
//! the member a client authenticates with, checked by any member with the same keys, never
//! stored. A token carries its user, the auth revision it was signed at and its expiry (the
//! claims `username`, `revision`, `exp`, as etcd 3.4 writes them): a token signed before any
//! later auth change (a user deleted, a password changed, a permission revoked) is refused
//! with "revision of auth store is old", and clients authenticate again, as with etcd. Unlike
//! a simple token, its life is fixed at signing (`ttl`, default 5 minutes), not renewed on
//! use, and it survives a member's restart.
//!
//! The options are etcd's: `sign-method` (RS256, RS384, RS512, PS256, PS384, PS512, ES256,
//! ES384, HS256, HS384, HS512; ES512 is refused, ring has no P-521), `priv-key` (a PEM file:
//! PKCS#1 or PKCS#8 for RSA, SEC1 or PKCS#8 for ECDSA; the raw secret for HMAC), `pub-key` (a
//! PEM public key: with it alone a member only checks tokens, and `Authenticate` answers
//! "token signing attempted with verify-only key"), `ttl` (a Go duration: `5m`, `1h30m`).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::rpctypes::ApiError;

/// A token's life when `ttl` is not given (etcd's `DefaultTTL`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// Tokens whose signature was checked, kept so that a client's next requests cost a map
/// lookup rather than a signature check (about 40 µs for RS256, 100 µs for ES256). About 150
/// bytes each; when full, the expired go, and if none had, all.
pub const VERIFIED_MAX: usize = 10_000;

/// Why `--auth-token` cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenOptionsError {
    /// A token type other than `simple` and `jwt`.
    #[error("unknown token type {0:?} (\"simple\" or \"jwt,<options>\")")]
    UnknownType(String),
    /// An option that is not `name=value`.
    #[error("option {0:?} is not name=value")]
    Malformed(String),
    /// An option given twice.
    #[error("option {0:?} given twice")]
    Duplicate(String),
    /// No `sign-method`, or one this server does not sign with.
    #[error(
        "sign-method {0:?}: one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, \
         HS256, HS384, HS512"
    )]
    SignMethod(String),
    /// A `ttl` that is not a positive Go duration.
    #[error("ttl {value:?}: {reason}")]
    Ttl {
        /// The option's value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither `priv-key` nor `pub-key` (HMAC: no `priv-key`).
    #[error("missing key data: sign-method {0} needs {1}")]
    MissingKey(&'static str, &'static str),
    /// A key file that cannot be read or is not a key for the sign method.
    #[error("{option} {path:?}: {reason}")]
    Key {
        /// `priv-key` or `pub-key`.
        option: &'static str,
        /// The file.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// `pub-key` is not the public half of `priv-key`.
    #[error("pub-key does not match priv-key (a token signed with one fails the other)")]
    KeyMismatch,
}

/// The claims of a token, in the order etcd 3.4 writes them.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    exp: u64,
    revision: u64,
    username: String,
}

/// A checked token: its user and the auth revision it was signed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The user it names.
    pub user: String,
    /// The auth revision it was signed at.
    pub revision: u64,
    /// Its expiry, in seconds since the Unix epoch.
    exp: u64,
}

/// The member's JWT keys and options.
pub struct Jwt {
    /// The `--auth-token` value, for equality.
    options: String,
    algorithm: Algorithm,
    /// `None`: verify only (`pub-key` alone).
    signing: Option<EncodingKey>,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    verified: Mutex<HashMap<String, Verified>>,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("algorithm", &self.algorithm)
            .field("verify_only", &self.signing.is_none())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Jwt {
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options
    }
}

impl Eq for Jwt {}

/// What `--auth-token` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenKind {
    /// etcd's simple tokens (see [`super::token`]).
    Simple,
    /// JWT tokens.
    Jwt(std::sync::Arc<Jwt>),
}

impl TokenKind {
    /// Parses `--auth-token` as etcd does (`simple`, or `jwt` then `,name=value` options),
    /// reading the key files it names.
    ///
    /// # Errors
    ///
    /// [`TokenOptionsError`] for an unknown type, a malformed or repeated option, a sign method
    /// that is not supported, a bad `ttl`, a missing, unreadable or mismatched key.
    pub fn parse(value: &str) -> Result<TokenKind, TokenOptionsError> {
        let mut parts = value.split(',');
        let kind = parts.next().unwrap_or_default();
        let mut options = HashMap::new();
        for part in parts {
            let Some((name, v)) = part.split_once('=').filter(|(_, v)| !v.contains('=')) else {
                return Err(TokenOptionsError::Malformed(part.to_owned()));
            };
            if options.insert(name, v).is_some() {
                return Err(TokenOptionsError::Duplicate(name.to_owned()));
            }
        }
        match kind {
            // etcd ignores options given to simple tokens.
            "simple" => Ok(TokenKind::Simple),
            "jwt" => Jwt::new(value, &options).map(|jwt| TokenKind::Jwt(std::sync::Arc::new(jwt))),
            other => Err(TokenOptionsError::UnknownType(other.to_owned())),
        }
    }

    /// The JWT keys, for JWT tokens.
    pub fn jwt(&self) -> Option<&std::sync::Arc<Jwt>> {
        match self {
            TokenKind::Simple => None,
            TokenKind::Jwt(jwt) => Some(jwt),
        }
    }
}

impl Jwt {
    fn new(value: &str, options: &HashMap<&str, &str>) -> Result<Jwt, TokenOptionsError> {
        let unknown: Vec<&&str> = options
            .keys()
            .filter(|k| !["sign-method", "priv-key", "pub-key", "ttl"].contains(k))
            .collect();
        if !unknown.is_empty() {
            tracing::warn!(?unknown, "unknown JWT options, ignored (as etcd does)");
        }
        let method = options.get("sign-method").copied().unwrap_or_default();
        let algorithm = match method {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            other => return Err(TokenOptionsError::SignMethod(other.to_owned())),
        };
        let ttl = match options.get("ttl") {
            None => DEFAULT_TTL,
            Some(v) => match crate::config::parse_go_duration_nanos(v) {
                Ok(0) => DEFAULT_TTL,
                Ok(nanos) if nanos > 0 => Duration::from_nanos(nanos as u64),
                Ok(_) => {
                    return Err(TokenOptionsError::Ttl {
                        value: (*v).to_owned(),
                        reason: "a negative duration".to_owned(),
                    });
                }
                Err(reason) => {
                    return Err(TokenOptionsError::Ttl {
                        value: (*v).to_owned(),
                        reason,
                    });
                }
            },
        };
        let read = |option: &'static str| -> Result<Option<Vec<u8>>, TokenOptionsError> {
            let Some(path) = options.get(option).filter(|p| !p.is_empty()) else {
                return Ok(None);
            };
            std::fs::read(Path::new(path))
                .map(Some)
                .map_err(|e| TokenOptionsError::Key {
                    option,
                    path: (*path).to_owned(),
                    reason: e.to_string(),
                })
        };
        let key_error = |option: &'static str, reason: String| TokenOptionsError::Key {
            option,
            path: options.get(option).copied().unwrap_or_default().to_owned(),
            reason,
        };
        let private = read("priv-key")?;
        let public = read("pub-key")?;
        let keys = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => match private {
                Some(secret) if !secret.is_empty() => Keys {
                    signing: Some(EncodingKey::from_secret(&secret)),
                    derived: Some(DecodingKey::from_secret(&secret)),
                    given: None,
                },
                _ => {
                    return Err(TokenOptionsError::MissingKey(
                        method_name(algorithm),
                        "priv-key",
                    ));
                }
            },
            Algorithm::ES256 | Algorithm::ES384 => ec_keys(algorithm, private, public)
                .map_err(|(option, reason)| key_error(option, reason))?,
            _ => rsa_keys(private, public).map_err(|(option, reason)| key_error(option, reason))?,
        };
        let decoding = match (keys.given, keys.derived) {
            (Some(given), _) => given,
            (None, Some(derived)) => derived,
            (None, None) => {
                return Err(TokenOptionsError::MissingKey(
                    method_name(algorithm),
                    "priv-key or pub-key",
                ));
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        let jwt = Jwt {
            options: value.to_owned(),
            algorithm,
            signing: keys.signing,
            decoding,
            validation,
            ttl,
            verified: Mutex::new(HashMap::new()),
        };
        // A token signed with the private key must pass the public one: a key pair that does
        // not match would sign tokens no member accepts.
        if jwt.signing.is_some() {
            let probe = jwt
                .sign("probe", 1)
                .map_err(|e| key_error("priv-key", format!("cannot sign with it: {e}")))?;
            if jwt.check(&probe).is_none() {
                return Err(TokenOptionsError::KeyMismatch);
            }
        }
        Ok(jwt)
    }

    /// A token for `user`, valid `ttl` from now at auth revision `revision`.
    ///
    /// # Errors
    ///
    /// [`ApiError::VerifyOnly`] with `pub-key` alone; [`ApiError::Internal`] if signing fails.
    pub fn sign(&self, user: &str, revision: u64) -> Result<String, ApiError> {
        let key = self.signing.as_ref().ok_or(ApiError::VerifyOnly)?;
        let claims = Claims {
            exp: unix_now_s().saturating_add(self.ttl.as_secs().max(1)),
            revision,
            username: user.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|e| ApiError::Internal(format!("signing a JWT: {e}")))
    }

    /// The user and revision of `token`, if its signature, sign method and expiry hold.
    pub fn verify(&self, token: &str) -> Option<Verified> {
        let now = unix_now_s();
        {
            let verified = self.verified.lock();
            if let Some(v) = verified.get(token) {
                return (v.exp > now).then(|| v.clone());
            }
        }
        let checked = self.check(token)?;
        let mut verified = self.verified.lock();
        if verified.len() >= VERIFIED_MAX {
            verified.retain(|_, v| v.exp > now);
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
        }
        verified.insert(token.to_owned(), checked.clone());
        Some(checked)
    }

    /// `token`'s claims once its signature is checked (no cache).
    fn check(&self, token: &str) -> Option<Verified> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        let claims = data.claims;
        // jsonwebtoken allows `exp == now`; a token is dead from its `exp` second on.
        (claims.exp > unix_now_s()).then_some(Verified {
            user: claims.username,
            revision: claims.revision,
            exp: claims.exp,
        })
    }

    /// How long a token lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// The keys a sign method's files give.
struct Keys {
    signing: Option<EncodingKey>,
    /// The public key derived from the private one.
    derived: Option<DecodingKey>,
    /// `pub-key`'s.
    given: Option<DecodingKey>,
}

type KeyResult = Result<Keys, (&'static str, String)>;

fn rsa_keys(private: Option<Vec<u8>>, public: Option<Vec<u8>>) -> KeyResult {
    let mut keys = Keys {
        signing: None,
        derived: None,
        given: None,
    };
    if let Some(pem_bytes) = private {
        let bad = |reason: String| ("priv-key", format!("not an RSA private key: {reason}"));
        let block = pem::parse(&pem_bytes).map_err(|e| bad(e.to_string()))?;
        let pair = match block.tag() {
            "RSA PRIVATE KEY" => ring::signature::RsaKeyPair::from_der(block.contents()),
            "PRIVATE KEY" => ring::signature::RsaKeyPair::from_pkcs8(block.contents()),
            other => return Err(bad(format!("a PEM block {other:?}"))),
        }
        .map_err(|e| bad(e.to_string()))?;
        keys.derived = Some(DecodingKey::from_rsa_der(
            ring::signature::KeyPair::public_key(&pair).as_ref(),
        ));
        keys.signing = Some(EncodingKey::from_rsa_pem(&pem_bytes).map_err(|e| bad(e.to_string()))?);
    }
    if let Some(pem_bytes) = public {
        keys.given = Some(
            DecodingKey::from_rsa_pem(&pem_bytes)
                .map_err(|e| ("pub-key", format!("not an RSA public key: {e}")))?,
        );
    }
    Ok(keys)
}

fn ec_keys(algorithm: Algorithm, private: Option<Vec<u8>>, public: Option<Vec<u8>>) -> KeyResult {
    let mut keys = Keys {
        signing: None,
        derived: None,
        given: None,
    };
    let (ring_alg, curve_oid): (&ring::signature::EcdsaSigningAlgorithm, &[u8]) = match algorithm {
        Algorithm::ES384 => (&ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING, &P384_OID),
        _ => (&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &P256_OID),
    };
    let name = method_name(algorithm);
    if let Some(pem_bytes) = private {
        let bad = |reason: String| ("priv-key", format!("not an {name} private key: {reason}"));
        let block = pem::parse(&pem_bytes).map_err(|e| bad(e.to_string()))?;
        let pkcs8 = match block.tag() {
            "PRIVATE KEY" => block.contents().to_vec(),
            // OpenSSL's `ecparam -genkey` writes SEC1; ring reads PKCS#8, which wraps it.
            "EC PRIVATE KEY" => sec1_to_pkcs8(block.contents(), curve_oid),
            other => return Err(bad(format!("a PEM block {other:?}"))),
        };
        let rng = ring::rand::SystemRandom::new();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(ring_alg, &pkcs8, &rng)
            .map_err(|e| bad(e.to_string()))?;
        keys.derived = Some(DecodingKey::from_ec_der(
            ring::signature::KeyPair::public_key(&pair).as_ref(),
        ));
        keys.signing = Some(EncodingKey::from_ec_der(&pkcs8));
    }
    if let Some(pem_bytes) = public {
        keys.given = Some(
            DecodingKey::from_ec_pem(&pem_bytes)
                .map_err(|e| ("pub-key", format!("not an EC public key: {e}")))?,
        );
    }
    Ok(keys)
}

/// `id-ecPublicKey` (1.2.840.10045.2.1), DER.
const EC_PUBLIC_KEY_OID: [u8; 9] = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// `prime256v1` (1.2.840.10045.3.1.7), DER.
const P256_OID: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `secp384r1` (1.3.132.0.34), DER.
const P384_OID: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// A SEC1 `ECPrivateKey` wrapped as PKCS#8 `PrivateKeyInfo` (RFC 5208, 5915): version 0, the
/// algorithm `id-ecPublicKey` with the curve, and the SEC1 bytes as the private key. ring
/// checks the result (the curve inside must match, the public key must be there).
fn sec1_to_pkcs8(sec1: &[u8], curve_oid: &[u8]) -> Vec<u8> {
    let mut algorithm = EC_PUBLIC_KEY_OID.to_vec();
    algorithm.extend_from_slice(curve_oid);
    let mut body = vec![0x02, 0x01, 0x00];
    der_push(&mut body, 0x30, &algorithm);
    der_push(&mut body, 0x04, sec1);
    let mut out = Vec::with_capacity(body.len() + 4);
    der_push(&mut out, 0x30, &body);
    out
}

/// Appends a DER tag, length and contents.
fn der_push(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
}

fn method_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_options_are_parsed_as_etcd_parses_them() {
        assert_eq!(TokenKind::parse("simple").ok(), Some(TokenKind::Simple));
        assert!(matches!(
            TokenKind::parse("opaque"),
            Err(TokenOptionsError::UnknownType(t)) if t == "opaque"
        ));
        assert!(matches!(
            TokenKind::parse("jwt,sign-method"),
            Err(TokenOptionsError::Malformed(_))
        ));
        assert!(matches!(
            TokenKind::parse("jwt,ttl=1m,ttl=2m"),
            Err(TokenOptionsError::Duplicate(o)) if o == "ttl"
        ));
        assert!(matches!(
            TokenKind::parse("jwt,priv-key=x"),
            Err(TokenOptionsError::SignMethod(m)) if m.is_empty()
        ));
        assert!(matches!(
            TokenKind::parse("jwt,sign-method=ES512,priv-key=x"),
            Err(TokenOptionsError::SignMethod(_))
        ));
        assert!(matches!(
            TokenKind::parse("jwt,sign-method=RS256"),
            Err(TokenOptionsError::MissingKey("RS256", _))
        ));
        assert!(matches!(
            TokenKind::parse("jwt,sign-method=HS256,ttl=-1m"),
            Err(TokenOptionsError::Ttl { .. })
        ));
        assert!(matches!(
            TokenKind::parse("jwt,sign-method=RS256,priv-key=/nonexistent/key.pem"),
            Err(TokenOptionsError::Key {
                option: "priv-key",
                ..
            })
        ));
    }

    /// A test key file (`tests/data/jwt/`).
    fn key(name: &str) -> String {
        format!("{}/tests/data/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn jwt(options: &str) -> std::sync::Arc<Jwt> {
        match TokenKind::parse(options) {
            Ok(TokenKind::Jwt(jwt)) => jwt,
            other => panic!("{options}: {other:?}"),
        }
    }

    #[test]
    fn keys_in_the_formats_openssl_writes_sign_and_check() {
        let cases = [
            ("RS256", "rsa-pkcs1.pem", Some("rsa-pkcs1.pub")),
            ("PS384", "rsa-pkcs1.pem", None),
            ("RS512", "rsa-pkcs8.pem", None),
            ("ES256", "ec256-sec1.pem", Some("ec256-sec1.pub")),
            ("ES256", "ec256-pkcs8.pem", Some("ec256-sec1.pub")),
            ("ES384", "ec384-sec1.pem", None),
        ];
        for (method, private, public) in cases {
            let mut options = format!("jwt,sign-method={method},priv-key={}", key(private));
            if let Some(public) = public {
                options.push_str(&format!(",pub-key={}", key(public)));
            }
            let signer = jwt(&options);
            let token = signer.sign("bob", 3).expect("sign");
            let got = signer.verify(&token).expect("verified");
            assert_eq!((got.user.as_str(), got.revision), ("bob", 3), "{options}");
            // A member with the public key alone checks it, and cannot sign.
            if let Some(public) = public {
                let checker = jwt(&format!("jwt,sign-method={method},pub-key={}", key(public)));
                assert_eq!(checker.verify(&token), Some(got), "{options}");
                assert!(matches!(checker.sign("bob", 3), Err(ApiError::VerifyOnly)));
            }
        }
        // A public key that is not the private key's half, a key of the wrong kind, a curve
        // that is not the method's.
        assert!(matches!(
            TokenKind::parse(&format!(
                "jwt,sign-method=RS256,priv-key={},pub-key={}",
                key("rsa-pkcs8.pem"),
                key("rsa-pkcs1.pub")
            )),
            Err(TokenOptionsError::KeyMismatch)
        ));
        for (method, file) in [
            ("ES256", "rsa-pkcs1.pem"),
            ("RS256", "ec256-sec1.pem"),
            ("ES256", "ec384-sec1.pem"),
            ("ES384", "ec256-pkcs8.pem"),
        ] {
            let options = format!("jwt,sign-method={method},priv-key={}", key(file));
            assert!(
                matches!(
                    TokenKind::parse(&options),
                    Err(TokenOptionsError::Key {
                        option: "priv-key",
                        ..
                    })
                ),
                "{options}"
            );
        }
        assert!(matches!(
            TokenKind::parse(&format!(
                "jwt,sign-method=RS256,pub-key={}",
                key("ec256-sec1.pub")
            )),
            Err(TokenOptionsError::Key {
                option: "pub-key",
                ..
            })
        ));
    }

    fn secret_file(dir: &tempfile::TempDir, bytes: &[u8]) -> String {
        let path = dir.path().join("secret");
        std::fs::write(&path, bytes).expect("write the secret");
        path.display().to_string()
    }

    #[test]
    fn a_signed_token_names_its_user_and_revision_until_it_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = secret_file(&dir, b"a shared secret");
        let TokenKind::Jwt(jwt) =
            TokenKind::parse(&format!("jwt,sign-method=HS256,priv-key={key},ttl=1h"))
                .expect("options")
        else {
            panic!("not jwt");
        };
        assert_eq!(jwt.ttl(), Duration::from_secs(3600));
        let token = jwt.sign("alice", 7).expect("sign");
        let got = jwt.verify(&token).expect("verified");
        assert_eq!((got.user.as_str(), got.revision), ("alice", 7));
        // Cached: the same answer again.
        assert_eq!(jwt.verify(&token), Some(got));
        // A changed payload, a changed signature, another key, another method: refused.
        let parts: Vec<&str> = token.split('.').collect();
        use base64::Engine;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[0])
            .expect("base64url");
        assert_eq!(header, br#"{"typ":"JWT","alg":"HS256"}"#);
        let forged_claims = base64_url(br#"{"exp":99999999999,"revision":7,"username":"root"}"#);
        assert_eq!(
            jwt.verify(&format!("{}.{forged_claims}.{}", parts[0], parts[2])),
            None
        );
        assert_eq!(jwt.verify(&format!("{}.{}.AAAA", parts[0], parts[1])), None);
        let other = secret_file(&dir, b"another secret");
        let TokenKind::Jwt(other) =
            TokenKind::parse(&format!("jwt,sign-method=HS256,priv-key={other}")).expect("other")
        else {
            panic!("not jwt");
        };
        assert_eq!(other.verify(&token), None);
        let TokenKind::Jwt(hs512) =
            TokenKind::parse(&format!("jwt,sign-method=HS512,priv-key={key}")).expect("hs512")
        else {
            panic!("not jwt");
        };
        assert_eq!(hs512.verify(&token), None);
        // `alg: none`.
        let none_header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(jwt.verify(&format!("{none_header}.{}.", parts[1])), None);
        assert_eq!(jwt.verify("garbage"), None);
        // Expired: a token whose `exp` has passed.
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                exp: unix_now_s() - 1,
                revision: 7,
                username: "alice".to_owned(),
            },
            &EncodingKey::from_secret(b"a shared secret"),
        )
        .expect("encode");
        assert_eq!(jwt.verify(&expired), None);
    }

    /// One DER element: its tag, its contents, what follows.
    fn der_read(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let (tag, first) = (input[0], input[1]);
        let (len, skip) = if first < 0x80 {
            (usize::from(first), 2)
        } else {
            let n = usize::from(first & 0x7f);
            let len = input[2..2 + n]
                .iter()
                .fold(0usize, |l, &b| (l << 8) | usize::from(b));
            (len, 2 + n)
        };
        (tag, &input[skip..skip + len], &input[skip + len..])
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn sec1_wraps_into_the_pkcs8_ring_reads() {
        // A P-256 key made by ring (PKCS#8), its SEC1 part cut out and wrapped again: the
        // same bytes.
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .expect("generate");
        let pkcs8 = pkcs8.as_ref();
        // PrivateKeyInfo: SEQUENCE { INTEGER 0, SEQUENCE { 2 OIDs }, OCTET STRING sec1 }.
        let (tag, info, _) = der_read(pkcs8);
        assert_eq!(tag, 0x30);
        let (_, _, rest) = der_read(info);
        let (_, _, rest) = der_read(rest);
        let (tag, sec1, _) = der_read(rest);
        assert_eq!(tag, 0x04);
        assert_eq!(sec1_to_pkcs8(sec1, &P256_OID), pkcs8);
        assert!(
            ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &sec1_to_pkcs8(sec1, &P256_OID),
                &rng
            )
            .is_ok()
        );
        // The wrong curve for the key is refused by ring.
        assert!(
            ring::signature::EcdsaKeyPair::from_pkcs8(
                &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                &sec1_to_pkcs8(sec1, &P384_OID),
                &rng
            )
            .is_err()
        );
    }
}
