//! What the observing layer ([`super::observe`]) does first and last: the request id, the
//! request span, and every `ProxyError` turned into its response (the one place that does).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderValue, Request, Response};
use tracing::{Span, info, info_span, warn};

use crate::body::ProxyBody;
use crate::error::{Outcome, ProxyError};
use crate::headers::X_REQUEST_ID;

/// Opens the request's span: its id, method and path now; route, user, decision and status as
/// the request goes (recorded by the checks and by [`respond`]).
pub(crate) fn span<B>(id: &HeaderValue, req: &Request<B>) -> Span {
    info_span!(
        "request",
        request.id = id.to_str().unwrap_or("-"),
        http.method = %req.method(),
        http.path = req.uri().path(),
        route = tracing::field::Empty,
        user = tracing::field::Empty,
        client.forwarded = tracing::field::Empty,
        decision = tracing::field::Empty,
        http.status = tracing::field::Empty,
    )
}

/// The response the client gets, with its `x-request-id`: the upstream's, or the error's own
/// ([`ProxyError::to_response`], the one place errors become responses). Records the status and
/// decision on the current span and logs a refusal or failure (a few lines per second per class,
/// then a summary: metrics and audit still see each one).
pub(crate) fn respond(id: HeaderValue, result: Result<Response<ProxyBody>, ProxyError>) -> Response<ProxyBody> {
    let span = Span::current();
    span.record(
        "http.status",
        result
            .as_ref()
            .map_or_else(|e| e.status().as_u16(), |r| r.status().as_u16()),
    );
    span.record("decision", Outcome::of(&result).as_str());
    let mut resp = match result {
        Ok(resp) => resp,
        Err(err) => {
            use crate::telemetry::loglimit::{Class, admit};
            let class = match err.status().as_u16() {
                502 | 504 => Class::Upstream,
                500.. => Class::Unavailable,
                _ => Class::Rejected,
            };
            if admit(class) {
                if err.is_rejection() {
                    info!(error = %err, "request rejected");
                } else {
                    warn!(error = %err, "request failed");
                }
            }
            err.to_response(&id)
        }
    };
    resp.headers_mut().insert(X_REQUEST_ID, id);
    resp
}

/// Request ids: a random per-process prefix and a counter, 32 hex digits. Unique without a
/// random draw per request; unguessable across restarts.
pub(crate) struct IdGen {
    prefix: u64,
    counter: AtomicU64,
}

impl Default for IdGen {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        let prefix = *SEED.get_or_init(|| {
            let mut b = [0u8; 8];
            // A failed draw falls back to the clock: ids stay unique, just guessable.
            if crate::tls::provider().secure_random.fill(&mut b).is_err() {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                b = (now.as_nanos() as u64).to_be_bytes();
            }
            u64::from_be_bytes(b)
        });
        Self {
            prefix,
            counter: AtomicU64::new(0),
        }
    }
}

impl IdGen {
    pub(crate) fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 32];
        hex_into(&mut buf[..16], self.prefix);
        hex_into(&mut buf[16..], n);
        // Hex digits are always a valid header value.
        HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("-"))
    }
}

fn hex_into(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate() {
        *b = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_32_hex_digits() {
        let g = IdGen::default();
        let a = g.next();
        let b = g.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.to_str().unwrap().bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
