//! A key set fetched over HTTPS from an identity provider (`jwks_url`, or the `jwks_uri` of its
//! OpenID Connect discovery document) and kept fresh by one background task per key set.
//!
//! - The data path only reads the key set (an `ArcSwap` load, as for a file); nothing here runs
//!   per request except [`Remote::want_refetch`], on a token whose `kid` the set lacks.
//! - Refresh: after each success, when the answer's cache headers say it goes stale, clamped to
//!   `[refresh_min, refresh_max]` ([`super::freshness`]); conditional (`If-None-Match`), so an
//!   unchanged set costs a `304`.
//! - Unknown `kid` (the IdP rotated to a key not yet seen): one refetch, no sooner than
//!   `refresh_min` after the previous fetch; any number of such tokens in between share it.
//! - Failure (unreachable, timeout, non-2xx, not a usable JWKS, wrong issuer): the last good set
//!   stays, the failure is logged with the URL and cause and counted, and the fetch is retried
//!   after 1 s, 2 s, 4 s, ... up to `refresh_min`. Before any set was loaded every token is
//!   refused (fail closed) and readiness says not ready.
//! - Discovery: `{issuer}/.well-known/openid-configuration` is read for `jwks_uri`; its `issuer`
//!   must equal the configured one (OpenID Connect Discovery 1.0 §4.3), else nothing from it is
//!   used. It is read again whenever a key set fetch fails (the IdP may have moved its keys).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use super::{Jwks, Key, freshness};
use crate::telemetry::{error_chain, metrics::JwksMetrics};

/// Largest key set or discovery document read (a JWKS of a dozen RSA keys is ~10 KiB).
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// First retry delay after a failed fetch; doubled per failure up to `refresh_min`.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Where a fetched key set comes from, and how it is kept fresh (`jwks_url` or `oidc_discovery`
/// in `[user_auth]` and the assertion posture provider).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwksConfig {
    pub location: RemoteLocation,
    /// PEM bundle of the CAs that verify the IdP's HTTPS certificate (`jwks_ca`).
    pub ca: std::path::PathBuf,
    /// Floor of the refresh interval and the least time between two fetches (the unknown-`kid`
    /// refetch included); also the cap of the retry backoff.
    pub refresh_min: Duration,
    /// Ceiling of the refresh interval, whatever the cache headers say.
    pub refresh_max: Duration,
    /// Bound on one request (connect, TLS, answer, body).
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteLocation {
    /// `jwks_url`: the key set itself (`https://` only).
    Url(Uri),
    /// `oidc_discovery = true`: the key set named by `jwks_uri` in
    /// `{issuer}/.well-known/openid-configuration`.
    Discovery { issuer: String },
}

impl RemoteLocation {
    /// The discovery document's URL for `issuer`: a trailing `/` is removed first (Discovery
    /// 1.0 §4).
    pub fn discovery_url(issuer: &str) -> String {
        format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
    }
}

/// Why one fetch failed; the class is the metric's `result`, the text the log line's `error`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("GET {url}: no complete answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("GET {url}: {}", error_chain(source.as_ref()))]
    Unreachable {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("GET {url}: answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("GET {url}: {message}")]
    Invalid { url: String, message: String },
    #[error(
        "GET {url}: the discovery document names issuer `{found}`, not the configured `{expected}` (OpenID Connect Discovery 1.0 §4.3): its keys are not used"
    )]
    IssuerMismatch {
        url: String,
        found: String,
        expected: String,
    },
}

impl FetchError {
    /// The `result` label of `ztgate_jwks_fetches_total`.
    pub(crate) fn class(&self) -> &'static str {
        match self {
            FetchError::Timeout { .. } => "timeout",
            FetchError::Unreachable { .. } => "unreachable",
            FetchError::Status { .. } => "http_status",
            FetchError::Invalid { .. } => "invalid",
            FetchError::IssuerMismatch { .. } => "issuer_mismatch",
        }
    }
}

/// What one successful fetch brought.
enum Fetched {
    /// A new key set (possibly equal to the old one: the server sent it whole).
    Keys { keys: Vec<Key>, headers: HeaderMap },
    /// `304 Not Modified`: the current set is confirmed.
    NotModified { headers: HeaderMap },
}

/// The fetching half of a [`Jwks`] whose keys come from a URL.
pub(super) struct Remote {
    cfg: RemoteJwksConfig,
    /// `user_auth` or `posture_assertion`: the metric label and the log field.
    source: &'static str,
    http: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// Woken by a token with an unknown `kid`; holds one permit, so requests coalesce.
    wanted: Notify,
    metrics: JwksMetrics,
}

impl Remote {
    pub(super) fn new(cfg: RemoteJwksConfig, tls: rustls::ClientConfig, source: &'static str) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(cfg.timeout));
        conn.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(conn);
        let http = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(https);
        Self {
            cfg,
            source,
            http,
            wanted: Notify::new(),
            metrics: JwksMetrics::register(source),
        }
    }

