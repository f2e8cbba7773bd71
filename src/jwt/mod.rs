//! A JWKS of public keys and the one JWT verification path that posture assertions and user
//! tokens share. Only asymmetric keys and algorithms are accepted: `none` and HMAC (`HS*`) are
//! refused, so a public key can never be used as an HMAC secret (algorithm confusion).
//! The key set is read from a file (replaced atomically when the file changes) or fetched from
//! an identity provider's URL and kept fresh in the background ([`remote`]).

mod freshness;
pub(crate) mod remote;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::DeserializeOwned;

pub(crate) use remote::{RemoteJwksConfig, RemoteLocation};

/// Where a key set comes from (`jwks`, or `jwks_url`/`oidc_discovery` with their options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS file, reloaded when it changes.
    File(PathBuf),
    /// Fetched over HTTPS and refreshed in the background.
    Remote(RemoteJwksConfig),
}

/// A JWKS file that cannot be used: unreadable, not a JWKS document, or without one usable key.
#[derive(Debug, thiserror::Error)]
#[error("JWKS {path}: {message}")]
pub struct JwksError {
    pub path: PathBuf,
    pub message: String,
}

/// Why a token was refused; the code is what audit records show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    Malformed,
    /// An algorithm outside the configured list (including `none` and `HS*`).
    DisallowedAlgorithm,
    /// No key in the set matches the token's `kid` and algorithm, or the signature is wrong.
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
    /// A fetched key set was never loaded (the IdP has not answered since start-up): every
    /// token is refused.
    KeysUnavailable,
}

impl JwtError {
    pub fn as_str(self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::DisallowedAlgorithm => "disallowed-algorithm",
            JwtError::BadSignature => "bad-signature",
            JwtError::Expired => "expired",
            JwtError::NotYetValid => "not-yet-valid",
            JwtError::WrongIssuer => "wrong-issuer",
            JwtError::WrongAudience => "wrong-audience",
            JwtError::MissingClaim => "missing-claim",
            JwtError::KeysUnavailable => "keys-unavailable",
        }
    }
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// A key set and the rules tokens are verified with.
pub struct Jwks {
    /// The file the keys are read from; `None` when they are fetched.
    path: Option<PathBuf>,
    /// The fetching side when the keys come from a URL.
    remote: Option<remote::Remote>,
    allowed: Vec<Algorithm>,
    /// Empty only for a fetched set before its first successful fetch (a file's set never is).
    keys: ArcSwap<Vec<Key>>,
    /// Issuer, audience, expiry rules; `algorithms` is set per token to its (allowed) one.
    validation: Validation,
}

/// Parses an algorithm name as configured; only asymmetric ones.
pub(crate) fn parse_algorithm(s: &str) -> Option<Algorithm> {
    Some(match s {
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        _ => return None,
    })
}

