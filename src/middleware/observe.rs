//! The outermost layer: everything that watches a request rather than judges it. It assigns the
//! request id and opens the span ([`super::trace`]), creates the request's [`RequestCtx`], and
//! when the answer is known records it once: the anomaly detector ([`super::anomaly`]), the audit
//! record ([`super::audit`], which may still turn the answer into 503 under group commit), the
//! request metrics ([`super::metrics`]) and the log line, in that order; then every
//! `ProxyError` becomes its response.
//!
//! One future per request, boxed once here: the checks inside return their inner futures
//! unboxed, so a request costs one allocation for the whole stack rather than one per layer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::{Layer, Service};
use tracing::{Instrument, warn};

use super::audit::AuditSetup;
use super::metrics::RequestMetrics;
use super::trace::{self, IdGen};
use crate::anomaly::Detector;
use crate::body::ProxyBody;
use crate::ctx::{ConnCtx, RequestCtx, RequestId};
use crate::error::ProxyError;

/// What the observing layer records into. Shared by every connection.
pub(crate) struct Observers {
    ids: IdGen,
    metrics: RequestMetrics,
    audit: AuditSetup,
    detector: Option<Arc<Detector>>,
    /// Where the record of a cut request is queued from: the runtime the stack was built on (the
    /// main one, which outlives every per-core worker's), else the dropping thread's. A worker's
    /// runtime that is being dropped would drop such a task unrun.
    runtime: Option<tokio::runtime::Handle>,
}

#[derive(Clone)]
pub(crate) struct ObserveLayer {
    observers: Arc<Observers>,
}

impl ObserveLayer {
    pub(crate) fn new(metrics: RequestMetrics, audit: AuditSetup, detector: Option<Arc<Detector>>) -> Self {
        Self {
            observers: Arc::new(Observers {
                ids: IdGen::default(),
                metrics,
                audit,
                detector,
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            observers: self.observers.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    observers: Arc<Observers>,
}

/// The whole stack's future: one allocation per request.
pub(crate) type ObserveFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

impl<B, S> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = ObserveFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Inner layers are always ready (they hold no capacity); a readiness error could only be
        // a bug, and is reported per request by `call` instead.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut req: Request<B>) -> ObserveFuture {
        let o = &self.observers;
        let id = o.ids.next();
        let span = trace::span(&id, &req);
        // The connection's context, put there by the server, becomes part of the request's.
        let Some(conn) = req.extensions_mut().remove::<Arc<ConnCtx>>() else {
            let err = ProxyError::Internal("request has no connection context");
            warn!(parent: &span, error = %err, "request failed");
            return Box::pin(std::future::ready(Ok(err.to_response(&id))));
        };
        let ctx = Arc::new(RequestCtx::new(RequestId(id.clone()), conn));
        req.extensions_mut().insert(ctx.clone());
        let start = Instant::now();
        let audit = o.audit.begin(&req);
        // A blocking audit log that cannot take records refuses new requests (fail closed),
        // before any check runs.
        let fut = if audit.is_some() && !o.audit.accepting() {
            None
        } else {
            let _guard = span.enter();
            Some(self.inner.call(req))
        };
        // Until the audit record is queued, dropping this future (the client went away) leaves
        // the record to `Unrecorded`.
        let mut pending = Unrecorded {
            observers: o.clone(),
            ctx,
            started: audit,
            since: start,
            queued: false,
        };
        Box::pin(
            async move {
                let o = &pending.observers;
                let result = match fut {
                    Some(fut) => {
                        let result = fut.await;
                        if let Some(detector) = &o.detector {
                            super::anomaly::observe(detector, &o.audit.auditor, &pending.ctx, &result).await;
                        }
                        result
                    }
                    None => Err(ProxyError::AuditUnavailable),
                };
                let result = match &pending.started {
                    Some(started) => {
                        o.audit
                            .finish(started, &pending.ctx, start, result, &mut pending.queued)
                            .await
                    }
                    None => result,
                };
                o.metrics.observe(pending.ctx.route.get().copied(), &result, start);
                Ok(trace::respond(id, result))
            }
            .instrument(span),
        )
    }
}

/// A request's audit record not yet queued. Dropped before it is (the client reset its
/// connection or stream while the request was being served, or the drain deadline cut it), it
/// queues the record itself, as `client-closed` ([`AuditSetup::cut`]) — from a task of its own,
/// since a drop cannot wait for queue space. Without it, a request the upstream may have acted
/// on would leave no record at all.
struct Unrecorded {
    observers: Arc<Observers>,
    ctx: Arc<RequestCtx>,
    /// `None` when no audit log is configured.
    started: Option<super::audit::Started>,
    since: Instant,
    /// Set by [`AuditSetup::finish`] once the record is queued.
    queued: bool,
}

impl Drop for Unrecorded {
    fn drop(&mut self) {
        if self.queued {
            return;
        }
        let Some(started) = self.started.take() else {
            return;
        };
        let runtime = self.observers.runtime.clone();
        let Some(runtime) = runtime.or_else(|| tokio::runtime::Handle::try_current().ok()) else {
            warn!(request_id = %self.ctx.id.as_str(), "audit: the record of a request cut before its answer could not be queued (no runtime)");
            return;
        };
        let (observers, ctx, since) = (self.observers.clone(), self.ctx.clone(), self.since);
        runtime.spawn(async move { observers.audit.cut(&started, &ctx, since).await });
    }
}
