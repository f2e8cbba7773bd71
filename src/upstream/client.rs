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
use super::in_task::{InTask, Place, Quota, Sent};

/// Connects every request to the upstream's configured address, whatever authority the request
/// URI names. For h2 upstreams the URI carries the judged authority (it becomes `:authority`);
/// the socket, and the TLS server name, still come from the upstream's `url`.
#[derive(Clone)]
pub(crate) struct FixedDest<C> {
    pub(crate) inner: C,
    pub(crate) dest: Uri,
}

impl<C> tower::Service<Uri> for FixedDest<C>
where
    C: tower::Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = PeerGoneWrites<C::Response>;
    type Error = C::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _requested: Uri) -> Self::Future {
        let connecting = self.inner.call(self.dest.clone());
        // Once per new upstream connection, not per request.
        Box::pin(async move {
            Ok(PeerGoneWrites {
                inner: connecting.await?,
                gone: false,
            })
        })
    }
}

/// An upstream connection on which a write to a peer that has gone (reset, or closed for
/// reading) is discarded instead of failing the connection.
///
/// Why: an upstream may answer before it has read the request body (401 to an upload) and close.
/// hyper's HTTP/1 client fails the whole exchange on the first failed write, even when the
/// answer is already waiting in the socket, and the client would get a 502 for a response that
/// arrived. With the write side discarded, hyper goes on reading, hands over the response, and
/// the connection ends at the read side's EOF or reset as it would anyway. Nothing is lost: the
/// peer could not have received those bytes.
pub(crate) struct PeerGoneWrites<T> {
    inner: T,
    /// A write failed with the peer gone; later writes are discarded too.
    gone: bool,
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for PeerGoneWrites<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

fn peer_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    )
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for PeerGoneWrites<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.gone {
            return Poll::Ready(Ok(buf.len()));
        }
        match std::pin::Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Err(e)) if peer_gone(&e) => {
                self.gone = true;
                crate::telemetry::metrics::upstream_early_close();
                Poll::Ready(Ok(buf.len()))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.gone {
            return Poll::Ready(Ok(()));
        }
        match std::pin::Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) if peer_gone(&e) => {
                self.gone = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.gone {
            return Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum();
        if self.gone {
            return Poll::Ready(Ok(total));
        }
        match std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Err(e)) if peer_gone(&e) => {
                self.gone = true;
                crate::telemetry::metrics::upstream_early_close();
                Poll::Ready(Ok(total))
            }
            other => other,
        }
    }
}

impl<T: hyper_util::client::legacy::connect::Connection> hyper_util::client::legacy::connect::Connection
    for PeerGoneWrites<T>
{
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        self.inner.connected()
    }
}

pub(crate) enum PooledClient {
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

/// One upstream's clients: the keep-alive pool, an unpooled one for retries, and for an
/// HTTP/1.1 upstream the connector for connections held by client connections (`in_task.rs`).
pub(crate) struct UpstreamClient {
    /// One keep-alive pool per per-core worker (one for the shared runtime), by worker index.
    pub(crate) pooled: Box<[PooledClient]>,
    pub(crate) fresh: PooledClient,
    /// HTTP/1.1 upstreams only.
    pub(crate) direct: Option<Direct>,
    /// Distinguishes this client's held connections from another's ([`next_upstream_id`]).
    pub(crate) id: u64,
    /// How long a held connection may wait for a request (`pool_idle_timeout`).
    pub(crate) idle_timeout: std::time::Duration,
    /// `held_connections`: how many connections client connections may hold at once.
    pub(crate) quota: std::sync::Arc<Quota>,
}

/// Connects one upstream connection to be held by a client connection, over plain TCP or TLS.
#[derive(Clone)]
pub(crate) enum Direct {
    Plain(FixedDest<HttpConnector>),
    Tls(FixedDest<HttpsConnector<HttpConnector>>),
}

impl Direct {
    /// The upstream's `url` (scheme and authority).
    fn dest(&self) -> &Uri {
        match self {
            Direct::Plain(c) => &c.dest,
            Direct::Tls(c) => &c.dest,
        }
    }
}

/// Why a request got no answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Over the shared pool.
    #[error(transparent)]
    Pooled(ClientError),
    /// No connection could be made (refused, unresolvable, TLS handshake failed).
    #[error(transparent)]
    Connect(crate::body::BoxError),
    /// On a held connection: the exchange failed (closed, reset, malformed answer, or the
    /// request body failed).
    #[error(transparent)]
    Exchange(hyper::Error),
}

impl SendError {
    /// Whether no connection was made, so the upstream cannot have seen the request.
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            SendError::Pooled(e) => e.is_connect(),
            SendError::Connect(_) => true,
            SendError::Exchange(_) => false,
        }
    }

    /// The underlying error (its source chain carries the cause).
    pub(crate) fn inner(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            SendError::Pooled(e) => e,
            SendError::Connect(e) => &**e,
            SendError::Exchange(e) => e,
        }
    }
}

