//! Makes the request safe to judge: removes identity headers the client sent (only ztgate sets
//! them) and normalises the path, so routing, policy and the upstream all see the same path.

use std::borrow::Cow;

use http::uri::PathAndQuery;
use http::{Request, Uri};
use hyper::body::Incoming;

use super::check::Check;
use crate::error::ProxyError;
use crate::policy::path::{PathError, normalize};
use crate::upstream::headers::strip_identity;

#[derive(Clone, Copy, Default)]
pub struct Sanitize;

impl Check for Sanitize {
    fn check(&self, req: &mut Request<Incoming>) -> Result<(), ProxyError> {
        strip_identity(req.headers_mut());
        normalize_uri(req.uri_mut())?;
        if let Some(note) = req.extensions().get::<std::sync::Arc<crate::audit::record::Note>>() {
            let _ = note.path.set(req.uri().path().to_string());
        }
        Ok(())
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
            PathError::InvalidCharacter => "raw control, space or non-ASCII byte in path",
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
