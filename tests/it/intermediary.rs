//! A faithful intermediary: upstreams that behave like real ones (short keep-alive timeouts,
//! early answers) must not turn into spurious 502s.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// How the upstream's connections ended: closed by ztgate (EOF) or by its own idle timer.
#[derive(Default)]
struct Ends {
    accepted: std::sync::atomic::AtomicUsize,
    by_ztgate: std::sync::atomic::AtomicUsize,
    by_upstream: std::sync::atomic::AtomicUsize,
}

/// An HTTP/1.1 upstream that, like Node's `keepAliveTimeout`, closes a keep-alive connection
/// that has been idle for `idle`. Answers every request `200 ok`.
async fn closes_idle_connections(idle: Duration) -> String {
    closes_idle_connections_counted(idle).await.0
}

async fn closes_idle_connections_counted(idle: Duration) -> (String, std::sync::Arc<Ends>) {
    use std::sync::atomic::Ordering::Relaxed;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let ends = std::sync::Arc::new(Ends::default());
    let counted = ends.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let ends = counted.clone();
            ends.accepted.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Idle: no byte of the next request within `idle` closes the connection.
                    let n = match tokio::time::timeout(idle, tcp.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => n,
                        Err(_) => {
                            ends.by_upstream.fetch_add(1, Relaxed);
                            return;
                        }
                        _ => {
                            ends.by_ztgate.fetch_add(1, Relaxed);
                            return;
                        }
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if tcp
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, ends)
}

/// An HTTP/1.1 upstream that answers the first request on each connection `200 ok` and closes
/// the connection, unanswered, when the second request's head has arrived: every reused
/// connection is one the upstream closed before its response (the race a keep-alive timeout
/// makes, without the timing). Returns the URL and how many connections it accepted.
async fn answers_once_per_connection() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering::Relaxed;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                let (mut buf, mut heads) = (Vec::new(), 0);
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = tcp.read(&mut chunk).await {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        heads += 1;
                        if heads > 1 {
                            return; // the second request: closed unanswered
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if tcp.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, accepted)
}

/// Every GET after the first meets a connection the upstream closed unanswered: each is retried
/// once on a new connection (`ztgate_upstream_retries_total{reason="connection_closed"}`), never 502.
async fn each_closed_connection_is_retried_once(upstream_extra: &str, counted_at_least: f64) {
    let (url, accepted) = answers_once_per_connection().await;
    let mut s = Server::start(Opts {
        upstream_url: Some(url),
        upstream_extra: upstream_extra.into(),
        ..Opts::default()
    })
    .await;
    const RETRIES: &str = r#"ztgate_upstream_retries_total{reason="connection_closed"}"#;
    let _turn = HELD_FULL_TURN.lock().await;
    let (before, full_before) = (s.counter(RETRIES).await, s.counter(HELD_FULL).await);
    let mut conn = s.client().connect_h1(s.addr).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get_on(&mut conn, s.addr, "/app").await.as_u16());
    }
    assert_eq!(statuses, [200; 6]);
    // Requests 2 to 6 each met the connection the previous one was answered on, closed, and
    // went again on a new one: one connection for the first request and one per retry.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 6);
    // Counted at least `counted_at_least` times: the recorder is process-wide, and under `cargo
    // test` other tests' retries land in it too (the upstream's own count above is this test's
    // alone).
    let retries = s.counter(RETRIES).await - before;
    assert!(retries >= counted_at_least, "{retries}");
    // One client connection never finds every place held; `held_connections = 0` holds none by
    // configuration: neither is a full quota.
    assert_eq!(s.counter(HELD_FULL).await - full_before, 0.0);
    s.stop().await;
}

#[tokio::test]
async fn a_held_connection_the_upstream_closed_unanswered_is_retried_once() {
    // The client connection holds its upstream connection (`upstream/in_task.rs`).
    // ztgate makes every retry here, so each of the five is counted.
    each_closed_connection_is_retried_once("", 5.0).await;
}

