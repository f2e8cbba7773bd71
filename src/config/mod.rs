//! Typed configuration. `file.rs` holds the raw TOML shape; `validate.rs` turns it into [`Config`],
//! checking every value at start-up so that nothing on the data path has to.
//!
//! Relative paths in the file are resolved against the process's working directory (as Envoy
//! does), so the shipped example works when ztgate is started from the repository root.

mod file;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

use crate::diag::Diagnostics;

/// Everything ztgate needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was loaded from, for messages.
    pub source: PathBuf,
    pub listener: ListenerConfig,
    pub tls: TlsConfig,
    pub admin: Option<AdminConfig>,
    pub policy: PolicyConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    /// Per-identity rate limit for every route without its own; `None`: unlimited.
    pub rate_limit: Option<crate::ratelimit::Rate>,
    /// The audit log; `None` when the config has no `[audit]` table (logged as a warning).
    pub audit: Option<crate::audit::AuditConfig>,
    /// Anomaly detection; `None` unless an `[anomaly]` table enables it.
    pub anomaly: Option<crate::anomaly::AnomalyConfig>,
    /// Device posture; `None` unless a `[posture]` table configures a provider.
    pub posture: Option<crate::posture::PostureConfig>,
    /// Front proxies whose forwarded client certificates (XFCC) are accepted; `None`: none.
    pub trusted_hop: Option<TrustedHopConfig>,
    /// User tokens; `None` unless a `[user_auth]` table configures them.
    pub user_auth: Option<crate::user::UserAuthConfig>,
    /// How long in-flight requests may run after SIGTERM before connections are cut.
    pub drain_timeout: Duration,
    pub log: LogConfig,
    /// What happens to client-sent header fields (`[headers]`).
    pub headers: crate::upstream::headers::HeadersConfig,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// A TLS handshake that takes longer is abandoned (slow or idle clients hold no slot forever).
    pub handshake_timeout: Duration,
    /// Time allowed to receive a complete HTTP/1 request head, from its first byte (slowloris
    /// guard).
    pub header_read_timeout: Duration,
    /// Time from the end of the TLS handshake to the first byte of the first request (h2: the
    /// first stream); a connection that sends nothing is closed then.
    pub first_request_timeout: Duration,
    /// Time an idle connection is kept: HTTP/1.1 from the end of a response to the first byte of
    /// the next request, h2 while no stream is open. Then it is closed (h2: GOAWAY).
    pub keepalive_timeout: Duration,
    /// An HTTP/2 connection with no activity is probed with PING and closed after this long.
    pub idle_timeout: Duration,
    /// One deadline for a whole request: request body, upstream response head and response
    /// body. `None` (the default): only the per-phase timeouts apply.
    pub request_timeout: Option<Duration>,
    /// Cap on concurrently open client connections; past it, new ones wait in the accept queue.
    pub max_connections: usize,
    /// Refuse with 421 a request whose Host is not the TLS SNI the client sent.
    pub require_sni_match: bool,
    /// Close (gracefully) connections older than this; `None`: no limit. Bounds how long an
    /// open connection keeps the trust it was granted at its handshake.
    pub max_connection_age: Option<Duration>,
    /// Largest request head (HTTP/1 bytes, h2 header list size); larger is refused with 431.
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request; more is refused with 431.
    pub max_headers: usize,
    /// Largest request body in bytes; larger is refused with 413 (declared length) or cut off
    /// with 413 (streamed). `None`: unlimited.
    pub max_request_body: Option<u64>,
    /// Most concurrent connections one client certificate may hold; past it, new ones are closed
    /// right after the handshake. `None`: unlimited (only `max_connections` applies).
    pub max_connections_per_identity: Option<usize>,
    /// Expect a PROXY protocol v2 header before the TLS bytes (behind an L4 load balancer).
    pub proxy_protocol: Option<ProxyProtocolConfig>,
}

/// PROXY protocol on the listener: the client address comes from the header, not the socket.
#[derive(Debug, Clone)]
pub struct ProxyProtocolConfig {
    /// Sources allowed to send the header (the balancers); empty: any source. A connection from
    /// elsewhere is refused, so a client that reaches the port directly cannot forge its address.
    pub trusted: Vec<crate::policy::Cidr>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle every client certificate must chain to.
    pub client_ca: PathBuf,
    /// CRL files (PEM). Includes the `file` of every `crl_sources` entry.
    pub crls: Vec<PathBuf>,
    /// CRLs ztgate downloads itself and writes to their `file` (then reloaded like any CRL file).
    pub crl_sources: Vec<CrlSource>,
    pub crl_fetch_interval: Duration,
    pub crl_scope: CrlScope,
    /// Check each client certificate against the CRL its distribution point names (fetched
    /// when first needed, refreshed every `crl_fetch_interval`).
    pub crl_discovery: RevocationMode,
    /// Check each client certificate with OCSP (answers cached until their nextUpdate).
    pub ocsp: RevocationMode,
    /// The OCSP responder to ask instead of the one in the certificate's AIA extension.
    pub ocsp_responder: Option<Uri>,
    /// Bound on one CRL or OCSP exchange made while a client waits.
    pub revocation_timeout: Duration,
    /// How often the certificate, key, CA and CRL files are checked for changes (SIGHUP reloads
    /// at once).
    pub reload_interval: Duration,
    /// `[tls.profile]`: the RFC 5280 checks on every verified client chain.
    pub profile: crate::tls::profile::ProfileConfig,
}

