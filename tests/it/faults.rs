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
