//! `[listener] runtime = "per-core"`: one thread and runtime per worker, each accepting on its own
//! `SO_REUSEPORT` socket, with one connection cap and one drain for all of them.

use std::time::{Duration, Instant};

use http::StatusCode;
use tokio::net::TcpStream;

use crate::support::*;

const TWO_WORKERS: &str = "runtime = \"per-core\"\nworkers = 2";

/// Names of this process's threads (Linux truncates them to 15 bytes).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn per_core_workers_serve_many_concurrent_connections() {
    let mut s = Server::start(Opts {
        listener_extra: TWO_WORKERS.into(),
        // Every one of the 48 client connections holds its upstream connection: none counts in
        // the process-wide ztgate_upstream_held_connections_full_total another test reads.
        upstream_extra: "held_connections = 48".into(),
        ..Opts::default()
    })
    .await;
    // The server starts in a task: its workers appear once that task has run. (Other tests of
    // this binary may run workers too: this shows the threads exist, not whose.)
    let both = || async {
        let names = thread_names();
        ["ztgate-worker-0", "ztgate-worker-1"]
            .iter()
            .all(|w| names.iter().any(|n| n == w))
    };
    assert!(eventually(5, both).await, "no worker threads: {:?}", thread_names());
    // 48 connections at once (the kernel spreads them over both sockets), each with three
    // keep-alive requests.
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let (client, addr) = (s.client(), s.addr);
        tasks.push(tokio::spawn(async move {
            let mut sender = client.connect_h1(addr).await;
            let mut ok = 0;
            for _ in 0..3 {
                let req = http::Request::get("/app")
                    .header("host", "localhost")
                    .body(http_body_util::Empty::new())
                    .unwrap();
                if matches!(sender.send_request(req).await, Ok(r) if r.status() == StatusCode::OK) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut served = 0;
    for t in tasks {
        served += tokio::time::timeout(Duration::from_secs(20), t).await.unwrap().unwrap();
    }
    assert_eq!(served, 48 * 3);
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn max_connections_holds_across_per_core_workers() {
    let mut s = Server::start(Opts {
        listener_extra: format!("{TWO_WORKERS}\nmax_connections = 4"),
        ..Opts::default()
    })
    .await;
    // Four idle, fully established connections take every slot, whichever thread holds them.
    let mut idle = Vec::new();
    for _ in 0..4 {
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        idle.push(s.client().tls_connect(tcp).await);
    }
    // Two more are accepted by the kernel but not served, on whichever socket they land.
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let tcp = TcpStream::connect(s.addr).await.unwrap();
        let client = s.client();
        waiting.push(tokio::spawn(async move { client.tls_connect(tcp).await }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "a connection was served past max_connections = 4"
    );
    // One slot frees: exactly one of the two is served, wherever it waits.
    drop(idle.pop());
    assert!(
        eventually(5, || async { waiting.iter().filter(|w| w.is_finished()).count() == 1 }).await,
        "one freed slot must serve exactly one waiting connection"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        waiting.iter().filter(|w| w.is_finished()).count(),
        1,
        "the cap held no longer"
    );
    // Another: the other one is served too (a slot freed on one thread serves a client waiting
    // on the other's socket).
    drop(idle.pop());
    for w in waiting {
        let tls = tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .expect("a waiting connection was not served after slots freed")
            .unwrap();
        drop(tls);
    }
    drop(idle);
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn in_process_per_core_drain_waits_for_requests_on_every_worker() {
    let mut s = Server::start(Opts {
        listener_extra: TWO_WORKERS.into(),
        ..Opts::default()
    })
    .await;
    // Sixteen connections, each with a slow request in flight: that all of them land on one of
    // the two sockets has a chance of 2^-15.
    let mut slow = Vec::new();
    for _ in 0..16 {
        let (client, addr) = (s.client(), s.addr);
        slow.push(tokio::spawn(async move { client.get(addr, "/slow/1500").await }));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.shutdown();
    for r in slow {
        let r = r.await.unwrap().expect("an in-flight request was cut by the drain");
        assert_eq!(r.status, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        s.client().get(s.addr, "/").await.is_err(),
        "no new connections after shutdown starts, on any socket"
    );
    tokio::time::timeout(Duration::from_secs(5), s.task.take().unwrap())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_on_every_per_core_worker_then_exits() {
    let pki = Pki::new();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
    tokio::spawn(ztgate::demo::echo_upstream(upstream));
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = config_toml(pki.dir.path(), &policy, "", &upstream_url, "", "/").replace(
        "handshake_timeout = \"2s\"\n",
        &format!("handshake_timeout = \"2s\"\n{TWO_WORKERS}\n"),
    ) + "\n[log]\nformat = \"json\"\n";
    let cfg_path = pki.write("ztgate.toml", &cfg);
    let (child, addr) = spawn_daemon(&cfg_path);

    let mut slow = Vec::new();
    for _ in 0..16 {
        let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
        slow.push(tokio::spawn(async move { client.get(addr, "/slow/1000").await }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    signal(&child, "TERM");
    let started = Instant::now();
    for r in slow {
        let r = r.await.unwrap().expect("an in-flight request was cut by the drain");
        assert_eq!(r.status, StatusCode::OK);
    }
    let status = wait_for_exit(child).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "must exit within the 5s drain deadline"
    );
}

/// An `http2` upstream (one multiplexed connection per pool) that counts the connections it
/// accepts; answers every request `200`.
async fn counting_h2_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (url, accepted)
}

/// Each per-core worker has its own upstream pool, whose connections its own runtime drives:
/// an `http2` upstream sees one connection per worker, not one for the process.
#[tokio::test]
async fn each_per_core_worker_has_its_own_upstream_pool() {
    let (url, accepted) = counting_h2_upstream().await;
    let mut s = Server::start(Opts {
        upstream_url: Some(url),
        upstream_extra: "protocol = \"http2\"".into(),
        listener_extra: TWO_WORKERS.into(),
        ..Opts::default()
    })
    .await;
    // 32 client connections, kept open, one request each, one after another: the kernel spreads
    // them over both workers' sockets by their source ports (all 32 on one socket: p < 1e-9).
    let mut open = Vec::new();
    for _ in 0..32 {
        let mut c = s.client().connect_h1(s.addr).await;
        assert_eq!(get_on(&mut c, s.addr, "/app").await, 200);
        open.push(c);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 2);
    s.stop().await;
}

/// A request still in flight at the drain deadline is cut, and its audit record is written
/// (`client-closed`, 499, as any request cut before its answer): on the per-core runtime the
/// worker's runtime is dropped after the drain, which would drop a record queued from it unrun.
async fn a_request_cut_at_the_drain_deadline_is_audited(listener_extra: &str) {
    let pki = Pki::new();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
    tokio::spawn(ztgate::demo::echo_upstream(upstream));
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let log = pki.path("audit.log");
    let cfg = config_toml(pki.dir.path(), &policy, "", &upstream_url, "", "/")
        .replace(
            "handshake_timeout = \"2s\"\n",
            &format!("handshake_timeout = \"2s\"\n{listener_extra}\n"),
        )
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"500ms\"")
        + &format!("\n[audit]\nfile = \"{}\"\n\n[log]\nformat = \"json\"\n", log.display());
    let cfg_path = pki.write("ztgate.toml", &cfg);
    let (child, addr) = spawn_daemon(&cfg_path);
    let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
    let stuck = tokio::spawn(async move { client.get(addr, "/slow/20000").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "TERM");
    assert!(stuck.await.unwrap().is_err(), "the request outlived the drain deadline");
    let status = wait_for_exit(child).await;
    // Exit 0: every audit record reached the log (a lost or diverted one exits non-zero).
    assert!(status.success(), "exit status {status:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let cut: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["path"] == "/slow/20000")
        .collect();
    assert_eq!(cut.len(), 1, "{text}");
    assert_eq!(
        (cut[0]["reason"].as_str(), cut[0]["status"].as_u64()),
        (Some("client-closed"), Some(499)),
        "{}",
        cut[0]
    );
}

#[tokio::test]
async fn a_request_cut_at_the_drain_deadline_is_audited_per_core() {
    a_request_cut_at_the_drain_deadline_is_audited(TWO_WORKERS).await;
}

#[tokio::test]
async fn a_request_cut_at_the_drain_deadline_is_audited_shared() {
    a_request_cut_at_the_drain_deadline_is_audited("runtime = \"shared\"").await;
}

#[test]
fn check_reports_an_unknown_runtime_and_a_bad_worker_count_at_their_lines() {
    let pki = Pki::new();
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/").replace(
        "handshake_timeout = \"2s\"\n",
        "handshake_timeout = \"2s\"\nruntime = \"thread-per-core\"\nworkers = 0\n",
    );
    let path = pki.write("ztgate.toml", &cfg);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{out}");
    let line = |key: &str| cfg.lines().position(|l| l.starts_with(key)).unwrap() + 1;
    for expected in [
        format!(
            "ztgate.toml:{}:11: [listener] runtime: unknown runtime `thread-per-core` (expected \"shared\" or \"per-core\")",
            line("runtime")
        ),
        format!(
            "ztgate.toml:{}:11: [listener] workers: workers must be between 1 and 1024",
            line("workers")
        ),
    ] {
        assert!(out.contains(&expected), "missing `{expected}` in:\n{out}");
    }
    // Both values that exist pass.
    for ok in [
        "runtime = \"per-core\"\nworkers = 2\n",
        "runtime = \"shared\"\nworkers = 1\n",
    ] {
        let good = pki.write(
            "good.toml",
            &cfg.replace("runtime = \"thread-per-core\"\nworkers = 0\n", ok),
        );
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
            .args(["check", "--config", good.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{ok}: {}", String::from_utf8_lossy(&o.stderr));
    }
}
