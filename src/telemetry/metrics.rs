//! Every metric ztgate exports, with its help text, in one place (docs/metrics.md mirrors this).
//! Labels are bounded: status classes, reasons and kinds — never a path or an identity.

use std::sync::OnceLock;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub(crate) const REQUESTS_TOTAL: &str = "ztgate_requests_total";
pub(crate) const REQUEST_DURATION: &str = "ztgate_request_duration_seconds";
pub(crate) const TLS_HANDSHAKES_TOTAL: &str = "ztgate_tls_handshakes_total";
pub(crate) const CONNECTIONS_OPEN: &str = "ztgate_connections_open";
pub(crate) const POLICY_DECISIONS_TOTAL: &str = "ztgate_policy_decisions_total";
pub(crate) const POLICY_RULES: &str = "ztgate_policy_rules";
pub(crate) const POLICY_RELOAD_TOTAL: &str = "ztgate_policy_reload_total";
pub(crate) const POLICY_LAST_RELOAD: &str = "ztgate_policy_last_reload_success_timestamp_seconds";
pub(crate) const POLICY_SHADOW_TOTAL: &str = "ztgate_policy_shadow_decisions_total";
pub(crate) const UPSTREAM_ERRORS_TOTAL: &str = "ztgate_upstream_errors_total";
pub(crate) const BUILD_INFO: &str = "ztgate_build_info";
pub(crate) const AUDIT_RECORDS_TOTAL: &str = "ztgate_audit_records_written_total";
pub(crate) const AUDIT_DROPPED_TOTAL: &str = "ztgate_audit_dropped_total";
pub(crate) const AUDIT_WRITE_ERRORS_TOTAL: &str = "ztgate_audit_write_errors_total";
pub(crate) const AUDIT_WRITE_DURATION: &str = "ztgate_audit_write_duration_seconds";
pub(crate) const AUDIT_HEALTHY: &str = "ztgate_audit_healthy";
pub(crate) const UPSTREAM_DURATION: &str = "ztgate_upstream_duration_seconds";
pub(crate) const HANDSHAKE_DURATION: &str = "ztgate_tls_handshake_duration_seconds";
pub(crate) const CERT_EXPIRY: &str = "ztgate_certificate_expiry_seconds";
pub(crate) const CRL_NEXT_UPDATE: &str = "ztgate_crl_next_update_seconds";
pub(crate) const ANOMALIES_TOTAL: &str = "ztgate_anomalies_total";
pub(crate) const CONNECTIONS_CLOSED_TOTAL: &str = "ztgate_connections_closed_total";
pub(crate) const REQUEST_TIMEOUTS_TOTAL: &str = "ztgate_request_timeouts_total";
pub(crate) const PROTOCOL_ERRORS_TOTAL: &str = "ztgate_protocol_errors_total";
pub(crate) const TLS_RELOAD_TOTAL: &str = "ztgate_tls_reload_total";
pub(crate) const CRL_FETCH_TOTAL: &str = "ztgate_crl_fetch_total";
pub(crate) const CRL_AGE: &str = "ztgate_crl_age_seconds";
pub(crate) const REVOCATION_CHECKS_TOTAL: &str = "ztgate_revocation_checks_total";
pub(crate) const REVOCATION_FETCHES_TOTAL: &str = "ztgate_revocation_fetches_total";
pub(crate) const POSTURE_CHECKS_TOTAL: &str = "ztgate_posture_checks_total";
pub(crate) const POSTURE_LOOKUP_DURATION: &str = "ztgate_posture_lookup_duration_seconds";
pub(crate) const POSTURE_CACHE_TOTAL: &str = "ztgate_posture_cache_total";
pub(crate) const POSTURE_DENIALS_TOTAL: &str = "ztgate_posture_denials_total";
pub(crate) const POSTURE_RELOAD_TOTAL: &str = "ztgate_posture_reload_total";
pub(crate) const TRUSTED_HOP_CACHE_TOTAL: &str = "ztgate_trusted_hop_cache_total";
pub(crate) const USER_AUTH_TOTAL: &str = "ztgate_user_auth_total";
pub(crate) const BAD_REQUESTS_TOTAL: &str = "ztgate_bad_requests_total";
pub(crate) const REQUEST_HEADERS_REMOVED_TOTAL: &str = "ztgate_request_headers_removed_total";
pub(crate) const UPSTREAM_RETRIES_TOTAL: &str = "ztgate_upstream_retries_total";
pub(crate) const UPSTREAM_HELD_FULL_TOTAL: &str = "ztgate_upstream_held_connections_full_total";
pub(crate) const UPSTREAM_EARLY_CLOSES_TOTAL: &str = "ztgate_upstream_early_closes_total";
pub(crate) const JWKS_FETCHES_TOTAL: &str = "ztgate_jwks_fetches_total";
pub(crate) const JWKS_LAST_SUCCESS: &str = "ztgate_jwks_last_success_timestamp_seconds";
pub(crate) const JWKS_KEYS: &str = "ztgate_jwks_keys";

