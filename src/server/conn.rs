//! One client connection: established by `handshake.rs`, then served over HTTP/1.1 or h2 (by
//! ALPN) through the shared tower stack until it ends or ztgate closes it (drain, trust withdrawn,
//! certificate expiry, idle bounds).

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tracing::debug;

use super::handshake::{Established, Tls, establish};
use super::refusal::{audit_refused_request, refused_request};
use super::woken::Parts;
use super::{ConnCtx, Server};
use crate::telemetry::metrics;
use crate::upstream::InTask;
use std::task::Poll;

pub(super) async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    server: Arc<Server>,
    drain: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let open = metrics::connections_open();
    open.increment(1.0);
    let _open = scopeguard(move || open.decrement(1.0));
    let _ = stream.set_nodelay(true);
    if let Some(established) = establish(stream, peer, id, &server).await {
        serve(established, &server, drain).await;
    }
}

/// Serves HTTP on an established connection until it ends, or closes it (gracefully, then
/// bounded by the drain timeout) when ztgate must.
async fn serve(est: Established, server: &Server, mut drain: watch::Receiver<bool>) {
    let Established {
        tls,
        ctx,
        registration,
        deadline,
        deadline_reason,
    } = est;
    let conn_ctx = ctx.clone();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let conflicts = (!h2).then(|| Arc::new(super::framing::Conflicts::default()));
    let activity = super::idle::Activity::new(tokio::time::Instant::now());
    // HTTP/1.1 carries one request at a time: its upstream connections are its own, driven by
    // this task (`upstream/in_task.rs`). h2's concurrent streams use the shared pool.
    let held = (!h2).then(|| Arc::new(InTask::default()));
    let svc = WithConn {
        inner: std::sync::Mutex::new(server.stack.clone()),
        ctx,
        conflicts: conflicts.clone(),
        activity: activity.clone(),
        held: held.clone(),
    };
    let drive = async {
        match &held {
            Some(held) => held.drive().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(drive);

    // ALPN has already chosen the protocol (RFC 9113 §3.3: h2 over TLS only by ALPN), so each
    // connection is served by that protocol's own builder. hyper-util's auto builder would first
    // sniff the version from the first bytes, with no timeout: a client that completed the
    // handshake and sent nothing held its slot forever. Now the idle bounds (`idle.rs`) run
    // from the first moment (and the sniffing's cost is gone).
    let conn = if let (false, Some(conflicts)) = (h2, conflicts) {
        let framer = super::framing::Framer::new(server.listener.max_header_bytes, server.listener.max_headers);
        let io = TokioIo::new(super::idle::Sending::new(
            super::framing::Watched::new(tls, framer, conflicts, activity.clone()),
            activity.clone(),
        ));
        let mut h1 = hyper::server::conn::http1::Builder::new();
        // hyper's header timer would run from the moment it waits for a head, keep-alive pause
        // included (its default is 30 s once a timer is set): off, ztgate's own bounds apply.
        h1.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(server.listener.max_header_bytes);
        // hyper's own limit is 100 fields, kept in an array on the stack; any explicit limit,
        // even 100, makes it fill a heap array of that many slots for every head (~1.7k
        // instructions per request). Only a different limit is worth that.
        if server.listener.max_headers != HYPER_MAX_HEADERS {
            h1.max_headers(server.listener.max_headers);
        }
        HttpConn::H1(Box::pin(h1.serve_connection(io, svc).with_upgrades()))
    } else {
        let io = TokioIo::new(super::idle::Sending::new(tls, activity.clone()));
        let exec = super::exec::SpanExecutor {
            span: tracing::Span::current(),
        };
        let mut h2 = hyper::server::conn::http2::Builder::new(exec);
        h2.timer(TokioTimer::new())
            .keep_alive_interval(server.listener.idle_timeout)
            // RFC 8441: WebSockets over h2 (extended CONNECT).
            .enable_connect_protocol()
            .max_concurrent_streams(256)
            .max_header_list_size(u32::try_from(server.listener.max_header_bytes).unwrap_or(u32::MAX));
        HttpConn::H2(Box::pin(h2.serve_connection(io, svc)))
    };
    tokio::pin!(conn);
    // Until something asks it to close, the connection just runs. Closing is graceful (HTTP/1
    // after the current response, h2 with GOAWAY), then bounded by the drain timeout.
    let bounds = super::idle::Bounds {
        first_request: server.listener.first_request_timeout,
        keepalive: server.listener.keepalive_timeout,
        header_read: server.listener.header_read_timeout,
        send: server.listener.send_timeout,
    };
    let idle = tokio::time::sleep_until(activity.check(tokio::time::Instant::now(), &bounds).at());
    tokio::pin!(idle);
    // The close conditions, as one part: polled only when one of them was woken.
    let closing = async {
        loop {
            tokio::select! {
                _ = drain.wait_for(|d| *d) => return Close::Drain,
                () = registration.close.notified() => return Close::NoLongerTrusted,
                () = tokio::time::sleep_until(deadline) => return Close::Deadline(deadline_reason),
                () = idle.as_mut() => match activity.check(tokio::time::Instant::now(), &bounds) {
                    super::idle::Verdict::Expired(why) => return Close::Idle(why),
                    super::idle::Verdict::Wait(at) => idle.as_mut().reset(at),
                },
            }
        }
    };
    tokio::pin!(closing);
    // Three parts, each polled only when woken (`woken.rs`): the client's side, the upstream
    // connections' driver, the close conditions.
    const SERVING: usize = 0;
    const UPSTREAM: usize = 1;
    const CLOSING: usize = 2;
    let parts = Parts::<3>::new();
    let close = std::future::poll_fn(|cx| {
        parts.turn(cx, || {
            // The upstream side first: an upstream close already received is seen before the
            // client's next request could be sent on that connection.
            let _ = parts.poll(UPSTREAM, drive.as_mut());
            if let Poll::Ready(r) = parts.poll(SERVING, conn.as_mut()) {
                return Poll::Ready(Err(r));
            }
            parts.poll(CLOSING, closing.as_mut()).map(Ok)
        })
    })
    .await;
    let close = match close {
        Ok(close) => close,
        Err(Ok(())) => return,
        Err(Err(e)) => {
            debug!(error = %e, "connection ended with an error");
            if let Some(refused) = refused_request(&e) {
                audit_refused_request(server, &conn_ctx, refused).await;
            }
            return;
        }
    };
    match close {
        // Counted by the reload that asked, which knows how many it closed.
        Close::Drain | Close::NoLongerTrusted => {}
        Close::Deadline(reason) => {
            metrics::connections_closed(reason, 1);
            debug!(reason, "closing the connection");
        }
        Close::Idle(why) => {
            let reason = why.reason();
            debug!(reason, "closing an idle connection");
            audit_refused_request(server, &conn_ctx, (reason, None)).await;
            if why == super::idle::IdleClose::HeaderRead {
                // Half a head: nothing to finish gracefully (hyper closed it the same way).
                metrics::protocol_error(why.label());
                return;
            }
            if why == super::idle::IdleClose::Send {
                // The client reads nothing: a graceful close would only wait for the drain
                // timeout to write what it will not read.
                metrics::connections_closed(why.label(), 1);
                return;
            }
            metrics::connections_closed(why.label(), 1);
        }
    }
    conn.as_mut().graceful_shutdown();
    let grace = server.drain_timeout;
    parts.mark(SERVING);
    let finishing = std::future::poll_fn(|cx| {
        parts.turn(cx, || {
            let r = parts.poll(SERVING, conn.as_mut());
            let _ = parts.poll(UPSTREAM, drive.as_mut());
            r
        })
    });
    match tokio::time::timeout(grace, finishing).await {
        Ok(Err(e)) => {
            debug!(error = %e, "connection ended with an error while closing");
            if let Some(refused) = refused_request(&e) {
                audit_refused_request(server, &conn_ctx, refused).await;
            }
        }
        Ok(Ok(())) => {}
        Err(_) => debug!("connection did not finish within the drain timeout; cut"),
    }
}

/// hyper's HTTP/1.1 field limit when none is set (`proto::h1::role::DEFAULT_MAX_HEADERS`).
const HYPER_MAX_HEADERS: usize = 100;

type Svc = WithConn;

/// The stack for one connection: every request carries the connection's context, and on
/// HTTP/1.1 the mark of a head with both `Content-Length` and `Transfer-Encoding`.
///
/// A hyper service over the tower stack without hyper-util's `TowerToHyperService`, which clones
/// the whole stack for every request (a few dozen reference counts and a copy of the nested
/// layers): the connection's one copy is called in place. The lock is never contended (the
/// connection's task is the only caller) and never held across an await.
struct WithConn {
    inner: std::sync::Mutex<crate::middleware::Stack>,
    ctx: Arc<ConnCtx>,
    /// HTTP/1.1 only: what the framing follower saw (`server/framing.rs`).
    conflicts: Option<Arc<super::framing::Conflicts>>,
    /// Requests in flight, for the idle bounds (`server/idle.rs`).
    activity: Arc<super::idle::Activity>,
    /// HTTP/1.1 only: the connection's own upstream connections, for each request to use.
    held: Option<Arc<InTask>>,
}

type StackFuture = <crate::middleware::Stack as tower::Service<http::Request<hyper::body::Incoming>>>::Future;

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for WithConn {
    type Response = http::Response<super::idle::Tracked<crate::body::ProxyBody>>;
    type Error = <crate::middleware::Stack as tower::Service<http::Request<hyper::body::Incoming>>>::Error;
    type Future = super::idle::TrackedFuture<StackFuture>;

    fn call(&self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        use tower::Service as _;
        req.extensions_mut().insert(self.ctx.clone());
        if let Some(held) = &self.held {
            req.extensions_mut().insert(held.clone());
        }
        if self.conflicts.as_ref().is_some_and(|c| c.next_request_conflicts()) {
            req.extensions_mut()
                .insert(crate::canonical::ContentLengthWithTransferEncoding);
        }
        let busy = self.activity.begin();
        // A panic elsewhere cannot leave the stack half-changed (calls do not mutate it), so a
        // poisoned lock is used as it is.
        let mut stack = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // tower's contract: ready before called. Every layer is always ready (none holds
        // capacity; `observe` reports a readiness error per request), so this never waits.
        let _ = stack.poll_ready(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        super::idle::TrackedFuture::new(stack.call(req), busy)
    }
}

/// The client connection's socket as hyper sees it, per protocol: TLS, watched for
/// `send_timeout`, and on HTTP/1.1 followed by the framing check.
type H1Io = TokioIo<super::idle::Sending<super::framing::Watched<Tls>>>;
type H2Io = TokioIo<super::idle::Sending<Tls>>;

/// One client connection's HTTP, by the protocol ALPN chose.
enum HttpConn {
    H1(std::pin::Pin<Box<hyper::server::conn::http1::UpgradeableConnection<H1Io, Svc>>>),
    H2(std::pin::Pin<Box<hyper::server::conn::http2::Connection<H2Io, Svc, super::exec::SpanExecutor>>>),
}

impl HttpConn {
    /// HTTP/1.1: close after the response in progress; h2: GOAWAY, then finish open streams.
    fn graceful_shutdown(&mut self) {
        match self {
            HttpConn::H1(c) => c.as_mut().graceful_shutdown(),
            HttpConn::H2(c) => c.as_mut().graceful_shutdown(),
        }
    }
}

impl std::future::Future for HttpConn {
    type Output = Result<(), hyper::Error>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            HttpConn::H1(c) => c.as_mut().poll(cx),
            HttpConn::H2(c) => c.as_mut().poll(cx),
        }
    }
}

/// Why an established connection is being closed by ztgate.
enum Close {
    /// SIGTERM: the listener drains.
    Drain,
    /// A certificate/CRL or policy reload no longer trusts or allows this identity.
    NoLongerTrusted,
    /// The certificate's notAfter (`cert_expired`) or `max_connection_age` (`max_age`).
    Deadline(&'static str),
    /// Past an idle bound (`first_request_timeout`, `keepalive_timeout`, `header_read_timeout`).
    Idle(super::idle::IdleClose),
}

/// Runs `f` when dropped, however the connection ends.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
