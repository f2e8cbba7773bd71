//! Looks up the device's posture before the policy judges the request (the policy's `posture`
//! requirements read it). Skipped when no provider is configured or the live policy states no
//! posture requirement; a lookup that cannot answer is passed on as "unavailable" and fails
//! every requirement (fail closed). Runs after the rate limit: a lookup may cost a network call.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{HeaderName, Request, Response};
use tower::{Layer, Service};

use super::BoxFuture;
use crate::body::ProxyBody;
use crate::ctx::RequestCtx;
use crate::error::ProxyError;
use crate::policy::PolicyStore;
use crate::posture::{DeviceIdSource, Lookup, PostureProvider, PostureResult, Query, Unavailable};
use crate::telemetry::metrics::PostureMetrics;

/// The configured provider and how to name devices.
#[derive(Clone)]
pub(crate) struct PostureSetup {
    pub provider: Arc<dyn PostureProvider>,
    pub device_id: DeviceIdSource,
    /// A header that carries posture to ztgate only (the assertion): removed before forwarding.
    pub consumed_header: Option<HeaderName>,
}

#[derive(Clone)]
pub(crate) struct PostureLayer {
    setup: Option<PostureSetup>,
    policy: Arc<PolicyStore>,
    metrics: Option<PostureMetrics>,
}

impl PostureLayer {
    pub(crate) fn new(setup: Option<PostureSetup>, policy: Arc<PolicyStore>) -> Self {
        let metrics = setup.as_ref().map(|s| PostureMetrics::register(s.provider.name()));
        Self { setup, policy, metrics }
    }
}

impl<S> Layer<S> for PostureLayer {
    type Service = Posture<S>;
    fn layer(&self, inner: S) -> Posture<S> {
        Posture {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Posture<S> {
    inner: S,
    layer: PostureLayer,
}

fn record<B>(req: &mut Request<B>, result: PostureResult, provider: &'static str, m: Option<&PostureMetrics>) {
    let unavailable = result.as_ref().err().map(|u| u.as_str());
    if let Some(m) = m {
        m.check(unavailable);
    }
    if let Ok(ctx) = RequestCtx::of(req) {
        let _ = ctx.posture.set((provider, unavailable.unwrap_or("found")));
        let _ = ctx.device.set(result);
    }
}

impl<B, S> Service<Request<B>> for Posture<S>
where
    B: Send + 'static,
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    /// The inner future as it is, boxed only when a lookup has to wait for the provider.
    type Future = Either<S::Future, BoxFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(setup) = &self.layer.setup else {
            return Either::Left(self.inner.call(req));
        };
        let lookup = if self.layer.policy.load().uses_posture() {
            let conn = match RequestCtx::of(&req) {
                Ok(ctx) => ctx.peer(),
                Err(e) => return Either::Right(Box::pin(std::future::ready(Err(e)))),
            };
            Some(match setup.device_id.device_id(&conn.identity) {
                Some(device_id) => setup.provider.lookup(&Query {
                    device_id,
                    fingerprint: &conn.identity.fingerprint_sha256,
                    headers: req.headers(),
                }),
                None => Lookup::Ready(Err(Unavailable::NoDeviceId)),
            })
        } else {
            None
        };
        if let Some(h) = &setup.consumed_header {
            req.headers_mut().remove(h);
        }
        let provider = setup.provider.name();
        match lookup {
            None => Either::Left(self.inner.call(req)),
            Some(Lookup::Ready(result)) => {
                record(&mut req, result, provider, self.layer.metrics.as_ref());
                Either::Left(self.inner.call(req))
            }
            Some(Lookup::Pending(fut)) => {
                // The service that was polled ready goes with this request; a clone takes its
                // place for the next one (tower's usual pattern).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let metrics = self.layer.metrics.clone();
                Either::Right(Box::pin(async move {
                    let result = fut.await;
                    record(&mut req, result, provider, metrics.as_ref());
                    inner.call(req).await
                }))
            }
        }
    }
}
