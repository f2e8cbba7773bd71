//! Counts every response by status class and records its latency. The observing layer
//! ([`super::observe`]) records each request once, outside the checks, so rejections are counted
//! with the status the client sees.

use std::time::Instant;

use http::Response;

use ::metrics::{Counter, Histogram, counter, histogram};

use crate::body::ProxyBody;
use crate::error::{Outcome, ProxyError};
use crate::telemetry::metrics::{
    self, POLICY_DECISIONS_TOTAL, POLICY_SHADOW_TOTAL, REQUEST_DURATION, REQUESTS_TOTAL, UPSTREAM_ERRORS_TOTAL,
};

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Whether a request can end with `outcome` and a status of `class`: the upstream answers
/// (allow) with anything; ztgate's own refusals are 401/403 (deny), 429 (rate limited), and
/// 4xx/5xx (error). Only these combinations are exported before they happen.
pub(crate) fn possible(outcome: Outcome, class: &str) -> bool {
    match outcome {
        Outcome::Allow => true,
        Outcome::Deny | Outcome::RateLimited => class == "4xx",
        Outcome::Error => class == "4xx" || class == "5xx",
    }
}

/// One `ztgate_requests_total` series: a registered handle, or the labels of a combination that
/// should not happen, looked up (and so exported) only if it ever does.
enum Lazy {
    Registered(Counter),
    Unregistered(Vec<::metrics::Label>),
}

impl Lazy {
    fn increment(&self) {
        match self {
            Lazy::Registered(c) => c.increment(1),
            Lazy::Unregistered(labels) => counter!(REQUESTS_TOTAL, labels.iter()).increment(1),
        }
    }
}

/// Handles for the per-request metrics, registered once per (re)load so the data path does no
/// registry lookups. Cheap to clone.
#[derive(Clone)]
pub struct RequestMetrics {
    /// `[route + 1][outcome][status class]`; route 0 is "none" (no route matched).
    requests: std::sync::Arc<[[[Lazy; 5]; 4]]>,
    duration: Histogram,
    allow: Counter,
    deny: Counter,
    shadow_deny: Counter,
    shadow_allow: Counter,
    upstream_connect: Counter,
    upstream_timeout: Counter,
    upstream_failed: Counter,
}

impl RequestMetrics {
    /// `routes`: route names in the route table's order.
    pub fn register<'a>(routes: impl Iterator<Item = &'a str>) -> Self {
        // Only the combinations that can happen are registered (and so exported as 0); an
        // impossible one, should it ever happen, is still counted (registered on first use).
        // No route matched ("none"): the request never reached the rate limit or the upstream (the
        // checks run trusted hop, sanitize, route, user, rate limit; middleware/mod.rs), so
        // "none" with allow or rate_limited cannot happen.
        let per_route = |(route, matched): (String, bool)| {
            [Outcome::Allow, Outcome::Deny, Outcome::Error, Outcome::RateLimited].map(|outcome| {
                STATUS_CLASSES.map(|class| {
                    let labels = [
                        ::metrics::Label::new("route", route.clone()),
                        ::metrics::Label::new("decision", outcome.as_str()),
                        ::metrics::Label::new("status_class", class),
                    ];
                    let reached_route = matches!(outcome, Outcome::Allow | Outcome::RateLimited);
                    if possible(outcome, class) && (matched || !reached_route) {
                        Lazy::Registered(counter!(REQUESTS_TOTAL, labels.iter()))
                    } else {
                        Lazy::Unregistered(labels.to_vec())
                    }
                })
            })
        };
        let requests: Vec<[[Lazy; 5]; 4]> = std::iter::once(("none".to_string(), false))
            .chain(routes.map(|r| (r.to_string(), true)))
            .map(per_route)
            .collect();
        Self {
            requests: requests.into(),
            duration: histogram!(REQUEST_DURATION),
            allow: counter!(POLICY_DECISIONS_TOTAL, "decision" => "allow"),
            deny: counter!(POLICY_DECISIONS_TOTAL, "decision" => "deny"),
            shadow_deny: counter!(POLICY_SHADOW_TOTAL, "outcome" => "shadow-deny"),
            shadow_allow: counter!(POLICY_SHADOW_TOTAL, "outcome" => "shadow-allow"),
            upstream_connect: counter!(UPSTREAM_ERRORS_TOTAL, "kind" => "connect"),
            upstream_timeout: counter!(UPSTREAM_ERRORS_TOTAL, "kind" => "timeout"),
            upstream_failed: counter!(UPSTREAM_ERRORS_TOTAL, "kind" => "failed"),
        }
    }

    /// Records one finished request: its `ztgate_requests_total` series (by route, decision and
    /// status class), an upstream error's kind, and its duration since `start`.
    pub(crate) fn observe(
        &self,
        route: Option<usize>,
        result: &Result<Response<ProxyBody>, ProxyError>,
        start: Instant,
    ) {
        let status = match result {
            Ok(resp) => resp.status(),
            Err(e) => {
                self.upstream_error(e);
                e.status()
            }
        };
        self.response(route, Outcome::of(result), status, start.elapsed().as_secs_f64());
    }

    pub fn response(&self, route: Option<usize>, outcome: Outcome, status: http::StatusCode, seconds: f64) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        let route = route.map_or(0, |r| r + 1);
        if let Some(by_outcome) = self.requests.get(route).or_else(|| self.requests.first()) {
            by_outcome[outcome as usize][class].increment();
        }
        self.duration.record(seconds);
    }

    pub fn decision(&self, allowed: bool) {
        if allowed { &self.allow } else { &self.deny }.increment(1);
    }

    /// A shadow rule would have flipped the decision (`would_allow` says which way).
    pub fn shadow(&self, would_allow: bool) {
        if would_allow {
            &self.shadow_allow
        } else {
            &self.shadow_deny
        }
        .increment(1);
    }

    pub fn upstream_error(&self, err: &ProxyError) {
        use ProxyError as E;
        match err {
            E::UpstreamUnavailable { .. } => self.upstream_connect.increment(1),
            E::UpstreamTimeout { .. } => self.upstream_timeout.increment(1),
            E::UpstreamFailed { .. } => self.upstream_failed.increment(1),
            E::BadRequest(reason) => metrics::bad_request(reason.code()),
            E::Denied { .. }
            | E::Unauthenticated(_)
            | E::NoRoute { .. }
            | E::MisdirectedRequest { .. }
            | E::RateLimited { .. }
            | E::PayloadTooLarge { .. }
            | E::RequestTimeout
            | E::AuditUnavailable
            | E::RateLimitUnavailable
            | E::Internal(_) => {}
        }
    }
}