#[tokio::test]
async fn over_held_connections_a_shared_pool_connection_closed_unanswered_is_retried_once() {
    // No held connection: every request overflows to the shared pool, which retries the same.
    // hyper-util's pool retries a request it never wrote on its own (a connection it already saw
    // closed), uncounted; the ones it wrote are ztgate's retries, so the count is not fixed.
    each_closed_connection_is_retried_once("held_connections = 0", 0.0).await;
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_retried_not_answered_502() {
    let idle = Duration::from_millis(200);
    let mut s = Server::start(Opts {
        upstream_url: Some(closes_idle_connections(idle).await),
        ..Opts::default()
    })
    .await;
    let mut conn = s.client().connect_h1(s.addr).await;
    let mut statuses = Vec::new();
    // Each request goes out around the instant the upstream closes the connection pooled by
    // the last one: the pauses sweep from 3 ms before to 3 ms after the upstream's timeout.
    for i in 0..30u64 {
        statuses.push(get_on(&mut conn, s.addr, "/app").await.as_u16());
        tokio::time::sleep(idle - Duration::from_millis(3) + Duration::from_micros(200 * i)).await;
    }
    let bad = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(bad, 0, "{statuses:?}");
    // How many of the 30 met a closing connection varies from run to run (2–3 here; without
    // the retry each of those was a 502); each is counted.
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"ztgate_upstream_retries_total{reason="connection_closed"}"#),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_short_pool_idle_timeout_closes_before_the_upstream_does() {
    use std::sync::atomic::Ordering::Relaxed;
    let idle = Duration::from_millis(300);
    let (url, ends) = closes_idle_connections_counted(idle).await;
    let mut s = Server::start(Opts {
        upstream_url: Some(url),
        upstream_extra: "pool_idle_timeout = \"100ms\"".into(),
        ..Opts::default()
    })
    .await;
    let mut conn = s.client().connect_h1(s.addr).await;
    for _ in 0..5 {
        assert_eq!(get_on(&mut conn, s.addr, "/app").await, 200);
        tokio::time::sleep(idle + Duration::from_millis(100)).await;
    }
    // ztgate dropped each idle connection first (at 100 ms), never the upstream (at 300 ms).
    assert_eq!(ends.by_upstream.load(Relaxed), 0);
    assert_eq!(ends.by_ztgate.load(Relaxed), 5);
    s.stop().await;
}

#[tokio::test]
async fn an_http1_client_connection_keeps_one_upstream_connection_which_ends_with_it() {
    use std::sync::atomic::Ordering::Relaxed;
    let (url, ends) = closes_idle_connections_counted(Duration::from_secs(60)).await;
    let mut s = Server::start(Opts {
        upstream_url: Some(url),
        ..Opts::default()
    })
    .await;
    let mut a = s.client().connect_h1(s.addr).await;
    let mut b = s.client().connect_h1(s.addr).await;
    for _ in 0..10 {
        assert_eq!(get_on(&mut a, s.addr, "/app").await, 200);
        assert_eq!(get_on(&mut b, s.addr, "/app").await, 200);
    }
    // Twenty requests interleaved on two client connections: two upstream connections, each
    // held by its client connection (`upstream/in_task.rs`), none closed yet.
    assert_eq!(ends.accepted.load(Relaxed), 2);
    assert_eq!(ends.by_ztgate.load(Relaxed), 0);
    // A client connection that ends takes its upstream connection with it.
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while ends.by_ztgate.load(Relaxed) < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ends.by_ztgate.load(Relaxed), 1);
    assert_eq!(get_on(&mut b, s.addr, "/app").await, 200);
    assert_eq!(ends.accepted.load(Relaxed), 2);
    s.stop().await;
}