/// What is needed to send a request again: its head and its whole body.
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: UpstreamBody,
}

impl Replay {
    /// A copy of `req` to send again, when it may be: an idempotent method and a body that can
    /// be sent again (`replay_body`). `None` otherwise (no copy is made).
    pub(crate) fn of(req: &Request<UpstreamBody>, replay_body: impl FnOnce() -> Option<UpstreamBody>) -> Option<Self> {
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
    ///
    /// With `held` (an HTTP/1.1 client connection's upstream connections) and an HTTP/1.1
    /// upstream, the request goes on the connection that client connection holds for this
    /// upstream, connected first when there is none (`in_task.rs`); the same retry applies.
    pub(crate) async fn send(
        &self,
        req: Request<UpstreamBody>,
        replay: Option<Replay>,
        held: Option<&InTask>,
    ) -> Result<Response<Incoming>, SendError> {
        if let (Some(held), Some(direct)) = (held, &self.direct)
            && req.method() != Method::CONNECT
        {
            return self.send_held(held, direct, req, replay).await;
        }
        // Boxed: the pooled client's futures are large, and this future is moved whole (into
        // the response timeout, among others) on every request, held ones included.
        Box::pin(self.send_pooled(req, replay)).await.map_err(SendError::Pooled)
    }

    async fn send_pooled(
        &self,
        req: Request<UpstreamBody>,
        replay: Option<Replay>,
    ) -> Result<Response<Incoming>, ClientError> {
        // This worker's pool: its connections are driven by this thread's runtime.
        let pooled = &self.pooled[super::worker() % self.pooled.len()];
        match pooled.request(req).await {
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

impl UpstreamClient {
    async fn send_held(
        &self,
        held: &InTask,
        direct: &Direct,
        mut req: Request<UpstreamBody>,
        mut replay: Option<Replay>,
    ) -> Result<Response<Incoming>, SendError> {
        origin_form(req.uri_mut());
        let mut req = match held.send(self.id, req) {
            Sent::Held(answer) => match answer.await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    // Never written (the connection closed first): it goes on a new one as is.
                    Some(req) => req,
                    None => {
                        let error = e.into_error();
                        // Taken: a request is retried once, whichever path it goes on next.
                        match replay.take() {
                            Some(r) if closed_before_response(&error) => {
                                crate::telemetry::metrics::upstream_retry("connection_closed");
                                tracing::debug!(error = %error, "held upstream connection was closed; retrying on a new one");
                                r.into_request()
                            }
                            _ => return Err(SendError::Exchange(error)),
                        }
                    }
                },
            },
            Sent::Unsent(req) => req,
        };
        // `held_connections` reached: this request goes through the shared pool, so quiet
        // client connections cannot pin more of the upstream's connections than that.
        let Some(place) = self.quota.take() else {
            if !self.quota.is_off() {
                crate::telemetry::metrics::upstream_held_full();
            }
            let dest = direct.dest();
            let mut uri = http::uri::Parts::from(std::mem::take(req.uri_mut()));
            uri.scheme = dest.scheme().cloned();
            uri.authority = dest.authority().cloned();
            if let Ok(uri) = Uri::from_parts(uri) {
                *req.uri_mut() = uri;
            }
            // The replay goes along unless a retry above used it: the pool's connection may be
            // one the upstream closed, as a held one may.
            return Box::pin(self.send_pooled(req, replay)).await.map_err(SendError::Pooled);
        };
        origin_form(req.uri_mut());
        // Boxed: once per upstream connection, and the connect's large state is then not part of
        // the future every request moves.
        match direct {
            Direct::Plain(c) => Box::pin(self.connect_and_send(held, c, place, req)).await,
            Direct::Tls(c) => Box::pin(self.connect_and_send(held, c, place, req)).await,
        }
    }

    /// Connects to the upstream, hands the connection to `held` and sends `req` on it.
    async fn connect_and_send<C>(
        &self,
        held: &InTask,
        connector: &FixedDest<C>,
        place: Place,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError>
    where
        C: tower::Service<Uri> + Clone + Send + 'static,
        C::Future: Send + 'static,
        C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        C::Error: Into<crate::body::BoxError>,
    {
        use tower::ServiceExt as _;
        let io = connector
            .clone()
            .oneshot(connector.dest.clone())
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(SendError::Exchange)?;
        held.adopt(self.id, self.idle_timeout, place, sender, conn, req)
            .await
            .map_err(SendError::Exchange)
    }
}

/// The request target in origin form (RFC 9112 §3.2.1): the path and query only, as the
/// pooled client sends it to an upstream that is not a proxy.
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return;
    }
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    if let Ok(origin) = Uri::from_parts(parts) {
        *uri = origin;
    }
}

/// Whether the upstream connection ended (closed, reset) before any byte of a response: the
/// shape of a keep-alive connection the upstream closed as the request went out.
fn closed_before_response(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.downcast_ref::<ClientError>().is_some_and(ClientError::is_connect) {
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
