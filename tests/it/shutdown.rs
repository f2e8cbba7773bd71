//! SIGTERM: stop accepting, let in-flight requests finish, exit within the drain deadline.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::*;

#[tokio::test]
async fn in_process_drain_lets_an_in_flight_request_finish() {
    let mut s = Server::start(Opts::default()).await;
    let client = s.client();
    let addr = s.addr;
    let slow = tokio::spawn(async move { client.get(addr, "/slow/800").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.shutdown();
    let r = slow.await.unwrap().unwrap();
    assert_eq!(
        r.status,
        StatusCode::OK,
        "in-flight request must complete during the drain"
    );
    // The listener is closed: new connections are refused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        s.client().get(s.addr, "/").await.is_err(),
        "no new connections after shutdown starts"
    );
    tokio::time::timeout(Duration::from_secs(5), s.task.take().unwrap())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits() {
    let pki = Pki::new();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
    tokio::spawn(ztgate::demo::echo_upstream(upstream));
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = config_toml(pki.dir.path(), &policy, "", &upstream_url, "", "/") + "\n[log]\nformat = \"json\"\n";
    let cfg_path = pki.write("ztgate.toml", &cfg);

    let mut child = Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(["run", "--config", cfg_path.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The daemon logs its bound address (port 0 in the config) in the "ztgate ready" line.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("ztgate exited before it was ready").unwrap();
        if let Some(rest) = line.split("\"listen\":\"").nth(1) {
            break rest.split('"').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {}); // keep draining stderr

    let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
    let slow = tokio::spawn(async move { client.get(addr, "/slow/1000").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let started = Instant::now();

    let r = slow.await.unwrap().expect("in-flight request must not be cut");
    assert_eq!(r.status, StatusCode::OK);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "must exit within the 5s drain deadline"
    );
}
