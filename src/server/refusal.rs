//! Refusals: every way a connection is refused before it serves HTTP ([`Refusal`], one path:
//! [`refuse`]), and requests hyper refuses before they reach the stack (protocol events).

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::{ConnCtx, Server};
use crate::telemetry::loglimit::{Class, admit};
use crate::telemetry::metrics;

/// Why a connection was refused before it served HTTP. Each is counted under its [`reason`]
/// (`ztgate_tls_handshakes_total{result}`; the identity cap in
/// `ztgate_connections_closed_total{reason="identity_cap"}`), logged (rate limited) and audited
/// (`kind = "handshake"`, the same reason).
///
/// [`reason`]: Refusal::reason
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The PROXY protocol header was refused (the reason names why).
    ProxyProtocol(&'static str),
    /// No complete handshake within `handshake_timeout`.
    Timeout,
    /// rustls refused the handshake (the reason names why: `unknown_ca`, `expired`, ...).
    Handshake(&'static str),
    /// The handshake completed without a client certificate (a bug: the verifier requires one).
    NoClientCert,
    /// The verified certificate cannot be parsed for its identity.
    BadCertificate,
    /// The identity cannot be rendered into the headers and audit fields ztgate sets.
    IdentityUnrenderable,
    /// A reload during the handshake removed the trust the chain needs.
    NoLongerTrusted(&'static str),
    /// Online revocation (OCSP, distribution-point CRL) refused the certificate.
    Revoked(&'static str),
    /// The identity already holds `max_connections_per_identity` connections.
    IdentityCap,
}

impl Refusal {
    /// The reason label and audit `reason` (docs/troubleshooting.md).
    pub(super) fn reason(self) -> &'static str {
        match self {
            Refusal::ProxyProtocol(r) | Refusal::Handshake(r) | Refusal::NoLongerTrusted(r) | Refusal::Revoked(r) => r,
            Refusal::Timeout => "timeout",
            Refusal::NoClientCert => "no_client_cert",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::IdentityUnrenderable => "identity_unrenderable",
            Refusal::IdentityCap => "identity_cap",
        }
    }

    fn count(self) {
        match self {
            Refusal::IdentityCap => metrics::connections_closed(self.reason(), 1),
            Refusal::ProxyProtocol(_)
            | Refusal::Timeout
            | Refusal::Handshake(_)
            | Refusal::NoClientCert
            | Refusal::BadCertificate
            | Refusal::IdentityUnrenderable
            | Refusal::NoLongerTrusted(_)
            | Refusal::Revoked(_) => metrics::handshake(self.reason()),
        }
    }
}

/// The one path for a refused connection: counts it, logs it (WARN, at most a few lines per
/// second: `telemetry/loglimit.rs`; a timeout at DEBUG) and audits it with the same reason and,
/// when it is known, the identity that was refused.
pub(super) async fn refuse(
    server: &Server,
    conn_id: u64,
    peer: SocketAddr,
    identity: Option<&serde_json::value::RawValue>,
    why: Refusal,
    detail: &(dyn std::fmt::Display + Sync),
) {
    why.count();
    let reason = why.reason();
    match why {
        Refusal::Timeout => debug!(reason, "TLS handshake timed out"),
        Refusal::Handshake(_) if admit(Class::Handshake) => {
            warn!(reason, %peer, error = %detail, "TLS handshake refused")
        }
        _ if admit(Class::Handshake) => warn!(reason, %peer, error = %detail, "connection refused after the handshake"),
        _ => {}
    }
    use crate::audit::record::{HandshakeRecord, SCHEMA_VERSION, timestamp};
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

/// A request hyper refused before it reached the stack (it answers those itself, on HTTP/1):
/// the audit reason and the status sent, logged and counted here; `None` for errors that are not
/// a refused request.
pub(super) fn refused_request(e: &(dyn std::error::Error + 'static)) -> Option<(&'static str, Option<u16>)> {
    let hyper_error = std::iter::successors(Some(e), |e| e.source()).find_map(|e| e.downcast_ref::<hyper::Error>());
    let (reason, status) = hyper_error.and_then(classify_protocol_error)?;
    metrics::protocol_error(reason);
    if admit(Class::Rejected) {
        warn!(reason, status, error = %e, "request refused by the HTTP parser");
    }
    Some((reason, status))
}

/// Audits a [`refused_request`] like any other decision, under the connection's identity.
pub(super) async fn audit_refused_request(
    server: &Server,
    ctx: &ConnCtx,
    (reason, status): (&'static str, Option<u16>),
) {
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

/// Closes a refused connection so the client can read our TLS alert: send FIN, then discard what
/// the client still sends (briefly, bounded). Closing with unread bytes in the socket makes the
/// kernel send RST, which can destroy the alert before the client reads it.
pub(super) async fn linger_close(mut tcp: TcpStream) {
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
