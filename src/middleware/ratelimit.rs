//! Rejects with 429 (and `Retry-After`) a request over its identity's budget. Runs after
//! routing (limits can be per route) and before policy and posture, which may cost more.

use std::sync::Arc;

use http::Request;

use super::check::Check;
use crate::ctx::RequestCtx;
use crate::error::ProxyError;
use crate::ratelimit::Limits;

#[derive(Clone)]
pub struct RateLimit {
    limits: Arc<Limits>,
}

impl RateLimit {
    pub fn new(limits: Arc<Limits>) -> Self {
        Self { limits }
    }
}

impl Check for RateLimit {
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), ProxyError> {
        if !self.limits.enabled() {
            return Ok(());
        }
        let ctx = RequestCtx::of(req)?;
        let conn = ctx.peer();
        let route = ctx.route.get().copied();
        let penalized = conn
            .anomaly
            .as_ref()
            .is_some_and(|s| s.penalized(super::anomaly::now_ms()));
        self.limits
            .check(route, &conn.rate_key, penalized)
            .map_err(ProxyError::rate_limited)
    }
}
