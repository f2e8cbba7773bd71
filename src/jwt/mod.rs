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
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
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

/// A key of a JWKS document that is not used, and why (logged by the caller).
#[derive(Debug)]
pub(crate) struct Skipped {
    /// The key's `kid`, or `#index` in `keys` without one.
    pub(crate) name: String,
    pub(crate) reason: String,
    /// Published for another purpose (`use`/`key_ops`): expected, so logged at debug only.
    pub(crate) other_use: bool,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key {}: {}", self.name, self.reason)
    }
}

/// The usable keys of a JWKS document, and those left out.
struct Parsed {
    keys: Vec<Key>,
    skipped: Vec<Skipped>,
}

/// Logs each skipped key of the set read from `origin` (a path or URL) once.
fn log_skipped(source: &str, origin: &str, skipped: &[Skipped]) {
    for s in skipped {
        if s.other_use {
            tracing::debug!(source, origin, kid = %s.name, reason = %s.reason, "JWKS key skipped");
        } else {
            tracing::info!(source, origin, kid = %s.name, reason = %s.reason, "JWKS key skipped");
        }
    }
}

fn parse_file(path: &Path, allowed: &[Algorithm]) -> Result<Vec<Key>, JwksError> {
    let err = |message: String| JwksError {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let parsed = parse(&text, allowed).map_err(err)?;
    log_skipped("file", &path.display().to_string(), &parsed.skipped);
    Ok(parsed.keys)
}

/// Parses a JWKS document (RFC 7517 §5): a JSON object with a `keys` array, each key on its own.
/// A symmetric (`oct`) key refuses the whole document: a published secret is a mistake, never a
/// key to verify with. Other keys that cannot verify a token of an allowed algorithm are skipped
/// (§5: "implementations SHOULD ignore JWKs within a JWK Set that use `kty` values that are not
/// understood"): `use` other than `sig` or `key_ops` without `verify` (§4.2, §4.3), a `kty`,
/// `crv` or `alg` ztgate does not support, an `alg` that does not fit the key, an algorithm not in
/// `allowed`, a key that does not parse. A document without one usable key is an error (nothing
/// could ever verify).
fn parse(text: &str, allowed: &[Algorithm]) -> Result<Parsed, String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut parsed = Parsed {
        keys: Vec::new(),
        skipped: Vec::new(),
    };
    for (i, value) in set.keys.into_iter().enumerate() {
        let kid = value.get("kid").and_then(serde_json::Value::as_str).map(str::to_string);
        let name = kid.clone().unwrap_or_else(|| format!("#{i}"));
        if value.get("kty").and_then(serde_json::Value::as_str) == Some("oct") {
            return Err(format!(
                "key {name} is a symmetric (oct) key: only public keys are accepted"
            ));
        }
        match usable(value, allowed) {
            Ok((alg, key)) => parsed.keys.push(Key { kid, alg, key }),
            Err((reason, other_use)) => parsed.skipped.push(Skipped {
                name,
                reason,
                other_use,
            }),
        }
    }
    if parsed.keys.is_empty() {
        let why: Vec<String> = parsed.skipped.iter().map(ToString::to_string).collect();
        return Err(if why.is_empty() {
            "no key in the set".into()
        } else {
            format!("no usable key ({})", why.join("; "))
        });
    }
    Ok(parsed)
}

/// One key of a set as a verifying key, or why not (and whether it is meant for another use).
fn usable(value: serde_json::Value, allowed: &[Algorithm]) -> Result<(Algorithm, DecodingKey), (String, bool)> {
    match value.get("use") {
        None => {}
        Some(u) if u.as_str() == Some("sig") => {}
        Some(u) => return Err((format!("use {u} is not \"sig\""), true)),
    }
    if let Some(ops) = value.get("key_ops")
        && !ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")))
    {
        return Err((format!("key_ops {ops} does not include \"verify\""), true));
    }
    let skip = |reason: String| Err((reason, false));
    let jwk: Jwk = match serde_json::from_value(value) {
        Ok(jwk) => jwk,
        Err(e) => return skip(format!("not a supported JWK: {e}")),
    };
    let declared = jwk.common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            ref c => return skip(format!("unsupported curve {c:?}")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => Algorithm::EdDSA,
            ref c => return skip(format!("unsupported curve {c:?}")),
        },
        AlgorithmParameters::RSA(_) => match declared {
            None => Algorithm::RS256,
            Some(a) => match rsa_alg(a) {
                Some(alg) => alg,
                None => return skip(format!("alg {a:?} is not an RSA signature algorithm")),
            },
        },
        AlgorithmParameters::OctetKey(_) => return skip("a symmetric key".into()),
    };
    if let Some(a) = declared
        && key_alg(a) != Some(alg)
    {
        return skip(format!("alg {a:?} does not fit the key ({alg:?})"));
    }
    if !allowed.contains(&alg) {
        return skip(format!("algorithm {alg:?} is not in `algorithms`"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| (e.to_string(), false))?;
    Ok((alg, key))
}

fn rsa_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    key_alg(a).filter(|alg| {
        matches!(
            alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        )
    })
}

