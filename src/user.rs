//! User identity, the third factor: on routes that ask for it, a bearer JWT (an OIDC access or
//! ID token) verified against a JWKS — a file, or fetched from the IdP ([`crate::jwt::remote`]) — issuer, audience, expiry, asymmetric algorithms only —
//! and optionally bound to the client certificate (RFC 8705 `cnf.x5t#S256`), so a token lifted
//! from one device does not work from another. Policy rules match its claims (`user_sub`,
//! `user_email`, `user_groups`, `user_mfa`); upstream receives the subject in `x-ztgate-user`.

use std::sync::Arc;

use http::HeaderMap;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

pub(crate) use crate::jwt::UserError;
use crate::jwt::{Confirmation, Jwks, JwksError, JwksSource, JwtError, TokenCache, thumbprint_matches, unix_now};

/// The claims policy can match on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub sub: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
    pub amr: Vec<String>,
    /// `x-ztgate-user` for upstream, rendered once per token.
    pub header: http::HeaderValue,
}

impl User {
    /// Whether the token says the user authenticated with more than one factor.
    pub fn mfa(&self) -> bool {
        self.amr.iter().any(|m| m == "mfa")
    }
}

#[derive(Debug, Clone)]
pub struct UserAuthConfig {
    /// `jwks` (a file), or `jwks_url`/`oidc_discovery` (fetched).
    pub jwks: JwksSource,
    pub issuer: String,
    pub audience: String,
    pub algorithms: Vec<Algorithm>,
    /// The token must carry `cnf.x5t#S256` naming the connection's client certificate.
    pub require_binding: bool,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    email: Option<String>,
    #[serde(default)]
    groups: OneOrMany,
    #[serde(default)]
    amr: OneOrMany,
    cnf: Option<Confirmation>,
}

/// IdPs write `groups` as a list, some as a single string.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Why `[user_auth]` could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UserAuthError {
    #[error("{0}")]
    Jwks(#[from] JwksError),
    /// `jwks_ca` could not be loaded.
    #[error("jwks_ca: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

pub struct UserAuth {
    jwks: Arc<Jwks>,
    require_binding: bool,
    /// Verified tokens: the user and the thumbprint the token is bound to, if any.
    cache: TokenCache<(Arc<User>, Option<Arc<str>>)>,
}

impl UserAuth {
    /// Reads the JWKS file, or prepares the fetched key set (empty until
    /// [`Jwks::refresh`] runs; nothing is fetched here).
    ///
    /// # Errors
    /// The JWKS file or `jwks_ca` cannot be loaded.
    pub fn load(cfg: &UserAuthConfig) -> Result<Self, UserAuthError> {
        let (algs, iss, aud) = (
            cfg.algorithms.clone(),
            Some(cfg.issuer.as_str()),
            Some(cfg.audience.as_str()),
        );
        let jwks = match &cfg.jwks {
            JwksSource::File(path) => Jwks::load(path, algs, iss, aud, 60)?,
            JwksSource::Remote(r) => {
                let tls = crate::tls::upstream_client_config(&r.ca, None)?;
                Jwks::remote(r.clone(), tls, "user_auth", algs, iss, aud, 60)
            }
        };
        Ok(Self {
            jwks: Arc::new(jwks),
            require_binding: cfg.require_binding,
            cache: TokenCache::default(),
        })
    }

    pub fn jwks(&self) -> Arc<Jwks> {
        self.jwks.clone()
    }

    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// The request's user, from `Authorization: Bearer`. `Ok(None)`: no token was sent.
    pub fn authenticate(&self, headers: &HeaderMap, fingerprint: &str) -> Result<Option<Arc<User>>, UserError> {
        let Some(v) = headers.get(http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let v = v.to_str().map_err(|_| UserError::NotBearer)?;
        let token = match v.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err(UserError::NotBearer),
        };
        let now = unix_now();
        if let Some(cached) = self.cache.get(token, now) {
            let (user, x5t) = cached.map_err(UserError::Invalid)?;
            self.check_binding(x5t.as_deref(), fingerprint)?;
            return Ok(Some(user));
        }
        let claims: Claims = self.jwks.verify(token).map_err(UserError::Invalid)?;
        let x5t = claims.cnf.and_then(|c| c.x5t_s256);
        self.check_binding(x5t.as_deref(), fingerprint)?;
        let header = http::HeaderValue::from_str(&claims.sub).map_err(|_| UserError::Invalid(JwtError::Malformed))?;
        let user = Arc::new(User {
            sub: claims.sub,
            email: claims.email,
            groups: claims.groups.into_vec(),
            amr: claims.amr.into_vec(),
            header,
        });
        self.cache
            .insert(token, (user.clone(), x5t.map(Arc::from)), claims.exp, now);
        Ok(Some(user))
    }

    fn check_binding(&self, x5t: Option<&str>, fingerprint: &str) -> Result<(), UserError> {
        match x5t {
            // A bound token is checked whether or not binding is required: it names its holder.
            Some(t) if !thumbprint_matches(t, fingerprint) => Err(UserError::WrongCertificate),
            Some(_) => Ok(()),
            None if self.require_binding => Err(UserError::Unbound),
            None => Ok(()),
        }
    }
}
