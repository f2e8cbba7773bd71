//! Picks the request's route (canonical host + judged path prefix) so that policy can match on
//! it and forward knows its upstream. Refuses with 421 a request whose authority is not the name
//! the client asked for in TLS SNI (a connection for one service must not be reused for
//! another), and with 400 a path with `;` parameters on a route that does not allow them.

use std::sync::Arc;

use http::Request;

use super::check::Check;
use crate::ctx::RequestCtx;
use crate::error::{BadRequest, ProxyError};
use crate::policy::path::PathParameters;
use crate::upstream::RouteTable;

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

    fn resolve<B>(&self, req: &Request<B>) -> Result<usize, ProxyError> {
        let ctx = RequestCtx::of(req)?;
        let canonical = ctx.canonical()?;
        let host = canonical.authority.host();
        if self.require_sni_match
            && let Some(sni) = ctx.conn.sni.as_deref()
            && !sni.trim_end_matches('.').eq_ignore_ascii_case(host)
        {
            return Err(ProxyError::MisdirectedRequest {
                sni: sni.to_string(),
                host: host.to_string(),
            });
        }
        let path = canonical.judged_path(req.uri().path());
        let Some((index, route)) = self
            .routes
            .find(Some(host), path)
            .and_then(|i| self.routes.get(i).map(|r| (i, r)))
        else {
            return Err(ProxyError::NoRoute {
                host: host.to_string(),
                path: path.to_string(),
            });
        };
        if canonical.path_without_parameters.is_some() && route.path_parameters == PathParameters::Refuse {
            return Err(ProxyError::BadRequest(BadRequest::PathParameter));
        }
        // `call` runs inside the request span opened by the observing layer.
        tracing::Span::current().record("route", route.name.as_str());
        Ok(index)
    }
}

impl Check for Route {
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), ProxyError> {
        let m = self.resolve(req)?;
        let ctx = RequestCtx::of(req)?;
        let _ = ctx.route.set(m);
        // A pinned route admits only the pinned keys/certificates, whatever the policy says.
        if let Some(pins) = self.routes.get(m).and_then(|r| r.pins.as_ref())
            && !pins.allows(&ctx.peer().identity)
        {
            return Err(ProxyError::Denied {
                rule: None,
                reason: "certificate-not-pinned",
            });
        }
        Ok(())
    }
}
