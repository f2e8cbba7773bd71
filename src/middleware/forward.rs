//! The innermost service: rewrite the request for its route's upstream (one authority, identity
//! headers ztgate sets, hop-by-hop fields removed) and forward it over the upstream's pooled
//! client; relay the answer (upgrades included) under the request's deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::BoxFuture;
use crate::body::{Deadline, DeadlineExceeded, ProxyBody, Side};
use crate::ctx::RequestCtx;
use crate::error::{BadRequest, ProxyError};
use crate::headers;
use crate::upstream::client_body::{Buffered, ClientBody, ClientBodyError};
use crate::upstream::{InTask, Replay, RouteTable, SendError, Upstream, Upstreams, websocket};

/// Forwards to the upstream of the request's route. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Forward {
    inner: Arc<Inner>,
}

struct Inner {
    routes: Arc<RouteTable>,
    upstreams: Upstreams,
    /// Time to the upstream's response head.
    latency: metrics::Histogram,
    /// `[listener] max_request_body`; `u64::MAX` when unlimited.
    max_body: u64,
    /// `[listener] request_timeout` (a route may override it).
    request_timeout: Option<Duration>,
    /// `[headers] forwarded`: set RFC 7239 `Forwarded`.
    set_forwarded: bool,
}

/// What [`Forward`] needs besides the upstreams and routes (from `[listener]` and `[headers]`).
#[derive(Debug, Clone, Copy)]
pub struct ForwardSettings {
    /// Largest request body in bytes; `None`: unlimited.
    pub max_request_body: Option<u64>,
    /// One deadline for a whole exchange; a route may override it.
    pub request_timeout: Option<Duration>,
    /// Set RFC 7239 `Forwarded`.
    pub set_forwarded: bool,
}

impl Forward {
    pub fn new(upstreams: Upstreams, routes: Arc<RouteTable>, settings: ForwardSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                routes,
                upstreams,
                latency: crate::telemetry::metrics::upstream_duration(),
                max_body: settings.max_request_body.unwrap_or(u64::MAX),
                request_timeout: settings.request_timeout,
                set_forwarded: settings.set_forwarded,
            }),
        }
    }
}

impl tower::Service<Request<Incoming>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        // The exchange's own future, boxed as it is (a wrapping `async` block would copy the
        // whole state once more when first polled).
        Box::pin(self.inner.clone().forward(req))
    }
}

