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
    ctx: Arc<super::ConnCtx>,
    close: Arc<Notify>,
}

#[derive(Default)]
pub struct Connections {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    by_id: HashMap<u64, Tracked>,
    /// Open connections per identity (the rate-limit key), for `max_connections_per_identity`.
    per_identity: HashMap<Arc<str>, usize>,
}

/// The identity already holds as many connections as it may.
#[derive(Debug)]
pub struct OverIdentityCap {
    pub open: usize,
}

/// Held by the connection task; removes the entry when the connection ends.
pub struct Registration {
    connections: Arc<Connections>,
    id: u64,
    identity: Arc<str>,
    /// Notified when the connection must close (its certificate is no longer trusted).
    pub close: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.by_id.remove(&self.id);
        if let Some(n) = open.per_identity.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                open.per_identity.remove(&self.identity);
            }
        }
    }
}

impl Connections {
    /// Records an established connection of `identity`, unless that identity already holds
    /// `cap` connections.
    pub fn register(
        self: &Arc<Self>,
        ctx: Arc<super::ConnCtx>,
        chain: Arc<[CertificateDer<'static>]>,
        cap: Option<usize>,
    ) -> Result<Registration, OverIdentityCap> {
        let (id, identity) = (ctx.id, ctx.rate_key.clone());
        let close = Arc::new(Notify::new());
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.per_identity.entry(identity.clone()).or_insert(0);
        if cap.is_some_and(|cap| *count >= cap) {
            return Err(OverIdentityCap { open: *count });
        }
        *count += 1;
        open.by_id.insert(
            id,
            Tracked {
                chain,
                ctx,
                close: close.clone(),
            },
        );
        drop(open);
        Ok(Registration {
            connections: self.clone(),
            id,
            identity,
            close,
        })
    }

    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies every open connection's client chain against `tls` (the newly loaded trust) and
    /// tells those that fail to close. Returns how many were told. The chains are copied out
    /// first so the lock is not held while verifying.
    pub fn revalidate(&self, tls: &ServerTls) -> usize {
        self.close_matching(|chain| match tls.still_trusted(chain) {
            Ok(()) => false,
            Err(e) => {
                tracing::info!(reason = %e, "client certificate no longer trusted");
                true
            }
        })
    }
}

impl Connections {
    /// Tells every connection whose client chain `revoked` picks to close. Returns how many. The
    /// chains are copied out first so the lock is not held while `revoked` runs.
    pub fn close_matching(&self, revoked: impl Fn(&[CertificateDer<'static>]) -> bool) -> usize {
        let snapshot: Vec<(Arc<[CertificateDer<'static>]>, Arc<Notify>)> = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .values()
            .map(|t| (t.chain.clone(), t.close.clone()))
            .collect();
        let mut closed = 0;
        for (chain, close) in snapshot {
            if revoked(&chain) {
                tracing::info!("closing a connection whose client certificate is no longer trusted");
                // notify_one stores a permit: the connection sees it even if not yet waiting.
                close.notify_one();
                closed += 1;
            }
        }
        closed
    }

    /// After a policy reload: tells every connection whose identity the new policy allows
    /// nowhere to close. Returns how many.
    pub fn close_disallowed(&self, policy: &crate::policy::Policy) -> usize {
        let snapshot: Vec<(Arc<super::ConnCtx>, Arc<Notify>)> = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_id
            .values()
            .map(|t| (t.ctx.clone(), t.close.clone()))
            .collect();
        let mut closed = 0;
        for (ctx, close) in snapshot {
            if !policy.may_allow(&ctx.identity) {
                tracing::info!(
                    conn.id = ctx.id,
                    client.id = %ctx.identity.display_name(),
                    "closing a connection whose identity the reloaded policy allows nowhere"
                );
                close.notify_one();
                closed += 1;
            }
        }
        closed
    }
}
