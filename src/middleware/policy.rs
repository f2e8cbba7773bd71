//! Evaluates the live policy against the connection's identity and the normalised, routed
//! request. No rule, no entry: a request is forwarded only on an explicit allow.

use std::sync::Arc;

use http::Request;
use tracing::info;

use super::check::Check;
use crate::ctx::RequestCtx;
use crate::error::ProxyError;
use crate::middleware::metrics::RequestMetrics;
use crate::policy::PolicyStore;
use crate::policy::RequestFacts;
use crate::upstream::RouteTable;

#[derive(Clone)]
pub struct PolicyCheck {
    store: Arc<PolicyStore>,
    routes: Arc<RouteTable>,
    metrics: RequestMetrics,
}

impl PolicyCheck {
    pub fn new(store: Arc<PolicyStore>, routes: Arc<RouteTable>, metrics: RequestMetrics) -> Self {
        Self { store, routes, metrics }
    }
}

impl Check for PolicyCheck {
    /// `Ok` to forward, `Err` to reject; pure apart from logging and counting.
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), ProxyError> {
        // Fail closed: a request without a verified identity or a route is never judged.
        let ctx = RequestCtx::of(req)?;
        let canonical = ctx.canonical()?;
        let Some(route) = ctx.route.get().copied() else {
            return Err(ProxyError::Internal("request reached policy without a route"));
        };
        let conn = ctx.peer();
        let policy = self.store.load();
        let decision = policy.evaluate(&RequestFacts {
            peer: &conn.identity,
            method: req.method(),
            path: canonical.judged_path(req.uri().path()),
            host: Some(canonical.authority.host()),
            route: self.routes.get(route).map(|r| r.name.as_str()),
            headers: req.headers(),
            source_ip: conn.peer_addr.ip(),
            posture: ctx.device.get(),
            user: ctx.user.get().map(|u| &**u),
        });
        if let Some(failed) = decision.posture_failed {
            crate::telemetry::metrics::posture_denied(failed);
            let _ = ctx.posture_failed.set(failed);
            info!(rule = decision.rule, failed, "device failed a posture requirement");
        }
        let _ = ctx
            .verdict
            .set((decision.rule.map(str::to_string), decision.reason.as_str()));
        if let Some(s) = &decision.shadow {
            let _ = ctx.shadow.set((s.rule.to_string(), s.reason()));
        }
        let metrics = &self.metrics;
        metrics.decision(decision.allowed);
        if let Some(shadow) = &decision.shadow {
            metrics.shadow(shadow.would_allow);
            info!(
                rule = shadow.rule,
                reason = shadow.reason(),
                enforced = decision.reason.as_str(),
                "shadow rule would change this decision"
            );
        }
        if decision.allowed {
            // The allowing rule's own budget (`rate_limit` on the rule), per identity.
            if let Some(i) = decision.rule_index {
                policy
                    .check_rule_limit(i, &conn.rate_key)
                    .map_err(ProxyError::rate_limited)?;
            }
            return Ok(());
        }
        Err(ProxyError::Denied {
            rule: decision.rule.map(str::to_string),
            reason: decision.reason.as_str(),
        })
    }
}
