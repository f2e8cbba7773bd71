//! Every metric ztgate exports, with its help text, in one place (docs/metrics.md mirrors this).
//! Labels are bounded: status classes, reasons and kinds — never a path or an identity.

use std::sync::OnceLock;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const REQUESTS_TOTAL: &str = "ztgate_requests_total";
pub const REQUEST_DURATION: &str = "ztgate_request_duration_seconds";
pub const TLS_HANDSHAKES_TOTAL: &str = "ztgate_tls_handshakes_total";
pub const CONNECTIONS_OPEN: &str = "ztgate_connections_open";
pub const POLICY_DECISIONS_TOTAL: &str = "ztgate_policy_decisions_total";
pub const POLICY_RULES: &str = "ztgate_policy_rules";
pub const POLICY_RELOAD_TOTAL: &str = "ztgate_policy_reload_total";
pub const POLICY_LAST_RELOAD: &str = "ztgate_policy_last_reload_success_timestamp_seconds";
pub const POLICY_SHADOW_TOTAL: &str = "ztgate_policy_shadow_decisions_total";
pub const UPSTREAM_ERRORS_TOTAL: &str = "ztgate_upstream_errors_total";
pub const BUILD_INFO: &str = "ztgate_build_info";
pub const AUDIT_RECORDS_TOTAL: &str = "ztgate_audit_records_written_total";
pub const AUDIT_DROPPED_TOTAL: &str = "ztgate_audit_dropped_total";
pub const AUDIT_WRITE_ERRORS_TOTAL: &str = "ztgate_audit_write_errors_total";
pub const AUDIT_WRITE_DURATION: &str = "ztgate_audit_write_duration_seconds";
pub const AUDIT_HEALTHY: &str = "ztgate_audit_healthy";

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder once per process and returns its handle. Later calls (tests
/// start several servers in one process) return the same handle.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            // The bucket list is a non-empty constant, so this cannot fail; if it ever did, a
            // summary instead of a histogram is the harmless fallback.
            let builder = match builder
                .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(AUDIT_WRITE_DURATION.into()), LATENCY_BUCKETS))
            {
                Ok(b) => b,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is already installed (an embedding program's);
            // ztgate then keeps serving, and /metrics shows only what this handle sees.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_counter!(REQUESTS_TOTAL, "Requests answered, by status class (1xx..5xx).");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from request head received to response head sent."
    );
    describe_counter!(
        TLS_HANDSHAKES_TOTAL,
        "TLS handshakes, by result: ok or the failure reason."
    );
    describe_gauge!(
        CONNECTIONS_OPEN,
        "Client connections currently open (TLS handshake included)."
    );
    describe_counter!(POLICY_DECISIONS_TOTAL, "Policy decisions, by decision (allow, deny).");
    describe_gauge!(POLICY_RULES, "Rules in the loaded policy.");
    describe_counter!(
        POLICY_RELOAD_TOTAL,
        "Policy reloads, by result (ok, error). A failed reload keeps the last good policy."
    );
    describe_gauge!(POLICY_LAST_RELOAD, "Unix time of the last successful policy load.");
    describe_counter!(
        POLICY_SHADOW_TOTAL,
        "Shadow rules that would have changed a decision, by outcome (shadow-deny, shadow-allow)."
    );
    describe_counter!(
        UPSTREAM_ERRORS_TOTAL,
        "Requests that failed upstream, by kind (connect, timeout, failed)."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version label says which ztgate runs.");
    describe_counter!(AUDIT_RECORDS_TOTAL, "Audit records written to the sink.");
    describe_counter!(
        AUDIT_DROPPED_TOTAL,
        "Audit records dropped (on_full = \"drop\" with a full queue, or refused requests while the sink is down)."
    );
    describe_counter!(AUDIT_WRITE_ERRORS_TOTAL, "Failed audit writes (each retry counts).");
    describe_histogram!(
        AUDIT_WRITE_DURATION,
        Unit::Seconds,
        "Time to write (and fsync) one batch of audit records."
    );
    describe_gauge!(
        AUDIT_HEALTHY,
        "1 while the audit sink is writable, 0 while it fails (ztgate then refuses requests)."
    );
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Handles for the per-request metrics, registered once so the data path does no lookups.
#[derive(Clone)]
pub struct RequestMetrics {
    by_class: [Counter; 5],
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
    pub fn register() -> Self {
        let class = |c: &'static str| counter!(REQUESTS_TOTAL, "status_class" => c);
        Self {
            by_class: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
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

    pub fn response(&self, status: http::StatusCode, seconds: f64) {
        let idx = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[idx].increment(1);
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

    pub fn upstream_error(&self, err: &crate::error::ProxyError) {
        use crate::error::ProxyError as E;
        match err {
            E::UpstreamUnavailable { .. } => self.upstream_connect.increment(1),
            E::UpstreamTimeout { .. } => self.upstream_timeout.increment(1),
            E::UpstreamFailed { .. } => self.upstream_failed.increment(1),
            E::BadRequest(_)
            | E::Denied { .. }
            | E::NoRoute { .. }
            | E::MisdirectedRequest { .. }
            | E::Draining
            | E::AuditUnavailable
            | E::Internal(_) => {}
        }
    }
}

pub fn handshake(result: &'static str) {
    counter!(TLS_HANDSHAKES_TOTAL, "result" => result).increment(1);
}

pub fn connections_open() -> Gauge {
    gauge!(CONNECTIONS_OPEN)
}

/// A policy was installed (at start-up or by a reload).
pub fn policy_loaded(rules: usize) {
    gauge!(POLICY_RULES).set(rules as f64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    gauge!(POLICY_LAST_RELOAD).set(now.as_secs_f64());
}

pub fn policy_reload(ok: bool) {
    counter!(POLICY_RELOAD_TOTAL, "result" => if ok { "ok" } else { "error" }).increment(1);
}

pub fn audit_written(records: usize, seconds: f64) {
    counter!(AUDIT_RECORDS_TOTAL).increment(records as u64);
    histogram!(AUDIT_WRITE_DURATION).record(seconds);
}

pub fn audit_dropped() {
    counter!(AUDIT_DROPPED_TOTAL).increment(1);
}

pub fn audit_write_error() {
    counter!(AUDIT_WRITE_ERRORS_TOTAL).increment(1);
}

pub fn audit_healthy(healthy: bool) {
    gauge!(AUDIT_HEALTHY).set(if healthy { 1.0 } else { 0.0 });
}
