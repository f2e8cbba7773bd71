//! Upstreams: one client pool per configured upstream (`client.rs`), the route table
//! (`route.rs`), the request body as sent upstream (`client_body.rs`) and the WebSocket-over-h2
//! translation (`websocket.rs`). The forwarding service that uses them is
//! `middleware::forward`.

mod client;
pub(crate) mod client_body;
mod config;
mod in_task;
mod route;
pub(crate) mod websocket;

use std::num::NonZeroUsize;
use std::time::Duration;

use http::Version;
use http::uri::{Authority, Scheme};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Deadline;
use crate::tls::TlsError;
use client::{Direct, FixedDest, PooledClient};
pub(crate) use client::{Replay, SendError, UpstreamClient};
pub use config::{Pins, RouteConfig, UpstreamConfig, UpstreamProtocol, UserMode};
pub(crate) use in_task::InTask;
pub(crate) use route::RouteTable;

/// The request body as sent upstream: the client's, cut off at `max_request_body` and at the
/// request deadline, with the client's own body errors marked ([`client_body`]).
pub(crate) type UpstreamBody =
    client_body::ClientBody<client_body::Buffered<Deadline<http_body_util::Limited<hyper::body::Incoming>>>>;

/// A connection to an upstream could not be made: names the address dialled and the OS error,
/// which the client library's own error ("client error (Connect)") leaves out of its message.
#[derive(Debug, thiserror::Error)]
#[error("connect {addr}: {source}")]
pub(crate) struct ConnectError {
    /// The upstream's `host:port` as configured.
    pub(crate) addr: String,
    /// The socket error (`Connection refused (os error 111)`), or the client's own error text
    /// when no socket error is in its chain (a name that does not resolve).
    #[source]
    pub(crate) source: std::io::Error,
}

impl ConnectError {
    /// The connect failure behind `err` (the client library's error), dialling `addr`.
    pub(crate) fn new(addr: &Authority, err: &(dyn std::error::Error + 'static)) -> Self {
        let chain = || std::iter::successors(Some(err), |e| e.source());
        let source = chain()
            .find_map(|e| e.downcast_ref::<std::io::Error>())
            .map(|io| match io.raw_os_error() {
                Some(code) => std::io::Error::from_raw_os_error(code),
                None => std::io::Error::new(io.kind(), io.to_string()),
            })
            .unwrap_or_else(|| {
                let text: Vec<String> = chain().map(ToString::to_string).collect();
                std::io::Error::other(text.join(": "))
            });
        Self {
            addr: addr.to_string(),
            source,
        }
    }
}

/// One upstream: its address, protocol and client pool (built once per (re)load).
pub struct Upstream {
    pub name: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// HTTP/1.1 or HTTP/2, as configured (`protocol`).
    pub version: Version,
    pub(crate) client: UpstreamClient,
    /// Bound on the wait for the response head.
    pub response_timeout: Duration,
}

/// Every configured upstream, by index in the config (routes name them by index).
pub struct Upstreams(Vec<Upstream>);

thread_local! {
    /// This thread's per-core worker index ([`enter_worker`]); 0 elsewhere.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the calling thread as per-core worker `index`: its requests that go through a shared
/// upstream pool use that worker's own pool, whose connections its own runtime drives (no
/// wake-up of another worker's thread per request).
pub(crate) fn enter_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The calling thread's worker index ([`enter_worker`]).
pub(crate) fn worker() -> usize {
    WORKER.with(std::cell::Cell::get)
}

impl Upstreams {
    pub fn get(&self, index: usize) -> Option<&Upstream> {
        self.0.get(index)
    }

    /// Builds `pools` client pools per upstream: one per per-core worker (each worker's requests
    /// use its own, [`enter_worker`]), one for the shared runtime.
    ///
    /// # Errors
    /// [`TlsError`] when an https upstream's CA or client certificate cannot be loaded, or it
    /// has no `ca` to verify against.
    pub fn new(cfg: &[UpstreamConfig], pools: NonZeroUsize) -> Result<Self, TlsError> {
        let mut upstreams = Vec::with_capacity(cfg.len());
        for u in cfg {
            let mut http = HttpConnector::new();
            http.set_nodelay(true);
            http.set_connect_timeout(Some(u.connect_timeout));
            http.enforce_http(false);
            let mut builder = Client::builder(TokioExecutor::new());
            builder
                .pool_idle_timeout(u.pool_idle_timeout)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .http2_only(u.protocol == UpstreamProtocol::Http2);
            let mut unpooled = builder.clone();
            unpooled.pool_max_idle_per_host(0);
            let https = u.url.scheme() == Some(&Scheme::HTTPS);
            let dest = u.url.clone();
            let http1 = u.protocol == UpstreamProtocol::Http1;
            let id = in_task::next_upstream_id();
            let client = match (&u.ca, https) {
                (Some(ca), true) => {
                    let tls = crate::tls::upstream_client_config(ca, u.client_cert.as_ref())?;
                    let https = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(tls)
                        .https_only();
                    // Offer exactly the configured protocol in ALPN.
                    let connector = match u.protocol {
                        UpstreamProtocol::Http1 => https.enable_http1().wrap_connector(http),
                        UpstreamProtocol::Http2 => https.enable_http2().wrap_connector(http),
                    };
                    let fixed = FixedDest { inner: connector, dest };
                    UpstreamClient {
                        direct: http1.then(|| Direct::Tls(fixed.clone())),
                        pooled: (0..pools.get())
                            .map(|_| PooledClient::Tls(builder.build(fixed.clone())))
                            .collect(),
                        fresh: PooledClient::Tls(unpooled.build(fixed)),
                        id,
                        idle_timeout: u.pool_idle_timeout,
                        quota: in_task::Quota::new(u.held_connections),
                    }
                }
                // An https upstream without `ca` has nothing to verify against: refuse rather
                // than trust blindly. Validation guarantees `ca` is absent for http.
                (None, true) => {
                    return Err(TlsError::Empty {
                        kind: "CA (set `ca` for an https:// upstream)",
                        path: u.name.clone().into(),
                    });
                }
                _ => {
                    let fixed = FixedDest { inner: http, dest };
                    UpstreamClient {
                        direct: http1.then(|| Direct::Plain(fixed.clone())),
                        pooled: (0..pools.get())
                            .map(|_| PooledClient::Plain(builder.build(fixed.clone())))
                            .collect(),
                        fresh: PooledClient::Plain(unpooled.build(fixed)),
                        id,
                        idle_timeout: u.pool_idle_timeout,
                        quota: in_task::Quota::new(u.held_connections),
                    }
                }
            };
            upstreams.push(Upstream {
                name: u.name.clone(),
                scheme: u.url.scheme().cloned().unwrap_or(Scheme::HTTP),
                authority: u.url.authority().cloned().ok_or_else(|| TlsError::Empty {
                    kind: "host",
                    path: u.name.clone().into(),
                })?,
                version: match u.protocol {
                    UpstreamProtocol::Http1 => Version::HTTP_11,
                    UpstreamProtocol::Http2 => Version::HTTP_2,
                },
                client,
                response_timeout: u.response_timeout,
            });
        }
        Ok(Self(upstreams))
    }
}
