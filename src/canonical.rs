//! The one canonical request: the authority (and later the path) that routing, the SNI check,
//! policy, audit and the upstream request all use. Derived once by the sanitize layer; anything
//! that cannot be made canonical without guessing how the upstream will read it is refused.
//!
//! Authority rules (RFC 9110 §7.2, RFC 9112 §3.2, RFC 9113 §8.3.1):
//! - HTTP/1.x: exactly one `Host` field. None, or two (even equal), is refused. An absolute-form
//!   request target whose authority differs from `Host` is refused (RFC 9112 §3.2.2 tells an
//!   origin to ignore Host; a gateway that judges one and forwards the other would be bypassed).
//! - h2: `:authority` and at most one `host`; when both are present they must be equal.
//! - The value must be `host[:port]`: no userinfo (RFC 9110 §4.2.4), no percent-encoding, a
//!   port of 1–5 digits. The host is lowercased and one trailing dot removed, so `Admin.Internal.`
//!   and `admin.internal` are the same name everywhere.

use http::header::{self, HeaderMap};
use http::{HeaderValue, Uri, Version};

/// Why a request's authority is refused (400). Each maps to one reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// No `Host` (HTTP/1.x) or neither `:authority` nor `host` (h2).
    #[error("no Host or :authority")]
    Missing,
    /// More than one `Host` field (RFC 9112 §3.2: a server MUST answer 400).
    #[error("more than one Host field")]
    Duplicate,
    /// `:authority` (or an absolute-form target) and `Host` name different authorities.
    #[error("Host differs from the request target's authority")]
    Conflict,
    /// Not `host[:port]`: userinfo, percent-encoding, a bad port, an empty host or bytes that no
    /// host name contains.
    #[error("malformed authority")]
    Malformed,
}

/// The request's authority in canonical form: the host lowercased without a trailing dot, and
/// the port if one was given. Cheap to clone (a `HeaderValue` shares its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CanonicalAuthority {
    /// `host[:port]`, exactly what goes upstream as `Host` (HTTP/1.1) or `:authority` (h2).
    value: HeaderValue,
    /// Length of the host part of `value` (for IPv6 literals, with the brackets).
    host_len: usize,
}

impl CanonicalAuthority {
    /// The host without port, lowercase, no trailing dot (`app.internal`, `[::1]`).
    pub(crate) fn host(&self) -> &str {
        // `value` was built from a `&str` of ASCII bytes, so this cannot fail; an empty host
        // would only ever fail to match a route.
        self.value.to_str().map_or("", |s| &s[..self.host_len])
    }

    /// `host[:port]` as a header value.
    pub(crate) fn value(&self) -> &HeaderValue {
        &self.value
    }

    /// Parses and canonicalises one authority (`Host` value or `:authority`).
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, AuthorityError> {
        let (rewritten, host_len) = canonicalise(raw)?;
        let value = match rewritten {
            Some(v) => HeaderValue::from_str(&v),
            None => HeaderValue::from_bytes(raw),
        }
        .map_err(|_| AuthorityError::Malformed)?;
        Ok(Self { value, host_len })
    }

    /// Like [`CanonicalAuthority::parse`] for a `Host` field; an already canonical value is kept
    /// as it is (no copy).
    pub(crate) fn from_host(value: &HeaderValue) -> Result<Self, AuthorityError> {
        let (rewritten, host_len) = canonicalise(value.as_bytes())?;
        let value = match rewritten {
            Some(v) => HeaderValue::from_str(&v).map_err(|_| AuthorityError::Malformed)?,
            None => value.clone(),
        };
        Ok(Self { value, host_len })
    }
}

/// Checks `raw` as `host[:port]`; returns the canonical form when it differs from `raw`, and
/// the host's length in it.
fn canonicalise(raw: &[u8]) -> Result<(Option<String>, usize), AuthorityError> {
    let raw = std::str::from_utf8(raw).map_err(|_| AuthorityError::Malformed)?;
    let (host, port) = split_host_port(raw)?;
    let canonical_host = canonical_host(host)?;
    let host_len = canonical_host.len();
    Ok(match (canonical_host, port) {
        (std::borrow::Cow::Borrowed(h), None) if h.len() == raw.len() => (None, host_len),
        (std::borrow::Cow::Borrowed(h), Some(_)) if h.len() == host.len() => (None, host_len),
        (h, None) => (Some(h.into_owned()), host_len),
        (h, Some(p)) => (Some(format!("{h}:{p}")), host_len),
    })
}

