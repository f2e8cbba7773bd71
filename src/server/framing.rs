//! Sees what hyper's HTTP/1.1 parser drops before ztgate can judge it: a request head with both
//! `Content-Length` and `Transfer-Encoding`.
//!
//! hyper follows RFC 9112 §6.1 (frame by `Transfer-Encoding`, close the connection after the
//! response) and removes `Content-Length` from the request it hands over, so the request layers
//! cannot tell such a request from a plain chunked one. A gateway should not guess which framing
//! a client meant (request smuggling), so ztgate refuses it with 400 (`content-length-with-
//! transfer-encoding`). This wrapper reads along with hyper: it follows the message framing of
//! the bytes hyper reads (heads, `Content-Length` bodies, chunked bodies with trailers) and
//! notes the index of the first request whose head had both fields. The connection's service
//! marks that request, and the sanitize layer refuses it.
//!
//! It only observes: the bytes hyper reads are unchanged. When it cannot follow the framing (a
//! head it cannot parse, which hyper refuses anyway; an upgrade; a head over the size limit) it
//! stops watching, and hyper's own handling applies from there.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Shared between the reader and the connection's service.
#[derive(Debug)]
pub(crate) struct Conflicts {
    /// Index (0-based, in arrival order) of the first request head with both fields;
    /// `u64::MAX`: none seen.
    first: AtomicU64,
    /// Requests the service has been called for.
    served: AtomicU64,
}

impl Default for Conflicts {
    fn default() -> Self {
        Self {
            first: AtomicU64::new(u64::MAX),
            served: AtomicU64::new(0),
        }
    }
}

impl Conflicts {
    /// Called once per request, in order (HTTP/1.1 serves one request at a time): whether this
    /// one's head had both `Content-Length` and `Transfer-Encoding`.
    pub(crate) fn next_request_conflicts(&self) -> bool {
        let index = self.served.fetch_add(1, Ordering::AcqRel);
        self.first.load(Ordering::Acquire) == index
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Reading a request head (or the empty lines allowed before one).
    Head,
    /// This many `Content-Length` body bytes to go.
    Fixed(u64),
    /// A chunk-size line.
    ChunkSize,
    /// This many chunk data bytes to go, then the line end after them.
    ChunkData(u64),
    /// The CRLF after chunk data.
    ChunkEnd,
    /// Trailer lines, up to an empty one.
    Trailers,
    /// Not following the framing any more.
    Stopped,
}

/// The framing follower. Pure over byte slices, so it is tested without sockets.
#[derive(Debug)]
pub(crate) struct Framer {
    state: State,
    /// The head or line read so far.
    line: Vec<u8>,
    /// Request heads seen.
    heads: u64,
    /// The largest head followed (`[listener] max_header_bytes`).
    max_head: usize,
    max_headers: usize,
}

impl Framer {
    pub(crate) fn new(max_head: usize, max_headers: usize) -> Self {
        Self {
            state: State::Head,
            line: Vec::new(),
            heads: 0,
            max_head,
            max_headers,
        }
    }

