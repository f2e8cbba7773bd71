//! `[[upstream]]` and `[[route]]`: the validated upstream and route settings.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

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
    /// Most HTTP/1.1 connections to this upstream held by client connections at once
    /// (`upstream/in_task.rs`), per process; past it, requests use the shared pool. 0: never held.
    pub held_connections: usize,
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
    /// Index into the config's upstreams (`Config::upstreams`).
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
