//! Idle bounds of an established connection: how long it may wait for its first request
//! (`first_request_timeout`), for the next one (`keepalive_timeout`; on h2, with no open stream)
//! and, on HTTP/1.1, for the rest of a request head once its first byte came
//! (`header_read_timeout`). A request being served (its response not yet finished) is never
//! idle, however slowly its body moves: `request_timeout` bounds that, not these. What does
//! bound a connection in every state is `send_timeout`: one write to the client that waits
//! longer for the client to read (nginx's `send_timeout`) closes it ([`Sending`]).
//!
//! hyper's own HTTP/1.1 header timer runs from the moment hyper starts waiting for a head, so it
//! cannot tell a keep-alive pause from a slow head; ztgate keeps the three apart here. The
//! connection's service marks requests in flight ([`Activity::begin`], one atomic add and a
//! clone of an `Arc` per request), the HTTP/1.1 reader marks the first byte of a next head
//! ([`Activity::read`]), and the connection task asks [`Activity::check`] when a bound may have
//! passed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The three bounds, from `[listener]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Handshake done → first byte of the first request (h2: first stream).
    pub(crate) first_request: Duration,
    /// Last response finished → first byte of the next request (h2: next stream).
    pub(crate) keepalive: Duration,
    /// First byte of an HTTP/1.1 head → the whole head.
    pub(crate) header_read: Duration,
    /// One write to the client waiting for the client to read.
    pub(crate) send: Duration,
}

/// Why an idle connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdleClose {
    /// No request within `first_request_timeout` of the handshake.
    FirstRequest,
    /// No next request within `keepalive_timeout` of the last response.
    KeepAlive,
    /// An HTTP/1.1 head started but not finished within `header_read_timeout`.
    HeaderRead,
    /// A write to the client waited longer than `send_timeout`: the client stopped reading.
    Send,
}

impl IdleClose {
    /// The `ztgate_connections_closed_total` label (`ztgate_protocol_errors_total` for a head
    /// cut by `header_read_timeout`, which is counted with the parser's refusals).
    pub(crate) fn label(self) -> &'static str {
        match self {
            IdleClose::FirstRequest => "first_request_timeout",
            IdleClose::KeepAlive => "keepalive_timeout",
            IdleClose::HeaderRead => "header-read-timeout",
            IdleClose::Send => "send_timeout",
        }
    }

    /// The audit reason (`kind = "protocol"`).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            IdleClose::FirstRequest => "first-request-timeout",
            IdleClose::KeepAlive => "keepalive-timeout",
            IdleClose::HeaderRead => "header-read-timeout",
            IdleClose::Send => "send-timeout",
        }
    }
}

/// What [`Activity::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not past any bound; look again at this instant.
    Wait(Instant),
    /// Past a bound: close.
    Expired(IdleClose),
}

impl Verdict {
    /// When to look again; now for an expired bound.
    pub(crate) fn at(self) -> Instant {
        match self {
            Verdict::Wait(at) => at,
            Verdict::Expired(_) => Instant::now(),
        }
    }
}

/// `u64::MAX` in a millisecond field: not set.
const NONE: u64 = u64::MAX;

/// One connection's activity, shared (`Arc`) by its task, its service and its reader. Times are
/// milliseconds since `start`, so they fit in atomics.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// Requests whose response has not finished.
    in_flight: AtomicU64,
    /// Requests begun so far (0: the first is still awaited).
    requests: AtomicU64,
    /// When the connection last became idle (handshake done, or the last response finished).
    idle_since: AtomicU64,
    /// When the first byte of a next HTTP/1.1 head was read while idle; [`NONE`]: not yet.
    /// Nobody is woken for it: the task looks again within the shortest bound anyway
    /// ([`Activity::check`]), which is never later than the head's own bound.
    head_started: AtomicU64,
    /// When a write to the client started waiting for the client to read; [`NONE`]: no write
    /// is waiting. Like `head_started`, nobody is woken for it.
    write_waiting: AtomicU64,
}

