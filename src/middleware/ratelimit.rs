//! Rejects with 429 (and `Retry-After`) a request over its identity's budget. Runs after
//! routing (limits can be per route) and before policy and posture, which may cost more.

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;

use super::check::Check;
use super::route::RouteMatch;
use crate::error::ProxyError;
use crate::ratelimit::Limits;
use crate::server::ConnCtx;

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
    fn check(&self, req: &mut Request<Incoming>) -> Result<(), ProxyError> {
        if !self.limits.enabled() {
            return Ok(());
        }
        let ext = req.extensions();
        let Some(conn) = ext.get::<Arc<ConnCtx>>() else {
            return Err(ProxyError::Internal(
                "request reached the rate limit without connection context",
            ));
        };
        let route = ext.get::<RouteMatch>().map(|m| m.index);
        let penalized = conn
            .anomaly
            .as_ref()
            .is_some_and(|s| s.penalized(super::anomaly::now_ms()));
        self.limits
            .check(route, &conn.rate_key, penalized)
            .map_err(ProxyError::rate_limited)
    }
}
