//! `request_timeout`: one deadline for the whole exchange, from the request head to the last byte
//! of the response. The request body, the wait for the response head and the response body all
//! end at the same instant.
//!
//! A body wrapper rather than a timeout around a future, because the exchange outlives the
//! service call: hyper streams the response body after `call` has returned. Without a deadline
//! configured the wrapper holds `None` and costs one branch per frame (no timer, no allocation).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::BoxError;

/// The body was cut because `request_timeout` was reached.
#[derive(Debug, thiserror::Error)]
#[error("request_timeout reached")]
pub(crate) struct DeadlineExceeded;

/// Which side a body is on. A cut response body is counted here
/// (`ztgate_request_timeouts_total{phase="response_body"}`); a cut request body ends the upstream
/// call, and the forwarder counts it there, once, whichever timer fired first.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    Request,
    Response,
}

/// A body that fails with [`DeadlineExceeded`] once its deadline passes.
pub struct Deadline<B> {
    inner: B,
    timer: Option<Timer>,
}

struct Timer {
    sleep: Pin<Box<Sleep>>,
    side: Side,
    /// Set when the body ended in time; the forwarder reads it to tell a slow client (408) from
    /// a slow upstream (504) when the deadline fires while waiting for the response head.
    finished: Option<Arc<AtomicBool>>,
}

impl<B> Deadline<B> {
    /// No deadline: the body passes through.
    pub fn none(inner: B) -> Self {
        Self { inner, timer: None }
    }

    pub fn until(inner: B, at: Instant, side: Side, finished: Option<Arc<AtomicBool>>) -> Self {
        Self {
            inner,
            timer: Some(Timer {
                sleep: Box::pin(tokio::time::sleep_until(at)),
                side,
                finished,
            }),
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        // The deadline is checked first: a body that always has data ready is still cut.
        if let Some(t) = &mut this.timer
            && t.sleep.as_mut().poll(cx).is_ready()
        {
            if let Side::Response = t.side {
                crate::telemetry::metrics::request_timeout("response_body");
            }
            this.timer = None;
            return Poll::Ready(Some(Err(Box::new(DeadlineExceeded))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                if let Some(flag) = this.timer.take().and_then(|t| t.finished) {
                    flag.store(true, Ordering::Release);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => Poll::Ready(Some(frame.map_err(Into::into))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
