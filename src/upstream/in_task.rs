//! HTTP/1.1 upstream connections owned by one HTTP/1.1 client connection and driven inside that
//! client connection's task.
//!
//! Why: an HTTP/1.1 client connection carries one request at a time (RFC 9112 §9.3: a server
//! answers pipelined requests in order, and hyper serves them one after another), so it needs at
//! most one upstream connection per upstream at any moment. Keeping that connection with the
//! client connection, and polling it from the same task, removes what a shared pool costs on
//! every request: the checkout and return (a lock and a hashed pool key), the hand-over of each
//! request to the upstream connection's own task through a channel, and the wake-ups of that
//! second task (on a multi-thread runtime, often on the other core).
//!
//! How: the client connection's task runs [`InTask::drive`] beside hyper's server connection
//! (`server/conn.rs`). Forwarding a request ([`UpstreamClient::send`]) takes the connection held
//! for that upstream, or connects and hands the new connection to the driver. The request goes
//! into hyper's client dispatch queue; the driver's next poll writes it and reads the answer,
//! whose body the server connection relays as the driver reads it, all in one task.
//!
//! Lifetime: a held connection closes after the upstream's `pool_idle_timeout` without a request
//! (as a pooled one would, so ztgate, not the upstream, closes idle connections and no request
//! meets one the upstream is closing), with its client connection, when the upstream closes it,
//! or when it is replaced (it was not ready for the next request). h2 client connections (many streams at once), h2
//! upstreams and upgrades (WebSocket) use the shared pool.
//!
//! [`UpstreamClient::send`]: super::UpstreamClient::send

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::UpstreamBody;

/// A process-unique number per built upstream client, so that a connection held for an upstream
/// of a previous configuration is never taken for a new one (the address may differ).
pub(crate) fn next_upstream_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// An upstream connection's I/O driver, boxed once per connection (not per request).
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// At most this many upstreams' connections are held per client connection; a client that
/// alternates among more replaces the oldest.
const MAX_HELD: usize = 4;

/// The upstream connections of one HTTP/1.1 client connection. Shared (an `Arc`) between the
/// requests of that connection, which send on them, and the connection's task, which drives
/// them. The lock is never contended in practice (one task uses it) and never held across an
/// await or while a request is being sent.
///
/// `B` is the request body type (the proxy's [`UpstreamBody`]; tests use their own).
pub(crate) struct InTask<B = UpstreamBody> {
    state: Mutex<State<B>>,
}

impl<B> Default for InTask<B> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                held: Vec::new(),
                waker: None,
                idle_timer: None,
            }),
        }
    }
}

struct State<B> {
    held: Vec<Held<B>>,
    /// The client connection task's waker, taken at the driver's last poll: woken when a new
    /// connection is handed over, so the driver polls it.
    waker: Option<Waker>,
    /// Armed at the earliest instant a held connection may have been idle for its
    /// `pool_idle_timeout`; re-armed lazily when it fires (not once per request).
    idle_timer: Option<Pin<Box<Sleep>>>,
}

struct Held<B> {
    /// [`next_upstream_id`] of the upstream client this connection belongs to.
    upstream: u64,
    sender: http1::SendRequest<B>,
    driver: Driver,
    /// The upstream's `pool_idle_timeout`.
    idle_timeout: Duration,
    /// Since when the connection has waited for a request (seen at a driver poll); `None` while
    /// an exchange is in progress.
    idle_since: Option<Instant>,
    /// This connection's place in its upstream's [`Quota`], given back when it is dropped.
    _place: Place,
}

/// How many connections to one upstream client connections hold, process-wide, against
/// `held_connections`.
#[derive(Debug)]
pub(crate) struct Quota {
    held: AtomicUsize,
    max: usize,
}

