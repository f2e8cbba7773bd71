//! Every reason a request does not reach its upstream, and the one place that turns it into a
//! response.
//!
//! Layers return `Err(ProxyError)`; the outermost layer calls [`ProxyError::to_response`].
//! Metrics and audit, which sit outside the checks, read [`ProxyError::status`] from the same
//! table. The match is exhaustive on purpose: a new variant must be given a status here.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{Either, Full};

use crate::body::{BoxError, ProxyBody};
use crate::jwt::UserError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed or ambiguous request: {}", .0.describe())]
    BadRequest(BadRequest),
    /// A route that needs a user got no valid user token.
    #[error("user not authenticated: {}", .0.as_str())]
    Unauthenticated(UserError),
    #[error("denied by policy (rule {}, reason {reason})", rule.as_deref().unwrap_or("none"))]
    Denied { rule: Option<String>, reason: &'static str },
    #[error("Host {host:?} does not match TLS SNI {sni:?}")]
    MisdirectedRequest { sni: String, host: String },
    #[error("no route for host {host:?} path {path:?}")]
    NoRoute { host: String, path: String },
    #[error("upstream {upstream} unreachable: {source}")]
    UpstreamUnavailable {
        upstream: String,
        #[source]
        source: BoxError,
    },
    #[error("upstream {upstream} failed: {source}")]
    UpstreamFailed {
        upstream: String,
        #[source]
        source: BoxError,
    },
    /// `request_timeout` passed before the client finished sending its request body.
    #[error("request not received within request_timeout")]
    RequestTimeout,
    #[error("upstream {upstream} did not answer within the response timeout")]
    UpstreamTimeout { upstream: String },
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("rate limited; retry after {retry_after_secs}s")]
    RateLimited { retry_after_secs: u64 },
    /// The audit log cannot be written and ztgate is configured not to serve unaudited requests.
    #[error("audit log unavailable; refusing requests (fail closed)")]
    AuditUnavailable,
    /// The cluster-wide rate limit could not be checked (Redis down or slow) and
    /// `[cluster_rate_limit] on_error = "closed"`: 503, fail closed.
    #[error("cluster rate limit unavailable; refusing requests (fail closed)")]
    RateLimitUnavailable,
    /// A bug in ztgate (a broken invariant). Fails closed with 500.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Why a request was refused with 400: malformed, or ambiguous (it cannot be made canonical
/// without guessing how the upstream would read it). Each variant is one reason code, used in
/// audit records (`reason`) and in `ztgate_bad_requests_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// HTTP/1.x without `Host`, or h2 without `:authority`/`host` (RFC 9112 §3.2).
    HostMissing,
    /// More than one `Host` field (RFC 9112 §3.2).
    HostDuplicate,
    /// `Host` differs from `:authority` or the absolute-form target (RFC 9113 §8.3.1).
    AuthorityConflict,
    /// The authority is not a plain `host[:port]`.
    AuthorityMalformed,
    /// The request target is not an absolute path.
    PathNotAbsolute,
    /// A malformed percent-escape in the path.
    PathBadEscape,
    /// `%2F` or `%5C` in the path.
    PathEncodedSeparator,
    /// A raw `\` in the path.
    PathBackslash,
    /// Dot segments that climb above the root.
    PathEscapesRoot,
    /// A raw control, space or non-ASCII byte in the path.
    PathInvalidCharacter,
    /// A `;` path parameter (raw or `%3B`) on a route that does not allow them.
    PathParameter,
    /// A header name containing `_` with `headers_with_underscores = "reject"`.
    HeaderUnderscore,
    /// HTTP/1.1 with both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1).
    ContentLengthWithTransferEncoding,
    /// The request body is malformed (bad chunking) or the client stopped sending it.
    BodyMalformed,
    /// The request target cannot be rebuilt for the upstream.
    TargetUnforwardable,
}

