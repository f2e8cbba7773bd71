//! A full audit disk: the audit log is a symlink to /dev/full (every write fails with ENOSPC).
//! ztgate fails closed: requests are refused 503 once the writer has seen the failure, none is
//! answered without a record, and at SIGTERM every record that could not reach the file is
//! written to standard error (one marked JSON line each) and the exit code is 74.

use std::sync::Arc;
use std::time::Duration;

use http::Version;

use crate::harness::{Daemon, Rss, Setup, World, join_audit, secs};
use crate::load::{Load, Mode, Tally};
use crate::support::Client;

const DIVERTED: &str = r#"{"ztgate":"audit-record-not-written""#;

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: cargo test --test soak -- --ignored --test-threads=1"]
async fn a_full_audit_disk_answers_nothing_without_a_record_and_exits_74() {
    let World { pki, audit, config } = World::new(Setup::default()).await;
    std::os::unix::fs::symlink("/dev/full", &audit).unwrap();
    let d = Daemon::spawn(&config);
    let client = Arc::new(Client::new(&pki.ca.cert_pem(), Some(&pki.client)));
    let mut load = Load::new();
    load.spawn(3, "client", &client, d.addr, "/app", Mode::KeepAlive);
    load.spawn(1, "client", &client, d.addr, "/app", Mode::Fresh(Version::HTTP_2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = Rss::sample(&d);
    tokio::time::sleep(Duration::from_secs(secs())).await;
    let outcomes = load.finish().await;
    let (rss_start, rss_end) = rss.check(&d, "full-audit-disk");
    let (status, took, stderr) = d.terminate(Duration::from_secs(20)).await;

    let tally = Tally::of(&outcomes);
    let diverted: Vec<serde_json::Value> = stderr
        .iter()
        .filter(|l| l.starts_with(DIVERTED))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let records: Vec<serde_json::Value> = diverted.iter().map(|d| d["record"].clone()).collect();
    let n = records.len();
    let all: Vec<_> = outcomes.iter().collect();
    let join = join_audit(&records, &all, 0);
    println!(
        "[soak full-audit-disk] {tally:?}; {n} records diverted to stderr; exit {status:?} {took:?} after SIGTERM; \
         join {join:?}; VmRSS {rss_start} -> {rss_end} KiB"
    );
    assert_eq!(status.code(), Some(74), "records not in the audit file: exit 74");
    assert_eq!(tally.errors, 0, "requests failed instead of being refused: {tally:?}");
    assert_eq!(
        tally.status(200) + tally.status(503),
        tally.requests,
        "only 200 (record queued) and 503 (refused): {tally:?}"
    );
    assert!(
        tally.status(503) > 0,
        "a full audit disk must refuse requests: {tally:?}"
    );
    // The answered 200s are those served before the writer saw the disk full: a handful, not a
    // second of traffic.
    assert!(
        tally.status(200) <= 50,
        "answered 200 long after the audit disk was full: {tally:?}"
    );
    assert!(
        stderr.iter().any(|l| l.contains(&format!(
            "{n} audit record(s) were not written to the audit log: {n} written to standard error instead, 0 lost"
        ))),
        "the count of diverted records is logged and equals the diverted lines ({n}): {:#?}",
        stderr.iter().filter(|l| !l.starts_with(DIVERTED)).collect::<Vec<_>>()
    );
    // Why: the write failed (the writer's held lines, at shutdown), or, for a request refused
    // while the log was down, the queue had no room (written at once rather than dropped).
    for d in &diverted {
        let why = d["error"].as_str().unwrap_or_default();
        assert!(
            why.contains("No space left")
                || (why == "the audit log was down and its queue full" && d["record"]["status"] == 503),
            "each diverted line says why: {d}"
        );
    }
}
