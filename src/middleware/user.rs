//! User authentication on the routes that ask for it (`[[route]] user = "required"` or
//! `"optional"`): verifies the bearer token, puts the user in the request for the policy, and
//! passes the subject upstream in `x-ztgate-user` (client-sent `x-ztgate-*` were stripped by
//! sanitize). A present but invalid token is refused (401) even where a user is optional: a
//! client that sent credentials expects them to count.

use std::sync::Arc;

use http::Request;

use super::check::Check;
use crate::ctx::RequestCtx;
use crate::error::ProxyError;
use crate::headers::X_ZTGATE_USER;
use crate::telemetry::metrics;
use crate::upstream::{RouteTable, UserMode};
use crate::user::{UserAuth, UserError};

#[derive(Clone)]
pub struct UserCheck {
    auth: Option<Arc<UserAuth>>,
    routes: Arc<RouteTable>,
}

impl UserCheck {
    pub fn new(auth: Option<Arc<UserAuth>>, routes: Arc<RouteTable>) -> Self {
        Self { auth, routes }
    }
}

impl Check for UserCheck {
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), ProxyError> {
        let ctx = RequestCtx::of(req)?.clone();
        let mode = ctx
            .route
            .get()
            .and_then(|i| self.routes.get(*i))
            .map_or(UserMode::Off, |r| r.user);
        if mode == UserMode::Off {
            return Ok(());
        }
        // Validation guarantees `[user_auth]` exists when a route asks for users; fail closed
        // if it ever does not.
        let conn = ctx.peer();
        let Some(auth) = &self.auth else {
            return Err(ProxyError::Internal("user authentication is not configured"));
        };
        let user = match auth.authenticate(req.headers(), &conn.identity.fingerprint_sha256) {
            Ok(Some(user)) => user,
            Ok(None) if mode == UserMode::Optional => {
                metrics::user_auth("none");
                return Ok(());
            }
            Ok(None) => return Err(refuse(UserError::Missing)),
            Err(e) => return Err(refuse(e)),
        };
        metrics::user_auth("ok");
        tracing::Span::current().record("user", user.sub.as_str());
        req.headers_mut().insert(X_ZTGATE_USER, user.header.clone());
        let _ = ctx.user.set(user);
        Ok(())
    }
}

fn refuse(e: UserError) -> ProxyError {
    metrics::user_auth(e.as_str());
    ProxyError::Unauthenticated(e)
}
