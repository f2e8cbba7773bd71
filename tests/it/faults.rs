//! Upstream faults and reloads under load: a garbage-speaking or mid-response-resetting upstream
//! gets 502 (or an aborted body, never a silently truncated one) with an audit record, ztgate keeps
//! serving everyone else, and a policy reload under load fails no request.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// A TCP "upstream" that reads a request head and answers with `reply`, then closes.
async fn bad_upstream(reply: &'static [u8]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(reply).await;
                // Close with unread data discarded: as abrupt as a crashing upstream.
                drop(s);
            });
        }
    });
    url
}

#[tokio::test]
async fn an_upstream_answering_garbage_is_502_with_an_audit_record() {
    let pki = Pki::new();
    let log = pki.path("audit.log");
    let upstream = bad_upstream(b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    let mut s = Server::start_with(
        pki,
        Opts {
            upstream_url: Some(upstream),
            audit: Some(format!("file = \"{}\"", log.display())),
            ..Opts::default()
        },
    )
    .await;
    let r = s.client().get(s.addr, "/app").await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert!(
        r.body.starts_with("502 upstream unavailable (request id "),
        "{}",
        r.body
    );
    assert!(!r.body.contains("SSH"), "nothing from the upstream leaks: {}", r.body);
    s.stop().await;
    let recs = audit_records(&log);
    let req = recs.iter().find(|r| r["kind"] == "request").unwrap();
    assert_eq!(req["status"], 502, "{req}");
    assert_eq!(req["reason"], "upstream-failed", "{req}");
}

#[tokio::test]
async fn an_upstream_resetting_mid_response_aborts_the_body_and_others_are_served() {
    let upstream =
        bad_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncontent-type: text/plain\r\n\r\nonly ten b").await;
    let mut broken = Server::start(Opts {
        upstream_url: Some(upstream),
        ..Opts::default()
    })
    .await;
    // The head was already sent, so the client cannot get a 502: it must see the body fail
    // rather than a short body that looks complete.
    let r = broken.client().get(broken.addr, "/app").await;
    match r {
        Err(e) => assert!(e.contains("Body") || e.contains("body") || e.contains("Eof"), "{e}"),
        Ok(reply) => panic!("a truncated body was delivered as complete: {reply:?}"),
    }
    // The same ztgate keeps serving (the next request fails the same way, not worse), and a
    // healthy upstream behind another ztgate is unaffected.
    assert!(broken.client().get(broken.addr, "/app").await.is_err());
    let mut healthy = Server::start(Opts::default()).await;
    assert_eq!(
        healthy.client().get(healthy.addr, "/app").await.unwrap().status,
        StatusCode::OK
    );
    broken.stop().await;
    healthy.stop().await;
}

#[tokio::test]
async fn policy_reloads_under_load_fail_no_request() {
    let mut s = Server::start(Opts {
        policy_extra: "reload_interval = \"50ms\"".into(),
        ..Opts::default()
    })
    .await;
    let policy_path = s.pki.path("policy.toml");
    let original = std::fs::read_to_string(&policy_path).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let client = s.client();
        let addr = s.addr;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = client.connect_h1(addr).await;
            let (mut ok, mut other) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match get_on(&mut conn, addr, "/app").await {
                    StatusCode::OK => ok += 1,
                    st => other.push(st),
                }
            }
            (ok, other)
        }));
    }
    // Rewrite the policy repeatedly (same meaning, different bytes) while requests flow.
    for i in 0..10 {
        std::fs::write(&policy_path, format!("{original}\n# revision {i}\n")).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (ok, other) = w.await.unwrap();
        assert!(other.is_empty(), "requests failed during reloads: {other:?}");
        total += ok;
    }
    assert!(total > 20, "too little load to mean anything: {total}");
    let metrics = s.metrics().await;
    let reloads = metrics
        .lines()
        .find(|l| l.starts_with(r#"ztgate_policy_reload_total{result="ok"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(reloads >= 3.0, "the policy was not reloaded under load: {reloads}");
    s.stop().await;
}

#[tokio::test]
async fn certificate_rotations_under_load_fail_no_handshake_and_no_request() {
    let mut s = Server::start(Opts {
        tls_extra: "reload_interval = \"50ms\"".into(),
        ..Opts::default()
    })
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let client = s.client();
        let addr = s.addr;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A new connection each time: every request exercises a handshake.
                match client.get(addr, "/app").await {
                    Ok(r) if r.status == StatusCode::OK => ok += 1,
                    Ok(r) => failed.push(r.status.to_string()),
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        }));
    }
    for i in 0..6 {
        let next = s.pki.issue(&ztgate::pki::LeafSpec::server(&format!("rotated-{i}")));
        // Both files replaced atomically (rename), as kubelet and cert-manager do.
        let (k, c) = (s.pki.path("server-key.pem.new"), s.pki.path("server.pem.new"));
        std::fs::write(&k, &next.key_pem).unwrap();
        std::fs::write(&c, &next.cert_pem).unwrap();
        std::fs::rename(&k, s.pki.path("server-key.pem")).unwrap();
        std::fs::rename(&c, s.pki.path("server.pem")).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (ok, failed) = w.await.unwrap();
        assert!(failed.is_empty(), "failures during rotations: {failed:?}");
        total += ok;
    }
    assert!(total > 20, "too little load: {total}");
    assert!(s.metrics().await.contains(r#"ztgate_tls_reload_total{result="ok"}"#));
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_a_large_response_costs_bounded_memory() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // An upstream that would send 1 GiB as fast as it is allowed to.
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", l.local_addr().unwrap());
    {
        let sent = sent.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let sent = sent.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n")
                        .await;
                    let chunk = vec![b'x'; 1 << 20];
                    while s.write_all(&chunk).await.is_ok() {
                        sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                });
            }
        });
    }
    let pki = Pki::new();
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = config_toml(pki.dir.path(), &policy, "", &upstream_url, "", "/") + "\n[log]\nformat = \"json\"\n";
    let cfg_path = pki.write("ztgate.toml", &cfg);
    let (mut child, addr) = spawn_daemon(&cfg_path);
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = rss(child.id());

    // Ask for the body, read only the first bytes, then stop reading.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
    let mut tls = client.tls_connect(tcp).await;
    tls.write_all(format!("GET /big HTTP/1.1\r\nHost: localhost:{}\r\n\r\n", addr.port()).as_bytes())
        .await
        .unwrap();
    let mut first = [0u8; 4096];
    let n = tls.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = rss(child.id());
    let upstream_sent = sent.load(Ordering::Relaxed);
    signal(&child, "KILL");
    let _ = child.wait();
    drop(tls);
    let grew_kib = during.saturating_sub(before);
    assert!(
        grew_kib < 32 * 1024,
        "ztgate buffered a stalled response: RSS grew {grew_kib} KiB"
    );
    assert!(
        upstream_sent < 64 << 20,
        "backpressure did not reach the upstream: it sent {} MiB",
        upstream_sent >> 20
    );
}

