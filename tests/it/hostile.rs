//! Hostile input through the real listener: request smuggling shapes, oversized heads and bodies,
//! slowloris, and an identity opening too many connections. Each is refused with a specific status
//! (or the connection is closed) and nothing ambiguous reaches the upstream.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Sends `raw` bytes over an mTLS connection and returns everything ztgate answers until it
/// closes the connection (or 3 s pass).
async fn raw(s: &Server, raw: &[u8]) -> String {
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut tls = s.client().tls_connect(tcp).await;
    tls.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(resp: &str) -> u16 {
    resp.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// The echo upstream answers with the headers it received, ztgate's identity header among them:
/// seeing it means the request reached the upstream.
fn reached_upstream(resp: &str) -> bool {
    resp.contains("x-ztgate-identity:")
}

#[tokio::test]
async fn request_smuggling_shapes_are_refused_with_400_and_never_forwarded() {
    let mut s = Server::start(Opts::default()).await;
    let cases: &[(&str, &[u8])] = &[
        (
            "two different Content-Length values",
            b"POST /app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        ),
        (
            "a Content-Length list",
            b"POST /app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4, 40\r\n\r\nabcd",
        ),
        (
            "Transfer-Encoding that does not end in chunked",
            b"POST /app HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        (
            "obs-fold (a header continued on the next line)",
            b"GET /app HTTP/1.1\r\nHost: localhost\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "a control character in a header value",
            b"GET /app HTTP/1.1\r\nHost: localhost\r\nX-Bad: a\x01b\r\n\r\n",
        ),
        (
            "a space before the colon",
            b"GET /app HTTP/1.1\r\nHost: localhost\r\nContent-Length : 4\r\n\r\nabcd",
        ),
        (
            "a malformed chunk size",
            b"POST /app HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n",
        ),
        ("not HTTP at all", b"HELLO THERE\r\n\r\n"),
    ];
    for (what, bytes) in cases {
        let resp = raw(&s, bytes).await;
        assert_eq!(status_of(&resp), 400, "{what}: {resp:?}");
        assert!(!reached_upstream(&resp), "{what} reached the upstream: {resp}");
        // Exactly one response: nothing smuggled behind it was answered.
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{what}: {resp}");
    }
    s.stop().await;
}

/// Content-Length together with Transfer-Encoding: a gateway should not guess which framing the
/// client meant (RFC 9112 §6.1 allows refusing it). hyper drops Content-Length before ztgate
/// sees the request; ztgate follows the framing alongside (server/framing.rs) and answers 400,
/// nothing reaches the upstream, the connection is closed, and the bytes smuggled behind it are
/// never treated as a second request. Either order of the two fields, over several requests on
/// one connection.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_the_rest_dropped() {
    let mut s = Server::start(Opts::default()).await;
    let before = s.metrics().await;
    for raw_request in [
        &b"POST /app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        b"POST /app HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
        // After two well-framed requests on the same connection.
        b"POST /app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabcPOST /app HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nPOST /app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let resp = raw(&s, raw_request).await;
        let statuses: Vec<u16> = resp
            .split("HTTP/1.1 ")
            .skip(1)
            .filter_map(|r| r.get(..3)?.parse().ok())
            .collect();
        let want: &[u16] = if statuses.len() == 3 { &[200, 200, 400] } else { &[400] };
        assert_eq!(statuses, want, "{resp}");
        assert!(resp.to_ascii_lowercase().contains("connection: close"), "{resp}");
        assert!(!resp.contains("/admin/x"), "{resp}");
    }
    let after = s.metrics().await;
    let series = r#"ztgate_bad_requests_total{reason="content-length-with-transfer-encoding"}"#;
    assert!(counter(&after, series) - counter(&before, series) >= 3.0, "{after}");
    s.stop().await;
}

#[tokio::test]
async fn oversized_heads_get_431_and_oversized_bodies_get_413() {
    let mut s = Server::start(Opts {
        listener_extra: "max_header_bytes = \"16KiB\"\nmax_headers = 20\nmax_request_body = \"1KiB\"".into(),
        ..Opts::default()
    })
    .await;

    let big = format!(
        "GET /app HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    assert_eq!(status_of(&raw(&s, big.as_bytes()).await), 431);
    let mut many = String::from("GET /app HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(status_of(&raw(&s, many.as_bytes()).await), 431);

    // Declared too large: refused before anything is sent upstream (no body needed).
    let resp = raw(
        &s,
        b"POST /app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2048\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    assert!(resp.contains("payload too large (request id "), "{resp}");
    // Streamed (chunked) past the limit: cut off and refused the same way.
    let chunk = "b".repeat(1000);
    let chunked = format!(
        "POST /app HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n{chunk}\r\n3e8\r\n{chunk}\r\n0\r\n\r\n"
    );
    let resp = raw(&s, chunked.as_bytes()).await;
    assert_eq!(status_of(&resp), 413, "{resp}");
    // Within the limits: fine.
    let ok =
        format!("POST /app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{chunk}");
    let resp = raw(&s, ok.as_bytes()).await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    assert!(s.metrics().await.contains(r#"status_class="4xx""#));
    s.stop().await;
}

#[tokio::test]
async fn slowloris_is_cut_at_the_header_read_timeout() {
    let mut s = Server::start(Opts {
        listener_extra: "header_read_timeout = \"1s\"".into(),
        ..Opts::default()
    })
    .await;
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut tls = s.client().tls_connect(tcp).await;
    let started = std::time::Instant::now();
    tls.write_all(b"GET /app HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    // Keep trickling, one byte every 200 ms, never finishing the head.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if tls.write_all(b"a").await.is_err() {
                break;
            }
            let mut buf = [0u8; 512];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), tls.read(&mut buf)).await
                && n == 0
            {
                break;
            }
        }
    };
    let cut = tokio::time::timeout(Duration::from_secs(10), trickle).await.is_ok();
    assert!(cut, "a never-ending request head must be cut");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Other clients are unaffected.
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn an_identity_over_its_connection_cap_is_refused_while_others_connect() {
    let pki = Pki::new();
    let log = pki.path("audit/ztgate-audit.log");
    let mut s = Server::start_with(
        pki,
        Opts {
            listener_extra: "max_connections_per_identity = 2".into(),
            audit: Some(format!("file = \"{}\"", log.display())),
            ..Opts::default()
        },
    )
    .await;
    let mut a = s.client().connect_h1(s.addr).await;
    let mut b = s.client().connect_h1(s.addr).await;
    assert_eq!(get_on(&mut a, s.addr, "/app").await, StatusCode::OK);
    assert_eq!(get_on(&mut b, s.addr, "/app").await, StatusCode::OK);
    // The third connection of the same identity is closed right after the handshake.
    let third = s.client().get(s.addr, "/app").await;
    assert!(third.is_err(), "{third:?}");
    // Another identity is not affected.
    assert_eq!(
        s.admin_client().get(s.addr, "/admin/x").await.unwrap().status,
        StatusCode::OK
    );
    assert!(
        s.metrics()
            .await
            .contains(r#"ztgate_connections_closed_total{reason="identity_cap"}"#)
    );
    // A slot frees when a connection ends.
    drop(a);
    let freed = eventually(5, || {
        let c = s.client();
        let addr = s.addr;
        async move { c.get(addr, "/app").await.map(|r| r.status) == Ok(StatusCode::OK) }
    })
    .await;
    assert!(freed);
    s.stop().await;
    // Counted and audited under one name, with the identity that was refused.
    let caps: Vec<serde_json::Value> = audit_records(&log)
        .into_iter()
        .filter(|r| r["kind"] == "handshake")
        .collect();
    assert_eq!(caps.len(), 1, "{caps:?}");
    assert_eq!(caps[0]["reason"], "identity_cap");
    assert_eq!(caps[0]["decision"], "deny");
    assert_eq!(caps[0]["identity"]["spiffe_id"], CLIENT_ID);
}

#[tokio::test]
async fn idle_connections_beyond_max_connections_wait_and_the_cap_holds() {
    let mut s = Server::start(Opts {
        listener_extra: "max_connections = 10".into(),
        ..Opts::default()
    })
    .await;
    // Ten idle, fully established mTLS connections take every slot.
    let mut idle = Vec::new();
    for _ in 0..10 {
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        idle.push(s.client().tls_connect(tcp).await);
    }
    // The eleventh is accepted by the kernel but not served: its handshake does not complete.
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let client = s.client();
    let mut waiting = tokio::spawn(async move { client.tls_connect(tcp).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(800), &mut waiting)
            .await
            .is_err(),
        "an 11th connection was served past max_connections = 10"
    );
    // One idle client leaves: the waiting one is served.
    drop(idle.pop());
    let tls = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting connection was not served after a slot freed")
        .unwrap();
    drop(tls);
    drop(idle);
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    s.stop().await;
}

/// Minimal HTTP/2 over mTLS for requests a well-behaved client library refuses to send.
mod raw_h2 {
    use super::*;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// HPACK "literal header field without indexing, new name" for each pair.
    pub fn headers(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in pairs {
            out.push(0x00);
            out.push(n.len() as u8);
            out.extend_from_slice(n.as_bytes());
            out.push(v.len() as u8);
            out.extend_from_slice(v.as_bytes());
        }
        out
    }

    /// What ztgate answered on stream 1: a response status byte (the first HPACK byte of its
    /// HEADERS), `Err("reset")` for RST_STREAM/GOAWAY, or `Err("closed")`.
    pub async fn exchange(s: &Server, frames: Vec<u8>) -> Result<u8, &'static str> {
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        let mut tls = s.client().tls_connect_h2(tcp).await;
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        out.extend(frames);
        tls.write_all(&out).await.unwrap();
        let read = async {
            loop {
                let mut head = [0u8; 9];
                if tls.read_exact(&mut head).await.is_err() {
                    return Err("closed");
                }
                let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
                let (kind, flags) = (head[3], head[4]);
                let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
                let mut payload = vec![0u8; len];
                if tls.read_exact(&mut payload).await.is_err() {
                    return Err("closed");
                }
                match (kind, stream) {
                    (0x4, 0) if flags & 1 == 0 => {
                        // Acknowledge the server's SETTINGS.
                        let _ = tls.write_all(&frame(0x4, 1, 0, &[])).await;
                    }
                    (0x1, 1) => return Ok(payload.first().copied().unwrap_or(0)),
                    (0x3, 1) | (0x7, _) => return Err("reset"),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .unwrap_or(Err("closed"))
    }
}

#[tokio::test]
async fn h2_requests_with_connection_specific_headers_or_a_lying_content_length_are_refused() {
    use raw_h2::*;
    let mut s = Server::start(Opts::default()).await;
    let authority = format!("localhost:{}", s.addr.port());
    let base = |extra: &[(&str, &str)]| {
        let mut pairs = vec![
            (":method", "POST"),
            (":scheme", "https"),
            (":path", "/app"),
            (":authority", authority.as_str()),
        ];
        pairs.extend_from_slice(extra);
        headers(&pairs)
    };
    // Sanity: a plain request through this raw client gets 200 (HPACK static index 8, 0x88).
    let ok = exchange(&s, frame(0x1, 0x5, 1, &base(&[]))).await;
    assert_eq!(ok, Ok(0x88), "the raw h2 client itself must work");

    // RFC 9113 8.2.2: connection-specific header fields make the request malformed.
    for (name, value) in [
        ("connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
    ] {
        let r = exchange(&s, frame(0x1, 0x5, 1, &base(&[(name, value)]))).await;
        assert_eq!(r, Err("reset"), "{name}: {value} must be refused, got {r:?}");
    }
    // content-length 10 but 3 bytes of DATA: malformed (RFC 9113 8.1.1), never forwarded as is.
    let mut frames = frame(0x1, 0x4, 1, &base(&[("content-length", "10")]));
    frames.extend(frame(0x0, 0x1, 1, b"abc"));
    let r = exchange(&s, frames).await;
    // Refused by a stream reset, or answered 400 (static index 12, 0x8c) if the body had
    // started flowing upstream: never a 200.
    assert!(r == Err("reset") || r == Ok(0x8c), "lying content-length: {r:?}");
    s.stop().await;
}

/// What hyper refuses before the layers run (it answers 400/431 itself, or closes at the header
/// timeout) is still a decision about an authenticated client: audited as `kind = "protocol"`
/// with the connection's identity, and counted.
#[tokio::test]
async fn requests_the_parser_refuses_are_audited_with_the_identity_and_counted() {
    let pki = Pki::new();
    let log = pki.path("audit.log");
    let mut s = Server::start_with(
        pki,
        Opts {
            listener_extra: "max_header_bytes = \"16KiB\"\nheader_read_timeout = \"500ms\"".into(),
            audit: Some(format!("file = \"{}\"", log.display())),
            ..Opts::default()
        },
    )
    .await;
    let smuggle = raw(
        &s,
        b"POST /app HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
    )
    .await;
    assert_eq!(status_of(&smuggle), 400, "{smuggle}");
    let big = format!(
        "GET /app HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    assert_eq!(status_of(&raw(&s, big.as_bytes()).await), 431);
    // Half a head, then silence: closed at the header timeout without an answer.
    let silent = raw(&s, b"GET /app HTTP/1.1\r\nHost: loc").await;
    assert_eq!(silent, "", "{silent}");
    // Metrics are process-wide (other tests refuse requests too): the series must exist.
    let m = s.metrics().await;
    for reason in ["malformed-request", "headers-too-large", "header-read-timeout"] {
        assert!(
            m.contains(&format!("ztgate_protocol_errors_total{{reason=\"{reason}\"}} ")),
            "{reason}: {m}"
        );
    }
    s.stop().await;
    let recs: Vec<_> = audit_records(&log)
        .into_iter()
        .filter(|r| r["kind"] == "protocol")
        .collect();
    let got: Vec<(&str, Option<u64>)> = recs
        .iter()
        .map(|r| (r["reason"].as_str().unwrap(), r["status"].as_u64()))
        .collect();
    assert_eq!(
        got,
        [
            ("malformed-request", Some(400)),
            ("headers-too-large", Some(431)),
            ("header-read-timeout", None)
        ]
    );
    for r in &recs {
        assert_eq!(r["decision"], "error", "{r}");
        assert_eq!(r["identity"]["spiffe_id"], CLIENT_ID, "{r}");
        assert!(r["conn_id"].as_u64().is_some() && r["peer"].as_str().is_some(), "{r}");
    }
}
