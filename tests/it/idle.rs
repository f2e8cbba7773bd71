//! Idle bounds of established connections (issue #22 item 3): a client that completes the mTLS
//! handshake and sends nothing is closed at `first_request_timeout`, a keep-alive connection
//! idle after its response at `keepalive_timeout` (h2: with no open stream, by GOAWAY), each
//! counted by reason and audited as a `protocol` record. A request being served is never idle,
//! however slowly its response moves.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const BOUNDS: &str = "first_request_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\nheader_read_timeout = \"1s\"";

fn closed(reason: &str) -> String {
    format!("ztgate_connections_closed_total{{reason=\"{reason}\"}}")
}

/// Reads until ztgate closes the connection (EOF or error); how long that took, or `None`
/// after `secs`.
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(io: &mut S, secs: u64) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

fn protocol_reasons(log: &std::path::Path) -> Vec<String> {
    audit_records(log)
        .iter()
        .filter(|r| r["kind"] == "protocol")
        .map(|r| r["reason"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_client_silent_after_the_handshake_is_closed_at_the_first_request_timeout() {
    let audit = tempfile::NamedTempFile::new().unwrap();
    let mut s = Server::start(Opts {
        // The head bound is longer: it must not be what closes a connection that sent nothing.
        listener_extra: "first_request_timeout = \"1s\"\nheader_read_timeout = \"30s\"".into(),
        audit: Some(format!("file = \"{}\"", audit.path().display())),
        ..Opts::default()
    })
    .await;
    let before = s.metrics().await;
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut tls = s.client().tls_connect(tcp).await;
    let took = until_closed(&mut tls, 10)
        .await
        .expect("a silent connection must be closed");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Allowed: a client that sends its request within the bound is served.
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    let after = s.metrics().await;
    let series = closed("first_request_timeout");
    assert!(counter(&after, &series) >= counter(&before, &series) + 1.0, "{after}");
    s.stop().await;
    assert_eq!(protocol_reasons(audit.path()), ["first-request-timeout"]);
    let rec = audit_records(audit.path())
        .into_iter()
        .find(|r| r["kind"] == "protocol")
        .unwrap();
    assert_eq!(rec["identity"]["spiffe_id"], CLIENT_ID, "{rec}");
    assert!(rec.get("status").is_none() || rec["status"].is_null(), "{rec}");
}

#[tokio::test]
async fn an_http1_connection_idle_after_its_response_is_closed_at_the_keepalive_timeout() {
    let audit = tempfile::NamedTempFile::new().unwrap();
    let mut s = Server::start(Opts {
        listener_extra: "keepalive_timeout = \"1s\"\nfirst_request_timeout = \"30s\"\nheader_read_timeout = \"30s\""
            .into(),
        audit: Some(format!("file = \"{}\"", audit.path().display())),
        ..Opts::default()
    })
    .await;
    let before = s.metrics().await;
    // Allowed: requests 600 ms apart keep one connection for 2.4 s, past the bound.
    let mut busy = s.client().connect_h1(s.addr).await;
    for _ in 0..4 {
        assert_eq!(get_on(&mut busy, s.addr, "/app").await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(get_on(&mut busy, s.addr, "/app").await, StatusCode::OK);
    // Refused: after its response, the connection is closed once idle for the bound.
    let idle_from = Instant::now();
    let closed_in = eventually(5, || {
        let c = busy.is_closed();
        async move { c }
    })
    .await;
    let took = idle_from.elapsed();
    assert!(closed_in, "an idle keep-alive connection must be closed");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let after = s.metrics().await;
    let series = closed("keepalive_timeout");
    assert!(counter(&after, &series) >= counter(&before, &series) + 1.0, "{after}");
    s.stop().await;
    assert_eq!(protocol_reasons(audit.path()), ["keepalive-timeout"]);
}

#[tokio::test]
async fn an_h2_connection_with_no_open_stream_gets_goaway_at_the_keepalive_timeout() {
    let mut s = Server::start(Opts {
        listener_extra: "keepalive_timeout = \"1s\"\nfirst_request_timeout = \"30s\"".into(),
        ..Opts::default()
    })
    .await;
    let before = s.metrics().await;
    let mut h2 = s.client().h2_sender::<Empty<Bytes>>(s.addr).await;
    let req = || {
        http::Request::get(format!("https://localhost:{}/app", s.addr.port()))
            .body(Empty::new())
            .unwrap()
    };
    // A stream open longer than the bound (the upstream answers after 1.5 s) is not idle.
    let resp = h2
        .send_request(
            http::Request::get(format!("https://localhost:{}/slow/1500", s.addr.port()))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = resp.into_body().collect().await.unwrap();
    assert_eq!(h2.send_request(req()).await.unwrap().status(), StatusCode::OK);
    let idle_from = Instant::now();
    let closed_in = eventually(5, || {
        let c = h2.is_closed();
        async move { c }
    })
    .await;
    let took = idle_from.elapsed();
    assert!(closed_in, "an idle h2 connection must be closed");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(h2.send_request(req()).await.is_err());
    let after = s.metrics().await;
    let series = closed("keepalive_timeout");
    assert!(counter(&after, &series) >= counter(&before, &series) + 1.0, "{after}");
    s.stop().await;
}

/// A plain-HTTP upstream that reads each connection's first request head, then hands the
/// connection to `answer`; returns its URL.
async fn raw_upstream<F, Fut>(answer: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                answer(c).await;
            });
        }
    });
    url
}

/// A plain-HTTP upstream that answers every request with a 30-byte body, one byte per 100 ms.
async fn dripping_upstream() -> String {
    raw_upstream(|mut c| async move {
        if c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 30\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if c.write_all(b"x").await.is_err() {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_slow_download_is_not_cut_by_the_idle_bounds() {
    let mut s = Server::start(Opts {
        listener_extra: BOUNDS.into(),
        upstream_url: Some(dripping_upstream().await),
        ..Opts::default()
    })
    .await;
    let started = Instant::now();
    let client = s.client();
    let (h1, h2) = tokio::join!(
        client.get(s.addr, "/download"),
        client.send(
            s.addr,
            http::Version::HTTP_2,
            http::Request::get("/download").body(Empty::new()).unwrap()
        )
    );
    // Three times every bound, from the handshake to the last byte.
    assert!(
        started.elapsed() >= Duration::from_millis(2900),
        "{:?}",
        started.elapsed()
    );
    for r in [h1, h2] {
        let r = r.expect("the download must complete");
        assert_eq!((r.status, r.body.len()), (StatusCode::OK, 30));
    }
    s.stop().await;
}

/// A plain-HTTP upstream that answers every request with an endless chunked body.
async fn endless_upstream() -> String {
    raw_upstream(|mut c| async move {
        if c.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let chunk = [b"10000\r\n".as_slice(), &[b'x'; 0x10000], b"\r\n"].concat();
        while c.write_all(&chunk).await.is_ok() {}
    })
    .await
}

/// A client that asks for a response and then stops reading (its receive buffer and ztgate's
/// send buffer fill) is closed `send_timeout` after ztgate's write began to wait, counted as
/// `send_timeout` and audited; before, only `max_connection_age` bounded it, holding the
/// connection and its upstream request. (On h2 the same client is closed by the PING that goes
/// unanswered, `idle_timeout` + 20 s; a stream whose window the client stops opening is held by
/// flow control, with no write waiting: docs/configuration.md.)
#[tokio::test]
async fn a_client_that_stops_reading_is_closed_at_the_send_timeout() {
    let audit = tempfile::NamedTempFile::new().unwrap();
    let mut s = Server::start(Opts {
        // The idle bounds are long: only send_timeout can close this connection.
        listener_extra: "send_timeout = \"1s\"\nkeepalive_timeout = \"300s\"\nfirst_request_timeout = \"300s\"".into(),
        upstream_url: Some(endless_upstream().await),
        audit: Some(format!("file = \"{}\"", audit.path().display())),
        ..Opts::default()
    })
    .await;
    let before = s.metrics().await;
    let series = closed("send_timeout");
    assert_eq!(counter(&before, &series), 0.0, "exported as 0 from start-up: {before}");

    // A raw request, then no reads at all.
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut h1 = s.client().tls_connect(tcp).await;
    h1.write_all(b"GET /download HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let closed_it = eventually(30, || async { counter(&s.metrics().await, &series) >= 1.0 }).await;
    assert!(closed_it, "{}", s.metrics().await);
    // Buffers take a moment to fill, then the bound runs: not before it.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    // The connection is gone: reading drains what was buffered, then ends.
    assert!(until_closed(&mut h1, 30).await.is_some(), "the connection stays open");
    s.stop().await;
    assert_eq!(protocol_reasons(audit.path()), ["send-timeout"]);
}
