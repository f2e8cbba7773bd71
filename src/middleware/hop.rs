//! Identity from a trusted hop (`[trusted_hop]`, off by default): when ztgate runs behind
//! another TLS-terminating proxy, that proxy's own client certificate is on an allow-list, and
//! it forwards its client's certificate in `x-forwarded-client-cert` (Envoy's `Cert`/`Chain`
//! fields, URL-encoded PEM). ztgate verifies the forwarded chain against the client CA and CRLs
//! exactly as it verifies a handshake (`tls::ForwardedChains`, which remembers verified values
//! until a reload or an expiry makes them stale), then judges the request as that client: rate
//! limits, posture, policy, the identity headers upstream and the audit record (which names the
//! hop in `via`) all use it.
//!
//! On any other connection the header is ignored and stripped (sanitize). A trusted hop's request
//! without the header is the hop's own. A header that does not verify is refused (403), never
//! downgraded to the hop's identity.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::Request;

use super::check::Check;
use crate::ctx::{ConnCtx, RequestCtx};
use crate::error::ProxyError;
use crate::headers::X_FORWARDED_CLIENT_CERT;
use crate::identity::TrustedHopConfig;
use crate::tls::{ForwardedChains, ServerTls};

#[derive(Clone)]
pub struct TrustedHop {
    cfg: Option<Arc<TrustedHopConfig>>,
    tls: Arc<ArcSwap<ServerTls>>,
    /// Verifies forwarded chains and remembers the verified ones; shared by every connection.
    chains: Arc<ForwardedChains>,
}

impl TrustedHop {
    pub fn new(cfg: Option<TrustedHopConfig>, tls: Arc<ArcSwap<ServerTls>>) -> Self {
        let entries = cfg.as_ref().map_or(0, |c| c.cache_entries);
        Self {
            cfg: cfg.map(Arc::new),
            tls,
            chains: Arc::new(ForwardedChains::new(entries)),
        }
    }
}

fn refuse(reason: &'static str) -> ProxyError {
    ProxyError::Denied { rule: None, reason }
}

impl Check for TrustedHop {
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), ProxyError> {
        let Some(cfg) = &self.cfg else { return Ok(()) };
        let ctx = RequestCtx::of(req)?;
        let conn = &ctx.conn;
        if !cfg.trusts(&conn.identity) {
            return Ok(()); // sanitize strips whatever this client claims
        }
        let mut values = req.headers().get_all(X_FORWARDED_CLIENT_CERT).iter();
        let Some(value) = values.next() else {
            return Ok(()); // the hop's own request
        };
        if values.next().is_some() {
            return Err(refuse("forwarded-cert-invalid"));
        }
        let tls = self.tls.load();
        let identity = self
            .chains
            .verify(value.as_bytes(), &tls)
            .map_err(|e| refuse(e.reason()))?;
        let forwarded = ConnCtx::new(
            conn.id,
            conn.peer_addr,
            identity,
            conn.sni.clone(),
            tls.server_uri.as_deref(),
        )
        .map_err(|_| refuse("forwarded-cert-invalid"))?;
        let forwarded = Arc::new(forwarded);
        tracing::Span::current().record(
            "client.forwarded",
            tracing::field::display(forwarded.identity.display_name()),
        );
        let _ = ctx.forwarded.set(forwarded);
        Ok(())
    }
}
