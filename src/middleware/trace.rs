//! Outermost layer: assigns the request id, opens the request span, and converts every
//! `ProxyError` into its response (the one place that does).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tower::{Layer, Service};
use tracing::{Instrument, info, info_span, warn};

use crate::body::ProxyBody;
use crate::ctx::{ConnCtx, RequestCtx, RequestId};
use crate::error::{Outcome, ProxyError};
use crate::headers::X_REQUEST_ID;

#[derive(Clone, Default)]
pub(crate) struct TraceLayer {
    ids: Arc<IdGen>,
}

impl TraceLayer {
    pub(crate) fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            ids: self.ids.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
    ids: Arc<IdGen>,
}

type TraceFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

impl<S> Service<Request<Incoming>> for Trace<S>
where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = TraceFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Inner layers are always ready (they hold no capacity); a readiness error could only be
        // a bug, and is reported per request by `call` instead.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let id = self.ids.next();
        let span = info_span!(
            "request",
            request.id = id.to_str().unwrap_or("-"),
            http.method = %req.method(),
                        http.path = req.uri().path(),
            route = tracing::field::Empty,
            user = tracing::field::Empty,
            client.forwarded = tracing::field::Empty,
            decision = tracing::field::Empty,
            http.status = tracing::field::Empty,
        );
        // The connection's context, put there by the server, becomes part of the request's.
        let Some(conn) = req.extensions_mut().remove::<Arc<ConnCtx>>() else {
            let err = ProxyError::Internal("request has no connection context");
            warn!(error = %err, "request failed");
            return Box::pin(std::future::ready(Ok(err.to_response(&id))));
        };
        req.extensions_mut()
            .insert(Arc::new(RequestCtx::new(RequestId(id.clone()), conn)));
        let fut = {
            let _guard = span.enter();
            self.inner.call(req)
        };
        Box::pin(
            async move {
                let result = fut.await;
                let span = tracing::Span::current();
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
                        if err.is_rejection() {
                            info!(error = %err, "request rejected");
                        } else {
                            warn!(error = %err, "request failed");
                        }
                        err.to_response(&id)
                    }
                };
                resp.headers_mut().insert(X_REQUEST_ID, id);
                Ok(resp)
            }
            .instrument(span),
        )
    }
}

/// Request ids: a random per-process prefix and a counter, 32 hex digits. Unique without a
/// random draw per request; unguessable across restarts.
struct IdGen {
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
    fn next(&self) -> HeaderValue {
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
