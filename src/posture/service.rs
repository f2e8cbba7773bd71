//! HTTP posture service provider: ztgate asks `GET <url with {device}>` for a device's posture
//! (JSON, the same record as an inventory entry; 404 = unknown device). Answers are cached for
//! `cache_ttl`; concurrent lookups of one device share one request; each request is bounded by
//! `timeout`. When the service is down, slow or answers garbage, a cached answer younger than
//! `cache_ttl + stale_if_error` is used, else the lookup fails and every posture requirement with
//! it (fail closed).
//!
//! Transport: `http://`, or `https://` verified against `ca`, optionally presenting ztgate's own
//! certificate (`client_cert`/`client_key`, mTLS, built like an `https://` upstream's TLS client
//! with [`crate::tls::upstream_client_config`]). HTTP/2 is offered by ALPN next to HTTP/1.1, or
//! forced with `protocol` as for upstreams. A failed exchange (refused certificate, reset,
//! refused connection) is logged once with the service's address and the whole error chain
//! (the TLS alert, the OS error), and the lookup answers `service-down`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::OnceCell;
use tracing::warn;

use super::transport::{LastError, Recording};
use super::{DevicePosture, Lookup, PostureError, PostureProvider, PostureResult, Query, RawPosture, Unavailable};
use crate::telemetry::{error_chain, metrics};

/// Largest posture answer read; a record is a few hundred bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// `http(s)://host:port/path/{device}`: `{device}` is replaced by the percent-encoded id.
    pub url: String,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    pub stale_if_error: Duration,
    pub max_entries: usize,
    /// CA bundle that verifies an `https://` service.
    pub ca: Option<PathBuf>,
    /// ztgate's own certificate chain and key (PEM files), presented to an `https://` service that
    /// asks for a client certificate: the same shape as an upstream's `client_cert`/`client_key`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Which HTTP version ztgate speaks to the service.
    pub protocol: ServiceProtocol,
}

/// `protocol` of the posture service (`[posture] protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceProtocol {
    /// The default: `https://` offers `h2` and `http/1.1` by ALPN (RFC 7301) and speaks what the
    /// service picks; `http://` speaks HTTP/1.1.
    Auto,
    /// HTTP/1.1 only (ALPN offers `http/1.1` alone).
    Http1,
    /// HTTP/2 only: ALPN `h2` for `https://`, prior knowledge (RFC 9113 §3.3) for `http://`.
    Http2,
}

enum Http {
    Plain(Client<Recording<HttpConnector>, Empty<Bytes>>),
    Tls(Client<Recording<HttpsConnector<HttpConnector>>, Empty<Bytes>>),
}

struct Cached {
    /// A posture, or `DeviceUnknown` (an answer too); never a service failure.
    answer: PostureResult,
    at: Instant,
}

struct Inner {
    cfg: ServiceConfig,
    /// `scheme://host:port` of `url`: what log lines name (never a device id).
    service: String,
    /// The last I/O error of a connection to the service ([`super::transport`]).
    last_error: LastError,
    http: Http,
    cache: DashMap<String, Cached>,
    inflight: DashMap<String, Arc<OnceCell<PostureResult>>>,
    metrics: metrics::PostureMetrics,
}

pub struct Service {
    inner: Arc<Inner>,
}

impl Service {
    /// Builds the client. The CA, certificate and key files are read here, so a missing or
    /// broken one stops `run` and `check` naming the file.
    ///
    /// # Errors
    /// [`PostureError::Tls`] when `ca`, `client_cert` or `client_key` cannot be loaded or the
    /// certificate and key do not belong together.
    pub fn new(cfg: ServiceConfig) -> Result<Self, PostureError> {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        conn.set_connect_timeout(Some(cfg.timeout));
        conn.enforce_http(false);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_only(cfg.protocol == ServiceProtocol::Http2);
        let last_error = LastError::default();
        let http = match &cfg.ca {
            Some(ca) => {
                let tls = crate::tls::upstream_client_config(ca, cfg.client_cert.as_ref())?;
                let https = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_only();
                // ALPN offers exactly what `protocol` allows; hyper's client speaks what was
                // negotiated.
                let https = match cfg.protocol {
                    ServiceProtocol::Auto => https.enable_all_versions().wrap_connector(conn),
                    ServiceProtocol::Http1 => https.enable_http1().wrap_connector(conn),
                    ServiceProtocol::Http2 => https.enable_http2().wrap_connector(conn),
                };
                Http::Tls(builder.build(Recording {
                    inner: https,
                    last: last_error.clone(),
                }))
            }
            None => Http::Plain(builder.build(Recording {
                inner: conn,
                last: last_error.clone(),
            })),
        };
        let service = cfg
            .url
            .replace("{device}", "x")
            .parse::<Uri>()
            .ok()
            .and_then(|u| Some(format!("{}://{}", u.scheme_str()?, u.authority()?)))
            .unwrap_or_else(|| cfg.url.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                service,
                last_error,
                http,
                cache: DashMap::new(),
                inflight: DashMap::new(),
                metrics: metrics::PostureMetrics::register("service"),
            }),
        })
    }
}

impl PostureProvider for Service {
    fn name(&self) -> &'static str {
        "service"
    }

    fn lookup(&self, q: &Query<'_>) -> Lookup {
        let inner = &self.inner;
        if let Some(c) = inner.cache.get(q.device_id)
            && c.at.elapsed() < inner.cfg.cache_ttl
        {
            inner.metrics.cache("hit");
            return Lookup::Ready(c.answer.clone());
        }
        inner.metrics.cache("miss");
        let inner = inner.clone();
        let id = q.device_id.to_string();
        Lookup::Pending(Box::pin(async move { inner.coalesced(id).await }))
    }
}

