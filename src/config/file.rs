//! Raw configuration as it appears in the TOML file.
//!
//! These structs only describe the file's shape: every table rejects unknown keys so a typo is an
//! error, never a silently ignored setting. Values that need checking keep their source span
//! (`Spanned`) so that `validate.rs` can point at the exact line and column.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    /// Required; `Option` so that a file without it still has its other sections checked.
    pub(crate) listener: Option<Spanned<RawListener>>,
    /// Required, as `listener`.
    pub(crate) tls: Option<Spanned<RawTls>>,
    pub(crate) admin: Option<RawAdmin>,
    /// Access control. Required: ztgate refuses to start without an explicit policy.
    pub(crate) policy: Option<Spanned<RawPolicy>>,
    #[serde(default, rename = "upstream")]
    pub(crate) upstreams: Vec<Spanned<RawUpstream>>,
    #[serde(default, rename = "route")]
    pub(crate) routes: Vec<Spanned<RawRoute>>,
    pub(crate) audit: Option<RawAudit>,
    pub(crate) rate_limit: Option<Spanned<RawRate>>,
    pub(crate) cluster_rate_limit: Option<Spanned<RawClusterRateLimit>>,
    pub(crate) anomaly: Option<RawAnomaly>,
    pub(crate) posture: Option<Spanned<RawPosture>>,
    pub(crate) user_auth: Option<Spanned<RawUserAuth>>,
    pub(crate) trusted_hop: Option<Spanned<RawTrustedHop>>,
    pub(crate) shutdown: Option<RawShutdown>,
    pub(crate) log: Option<RawLog>,
    pub(crate) headers: Option<RawHeaders>,
}

