//! From an accepted TCP connection to an established one: the PROXY header (when configured), the
//! TLS handshake (bounded), the trust current when it completes, the peer identity (parsed once),
//! online revocation and the per-identity cap. Every refusal goes through
//! [`refuse`](super::refusal::refuse).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::refusal::{Refusal, refuse};
use super::registry::Registration;
use super::{ConnCtx, Server};
use crate::identity::PeerIdentity;
use crate::telemetry::metrics;

pub(super) type Tls = tokio_rustls::server::TlsStream<TcpStream>;

/// A connection ready for HTTP: its TLS stream, its context, its place in the registry (which
/// a reload uses to close it) and the instant its trust ends.
pub(super) struct Established {
    pub(super) tls: Tls,
    pub(super) ctx: Arc<ConnCtx>,
    pub(super) registration: Registration,
    /// The certificate's notAfter, or earlier `max_connection_age`.
    pub(super) deadline: tokio::time::Instant,
    /// `cert_expired` or `max_age`: why the connection closes at `deadline`.
    pub(super) deadline_reason: &'static str,
}

/// Runs the handshake and everything that must hold before a request is read. `None`: the
/// connection was refused (counted, logged, audited and closed by [`refuse`]).
pub(super) async fn establish(
    mut stream: TcpStream,
    mut peer: SocketAddr,
    id: u64,
    server: &Server,
) -> Option<Established> {
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
                refuse(
                    server,
                    id,
                    peer,
                    None,
                    Refusal::ProxyProtocol(reason),
                    &"PROXY protocol header refused",
                )
                .await;
                return None;
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
            refuse(
                server,
                id,
                peer,
                None,
                Refusal::Timeout,
                &"no handshake within handshake_timeout",
            )
            .await;
            return None;
        }
        Ok(Err((e, tcp))) => {
            let reason = crate::tls::handshake_failure_reason(&e);
            refuse(server, id, peer, None, Refusal::Handshake(reason), &e).await;
            super::refusal::linger_close(tcp).await;
            return None;
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
        refuse(
            server,
            id,
            peer,
            None,
            Refusal::NoClientCert,
            &"handshake completed without a client certificate",
        )
        .await;
        close(tls).await;
        return None;
    };
    // The handshake was verified under the trust current when it started; a reload may have
    // installed another while it was in flight. Judge the chain by the trust current now.
    let tls_state = match trusted_now(server, tls_state, &chain) {
        Ok(state) => state,
        Err(e) => {
            let reason = crate::tls::verification_failure_reason(&e);
            refuse(server, id, peer, None, Refusal::NoLongerTrusted(reason), &e).await;
            close(tls).await;
            return None;
        }
    };
    let identity = match PeerIdentity::from_der(leaf) {
        Ok(identity) => identity,
        Err(e) => {
            refuse(server, id, peer, None, Refusal::BadCertificate, &e).await;
            close(tls).await;
            return None;
        }
    };
    tracing::Span::current().record("client.id", tracing::field::display(identity.display_name()));
    if let Some(e) = &identity.spiffe_error {
        tracing::warn!(error = %e, uris = %identity.uris.join(", "), "client certificate has a spiffe:// URI SAN that is not a valid SVID");
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
            refuse(server, id, peer, None, Refusal::IdentityUnrenderable, &e).await;
            close(tls).await;
            return None;
        }
    };
    // Online revocation (distribution-point CRL, OCSP) needs the network, which rustls'
    // synchronous verifier cannot wait for: it runs here, before any request is read.
    if let Some(revocation) = &server.revocation
        && let Err(e) = revocation
            .check(&chain, &tls_state.client_ca, &ctx.identity.fingerprint_sha256)
            .await
    {
        refuse(
            server,
            id,
            peer,
            Some(&ctx.audit_identity),
            Refusal::Revoked(e.reason()),
            &e,
        )
        .await;
        close(tls).await;
        return None;
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
    let registration =
        match server
            .connections
            .register(ctx.clone(), chain.clone(), server.listener.max_connections_per_identity)
        {
            Ok(r) => r,
            Err(over) => {
                // Refused cheaply: no HTTP, a TLS close_notify.
                let detail = format!(
                    "the identity holds {} connections (max_connections_per_identity)",
                    over.open
                );
                refuse(
                    server,
                    id,
                    peer,
                    Some(&ctx.audit_identity),
                    Refusal::IdentityCap,
                    &detail,
                )
                .await;
                close(tls).await;
                return None;
            }
        };
    // A reload that swept the registry before this connection registered cannot have seen it;
    // one that stored its trust after `trusted_now` above and swept after registering has. So
    // the trust is read again now that the connection is registered: any later reload's sweep
    // finds it.
    if let Err(e) = trusted_now(server, tls_state, &chain) {
        drop(registration);
        let reason = crate::tls::verification_failure_reason(&e);
        refuse(
            server,
            id,
            peer,
            Some(&ctx.audit_identity),
            Refusal::NoLongerTrusted(reason),
            &e,
        )
        .await;
        close(tls).await;
        return None;
    }
    Some(Established {
        tls,
        ctx,
        registration,
        deadline,
        deadline_reason,
    })
}

/// Ends a refused TLS connection with close_notify.
async fn close(mut tls: Tls) {
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
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
/// it carries, or the socket's own for a LOCAL header. Errors are the reason label
/// (`proxy_protocol_untrusted`: a source not in `proxy_protocol_trusted`; `timeout`; or why the
/// header was malformed), which the caller logs and audits.
async fn proxied_peer(
    pp: &super::ProxyProtocolConfig,
    stream: &mut TcpStream,
    socket_peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<SocketAddr, &'static str> {
    use super::proxy_protocol::{self, ProxyHeader};
    if !pp.trusted.is_empty() && !pp.trusted.iter().any(|c| c.contains(socket_peer.ip())) {
        return Err("proxy_protocol_untrusted");
    }
    match tokio::time::timeout_at(deadline, proxy_protocol::read(stream)).await {
        Err(_) => Err("timeout"),
        Ok(Err(e)) => Err(e.reason()),
        Ok(Ok(ProxyHeader::Proxied { source, .. })) => Ok(source),
        Ok(Ok(ProxyHeader::Local)) => Ok(socket_peer),
    }
}
