//! Makes the request safe to judge, and derives the one canonical request
//! ([`Canonical`]) that routing, policy, audit and the upstream all use:
//! - removes client-sent fields only ztgate sets, or that upstreams would read as identity,
//!   address, path or method (`headers::strip_client_headers`);
//! - derives the one authority (`Host` / `:authority`, never two; `canonical::authority`);
//! - normalises the path (`policy::path::normalize`) and notes its `;` parameters.
//!
//! What cannot be made canonical without guessing how the upstream reads it is refused with
//! 400 and a reason code ([`BadRequest`]).

use std::borrow::Cow;
use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{Request, Uri};

use super::check::Check;
use crate::canonical::{Canonical, authority};
use crate::ctx::RequestCtx;
use crate::error::{BadRequest, ProxyError};
use crate::headers::{HeadersConfig, Removed, strip_client_headers};
use crate::policy::path::{normalize, without_parameters};

#[derive(Clone, Default)]
pub struct Sanitize {
    headers: Arc<HeadersConfig>,
}

impl Sanitize {
    pub fn new(headers: Arc<HeadersConfig>) -> Self {
        for r in Removed::ALL {
            crate::telemetry::metrics::request_header_removed(r.as_str(), 0);
        }
        Self { headers }
    }
}

impl Check for Sanitize {
    fn check<B>(&self, req: &mut Request<B>) -> Result<(), ProxyError> {
        let canonical = canonicalise(req, &self.headers).map_err(ProxyError::BadRequest)?;
        let ctx = RequestCtx::of(req)?;
        let _ = ctx.path.set(canonical.judged_path(req.uri().path()).to_string());
        let _ = ctx.canonical.set(canonical);
        Ok(())
    }
}

/// The body type does not matter to any of this: generic so it can be tested without sockets.
fn canonicalise<B>(req: &mut Request<B>, headers: &HeadersConfig) -> Result<Canonical, BadRequest> {
    if req
        .extensions()
        .get::<crate::canonical::ContentLengthWithTransferEncoding>()
        .is_some()
    {
        return Err(BadRequest::ContentLengthWithTransferEncoding);
    }
    strip_client_headers(req.headers_mut(), headers, |r| {
        crate::telemetry::metrics::request_header_removed(r.as_str(), 1);
    })
    .map_err(|_| BadRequest::HeaderUnderscore)?;
    let authority = authority(req.version(), req.uri(), req.headers())?;
    // A WebSocket over h2 (RFC 8441 extended CONNECT) reaches the upstream as a `GET` upgrade:
    // policy judges that method.
    if crate::upstream::websocket::is_extended_connect(req) {
        *req.method_mut() = http::Method::GET;
    }
    normalize_uri(req.uri_mut())?;
    let path_without_parameters = without_parameters(req.uri().path())?.map(String::into_boxed_str);
    Ok(Canonical {
        authority,
        path_without_parameters,
    })
}

fn normalize_uri(uri: &mut Uri) -> Result<(), BadRequest> {
    let Cow::Owned(path) = normalize(uri.path())? else {
        return Ok(());
    };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).map_err(|_| BadRequest::TargetUnforwardable)?);
    *uri = Uri::from_parts(parts).map_err(|_| BadRequest::TargetUnforwardable)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Version, header};

    fn request(version: Version, target: &str, hosts: &[&str]) -> Request<()> {
        let mut req = Request::builder().version(version).uri(target).body(()).unwrap();
        for h in hosts {
            req.headers_mut()
                .append(header::HOST, HeaderValue::from_str(h).unwrap());
        }
        req
    }

    #[test]
    fn one_authority_and_one_path_are_derived() {
        let mut req = request(Version::HTTP_11, "/x/../Admin;v=1/users?q=%2F", &["App.Internal.:8443"]);
        req.headers_mut()
            .insert("x_ztgate_identity", HeaderValue::from_static("forged"));
        let c = canonicalise(&mut req, &HeadersConfig::default()).unwrap();
        assert_eq!(c.authority.host(), "app.internal");
        assert_eq!(c.authority.value(), "app.internal:8443");
        assert_eq!(req.uri().path(), "/Admin;v=1/users");
        assert_eq!(req.uri().query(), Some("q=%2F"));
        assert_eq!(c.judged_path(req.uri().path()), "/Admin/users");
        assert!(!req.headers().contains_key("x_ztgate_identity"));
    }

    #[test]
    fn ambiguous_requests_are_refused_with_their_reason() {
        let cases: &[(Version, &str, &[&str], BadRequest)] = &[
            (Version::HTTP_11, "/", &[], BadRequest::HostMissing),
            (
                Version::HTTP_11,
                "/",
                &["app.internal", "admin.internal"],
                BadRequest::HostDuplicate,
            ),
            (
                Version::HTTP_2,
                "https://app.internal/",
                &["admin.internal"],
                BadRequest::AuthorityConflict,
            ),
            (
                Version::HTTP_11,
                "/",
                &["user@admin.internal"],
                BadRequest::AuthorityMalformed,
            ),
            (
                Version::HTTP_11,
                "/a%2Fb",
                &["app.internal"],
                BadRequest::PathEncodedSeparator,
            ),
            (
                Version::HTTP_11,
                "/admin%3Bx/users",
                &["app.internal"],
                BadRequest::PathParameter,
            ),
            (
                Version::HTTP_11,
                "/app/..;/admin",
                &["app.internal"],
                BadRequest::PathParameter,
            ),
        ];
        for (version, target, hosts, want) in cases {
            let mut req = request(*version, target, hosts);
            assert_eq!(
                canonicalise(&mut req, &HeadersConfig::default()).err(),
                Some(*want),
                "{target} {hosts:?}"
            );
        }
    }
}
