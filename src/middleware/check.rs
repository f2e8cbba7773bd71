//! The shape every synchronous check shares, after tower-http's `authorize(req) -> Result`: a
//! [`Check`] looks at (and may adjust) the request; `Ok` forwards it, `Err` answers with that
//! error. Sanitize, route and policy are checks; the layer plumbing lives here once instead of
//! three times.

use std::future::Ready;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use futures_util::future::Either;

use crate::body::ProxyBody;
use crate::error::ProxyError;

pub trait Check: Clone + Send + Sync + 'static {
    /// `Ok` to pass the request on, `Err` to answer with that error. Any body type: a check
    /// looks at the head and the request's context only.
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), ProxyError>;
}

/// Checks run one after the other as one: `(a, b)` is `a`, then `b` if `a` passed. The stack's
/// consecutive synchronous checks are one such chain in one layer, so the request moves through
/// one service instead of one per check.
impl<A: Check, B: Check> Check for (A, B) {
    fn check<Body>(&self, req: &mut Request<Body>) -> Result<(), ProxyError> {
        self.0.check(req)?;
        self.1.check(req)
    }
}

#[derive(Clone)]
pub(crate) struct CheckLayer<C>(pub C);

impl<C: Clone, S> Layer<S> for CheckLayer<C> {
    type Service = Checked<C, S>;
    fn layer(&self, inner: S) -> Checked<C, S> {
        Checked {
            check: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Checked<C, S> {
    check: C,
    inner: S,
}

/// A check's answer: its refusal at once, or the inner service's own future, unboxed (the checks
/// nest into one future type, with no allocation per layer).
pub(crate) type CheckFuture<F> = Either<Ready<Result<Response<ProxyBody>, ProxyError>>, F>;

impl<B, C, S> Service<Request<B>> for Checked<C, S>
where
    C: Check,
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = CheckFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.check.check(&mut req) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(e) => Either::Left(std::future::ready(Err(e))),
        }
    }
}