    pub(super) fn config(&self) -> &RemoteJwksConfig {
        &self.cfg
    }

    /// Asks the refresher for a refetch (a token named a `kid` the set lacks). Cheap and
    /// non-blocking; many calls before the refresher looks are one request.
    pub(super) fn want_refetch(&self) {
        self.wanted.notify_one();
    }

    /// GET `url` (conditional on `etag`), bounded by `timeout` as a whole.
    async fn get(&self, url: &Uri, etag: Option<&HeaderValue>) -> Result<(StatusCode, HeaderMap, Bytes), FetchError> {
        let text = url.to_string();
        let mut req = Request::get(url.clone()).header(ACCEPT, "application/json, application/jwk-set+json");
        if let Some(tag) = etag {
            req = req.header(IF_NONE_MATCH, tag);
        }
        let req = req.body(Empty::new()).map_err(|e| FetchError::Invalid {
            url: text.clone(),
            message: format!("cannot build the request: {e}"),
        })?;
        let exchange = async {
            let unreachable = |source: Box<dyn std::error::Error + Send + Sync>| FetchError::Unreachable {
                url: text.clone(),
                source,
            };
            let resp = self.http.request(req).await.map_err(|e| unreachable(Box::new(e)))?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        FetchError::Invalid {
                            url: text.clone(),
                            message: format!("the document is larger than {} MiB", MAX_DOCUMENT_BYTES >> 20),
                        }
                    } else {
                        unreachable(e)
                    }
                })?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(self.cfg.timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout {
                url: text.clone(),
                timeout: self.cfg.timeout,
            })?
    }

    /// The key set's URL: configured, or read from the discovery document.
    async fn jwks_url(&self) -> Result<Uri, FetchError> {
        let issuer = match &self.cfg.location {
            RemoteLocation::Url(u) => return Ok(u.clone()),
            RemoteLocation::Discovery { issuer } => issuer,
        };
        let text = RemoteLocation::discovery_url(issuer);
        let invalid = |message: String| FetchError::Invalid {
            url: text.clone(),
            message,
        };
        let url: Uri = text.parse().map_err(|e| invalid(format!("not a URL: {e}")))?;
        let (status, _, body) = self.get(&url, None).await?;
        if status != StatusCode::OK {
            return Err(FetchError::Status { url: text, status });
        }
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let doc: Discovery =
            serde_json::from_slice(&body).map_err(|e| invalid(format!("not an OpenID Provider configuration: {e}")))?;
        if doc.issuer != *issuer {
            return Err(FetchError::IssuerMismatch {
                url: text,
                found: doc.issuer,
                expected: issuer.clone(),
            });
        }
        let jwks: Uri = doc
            .jwks_uri
            .parse()
            .ok()
            .filter(|u: &Uri| u.scheme_str() == Some("https") && u.authority().is_some())
            .ok_or_else(|| invalid(format!("jwks_uri `{}` is not an https:// URL", doc.jwks_uri)))?;
        Ok(jwks)
    }

    /// One fetch of the key set at `url`.
    async fn fetch(&self, url: &Uri, etag: Option<&HeaderValue>, jwks: &Jwks) -> Result<Fetched, FetchError> {
        let (status, headers, body) = self.get(url, etag).await?;
        match status {
            StatusCode::NOT_MODIFIED if etag.is_some() => Ok(Fetched::NotModified { headers }),
            StatusCode::OK => {
                let text = std::str::from_utf8(&body).map_err(|_| FetchError::Invalid {
                    url: url.to_string(),
                    message: "not a JWKS document: not UTF-8".into(),
                })?;
                let parsed = super::parse(text, &jwks.allowed).map_err(|message| FetchError::Invalid {
                    url: url.to_string(),
                    message,
                })?;
                super::log_skipped(self.source, &url.to_string(), &parsed.skipped);
                Ok(Fetched::Keys {
                    keys: parsed.keys,
                    headers,
                })
            }
            status => Err(FetchError::Status {
                url: url.to_string(),
                status,
            }),
        }
    }
}

