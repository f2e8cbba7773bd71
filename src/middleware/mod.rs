//! The per-request tower stack, one module per layer (`XLayer` + `X<S>`), outermost first:
//!
//! observe (request id, span, anomaly, audit, metrics, log) ─► trusted hop ─► sanitize ─► route ─► user
//! ─► rate limit ─► cluster rate limit (optional, Redis) ─► posture ─► policy ─► forward
//!
//! Trusted hop, sanitize, route, user and rate limit are synchronous checks (`check::Check`),
//! chained in one layer. Inner layers reject with `Err(ProxyError)`; `observe` records every outcome once and turns
//! errors into responses through
//! [`ProxyError::to_response`](crate::error::ProxyError::to_response), the only place that
//! does. It sits outside the checks, so it sees every rejection.
//!
//! Allocation: `observe` boxes the request's one future; the checks return their inner future
//! unboxed (`check::CheckFuture`), posture boxes only a lookup that has to wait, the cluster rate
//! limit only a request that waits for Redis, and `forward`
//! boxes its own.

pub(crate) mod anomaly;
pub(crate) mod audit;
pub(crate) mod check;
pub(crate) mod cluster_limit;
pub(crate) mod forward;
pub(crate) mod hop;
pub(crate) mod metrics;
pub(crate) mod observe;
pub(crate) mod policy;
pub(crate) mod posture;
pub(crate) mod ratelimit;
pub(crate) mod route;
pub(crate) mod sanitize;
pub(crate) mod trace;
pub(crate) mod user;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Response;
use tower::ServiceBuilder;

use crate::audit::Auditor;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::middleware::metrics::RequestMetrics;
use crate::policy::PolicyStore;
use crate::upstream::RouteTable;
use check::{CheckLayer, Checked};
use forward::Forward;

/// A boxed future of the stack's inner result: `forward`'s, and a posture lookup that waits.
pub(crate) type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

/// The whole stack, built once per (re)load and cloned per connection.
pub(crate) type Stack = observe::Observe<
    Checked<Checks, cluster_limit::ClusterLimit<posture::Posture<Checked<policy::PolicyCheck, Forward>>>>,
>;

/// The synchronous checks before posture, in order, as one chain (`check::Check` for pairs).
type Checks = (
    hop::TrustedHop,
    (
        sanitize::Sanitize,
        (route::Route, (user::UserCheck, ratelimit::RateLimit)),
    ),
);

/// What the stack is built from; everything is shared (`Arc`) across connections.
pub(crate) struct Parts {
    pub policy: Arc<PolicyStore>,
    pub routes: Arc<RouteTable>,
    pub forward: Forward,
    pub metrics: RequestMetrics,
    /// Refuse (421) a request whose Host differs from the TLS SNI.
    pub require_sni_match: bool,
    pub auditor: Auditor,
    /// Upstream names by index (for audit records).
    pub upstream_names: Arc<[String]>,
    pub detector: Option<Arc<crate::anomaly::Detector>>,
    pub limits: Arc<crate::ratelimit::Limits>,
    /// `[cluster_rate_limit]`: the same budgets, shared by all replicas through Redis.
    pub cluster_limit: Option<Arc<crate::cluster_limit::ClusterLimiter>>,
    pub posture: Option<posture::PostureSetup>,
    pub user_auth: Option<Arc<crate::user::UserAuth>>,
    pub trusted_hop: Option<crate::identity::TrustedHopConfig>,
    /// `[headers]`: client fields removed before judging.
    pub headers: Arc<crate::headers::HeadersConfig>,
    /// The live TLS state (the trusted hop verifies forwarded chains with its verifier).
    pub tls: Arc<arc_swap::ArcSwap<crate::tls::ServerTls>>,
}

pub(crate) fn stack(p: Parts) -> Stack {
    ServiceBuilder::new()
        .layer(observe::ObserveLayer::new(
            p.metrics.clone(),
            audit::AuditSetup::new(p.auditor, p.routes.clone(), p.upstream_names),
            p.detector,
        ))
        .layer(CheckLayer((
            hop::TrustedHop::new(p.trusted_hop, p.tls),
            (
                sanitize::Sanitize::new(p.headers),
                (
                    route::Route::new(p.routes.clone(), p.require_sni_match),
                    (
                        user::UserCheck::new(p.user_auth, p.routes.clone()),
                        ratelimit::RateLimit::new(p.limits),
                    ),
                ),
            ),
        )))
        .layer(cluster_limit::ClusterLimitLayer::new(p.cluster_limit))
        .layer(posture::PostureLayer::new(p.posture, p.policy.clone()))
        .layer(CheckLayer(policy::PolicyCheck::new(p.policy, p.routes, p.metrics)))
        .service(p.forward)
}

#[cfg(test)]
mod tests;
