//! The posture service's connections, with their last I/O error kept for the log line.
//!
//! Why: with TLS 1.3 a client finishes its handshake before the server has judged the client
//! certificate, so a service that refuses ztgate's certificate says so with an alert on the first
//! read (`received fatal alert: UnknownCA`). hyper's pooled client reads in the connection's own
//! task and, for h2, fails the waiting request with "operation was canceled: connection closed",
//! the alert gone. Each connection made here writes its read or write error into a slot shared by
//! the service, and a failed request's log line adds what the slot holds.
//!
//! A TLS error (the alert) is kept over a plain I/O error that follows it: once the service has
//! sent its alert and closed, writes fail with "Broken pipe", which says nothing. A service that
//! resets the connection before ztgate reads the alert leaves only the reset to report (the
//! kernel drops unread data on a reset).
//!
//! The slot is per service, not per request: two lookups failing at the same moment may both
//! report the one error; both were talking to the same service, so the line is still about it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};

/// An I/O error of a connection to the service, as text.
struct Recorded {
    at: Instant,
    text: String,
    /// rustls' error (an alert received, a certificate refused), not the socket's.
    tls: bool,
}

/// How long a recorded TLS error outranks a plain I/O error after it.
const TLS_PRECEDENCE: Duration = Duration::from_secs(1);

/// The last I/O error a connection to the service had.
#[derive(Clone, Default)]
pub(super) struct LastError(Arc<Mutex<Option<Recorded>>>);

impl LastError {
    fn set(&self, e: &io::Error) {
        let tls = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
        let mut slot = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !tls && slot.as_ref().is_some_and(|r| r.tls && r.at.elapsed() < TLS_PRECEDENCE) {
            return; // the broken pipe after the alert
        }
        *slot = Some(Recorded {
            at: Instant::now(),
            text: e.to_string(),
            tls,
        });
    }

    /// The error recorded since the last call, if it is younger than `max_age` (an older one
    /// belongs to an earlier exchange, not to the failure being reported).
    pub(super) fn take(&self, max_age: Duration) -> Option<String> {
        let taken = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        taken.and_then(|r| (r.at.elapsed() <= max_age).then_some(r.text))
    }
}

/// A connector whose connections record their I/O errors in `last`.
#[derive(Clone)]
pub(super) struct Recording<C> {
    pub(super) inner: C,
    pub(super) last: LastError,
}

impl<C> tower::Service<Uri> for Recording<C>
where
    C: tower::Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = RecordingIo<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let last = self.last.clone();
        // Once per new connection to the service, not per lookup.
        Box::pin(async move {
            Ok(RecordingIo {
                inner: connecting.await?,
                last,
            })
        })
    }
}

/// A connection that records its read and write errors.
pub(super) struct RecordingIo<T> {
    inner: T,
    last: LastError,
}

impl<T> RecordingIo<T> {
    fn record<R>(&self, polled: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(e)) = &polled {
            self.last.set(e);
        }
        polled
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for RecordingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.record(polled)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for RecordingIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.record(polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.record(polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.record(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.record(polled)
    }
}

impl<T: Connection> Connection for RecordingIo<T> {
    /// The inner connection's facts, ALPN's `h2` among them (the client speaks what was
    /// negotiated).
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_is_taken_once_and_a_tls_error_outranks_what_follows() {
        let last = LastError::default();
        let age = Duration::from_secs(5);
        assert_eq!(last.take(age), None);
        last.set(&io::Error::from(io::ErrorKind::ConnectionRefused));
        last.set(&io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        ));
        last.set(&io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(
            last.take(age).as_deref(),
            Some("received fatal alert: UnknownCA"),
            "the alert, not the broken pipe after it"
        );
        assert_eq!(last.take(age), None);
        last.set(&io::Error::from(io::ErrorKind::ConnectionReset));
        last.set(&io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(last.take(age).as_deref(), Some("broken pipe"));
        last.set(&io::Error::other("old"));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            last.take(Duration::from_millis(10)),
            None,
            "too old to be about this failure"
        );
    }
}
