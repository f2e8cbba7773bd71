//! The cluster-wide rate limit (`[cluster_rate_limit]`), after the per-replica one and before
//! posture. A request that finds a leased token passes synchronously; only one whose local
//! lease is empty waits (boxed) for a round trip to Redis. Without `[cluster_rate_limit]` this
//! layer is an `Option` check and the inner future as it is.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Request, Response};
use tower::{Layer, Service};

use super::BoxFuture;
use crate::body::ProxyBody;
use crate::cluster_limit::{ClusterLimiter, Step};
use crate::ctx::RequestCtx;
use crate::error::ProxyError;

#[derive(Clone)]
pub(crate) struct ClusterLimitLayer {
    limiter: Option<Arc<ClusterLimiter>>,
}

impl ClusterLimitLayer {
    pub(crate) fn new(limiter: Option<Arc<ClusterLimiter>>) -> Self {
        Self { limiter }
    }
}

impl<S> Layer<S> for ClusterLimitLayer {
    type Service = ClusterLimit<S>;
    fn layer(&self, inner: S) -> ClusterLimit<S> {
        ClusterLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ClusterLimit<S> {
    inner: S,
    limiter: Option<Arc<ClusterLimiter>>,
}

impl<B, S> Service<Request<B>> for ClusterLimit<S>
where
    B: Send + 'static,
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    /// The inner future as it is, boxed only when a request waits for a round trip.
    type Future = Either<S::Future, BoxFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(limiter) = &self.limiter else {
            return Either::Left(self.inner.call(req));
        };
        let step = match RequestCtx::of(&req) {
            Ok(ctx) => limiter.check(ctx.route.get().copied(), &ctx.peer().rate_key),
            Err(e) => Step::Refuse(e),
        };
        match step {
            Step::Pass => Either::Left(self.inner.call(req)),
            Step::Refuse(e) => Either::Right(Box::pin(std::future::ready(Err(e)))),
            Step::Wait(acquire) => {
                // The service that was polled ready goes with this request (as in posture).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Either::Right(Box::pin(async move {
                    acquire.run().await?;
                    inner.call(req).await
                }))
            }
        }
    }
}
