//! Makes the request safe to judge: removes identity headers the client sent (only ztgate sets
//! them) and normalises the path, so routing, policy and the upstream all see the same path.

use std::borrow::Cow;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use tower::{Layer, Service};

use super::BoxFuture;
use crate::error::{ProxyBody, ProxyError};
use crate::policy::path::{PathError, normalize};
use crate::upstream::headers::strip_identity;

#[derive(Clone, Copy, Default)]
pub struct SanitizeLayer;

impl<S> Layer<S> for SanitizeLayer {
    type Service = Sanitize<S>;
    fn layer(&self, inner: S) -> Sanitize<S> {
        Sanitize { inner }
    }
}

#[derive(Clone)]
pub struct Sanitize<S> {
    inner: S,
}

impl<S> Service<Request<Incoming>> for Sanitize<S>
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
        strip_identity(req.headers_mut());
        if let Err(e) = normalize_uri(req.uri_mut()) {
            return Box::pin(std::future::ready(Err(e)));
        }
        if let Some(note) = req.extensions().get::<std::sync::Arc<crate::audit::record::Note>>() {
            let _ = note.path.set(req.uri().path().to_string());
        }
        Box::pin(self.inner.call(req))
    }
}

fn normalize_uri(uri: &mut Uri) -> Result<(), ProxyError> {
    let normalized = normalize(uri.path()).map_err(|e| {
        ProxyError::BadRequest(match e {
            PathError::NotAbsolute => "request target is not an absolute path",
            PathError::BadEscape => "malformed percent-escape in path",
            PathError::EncodedSeparator => "encoded '/' or '\\' in path",
            PathError::Backslash => "'\\' in path",
            PathError::EscapesRoot => "path escapes the root",
        })
    })?;
    let Cow::Owned(path) = normalized else {
        return Ok(());
    };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query =
        Some(PathAndQuery::try_from(pq).map_err(|_| ProxyError::BadRequest("path cannot be normalised"))?);
    *uri = Uri::from_parts(parts).map_err(|_| ProxyError::BadRequest("path cannot be normalised"))?;
    Ok(())
}
