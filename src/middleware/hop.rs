//! Identity from a trusted hop (`[trusted_hop]`, off by default): when ztgate runs behind
//! another TLS-terminating proxy, that proxy's own client certificate is on an allow-list, and
//! it forwards its client's certificate in `x-forwarded-client-cert` (Envoy's `Cert`/`Chain`
//! fields, URL-encoded PEM). ztgate verifies the forwarded chain against the client CA and CRLs
//! exactly as it verifies a handshake, then judges the request as that client: rate limits,
//! posture, policy, the identity headers upstream and the audit record (which names the hop in
//! `via`) all use it.
//!
//! On any other connection the header is ignored and stripped (sanitize). A trusted hop's request
//! without the header is the hop's own. A header that does not verify is refused (403), never
//! downgraded to the hop's identity.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::Request;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};

use super::check::Check;
use crate::ctx::{ConnCtx, RequestCtx};
use crate::error::ProxyError;
use crate::headers::X_FORWARDED_CLIENT_CERT;
use crate::identity::{PeerIdentity, TrustedHopConfig, parse_xfcc};
use crate::tls::ServerTls;

#[derive(Clone)]
pub struct TrustedHop {
    cfg: Option<Arc<TrustedHopConfig>>,
    tls: Arc<ArcSwap<ServerTls>>,
}

impl TrustedHop {
    pub fn new(cfg: Option<TrustedHopConfig>, tls: Arc<ArcSwap<ServerTls>>) -> Self {
        Self {
            cfg: cfg.map(Arc::new),
            tls,
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
        let identity = verify(value.as_bytes(), &tls)?;
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

/// Parses one XFCC element, decodes `Cert` (and `Chain`), verifies them against the client CA and
/// CRLs now, and returns the client's identity.
fn verify(value: &[u8], tls: &ServerTls) -> Result<PeerIdentity, ProxyError> {
    let text = std::str::from_utf8(value).map_err(|_| refuse("forwarded-cert-invalid"))?;
    let elements = parse_xfcc(text).map_err(|_| refuse("forwarded-cert-invalid"))?;
    // One element: the hop's client. More would mean a chain of proxies this hop did not verify.
    let [element] = elements.as_slice() else {
        return Err(refuse("forwarded-cert-invalid"));
    };
    let field = |key: &str| {
        element
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    };
    let cert_pem = percent_decode(field("Cert").ok_or(refuse("forwarded-cert-missing"))?)?;
    let leaf = CertificateDer::from_pem_slice(&cert_pem).map_err(|_| refuse("forwarded-cert-invalid"))?;
    let mut intermediates = Vec::new();
    if let Some(chain) = field("Chain") {
        for c in CertificateDer::pem_slice_iter(&percent_decode(chain)?) {
            let c = c.map_err(|_| refuse("forwarded-cert-invalid"))?;
            // The chain field repeats the leaf (Envoy): only the others are intermediates.
            if c != leaf {
                intermediates.push(c);
            }
        }
    }
    tls.verifier
        .verify_client_cert(&leaf, &intermediates, UnixTime::now())
        .map_err(|e| {
            tracing::info!(error = %e, "forwarded client certificate does not verify");
            refuse("forwarded-cert-untrusted")
        })?;
    PeerIdentity::from_der(&leaf).map_err(|_| refuse("forwarded-cert-invalid"))
}

fn percent_decode(s: &str) -> Result<Vec<u8>, ProxyError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(refuse("forwarded-cert-invalid"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(super::percent_decode("a%20b%0A").unwrap(), b"a b\n");
        assert!(super::percent_decode("a%2").is_err());
        assert!(super::percent_decode("a%zz").is_err());
    }
}