/// Every `result` of [`JWKS_FETCHES_TOTAL`]: exported as 0 for each configured key set.
pub(crate) const JWKS_FETCH_RESULTS: &[&str] = &[
    "ok",
    "not_modified",
    "timeout",
    "unreachable",
    "http_status",
    "invalid",
    "issuer_mismatch",
];

pub(crate) const CLUSTER_LIMIT_ROUND_TRIPS_TOTAL: &str = "ztgate_cluster_rate_limit_round_trips_total";
pub(crate) const CLUSTER_LIMIT_ROUND_TRIP_DURATION: &str = "ztgate_cluster_rate_limit_round_trip_duration_seconds";
pub(crate) const CLUSTER_LIMIT_BACKEND_ERRORS_TOTAL: &str = "ztgate_cluster_rate_limit_backend_errors_total";

/// Every `result` of [`CLUSTER_LIMIT_ROUND_TRIPS_TOTAL`].
const CLUSTER_LIMIT_RESULTS: &[&str] = &["granted", "exhausted", "error", "timeout"];
/// Every `reason` of [`CLUSTER_LIMIT_BACKEND_ERRORS_TOTAL`].
const CLUSTER_LIMIT_ERRORS: &[&str] = &["error", "timeout", "unavailable"];

/// Every `reason` of [`CONNECTIONS_CLOSED_TOTAL`], exported as 0 from start-up so that an alert
/// on a rate sees the series before the first close.
pub(crate) const CONNECTION_CLOSE_REASONS: &[&str] = &[
    "untrusted",
    "policy",
    "cert_expired",
    "max_age",
    "identity_cap",
    "first_request_timeout",
    "keepalive_timeout",
    "send_timeout",
];

/// Every `result` of [`TLS_HANDSHAKES_TOTAL`] ztgate itself names (the `profile_*` reasons come
/// from `tls::profile::Rule::ALL`, which the app adds): exported as 0 from start-up.
pub(crate) const HANDSHAKE_RESULTS: &[&str] = &[
    "ok",
    "no_client_cert",
    "unknown_ca",
    "expired",
    "not_yet_valid",
    "revoked",
    "revocation_unavailable",
    "unknown_revocation_status",
    "crl_expired",
    "bad_eku",
    "bad_certificate",
    "identity_unrenderable",
    "timeout",
    "client_closed",
    "proxy_protocol_invalid",
    "proxy_protocol_io",
    "proxy_protocol_untrusted",
    "protocol",
    "incompatible",
    "no_alpn",
    "io",
];

/// Every `reason` of [`PROTOCOL_ERRORS_TOTAL`].
pub(crate) const PROTOCOL_ERROR_REASONS: &[&str] = &[
    "malformed-request",
    "uri-too-long",
    "headers-too-large",
    "header-read-timeout",
];

/// Every `phase` of [`REQUEST_TIMEOUTS_TOTAL`].
pub(crate) const REQUEST_TIMEOUT_PHASES: &[&str] = &["request_body", "response_head", "response_body"];