/// `ztgate_upstream_held_connections_full_total`: the recorder is one per process, so the tests
/// that compare its value before and after take turns.
const HELD_FULL: &str = "ztgate_upstream_held_connections_full_total";
static HELD_FULL_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn quiet_client_connections_hold_no_more_upstream_connections_than_held_connections() {
    use std::sync::atomic::Ordering::Relaxed;
    let _turn = HELD_FULL_TURN.lock().await;
    let (url, ends) = closes_idle_connections_counted(Duration::from_secs(60)).await;
    let mut s = Server::start(Opts {
        upstream_url: Some(url),
        upstream_extra: "held_connections = 2".into(),
        // One worker, so one pool: the overflow's pooled connections are then exactly one (each
        // per-core worker has a pool of its own).
        listener_extra: "workers = 1".into(),
        ..Opts::default()
    })
    .await;
    let before = s.counter(HELD_FULL).await;
    // Five client connections, each sending one request and then staying open and quiet (a
    // worker-per-connection upstream would lose one worker to each without the bound).
    let mut quiet = Vec::new();
    for _ in 0..5 {
        let mut c = s.client().connect_h1(s.addr).await;
        assert_eq!(get_on(&mut c, s.addr, "/app").await, 200);
        quiet.push(c);
    }
    // Two held by the first two client connections; the other three went through the pool,
    // one after another, on one pooled connection.
    assert_eq!(ends.accepted.load(Relaxed), 3);
    assert_eq!(s.counter(HELD_FULL).await - before, 3.0);
    // The held ones still carry their client connection's requests.
    assert_eq!(get_on(&mut quiet[0], s.addr, "/app").await, 200);
    assert_eq!(ends.accepted.load(Relaxed), 3);
    s.stop().await;
}

#[tokio::test]
async fn an_unsolicited_101_becomes_502_not_a_dead_tunnel() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                    .await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    let mut s = Server::start(Opts {
        upstream_url: Some(url),
        ..Opts::default()
    })
    .await;
    // A plain GET, and one whose Upgrade ztgate removes (h2 has no Upgrade).
    let reply = s.client().get(s.addr, "/app").await.unwrap();
    assert_eq!(reply.status, 502, "{reply:?}");
    let h2 = http::Request::get("/app").body(http_body_util::Empty::new()).unwrap();
    let reply = s.client().send(s.addr, http::Version::HTTP_2, h2).await.unwrap();
    assert_eq!(reply.status, 502, "{reply:?}");
    s.stop().await;
}

/// An upstream that answers `401` with `Connection: close` right after the request head and
/// never reads the body (an auth check that refuses uploads early), then closes.
async fn answers_before_reading_the_body() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tcp.read(&mut b).await {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 12\r\nconnection: close\r\n\r\nunauthorized",
                    )
                    .await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    url
}

const UPLOAD: usize = 8 * 1024 * 1024;

/// PUTs 8 MiB over HTTP/1.1, writing the body while reading the answer; returns the status.
async fn upload_h1(s: &Server, expect: bool) -> u16 {
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let tls = s.client().tls_connect(tcp).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let head = format!(
        "PUT /app HTTP/1.1\r\nHost: localhost\r\nContent-Length: {UPLOAD}\r\n{}\r\n",
        if expect { "Expect: 100-continue\r\n" } else { "" }
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        if expect {
            // curl waits up to 1 s for a 100 before sending anyway.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..UPLOAD / chunk.len() {
            wr.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut out)).await;
    writer.abort();
    let text = String::from_utf8_lossy(&out);
    // Skip a `100 Continue` if one came first.
    text.split("HTTP/1.1 ")
        .filter_map(|r| r.get(..3)?.parse::<u16>().ok())
        .find(|s| *s != 100)
        .unwrap_or(0)
}

/// PUTs 8 MiB over h2; returns the status (0 when no response arrived).
async fn upload_h2(s: &Server, expect: bool) -> u16 {
    use http_body_util::BodyExt;
    let mut sender = s.client().h2_sender(s.addr).await;
    let body = Chunks(UPLOAD / (64 * 1024));
    let mut req = http::Request::put(format!("https://localhost:{}/app", s.addr.port()))
        .body(body)
        .unwrap();
    if expect {
        req.headers_mut().insert("expect", "100-continue".parse().unwrap());
    }
    match tokio::time::timeout(Duration::from_secs(10), sender.send_request(req)).await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            status
        }
        _ => 0,
    }
}