/// Marks a request whose HTTP/1.1 head had both `Content-Length` and `Transfer-Encoding`
/// (request extension, set by the connection, refused by the sanitize layer): hyper's parser
/// keeps only `Transfer-Encoding`, so the request itself no longer shows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContentLengthWithTransferEncoding;

/// The request as ztgate judges it, derived once by the sanitize layer (request extension):
/// routing, the SNI check, policy, audit and the forwarded request all read this value.
#[derive(Debug, Clone)]
pub(crate) struct Canonical {
    pub authority: CanonicalAuthority,
    /// The normalised path with every `;` parameter removed, when it has any; whether the route
    /// allows parameters decides if the request goes on (see `policy::path::PathParameters`).
    pub path_without_parameters: Option<Box<str>>,
}

impl Canonical {
    /// The path routing and policy judge: `uri_path` (already normalised), or the same without
    /// parameters.
    pub(crate) fn judged_path<'a>(&'a self, uri_path: &'a str) -> &'a str {
        self.path_without_parameters.as_deref().unwrap_or(uri_path)
    }
}

/// Derives the request's one authority from the request target and the `Host` field(s).
pub(crate) fn authority(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Result<CanonicalAuthority, AuthorityError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::Duplicate);
    }
    let target = uri
        .authority()
        .map(|a| CanonicalAuthority::parse(a.as_str().as_bytes()))
        .transpose()?;
    let host = host.map(CanonicalAuthority::from_host).transpose()?;
    match (target, host) {
        (Some(t), Some(h)) if t != h => Err(AuthorityError::Conflict),
        // HTTP/1.1 requires Host even with an absolute-form target (RFC 9112 §3.2).
        (Some(_), None) if version == Version::HTTP_11 => Err(AuthorityError::Missing),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => Err(AuthorityError::Missing),
    }
}

/// Splits `host[:port]`, refusing userinfo and a port that is not 1–5 digits ≤ 65535.
fn split_host_port(raw: &str) -> Result<(&str, Option<&str>), AuthorityError> {
    // `@` (userinfo) is refused by the host check below: it is no host byte.
    let (host, port) = if raw.starts_with('[') {
        let end = raw.find(']').ok_or(AuthorityError::Malformed)?;
        match &raw[end + 1..] {
            "" => (&raw[..=end], None),
            rest => (
                &raw[..=end],
                Some(rest.strip_prefix(':').ok_or(AuthorityError::Malformed)?),
            ),
        }
    } else {
        match raw.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || p.len() > 5 || p.parse::<u32>().map_or(true, |n| n > 65535) || p.starts_with('+'))
    {
        return Err(AuthorityError::Malformed);
    }
    Ok((host, port))
}

/// Lowercases `host` and drops one trailing dot. Accepts an IPv6 literal in brackets or a
/// reg-name of letters, digits, `-`, `.` and `_` (RFC 3986 unreserved without `~`); refuses
/// percent-encoding and every other byte, which upstreams would each decode their own way.
fn canonical_host(host: &str) -> Result<std::borrow::Cow<'_, str>, AuthorityError> {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ok = !inner.is_empty() && inner.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        return if ok && inner.parse::<std::net::Ipv6Addr>().is_ok() {
            Ok(if inner.bytes().any(|b| b.is_ascii_uppercase()) {
                std::borrow::Cow::Owned(host.to_ascii_lowercase())
            } else {
                std::borrow::Cow::Borrowed(host)
            })
        } else {
            Err(AuthorityError::Malformed)
        };
    }
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    // One pass (this runs for every request): allowed bytes, no empty label, any uppercase.
    let (mut upper, mut prev_dot) = (false, true);
    for b in trimmed.bytes() {
        match b {
            b'.' if prev_dot => return Err(AuthorityError::Malformed),
            b'.' => prev_dot = true,
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => prev_dot = false,
            b'A'..=b'Z' => (upper, prev_dot) = (true, false),
            _ => return Err(AuthorityError::Malformed),
        }
    }
    if trimmed.is_empty() {
        return Err(AuthorityError::Malformed);
    }
    Ok(if upper {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    })
}

