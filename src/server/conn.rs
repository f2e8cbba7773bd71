//! One client connection: TLS handshake (bounded), identity (parsed once), then HTTP/1.1 or h2
//! by ALPN through the shared tower stack.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use super::{ConnCtx, Server};
use crate::identity::PeerIdentity;
use crate::telemetry::loglimit::{Class, admit};
use crate::telemetry::metrics;

pub(super) async fn handle(
    mut stream: TcpStream,
    mut peer: SocketAddr,
    id: u64,
    server: Arc<Server>,
    mut drain: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let open = metrics::connections_open();
    open.increment(1.0);
    let _open = scopeguard(move || open.decrement(1.0));
    let _ = stream.set_nodelay(true);

    // One deadline covers the PROXY header and the TLS handshake together.
    let handshake_started = tokio::time::Instant::now();
    let deadline = handshake_started + server.listener.handshake_timeout;
    if let Some(pp) = &server.listener.proxy_protocol {
        match proxied_peer(pp, &mut stream, peer, deadline).await {
            Ok(real) => {
                if real != peer {
                    tracing::Span::current().record("client.real", tracing::field::display(real));
                }
                peer = real;
            }
            Err(reason) => {
                metrics::handshake(reason);
                audit_handshake(&server, id, peer, reason).await;
                return;
            }
        }
    }

    let tls_state = server.tls.load_full();
    let acceptor = TlsAcceptor::from(tls_state.config.clone());
    let accept = acceptor.accept(stream).into_fallible();
    let outcome = tokio::time::timeout_at(deadline, accept).await;
    metrics::handshake_duration(handshake_started.elapsed().as_secs_f64());
    let tls = match outcome {
        Err(_) => {
            metrics::handshake("timeout");
            debug!("TLS handshake timed out");
            audit_handshake(&server, id, peer, "timeout").await;
            return;
        }
        Ok(Err((e, tcp))) => {
            let reason = crate::tls::handshake_failure_reason(&e);
            metrics::handshake(reason);
            if admit(Class::Handshake) {
                warn!(reason, error = %e, "TLS handshake refused");
            }
            audit_handshake(&server, id, peer, reason).await;
            linger_close(tcp).await;
            return;
        }
        Ok(Ok(tls)) => tls,
    };

    let (_, session) = tls.get_ref();
    // The verifier requires a client certificate, so a session without one is a bug: fail closed.
    let chain: Arc<[rustls::pki_types::CertificateDer<'static>]> = session
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
        .unwrap_or_default();
    let Some(leaf) = chain.first() else {
        metrics::handshake("no_client_cert");
        warn!("handshake completed without a client certificate; closing");
        return;
    };
    // The handshake was verified under the trust current when it started; a reload may have
    // installed another while it was in flight. Judge the chain by the trust current now.
    let tls_state = match trusted_now(&server, tls_state, &chain) {
        Ok(state) => state,
        Err(e) => {
            let reason = crate::tls::verification_failure_reason(&e);
            metrics::handshake(reason);
            if admit(Class::Handshake) {
                warn!(reason, error = %e, "client certificate no longer trusted when its handshake completed; closing");
            }
            audit_handshake(&server, id, peer, reason).await;
            let mut tls = tls;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
            return;
        }
    };
    let identity = match PeerIdentity::from_der(leaf) {
        Ok(identity) => identity,
        Err(e) => {
            metrics::handshake("bad_certificate");
            warn!(error = %e, "client certificate verified but unreadable; closing");
            return;
        }
    };
    tracing::Span::current().record("client.id", tracing::field::display(identity.display_name()));
    if let Some(e) = &identity.spiffe_error {
        warn!(error = %e, uris = ?identity.uris, "client certificate has a spiffe:// URI SAN that is not a valid SVID");
    }

    let mut ctx = match ConnCtx::new(
        id,
        peer,
        identity,
        session.server_name().map(str::to_string),
        tls_state.server_uri.as_deref(),
    ) {
        Ok(ctx) => ctx,
        Err(e) => {
            warn!(error = %e, "closing");
            return;
        }
    };
    // Online revocation (distribution-point CRL, OCSP) needs the network, which rustls'
    // synchronous verifier cannot wait for: it runs here, before any request is read.
    if let Some(revocation) = &server.revocation
        && let Err(e) = revocation
            .check(&chain, &tls_state.client_ca, &ctx.identity.fingerprint_sha256)
            .await
    {
        let reason = e.reason();
        metrics::handshake(reason);
        if admit(Class::Handshake) {
            warn!(reason, error = %e, "client certificate refused after the handshake");
        }
        audit_refused_certificate(&server, id, peer, Some(&ctx.audit_identity), reason).await;
        let mut tls = tls;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
        return;
    }
    metrics::handshake("ok");
    if let Some(detector) = &server.detector {
        let now = crate::middleware::anomaly::now_ms();
        let (stats, flag) = detector.connection(&ctx.identity.fingerprint_sha256, peer.ip(), now);
        ctx.anomaly = Some(stats);
        if let Some(flag) = flag {
            crate::middleware::anomaly::report(&server.auditor, &ctx, &flag).await;
        }
    }
    // Trust ends at the certificate's notAfter, or earlier at the configured maximum age.
    let not_after = cert_deadline(ctx.identity.not_after);
    let (deadline, deadline_reason) = match server.listener.max_connection_age {
        Some(age) if tokio::time::Instant::now() + age < not_after => (tokio::time::Instant::now() + age, "max_age"),
        _ => (not_after, "cert_expired"),
    };
    let ctx = Arc::new(ctx);
    let ctx_chain = chain.clone();
    let registration =
        match server
            .connections
            .register(ctx.clone(), chain, server.listener.max_connections_per_identity)
        {
            Ok(r) => r,
            Err(over) => {
                // Refused cheaply: no HTTP, a TLS close_notify, counted and audited.
                metrics::connections_closed("identity_cap", 1);
                warn!(
                    open = over.open,
                    "identity holds max_connections_per_identity connections; closing"
                );
                audit_handshake(&server, id, peer, "identity_connection_cap").await;
                let mut tls = tls;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                return;
            }
        };
    // A reload that swept the registry before this connection registered cannot have seen it;
    // one that stored its trust after `trusted_now` above and swept after registering has. So
    // the trust is read again now that the connection is registered: any later reload's sweep
    // finds it.
    if let Err(e) = trusted_now(&server, tls_state, &ctx_chain) {
        let reason = crate::tls::verification_failure_reason(&e);
        metrics::handshake(reason);
        if admit(Class::Handshake) {
            warn!(reason, error = %e, "client certificate no longer trusted when its handshake completed; closing");
        }
        drop(registration);
        audit_refused_certificate(&server, id, peer, Some(&ctx.audit_identity), reason).await;
        let mut tls = tls;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
        return;
    }
    let conn_ctx = ctx.clone();
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let conflicts = (!h2).then(|| Arc::new(super::framing::Conflicts::default()));
    let activity = super::idle::Activity::new(tokio::time::Instant::now());
    let svc = WithConn {
        inner: server.stack.clone(),
        ctx,
        conflicts: conflicts.clone(),
        activity: activity.clone(),
    };

    // ALPN has already chosen the protocol (RFC 9113 §3.3: h2 over TLS only by ALPN), so each
    // connection is served by that protocol's own builder. hyper-util's auto builder would first
    // sniff the version from the first bytes, with no timeout: a client that completed the
    // handshake and sent nothing held its slot forever. Now the idle bounds (`idle.rs`) run
    // from the first moment (and the sniffing's cost is gone).
    let svc = TowerToHyperService::new(svc);
    let conn = if let (false, Some(conflicts)) = (h2, conflicts) {
        let framer = super::framing::Framer::new(server.listener.max_header_bytes, server.listener.max_headers);
        let io = TokioIo::new(super::framing::Watched::new(tls, framer, conflicts, activity.clone()));
        let mut h1 = hyper::server::conn::http1::Builder::new();
        // hyper's header timer would run from the moment it waits for a head, keep-alive pause
        // included (its default is 30 s once a timer is set): off, ztgate's own bounds apply.
        h1.timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_buf_size(server.listener.max_header_bytes)
            .max_headers(server.listener.max_headers);
        HttpConn::H1(Box::pin(h1.serve_connection(io, svc).with_upgrades()))
    } else {
        let io = TokioIo::new(tls);
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
    };
    let idle = tokio::time::sleep_until(activity.check(tokio::time::Instant::now(), &bounds).at());
    tokio::pin!(idle);
    let close = loop {
        tokio::select! {
            r = conn.as_mut() => break Err(r),
            _ = drain.wait_for(|d| *d) => break Ok(Close::Drain),
            () = registration.close.notified() => break Ok(Close::NoLongerTrusted),
            () = tokio::time::sleep_until(deadline) => break Ok(Close::Deadline(deadline_reason)),
            () = activity.head_started() => idle.as_mut().reset(tokio::time::Instant::now()),
            () = idle.as_mut() => match activity.check(tokio::time::Instant::now(), &bounds) {
                super::idle::Verdict::Expired(why) => break Ok(Close::Idle(why)),
                super::idle::Verdict::Wait(at) => idle.as_mut().reset(at),
            },
        }
    };
    let close = match close {
        Ok(close) => close,
        Err(Ok(())) => return,
        Err(Err(e)) => {
            debug!(error = %e, "connection ended with an error");
            if let Some(refused) = refused_request(&e) {
                audit_refused_request(&server, &conn_ctx, refused).await;
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
            audit_refused_request(&server, &conn_ctx, (reason, None)).await;
            if why == super::idle::IdleClose::HeaderRead {
                // Half a head: nothing to finish gracefully (hyper closed it the same way).
                metrics::protocol_error(why.label());
                return;
            }
            metrics::connections_closed(why.label(), 1);
        }
    }
    conn.as_mut().graceful_shutdown();
    let grace = server.drain_timeout;
    match tokio::time::timeout(grace, conn.as_mut()).await {
        Ok(Err(e)) => {
            debug!(error = %e, "connection ended with an error while closing");
            if let Some(refused) = refused_request(&e) {
                audit_refused_request(&server, &conn_ctx, refused).await;
            }
        }
        Ok(Ok(())) => {}
        Err(_) => debug!("connection did not finish within the drain timeout; cut"),
    }
}

type Svc = TowerToHyperService<WithConn>;

/// The stack for one connection: every request carries the connection's context, and on
/// HTTP/1.1 the mark of a head with both `Content-Length` and `Transfer-Encoding`.
#[derive(Clone)]
struct WithConn {
    inner: crate::middleware::Stack,
    ctx: Arc<ConnCtx>,
    /// HTTP/1.1 only: what the framing follower saw (`server/framing.rs`).
    conflicts: Option<Arc<super::framing::Conflicts>>,
    /// Requests in flight, for the idle bounds (`server/idle.rs`).
    activity: Arc<super::idle::Activity>,
}

type StackFuture = <crate::middleware::Stack as tower::Service<http::Request<hyper::body::Incoming>>>::Future;

impl tower::Service<http::Request<hyper::body::Incoming>> for WithConn {
    type Response = http::Response<super::idle::Tracked<crate::body::ProxyBody>>;
    type Error = <crate::middleware::Stack as tower::Service<http::Request<hyper::body::Incoming>>>::Error;
    type Future = super::idle::TrackedFuture<StackFuture>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.ctx.clone());
        if self.conflicts.as_ref().is_some_and(|c| c.next_request_conflicts()) {
            req.extensions_mut()
                .insert(crate::canonical::ContentLengthWithTransferEncoding);
        }
        let busy = self.activity.begin();
        super::idle::TrackedFuture::new(self.inner.call(req), busy)
    }
}
type Tls = tokio_rustls::server::TlsStream<TcpStream>;