    /// Follows `bytes`; returns the index of a request head with both fields, if one completed
    /// in them.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Option<u64> {
        let mut conflict = None;
        while !bytes.is_empty() {
            match self.state {
                State::Stopped => return conflict,
                State::Head => {
                    if self.line.is_empty() {
                        // Empty lines before a request line are ignored (RFC 9112 §2.2).
                        let skip = bytes.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            break;
                        }
                        // The common case: the whole head is in this read. Parse it in place.
                        if let Some(at) = end_of_head(bytes) {
                            let (head, rest) = bytes.split_at(at + 4);
                            if let Some(c) = self.head(head) {
                                conflict = conflict.or(Some(c));
                            }
                            bytes = rest;
                            continue;
                        }
                    }
                    // A head split across reads: gather it.
                    let start = self.line.len().saturating_sub(3);
                    let take = bytes.len().min(self.max_head.saturating_sub(self.line.len()) + 1);
                    self.line.extend_from_slice(&bytes[..take]);
                    match end_of_head(&self.line[start..]) {
                        Some(at) => {
                            let end = start + at + 4;
                            let rest = self.line.len() - end;
                            bytes = &bytes[take - rest..];
                            let head = std::mem::take(&mut self.line);
                            if let Some(c) = self.head(&head[..end]) {
                                conflict = conflict.or(Some(c));
                            }
                            // Keep the allocation for the next split head.
                            self.line = head;
                            self.line.clear();
                        }
                        None if self.line.len() > self.max_head => self.state = State::Stopped,
                        None => bytes = &bytes[take..],
                    }
                }
                State::Fixed(n) | State::ChunkData(n) => {
                    let take = u64::try_from(bytes.len()).unwrap_or(u64::MAX).min(n);
                    bytes = &bytes[usize::try_from(take).unwrap_or(bytes.len())..];
                    let left = n - take;
                    self.state = match (&self.state, left) {
                        (State::Fixed(_), 0) => State::Head,
                        (State::Fixed(_), _) => State::Fixed(left),
                        (_, 0) => State::ChunkEnd,
                        (_, _) => State::ChunkData(left),
                    };
                }
                State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let Some(lf) = bytes.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(bytes);
                        if self.line.len() > 4096 {
                            self.state = State::Stopped;
                        }
                        break;
                    };
                    self.line.extend_from_slice(&bytes[..=lf]);
                    bytes = &bytes[lf + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.state = self.after_line(&line);
                }
            }
        }
        conflict
    }

    /// The state after a complete line in a chunked body.
    fn after_line(&self, line: &[u8]) -> State {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        match self.state {
            State::ChunkEnd if text.is_empty() => State::ChunkSize,
            State::ChunkSize => {
                let size = text.split(|b| *b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size).ok().map(|s| s.trim_matches([' ', '\t']));
                match size.and_then(|s| u64::from_str_radix(s, 16).ok()) {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Stopped,
                }
            }
            State::Trailers if text.is_empty() => State::Head,
            State::Trailers => State::Trailers,
            _ => State::Stopped,
        }
    }

    /// A complete `head`: sets the body state, returns the head's index if it has both fields.
    fn head(&mut self, head: &[u8]) -> Option<u64> {
        let index = self.heads;
        self.heads += 1;
        // Uninitialised slots on the stack: nothing to zero per request. A head with more
        // fields than this stops the watch (hyper then applies `max_headers` itself).
        let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let slots = &mut slots[..self.max_headers.min(MAX_FIELDS)];
        let mut req = httparse::Request::new(&mut []);
        let Ok(httparse::Status::Complete(_)) = req.parse_with_uninit_headers(head, slots) else {
            self.state = State::Stopped;
            return None;
        };
        let (mut length, mut chunked, mut te, mut cl, mut upgrade) = (None, false, false, false, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                cl = true;
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        self.state = if upgrade || req.method == Some("CONNECT") {
            // The connection may switch protocols after this request.
            State::Stopped
        } else if te && chunked {
            State::ChunkSize
        } else if te {
            // hyper refuses a request whose last coding is not chunked.
            State::Stopped
        } else {
            match length {
                Some(0) | None if !cl => State::Head,
                Some(0) => State::Head,
                Some(n) => State::Fixed(n),
                // An unparsable length: hyper refuses it.
                None => State::Stopped,
            }
        };
        (te && cl).then_some(index)
    }
}

/// Where `\r\n\r\n` starts in `bytes`: one `memchr` per line, no searcher to build.
fn end_of_head(bytes: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', bytes)
        .find(|&i| i >= 3 && &bytes[i - 3..=i] == b"\r\n\r\n")
        .map(|i| i - 3)
}

/// Header fields followed per head (the default `max_headers`).
const MAX_FIELDS: usize = 100;

/// The client connection's read side, followed by a [`Framer`].
/// It also tells the connection's [`Activity`](super::idle::Activity) when a next head starts.
pub(crate) struct Watched<T> {
    inner: T,
    framer: Framer,
    conflicts: Arc<Conflicts>,
    activity: Arc<super::idle::Activity>,
}

impl<T> Watched<T> {
    pub(crate) fn new(
        inner: T,
        framer: Framer,
        conflicts: Arc<Conflicts>,
        activity: Arc<super::idle::Activity>,
    ) -> Self {
        Self {
            inner,
            framer,
            conflicts,
            activity,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            self.activity.read(tokio::time::Instant::now);
        }
        if let Poll::Ready(Ok(())) = polled
            && self.framer.state != State::Stopped
            && let Some(index) = self.framer.feed(&buf.filled()[before..])
        {
            // Only the first matters: hyper closes the connection after that request.
            let _ = self
                .conflicts
                .first
                .compare_exchange(u64::MAX, index, Ordering::AcqRel, Ordering::Acquire);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conflicts_in(stream: &[u8], piece: usize) -> (Vec<u64>, u64, State) {
        let mut f = Framer::new(64 * 1024, 100);
        let mut found = Vec::new();
        for chunk in stream.chunks(piece) {
            if let Some(i) = f.feed(chunk) {
                found.push(i);
            }
        }
        (found, f.heads, f.state)
    }

    #[test]
    fn both_fields_are_found_whatever_their_order_and_however_the_bytes_arrive() {
        let stream: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n";
        for piece in [1, 2, 3, 7, 64, stream.len()] {
            let (found, heads, state) = conflicts_in(stream, piece);
            assert_eq!(found, [3], "piece {piece}");
            assert_eq!(heads, 4, "piece {piece}");
            assert_eq!(state, State::Head, "piece {piece}");
        }
        let (found, _, _) = conflicts_in(
            b"\r\nPOST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            5,
        );
        assert_eq!(found, [0]);
    }

    #[test]
    fn body_bytes_that_look_like_a_head_are_not_read_as_one() {
        let body = b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = format!("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        let (found, heads, state) = conflicts_in(&stream, 9);
        assert!(found.is_empty());
        assert_eq!((heads, state), (2, State::Head));
    }

    #[test]
    fn what_cannot_be_followed_stops_the_watch() {
        for stream in [
            &b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"NOT HTTP\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let (found, _, state) = conflicts_in(stream, 4);
            assert!(found.is_empty());
            assert_eq!(state, State::Stopped);
        }
    }
}
