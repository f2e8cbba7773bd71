//! Slow and abrupt clients: slowloris heads, clients silent after the handshake, bare TCP
//! connections that never start TLS, and connections reset mid-handshake, mid-head and while
//! waiting for their response, all while well-behaved clients send requests. The well-behaved
//! clients see no failure; every slow connection is closed by its configured timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Daemon, Rss, Setup, World, check_audit_file, secs};
use crate::load::{Load, Mode, Tally, failures};
use crate::support::{Client, audit_records};

/// `handshake_timeout`, `header_read_timeout` and `first_request_timeout` in this scenario.
const TIMEOUT: Duration = Duration::from_secs(1);
/// A slow connection must be closed no later than its timeout plus this (a debug build on a
/// loaded 2-core machine), and not before its timeout less 100 ms.
const CLOSE_MARGIN: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// TLS, then a request head one byte every 200 ms: `header_read_timeout`.
    Slowloris,
    /// TLS, then nothing: `first_request_timeout`.
    Silent,
    /// TCP, then nothing: `handshake_timeout`.
    SilentTcp,
    /// Half a ClientHello, then a TCP reset.
    ResetInHandshake,
    /// TLS, half a request head, then a TCP reset.
    ResetInHead,
    /// TLS, a whole request for a slow response, then a TCP reset before it comes.
    ResetAwaitingResponse,
}

/// Reads until the peer closes; how long that took from `since`, or `None` after 10 s.
async fn until_closed<S: tokio::io::AsyncRead + Unpin>(io: &mut S, since: Instant) -> Option<Duration> {
    let mut buf = [0u8; 512];
    let read = async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return since.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.ok()
}

