//! The mTLS listener: accept loop (`listener.rs`), per-connection handshake, identity and HTTP
//! serving (`conn.rs`), and the signals that stop it (`shutdown.rs`).

pub(crate) mod conn;
mod framing;
mod idle;
mod listener;
pub mod proxy_protocol;
pub mod registry;
pub mod shutdown;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::audit::Auditor;
use crate::config::ListenerConfig;
use crate::identity::PeerIdentity;
use crate::middleware::Stack;
use crate::tls::ServerTls;
pub use listener::serve;

/// What one connection knows about its peer, computed once after the handshake and shared by
/// every request on it (`Arc` in the request extensions).
#[derive(Debug)]
pub struct ConnCtx {
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
    pub audit_identity: Box<serde_json::value::RawValue>,
    pub audit_peer: Box<serde_json::value::RawValue>,
    /// The rate-limit key: the SPIFFE ID, else the certificate fingerprint.
    pub rate_key: Arc<str>,
    /// This certificate's anomaly-detection counters (when detection is on).
    pub anomaly: Option<Arc<crate::anomaly::Stats>>,
}

/// Everything the listener needs, built once at start; the TLS part is swapped on reload.
pub struct Server {
    pub listener: ListenerConfig,
    /// The current TLS state: read once per new connection, replaced by a certificate reload.
    pub tls: Arc<ArcSwap<ServerTls>>,
    /// Open connections, re-verified after a TLS reload.
    pub connections: Arc<registry::Connections>,
    pub stack: Stack,
    /// For records of refused handshakes (requests are audited by the stack).
    pub auditor: Auditor,
    pub detector: Option<Arc<crate::anomaly::Detector>>,
    /// How long a connection told to close (drain, revoked, expired, too old) may take to finish.
    pub drain_timeout: std::time::Duration,
    /// CRL distribution point and OCSP checks, run after each handshake (when configured).
    pub revocation: Option<Arc<crate::tls::revocation::Revocation>>,
}

impl Server {
    /// Installs newly loaded TLS state: new connections use it at once, and every open
    /// connection whose client chain no longer verifies under it is closed. Returns how many.
    pub fn install_tls(&self, tls: ServerTls) -> usize {
        let tls = Arc::new(tls);
        self.tls.store(tls.clone());
        let closed = self.connections.revalidate(&tls);
        if closed > 0 {
            crate::telemetry::metrics::connections_closed("untrusted", closed as u64);
        }
        closed
    }

    /// Closes every open connection whose certificate a refreshed distribution-point CRL now
    /// revokes. Returns how many.
    pub fn close_revoked(&self) -> usize {
        let Some(revocation) = &self.revocation else {
            return 0;
        };
        let closed = self.connections.close_matching(|chain| revocation.known_revoked(chain));
        if closed > 0 {
            crate::telemetry::metrics::connections_closed("untrusted", closed as u64);
        }
        closed
    }

    pub fn new(
        listener: ListenerConfig,
        tls: Arc<ArcSwap<ServerTls>>,
        stack: Stack,
        auditor: Auditor,
        detector: Option<Arc<crate::anomaly::Detector>>,
        drain_timeout: std::time::Duration,
        revocation: Option<Arc<crate::tls::revocation::Revocation>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            listener,
            tls,
            connections: Arc::default(),
            stack,
            auditor,
            detector,
            drain_timeout,
            revocation,
        })
    }
}
