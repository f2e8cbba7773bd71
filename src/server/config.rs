//! `[listener]`: the validated listener settings.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// A TLS handshake that takes longer is abandoned (slow or idle clients hold no slot forever).
    pub handshake_timeout: Duration,
    /// Time allowed to receive a complete HTTP/1 request head, from its first byte (slowloris
    /// guard).
    pub header_read_timeout: Duration,
    /// Time from the end of the TLS handshake to the first byte of the first request (h2: the
    /// first stream); a connection that sends nothing is closed then.
    pub first_request_timeout: Duration,
    /// Time an idle connection is kept: HTTP/1.1 from the end of a response to the first byte of
    /// the next request, h2 while no stream is open. Then it is closed (h2: GOAWAY).
    pub keepalive_timeout: Duration,
    /// How long one write to the client may wait for the client to read (nginx's
    /// `send_timeout`): a client that stops reading a response is closed then, however long the
    /// response still is.
    pub send_timeout: Duration,
    /// An HTTP/2 connection with no activity is probed with PING and closed after this long.
    pub idle_timeout: Duration,
    /// One deadline for a whole request: request body, upstream response head and response
    /// body. `None` (the default): only the per-phase timeouts apply.
    pub request_timeout: Option<Duration>,
    /// Cap on concurrently open client connections; past it, new ones wait in the accept queue.
    pub max_connections: usize,
    /// Refuse with 421 a request whose Host is not the TLS SNI the client sent.
    pub require_sni_match: bool,
    /// Close (gracefully) connections older than this; `None`: no limit. Bounds how long an
    /// open connection keeps the trust it was granted at its handshake.
    pub max_connection_age: Option<Duration>,
    /// Largest request head (HTTP/1 bytes, h2 header list size); larger is refused with 431.
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request; more is refused with 431.
    pub max_headers: usize,
    /// Largest request body in bytes; larger is refused with 413 (declared length) or cut off
    /// with 413 (streamed). `None`: unlimited.
    pub max_request_body: Option<u64>,
    /// Most concurrent connections one client certificate may hold; past it, new ones are closed
    /// right after the handshake. `None`: unlimited (only `max_connections` applies).
    pub max_connections_per_identity: Option<usize>,
    /// Expect a PROXY protocol v2 header before the TLS bytes (behind an L4 load balancer).
    pub proxy_protocol: Option<ProxyProtocolConfig>,
    /// How connections are spread over threads (`runtime`).
    pub runtime: RuntimeModel,
    /// Threads that serve connections (`workers`; nginx's `worker_processes`, Envoy's
    /// `--concurrency`): the shared pool's size, or the number of per-core runtimes and sockets.
    pub workers: NonZeroUsize,
}

/// `[listener] runtime`: where connections run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeModel {
    /// One work-stealing tokio runtime with `workers` threads and one accept loop: a busy thread's
    /// queued connections are taken by an idle one.
    Shared,
    /// `workers` OS threads, each a `current_thread` tokio runtime with its own accept loop on its
    /// own socket, all bound to the same address with `SO_REUSEPORT`: the kernel spreads new
    /// connections over them, and a connection stays on the thread that accepted it (no
    /// cross-thread wake-ups, no work stealing).
    PerCore,
}

impl RuntimeModel {
    /// The value as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeModel::Shared => "shared",
            RuntimeModel::PerCore => "per-core",
        }
    }
}

/// PROXY protocol on the listener: the client address comes from the header, not the socket.
#[derive(Debug, Clone)]
pub struct ProxyProtocolConfig {
    /// Sources allowed to send the header (the balancers); empty: any source. A connection from
    /// elsewhere is refused, so a client that reaches the port directly cannot forge its address.
    pub trusted: Vec<crate::policy::Cidr>,
}