impl BadRequest {
    /// Every reason, for exporting each counter series from start-up.
    pub const ALL: [BadRequest; 15] = [
        BadRequest::HostMissing,
        BadRequest::HostDuplicate,
        BadRequest::AuthorityConflict,
        BadRequest::AuthorityMalformed,
        BadRequest::PathNotAbsolute,
        BadRequest::PathBadEscape,
        BadRequest::PathEncodedSeparator,
        BadRequest::PathBackslash,
        BadRequest::PathEscapesRoot,
        BadRequest::PathInvalidCharacter,
        BadRequest::PathParameter,
        BadRequest::HeaderUnderscore,
        BadRequest::ContentLengthWithTransferEncoding,
        BadRequest::BodyMalformed,
        BadRequest::TargetUnforwardable,
    ];

    /// The reason code (audit `reason`, metric label); documented in docs/audit.md.
    pub fn code(self) -> &'static str {
        match self {
            BadRequest::HostMissing => "host-missing",
            BadRequest::HostDuplicate => "host-duplicate",
            BadRequest::AuthorityConflict => "authority-conflict",
            BadRequest::AuthorityMalformed => "authority-malformed",
            BadRequest::PathNotAbsolute => "path-not-absolute",
            BadRequest::PathBadEscape => "path-bad-escape",
            BadRequest::PathEncodedSeparator => "path-encoded-separator",
            BadRequest::PathBackslash => "path-backslash",
            BadRequest::PathEscapesRoot => "path-escapes-root",
            BadRequest::PathInvalidCharacter => "path-invalid-character",
            BadRequest::PathParameter => "path-parameter",
            BadRequest::HeaderUnderscore => "header-underscore",
            BadRequest::ContentLengthWithTransferEncoding => "content-length-with-transfer-encoding",
            BadRequest::BodyMalformed => "body-malformed",
            BadRequest::TargetUnforwardable => "target-unforwardable",
        }
    }

    /// A short description for logs.
    pub fn describe(self) -> &'static str {
        match self {
            BadRequest::HostMissing => "no Host or :authority",
            BadRequest::HostDuplicate => "more than one Host field",
            BadRequest::AuthorityConflict => "Host differs from the request target's authority",
            BadRequest::AuthorityMalformed => "authority is not a plain host[:port]",
            BadRequest::PathNotAbsolute => "request target is not an absolute path",
            BadRequest::PathBadEscape => "malformed percent-escape in path",
            BadRequest::PathEncodedSeparator => "encoded '/' or '\\' in path",
            BadRequest::PathBackslash => "'\\' in path",
            BadRequest::PathEscapesRoot => "path escapes the root",
            BadRequest::PathInvalidCharacter => "raw control, space or non-ASCII byte in path",
            BadRequest::PathParameter => "';' path parameter on a route that does not allow them",
            BadRequest::HeaderUnderscore => "header name contains '_'",
            BadRequest::ContentLengthWithTransferEncoding => "both Content-Length and Transfer-Encoding",
            BadRequest::BodyMalformed => "malformed or truncated request body",
            BadRequest::TargetUnforwardable => "request target cannot be forwarded",
        }
    }
}

/// How a request ended: the `decision` of metrics, logs and audit records, decided in one place
/// ([`ProxyError::outcome`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered by the upstream (whatever its status).
    Allow = 0,
    /// Refused by policy, posture or user authentication (401/403).
    Deny = 1,
    /// Anything else ztgate refused or could not do (400, 404, 421, 5xx, ...).
    Error = 2,
    /// Refused by a rate limit (429).
    RateLimited = 3,
}

impl Outcome {
    /// The label value: `allow`, `deny`, `error`, `rate_limited`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
            Outcome::RateLimited => "rate_limited",
        }
    }

    /// The outcome of a finished request.
    pub fn of<T>(result: &Result<T, ProxyError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Allow,
            Err(e) => e.outcome(),
        }
    }
}