impl Quota {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            held: AtomicUsize::new(0),
            max,
        })
    }

    /// A place for one more held connection, or `None` when `max` are held.
    pub(crate) fn take(self: &Arc<Self>) -> Option<Place> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| Place(self.clone()))
    }

    /// `held_connections = 0`: no connection is ever held, every request uses the shared pool
    /// by configuration (not because the others took the places).
    pub(crate) fn is_off(&self) -> bool {
        self.max == 0
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// One held connection's place in a [`Quota`].
#[derive(Debug)]
pub(crate) struct Place(Arc<Quota>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What [`InTask::send`] found for the upstream.
// Returned and matched at once: boxing the request would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Sent<F, B> {
    /// The request is on its way on a held connection (the future yields the answer).
    Held(F),
    /// No held connection could take it: the request is handed back untouched.
    Unsent(Request<B>),
}

impl<B> InTask<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<crate::body::BoxError>,
{
    /// Sends `req` on the connection held for upstream `id`, when there is one that is ready
    /// for a request. A held connection that has closed is dropped.
    pub(crate) fn send(
        &self,
        id: u64,
        req: Request<B>,
    ) -> Sent<impl Future<Output = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<B>>>> + use<B>, B>
    {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(i) = state.held.iter().position(|h| h.upstream == id) else {
            return Sent::Unsent(req);
        };
        if state.held[i].sender.is_closed() {
            state.held.swap_remove(i);
            return Sent::Unsent(req);
        }
        // Not ready: the previous exchange on it has not finished (a response body the client
        // stopped reading). It is replaced by a new connection rather than waited for.
        let held = &mut state.held[i];
        if !held.sender.is_ready() {
            return Sent::Unsent(req);
        }
        held.idle_since = None;
        Sent::Held(held.sender.try_send_request(req))
    }

    /// Hands a new connection to upstream `id` to the driver, replacing any held for that
    /// upstream (or the oldest when [`MAX_HELD`] are held), and sends `req` on it.
    pub(crate) fn adopt<T>(
        &self,
        id: u64,
        idle_timeout: Duration,
        place: Place,
        mut sender: http1::SendRequest<B>,
        conn: http1::Connection<T, B>,
        req: Request<B>,
    ) -> impl Future<Output = hyper::Result<Response<Incoming>>> + use<T, B>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        // A fresh connection takes its first request before the driver has polled it.
        let answer = sender.send_request(req);
        let held = Held {
            upstream: id,
            sender,
            driver: Box::pin(conn),
            idle_timeout,
            idle_since: None,
            _place: place,
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = state.held.iter().position(|h| h.upstream == id) {
            state.held[i] = held;
        } else {
            if state.held.len() >= MAX_HELD {
                state.held.remove(0);
            }
            state.held.push(held);
        }
        if let Some(w) = &state.waker {
            w.wake_by_ref();
        }
        answer
    }

    /// How many upstream connections are held.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).held.len()
    }

    /// Drives every held connection; a connection that ends (closed by the upstream, failed)
    /// is dropped. Never completes: run it beside the client connection and drop it with it.
    pub(crate) fn drive(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            self.poll_drive(cx);
            Poll::Pending
        })
    }

    fn poll_drive(&self, cx: &mut Context<'_>) {
        let mut guard = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *guard;
        match &mut state.waker {
            Some(w) => w.clone_from(cx.waker()),
            None => state.waker = Some(cx.waker().clone()),
        }
        if state.held.is_empty() {
            return;
        }
        let mut now = None;
        let mut idle_after = None::<Instant>;
        state.held.retain_mut(|h| {
            match h.driver.as_mut().poll(cx) {
                Poll::Pending => {}
                Poll::Ready(Ok(())) => return false,
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "upstream connection ended");
                    return false;
                }
            }
            if h.idle_since.is_none() && h.sender.is_ready() {
                h.idle_since = Some(*now.get_or_insert_with(Instant::now));
            }
            if let Some(since) = h.idle_since {
                let at = since + h.idle_timeout;
                idle_after = Some(idle_after.map_or(at, |a| a.min(at)));
            }
            true
        });
        let Some(first) = idle_after else {
            return;
        };
        match &mut state.idle_timer {
            // Armed for a later instant (a connection became idle before the others): earlier.
            Some(t) if t.deadline() > first => t.as_mut().reset(first),
            Some(_) => {}
            None => state.idle_timer = Some(Box::pin(tokio::time::sleep_until(first))),
        }
        let Some(timer) = &mut state.idle_timer else {
            return;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return;
        }
        // The timer fired: close the connections idle for their whole timeout, re-arm for the
        // rest (their idle time began after the timer was armed).
        let now = Instant::now();
        let before = state.held.len();
        state
            .held
            .retain(|h| h.idle_since.is_none_or(|since| since + h.idle_timeout > now));
        if state.held.len() < before {
            tracing::debug!(closed = before - state.held.len(), "idle upstream connection closed");
        }
        let next = state
            .held
            .iter()
            .filter_map(|h| h.idle_since.map(|s| s + h.idle_timeout))
            .min();
        match next {
            Some(at) => {
                timer.as_mut().reset(at);
                // Registers the waker for the new instant.
                let _ = timer.as_mut().poll(cx);
            }
            None => state.idle_timer = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Empty};
    use hyper_util::rt::TokioIo;

    use super::*;

    type Body = Empty<Bytes>;

    /// An HTTP/1.1 server on the far end of an in-memory pipe that answers `200 n` (n: the
    /// request's number on that connection), and its connection count.
    fn upstream(conns: Arc<AtomicUsize>) -> TokioIo<tokio::io::DuplexStream> {
        let (near, far) = tokio::io::duplex(64 * 1024);
        conns.fetch_add(1, Ordering::Relaxed);
        let served = Arc::new(AtomicUsize::new(0));
        let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
            let n = served.fetch_add(1, Ordering::Relaxed) + 1;
            async move {
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(Bytes::from(n.to_string()))))
            }
        });
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(far), svc));
        TokioIo::new(near)
    }

    fn get() -> Request<Body> {
        Request::get("/").body(Body::new()).unwrap_or_default()
    }

    /// Sends like `UpstreamClient::send` does: on the held connection, else on a new one.
    async fn send(held: &InTask<Body>, conns: &Arc<AtomicUsize>, idle: Duration) -> String {
        let resp = match held.send(1, get()) {
            Sent::Held(answer) => answer.await.map_err(|e| e.into_error()),
            Sent::Unsent(req) => {
                let (sender, conn) = http1::handshake(upstream(conns.clone())).await.unwrap();
                held.adopt(1, idle, Quota::new(usize::MAX).take().unwrap(), sender, conn, req)
                    .await
            }
        };
        let body = resp.unwrap().into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// Runs `f` with the held connections driven beside it, as the client connection's task
    /// does.
    async fn driven<F: Future>(held: &InTask<Body>, f: F) -> F::Output {
        tokio::select! {
            biased;
            out = f => out,
            () = held.drive() => unreachable!("the driver never completes"),
        }
    }

    #[tokio::test]
    async fn one_upstream_connection_carries_every_request_of_the_client_connection() {
        let held = InTask::<Body>::default();
        let conns = Arc::new(AtomicUsize::new(0));
        let idle = Duration::from_secs(60);
        let answers = driven(&held, async {
            let mut answers = Vec::new();
            for _ in 0..5 {
                answers.push(send(&held, &conns, idle).await);
            }
            answers
        })
        .await;
        // Numbered by the one upstream connection: the same connection answered all five.
        assert_eq!(answers, ["1", "2", "3", "4", "5"]);
        assert_eq!(conns.load(Ordering::Relaxed), 1);
        assert_eq!(held.held(), 1);
    }

    #[tokio::test]
    async fn a_connection_idle_for_its_timeout_is_closed_and_a_busy_one_is_kept() {
        let held = InTask::<Body>::default();
        let conns = Arc::new(AtomicUsize::new(0));
        let idle = Duration::from_millis(1000);
        driven(&held, async {
            assert_eq!(send(&held, &conns, idle).await, "1");
            // Used again within the timeout, twice: kept (the timer armed at the first idle
            // moment fires in between and re-arms).
            for n in 2..=3 {
                tokio::time::sleep(Duration::from_millis(600)).await;
                assert_eq!(send(&held, &conns, idle).await, n.to_string());
            }
            assert_eq!(held.held(), 1);
            // Then idle past it: closed, and the next request opens a new connection.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert_eq!(held.held(), 0);
            assert_eq!(send(&held, &conns, idle).await, "1");
        })
        .await;
        assert_eq!(conns.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_quota_gives_max_places_and_takes_them_back_when_dropped() {
        let quota = Quota::new(2);
        let a = quota.take();
        let b = quota.take();
        assert!(a.is_some() && b.is_some());
        assert!(quota.take().is_none());
        assert_eq!(quota.held(), 2);
        drop(a);
        assert_eq!(quota.held(), 1);
        assert!(quota.take().is_some());
        assert!(Quota::new(0).take().is_none());
    }

    #[tokio::test]
    async fn a_client_connection_holds_at_most_four_upstreams_and_drops_the_oldest() {
        let held = InTask::<Body>::default();
        let conns = Arc::new(AtomicUsize::new(0));
        let idle = Duration::from_secs(60);
        driven(&held, async {
            for id in 1..=5u64 {
                let (sender, conn) = http1::handshake(upstream(conns.clone())).await.unwrap();
                let resp = held
                    .adopt(id, idle, Quota::new(usize::MAX).take().unwrap(), sender, conn, get())
                    .await
                    .unwrap();
                let _ = resp.into_body().collect().await.unwrap();
            }
            assert_eq!(held.held(), MAX_HELD);
            // Upstream 1 (the oldest) was dropped; upstream 5 is held and ready.
            assert!(matches!(held.send(1, get()), Sent::Unsent(_)));
            let Sent::Held(answer) = held.send(5, get()) else {
                panic!("upstream 5's connection is held");
            };
            let body = answer.await.unwrap().into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, Bytes::from("2"));
        })
        .await;
        assert_eq!(conns.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_dropped_and_replaced() {
        let held = InTask::<Body>::default();
        let conns = Arc::new(AtomicUsize::new(0));
        let idle = Duration::from_secs(60);
        // An upstream that closes after its answer (`Connection: close`).
        let (near, far) = tokio::io::duplex(64 * 1024);
        let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
            let mut resp = Response::new(http_body_util::Full::new(Bytes::from("closing")));
            resp.headers_mut()
                .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            Ok::<_, std::convert::Infallible>(resp)
        });
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(far), svc));
        let answers = driven(&held, async {
            let (sender, conn) = http1::handshake(TokioIo::new(near)).await.unwrap();
            let first = held
                .adopt(1, idle, Quota::new(usize::MAX).take().unwrap(), sender, conn, get())
                .await
                .unwrap();
            let first = first.into_body().collect().await.unwrap().to_bytes();
            // Let the driver see the connection end.
            tokio::task::yield_now().await;
            (first, send(&held, &conns, idle).await)
        })
        .await;
        assert_eq!(answers, (Bytes::from("closing"), "1".to_owned()));
        assert_eq!(conns.load(Ordering::Relaxed), 1);
    }
}
