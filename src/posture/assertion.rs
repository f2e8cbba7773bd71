//! Signed posture assertion provider: the client presents a JWT from its MDM in a header. The
//! token is verified against a JWKS (a file or fetched from a URL; ES256/EdDSA by default) and must be bound to the
//! client certificate by its `cnf.x5t#S256` claim (RFC 8705), so an assertion stolen from one
//! device is useless with another device's certificate.
//!
//! Claims: `exp` (required), optional `iss`/`aud`/`nbf`/`iat`, `cnf: {"x5t#S256": ...}` and
//! `posture: {managed, disk_encrypted, os, os_version, firewall, last_seen, tags}`. Without
//! `posture.last_seen`, `iat` is when the device was last seen.
//!
//! A verified token is cached (bounded) so that a client sending the same assertion on every
//! request pays for one signature check; expiry and binding are checked on every use.

use std::sync::Arc;

use http::HeaderName;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::{
    DevicePosture, Lookup, PostureError, PostureProvider, PostureResult, Query, RawPosture, Timestamp, Unavailable,
};
use crate::jwt::{Confirmation, Jwks, JwksSource, JwtError, TokenCache, thumbprint_matches, unix_now};

#[derive(Debug, Clone)]
pub struct AssertionConfig {
    pub header: HeaderName,
    /// `jwks` (a file), or `jwks_url`/`oidc_discovery` (fetched).
    pub jwks: JwksSource,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub algorithms: Vec<Algorithm>,
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    iat: Option<u64>,
    cnf: Option<Confirmation>,
    posture: RawPosture,
}

pub struct Assertion {
    cfg: AssertionConfig,
    jwks: Arc<Jwks>,
    /// Verified assertions: the posture and the thumbprint they are bound to.
    cache: TokenCache<(Arc<DevicePosture>, Arc<str>)>,
}

impl Assertion {
    /// Reads the JWKS file, or prepares the fetched key set (empty until [`Jwks::refresh`]
    /// runs).
    ///
    /// # Errors
    /// The JWKS file or `jwks_ca` cannot be loaded.
    pub fn load(cfg: AssertionConfig) -> Result<Self, PostureError> {
        let (algs, iss, aud) = (cfg.algorithms.clone(), cfg.issuer.as_deref(), cfg.audience.as_deref());
        let jwks = match &cfg.jwks {
            JwksSource::File(path) => Jwks::load(path, algs, iss, aud, 60)?,
            JwksSource::Remote(r) => {
                let tls = crate::tls::upstream_client_config(&r.ca, None)?;
                Jwks::remote(r.clone(), tls, "posture_assertion", algs, iss, aud, 60)
            }
        };
        Ok(Self {
            cfg,
            jwks: Arc::new(jwks),
            cache: TokenCache::default(),
        })
    }

    pub fn jwks(&self) -> Arc<Jwks> {
        self.jwks.clone()
    }

    /// Forgets every verified token (after the key set changed: a removed key must stop working).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    fn check(&self, token: &str, fingerprint: &str) -> PostureResult {
        let now = unix_now();
        match self.cache.get(token, now) {
            Some(Err(_)) => return Err(Unavailable::AssertionExpired),
            Some(Ok((_, x5t))) if !thumbprint_matches(&x5t, fingerprint) => {
                return Err(Unavailable::AssertionWrongCert);
            }
            Some(Ok((posture, _))) => return Ok(posture),
            None => {}
        }
        let claims: Claims = self.jwks.verify(token).map_err(|e| match e {
            JwtError::Malformed | JwtError::MissingClaim => Unavailable::AssertionMalformed,
            JwtError::DisallowedAlgorithm | JwtError::BadSignature => Unavailable::AssertionBadSignature,
            JwtError::Expired | JwtError::NotYetValid => Unavailable::AssertionExpired,
            JwtError::WrongIssuer | JwtError::WrongAudience => Unavailable::AssertionWrongIssuer,
            JwtError::KeysUnavailable => Unavailable::AssertionKeysUnavailable,
        })?;
        let x5t = claims
            .cnf
            .and_then(|c| c.x5t_s256)
            .ok_or(Unavailable::AssertionUnbound)?;
        if !thumbprint_matches(&x5t, fingerprint) {
            return Err(Unavailable::AssertionWrongCert);
        }
        let mut raw = claims.posture;
        if raw.last_seen.is_none() {
            raw.last_seen = claims.iat.map(Timestamp::Unix);
        }
        let posture = Arc::new(raw.into_posture().map_err(|_| Unavailable::AssertionMalformed)?);
        self.cache.insert(token, (posture.clone(), x5t.into()), claims.exp, now);
        Ok(posture)
    }
}

impl PostureProvider for Assertion {
    fn name(&self) -> &'static str {
        "assertion"
    }

    fn lookup(&self, q: &Query<'_>) -> Lookup {
        let result = match q.headers.get(&self.cfg.header) {
            None => Err(Unavailable::AssertionMissing),
            Some(v) => match v.to_str() {
                Ok(token) => self.check(token.trim(), q.fingerprint),
                Err(_) => Err(Unavailable::AssertionMalformed),
            },
        };
        Lookup::Ready(result)
    }
}