impl Activity {
    /// A connection whose handshake completed `now`.
    pub(crate) fn new(now: Instant) -> Arc<Self> {
        Arc::new(Self {
            start: now,
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
            write_waiting: AtomicU64::new(NONE),
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.start + Duration::from_millis(ms)
    }

    /// A request reached the service; the connection is busy until the returned guard drops
    /// (with the response body, or with the error that replaced it).
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy {
            activity: self.clone(),
            ended: false,
        }
    }

    /// HTTP/1.1: bytes were read from the client. While idle, they start a head, which
    /// `header_read_timeout` then bounds.
    /// `now` is asked only then: most reads happen while busy and cost two atomic loads.
    pub(crate) fn read(&self, now: impl FnOnce() -> Instant) {
        if self.in_flight.load(Ordering::Acquire) == 0 && self.head_started.load(Ordering::Relaxed) == NONE {
            let _ = self
                .head_started
                .compare_exchange(NONE, self.ms(now()), Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// A write to the client could not proceed (the socket's send buffer is full): from now
    /// on, until a write proceeds, `send_timeout` runs. Only the first of a run asks `now`.
    pub(crate) fn write_waits(&self, now: impl FnOnce() -> Instant) {
        if self.write_waiting.load(Ordering::Relaxed) == NONE {
            self.write_waiting.store(self.ms(now()), Ordering::Relaxed);
        }
    }

    /// A write to the client proceeded: one atomic load unless a wait just ended.
    pub(crate) fn write_proceeds(&self) {
        if self.write_waiting.load(Ordering::Relaxed) != NONE {
            self.write_waiting.store(NONE, Ordering::Relaxed);
        }
    }

    fn finished(&self, now: Instant) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.ms(now), Ordering::Release);
            self.head_started.store(NONE, Ordering::Release);
        }
    }

    /// Whether the connection is past a bound at `now`, else when to look again: at most the
    /// shortest bound away, so a head that starts meanwhile (its bound is at least that long) is
    /// still closed exactly at its own deadline, and no request has to wake the connection's task.
    pub(crate) fn check(&self, now: Instant, bounds: &Bounds) -> Verdict {
        let recheck = bounds
            .keepalive
            .min(bounds.header_read)
            .min(bounds.first_request)
            .min(bounds.send);
        // Busy or idle: a client that stopped reading holds the connection either way.
        let waiting = self.write_waiting.load(Ordering::Relaxed);
        if waiting != NONE && now >= self.at(waiting) + bounds.send {
            return Verdict::Expired(IdleClose::Send);
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Verdict::Wait(now + recheck);
        }
        let (since, bound, why) = match self.head_started.load(Ordering::Acquire) {
            NONE if self.requests.load(Ordering::Relaxed) == 0 => (
                self.idle_since.load(Ordering::Acquire),
                bounds.first_request,
                IdleClose::FirstRequest,
            ),
            NONE => (
                self.idle_since.load(Ordering::Acquire),
                bounds.keepalive,
                IdleClose::KeepAlive,
            ),
            started => (started, bounds.header_read, IdleClose::HeaderRead),
        };
        let deadline = self.at(since) + bound;
        if now >= deadline {
            Verdict::Expired(why)
        } else {
            // A request may come and go before `deadline`, and the keep-alive bound then runs
            // from its end; looking again within the shortest bound is never late for that.
            Verdict::Wait(deadline.min(now + recheck))
        }
    }
}

/// A request in flight; dropping it ends the request for [`Activity`].
#[derive(Debug)]
pub(crate) struct Busy {
    activity: Arc<Activity>,
    /// Already ended by [`Busy::end_at`] (tests, with their own clock).
    ended: bool,
}

impl Busy {
    #[cfg(test)]
    fn end_at(mut self, now: Instant) {
        self.ended = true;
        self.activity.finished(now);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if !self.ended {
            self.activity.finished(Instant::now());
        }
    }
}

/// A response body that keeps its connection busy until it is finished or dropped.
pub(crate) struct Tracked<B> {
    inner: B,
    /// `None` only if the future was polled after it completed (a bug in the caller).
    _busy: Option<Busy>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The service's future: the request stays busy through it, then through its response body.
pub(crate) struct TrackedFuture<F> {
    inner: F,
    busy: Option<Busy>,
}

impl<F> TrackedFuture<F> {
    pub(crate) fn new(inner: F, busy: Busy) -> Self {
        Self {
            inner,
            busy: Some(busy),
        }
    }
}

impl<F, B, E> std::future::Future for TrackedFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, E>> + Unpin,
{
    type Output = Result<http::Response<Tracked<B>>, E>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let out = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll(cx));
        let busy = self.busy.take();
        std::task::Poll::Ready(out.map(|resp| {
            resp.map(|body| Tracked {
                inner: body,
                _busy: busy,
            })
        }))
    }
}

