//! What the data path knows about one connection ([`ConnCtx`]) and one request
//! ([`RequestCtx`]): created once, shared by every layer through the request's extensions, read
//! back by the observing layers (metrics, audit, anomaly) when the response is complete.
//!
//! Inner layers cannot hand data back through the request, which they consume; they record what
//! they learn (canonical form, route, verdict, posture, user) in the request's `RequestCtx`,
//! each field set once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use http::{HeaderValue, Request};
use serde_json::value::RawValue;

use crate::canonical::Canonical;
use crate::error::ProxyError;
use crate::identity::{PeerIdentity, render_xfcc};

/// What one connection knows about its peer, computed once after the handshake and shared by
/// every request on it (`Arc` in the request extensions).
#[derive(Debug)]
pub struct ConnCtx {
    /// Process-unique connection number (audit `conn_id`).
    pub id: u64,
    pub peer_addr: SocketAddr,
    pub identity: PeerIdentity,
    /// TLS SNI the client sent, if any.
    pub sni: Option<String>,
    /// Pre-rendered header values: identity is per connection, so rendering is too.
    pub xfcc: HeaderValue,
    pub identity_header: HeaderValue,
    pub peer_ip: HeaderValue,
    /// The audit record's `identity` and `peer` fields, serialized once: the JSON escaping of
    /// fingerprint, issuer, serial and SPIFFE ID is per connection, not per request.
    pub audit_identity: Box<RawValue>,
    pub audit_peer: Box<RawValue>,
    /// The rate-limit key: the SPIFFE ID, else the certificate fingerprint.
    pub rate_key: Arc<str>,
    /// This certificate's anomaly-detection counters (when detection is on).
    pub anomaly: Option<Arc<crate::anomaly::Stats>>,
}

/// The identity could not be rendered into a header value or an audit field (a bug: identity
/// fields are printable ASCII by construction). The connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("peer identity cannot be rendered ({0})")]
pub struct UnrenderableIdentity(pub &'static str);

impl ConnCtx {
    /// Renders everything per-connection once: XFCC (Envoy's format, `By` = `server_uri`), the
    /// identity header, the peer address and the audit fields.
    ///
    /// # Errors
    /// `UnrenderableIdentity` naming the field that could not be rendered.
    pub fn new(
        id: u64,
        peer: SocketAddr,
        identity: PeerIdentity,
        sni: Option<String>,
        server_uri: Option<&str>,
    ) -> Result<ConnCtx, UnrenderableIdentity> {
        let xfcc = HeaderValue::from_str(&render_xfcc(&identity, server_uri))
            .map_err(|_| UnrenderableIdentity("x-forwarded-client-cert"))?;
        let identity_header = HeaderValue::try_from(identity.display_name().to_string())
            .map_err(|_| UnrenderableIdentity("x-ztgate-identity"))?;
        let peer_ip =
            HeaderValue::from_str(&peer.ip().to_string()).map_err(|_| UnrenderableIdentity("x-forwarded-for"))?;
        let rate_key: Arc<str> = identity
            .spiffe_id
            .as_ref()
            .map_or(identity.fingerprint_sha256.as_str(), |s| s.as_str())
            .into();
        let audit_identity = serde_json::value::to_raw_value(&crate::audit::record::Identity::from(&identity))
            .map_err(|_| UnrenderableIdentity("audit identity"))?;
        let audit_peer = serde_json::value::to_raw_value(&peer).map_err(|_| UnrenderableIdentity("audit peer"))?;
        Ok(ConnCtx {
            id,
            peer_addr: peer,
            identity,
            sni,
            xfcc,
            identity_header,
            peer_ip,
            audit_identity,
            audit_peer,
            rate_key,
            anomaly: None,
        })
    }
}

/// The request's id, made by the observing layer, returned to the client and passed upstream
/// (`x-request-id`): 32 hex digits.
#[derive(Clone, Debug)]
pub(crate) struct RequestId(pub HeaderValue);

impl RequestId {
    /// The id as text (`-` if it were ever not ASCII, which the generator rules out).
    pub(crate) fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

/// One request's context: created by the outermost layer (trace), one `Arc` in the request's
/// extensions. Fields an inner layer learns are set once (`OnceLock`); the observing layers read
/// them when the response is complete.
#[derive(Debug)]
pub(crate) struct RequestCtx {
    pub id: RequestId,
    /// The connection the request arrived on.
    pub conn: Arc<ConnCtx>,
    /// The one authority and judged path (set by sanitize: everything after it reads this).
    pub canonical: OnceLock<Canonical>,
    /// The normalised path routing and policy judged (without `;` parameters where a route
    /// allows them), for the audit record.
    pub path: OnceLock<String>,
    /// Index of the matched route in the route table (set by route).
    pub route: OnceLock<usize>,
    /// Set by forward once the request head was handed to the upstream connection.
    pub reached_upstream: AtomicBool,
    /// Deciding rule id and reason code.
    pub verdict: OnceLock<(Option<String>, &'static str)>,
    pub shadow: OnceLock<(String, &'static str)>,
    /// Posture provider and lookup result (`found` or why posture is unavailable).
    pub posture: OnceLock<(&'static str, &'static str)>,
    /// The requirement a device failed, when that denied the request.
    pub posture_failed: OnceLock<&'static str>,
    /// The client identity a trusted front proxy forwarded (the request is judged as its).
    pub forwarded: OnceLock<Arc<ConnCtx>>,
    /// The authenticated user, on routes with user authentication.
    pub user: OnceLock<Arc<crate::user::User>>,
    /// The device's posture (or why it is unavailable), when the policy needs it.
    pub device: OnceLock<crate::posture::PostureResult>,
}

impl RequestCtx {
    pub(crate) fn new(id: RequestId, conn: Arc<ConnCtx>) -> Self {
        Self {
            id,
            conn,
            canonical: OnceLock::new(),
            path: OnceLock::new(),
            route: OnceLock::new(),
            reached_upstream: AtomicBool::new(false),
            verdict: OnceLock::new(),
            shadow: OnceLock::new(),
            posture: OnceLock::new(),
            posture_failed: OnceLock::new(),
            forwarded: OnceLock::new(),
            user: OnceLock::new(),
            device: OnceLock::new(),
        }
    }

    /// The request's context.
    ///
    /// # Errors
    /// [`ProxyError::Internal`] when the request did not come through the observing layer (a
    /// stack wired wrongly): fail closed rather than judge a request without its connection.
    pub(crate) fn of<B>(req: &Request<B>) -> Result<&Arc<RequestCtx>, ProxyError> {
        req.extensions()
            .get::<Arc<RequestCtx>>()
            .ok_or(ProxyError::Internal("request has no request context"))
    }

    /// The peer the request is judged as: the identity a trusted hop forwarded, else the
    /// connection's own.
    pub(crate) fn peer(&self) -> &Arc<ConnCtx> {
        self.forwarded.get().unwrap_or(&self.conn)
    }

    /// The canonical form.
    ///
    /// # Errors
    /// [`ProxyError::Internal`] if a layer that needs it runs before sanitize (a wiring bug).
    pub(crate) fn canonical(&self) -> Result<&Canonical, ProxyError> {
        self.canonical.get().ok_or(ProxyError::Internal(
            "request reached a check before it was made canonical",
        ))
    }

    pub(crate) fn reached_upstream(&self) -> bool {
        self.reached_upstream.load(Ordering::Acquire)
    }

    pub(crate) fn mark_reached_upstream(&self) {
        self.reached_upstream.store(true, Ordering::Release);
    }
}