impl Jwks {
    /// Keeps a fetched key set fresh until `shutdown` completes: fetches at once, then as the
    /// module documentation says. `on_change` runs after each replacement of the set (callers
    /// forget verified tokens there, so a removed key stops working at once). A key set read
    /// from a file returns at once.
    pub async fn refresh(&self, on_change: impl Fn(), shutdown: impl Future<Output = ()>) {
        let Some(remote) = &self.remote else { return };
        tokio::pin!(shutdown);
        let cfg = remote.config();
        let mut url: Option<Uri> = None;
        let mut etag: Option<HeaderValue> = None;
        let mut retry = FIRST_RETRY.min(cfg.refresh_min);
        loop {
            let attempt = async {
                let at = match &url {
                    Some(u) => u.clone(),
                    None => remote.jwks_url().await?,
                };
                let fetched = remote.fetch(&at, etag.as_ref(), self).await;
                Ok::<_, FetchError>((at, fetched?))
            };
            let wait = match attempt.await {
                Ok((at, Fetched::Keys { keys, headers })) => {
                    let n = keys.len();
                    let first = self.keys.load().is_empty();
                    self.keys.store(Arc::new(keys));
                    on_change();
                    remote.metrics.fetch("ok");
                    remote.metrics.succeeded(Some(n));
                    etag = headers.get(ETAG).cloned();
                    let wait = freshness::refresh_interval(&headers, cfg.refresh_min, cfg.refresh_max);
                    info!(source = remote.source, url = %at, keys = n, first, refresh_in = ?wait, "JWKS fetched");
                    url = Some(at);
                    retry = FIRST_RETRY.min(cfg.refresh_min);
                    wait
                }
                Ok((at, Fetched::NotModified { headers })) => {
                    remote.metrics.fetch("not_modified");
                    remote.metrics.succeeded(None);
                    let wait = freshness::refresh_interval(&headers, cfg.refresh_min, cfg.refresh_max);
                    debug!(source = remote.source, url = %at, refresh_in = ?wait, "JWKS unchanged");
                    url = Some(at);
                    retry = FIRST_RETRY.min(cfg.refresh_min);
                    wait
                }
                Err(e) => {
                    remote.metrics.fetch(e.class());
                    let loaded = !self.keys.load().is_empty();
                    if loaded {
                        warn!(source = remote.source, error = %e, retry_in = ?retry, "JWKS fetch failed, keeping the last good key set");
                    } else {
                        error!(source = remote.source, error = %e, retry_in = ?retry, "JWKS fetch failed and no key set was ever loaded: every token is refused");
                    }
                    // Discover again: the IdP may have moved its keys.
                    if matches!(cfg.location, RemoteLocation::Discovery { .. }) {
                        url = None;
                        etag = None;
                    }
                    let wait = retry;
                    retry = (retry * 2).min(cfg.refresh_min).max(FIRST_RETRY.min(cfg.refresh_min));
                    wait
                }
            };
            let fetched_at = tokio::time::Instant::now();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = remote.wanted.notified() => {
                    // An unknown `kid`: refetch, but no sooner than `refresh_min` after the
                    // last fetch, and never later than planned.
                    let at = fetched_at + cfg.refresh_min.min(wait);
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = &mut shutdown => return,
                    }
                    debug!(source = remote.source, "JWKS refetch for an unknown kid");
                }
                () = &mut shutdown => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::super::JwtError;
    use super::*;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// An ES256 key: its JWK text and a token it signed.
    fn key(kid: &str) -> (serde_json::Value, String) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65])});
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        let claims = serde_json::json!({"sub": "alice", "exp": super::super::unix_now() + 600});
        let token = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ec_der(&kp.serialize_der())).unwrap();
        (jwk, token)
    }

    fn fetched() -> Jwks {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let cfg = RemoteJwksConfig {
            location: RemoteLocation::Url("https://idp.test/keys".parse().unwrap()),
            ca: "ca.pem".into(),
            refresh_min: Duration::from_secs(30),
            refresh_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
        };
        Jwks::remote(cfg, tls, "test", vec![Algorithm::ES256], None, None, 60)
    }

    /// Whether a refetch was asked for since the last look (consumes the one permit).
    async fn asked(jwks: &Jwks) -> bool {
        let remote = jwks.remote.as_ref().unwrap();
        tokio::time::timeout(Duration::from_millis(20), remote.wanted.notified())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn before_the_first_fetch_every_token_is_refused_without_asking_for_a_refetch() {
        let jwks = fetched();
        let (_, token) = key("k1");
        assert!(!jwks.is_loaded());
        assert_eq!(
            jwks.verify::<serde_json::Value>(&token).unwrap_err(),
            JwtError::KeysUnavailable
        );
        assert!(
            !asked(&jwks).await,
            "the retry backoff, not tokens, drives the first fetch"
        );
    }

    #[tokio::test]
    async fn an_unknown_kid_asks_for_one_refetch_however_many_tokens_name_it() {
        let jwks = fetched();
        let (jwk1, token1) = key("k1");
        let (_, token2) = key("k2");
        let (_, forged1) = key("k1"); // the known kid, another key
        let set = serde_json::json!({"keys": [jwk1]}).to_string();
        jwks.keys
            .store(Arc::new(super::super::parse(&set, &jwks.allowed).unwrap().keys));
        assert!(jwks.is_loaded());

        assert!(jwks.verify::<serde_json::Value>(&token1).is_ok());
        assert_eq!(
            jwks.verify::<serde_json::Value>(&forged1).unwrap_err(),
            JwtError::BadSignature
        );
        assert!(
            !asked(&jwks).await,
            "a known kid with a bad signature is not a rotation"
        );

        for _ in 0..100 {
            assert_eq!(
                jwks.verify::<serde_json::Value>(&token2).unwrap_err(),
                JwtError::BadSignature
            );
        }
        assert!(asked(&jwks).await, "an unknown kid asks for a refetch");
        assert!(!asked(&jwks).await, "a hundred such tokens are one request");
    }
}