/// The `result` of every reload counter.
const RELOAD_RESULTS: &[&str] = &["ok", "error"];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the Prometheus recorder once per process and returns its handle. Later calls (tests
/// start several servers in one process) return the same handle.
pub(crate) fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            // The bucket list is a non-empty constant, so this cannot fail; if it ever did, a
            // summary instead of a histogram is the harmless fallback.
            let builder = match builder
                .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), LATENCY_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(AUDIT_WRITE_DURATION.into()), LATENCY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(UPSTREAM_DURATION.into()), LATENCY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(HANDSHAKE_DURATION.into()), LATENCY_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(POSTURE_LOOKUP_DURATION.into()), LATENCY_BUCKETS))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(CLUSTER_LIMIT_ROUND_TRIP_DURATION.into()), LATENCY_BUCKETS)
                }) {
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
    describe_counter!(
        BAD_REQUESTS_TOTAL,
        "Requests refused with 400 as malformed or ambiguous, by reason code (docs/audit.md)."
    );
    describe_counter!(
        UPSTREAM_RETRIES_TOTAL,
        "Requests sent again on a fresh upstream connection, by reason (connection_closed: a pooled connection the upstream had closed)."
    );
    counter!(UPSTREAM_RETRIES_TOTAL, "reason" => "connection_closed").absolute(0);
    describe_counter!(
        UPSTREAM_HELD_FULL_TOTAL,
        "Requests from HTTP/1.1 client connections sent through the shared upstream pool because the upstream's held_connections were all held by other client connections."
    );
    counter!(UPSTREAM_HELD_FULL_TOTAL).absolute(0);
    describe_counter!(
        UPSTREAM_EARLY_CLOSES_TOTAL,
        "Upstream connections that stopped reading before the request was sent whole (an early answer, then close or reset); the rest of the request body was discarded."
    );
    counter!(UPSTREAM_EARLY_CLOSES_TOTAL).absolute(0);
    describe_counter!(
        REQUEST_HEADERS_REMOVED_TOTAL,
        "Client-sent header fields removed before judging, by reason (identity, default_list, configured, underscore)."
    );
    describe_counter!(
        REQUESTS_TOTAL,
        "Requests answered, by route, decision (allow, deny, rate_limited, error) and status class (1xx..5xx)."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time from forwarding a request to the upstream's response head."
    );
    describe_histogram!(
        HANDSHAKE_DURATION,
        Unit::Seconds,
        "TLS handshake duration, successful or not."
    );
    describe_counter!(
        ANOMALIES_TOTAL,
        "Anomalies flagged, by kind (rate_spike, deny_burst, new_route, many_sources)."
    );
    describe_gauge!(
        CERT_EXPIRY,
        "Seconds until a certificate expires (cert = server, client_ca); negative once expired."
    );
    describe_gauge!(
        CRL_NEXT_UPDATE,
        "Seconds until a configured CRL's nextUpdate (crl = file name); negative once stale."
    );
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
    describe_counter!(
        CONNECTIONS_CLOSED_TOTAL,
        "Connections ztgate closed, by reason: untrusted after a certificate/CRL reload, policy (allowed nowhere after a policy reload), cert_expired, max_age, identity_cap, first_request_timeout (no request after the handshake), keepalive_timeout (idle between requests; h2: no open stream), send_timeout (a write to the client waited longer than send_timeout: the client stopped reading)."
    );
    for reason in CONNECTION_CLOSE_REASONS {
        counter!(CONNECTIONS_CLOSED_TOTAL, "reason" => *reason).absolute(0);
    }
    describe_counter!(
        TLS_RELOAD_TOTAL,
        "Reloads of the server certificate, key, client CA and CRLs, by result (ok, error). A failed reload keeps the current ones."
    );
    describe_counter!(
        CRL_FETCH_TOTAL,
        "CRL downloads (crl_sources), by result: updated, unchanged, or the failure kind (http, invalid, untrusted, local)."
    );
    describe_counter!(
        REVOCATION_CHECKS_TOTAL,
        "Online revocation checks of client certificates after the handshake (method: crl_dp, ocsp), by result: good, revoked, unknown (OCSP), error (no answer; fail-open allows it)."
    );
    describe_counter!(
        REVOCATION_FETCHES_TOTAL,
        "Downloads behind those checks (method: crl_dp, ocsp), by result: ok, error. Checks minus fetches is the cache's work."
    );
    describe_gauge!(
        CRL_AGE,
        "Seconds since each loaded CRL's thisUpdate: how fresh the revocation data is."
    );
    describe_counter!(
        POSTURE_CHECKS_TOTAL,
        "Device posture lookups, by provider (inventory, service, assertion) and result: found, or why posture is unavailable (device-unknown, service-down, assertion-expired, ...)."
    );
    describe_histogram!(
        POSTURE_LOOKUP_DURATION,
        Unit::Seconds,
        "Time one posture service request took (cache misses only), by provider."
    );
    describe_counter!(
        POSTURE_CACHE_TOTAL,
        "Posture service cache lookups, by result: hit, miss, stale (a cached answer used because the service failed)."
    );
    describe_counter!(
        POSTURE_DENIALS_TOTAL,
        "Requests denied because the device failed a posture requirement, by requirement (managed, disk_encrypted, min_os_version, ..., or the unavailability reason)."
    );
    describe_counter!(
        POSTURE_RELOAD_TOTAL,
        "Reloads of the device inventory and JWKS files, by result (ok, error). A failed reload keeps the current ones."
    );
    describe_counter!(
        TRUSTED_HOP_CACHE_TOTAL,
        "Lookups of forwarded client certificates ([trusted_hop]) in the cache of verified ones, by result: hit (no chain verification), miss (verified now)."
    );
    describe_counter!(
        PROTOCOL_ERRORS_TOTAL,
        "Requests refused by the HTTP parser before the layers ran, by reason: malformed-request (400), uri-too-long (414), headers-too-large (431), header-read-timeout."
    );
    describe_counter!(
        REQUEST_TIMEOUTS_TOTAL,
        "Requests cut by request_timeout, by phase: request_body (408), response_head (504), response_body (stream reset)."
    );
    describe_counter!(
        USER_AUTH_TOTAL,
        "User token checks on routes with user authentication, by result: ok, missing, or why the token was refused."
    );
    describe_counter!(
        JWKS_FETCHES_TOTAL,
        "Fetches of a key set from jwks_url or OIDC discovery, by source (user_auth, posture_assertion) and result: ok, not_modified, or the failure (timeout, unreachable, http_status, invalid, issuer_mismatch). A failure keeps the last good set."
    );
    describe_gauge!(
        JWKS_LAST_SUCCESS,
        "Unix time the key set of a source was last fetched or confirmed unchanged (304); 0 until the first success, while every token is refused."
    );
    describe_gauge!(
        JWKS_KEYS,
        "Keys of an allowed algorithm in the current key set, by source."
    );
    describe_counter!(
        CLUSTER_LIMIT_ROUND_TRIPS_TOTAL,
        "Round trips to the cluster rate limit's Redis, by result: granted (tokens leased), exhausted (shared budget spent), error, timeout."
    );
    describe_histogram!(
        CLUSTER_LIMIT_ROUND_TRIP_DURATION,
        Unit::Seconds,
        "Time of one round trip to the cluster rate limit's Redis (answered or failed)."
    );
    describe_counter!(
        CLUSTER_LIMIT_BACKEND_ERRORS_TOTAL,
        "Requests the cluster rate limit could not decide, by reason (error, timeout, unavailable: Redis failed just before) and on_error (open: passed, closed: 503)."
    );
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    zero_known_series();
}

