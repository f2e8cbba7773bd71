//! Picks the request's route (host + path prefix) so that policy can match on it and forward
//! knows its upstream. Refuses with 421 a request whose Host is not the name the client asked
//! for in TLS SNI (a connection for one service must not be reused for another).

use std::sync::Arc;

use http::{Request, header};
use hyper::body::Incoming;

use super::check::Check;
use crate::error::ProxyError;
use crate::server::ConnCtx;
use crate::upstream::RouteTable;

/// Set by this layer: the matched route (index into the shared table) and the request host.
#[derive(Clone, Debug)]
pub struct RouteMatch {
    pub index: usize,
    /// Host without port, lowercase.
    pub host: Option<String>,
}

#[derive(Clone)]
pub struct Route {
    routes: Arc<RouteTable>,
    require_sni_match: bool,
}

impl Route {
    pub fn new(routes: Arc<RouteTable>, require_sni_match: bool) -> Self {
        Self {
            routes,
            require_sni_match,
        }
    }

    fn resolve(&self, req: &Request<Incoming>) -> Result<RouteMatch, ProxyError> {
        let host = request_host(req);
        if self.require_sni_match
            && let (Some(sni), Some(host)) = (
                req.extensions().get::<Arc<ConnCtx>>().and_then(|c| c.sni.as_deref()),
                host.as_deref(),
            )
            && !sni.eq_ignore_ascii_case(host)
        {
            return Err(ProxyError::MisdirectedRequest {
                sni: sni.to_string(),
                host: host.to_string(),
            });
        }
        match self.routes.find(host.as_deref(), req.uri().path()) {
            Some(index) => {
                // `call` runs inside the request span opened by the trace layer.
                if let Some(r) = self.routes.get(index) {
                    tracing::Span::current().record("route", r.name.as_str());
                }
                Ok(RouteMatch { index, host })
            }
            None => Err(ProxyError::NoRoute {
                host: host.unwrap_or_default(),
                path: req.uri().path().to_string(),
            }),
        }
    }
}

impl Check for Route {
    fn check(&self, req: &mut Request<Incoming>) -> Result<(), ProxyError> {
        let m = self.resolve(req)?;
        if let Some(note) = req.extensions().get::<Arc<crate::audit::record::Note>>() {
            let _ = note.route.set(m.index);
        }
        // A pinned route admits only the pinned keys/certificates, whatever the policy says.
        if let Some(pins) = self.routes.get(m.index).and_then(|r| r.pins.as_ref()) {
            let conn = req.extensions().get::<Arc<ConnCtx>>();
            if !conn.is_some_and(|c| pins.allows(&c.identity)) {
                return Err(ProxyError::Denied {
                    rule: None,
                    reason: "certificate-not-pinned",
                });
            }
        }
        req.extensions_mut().insert(m);
        Ok(())
    }
}

/// The request's host without port, lowercased: `:authority` for h2 (and absolute-form h1),
/// else the Host header.
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = match req.uri().authority() {
        Some(a) => a.host(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    let host = match raw.rsplit_once(':') {
        // Keep IPv6 literals (`[::1]:8443` → `[::1]`).
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
        _ => raw,
    };
    Some(host.to_ascii_lowercase())
}
