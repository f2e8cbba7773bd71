//! The mTLS listener: accept loop (`listener.rs`), per-connection handshake, identity and HTTP
//! serving (`conn.rs`), and the signals that stop it (`shutdown.rs`).

mod conn;
mod listener;
pub mod proxy_protocol;
pub mod shutdown;

use std::net::SocketAddr;
use std::sync::Arc;

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
    /// The rate-limit key: the SPIFFE ID, else the certificate fingerprint.
    pub rate_key: Arc<str>,
    /// This certificate's anomaly-detection counters (when detection is on).
    pub anomaly: Option<Arc<crate::anomaly::Stats>>,
}

/// Everything the listener needs, built once per (re)load.
pub struct Server {
    pub listener: ListenerConfig,
    pub tls: ServerTls,
    pub stack: Stack,
    /// For records of refused handshakes (requests are audited by the stack).
    pub auditor: Auditor,
    pub detector: Option<Arc<crate::anomaly::Detector>>,
}

impl Server {
    pub fn new(
        listener: ListenerConfig,
        tls: ServerTls,
        stack: Stack,
        auditor: Auditor,
        detector: Option<Arc<crate::anomaly::Detector>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            listener,
            tls,
            stack,
            auditor,
            detector,
        })
    }
}