/// The signature algorithm a JWK's `alg` names; `None` for HMAC and encryption algorithms.
fn key_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
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

#[cfg(test)]
mod tests {
    use base64::Engine;
    use serde_json::json;

    use super::*;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// An ES256 public key as a JWK (with `extra` members merged in).
    fn es256(kid: &str, extra: serde_json::Value) -> serde_json::Value {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        let mut jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65])});
        jwk.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        jwk
    }

    /// An RSA public key as a JWK; `n` is any 2048-bit number (never used to verify here).
    fn rsa(kid: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut jwk = json!({"kty": "RSA", "kid": kid, "n": B64.encode([0xc5u8; 256]), "e": "AQAB"});
        jwk.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        jwk
    }

    /// A P-521 key (ES512), as Keycloak and others may publish one.
    fn es512(kid: &str, alg: bool) -> serde_json::Value {
        let mut jwk = json!({"kty": "EC", "crv": "P-521", "kid": kid, "use": "sig",
            "x": B64.encode([0x01u8; 66]), "y": B64.encode([0x02u8; 66])});
        if alg {
            jwk["alg"] = json!("ES512");
        }
        jwk
    }

    const ALL: [Algorithm; 4] = [Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA, Algorithm::RS256];

    fn kids(p: &Parsed) -> Vec<&str> {
        p.keys.iter().map(|k| k.kid.as_deref().unwrap_or("-")).collect()
    }

    fn skipped(p: &Parsed) -> Vec<(&str, bool)> {
        p.skipped.iter().map(|s| (s.name.as_str(), s.other_use)).collect()
    }

    #[test]
    fn a_mixed_set_keeps_only_the_keys_that_can_verify() {
        let set = json!({"keys": [
            rsa("enc1", json!({"use": "enc", "alg": "RSA-OAEP"})),
            es256("sig1", json!({"use": "sig"})),
            es512("p521-alg", true),
            es512("p521", false),
            rsa("rs1", json!({"use": "sig", "alg": "RS256"})),
            rsa("ps1", json!({"alg": "PS256"})),
            rsa("mismatch", json!({"alg": "ES256"})),
            es256("es384-p256", json!({"alg": "ES384"})),
            {"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": B64.encode([7u8; 32])},
            {"kty": "EC", "crv": "P-256", "kid": "broken"},
        ]})
        .to_string();
        let p = parse(&set, &ALL).unwrap();
        assert_eq!(kids(&p), ["sig1", "rs1"]);
        assert_eq!(
            skipped(&p),
            [
                ("enc1", true),
                ("p521-alg", false),
                ("p521", false),
                ("ps1", false),
                ("mismatch", false),
                ("es384-p256", false),
                ("x25519", false),
                ("broken", false),
            ]
        );
        let text: Vec<String> = p.skipped.iter().map(ToString::to_string).collect();
        assert_eq!(text[0], r#"key enc1: use "enc" is not "sig""#);
        assert!(text[2].contains("unsupported curve P521"), "{}", text[2]);
        assert!(text[3].contains("PS256 is not in `algorithms`"), "{}", text[3]);
        assert!(
            text[4].contains("alg ES256 is not an RSA signature algorithm"),
            "{}",
            text[4]
        );
        assert!(
            text[5].contains("alg ES384 does not fit the key (ES256)"),
            "{}",
            text[5]
        );
    }

    #[test]
    fn a_key_for_another_use_is_skipped_even_of_an_allowed_type() {
        let set = json!({"keys": [
            es256("enc-ec", json!({"use": "enc"})),
            rsa("enc-rsa", json!({"use": "enc", "alg": "RS256"})),
            es256("wrap", json!({"key_ops": ["wrapKey"]})),
            es256("verify", json!({"key_ops": ["verify"]})),
            es256("plain", json!({})),
        ]})
        .to_string();
        let p = parse(&set, &ALL).unwrap();
        assert_eq!(kids(&p), ["verify", "plain"]);
        assert_eq!(skipped(&p), [("enc-ec", true), ("enc-rsa", true), ("wrap", true)]);
    }

    #[test]
    fn a_set_without_one_usable_key_is_an_error_naming_why() {
        let set = json!({"keys": [
            rsa("enc1", json!({"use": "enc", "alg": "RSA-OAEP"})),
            es512("p521", true),
        ]})
        .to_string();
        let err = parse(&set, &ALL).err().unwrap();
        assert!(err.starts_with("no usable key (key enc1: use \"enc\""), "{err}");
        assert!(err.contains("key p521: not a supported JWK"), "{err}");
        assert_eq!(parse(r#"{"keys": []}"#, &ALL).err().unwrap(), "no key in the set");
        assert!(
            parse(r#"{"kids": []}"#, &ALL)
                .err()
                .unwrap()
                .starts_with("not a JWKS document")
        );
        let secret = json!({"keys": [es256("sig1", json!({})), {"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]});
        let err = parse(&secret.to_string(), &ALL).err().unwrap();
        assert!(err.contains("key s is a symmetric (oct) key"), "{err}");
    }
}
