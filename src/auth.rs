//! JWT authentication, shared by the socket handshake and the HTTP API.
//!
//! Tokens are verified with a pinned algorithm (HS256 with the configured secret); `exp` and
//! `sub` are required, `aud`/`iss` checked when configured. `sub` is the user id. In dev mode
//! (no `JWT_SECRET`) the secret is random, made once and kept in the data folder, so tokens
//! printed at start and by `postchat token` stay valid across restarts.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::domain::UserId;

/// Longest token accepted; larger ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. Clients only ever see "unauthorized"; the reason goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("token too large")]
    TooLarge,
    #[error("invalid token: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("invalid subject: {0}")]
    BadSubject(String),
    #[error("bad key: {0}")]
    BadKey(String),
    #[error("token lifetime over JWT_MAX_LIFETIME_SECS")]
    TooLong,
}

/// Shortest HS256 secret accepted: the hash's size (RFC 7518, section 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    /// One audience or several (RFC 7519 allows both); jsonwebtoken checks it against ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<Audience>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The algorithm tokens must be signed with; any other is refused (`alg: none` included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// A shared secret (`JWT_SECRET`).
    Hs256,
    /// An RSA public key (`JWT_PUBLIC_KEY_FILE`, PEM).
    Rs256,
    /// An Ed25519 public key (`JWT_PUBLIC_KEY_FILE`, PEM).
    EdDsa,
}

impl JwtAlgorithm {
    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// A verified token: whose it is and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: UserId,
    /// When it stops being accepted: `exp` plus the allowed clock skew, in seconds since the epoch.
    pub expires_at: u64,
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The JWT settings: how tokens are checked and (with a shared secret) made.
#[derive(Clone)]
pub struct JwtKeys {
    decoding: DecodingKey,
    /// Only with HS256: the server can then issue tokens (dev mode, `postchat token`).
    encoding: Option<EncodingKey>,
    validation: Validation,
    audience: Option<String>,
    issuer: Option<String>,
    /// Longest lifetime a token may have left, when capped (s).
    max_lifetime: Option<u64>,
}

impl JwtKeys {
    /// HS256 with `secret`; `audience` and `issuer` are required in tokens when given.
    pub fn hs256(secret: &[u8], audience: Option<String>, issuer: Option<String>) -> Self {
        Self::new(
            JwtAlgorithm::Hs256,
            DecodingKey::from_secret(secret),
            Some(EncodingKey::from_secret(secret)),
            audience,
            issuer,
        )
    }

    /// RS256 or EdDSA with a public key in PEM; such tokens come from an identity provider.
    pub fn public_key(
        algorithm: JwtAlgorithm,
        pem: &[u8],
        audience: Option<String>,
        issuer: Option<String>,
    ) -> Result<Self, AuthError> {
        let decoding = match algorithm {
            JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem)?,
            JwtAlgorithm::EdDsa => DecodingKey::from_ed_pem(pem)?,
            JwtAlgorithm::Hs256 => {
                return Err(AuthError::BadKey("HS256 takes JWT_SECRET, not a key file".into()))
            }
        };
        Ok(Self::new(algorithm, decoding, None, audience, issuer))
    }

    fn new(
        algorithm: JwtAlgorithm,
        decoding: DecodingKey,
        encoding: Option<EncodingKey>,
        audience: Option<String>,
        issuer: Option<String>,
    ) -> Self {
        let mut validation = Validation::new(algorithm.algorithm());
        let mut required = vec!["exp", "sub"];
        if audience.is_some() {
            required.push("aud");
        }
        if issuer.is_some() {
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = DEFAULT_CLOCK_SKEW_SECS;
        validation.validate_nbf = true;
        match &audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &issuer {
            validation.set_issuer(&[iss]);
        }
        Self { decoding, encoding, validation, audience, issuer, max_lifetime: None }
    }

    /// Refuses tokens with more than `secs` to live (`exp` from now, and from `iat` when given).
    pub fn with_max_lifetime(mut self, secs: Option<u64>) -> Self {
        self.max_lifetime = secs;
        self
    }

    /// Allows `secs` of clock skew on `exp` and `nbf` (default 30).
    pub fn with_clock_skew(mut self, secs: u64) -> Self {
        self.validation.leeway = secs;
        self
    }

    /// The user a token speaks for, if it is valid.
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)?;
        if let Some(max) = self.max_lifetime {
            let from = data.claims.iat.map_or(now_secs(), |iat| iat.min(now_secs()));
            if data.claims.exp.saturating_sub(from) > max {
                return Err(AuthError::TooLong);
            }
        }
        let user = UserId::parse(&data.claims.sub).map_err(|e| AuthError::BadSubject(e.to_string()))?;
        Ok(Verified { user, expires_at: data.claims.exp.saturating_add(self.validation.leeway) })
    }

    /// Makes a token for `user`, valid for `ttl_secs` (HS256 only: dev tokens, `postchat token`).
    pub fn issue(&self, user: &UserId, ttl_secs: u64) -> Result<String, AuthError> {
        let encoding = self.encoding.as_ref().ok_or_else(|| {
            AuthError::BadKey("tokens for a public-key algorithm are issued by the identity provider".into())
        })?;
        let now = now_secs();
        let claims = Claims {
            sub: user.as_str().to_owned(),
            exp: now + ttl_secs,
            iat: Some(now),
            nbf: None,
            aud: self.audience.clone().map(Audience::One),
            iss: self.issuer.clone(),
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)?)
    }
}

