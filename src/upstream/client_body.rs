//! The client's request body on its way upstream: its own failures (malformed chunking, the
//! client gone mid-body) are marked so they are answered 400, not blamed on the upstream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};

use crate::body::BoxError;
use crate::body::DeadlineExceeded;

/// The client's request body failed (malformed chunking, connection lost mid-body).
#[derive(Debug, thiserror::Error)]
#[error("client request body: {0}")]
pub(crate) struct ClientBodyError(BoxError);

/// Wraps the client's body. When it fails for the client's own reasons, the error is wrapped in
/// [`ClientBodyError`] and `failed` is set: an h2 upstream connection reports a body that
/// ended in an error only as a reset stream, so the error chain alone cannot tell.
pub(crate) struct ClientBody<B> {
    inner: B,
    /// `None` for a request without a body (nothing can fail; no allocation).
    failed: Option<Arc<AtomicBool>>,
}

impl<B: Body> ClientBody<B> {
    /// Returns the body and, when it can fail, the flag that says it did.
    pub(crate) fn new(inner: B) -> (Self, Option<Arc<AtomicBool>>) {
        let failed = (!inner.is_end_stream()).then(Arc::default);
        (
            Self {
                inner,
                failed: failed.clone(),
            },
            failed,
        )
    }
}

impl<B> ClientBody<Buffered<B>> {
    /// The same body again, for a retry: only one that is known whole (empty, or read ahead to
    /// its end), never one still streaming from the client.
    pub(crate) fn replay(&self) -> Option<Self> {
        let b = &self.inner;
        if b.rest.is_some() {
            return None;
        }
        Some(Self {
            inner: Buffered {
                head: b.head.clone(),
                trailers: b.trailers.clone(),
                rest: None,
            },
            failed: None,
        })
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body<Error = BoxError> + Unpin,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                // Over the size limit and past the deadline have their own answers (413, 408).
                if e.is::<http_body_util::LengthLimitError>() || e.is::<DeadlineExceeded>() {
                    return Poll::Ready(Some(Err(e)));
                }
                if let Some(f) = &self.failed {
                    f.store(true, Ordering::Release);
                }
                Poll::Ready(Some(Err(Box::new(ClientBodyError(e)))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body read ahead, up to a size, before anything is sent upstream (a route's
/// `buffer_request_body`): a body that ends within the size is validated whole (framing, length
/// limit, deadline) and a malformed one never reaches the upstream. A longer body is forwarded
/// as the bytes read so far followed by the rest, streamed.
pub(crate) struct Buffered<B> {
    head: Option<bytes::Bytes>,
    trailers: Option<http::HeaderMap>,
    /// What is still to be read from the client; `None` once the body ended inside the buffer.
    rest: Option<B>,
}

impl<B> Buffered<B> {
    /// No read-ahead: the body streams as it comes. A body that is already at its end (a GET)
    /// is held as "ended", so it can be replayed.
    pub(crate) fn passthrough(body: B) -> Self
    where
        B: Body,
    {
        Self {
            head: None,
            trailers: None,
            rest: (!body.is_end_stream()).then_some(body),
        }
    }
}

impl<B> Buffered<B>
where
    B: Body<Data = bytes::Bytes, Error = BoxError> + Unpin,
{
    /// Reads `body` until it ends or more than `limit` bytes have come.
    ///
    /// # Errors
    /// The body's own error (malformed, too large, deadline passed), before anything was sent.
    pub(crate) async fn read_ahead(mut body: B, limit: usize) -> Result<Self, BoxError> {
        use http_body_util::BodyExt;
        let mut buf = bytes::BytesMut::new();
        let mut trailers = None;
        let mut rest = None;
        while let Some(frame) = body.frame().await {
            match frame?.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    break;
                }
            }
            if buf.len() > limit {
                rest = Some(body);
                break;
            }
        }
        Ok(Self {
            head: (!buf.is_empty()).then(|| buf.freeze()),
            trailers,
            rest,
        })
    }
}

impl<B> Body for Buffered<B>
where
    B: Body<Data = bytes::Bytes, Error = BoxError> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
        if let Some(data) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.trailers.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |h| h.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(head),
            Some(rest) => {
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower() + head);
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper + head);
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;

    /// A body that yields the given frames, then ends.
    struct Frames(VecDeque<Result<Frame<Bytes>, BoxError>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn data(s: &'static str) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    #[tokio::test]
    async fn a_body_within_the_buffer_is_read_whole_before_forwarding() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let body = Frames(VecDeque::from([data("ab"), data("cd"), Ok(Frame::trailers(trailers))]));
        let buffered = Buffered::read_ahead(body, 16).await.unwrap();
        assert!(buffered.rest.is_none());
        assert_eq!(buffered.size_hint().exact(), Some(4));
        let collected = buffered.collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn a_malformed_body_fails_before_anything_is_forwarded_and_a_long_one_streams_on() {
        let bad = Frames(VecDeque::from([data("ab"), Err("bad chunk".into())]));
        assert!(Buffered::read_ahead(bad, 16).await.is_err());

        let long = Frames(VecDeque::from([data("abcd"), data("efgh"), data("ij")]));
        let buffered = Buffered::read_ahead(long, 5).await.unwrap();
        assert!(buffered.rest.is_some());
        assert_eq!(buffered.collect().await.unwrap().to_bytes(), "abcdefghij");
    }

    #[tokio::test]
    async fn the_clients_own_body_errors_are_marked_and_flagged() {
        let (body, failed) = ClientBody::new(Frames(VecDeque::from([data("ab"), Err("bad chunk".into())])));
        let err = body.collect().await.unwrap_err();
        assert!(err.is::<ClientBodyError>());
        assert!(failed.unwrap().load(Ordering::Acquire));
    }
}
