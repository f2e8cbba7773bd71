//! Admin listener (plain HTTP, bind it to loopback or a private interface): `/metrics`,
//! `/healthz` (the process runs), `/readyz` (listener bound, config loaded, every fetched key set
//! loaded once, not draining).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// Shared readiness, flipped by the app: ready after start-up, not ready while draining, and
/// not ready until every key set fetched from an IdP was loaded once (before that, every token
/// it would verify is refused; after, a failed refresh keeps the last good set and readiness).
#[derive(Clone, Default)]
pub struct Readiness {
    up: Arc<AtomicBool>,
    key_sets: Arc<std::sync::OnceLock<Vec<Arc<crate::jwt::Jwks>>>>,
}

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.up.store(ready, Ordering::Release);
    }

    /// Makes readiness wait for these key sets' first load (set once, at start-up).
    pub fn require_key_sets(&self, key_sets: Vec<Arc<crate::jwt::Jwks>>) {
        let _ = self.key_sets.set(key_sets);
    }

    pub fn get(&self) -> bool {
        self.up.load(Ordering::Acquire)
            && self
                .key_sets
                .get()
                .is_none_or(|sets| sets.iter().all(|k| k.is_loaded()))
    }
}

pub async fn serve(
    listener: TcpListener,
    metrics: PrometheusHandle,
    ready: Readiness,
    auditor: crate::audit::Auditor,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // Histogram buckets are drained by upkeep; without the exporter's own HTTP listener this is
    // ours to run.
    let upkeep = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.run_upkeep();
            }
        })
    };
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        let auditor = auditor.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let metrics = metrics.clone();
                // Not ready while draining, and while a blocking audit log cannot be written.
                let ready = ready.get() && auditor.accepting();
                async move { Ok::<_, Infallible>(route(&req, &metrics, ready)) }
            });
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(error = %e, "admin connection ended");
            }
        });
    }
    upkeep.abort();
}

fn route(req: &Request<Incoming>, metrics: &PrometheusHandle, ready: bool) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut resp = Response::new(Full::new(Bytes::from(metrics.render())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ready => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Why `ztgate healthcheck` failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}: expected http://host:port/path")]
    Url(String),
    #[error("{url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("{url}: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: std::time::Duration },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
}

/// `ztgate healthcheck`: GET `url` on the admin listener (plain HTTP) and succeed on 200. The
/// container image has no shell or curl, so its HEALTHCHECK runs this.
pub async fn probe(url: &str, timeout: std::time::Duration) -> Result<(), ProbeError> {
    let uri: http::Uri = url.parse().map_err(|_| ProbeError::Url(url.to_string()))?;
    let authority = match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) if a.port().is_some() => a.clone(),
        _ => return Err(ProbeError::Url(url.to_string())),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let call = async {
        let tcp = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .map_err(|source| ProbeError::Connect {
                url: url.to_string(),
                source,
            })?;
        let http_err = |source| ProbeError::Http {
            url: url.to_string(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(http_err)?;
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(header::HOST, authority.as_str())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|_| ProbeError::Url(url.to_string()))?;
        let resp = sender.send_request(req).await.map_err(http_err)?;
        match resp.status() {
            StatusCode::OK => Ok(()),
            status => Err(ProbeError::Status {
                url: url.to_string(),
                status,
            }),
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| ProbeError::Timeout {
            url: url.to_string(),
            timeout,
        })?
}