/// A CRL to fetch over HTTP on a schedule.
#[derive(Debug, Clone)]
pub struct CrlSource {
    pub url: Uri,
    pub file: PathBuf,
}

/// Whether an online revocation check runs, and what happens when it cannot give an answer
/// (the responder or distribution point is down, slow, or answers garbage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationMode {
    Off,
    /// No answer: the connection is refused.
    FailClosed,
    /// No answer: the connection is allowed, and the miss is logged and counted.
    FailOpen,
}

/// Which certificates of a client's chain must have a known revocation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlScope {
    /// Every certificate in the chain (rustls' default, the strict choice).
    Chain,
    /// Only the client's own certificate.
    Leaf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub address: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub file: PathBuf,
    /// How often the file is checked for changes (SIGHUP reloads at once).
    pub reload_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    /// Scheme and authority only (`http://host:port` or `https://host:port`).
    pub url: Uri,
    pub connect_timeout: Duration,
    /// Time until the upstream's response head arrives.
    pub response_timeout: Duration,
    /// How long an idle pooled connection is kept. Below the upstream's own keep-alive timeout,
    /// ztgate closes first and never sends on a connection the upstream is closing.
    pub pool_idle_timeout: Duration,
    pub protocol: UpstreamProtocol,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 (prior knowledge for `http://`, ALPN for `https://`).
    Http2,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    /// Exact host (`api.internal`) or a suffix wildcard (`*.internal`); `None` matches any.
    pub host: Option<String>,
    /// Segment-aware prefix: `/api` matches `/api` and `/api/x`, never `/apix`.
    pub path_prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Overrides the global `[rate_limit]` for this route.
    pub rate_limit: Option<crate::ratelimit::Rate>,
    /// When set, only client certificates with one of these keys or fingerprints may use the
    /// route (on top of the policy).
    pub pins: Option<Pins>,
    /// Whether requests on this route must (or may) carry a user token (`[user_auth]`).
    pub user: UserMode,
    /// Overrides `[listener] request_timeout`: `Some(None)` is "off" for this route.
    pub request_timeout: Option<Option<Duration>>,
    /// Whether `;` path parameters are refused (the default) or judged without them.
    pub path_parameters: crate::policy::path::PathParameters,
    /// Read request bodies up to this many bytes before forwarding anything, so a malformed
    /// small body never reaches the upstream; `None`: stream as received.
    pub buffer_request_body: Option<u64>,
}

/// Front proxies (identified by their own client certificate) allowed to forward a client's
/// certificate in `x-forwarded-client-cert`.
#[derive(Debug, Clone, Default)]
pub struct TrustedHopConfig {
    /// Exact SPIFFE IDs of the front proxies.
    pub spiffe_ids: Vec<String>,
    /// SHA-256 fingerprints (lowercase hex) of the front proxies' certificates.
    pub fingerprints: Vec<String>,
}

impl TrustedHopConfig {
    pub fn trusts(&self, id: &crate::identity::PeerIdentity) -> bool {
        id.spiffe_id
            .as_ref()
            .is_some_and(|s| self.spiffe_ids.iter().any(|t| t == s.as_str()))
            || self.fingerprints.contains(&id.fingerprint_sha256)
    }
}

/// User authentication on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserMode {
    /// Tokens are not looked at (and `Authorization` goes upstream untouched).
    Off,
    /// A token, if sent, must be valid; requests without one have no user.
    Optional,
    /// Every request needs a valid token (else 401).
    Required,
}

/// Certificate pinning for a route: SPKI SHA-256 (base64) and certificate SHA-256 (lowercase hex).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    pub spki_sha256: Vec<String>,
    pub fingerprints: Vec<String>,
}

impl Pins {
    pub fn allows(&self, id: &crate::identity::PeerIdentity) -> bool {
        self.spki_sha256.contains(&id.spki_sha256) || self.fingerprints.contains(&id.fingerprint_sha256)
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `RUST_LOG`-style filter; the `RUST_LOG` environment variable overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl Config {
    /// Reads and validates a config file, reporting every problem with its line and column.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(path, &text)
    }

    /// Validates config text; `path` is used only in messages.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        validate::validate(path, text).map_err(ConfigError::Invalid)
    }
}