/// `request_timeout`: an upstream that answers at once but then streams forever has its
/// response cut at the deadline (the client sees the body fail, not a clean end), counted by
/// phase; a route with `request_timeout = "off"` keeps streaming past it.
#[tokio::test]
async fn request_timeout_cuts_an_endless_response_and_a_route_can_turn_it_off() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                while s.write_all(b"5\r\ntick\n\r\n").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
        }
    });
    let mut s = Server::start(Opts {
        upstream_url: Some(upstream),
        listener_extra: "request_timeout = \"700ms\"".into(),
        extra:
            "[[route]]\nname = \"stream\"\npath_prefix = \"/stream\"\nupstream = \"app\"\nrequest_timeout = \"off\"\n"
                .into(),
        ..Opts::default()
    })
    .await;
    let started = std::time::Instant::now();
    let r = s.client().get(s.addr, "/app").await;
    assert!(r.is_err(), "an endless body ended cleanly: {r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut after {:?}",
        started.elapsed()
    );
    assert!(
        s.metrics()
            .await
            .contains(r#"ztgate_request_timeouts_total{phase="response_body"} "#)
    );

    // On the route with the deadline off, the body is still flowing well past 700 ms.
    let client = s.client();
    let mut sender = client.connect_h1(s.addr).await;
    let req = http::Request::get("/stream/x")
        .header("host", "localhost")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let until = std::time::Instant::now() + Duration::from_millis(1500);
    let mut ticks = 0;
    while std::time::Instant::now() < until {
        let frame = http_body_util::BodyExt::frame(&mut body).await.unwrap().unwrap();
        ticks += usize::from(frame.is_data());
    }
    assert!(ticks > 10, "only {ticks} chunks in 1.5 s");
    s.stop().await;
}