impl Inner {
    async fn forward(self: Arc<Self>, mut req: Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
        let ctx = RequestCtx::of(&req)?.clone();
        let canonical = ctx.canonical()?;
        let Some(route) = ctx.route.get().and_then(|i| self.routes.get(*i)) else {
            return Err(ProxyError::Internal("request reached forward without a route"));
        };
        let Some(upstream) = self.upstreams.get(route.upstream) else {
            return Err(ProxyError::Internal("route names an upstream that does not exist"));
        };

        // An HTTP/1.1 upgrade, or a WebSocket over h2 (RFC 8441) that becomes one upstream.
        let ws_over_h2 = websocket::is_extended_connect(&req);
        if ws_over_h2 && upstream.version != Version::HTTP_11 {
            return Err(ProxyError::UpstreamFailed {
                upstream: upstream.name.clone(),
                source: "a WebSocket over h2 needs an http1 upstream".into(),
            });
        }
        let upgrade = ws_over_h2 || (req.version() == Version::HTTP_11 && headers::is_upgrade(req.headers()));
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

        // A declared length over the limit is refused before anything goes upstream; a streamed
        // body is cut off at the limit (below) and refused the same way.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return Err(ProxyError::PayloadTooLarge { limit: self.max_body });
        }
        let (mut parts, body) = req.into_parts();
        // An HTTP/1.1 client connection's own upstream connections (not for an upgrade, which
        // takes its connection away).
        let held = parts.extensions.remove::<Arc<InTask>>().filter(|_| !upgrade);
        let limited = http_body_util::Limited::new(body, usize::try_from(self.max_body).unwrap_or(usize::MAX));
        // `request_timeout`: the request body, the response head and the response body all end
        // at one instant. `body_done` tells a slow client (408) from a slow upstream (504).
        let deadline = route
            .request_timeout
            .unwrap_or(self.request_timeout)
            .map(|t| tokio::time::Instant::now() + t);
        let (body, body_done) = match deadline {
            None => (Deadline::none(limited), None),
            Some(at) => {
                let done = Arc::new(AtomicBool::new(hyper::body::Body::is_end_stream(&limited)));
                let body = Deadline::until(limited, at, Side::Request, Some(done.clone()));
                (body, Some(done))
            }
        };
        let body = match route.buffer_request_body {
            Some(limit) if !hyper::body::Body::is_end_stream(&body) => {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                match Buffered::read_ahead(body, limit).await {
                    Ok(b) => b,
                    Err(e) => return Err(client_body_refused(&e, self.max_body)),
                }
            }
            _ => Buffered::passthrough(body),
        };
        let (body, body_failed) = ClientBody::new(body);
        let ws_key = self.rewrite_head(&mut parts, upstream, canonical, &ctx, ws_over_h2, upgrade)?;
        let up_req = Request::from_parts(parts, body);
        let replay = Replay::of(&up_req, || up_req.body().replay());
        let fut = upstream.client.send(up_req, replay, held.as_deref());
        let sent = tokio::time::Instant::now();
        let head_by = match deadline {
            Some(at) if at < sent + upstream.response_timeout => at,
            _ => sent + upstream.response_timeout,
        };
        // Only a failed connect proves the upstream saw nothing; a timeout, a cut body, or the
        // client going away while this waits (the future dropped) may have left the request
        // with it.
        let reached = MaybeReached {
            ctx: &ctx,
            unseen: false,
        };
        let outcome = tokio::time::timeout_at(head_by, fut).await;
        self.latency.record(sent.elapsed().as_secs_f64());
        reached.settle(matches!(&outcome, Ok(Err(e)) if e.is_connect()));
        let resp = self.answer(
            outcome,
            upstream,
            deadline,
            head_by,
            body_done.as_deref(),
            body_failed.as_deref(),
        )?;
        let resp = relay(resp, upstream, client_upgrade, ws_key.as_ref())?;
        Ok(resp.map(|b| {
            Either::Left(match deadline {
                Some(at) => Deadline::until(b, at, Side::Response, None),
                None => Deadline::none(b),
            })
        }))
    }

    /// Rewrites the request head for `upstream`: its URI and version, the judged authority sent
    /// once (`Host` to HTTP/1.1, `:authority` to h2, RFC 9113 §8.3.1), hop-by-hop fields removed
    /// (RFC 9110 §7.6.1), and the identity headers only ztgate sets. Returns the WebSocket key
    /// when an h2 extended CONNECT becomes an HTTP/1.1 upgrade (RFC 8441).
    ///
    /// # Errors
    /// 400 `target-unforwardable` when the target cannot be rebuilt for the upstream.
    fn rewrite_head(
        &self,
        parts: &mut http::request::Parts,
        upstream: &Upstream,
        canonical: &crate::canonical::Canonical,
        ctx: &RequestCtx,
        ws_over_h2: bool,
        upgrade: bool,
    ) -> Result<Option<HeaderValue>, ProxyError> {
        // The identity the request was judged as (a trusted hop's forwarded client, else the
        // connection's own) is the one passed upstream.
        let conn = ctx.peer();
        // The judged authority goes upstream, once: as `Host` to HTTP/1.1 (the URI only picks
        // the pool), as `:authority` with no `host` field to h2 (RFC 9113 §8.3.1).
        let authority = match upstream.version {
            Version::HTTP_2 => Authority::try_from(canonical.authority.value().as_bytes())
                .map_err(|_| ProxyError::BadRequest(BadRequest::TargetUnforwardable))?,
            _ => upstream.authority.clone(),
        };
        // The client's path and query as parsed (not parsed again): only scheme and authority
        // change.
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(upstream.scheme.clone());
        uri.authority = Some(authority);
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest(BadRequest::TargetUnforwardable))?;
        parts.version = upstream.version;
        let te_trailers = upstream.version == Version::HTTP_2 && headers::te_trailers(&parts.headers);
        // After this, the client's `Connection` options can no longer remove anything ztgate
        // sets below (`Connection: host` must not drop Host).
        headers::strip_hop_by_hop(&mut parts.headers, upgrade);
        let ws_key = ws_over_h2
            .then(|| websocket::to_upgrade_request(&mut parts.method, &mut parts.headers))
            .transpose()
            .map_err(ProxyError::Internal)?;
        let h = &mut parts.headers;
        match upstream.version {
            Version::HTTP_2 => {
                h.remove(header::HOST);
                // `TE: trailers` is the one TE value h2 allows (RFC 9113 §8.2.2); gRPC servers
                // refuse calls without it.
                if te_trailers {
                    h.insert(header::TE, HeaderValue::from_static("trailers"));
                }
            }
            _ => {
                h.insert(header::HOST, canonical.authority.value().clone());
            }
        }
        if self.set_forwarded
            && let Ok(authority) = canonical.authority.value().to_str()
            && let Some(v) = headers::forwarded_value(conn.peer_addr.ip(), authority)
        {
            h.insert(header::FORWARDED, v);
        }
        // Sanitize already removed client-sent identity headers; these are ours.
        h.insert(headers::X_FORWARDED_CLIENT_CERT, conn.xfcc.clone());
        h.insert(headers::X_ZTGATE_IDENTITY, conn.identity_header.clone());
        // ztgate is the trust boundary: a client-supplied X-Forwarded-For is not passed on.
        h.insert(headers::X_FORWARDED_FOR, conn.peer_ip.clone());
        h.insert(headers::X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(headers::X_REQUEST_ID, ctx.id.0.clone());
        Ok(ws_key)
    }

    /// The upstream's answer, or the error it comes to: who was slow (408 for the client's
    /// body, 504 for the upstream), a refused connect (502), a body over the limit (413) or
    /// malformed (400), anything else the upstream did (502).
    fn answer(
        &self,
        outcome: Result<Result<Response<Incoming>, SendError>, tokio::time::error::Elapsed>,
        upstream: &Upstream,
        deadline: Option<tokio::time::Instant>,
        head_by: tokio::time::Instant,
        body_done: Option<&AtomicBool>,
        body_failed: Option<&AtomicBool>,
    ) -> Result<Response<Incoming>, ProxyError> {
        match outcome {
            // The deadline passed while the client was still sending its body: the client's fault.
            Err(_) if body_done.is_some_and(|d| !d.load(Ordering::Acquire)) => {
                crate::telemetry::metrics::request_timeout("request_body");
                Err(ProxyError::RequestTimeout)
            }
            Err(_) => {
                if deadline == Some(head_by) {
                    crate::telemetry::metrics::request_timeout("response_head");
                }
                Err(ProxyError::UpstreamTimeout {
                    upstream: upstream.name.clone(),
                })
            }
            Ok(Err(e)) if in_chain::<DeadlineExceeded>(&e) => {
                crate::telemetry::metrics::request_timeout("request_body");
                Err(ProxyError::RequestTimeout)
            }
            Ok(Err(e)) if e.is_connect() => Err(ProxyError::UpstreamUnavailable {
                upstream: upstream.name.clone(),
                source: crate::upstream::ConnectError::new(&upstream.authority, e.inner()).into(),
            }),
            Ok(Err(e)) if in_chain::<http_body_util::LengthLimitError>(&e) => {
                Err(ProxyError::PayloadTooLarge { limit: self.max_body })
            }
            Ok(Err(e)) if in_chain::<ClientBodyError>(&e) || body_failed.is_some_and(|f| f.load(Ordering::Acquire)) => {
                debug!(error = %e, "client request body failed");
                Err(ProxyError::BadRequest(BadRequest::BodyMalformed))
            }
            Ok(Err(e)) => Err(ProxyError::UpstreamFailed {
                upstream: upstream.name.clone(),
                source: e.into(),
            }),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// Relays the upstream's response head: a `101` only to a request that asked for the upgrade
/// (then both sides are joined), a WebSocket accept checked and turned back into an h2 `200`
/// (RFC 8441), hop-by-hop fields removed otherwise.
///
/// # Errors
/// 502 when the upstream switched protocols unasked or answered the wrong WebSocket key.
fn relay(
    mut resp: Response<Incoming>,
    upstream: &Upstream,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ws_key: Option<&HeaderValue>,
) -> Result<Response<Incoming>, ProxyError> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    // A 101 to a request that asked for no upgrade (ztgate removed the client's `Upgrade`,
    // or there was none) cannot be relayed: the tunnel would be dead on arrival.
    if switching && client_upgrade.is_none() {
        return Err(ProxyError::UpstreamFailed {
            upstream: upstream.name.clone(),
            source: "upstream switched protocols without an upgrade request".into(),
        });
    }
    if let (true, Some(key)) = (switching, ws_key)
        && !websocket::accepts(resp.headers(), key)
    {
        return Err(ProxyError::UpstreamFailed {
            upstream: upstream.name.clone(),
            source: "upstream's Sec-WebSocket-Accept does not answer the key".into(),
        });
    }
    if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                        debug!(error = %e, "upgraded connection ended");
                    }
                }
                Err(e) => debug!(error = %e, "upgrade failed"),
            }
        });
    }
    if switching && ws_key.is_some() {
        let (mut head, body) = resp.into_parts();
        websocket::to_connect_response(&mut head.status, &mut head.headers);
        resp = Response::from_parts(head, body);
    } else {
        headers::strip_hop_by_hop(resp.headers_mut(), switching);
    }
    Ok(resp)
}

