//! Counts every response by status class and records its latency. Sits outside the checks, so
//! rejections are counted with the status the client sees.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Layer, Service};

use super::BoxFuture;
use crate::audit::record::Note;
use crate::error::{ProxyBody, ProxyError};
use crate::telemetry::metrics::{Outcome, RequestMetrics};

#[derive(Clone)]
pub struct MetricsLayer {
    metrics: RequestMetrics,
}

impl MetricsLayer {
    pub fn new(metrics: RequestMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;
    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Metrics<S> {
    inner: S,
    metrics: RequestMetrics,
}

impl<S> Service<Request<Incoming>> for Metrics<S>
where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> BoxFuture {
        let start = Instant::now();
        let metrics = self.metrics.clone();
        // Inner layers record what they learn (route, verdict) here; audit reads it too.
        let note = Arc::new(Note::default());
        req.extensions_mut().insert(note.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let (status, outcome) = match &result {
                Ok(resp) => (resp.status(), Outcome::Allow),
                Err(e @ (ProxyError::Denied { .. } | ProxyError::Unauthenticated { .. })) => {
                    (e.status(), Outcome::Deny)
                }
                Err(e @ ProxyError::RateLimited { .. }) => (e.status(), Outcome::RateLimited),
                Err(e) => {
                    metrics.upstream_error(e);
                    (e.status(), Outcome::Error)
                }
            };
            metrics.response(
                note.route.get().copied(),
                outcome,
                status,
                start.elapsed().as_secs_f64(),
            );
            result
        })
    }
}