/// Exports at 0 every series of this module's counters whose label set is known before the first
/// event, so that `increase(...) > 0` alerts have a series to evaluate from the first scrape.
/// `absolute(0)` never lowers a counter that has already counted (it keeps the maximum).
fn zero_known_series() {
    zero(TLS_HANDSHAKES_TOTAL, "result", HANDSHAKE_RESULTS.iter().copied());
    zero(PROTOCOL_ERRORS_TOTAL, "reason", PROTOCOL_ERROR_REASONS.iter().copied());
    zero(REQUEST_TIMEOUTS_TOTAL, "phase", REQUEST_TIMEOUT_PHASES.iter().copied());
    zero(TRUSTED_HOP_CACHE_TOTAL, "result", ["hit", "miss"]);
    for reloads in [POLICY_RELOAD_TOTAL, TLS_RELOAD_TOTAL, POSTURE_RELOAD_TOTAL] {
        zero(reloads, "result", RELOAD_RESULTS.iter().copied());
    }
    for unlabelled in [AUDIT_WRITE_ERRORS_TOTAL, AUDIT_DROPPED_TOTAL, AUDIT_RECORDS_TOTAL] {
        counter!(unlabelled).absolute(0);
    }
}

/// `[cluster_rate_limit]` is configured: export its series at 0.
pub(crate) fn cluster_limit_init() {
    zero(
        CLUSTER_LIMIT_ROUND_TRIPS_TOTAL,
        "result",
        CLUSTER_LIMIT_RESULTS.iter().copied(),
    );
    for reason in CLUSTER_LIMIT_ERRORS {
        for on_error in ["open", "closed"] {
            counter!(CLUSTER_LIMIT_BACKEND_ERRORS_TOTAL, "reason" => *reason, "on_error" => on_error).absolute(0);
        }
    }
}

