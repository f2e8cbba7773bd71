//! Picks the request's route (host + path prefix) so that policy can match on it and forward
//! knows its upstream. Refuses with 421 a request whose Host is not the name the client asked
//! for in TLS SNI (a connection for one service must not be reused for another).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, header};
use hyper::body::Incoming;
use tower::{Layer, Service};

use super::BoxFuture;
use crate::error::{ProxyBody, ProxyError};
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
pub struct RouteLayer {
    routes: Arc<RouteTable>,
    require_sni_match: bool,
}

impl RouteLayer {
    pub fn new(routes: Arc<RouteTable>, require_sni_match: bool) -> Self {
        Self {
            routes,
            require_sni_match,
        }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;
    fn layer(&self, inner: S) -> Route<S> {
        Route {
            inner,
            routes: self.routes.clone(),
            require_sni_match: self.require_sni_match,
        }
    }
}

#[derive(Clone)]
pub struct Route<S> {
    inner: S,
    routes: Arc<RouteTable>,
    require_sni_match: bool,
}

impl<S> Route<S> {
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

impl<S> Service<Request<Incoming>> for Route<S>
where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Incoming>) -> BoxFuture {
        match self.resolve(&req) {
            Ok(m) => {
                if let Some(note) = req.extensions().get::<Arc<crate::audit::record::Note>>() {
                    let _ = note.route.set(m.index);
                }
                req.extensions_mut().insert(m);
                Box::pin(self.inner.call(req))
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
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