/// One abrupt or slow client; for the slow ones, how long until ztgate closed the connection.
async fn attack(kind: Kind, client: &Client, addr: SocketAddr) -> Option<Duration> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    match kind {
        Kind::SilentTcp => {
            let mut tcp = tcp;
            until_closed(&mut tcp, Instant::now()).await
        }
        Kind::ResetInHandshake => {
            let mut tcp = tcp;
            // A handshake record announcing 512 bytes, of which 40 come.
            let mut hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
            hello.resize(45, 0x2a);
            tcp.write_all(&hello).await.unwrap();
            tcp.set_zero_linger().unwrap();
            None
        }
        _ => {
            let mut tls = client.try_tls_connect(tcp).await.ok()?;
            let host = format!("host: localhost:{}\r\n", addr.port());
            match kind {
                Kind::Silent => until_closed(&mut tls, Instant::now()).await,
                Kind::Slowloris => {
                    let started = Instant::now();
                    let (mut rd, mut wr) = tokio::io::split(tls);
                    let drip = async {
                        let head = format!("GET /app HTTP/1.1\r\n{host}x-slow: ");
                        for b in head.bytes().chain(std::iter::repeat(b'a')) {
                            if wr.write_all(&[b]).await.is_err() || wr.flush().await.is_err() {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        std::future::pending::<Option<Duration>>().await
                    };
                    tokio::select! {
                        closed = until_closed(&mut rd, started) => closed,
                        never = drip => never,
                    }
                }
                Kind::ResetInHead => {
                    tls.write_all(b"GET /app HTTP/1.1\r\nhost: loc").await.unwrap();
                    tls.flush().await.unwrap();
                    tls.get_ref().0.set_zero_linger().unwrap();
                    None
                }
                Kind::ResetAwaitingResponse => {
                    let req = format!("GET /slow/300 HTTP/1.1\r\n{host}\r\n");
                    tls.write_all(req.as_bytes()).await.unwrap();
                    tls.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    tls.get_ref().0.set_zero_linger().unwrap();
                    None
                }
                Kind::SilentTcp | Kind::ResetInHandshake => unreachable!(),
            }
        }
    }
}

const KINDS: [Kind; 6] = [
    Kind::Slowloris,
    Kind::Silent,
    Kind::SilentTcp,
    Kind::ResetInHandshake,
    Kind::ResetInHead,
    Kind::ResetAwaitingResponse,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: cargo test --test soak -- --ignored --test-threads=1"]
async fn slow_and_abrupt_clients_are_cut_by_the_timeouts_and_hurt_no_one_else() {
    let t = format!("\"{}s\"", TIMEOUT.as_secs());
    let World { pki, audit, config } = World::new(Setup {
        listener: Some(format!(
            "handshake_timeout = {t}\nheader_read_timeout = {t}\nfirst_request_timeout = {t}"
        )),
        ..Setup::default()
    })
    .await;
    let d = Daemon::spawn(&config);
    let client = Arc::new(Client::new(&pki.ca.cert_pem(), Some(&pki.client)));
    let mut load = Load::new();
    load.spawn(3, "client", &client, d.addr, "/app", Mode::KeepAlive);
    load.spawn(1, "client", &client, d.addr, "/app", Mode::Fresh(Version::HTTP_11));
    load.spawn(1, "client", &client, d.addr, "/app", Mode::Fresh(Version::HTTP_2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = Rss::sample(&d);

    // Two attackers of each kind, each one connection after another until the time is up.
    let stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for kind in KINDS.iter().chain(KINDS.iter()).copied() {
        let (client, stop, addr) = (client.clone(), stop.clone(), d.addr);
        attackers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(attack(kind, &client, addr).await);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (kind, seen)
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs())).await;
    stop.store(true, Ordering::Relaxed);
    let mut attacks: Vec<(Kind, Vec<Option<Duration>>)> = Vec::new();
    for a in attackers {
        let (kind, seen) = a.await.unwrap();
        match attacks.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, all)) => all.extend(seen),
            None => attacks.push((kind, seen)),
        }
    }
    let outcomes = load.finish().await;
    let (rss_start, rss_end) = rss.check(&d, "slow-and-abrupt");
    let (status, _, _) = d.terminate(Duration::from_secs(10)).await;

    let tally = Tally::of(&outcomes);
    let count = |k: Kind| attacks.iter().find(|(kind, _)| *kind == k).map_or(0, |(_, s)| s.len());
    let all: Vec<_> = outcomes.iter().collect();
    let join = check_audit_file(&audit, &all, count(Kind::ResetAwaitingResponse));
    let records = audit_records(&audit);
    let protocol = |reason: &str| {
        records
            .iter()
            .filter(|r| r["kind"] == "protocol" && r["reason"] == reason)
            .count()
    };
    // A request reset while the upstream works on it is recorded as `client-closed` (status 499,
    // never sent): the records no client was answered with are those, and only those.
    let client_closed = records
        .iter()
        .filter(|r| r["kind"] == "request" && r["reason"] == "client-closed" && r["status"] == 499)
        .count();
    assert_eq!(
        client_closed, join.unmatched_records,
        "unanswered records other than client-closed"
    );
    let mut report = Vec::new();
    for (kind, seen) in &attacks {
        let closed: Vec<Duration> = seen.iter().flatten().copied().collect();
        let max = closed.iter().max().copied().unwrap_or_default();
        let min = closed.iter().min().copied().unwrap_or_default();
        report.push(format!("{kind:?} x{} (closed after {min:?}..{max:?})", seen.len()));
        if matches!(kind, Kind::Slowloris | Kind::Silent | Kind::SilentTcp) {
            assert_eq!(closed.len(), seen.len(), "{kind:?}: a slow connection was never closed");
            assert!(
                max <= TIMEOUT + CLOSE_MARGIN && min + Duration::from_millis(100) >= TIMEOUT,
                "{kind:?}: closed after {min:?}..{max:?}, expected {TIMEOUT:?} (+{CLOSE_MARGIN:?})"
            );
        }
    }
    println!(
        "[soak slow-and-abrupt] well-behaved {tally:?}; attackers: {}; audited header-read-timeout {}, \
         first-request-timeout {}, client-closed {client_closed}; audit {join:?}; VmRSS {rss_start} -> {rss_end} KiB",
        report.join(", "),
        protocol("header-read-timeout"),
        protocol("first-request-timeout"),
    );
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        tally.not(200),
        0,
        "a well-behaved client failed: {:?}",
        failures(&outcomes, 200)
    );
    assert!(tally.requests >= 100, "too little load to mean anything: {tally:?}");
    for kind in KINDS {
        assert!(count(kind) >= 2, "{kind:?} ran too few times: {}", count(kind));
    }
    assert!(protocol("header-read-timeout") >= count(Kind::Slowloris));
    assert!(protocol("first-request-timeout") >= count(Kind::Silent));
}
