//! Upstream restarts: the test's upstream is stopped (listener and every connection closed) and
//! started again on the same port, over and over, while clients send requests. A 502 is right
//! only while the upstream is down; any other failure, or a 502 outside a down window, is not.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, Version};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::harness::{Daemon, Rss, Setup, check_audit_file, secs, write_config};
use crate::load::{Load, Mode, Outcome, Tally};
use crate::support::{Client, Pki};

/// A request is attributed to a down window when it overlaps the window widened by this much
/// on each side: a request in flight when the upstream stops, or one whose dial raced the
/// restart, is the upstream's fault too.
const BOUNDARY: Duration = Duration::from_millis(100);

/// An upstream that answers 200 "ok" until `stop` fires; then its listener and every
/// connection it holds are closed (as a process that exits).
async fn upstream(listener: TcpListener, mut stop: oneshot::Receiver<()>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => return, // dropping `conns` aborts every connection
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                conns.spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(
                        TokioIo::new(stream),
                        service_fn(|_req| async {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }),
                    ),
                );
            }
        }
    }
}

/// Binds `addr` again (the old socket may still be closing).
async fn rebind(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("cannot bind the upstream's port {addr} again");
}

fn overlaps(o: &Outcome, windows: &[(Instant, Instant)]) -> bool {
    windows
        .iter()
        .any(|(down, up)| o.sent <= *up + BOUNDARY && o.done + BOUNDARY >= *down)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: cargo test --test soak -- --ignored --test-threads=1"]
async fn upstream_restarts_give_502_only_while_it_is_down() {
    let pki = Pki::new();
    let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = first.local_addr().unwrap();
    let (mut stop, stopped) = oneshot::channel();
    tokio::spawn(upstream(first, stopped));
    let audit = pki.path("audit.log");
    let config = write_config(
        &pki,
        &audit,
        &Setup {
            upstream_url: format!("http://{up_addr}"),
            ..Setup::default()
        },
    );
    let d = Daemon::spawn(&config);
    let client = Arc::new(Client::new(&pki.ca.cert_pem(), Some(&pki.client)));
    let mut load = Load::new();
    load.spawn(4, "client", &client, d.addr, "/app", Mode::KeepAlive);
    load.spawn(1, "client", &client, d.addr, "/app", Mode::Fresh(Version::HTTP_2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = Rss::sample(&d);

    // Up 600 ms, down 300 ms, until the time is up; (stop began, start done) of each outage.
    let deadline = Instant::now() + Duration::from_secs(secs());
    let mut windows = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let down = Instant::now();
        let _ = stop.send(());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let listener = rebind(up_addr).await;
        let (next, stopped) = oneshot::channel();
        stop = next;
        tokio::spawn(upstream(listener, stopped));
        windows.push((down, Instant::now()));
    }
    tokio::time::sleep(Duration::from_millis(600)).await; // the last outage is followed by service
    let outcomes = load.finish().await;
    let (rss_start, rss_end) = rss.check(&d, "upstream-restarts");
    let (status, _, _) = d.terminate(Duration::from_secs(10)).await;

    let tally = Tally::of(&outcomes);
    let in_window = outcomes.iter().filter(|o| overlaps(o, &windows)).count();
    let wrong: Vec<_> = outcomes
        .iter()
        .filter(|o| match &o.result {
            Ok((200, _)) => false,
            Ok((502, _)) => !overlaps(o, &windows),
            _ => true,
        })
        .take(10)
        .map(|o| {
            format!(
                "{:?} (sent {:?} after the start)",
                o.result,
                o.sent.duration_since(outcomes[0].sent)
            )
        })
        .collect();
    let all: Vec<_> = outcomes.iter().collect();
    let join = check_audit_file(&audit, &all, 0);
    println!(
        "[soak upstream-restarts] {} outages of 300 ms; {tally:?}; {in_window} requests overlapped an outage \
         (±{BOUNDARY:?}); audit {join:?}; VmRSS {rss_start} -> {rss_end} KiB",
        windows.len()
    );
    assert!(status.success(), "exit status {status:?}");
    assert!(
        wrong.is_empty(),
        "failures other than a 502 while the upstream was down: {wrong:#?}"
    );
    assert!(tally.status(502) > 0, "no request saw the upstream down: {tally:?}");
    assert!(tally.status(200) >= 100, "too little load to mean anything: {tally:?}");
    assert_eq!(join.answered, join.records, "audit records = answered requests");
}
