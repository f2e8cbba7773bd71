//! The per-request tower stack, one module per layer (`XLayer` + `X<S>`), outermost first:
//!
//! trace + request id ─► metrics ─► sanitize ─► policy ─► forward
//!
//! Inner layers reject with `Err(ProxyError)`; `trace` turns errors into responses through
//! [`ProxyError::into_response`](crate::error::ProxyError::into_response), the only place that
//! does. Metrics sit outside the checks so they count every rejection.

pub mod metrics;
pub mod policy;
pub mod sanitize;
pub mod trace;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderValue, Response};
use tower::ServiceBuilder;

use crate::error::{ProxyBody, ProxyError};
use crate::policy::Policy;
use crate::telemetry::metrics::RequestMetrics;
use crate::upstream::Forward;

/// The future every inner layer returns. Boxed: one allocation per request per layer is cheaper
/// than the type machinery of hand-written futures at this size (STYLE.md).
pub type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send>>;

/// The request's id, set by [`trace`], returned to the client and passed upstream.
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// The whole stack, built once per (re)load and cloned per connection.
pub type Stack = trace::Trace<metrics::Metrics<sanitize::Sanitize<policy::PolicyCheck<Forward>>>>;

pub fn stack(policy: Arc<Policy>, forward: Forward, metrics: RequestMetrics) -> Stack {
    ServiceBuilder::new()
        .layer(trace::TraceLayer::new())
        .layer(metrics::MetricsLayer::new(metrics.clone()))
        .layer(sanitize::SanitizeLayer)
        .layer(policy::PolicyCheckLayer::new(policy, metrics))
        .service(forward)
}