/// One round trip to the cluster rate limit's Redis (`result` as in [`CLUSTER_LIMIT_RESULTS`]).
pub(crate) fn cluster_limit_round_trip(result: &'static str, took: std::time::Duration) {
    counter!(CLUSTER_LIMIT_ROUND_TRIPS_TOTAL, "result" => result).increment(1);
    histogram!(CLUSTER_LIMIT_ROUND_TRIP_DURATION).record(took.as_secs_f64());
}

/// A request the cluster rate limit could not decide; `on_error` decided it.
pub(crate) fn cluster_limit_backend_error(reason: &'static str, on_error: &'static str) {
    counter!(CLUSTER_LIMIT_BACKEND_ERRORS_TOTAL, "reason" => reason, "on_error" => on_error).increment(1);
}

/// An upstream connection stopped reading before the request was sent whole.
pub(crate) fn upstream_early_close() {
    counter!(UPSTREAM_EARLY_CLOSES_TOTAL).increment(1);
}

/// A request went through the shared pool because its upstream's `held_connections` were all
/// held by other client connections.
pub(crate) fn upstream_held_full() {
    counter!(UPSTREAM_HELD_FULL_TOTAL).increment(1);
}

/// A request was sent again on a fresh upstream connection.
pub(crate) fn upstream_retry(reason: &'static str) {
    counter!(UPSTREAM_RETRIES_TOTAL, "reason" => reason).increment(1);
}

/// A request was refused with 400 for `reason` (a `BadRequest` code, docs/audit.md).
pub(crate) fn bad_request(reason: &'static str) {
    counter!(BAD_REQUESTS_TOTAL, "reason" => reason).increment(1);
}

/// Exports `name{label=value}` at 0 for every value, so alerts on `increase()` have a series to
/// evaluate before the first event (the label sets are known at start-up).
pub(crate) fn zero(name: &'static str, label: &'static str, values: impl IntoIterator<Item = &'static str>) {
    for v in values {
        counter!(name, label => v).absolute(0);
    }
}

/// A client-sent header field was removed (`reason` as in `headers::Removed`);
/// `increment(0)` at start-up exports the series.
pub(crate) fn request_header_removed(reason: &'static str, n: u64) {
    counter!(REQUEST_HEADERS_REMOVED_TOTAL, "reason" => reason).increment(n);
}

pub(crate) fn handshake(result: &'static str) {
    counter!(TLS_HANDSHAKES_TOTAL, "result" => result).increment(1);
}

/// `n` connections were closed, for one of [`CONNECTION_CLOSE_REASONS`].
pub(crate) fn connections_closed(reason: &'static str, n: u64) {
    counter!(CONNECTIONS_CLOSED_TOTAL, "reason" => reason).increment(n);
}

pub(crate) fn protocol_error(reason: &'static str) {
    counter!(PROTOCOL_ERRORS_TOTAL, "reason" => reason).increment(1);
}