/// The answer to a client body that failed while being read ahead (nothing was forwarded).
fn client_body_refused(e: &crate::body::BoxError, max_body: u64) -> ProxyError {
    if e.is::<http_body_util::LengthLimitError>() {
        ProxyError::PayloadTooLarge { limit: max_body }
    } else if e.is::<DeadlineExceeded>() {
        crate::telemetry::metrics::request_timeout("request_body");
        ProxyError::RequestTimeout
    } else {
        debug!(error = %e, "client request body failed while buffered");
        ProxyError::BadRequest(BadRequest::BodyMalformed)
    }
}

/// Whether an error of type `T` is somewhere in `e`'s source chain.
fn in_chain<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Marks the request as having reached the upstream when dropped, unless [`MaybeReached::settle`]
/// was told a failed connect proved otherwise. A guard rather than a statement after the wait,
/// so that a request whose client went away mid-wait is marked too (its audit record says
/// `client-closed` with `reached_upstream = true`).
struct MaybeReached<'a> {
    ctx: &'a RequestCtx,
    unseen: bool,
}

impl MaybeReached<'_> {
    fn settle(mut self, unseen: bool) {
        self.unseen = unseen;
    }
}

impl Drop for MaybeReached<'_> {
    fn drop(&mut self) {
        if !self.unseen {
            self.ctx.mark_reached_upstream();
        }
    }
}
