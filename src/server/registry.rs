//! The open client connections, so that trust decided at handshake time can be taken back: after
//! a certificate/CRL reload every connection's chain is verified again, and those that no longer
//! verify (revoked, CA removed) are closed gracefully.
//!
//! The map is touched once when a connection is established and once when it ends, never per
//! request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::pki_types::CertificateDer;
use tokio::sync::Notify;

use crate::tls::ServerTls;

/// One open connection as the registry sees it.
struct Tracked {
    chain: Arc<[CertificateDer<'static>]>,
    close: Arc<Notify>,
}

#[derive(Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Tracked>>,
}

/// Held by the connection task; removes the entry when the connection ends.
pub struct Registration {
    connections: Arc<Connections>,
    id: u64,
    /// Notified when the connection must close (its certificate is no longer trusted).
    pub close: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Connections {
    pub fn register(self: &Arc<Self>, id: u64, chain: Arc<[CertificateDer<'static>]>) -> Registration {
        let close = Arc::new(Notify::new());
        self.open.lock().unwrap_or_else(PoisonError::into_inner).insert(
            id,
            Tracked {
                chain,
                close: close.clone(),
            },
        );
        Registration {
            connections: self.clone(),
            id,
            close,
        }
    }

    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies every open connection's client chain against `tls` (the newly loaded trust) and
    /// tells those that fail to close. Returns how many were told. The chains are copied out
    /// first so the lock is not held while verifying.
    pub fn revalidate(&self, tls: &ServerTls) -> usize {
        let snapshot: Vec<(Arc<[CertificateDer<'static>]>, Arc<Notify>)> = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|t| (t.chain.clone(), t.close.clone()))
            .collect();
        let mut closed = 0;
        for (chain, close) in snapshot {
            if let Err(e) = tls.still_trusted(&chain) {
                tracing::info!(reason = %e, "closing a connection whose client certificate is no longer trusted");
                // notify_one stores a permit: the connection sees it even if not yet waiting.
                close.notify_one();
                closed += 1;
            }
        }
        closed
    }
}
