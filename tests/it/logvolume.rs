//! Log volume (issue #22 item 4): events a client causes at will (here 403s) write at most
//! `PER_SECOND` lines per second per class, and a summary line counts the rest, so lines written
//! plus lines counted as suppressed is exactly the number of events.

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
/// The documented bound (docs/operations.md): lines per second per event class.
const PER_SECOND: u32 = 5;

use crate::support::*;

#[tokio::test]
async fn a_flood_of_403s_writes_a_few_lines_per_second_and_a_summary_with_the_rest() {
    let pki = Pki::new();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
    tokio::spawn(ztgate::demo::echo_upstream(upstream));
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = config_toml(pki.dir.path(), &policy, "", &upstream_url, "", "/") + "\n[log]\nformat = \"json\"\n";
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(["run", "--config", pki.write("ztgate.toml", &cfg).to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let seen = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(a) = v["listen"].as_str() {
                let _ = addr_tx.send(a.parse::<std::net::SocketAddr>().unwrap());
            }
            seen.lock().unwrap().push(v);
        }
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(20)).unwrap();

    const EVENTS: usize = 60;
    let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
    let mut conn = client.connect_h1(addr).await;
    let started = Instant::now();
    for _ in 0..EVENTS {
        assert_eq!(get_on(&mut conn, addr, "/admin/x").await, StatusCode::FORBIDDEN);
    }
    let secs = started.elapsed().as_secs() as usize + 1;
    let count = |msg: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["message"].as_str() == Some(msg))
            .count()
    };
    let suppressed = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("log lines suppressed"))
            })
            .map(|v| v["rejected"].as_u64().unwrap_or(0) as usize)
            .sum::<usize>()
    };
    // The summary comes with the housekeeping tick (every 5 s).
    let complete = eventually(12, || {
        let done = count("request rejected") + suppressed() == EVENTS;
        async move { done }
    })
    .await;
    signal(&child, "TERM");
    let _ = child.wait();
    let written = count("request rejected");
    assert!(complete, "written {written} + suppressed {} != {EVENTS}", suppressed());
    assert!(written >= 1, "the first events are logged");
    assert!(
        written <= PER_SECOND as usize * (secs + 1),
        "{written} lines for {EVENTS} events in {secs} s"
    );
    assert!(suppressed() >= EVENTS - PER_SECOND as usize * (secs + 1));
}