impl Jwks {
    /// `issuer`/`audience`: required values of `iss`/`aud` when set. `leeway`: clock skew
    /// allowed on `exp`/`nbf`, in seconds.
    pub fn load(
        path: &Path,
        allowed: Vec<Algorithm>,
        issuer: Option<&str>,
        audience: Option<&str>,
        leeway: u64,
    ) -> Result<Self, JwksError> {
        let keys = parse_file(path, &allowed)?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            remote: None,
            allowed,
            keys: ArcSwap::from_pointee(keys),
            validation: validation(issuer, audience, leeway),
        })
    }

    /// A key set fetched from `cfg`'s URL over HTTPS with `tls` (which trusts `cfg.ca`). It starts
    /// empty, refusing every token, until [`Jwks::refresh`] (spawned by the caller) loads it.
    /// `source` names it in metrics and logs (`user_auth`, `posture_assertion`). Other
    /// arguments as for [`Jwks::load`].
    pub fn remote(
        cfg: RemoteJwksConfig,
        tls: rustls::ClientConfig,
        source: &'static str,
        allowed: Vec<Algorithm>,
        issuer: Option<&str>,
        audience: Option<&str>,
        leeway: u64,
    ) -> Self {
        Self {
            path: None,
            remote: Some(remote::Remote::new(cfg, tls, source)),
            allowed,
            keys: ArcSwap::from_pointee(Vec::new()),
            validation: validation(issuer, audience, leeway),
        }
    }

    /// The JWKS file; `None` for a fetched key set.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Whether the keys are fetched from a URL (and need [`Jwks::refresh`] running).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Whether a key set is loaded (always, for a file; after the first fetch, for a URL).
    pub fn is_loaded(&self) -> bool {
        !self.keys.load().is_empty()
    }

    /// Reads the key file again; a broken file keeps the current keys.
    ///
    /// # Errors
    /// The file cannot be read or holds no usable key; or the keys are fetched, not read.
    pub fn reload(&self) -> Result<usize, JwksError> {
        let Some(path) = &self.path else {
            return Err(JwksError {
                path: PathBuf::new(),
                message: "the key set is fetched from a URL, not read from a file".into(),
            });
        };
        let keys = parse_file(path, &self.allowed)?;
        let n = keys.len();
        self.keys.store(Arc::new(keys));
        Ok(n)
    }

    /// Verifies `token` (signature, algorithm, `exp`, `nbf`, `iss`, `aud`) and returns its claims.
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<T, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if !self.allowed.contains(&header.alg) {
            return Err(JwtError::DisallowedAlgorithm);
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let keys = self.keys.load();
        if keys.is_empty() {
            return Err(JwtError::KeysUnavailable);
        }
        let candidates = keys
            .iter()
            .filter(|k| k.alg == header.alg && (header.kid.is_none() || k.kid == header.kid));
        let mut last = JwtError::BadSignature;
        let mut tried = false;
        for k in candidates {
            tried = true;
            match jsonwebtoken::decode::<T>(token, &k.key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    last = match e.kind() {
                        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => {
                            JwtError::BadSignature
                        }
                        ErrorKind::ExpiredSignature => return Err(JwtError::Expired),
                        ErrorKind::ImmatureSignature => return Err(JwtError::NotYetValid),
                        ErrorKind::InvalidIssuer => return Err(JwtError::WrongIssuer),
                        ErrorKind::InvalidAudience => return Err(JwtError::WrongAudience),
                        ErrorKind::MissingRequiredClaim(_) => return Err(JwtError::MissingClaim),
                        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => JwtError::DisallowedAlgorithm,
                        _ => return Err(JwtError::Malformed),
                    }
                }
            }
        }
        // A `kid` the set does not hold: the IdP may have rotated to a key not fetched yet.
        if !tried
            && let (Some(remote), Some(kid)) = (&self.remote, &header.kid)
            && !keys.iter().any(|k| k.kid.as_ref() == Some(kid))
        {
            remote.want_refetch();
        }
        Err(last)
    }
}

/// Issuer, audience and expiry rules (`algorithms` is set per token).
fn validation(issuer: Option<&str>, audience: Option<&str>, leeway: u64) -> Validation {
    let mut validation = Validation::new(Algorithm::ES256);
    validation.leeway = leeway;
    validation.validate_nbf = true;
    validation.required_spec_claims = ["exp".to_string()].into_iter().collect();
    if let Some(iss) = issuer {
        validation.set_issuer(&[iss]);
    }
    match audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    validation
}

fn parse_file(path: &Path, allowed: &[Algorithm]) -> Result<Vec<Key>, JwksError> {
    let err = |message: String| JwksError {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    parse(&text, allowed).map_err(err)
}

/// Parses a JWKS document. Symmetric keys are refused outright; keys of algorithms that are not
/// allowed are skipped. An empty result is an error (nothing could ever verify).
fn parse(text: &str, allowed: &[Algorithm]) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let name = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::OctetKey(_), _) => {
                return Err(format!(
                    "key {name} is a symmetric (oct) key: only public keys are accepted"
                ));
            }
            (AlgorithmParameters::EllipticCurve(p), _) => match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err(format!("key {name}: unsupported curve {:?}", p.curve)),
            },
            (AlgorithmParameters::OctetKeyPair(_), _) => Algorithm::EdDSA,
            (AlgorithmParameters::RSA(_), Some(a)) => {
                rsa_alg(a).ok_or_else(|| format!("key {name}: alg {a:?} is not an RSA algorithm"))?
            }
            (AlgorithmParameters::RSA(_), None) => Algorithm::RS256,
        };
        if !allowed.contains(&alg) {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {name}: {e}"))?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err("no key of an allowed algorithm".into());
    }
    Ok(keys)
}