impl From<AuthorityError> for crate::error::BadRequest {
    fn from(e: AuthorityError) -> Self {
        use AuthorityError as A;
        match e {
            A::Missing => crate::error::BadRequest::HostMissing,
            A::Duplicate => crate::error::BadRequest::HostDuplicate,
            A::Conflict => crate::error::BadRequest::AuthorityConflict,
            A::Malformed => crate::error::BadRequest::AuthorityMalformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1(target: &str, hosts: &[&str]) -> Result<String, AuthorityError> {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, HeaderValue::from_str(v).unwrap());
        }
        authority(Version::HTTP_11, &target.parse().unwrap(), &h).map(|a| a.value().to_str().unwrap().to_string())
    }

    fn h2(authority_: &str, hosts: &[&str]) -> Result<String, AuthorityError> {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, HeaderValue::from_str(v).unwrap());
        }
        let uri: Uri = format!("https://{authority_}/x").parse().unwrap();
        authority(Version::HTTP_2, &uri, &h).map(|a| a.value().to_str().unwrap().to_string())
    }

    #[test]
    fn one_host_is_the_authority_and_is_canonicalised() {
        assert_eq!(h1("/", &["app.internal"]).as_deref(), Ok("app.internal"));
        assert_eq!(h1("/", &["App.Internal.:8443"]).as_deref(), Ok("app.internal:8443"));
        assert_eq!(h1("/", &["[::1]:8443"]).as_deref(), Ok("[::1]:8443"));
        assert_eq!(h1("/", &["127.0.0.1"]).as_deref(), Ok("127.0.0.1"));
        let a = CanonicalAuthority::parse(b"Admin.Internal.:443").unwrap();
        assert_eq!(a.host(), "admin.internal");
    }

    #[test]
    fn http1_without_exactly_one_host_is_refused() {
        assert_eq!(h1("/", &[]), Err(AuthorityError::Missing));
        assert_eq!(
            h1("/", &["app.internal", "admin.internal"]),
            Err(AuthorityError::Duplicate)
        );
        assert_eq!(
            h1("/", &["app.internal", "app.internal"]),
            Err(AuthorityError::Duplicate)
        );
    }

    #[test]
    fn absolute_form_must_agree_with_host() {
        assert_eq!(
            h1("http://app.internal/x", &["app.internal"]).as_deref(),
            Ok("app.internal")
        );
        assert_eq!(
            h1("http://admin.internal/x", &["app.internal"]),
            Err(AuthorityError::Conflict)
        );
        assert_eq!(h1("http://app.internal/x", &[]), Err(AuthorityError::Missing));
    }

    #[test]
    fn h2_authority_and_host_must_agree() {
        assert_eq!(h2("app.internal", &[]).as_deref(), Ok("app.internal"));
        assert_eq!(h2("app.internal", &["APP.internal"]).as_deref(), Ok("app.internal"));
        assert_eq!(h2("app.internal", &["admin.internal"]), Err(AuthorityError::Conflict));
        assert_eq!(
            h2("app.internal", &["app.internal", "app.internal"]),
            Err(AuthorityError::Duplicate)
        );
    }

    #[test]
    fn authorities_that_upstreams_read_differently_are_malformed() {
        for bad in [
            "user@app.internal",
            "app.internal:",
            "app.internal:99999",
            "app.internal:8x",
            "ad%6Din.internal",
            "",
            ".",
            "a..b",
            "[::1",
            "[zz::1]",
            "app internal",
            "app.internal:80:80",
        ] {
            assert_eq!(
                CanonicalAuthority::parse(bad.as_bytes()),
                Err(AuthorityError::Malformed),
                "{bad:?}"
            );
        }
    }
}
