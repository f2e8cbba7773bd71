//! Admin listener (plain HTTP, bind it to loopback or a private interface): `/metrics`,
//! `/healthz` (the process runs), `/readyz` (listener bound, config loaded, not draining).

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

/// Shared readiness, flipped by the app: ready after start-up, not ready while draining.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
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