/// Clock skew allowed on `exp` and `nbf` unless configured (s).
pub const DEFAULT_CLOCK_SKEW_SECS: u64 = 30;

/// The dev-mode secret: read from `dir/dev-jwt-secret`, or made and written there (mode 0600).
pub fn dev_secret(dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = dir.join("dev-jwt-secret");
    match std::fs::read_to_string(&path) {
        Ok(hex) if hex.trim().len() >= 32 => return Ok(hex.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &hex)?;
    Ok(hex.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `token` parameter of a query string (2.x clients send it this way).
pub fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::hs256(b"0123456789abcdef0123456789abcdef", None, None)
    }

    #[test]
    fn an_issued_token_verifies_to_its_user() {
        let user = UserId::parse("alice").unwrap();
        let token = keys().issue(&user, 60).unwrap();
        assert_eq!(keys().verify(&token).unwrap().user, user);
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let other = JwtKeys::hs256(b"another-secret-another-secret-xx", None, None);
        let token = other.issue(&UserId::parse("alice").unwrap(), 60).unwrap();
        assert!(keys().verify(&token).is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let k = keys();
        let token = k.issue(&UserId::parse("alice").unwrap(), 0).unwrap();
        // Issued with exp = now; leeway is 30 s, so forge one well in the past instead.
        let claims = Claims { sub: "alice".into(), exp: 1_000, iat: None, nbf: None, aud: None, iss: None };
        let old = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, k.encoding.as_ref().unwrap())
            .unwrap();
        assert!(k.verify(&token).is_ok());
        assert!(k.verify(&old).is_err());
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let plain = keys().issue(&UserId::parse("alice").unwrap(), 60).unwrap();
        let strict =
            JwtKeys::hs256(b"0123456789abcdef0123456789abcdef", Some("chat".into()), Some("me".into()));
        assert!(strict.verify(&plain).is_err());
        let good = strict.issue(&UserId::parse("alice").unwrap(), 60).unwrap();
        assert!(strict.verify(&good).is_ok());
    }

    fn sign(claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
    }

    #[test]
    fn an_audience_array_is_accepted_when_it_holds_ours() {
        let strict = JwtKeys::hs256(b"0123456789abcdef0123456789abcdef", Some("chat".into()), None);
        let exp = now_secs() + 60;
        let ours = sign(&serde_json::json!({ "sub": "alice", "exp": exp, "aud": ["billing", "chat"] }));
        assert_eq!(strict.verify(&ours).unwrap().user.as_str(), "alice");
        let others = sign(&serde_json::json!({ "sub": "alice", "exp": exp, "aud": ["billing", "mail"] }));
        assert!(strict.verify(&others).is_err());
        let one = sign(&serde_json::json!({ "sub": "alice", "exp": exp, "aud": "chat" }));
        assert!(strict.verify(&one).is_ok());
    }

    #[test]
    fn a_lifetime_cap_refuses_long_lived_tokens() {
        let capped = keys().with_max_lifetime(Some(3600));
        let now = now_secs();
        let short = sign(&serde_json::json!({ "sub": "alice", "exp": now + 600 }));
        assert!(capped.verify(&short).is_ok());
        let long = sign(&serde_json::json!({ "sub": "alice", "exp": now + 7200 }));
        assert!(matches!(capped.verify(&long), Err(AuthError::TooLong)));
        let issued_long_ago =
            sign(&serde_json::json!({ "sub": "alice", "iat": now - 86_400, "exp": now + 600 }));
        assert!(matches!(capped.verify(&issued_long_ago), Err(AuthError::TooLong)), "exp - iat counts");
        assert!(keys().verify(&long).is_ok(), "no cap unless configured");
    }

    #[test]
    fn oversized_and_empty_tokens_are_refused_before_parsing() {
        assert!(matches!(keys().verify(&"a".repeat(MAX_TOKEN_BYTES + 1)), Err(AuthError::TooLarge)));
        assert!(matches!(keys().verify(""), Err(AuthError::Missing)));
    }

    #[test]
    fn tokens_are_found_in_headers_and_queries() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(query_token("EIO=3&token=a%2Eb&transport=polling").as_deref(), Some("a.b"));
        assert_eq!(query_token("EIO=4"), None);
    }

    #[test]
    fn the_dev_secret_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = dev_secret(dir.path()).unwrap();
        assert_eq!(dev_secret(dir.path()).unwrap(), first);
        assert_eq!(first.len(), 64);
    }
}