/// The client connection's write side, watched for `send_timeout`: a write that returns
/// `Pending` (the client is not reading and the socket's send buffer is full) starts the wait,
/// any write that proceeds ends it ([`Activity::write_waits`], [`Activity::write_proceeds`]).
/// Reads pass through untouched.
pub(crate) struct Sending<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Sending<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }

    fn note<R>(&self, polled: std::task::Poll<R>) -> std::task::Poll<R> {
        if polled.is_pending() {
            self.activity.write_waits(Instant::now);
        } else {
            self.activity.write_proceeds();
        }
        polled
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Sending<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Sending<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(polled)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.note(polled)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        first_request: Duration::from_secs(10),
        keepalive: Duration::from_secs(60),
        header_read: Duration::from_secs(5),
        send: Duration::from_secs(30),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_silent_connection_expires_at_the_first_request_bound_and_not_before() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        assert_eq!(
            a.check(t0 + secs(1), &BOUNDS),
            Verdict::Wait(t0 + secs(6)),
            "the shortest bound on"
        );
        assert_eq!(a.check(t0 + secs(9), &BOUNDS), Verdict::Wait(t0 + secs(10)));
        assert_eq!(
            a.check(t0 + secs(10), &BOUNDS),
            Verdict::Expired(IdleClose::FirstRequest)
        );
    }

    #[test]
    fn after_a_response_the_keepalive_bound_runs_from_its_end() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        let busy = a.begin();
        // A request in flight is never idle, however long it takes.
        assert_eq!(a.check(t0 + secs(500), &BOUNDS), Verdict::Wait(t0 + secs(505)));
        busy.end_at(t0 + secs(103));
        assert_eq!(a.check(t0 + secs(162), &BOUNDS), Verdict::Wait(t0 + secs(163)));
        assert_eq!(a.check(t0 + secs(163), &BOUNDS), Verdict::Expired(IdleClose::KeepAlive));
    }

    #[test]
    fn a_started_head_is_bounded_by_the_header_read_timeout_from_its_first_byte() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        a.read(|| t0 + secs(8));
        a.read(|| t0 + secs(9)); // later bytes of the same head do not move the start
        assert_eq!(a.check(t0 + secs(12), &BOUNDS), Verdict::Wait(t0 + secs(13)));
        assert_eq!(a.check(t0 + secs(13), &BOUNDS), Verdict::Expired(IdleClose::HeaderRead));
        // Once the head is complete the request is in flight: bytes read then (its body) are not
        // a next head.
        let busy = a.begin();
        a.read(|| t0 + secs(14));
        busy.end_at(t0 + secs(20));
        assert_eq!(a.check(t0 + secs(79), &BOUNDS), Verdict::Wait(t0 + secs(80)));
        assert_eq!(
            a.check(t0 + secs(80), &BOUNDS),
            Verdict::Expired(IdleClose::KeepAlive),
            "idle again from the response's end, under keepalive"
        );
    }

    #[test]
    fn a_write_waiting_past_the_send_bound_expires_busy_or_idle_and_one_that_proceeds_does_not() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        let busy = a.begin();
        a.write_waits(|| t0 + secs(100));
        a.write_waits(|| t0 + secs(120)); // still the same wait: its start does not move
        assert_eq!(a.check(t0 + secs(129), &BOUNDS), Verdict::Wait(t0 + secs(134)));
        assert_eq!(a.check(t0 + secs(130), &BOUNDS), Verdict::Expired(IdleClose::Send));
        // A write that proceeds ends the wait: a reader that keeps the socket taking data is not cut.
        a.write_proceeds();
        assert_eq!(a.check(t0 + secs(500), &BOUNDS), Verdict::Wait(t0 + secs(505)));
        busy.end_at(t0 + secs(500));
        // Idle (e.g. a GOAWAY the client does not read): the same bound.
        a.write_waits(|| t0 + secs(501));
        assert_eq!(a.check(t0 + secs(531), &BOUNDS), Verdict::Expired(IdleClose::Send));
    }

    #[test]
    fn concurrent_streams_keep_the_connection_busy_until_the_last_finishes() {
        let t0 = Instant::now();
        let a = Activity::new(t0);
        let (one, two) = (a.begin(), a.begin());
        one.end_at(t0 + secs(1));
        assert_eq!(a.check(t0 + secs(100), &BOUNDS), Verdict::Wait(t0 + secs(105)));
        two.end_at(t0);
        assert_eq!(a.check(t0 + secs(60), &BOUNDS), Verdict::Expired(IdleClose::KeepAlive));
    }
}