/// `n` chunks of 64 KiB, produced as fast as they are taken.
struct Chunks(usize);

impl hyper::body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.0 == 0 {
            return std::task::Poll::Ready(None);
        }
        self.0 -= 1;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![
            b'x';
            64 * 1024
        ])))))
    }
}

#[tokio::test]
async fn an_early_answer_during_an_upload_reaches_the_client() {
    let mut s = Server::start(Opts {
        upstream_url: Some(answers_before_reading_the_body().await),
        ..Opts::default()
    })
    .await;
    for expect in [false, true] {
        let h1: Vec<u16> = futures_join(5, || upload_h1(&s, expect)).await;
        assert_eq!(h1, [401; 5], "HTTP/1.1, expect {expect}");
        let h2: Vec<u16> = futures_join(5, || upload_h2(&s, expect)).await;
        assert_eq!(h2, [401; 5], "h2, expect {expect}");
    }
    s.stop().await;
}

async fn futures_join<F, Fut>(n: usize, f: F) -> Vec<u16>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(f().await);
    }
    out
}

#[tokio::test]
async fn a_real_websocket_client_talks_to_the_demo_echo_through_ztgate() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut s = Server::start(Opts::default()).await;
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let tls = s.client().tls_connect(tcp).await;
    let url = format!("wss://localhost:{}/ws", s.addr.port());
    // tungstenite checks Sec-WebSocket-Accept: the handshake fails without a real one.
    let (mut ws, resp) = tokio_tungstenite::client_async(url.as_str(), tls).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello through ztgate")).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello through ztgate"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(vec![1u8, 2, 3]));
    ws.close(None).await.unwrap();
    s.stop().await;
}

/// Opens a WebSocket over h2 (RFC 8441 extended CONNECT) through ztgate; returns the response
/// status and, on 200, the tunnel.
async fn websocket_over_h2(s: &Server, client: Client, path: &str) -> (u16, Option<hyper::upgrade::Upgraded>) {
    let mut sender = client.h2_sender(s.addr).await;
    // The server's SETTINGS (ENABLE_CONNECT_PROTOCOL) must have arrived first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut req = http::Request::connect(format!("https://localhost:{}{path}", s.addr.port()))
        .version(http::Version::HTTP_2)
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    (status, Some(hyper::upgrade::on(&mut resp).await.unwrap()))
}

#[tokio::test]
async fn websockets_over_h2_reach_an_http1_websocket_upstream_under_the_same_policy() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, protocol::Role};
    let audit = tempfile::NamedTempFile::new().unwrap();
    let mut s = Server::start(Opts {
        audit: Some(format!("file = \"{}\"", audit.path().display())),
        ..Opts::default()
    })
    .await;
    let (status, tunnel) = websocket_over_h2(&s, s.client(), "/ws").await;
    assert_eq!(status, 200);
    let io = hyper_util::rt::TokioIo::new(tunnel.unwrap());
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Client, None).await;
    ws.send(Message::text("over h2")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("over h2"));
    drop(ws);
    // The example policy keeps /admin for the admin, over h2 WebSockets too.
    assert_eq!(websocket_over_h2(&s, s.client(), "/admin/ws").await.0, 403);
    assert_eq!(websocket_over_h2(&s, s.admin_client(), "/admin/ws").await.0, 200);
    s.stop().await;
    let records = audit_records(audit.path());
    let summary: Vec<(String, u64)> = records
        .iter()
        .map(|r| (r["path"].as_str().unwrap().to_string(), r["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("/ws".to_string(), 200),
            ("/admin/ws".to_string(), 403),
            ("/admin/ws".to_string(), 200)
        ]
    );
}
