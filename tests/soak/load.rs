//! The load: mTLS clients that send `GET`s back to back until told to stop and record, for every
//! request, when it was sent, when it ended, and its status and `x-request-id` (or the error).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::support::{Client, chain};

/// How a worker connects.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// One HTTP/1.1 keep-alive connection, re-opened when the server closes it between requests
    /// (as every client pool does).
    KeepAlive,
    /// A new connection (and TLS handshake) per request, with this HTTP version (ALPN).
    Fresh(Version),
}

/// One request as its client saw it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Which group of workers sent it (a scenario's label, e.g. "allowed", "ca1").
    pub group: &'static str,
    pub sent: Instant,
    pub done: Instant,
    /// Status and `x-request-id` of the response, or why there was none.
    pub result: Result<(u16, String), String>,
}

/// A group of workers sharing one stop flag.
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Outcome>>>,
}

impl Load {
    pub fn new() -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            workers: Vec::new(),
        }
    }

    /// Starts `n` workers of `group` sending `GET path` to `addr` as `client`.
    pub fn spawn(
        &mut self,
        n: usize,
        group: &'static str,
        client: &Arc<Client>,
        addr: SocketAddr,
        path: &str,
        mode: Mode,
    ) {
        for _ in 0..n {
            let (client, path, stop) = (client.clone(), path.to_string(), self.stop.clone());
            self.workers
                .push(tokio::spawn(worker(group, client, addr, path, mode, stop)));
        }
    }

    /// Stops every worker (each finishes its request in flight) and returns all outcomes.
    pub async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for w in self.workers {
            all.extend(w.await.unwrap());
        }
        all
    }
}

async fn worker(
    group: &'static str,
    client: Arc<Client>,
    addr: SocketAddr,
    path: String,
    mode: Mode,
    stop: Arc<AtomicBool>,
) -> Vec<Outcome> {
    let mut out = Vec::new();
    let mut conn = None;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let request = async {
            match mode {
                Mode::Fresh(version) => {
                    let req = Request::get(path.as_str()).body(Empty::new()).unwrap();
                    client
                        .send(addr, version, req)
                        .await
                        .map(|r| (r.status.as_u16(), request_id(&r.headers)))
                }
                Mode::KeepAlive => keepalive_get(&client, &mut conn, addr, &path).await,
            }
        };
        let result = bounded(request).await;
        if result.as_ref().is_err_and(|e| e.starts_with(STUCK)) {
            conn = None;
        }
        let failed = result.is_err();
        out.push(Outcome {
            group,
            sent,
            done: Instant::now(),
            result,
        });
        if failed {
            // A refused client would otherwise spin on connect.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    out
}

/// No request of the soak takes this long; one that does is recorded as an error, so that a
/// stuck connection fails its scenario instead of hanging it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const STUCK: &str = "no response within";

async fn bounded(
    request: impl std::future::Future<Output = Result<(u16, String), String>>,
) -> Result<(u16, String), String> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .unwrap_or_else(|_| Err(format!("{STUCK} {REQUEST_TIMEOUT:?}")))
}

fn request_id(h: &http::HeaderMap) -> String {
    h.get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)")
        .to_string()
}

/// `GET path` on the worker's keep-alive connection, opening one when there is none or the
/// server has closed it since the last response.
async fn keepalive_get(
    client: &Client,
    conn: &mut Option<SendRequest<Empty<Bytes>>>,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String), String> {
    if let Some(sender) = conn.as_mut()
        && sender.ready().await.is_err()
    {
        *conn = None;
    }
    let sender = match conn {
        Some(s) => s,
        None => {
            let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
            let tls = client.try_tls_connect(tcp).await?;
            let (sender, c) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| chain(&e))?;
            tokio::spawn(c);
            conn.insert(sender)
        }
    };
    let req = Request::get(path)
        .header("host", format!("localhost:{}", addr.port()))
        .body(Empty::new())
        .unwrap();
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| chain(&e))?;
        let (parts, body) = resp.into_parts();
        body.collect().await.map_err(|e| chain(&e))?;
        Ok((parts.status.as_u16(), request_id(&parts.headers)))
    }
    .await;
    if result.is_err() {
        *conn = None;
    }
    result
}

/// Counts of a set of outcomes, for the report line and the assertions.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: usize,
    pub by_status: std::collections::BTreeMap<u16, usize>,
    pub errors: usize,
}

impl Tally {
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>) -> Self {
        let mut t = Self::default();
        for o in outcomes {
            t.requests += 1;
            match &o.result {
                Ok((s, _)) => *t.by_status.entry(*s).or_default() += 1,
                Err(_) => t.errors += 1,
            }
        }
        t
    }

    pub fn status(&self, s: u16) -> usize {
        self.by_status.get(&s).copied().unwrap_or(0)
    }

    /// Everything that was not `expected`: other statuses and errors.
    pub fn not(&self, expected: u16) -> usize {
        self.requests - self.status(expected)
    }
}

/// The first few failures of `outcomes` (anything but `expected`), for an assertion message.
pub fn failures<'a>(outcomes: impl IntoIterator<Item = &'a Outcome>, expected: u16) -> Vec<String> {
    outcomes
        .into_iter()
        .filter(|o| !matches!(&o.result, Ok((s, _)) if *s == expected))
        .take(10)
        .map(|o| format!("{}: {:?}", o.group, o.result))
        .collect()
}

/// One `GET path` on a new connection, recorded like a worker's request.
pub async fn probe(group: &'static str, client: &Client, addr: SocketAddr, path: &str) -> Outcome {
    let sent = Instant::now();
    let req = Request::get(path).body(Empty::new()).unwrap();
    let result = bounded(async {
        client
            .send(addr, Version::HTTP_11, req)
            .await
            .map(|r| (r.status.as_u16(), request_id(&r.headers)))
    })
    .await;
    Outcome {
        group,
        sent,
        done: Instant::now(),
        result,
    }
}

/// One `GET path` on an open keep-alive connection, recorded like a worker's request.
pub async fn get_on_held(
    group: &'static str,
    sender: &mut SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> Outcome {
    let sent = Instant::now();
    let result = bounded(async {
        sender.ready().await.map_err(|e| chain(&e))?;
        let req = Request::get(path)
            .header("host", format!("localhost:{}", addr.port()))
            .body(Empty::new())
            .unwrap();
        let resp = sender.send_request(req).await.map_err(|e| chain(&e))?;
        let (parts, body) = resp.into_parts();
        body.collect().await.map_err(|e| chain(&e))?;
        Ok((parts.status.as_u16(), request_id(&parts.headers)))
    })
    .await;
    Outcome {
        group,
        sent,
        done: Instant::now(),
        result,
    }
}