/// `request_timeout` cut a request in `phase` (`request_body`, `response_head`, `response_body`).
pub(crate) fn request_timeout(phase: &'static str) {
    counter!(REQUEST_TIMEOUTS_TOTAL, "phase" => phase).increment(1);
}

pub(crate) fn crl_fetch(result: &'static str) {
    counter!(CRL_FETCH_TOTAL, "result" => result).increment(1);
}

/// An online revocation check ran after a handshake (`crl_dp` or `ocsp`).
pub(crate) fn revocation_check(method: &'static str, result: &'static str) {
    counter!(REVOCATION_CHECKS_TOTAL, "method" => method, "result" => result).increment(1);
}

/// A CRL or OCSP download behind a revocation check.
pub(crate) fn revocation_fetch(method: &'static str, result: &'static str) {
    counter!(REVOCATION_FETCHES_TOTAL, "method" => method, "result" => result).increment(1);
}

pub(crate) fn tls_reload(ok: bool) {
    counter!(TLS_RELOAD_TOTAL, "result" => if ok { "ok" } else { "error" }).increment(1);
}

pub(crate) fn connections_open() -> Gauge {
    gauge!(CONNECTIONS_OPEN)
}

/// A policy was installed (at start-up or by a reload).
pub(crate) fn policy_loaded(rules: usize) {
    gauge!(POLICY_RULES).set(rules as f64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    gauge!(POLICY_LAST_RELOAD).set(now.as_secs_f64());
}

pub(crate) fn policy_reload(ok: bool) {
    counter!(POLICY_RELOAD_TOTAL, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// The audit writer's handles, registered once (a lookup by name per batch cost ~800
/// instructions per record at one record per batch).
#[derive(Clone)]
pub(crate) struct AuditWritten {
    records: metrics::Counter,
    duration: metrics::Histogram,
}

impl AuditWritten {
    pub(crate) fn register() -> Self {
        Self {
            records: counter!(AUDIT_RECORDS_TOTAL),
            duration: histogram!(AUDIT_WRITE_DURATION),
        }
    }

    /// `records` lines reached the sink in one write that took `seconds`.
    pub(crate) fn written(&self, records: usize, seconds: f64) {
        self.records.increment(records as u64);
        self.duration.record(seconds);
    }
}

pub(crate) fn audit_dropped() {
    counter!(AUDIT_DROPPED_TOTAL).increment(1);
}

pub(crate) fn audit_write_error() {
    counter!(AUDIT_WRITE_ERRORS_TOTAL).increment(1);
}

pub(crate) fn audit_healthy(healthy: bool) {
    gauge!(AUDIT_HEALTHY).set(if healthy { 1.0 } else { 0.0 });
}

pub(crate) fn upstream_duration() -> Histogram {
    histogram!(UPSTREAM_DURATION)
}

pub(crate) fn handshake_duration(seconds: f64) {
    histogram!(HANDSHAKE_DURATION).record(seconds);
}

/// Handles for one posture provider's metrics, registered once.
#[derive(Clone)]
pub(crate) struct PostureMetrics {
    provider: &'static str,
    found: Counter,
    hit: Counter,
    miss: Counter,
    stale: Counter,
    latency: Histogram,
}

impl PostureMetrics {
    pub(crate) fn register(provider: &'static str) -> Self {
        Self {
            provider,
            found: counter!(POSTURE_CHECKS_TOTAL, "provider" => provider, "result" => "found"),
            hit: counter!(POSTURE_CACHE_TOTAL, "provider" => provider, "result" => "hit"),
            miss: counter!(POSTURE_CACHE_TOTAL, "provider" => provider, "result" => "miss"),
            stale: counter!(POSTURE_CACHE_TOTAL, "provider" => provider, "result" => "stale"),
            latency: histogram!(POSTURE_LOOKUP_DURATION, "provider" => provider),
        }
    }

    /// One lookup's result: `None` when the posture was found, else why it is unavailable.
    pub(crate) fn check(&self, unavailable: Option<&'static str>) {
        match unavailable {
            None => self.found.increment(1),
            Some(reason) => {
                counter!(POSTURE_CHECKS_TOTAL, "provider" => self.provider, "result" => reason).increment(1)
            }
        }
    }

    pub(crate) fn cache(&self, result: &'static str) {
        match result {
            "hit" => &self.hit,
            "miss" => &self.miss,
            _ => &self.stale,
        }
        .increment(1);
    }

    pub(crate) fn latency(&self, d: std::time::Duration) {
        self.latency.record(d.as_secs_f64());
    }
}

/// Handles for one fetched key set's metrics, registered once per source; every series is
/// exported from start-up (0, or its current value when a test process registers it again).
#[derive(Clone)]
pub(crate) struct JwksMetrics {
    source: &'static str,
    last_success: Gauge,
    keys: Gauge,
}

impl JwksMetrics {
    pub(crate) fn register(source: &'static str) -> Self {
        for result in JWKS_FETCH_RESULTS {
            counter!(JWKS_FETCHES_TOTAL, "source" => source, "result" => *result).absolute(0);
        }
        let last_success = gauge!(JWKS_LAST_SUCCESS, "source" => source);
        let keys = gauge!(JWKS_KEYS, "source" => source);
        // `increment(0)` exports the series without resetting one already set.
        last_success.increment(0.0);
        keys.increment(0.0);
        Self {
            source,
            last_success,
            keys,
        }
    }

    /// One fetch ended with `result` (one of [`JWKS_FETCH_RESULTS`]).
    pub(crate) fn fetch(&self, result: &'static str) {
        counter!(JWKS_FETCHES_TOTAL, "source" => self.source, "result" => result).increment(1);
    }

    /// The key set was replaced by one of `keys` keys, or (`None`) confirmed unchanged.
    pub(crate) fn succeeded(&self, keys: Option<usize>) {
        if let Some(n) = keys {
            self.keys.set(n as f64);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_success.set(now.as_secs_f64());
    }
}

pub(crate) fn posture_denied(requirement: &'static str) {
    counter!(POSTURE_DENIALS_TOTAL, "requirement" => requirement).increment(1);
}

pub(crate) fn posture_reload(ok: bool) {
    counter!(POSTURE_RELOAD_TOTAL, "result" => if ok { "ok" } else { "error" }).increment(1);
}

pub(crate) fn user_auth(result: &'static str) {
    counter!(USER_AUTH_TOTAL, "result" => result).increment(1);
}

pub(crate) fn anomaly(kind: &'static str) {
    counter!(ANOMALIES_TOTAL, "kind" => kind).increment(1);
}

#[cfg(test)]
mod tests {
    /// The alert rules may only use metric names this module declares.
    #[test]
    fn alert_rules_use_only_declared_metrics() {
        let rules = include_str!("../../deploy/prometheus/ztgate-rules.yml");
        let declared = include_str!("metrics.rs");
        let mut checked = 0;
        for (i, _) in rules.match_indices("ztgate_") {
            let name: String = rules[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.ends_with("_total") && !name.ends_with("_seconds") && !name.ends_with("_healthy") {
                continue; // rule names and file names, not metrics
            }
            assert!(
                declared.contains(&format!("\"{name}\"")),
                "alert rules use undeclared metric {name}"
            );
            checked += 1;
        }
        assert!(checked > 10, "{checked}");
    }

    /// The Grafana dashboard may only use metric names this module declares.
    #[test]
    fn dashboard_uses_only_declared_metrics() {
        let dashboard = include_str!("../../deploy/grafana/ztgate-dashboard.json");
        let declared = include_str!("metrics.rs");
        let mut checked = 0;
        for (i, _) in dashboard.match_indices("ztgate_") {
            let name: String = dashboard[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let name = name.strip_suffix("_bucket").unwrap_or(&name);
            if name == "ztgate_" {
                continue; // the dashboard's own uid/tags
            }
            assert!(
                declared.contains(&format!("\"{name}\"")),
                "dashboard uses undeclared metric {name}"
            );
            checked += 1;
        }
        assert!(checked > 10);
    }
}
