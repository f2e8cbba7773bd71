//! gRPC through ztgate: a gRPC server speaking the real wire protocol (h2 prior knowledge,
//! length-prefixed messages, `grpc-status` trailers, `te: trailers` required as grpc-go and tonic
//! do) behind ztgate, and a gRPC client over mTLS h2 in front of it.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::support::*;

/// One gRPC message: compressed flag 0, 4-byte big-endian length, payload.
fn frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.extend_from_slice(&[0]);
    b.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    b.extend_from_slice(msg);
    b.freeze()
}

fn messages(mut body: Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        body.advance(5);
        out.push(body.split_to(len));
    }
    out
}

fn trailers(status: u32) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", status.to_string().parse().unwrap());
    t
}

/// `/echo.Echo/Unary` echoes the message; `/echo.Echo/Stream` answers it 3 times;
/// `/echo.Echo/Slow` waits past the caller's `grpc-timeout` and answers DEADLINE_EXCEEDED (4).
async fn grpc_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let te_ok = req.headers().get("te").is_some_and(|v| v == "trailers");
                    let grpc = req
                        .headers()
                        .get("content-type")
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                    if !te_ok || !grpc {
                        let mut r = Response::new(frames::body(vec![]));
                        *r.status_mut() = http::StatusCode::BAD_REQUEST;
                        return Ok::<_, std::convert::Infallible>(r);
                    }
                    let timeout = req
                        .headers()
                        .get("grpc-timeout")
                        .and_then(|v| v.to_str().ok()?.strip_suffix('m')?.parse::<u64>().ok());
                    let path = req.uri().path().to_string();
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let msg = messages(body).into_iter().next().unwrap_or_default();
                    let frames = match path.as_str() {
                        "/echo.Echo/Unary" => vec![Frame::data(frame(&msg)), Frame::trailers(trailers(0))],
                        "/echo.Echo/Stream" => {
                            let mut f: Vec<_> = (0..3).map(|_| Frame::data(frame(&msg))).collect();
                            f.push(Frame::trailers(trailers(0)));
                            f
                        }
                        "/echo.Echo/Slow" => {
                            let deadline = Duration::from_millis(timeout.unwrap_or(10_000));
                            tokio::time::sleep(deadline + Duration::from_millis(50)).await;
                            vec![Frame::trailers(trailers(4))]
                        }
                        _ => vec![Frame::trailers(trailers(12))],
                    };
                    let mut r = Response::new(frames::body(frames));
                    r.headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    Ok(r)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    url
}

/// A `Body` from a list of frames, without pulling in a stream crate.
mod frames {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Frames(std::collections::VecDeque<Frame<Bytes>>);

    pub fn body(frames: Vec<Frame<Bytes>>) -> Frames {
        Frames(frames.into())
    }

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }
}

/// Calls `method` through ztgate; returns the HTTP status, the messages and `grpc-status`.
async fn call(s: &Server, method: &str, msg: &[u8], timeout: Option<&str>) -> (u16, Vec<Bytes>, Option<String>) {
    let mut sender = s.client().h2_sender(s.addr).await;
    let mut req = Request::post(format!("https://localhost:{}{method}", s.addr.port()))
        .version(Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(frame(msg)))
        .unwrap();
    if let Some(t) = timeout {
        req.headers_mut().insert("grpc-timeout", t.parse().unwrap());
    }
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let collected = resp.into_body().collect().await.unwrap();
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_string());
    (status, messages(collected.to_bytes()), grpc_status)
}

#[tokio::test]
async fn grpc_unary_streaming_and_deadlines_pass_through_with_trailers() {
    let mut s = Server::start(Opts {
        upstream_url: Some(grpc_server().await),
        upstream_extra: "protocol = \"http2\"".into(),
        ..Opts::default()
    })
    .await;
    let (status, msgs, grpc_status) = call(&s, "/echo.Echo/Unary", b"hello", None).await;
    assert_eq!((status, grpc_status.as_deref()), (200, Some("0")));
    assert_eq!(msgs, [Bytes::from_static(b"hello")]);

    let (status, msgs, grpc_status) = call(&s, "/echo.Echo/Stream", b"tick", None).await;
    assert_eq!((status, grpc_status.as_deref()), (200, Some("0")));
    assert_eq!(msgs.len(), 3);

    // The caller's deadline reaches the server, and its DEADLINE_EXCEEDED comes back.
    let (status, _, grpc_status) = call(&s, "/echo.Echo/Slow", b"", Some("100m")).await;
    assert_eq!((status, grpc_status.as_deref()), (200, Some("4")));
    s.stop().await;
}
