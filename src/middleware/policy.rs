//! Evaluates the access policy against the connection's identity and the (normalised) request.
//! No rule, no entry: a request is forwarded only on an explicit allow.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Layer, Service};
use tracing::info;

use super::BoxFuture;
use crate::error::{ProxyBody, ProxyError};
use crate::policy::{Policy, RequestFacts};
use crate::server::ConnCtx;
use crate::telemetry::metrics::RequestMetrics;

#[derive(Clone)]
pub struct PolicyCheckLayer {
    policy: Arc<Policy>,
    metrics: RequestMetrics,
}

impl PolicyCheckLayer {
    pub fn new(policy: Arc<Policy>, metrics: RequestMetrics) -> Self {
        Self { policy, metrics }
    }
}

impl<S> Layer<S> for PolicyCheckLayer {
    type Service = PolicyCheck<S>;
    fn layer(&self, inner: S) -> PolicyCheck<S> {
        PolicyCheck {
            inner,
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct PolicyCheck<S> {
    inner: S,
    policy: Arc<Policy>,
    metrics: RequestMetrics,
}

impl<S> PolicyCheck<S> {
    /// `Ok` to forward, `Err` to reject; pure apart from logging and counting.
    fn authorize(&self, req: &Request<Incoming>) -> Result<(), ProxyError> {
        // Fail closed: a request without a verified identity is never judged "allowed".
        let Some(conn) = req.extensions().get::<Arc<ConnCtx>>() else {
            return Err(ProxyError::Internal(
                "request reached policy without connection context",
            ));
        };
        let decision = self.policy.evaluate(&RequestFacts {
            peer: &conn.identity,
            method: req.method(),
            path: req.uri().path(),
        });
        self.metrics.decision(decision.allowed);
        if decision.allowed {
            return Ok(());
        }
        info!(
            rule = decision.rule.unwrap_or("-"),
            reason = decision.reason,
            "denied by policy"
        );
        Err(ProxyError::Denied {
            rule: decision.rule.map(str::to_string),
            reason: decision.reason,
        })
    }
}

impl<S> Service<Request<Incoming>> for PolicyCheck<S>
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

    fn call(&mut self, req: Request<Incoming>) -> BoxFuture {
        match self.authorize(&req) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}
