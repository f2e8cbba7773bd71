//! The mTLS listener: accept loop (`listener.rs`), one thread and runtime per core when so
//! configured (`workers.rs`), per-connection handshake, identity and HTTP serving (`conn.rs`),
//! and the signals that stop it (`shutdown.rs`).

mod config;
pub(crate) mod conn;
mod exec;
mod framing;
mod handshake;
mod idle;
mod listener;
pub mod proxy_protocol;
mod refusal;
pub mod registry;
pub mod shutdown;
mod woken;
mod workers;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::audit::Auditor;
pub use crate::ctx::ConnCtx;
use crate::middleware::Stack;
use crate::tls::ServerTls;
pub use config::{ListenerConfig, ProxyProtocolConfig, RuntimeModel};
pub use listener::{serve, serve_here};
pub use workers::{WorkerError, bind_reuseport, serve_per_core};

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
