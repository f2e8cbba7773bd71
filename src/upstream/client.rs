//! The upstream's HTTP client: a keep-alive pool, and for a request that met a pooled
//! connection the upstream had just closed, one retry on a fresh connection.
//!
//! Why retry at all: an upstream closes idle keep-alive connections on its own timer (Node,
//! uvicorn and Apache after 5 s). A request sent on such a connection as it closes fails without
//! the upstream having processed it, and answering 502 would blame the upstream for ztgate's
//! pool. Which requests: only those whose method is idempotent (RFC 9110 §9.2.2, so a retry is
//! harmless even if the upstream did see the first one) and whose body can be sent again (none,
//! or read whole ahead by `buffer_request_body`), and only for failures before any response byte
//! (connection closed or reset). The retry uses a client that never pools, so it cannot pick
//! another stale connection.

use std::task::{Context, Poll};

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, Error as ClientError};

use super::UpstreamBody;

/// Connects every request to the upstream's configured address, whatever authority the request
/// URI names. For h2 upstreams the URI carries the judged authority (it becomes `:authority`);
/// the socket, and the TLS server name, still come from the upstream's `url`.
#[derive(Clone)]
pub(super) struct FixedDest<C> {
    pub(super) inner: C,
    pub(super) dest: Uri,
}

impl<C: tower::Service<Uri>> tower::Service<Uri> for FixedDest<C> {
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _requested: Uri) -> Self::Future {
        self.inner.call(self.dest.clone())
    }
}

pub(super) enum PooledClient {
    Plain(Client<FixedDest<HttpConnector>, UpstreamBody>),
    Tls(Client<FixedDest<HttpsConnector<HttpConnector>>, UpstreamBody>),
}

impl PooledClient {
    async fn request(&self, req: Request<UpstreamBody>) -> Result<Response<Incoming>, ClientError> {
        match self {
            PooledClient::Plain(c) => c.request(req).await,
            PooledClient::Tls(c) => c.request(req).await,
        }
    }
}

/// One upstream's clients: the keep-alive pool, and an unpooled one for retries.
pub(super) struct UpstreamClient {
    pub(super) pooled: PooledClient,
    pub(super) fresh: PooledClient,
}

/// What is needed to send a request again: its head and its whole body.
pub(super) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: UpstreamBody,
}

impl Replay {
    /// A copy of `req` to send again, when it may be: an idempotent method and a body that can
    /// be sent again (`replay_body`). `None` otherwise (no copy is made).
    pub(super) fn of(req: &Request<UpstreamBody>, replay_body: impl FnOnce() -> Option<UpstreamBody>) -> Option<Self> {
        if !req.method().is_idempotent() {
            return None;
        }
        let body = replay_body()?;
        Some(Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            body,
        })
    }

    fn into_request(self) -> Request<UpstreamBody> {
        let mut req = Request::new(self.body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

impl UpstreamClient {
    /// Sends `req` on a pooled connection; if that connection turns out to have been closed by
    /// the upstream before any response byte, sends `replay` once on a fresh connection.
    pub(super) async fn send(
        &self,
        req: Request<UpstreamBody>,
        replay: Option<Replay>,
    ) -> Result<Response<Incoming>, ClientError> {
        match self.pooled.request(req).await {
            Err(e) if replay.is_some() && closed_before_response(&e) => {
                crate::telemetry::metrics::upstream_retry("connection_closed");
                tracing::debug!(error = %e, "pooled upstream connection was closed; retrying on a new one");
                match replay {
                    Some(r) => self.fresh.request(r.into_request()).await,
                    None => Err(e),
                }
            }
            other => other,
        }
    }
}

/// Whether the upstream connection ended (closed, reset) before any byte of a response: the
/// shape of a keep-alive connection the upstream closed as the request went out.
fn closed_before_response(e: &ClientError) -> bool {
    if e.is_connect() {
        return false;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
        {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        cur = err.source();
    }
    false
}