fn rsa_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        _ => return None,
    })
}

/// Verified tokens, so that a client sending the same token on every request pays for one
/// signature check. Bounded: past `CACHE_ENTRIES`, expired entries go, then everything. The
/// caller re-checks what depends on the request (binding) on every use; expiry is checked here.
pub(crate) struct TokenCache<T> {
    map: dashmap::DashMap<String, (T, u64)>,
}

/// Verified tokens remembered at most per cache (each a few hundred bytes).
const CACHE_ENTRIES: usize = 10_000;

impl<T: Clone> Default for TokenCache<T> {
    fn default() -> Self {
        Self {
            map: dashmap::DashMap::new(),
        }
    }
}

impl<T: Clone> TokenCache<T> {
    /// `None`: not cached. `Some(Err(Expired))`: cached but past `exp`.
    pub(crate) fn get(&self, token: &str, now: u64) -> Option<Result<T, JwtError>> {
        self.map.get(token).map(|e| {
            if e.1 <= now {
                Err(JwtError::Expired)
            } else {
                Ok(e.0.clone())
            }
        })
    }

    pub(crate) fn insert(&self, token: &str, value: T, exp: u64, now: u64) {
        if self.map.len() >= CACHE_ENTRIES {
            self.map.retain(|_, e| e.1 > now);
            if self.map.len() >= CACHE_ENTRIES {
                self.map.clear();
            }
        }
        self.map.insert(token.to_string(), (value, exp));
    }

    /// After the key set changed: a removed key must stop working at once.
    pub(crate) fn clear(&self) {
        self.map.clear();
    }
}

/// Seconds since the Unix epoch (JWT time).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The RFC 8705 confirmation claim: `cnf: {"x5t#S256": base64url(SHA-256(cert DER))}`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
}

/// Whether a `x5t#S256` thumbprint names the certificate with this hex SHA-256 fingerprint.
pub(crate) fn thumbprint_matches(x5t: &str, fingerprint_hex: &str) -> bool {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(x5t.trim_end_matches('=')) else {
        return false;
    };
    bytes.len() * 2 == fingerprint_hex.len()
        && bytes.iter().zip(fingerprint_hex.as_bytes().chunks(2)).all(|(b, hex)| {
            std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                == Some(*b)
        })
}

/// Why a request's user could not be established (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserError {
    Missing,
    /// Not `Authorization: Bearer <token>`.
    NotBearer,
    Invalid(JwtError),
    Unbound,
    WrongCertificate,
}

impl UserError {
    pub fn as_str(self) -> &'static str {
        match self {
            UserError::Missing => "user-token-missing",
            UserError::NotBearer => "user-token-not-bearer",
            UserError::Invalid(JwtError::Malformed) => "user-token-malformed",
            UserError::Invalid(JwtError::DisallowedAlgorithm) => "user-token-disallowed-algorithm",
            UserError::Invalid(JwtError::BadSignature) => "user-token-bad-signature",
            UserError::Invalid(JwtError::Expired) => "user-token-expired",
            UserError::Invalid(JwtError::NotYetValid) => "user-token-not-yet-valid",
            UserError::Invalid(JwtError::WrongIssuer) => "user-token-wrong-issuer",
            UserError::Invalid(JwtError::WrongAudience) => "user-token-wrong-audience",
            UserError::Invalid(JwtError::MissingClaim) => "user-token-missing-claim",
            UserError::Invalid(JwtError::KeysUnavailable) => "user-token-keys-unavailable",
            UserError::Unbound => "user-token-unbound",
            UserError::WrongCertificate => "user-token-wrong-certificate",
        }
    }
}
