//! User authentication on the routes that ask for it (`[[route]] user = "required"` or
//! `"optional"`): verifies the bearer token, puts the user in the request for the policy, and
//! passes the subject upstream in `x-ztgate-user` (client-sent `x-ztgate-*` were stripped by
//! sanitize). A present but invalid token is refused (401) even where a user is optional: a
//! client that sent credentials expects them to count.

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;

use super::check::Check;
use super::route::RouteMatch;
use crate::config::UserMode;
use crate::error::ProxyError;
use crate::server::ConnCtx;
use crate::telemetry::metrics;
use crate::upstream::RouteTable;
use crate::headers::X_ZTGATE_USER;
use crate::user::{User, UserAuth, UserError};

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
    fn check(&self, req: &mut Request<Incoming>) -> Result<(), ProxyError> {
        let ext = req.extensions();
        let mode = ext
            .get::<RouteMatch>()
            .and_then(|m| self.routes.get(m.index))
            .map_or(UserMode::Off, |r| r.user);
        if mode == UserMode::Off {
            return Ok(());
        }
        // Validation guarantees `[user_auth]` exists when a route asks for users; fail closed
        // if it ever does not.
        let (Some(auth), Some(conn)) = (&self.auth, ext.get::<Arc<ConnCtx>>()) else {
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
        if let Some(note) = req.extensions().get::<Arc<crate::audit::record::Note>>() {
            let _ = note.user.set(user.clone());
        }
        req.extensions_mut().insert::<Arc<User>>(user);
        Ok(())
    }
}

fn refuse(e: UserError) -> ProxyError {
    metrics::user_auth(e.as_str());
    ProxyError::Unauthenticated(e)
}