impl ProxyError {
    /// Which [`Outcome`] this refusal is. Exhaustive: a new variant must be classified here.
    pub fn outcome(&self) -> Outcome {
        match self {
            ProxyError::Denied { .. } | ProxyError::Unauthenticated(_) => Outcome::Deny,
            ProxyError::RateLimited { .. } => Outcome::RateLimited,
            ProxyError::BadRequest(_)
            | ProxyError::MisdirectedRequest { .. }
            | ProxyError::NoRoute { .. }
            | ProxyError::UpstreamUnavailable { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::RequestTimeout
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::PayloadTooLarge { .. }
            | ProxyError::AuditUnavailable
            | ProxyError::RateLimitUnavailable
            | ProxyError::Internal(_) => Outcome::Error,
        }
    }

    /// Whether this is the client's doing or the policy's (logged at INFO), rather than a
    /// failure of ztgate or its upstream (WARN).
    pub fn is_rejection(&self) -> bool {
        match self {
            ProxyError::Denied { .. }
            | ProxyError::Unauthenticated(_)
            | ProxyError::NoRoute { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::MisdirectedRequest { .. } => true,
            ProxyError::RateLimited { .. }
            | ProxyError::UpstreamUnavailable { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::RequestTimeout
            | ProxyError::UpstreamTimeout { .. }
            | ProxyError::PayloadTooLarge { .. }
            | ProxyError::AuditUnavailable
            | ProxyError::RateLimitUnavailable
            | ProxyError::Internal(_) => false,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Denied { .. } => StatusCode::FORBIDDEN,
            ProxyError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::MisdirectedRequest { .. } => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UpstreamUnavailable { .. } | ProxyError::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::AuditUnavailable | ProxyError::RateLimitUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A 429 telling the client to wait `wait`, in whole seconds rounded up (a client that waits
    /// that long gets through).
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        ProxyError::RateLimited {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    }

    /// Machine-readable reason code for logs and audit records (docs/audit.md).
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(r) => r.code(),
            ProxyError::Denied { reason, .. } => reason,
            ProxyError::Unauthenticated(e) => e.as_str(),
            ProxyError::NoRoute { .. } => "no-route",
            ProxyError::MisdirectedRequest { .. } => "misdirected-request",
            ProxyError::RateLimited { .. } => "rate-limited",
            ProxyError::PayloadTooLarge { .. } => "payload-too-large",
            ProxyError::UpstreamUnavailable { .. } => "upstream-unavailable",
            ProxyError::UpstreamFailed { .. } => "upstream-failed",
            ProxyError::UpstreamTimeout { .. } => "upstream-timeout",
            ProxyError::RequestTimeout => "request-timeout",
            ProxyError::AuditUnavailable => "audit-unavailable",
            ProxyError::RateLimitUnavailable => "rate-limit-unavailable",
            ProxyError::Internal(_) => "internal-error",
        }
    }

    /// The client-facing response: status, a short generic text and the request id. Nothing
    /// from the error's details (rule, upstream address, cause) reaches the client; those go to
    /// logs and audit.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<ProxyBody> {
        let status = self.status();
        let text = match self {
            ProxyError::BadRequest(_) => "bad request",
            ProxyError::Denied { .. } => "access denied",
            ProxyError::Unauthenticated(_) => "authentication required",
            ProxyError::NoRoute { .. } => "no route",
            ProxyError::MisdirectedRequest { .. } => "misdirected request",
            ProxyError::RateLimited { .. } => "rate limited",
            ProxyError::PayloadTooLarge { .. } => "payload too large",
            ProxyError::UpstreamUnavailable { .. } | ProxyError::UpstreamFailed { .. } => "upstream unavailable",
            ProxyError::UpstreamTimeout { .. } => "upstream timeout",
            ProxyError::RequestTimeout => "request timeout",
            ProxyError::AuditUnavailable | ProxyError::RateLimitUnavailable => "service unavailable",
            ProxyError::Internal(_) => "internal error",
        };
        let id = request_id.to_str().unwrap_or("-");
        let body = format!("{} {text} (request id {id})\n", status.as_u16());
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(crate::headers::X_REQUEST_ID, request_id.clone());
        if let ProxyError::RateLimited { retry_after_secs } = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
        }
        // RFC 6750: say a bearer token is expected, and whether the one sent was refused.
        if let ProxyError::Unauthenticated(e) = self {
            let v = if *e == UserError::Missing {
                "Bearer realm=\"ztgate\""
            } else {
                "Bearer realm=\"ztgate\", error=\"invalid_token\""
            };
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        resp
    }
}