/// `[headers]`: what happens to client-sent header fields before judging and forwarding.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaders {
    pub(crate) with_underscores: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) strip: Vec<Spanned<String>>,
    pub(crate) forwarded: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub(crate) address: Spanned<String>,
    pub(crate) handshake_timeout: Option<Spanned<String>>,
    pub(crate) header_read_timeout: Option<Spanned<String>>,
    pub(crate) first_request_timeout: Option<Spanned<String>>,
    pub(crate) keepalive_timeout: Option<Spanned<String>>,
    pub(crate) send_timeout: Option<Spanned<String>>,
    pub(crate) idle_timeout: Option<Spanned<String>>,
    pub(crate) request_timeout: Option<Spanned<String>>,
    pub(crate) max_connections: Option<Spanned<i64>>,
    pub(crate) require_sni_match: Option<bool>,
    pub(crate) max_connection_age: Option<Spanned<String>>,
    pub(crate) max_header_bytes: Option<Spanned<String>>,
    pub(crate) max_headers: Option<Spanned<i64>>,
    pub(crate) max_request_body: Option<Spanned<String>>,
    pub(crate) max_connections_per_identity: Option<Spanned<i64>>,
    pub(crate) proxy_protocol: Option<bool>,
    pub(crate) proxy_protocol_trusted: Option<Spanned<Vec<Spanned<String>>>>,
    /// `"shared"` or `"per-core"`.
    pub(crate) runtime: Option<Spanned<String>>,
    pub(crate) workers: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) cert: Spanned<String>,
    pub(crate) key: Spanned<String>,
    pub(crate) client_ca: Spanned<String>,
    #[serde(default)]
    pub(crate) crls: Vec<Spanned<String>>,
    pub(crate) crl_scope: Option<Spanned<String>>,
    pub(crate) reload_interval: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) crl_sources: Vec<Spanned<RawCrlSource>>,
    pub(crate) crl_fetch_interval: Option<Spanned<String>>,
    pub(crate) crl_discovery: Option<Spanned<String>>,
    pub(crate) ocsp: Option<Spanned<String>>,
    pub(crate) ocsp_responder: Option<Spanned<String>>,
    pub(crate) revocation_timeout: Option<Spanned<String>>,
    /// `[tls.profile]`: the client-certificate profile's strictness.
    pub(crate) profile: Option<RawProfile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCrlSource {
    pub(crate) url: Spanned<String>,
    pub(crate) file: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub(crate) address: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub(crate) file: Spanned<String>,
    pub(crate) reload_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub(crate) name: Spanned<String>,
    pub(crate) url: Spanned<String>,
    pub(crate) connect_timeout: Option<Spanned<String>>,
    pub(crate) response_timeout: Option<Spanned<String>>,
    pub(crate) pool_idle_timeout: Option<Spanned<String>>,
    /// Most HTTP/1.1 connections to this upstream held by client connections at once.
    pub(crate) held_connections: Option<Spanned<i64>>,
    pub(crate) protocol: Option<Spanned<String>>,
    /// CA bundle that verifies an `https://` upstream.
    pub(crate) ca: Option<Spanned<String>>,
    /// ztgate's own client certificate, presented to an `https://` upstream that asks for one.
    pub(crate) client_cert: Option<Spanned<String>>,
    pub(crate) client_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) name: Spanned<String>,
    pub(crate) host: Option<Spanned<String>>,
    pub(crate) path_prefix: Option<Spanned<String>>,
    pub(crate) upstream: Spanned<String>,
    pub(crate) rate_limit: Option<Spanned<RawRate>>,
    pub(crate) pin_spki_sha256: Option<Vec<Spanned<String>>>,
    pub(crate) pin_fingerprints: Option<Vec<Spanned<String>>>,
    pub(crate) user: Option<Spanned<String>>,
    pub(crate) request_timeout: Option<Spanned<String>>,
    pub(crate) path_parameters: Option<Spanned<String>>,
    pub(crate) buffer_request_body: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPosture {
    pub(crate) provider: Spanned<String>,
    pub(crate) device_id: Option<Spanned<String>>,
    // inventory
    pub(crate) file: Option<Spanned<String>>,
    pub(crate) reload_interval: Option<Spanned<String>>,
    // service
    pub(crate) url: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) cache_ttl: Option<Spanned<String>>,
    pub(crate) stale_if_error: Option<Spanned<String>>,
    pub(crate) max_entries: Option<Spanned<i64>>,
    pub(crate) ca: Option<Spanned<String>>,
    pub(crate) client_cert: Option<Spanned<String>>,
    pub(crate) client_key: Option<Spanned<String>>,
    pub(crate) protocol: Option<Spanned<String>>,
    // assertion
    pub(crate) header: Option<Spanned<String>>,
    pub(crate) jwks: Option<Spanned<String>>,
    /// The key set: exactly one of `jwks` (a file), `jwks_url`, `oidc_discovery = true`.
    pub(crate) jwks_url: Option<Spanned<String>>,
    pub(crate) oidc_discovery: Option<Spanned<bool>>,
    pub(crate) jwks_ca: Option<Spanned<String>>,
    pub(crate) jwks_refresh_min: Option<Spanned<String>>,
    pub(crate) jwks_refresh_max: Option<Spanned<String>>,
    pub(crate) jwks_timeout: Option<Spanned<String>>,
    pub(crate) issuer: Option<Spanned<String>>,
    pub(crate) audience: Option<Spanned<String>>,
    pub(crate) algorithms: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrustedHop {
    #[serde(default)]
    pub(crate) spiffe_ids: Vec<Spanned<String>>,
    #[serde(default)]
    pub(crate) fingerprints: Vec<Spanned<String>>,
    pub(crate) cache_entries: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUserAuth {
    pub(crate) jwks: Option<Spanned<String>>,
    /// The key set: exactly one of `jwks` (a file), `jwks_url`, `oidc_discovery = true`.
    pub(crate) jwks_url: Option<Spanned<String>>,
    pub(crate) oidc_discovery: Option<Spanned<bool>>,
    pub(crate) jwks_ca: Option<Spanned<String>>,
    pub(crate) jwks_refresh_min: Option<Spanned<String>>,
    pub(crate) jwks_refresh_max: Option<Spanned<String>>,
    pub(crate) jwks_timeout: Option<Spanned<String>>,

    pub(crate) issuer: Spanned<String>,
    pub(crate) audience: Spanned<String>,
    pub(crate) algorithms: Option<Vec<Spanned<String>>>,
    pub(crate) require_binding: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShutdown {
    pub(crate) drain_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub(crate) format: Option<Spanned<String>>,
    pub(crate) level: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub(crate) sink: Option<Spanned<String>>,
    pub(crate) file: Option<Spanned<String>>,
    pub(crate) max_size: Option<Spanned<String>>,
    pub(crate) keep: Option<Spanned<i64>>,
    pub(crate) fsync: Option<Spanned<String>>,
    pub(crate) fsync_interval: Option<Spanned<String>>,
    pub(crate) on_full: Option<Spanned<String>>,
    pub(crate) respond_after: Option<Spanned<String>>,
    pub(crate) queue: Option<Spanned<i64>>,
    pub(crate) signing_key: Option<Spanned<String>>,
    pub(crate) checkpoint_every: Option<Spanned<i64>>,
    pub(crate) checkpoint_interval: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnomaly {
    pub(crate) enabled: Option<bool>,
    pub(crate) rate_factor: Option<Spanned<f64>>,
    pub(crate) rate_min: Option<Spanned<i64>>,
    pub(crate) warmup: Option<Spanned<String>>,
    pub(crate) deny_burst: Option<Spanned<i64>>,
    pub(crate) learn_requests: Option<Spanned<i64>>,
    pub(crate) max_sources: Option<Spanned<i64>>,
    pub(crate) cooldown: Option<Spanned<String>>,
    pub(crate) max_identities: Option<Spanned<i64>>,
    pub(crate) tighten_rate: Option<Spanned<RawRate>>,
    pub(crate) tighten_for: Option<Spanned<String>>,
}

/// `[cluster_rate_limit]`: share the rate limits across replicas through Redis.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClusterRateLimit {
    pub(crate) redis_url: Spanned<String>,
    pub(crate) ca: Option<Spanned<String>>,
    pub(crate) client_cert: Option<Spanned<String>>,
    pub(crate) client_key: Option<Spanned<String>>,
    pub(crate) timeout: Option<Spanned<String>>,
    pub(crate) on_error: Option<Spanned<String>>,
    pub(crate) lease: Option<Spanned<i64>>,
    pub(crate) key_prefix: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRate {
    pub(crate) requests_per_second: i64,
    pub(crate) burst: Option<i64>,
}

/// `[tls.profile]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProfile {
    pub(crate) max_chain_depth: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) relax: Vec<Spanned<String>>,
}