impl Inner {
    /// One request per device at a time: later callers wait for the first one's answer. If the
    /// first caller goes away (its client disconnected), a waiting one takes over the lookup.
    async fn coalesced(self: Arc<Self>, id: String) -> PostureResult {
        let cell = self
            .inflight
            .entry(id.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let answer = cell.get_or_init(|| self.refresh(&id)).await.clone();
        self.inflight.remove_if(&id, |_, c| Arc::ptr_eq(c, &cell));
        answer
    }

    async fn refresh(&self, id: &str) -> PostureResult {
        let started = Instant::now();
        let fetched = self.fetch(id).await;
        self.metrics.latency(started.elapsed());
        match fetched {
            Ok(answer) => {
                self.store(id, answer.clone());
                answer
            }
            Err(u) => {
                let window = self.cfg.cache_ttl + self.cfg.stale_if_error;
                match self.cache.get(id) {
                    Some(c) if c.at.elapsed() < window => {
                        self.metrics.cache("stale");
                        warn!(reason = u.as_str(), "posture service failed; using the cached answer");
                        c.answer.clone()
                    }
                    _ => Err(u),
                }
            }
        }
    }

    fn store(&self, id: &str, answer: PostureResult) {
        if self.cache.len() >= self.cfg.max_entries {
            // Bounded memory: forget what is past any use first, and everything if that is not
            // enough (the next lookups refetch).
            let window = self.cfg.cache_ttl + self.cfg.stale_if_error;
            self.cache.retain(|_, c| c.at.elapsed() < window);
            if self.cache.len() >= self.cfg.max_entries {
                self.cache.clear();
            }
        }
        self.cache.insert(
            id.to_string(),
            Cached {
                answer,
                at: Instant::now(),
            },
        );
    }

    /// `Ok(answer)` when the service answered (a posture, or unknown); `Err` when it could not.
    async fn fetch(&self, id: &str) -> Result<PostureResult, Unavailable> {
        let uri: Uri = self
            .cfg
            .url
            .replace("{device}", &percent_encode(id))
            .parse()
            .map_err(|_| Unavailable::ServiceDown)?;
        let req = Request::get(uri)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|_| Unavailable::ServiceDown)?;
        let exchange = async {
            let resp = match &self.http {
                Http::Plain(c) => c.request(req).await,
                Http::Tls(c) => c.request(req).await,
            }
            .map_err(|e| {
                // hyper's own text ("client error (Connect)") hides the cause: the chain names
                // the OS error or a refused handshake, and the connection's own last error the
                // TLS alert that came after it (a refused client certificate, TLS 1.3).
                let mut error = error_chain(&e);
                if let Some(io) = self.last_error.take(self.cfg.timeout)
                    && !error.contains(&io)
                {
                    error.push_str(": ");
                    error.push_str(&io);
                }
                warn!(service = %self.service, error = %error, "posture service request failed");
                Unavailable::ServiceDown
            })?;
            let status = resp.status();
            let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|_| Unavailable::ServiceGarbage)?
                .to_bytes();
            Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(self.cfg.timeout, exchange)
            .await
            .map_err(|_| Unavailable::ServiceTimeout)??;
        match status {
            StatusCode::OK => parse_answer(&body).map(|p| Ok(Arc::new(p))),
            StatusCode::NOT_FOUND => Ok(Err(Unavailable::DeviceUnknown)),
            s => {
                warn!(service = %self.service, status = s.as_u16(), "posture service answered with an error status");
                Err(Unavailable::ServiceDown)
            }
        }
    }
}

fn parse_answer(body: &[u8]) -> Result<DevicePosture, Unavailable> {
    let raw: RawPosture = serde_json::from_slice(body).map_err(|e| {
        warn!(error = %e, "posture service answer is not a posture record");
        Unavailable::ServiceGarbage
    })?;
    raw.into_posture().map_err(|e| {
        warn!(error = %e, "posture service answer has an invalid value");
        Unavailable::ServiceGarbage
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (a URI SAN has `:` and `/`).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_percent_encoded_in_the_url() {
        assert_eq!(percent_encode("ab09"), "ab09");
        assert_eq!(percent_encode("spiffe://td/ns/a b"), "spiffe%3A%2F%2Ftd%2Fns%2Fa%20b");
    }

    #[test]
    fn error_chains_name_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("received fatal alert: CertificateRequired"));
        assert_eq!(
            error_chain(&e),
            "client error (Connect): received fatal alert: CertificateRequired"
        );
        let io = std::io::Error::from_raw_os_error(111);
        assert_eq!(error_chain(&io), io.to_string());
    }

    #[test]
    fn answers_that_are_not_posture_records_are_garbage() {
        assert_eq!(parse_answer(b"<html>").unwrap_err(), Unavailable::ServiceGarbage);
        assert_eq!(
            parse_answer(br#"{"managd": true}"#).unwrap_err(),
            Unavailable::ServiceGarbage
        );
        assert_eq!(
            parse_answer(br#"{"os_version": "x"}"#).unwrap_err(),
            Unavailable::ServiceGarbage
        );
        let p = parse_answer(br#"{"managed": true, "os": "macOS", "os_version": "14.2"}"#).unwrap();
        assert_eq!(p.managed, Some(true));
        assert_eq!(p.os.as_deref(), Some("macos"));
    }
}