/// One client connection's HTTP, by the protocol ALPN chose.
enum HttpConn {
    H1(
        std::pin::Pin<
            Box<hyper::server::conn::http1::UpgradeableConnection<TokioIo<super::framing::Watched<Tls>>, Svc>>,
        >,
    ),
    H2(std::pin::Pin<Box<hyper::server::conn::http2::Connection<TokioIo<Tls>, Svc, super::exec::SpanExecutor>>>),
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

/// The TLS state whose trust `chain` holds now. The handshake verified it under `seen`; each
/// state a reload has installed since is asked again (a pointer swap is the trust generation:
/// every reload stores a new `Arc`), until the current one has judged it.
fn trusted_now(
    server: &Server,
    mut seen: Arc<crate::tls::ServerTls>,
    chain: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Arc<crate::tls::ServerTls>, rustls::Error> {
    loop {
        let current = server.tls.load_full();
        if Arc::ptr_eq(&current, &seen) {
            return Ok(seen);
        }
        current.still_trusted(chain)?;
        seen = current;
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

/// The monotonic instant of a certificate's notAfter (Unix seconds). Far-future dates saturate.
fn cert_deadline(not_after: i64) -> tokio::time::Instant {
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // webpki accepts a certificate through the whole second of its notAfter; it is expired from
    // the next one, so that is when the connection ends.
    let left = u64::try_from(not_after.saturating_sub(now_unix).saturating_add(1)).unwrap_or(0);
    // One year past now is as good as never for a connection, and keeps the addition in range.
    let left = std::time::Duration::from_secs(left.min(365 * 24 * 3600));
    tokio::time::Instant::now() + left
}

/// Reads the PROXY protocol header (from a trusted source only) and returns the client address
/// it carries, or the socket's own for a LOCAL header. Errors are the reason label.
async fn proxied_peer(
    pp: &super::ProxyProtocolConfig,
    stream: &mut TcpStream,
    socket_peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<SocketAddr, &'static str> {
    use super::proxy_protocol::{self, ProxyHeader};
    if !pp.trusted.is_empty() && !pp.trusted.iter().any(|c| c.contains(socket_peer.ip())) {
        warn!("PROXY protocol connection from a source not in proxy_protocol_trusted; closing");
        return Err("proxy_protocol_untrusted");
    }
    match tokio::time::timeout_at(deadline, proxy_protocol::read(stream)).await {
        Err(_) => {
            debug!("no PROXY protocol header before the handshake timeout");
            Err("timeout")
        }
        Ok(Err(e)) => {
            warn!(error = %e, "PROXY protocol header refused; closing");
            Err(e.reason())
        }
        Ok(Ok(ProxyHeader::Proxied { source, .. })) => Ok(source),
        Ok(Ok(ProxyHeader::Local)) => Ok(socket_peer),
    }
}

/// A request hyper refused before it reached the stack (it answers those itself, on HTTP/1):
/// the audit reason and the status sent, logged and counted here; `None` for errors that are not
/// a refused request.
fn refused_request(e: &(dyn std::error::Error + 'static)) -> Option<(&'static str, Option<u16>)> {
    let hyper_error = std::iter::successors(Some(e), |e| e.source()).find_map(|e| e.downcast_ref::<hyper::Error>());
    let (reason, status) = hyper_error.and_then(classify_protocol_error)?;
    metrics::protocol_error(reason);
    if admit(Class::Rejected) {
        warn!(reason, status, error = %e, "request refused by the HTTP parser");
    }
    Some((reason, status))
}

/// Audits a [`refused_request`] like any other decision, under the connection's identity.
async fn audit_refused_request(server: &Server, ctx: &ConnCtx, (reason, status): (&'static str, Option<u16>)) {
    use crate::audit::record::{ProtocolRecord, SCHEMA_VERSION, timestamp};
    if !server.auditor.enabled() {
        return;
    }
    let record = ProtocolRecord {
        v: SCHEMA_VERSION,
        ts: timestamp(std::time::SystemTime::now()),
        kind: "protocol",
        conn_id: ctx.id,
        peer: &ctx.audit_peer,
        identity: &ctx.audit_identity,
        decision: "error",
        reason,
        status,
    };
    // Logged and counted by `emit` if it ever fails; the connection is closing either way.
    let _ = server.auditor.emit(&record).await;
}

/// The audit reason and the status hyper sent (none for a header timeout: it just closes), or
/// `None` for errors that are not a refused request (a client going away, an h2 GOAWAY).
fn classify_protocol_error(e: &hyper::Error) -> Option<(&'static str, Option<u16>)> {
    if e.is_parse_too_large() {
        // hyper answers 414 for a long request line and 431 for a large head; only its
        // message tells the two apart.
        return Some(if e.to_string().contains("URI") {
            ("uri-too-long", Some(414))
        } else {
            ("headers-too-large", Some(431))
        });
    }
    if e.is_parse() {
        return Some(("malformed-request", Some(400)));
    }
    if e.is_timeout() {
        return Some(("header-read-timeout", None));
    }
    None
}

async fn audit_handshake(server: &Server, conn_id: u64, peer: SocketAddr, reason: &'static str) {
    audit_refused_certificate(server, conn_id, peer, None, reason).await;
}

async fn audit_refused_certificate(
    server: &Server,
    conn_id: u64,
    peer: SocketAddr,
    identity: Option<&serde_json::value::RawValue>,
    reason: &'static str,
) {
    use crate::audit::record::{HandshakeRecord, SCHEMA_VERSION, timestamp};
    if !server.auditor.enabled() {
        return;
    }
    let record = HandshakeRecord {
        v: SCHEMA_VERSION,
        ts: timestamp(std::time::SystemTime::now()),
        kind: "handshake",
        conn_id,
        peer,
        identity,
        decision: "deny",
        reason,
    };
    // Logged and counted by `emit` if it ever fails; the connection is closing either way.
    let _ = server.auditor.emit(&record).await;
}

/// Closes a refused connection so the client can read our TLS alert: send FIN, then discard what
/// the client still sends (briefly, bounded). Closing with unread bytes in the socket makes the
/// kernel send RST, which can destroy the alert before the client reads it.
async fn linger_close(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if tcp.shutdown().await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while total < 64 * 1024 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), drain).await;
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
