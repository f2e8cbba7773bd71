//! Evaluates the live policy against the connection's identity and the normalised, routed
//! request. No rule, no entry: a request is forwarded only on an explicit allow.

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;
use tracing::info;

use super::check::Check;
use super::route::RouteMatch;
use crate::error::ProxyError;
use crate::policy::RequestFacts;
use crate::reload::PolicyStore;
use crate::server::ConnCtx;
use crate::middleware::metrics::RequestMetrics;
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
    fn check(&self, req: &mut Request<Incoming>) -> Result<(), ProxyError> {
        let ext = req.extensions();
        // Fail closed: a request without a verified identity is never judged "allowed".
        let (Some(conn), Some(route), Some(canonical)) = (
            ext.get::<Arc<ConnCtx>>(),
            ext.get::<RouteMatch>(),
            ext.get::<crate::canonical::Canonical>(),
        ) else {
            return Err(ProxyError::Internal(
                "request reached policy without connection context or route",
            ));
        };
        let policy = self.store.load();
        let decision = policy.evaluate(&RequestFacts {
            peer: &conn.identity,
            method: req.method(),
            path: canonical.judged_path(req.uri().path()),
            host: Some(canonical.authority.host()),
            route: self.routes.get(route.index).map(|r| r.name.as_str()),
            headers: req.headers(),
            source_ip: conn.peer_addr.ip(),
            posture: ext.get::<crate::posture::PostureFacts>().map(|p| &p.0),
            user: ext.get::<Arc<crate::user::User>>().map(|u| &**u),
        });
        if let Some(failed) = decision.posture_failed {
            crate::telemetry::metrics::posture_denied(failed);
            if let Some(note) = ext.get::<Arc<crate::audit::record::Note>>() {
                let _ = note.posture_failed.set(failed);
            }
            info!(rule = decision.rule, failed, "device failed a posture requirement");
        }
        if let Some(note) = ext.get::<Arc<crate::audit::record::Note>>() {
            let _ = note
                .verdict
                .set((decision.rule.map(str::to_string), decision.reason.as_str()));
            if let Some(s) = &decision.shadow {
                let _ = note.shadow.set((s.rule.to_string(), s.reason()));
            }
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