/// A client that sends its body too slowly gets 408 at `request_timeout`, audited as
/// `request-timeout`; an upstream that is too slow with its head gets 504 at the same deadline
/// (well before its own `response_timeout`).
#[tokio::test]
async fn request_timeout_answers_a_slow_body_408_and_a_slow_upstream_504() {
    use http_body_util::BodyExt;
    // An upstream that reads the whole body before answering.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    if let Some(ms) = req.uri().path().strip_prefix("/slow/").and_then(|m| m.parse().ok()) {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    let n = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(format!("got {n}")),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let pki = Pki::new();
    let log = pki.path("audit.log");
    let mut s = Server::start_with(
        pki,
        Opts {
            upstream_url: Some(upstream),
            listener_extra: "request_timeout = \"600ms\"".into(),
            audit: Some(format!("file = \"{}\"", log.display())),
            ..Opts::default()
        },
    )
    .await;
    let client = s.client();
    let raw = |path: &'static str| {
        let client = &client;
        let addr = s.addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = client.tls_connect(tcp).await;
            tls.write_all(
                format!("POST {path} HTTP/1.1\r\nHost: localhost\r\ncontent-length: 100\r\n\r\n0123456789").as_bytes(),
            )
            .await
            .unwrap();
            tls
        }
    };
    // A body that is complete in time gets through.
    let mut tls = raw("/fast").await;
    tls.write_all(&[b'x'; 90]).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200") && head.ends_with("got 100"), "{head}");

    // 10 of 100 bytes, then nothing.
    let started = std::time::Instant::now();
    let mut tls = raw("/slow-client").await;
    let n = tls.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("408 request timeout (request id "), "{head}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // The upstream takes 3 s to answer; the 30 s response_timeout never comes into play.
    let started = std::time::Instant::now();
    let r = client.get(s.addr, "/slow/3000").await.unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let m = s.metrics().await;
    assert!(
        m.contains(r#"ztgate_request_timeouts_total{phase="request_body"}"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ztgate_request_timeouts_total{phase="response_head"}"#),
        "{m}"
    );
    s.stop().await;
    let recs = audit_records(&log);
    let slow = recs.iter().find(|r| r["path"] == "/slow-client").unwrap();
    assert_eq!(
        (slow["status"].as_u64(), slow["reason"].as_str()),
        (Some(408), Some("request-timeout"))
    );
    let up = recs.iter().find(|r| r["path"] == "/slow/3000").unwrap();
    assert_eq!(
        (up["status"].as_u64(), up["reason"].as_str()),
        (Some(504), Some("upstream-timeout"))
    );
}

#[test]
fn bad_request_timeouts_are_config_errors_with_their_line() {
    let pki = Pki::new();
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:8080", "", "/").replace(
        "handshake_timeout = \"2s\"\n",
        "handshake_timeout = \"2s\"\nrequest_timeout = \"0s\"\n",
    ) + "\n[[route]]\nname = \"r\"\npath_prefix = \"/r\"\nupstream = \"app\"\nrequest_timeout = \"soon\"\n";
    let path = pki.write("ztgate.toml", &cfg);
    let err = ztgate::config::Config::load(&path).unwrap_err().to_string();
    let lines: Vec<usize> = cfg
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("request_timeout"))
        .map(|(i, _)| i + 1)
        .collect();
    assert!(
        err.contains(&format!(":{}:", lines[0])) && err.contains("greater than zero"),
        "{err}"
    );
    assert!(err.contains(&format!(":{}:", lines[1])), "{err}");
    // "off" is valid in both places.
    let ok = cfg.replace("\"0s\"", "\"off\"").replace("\"soon\"", "\"off\"");
    let path = pki.write("ztgate-ok.toml", &ok);
    ztgate::config::Config::load(&path).unwrap();
}
