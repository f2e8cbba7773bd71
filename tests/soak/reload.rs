//! Policy reload storm: the policy file is rewritten every few milliseconds, alternately by
//! rename and in place, each rewrite followed by SIGHUP, while allowed and denied clients send
//! requests. A reload must never change an answer: the allowed client gets 200 only, the denied
//! one 403 only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Version;

use crate::harness::{Daemon, Rss, Setup, World, check_audit_file, secs};
use crate::load::{Load, Mode, Tally, failures};
use crate::support::{Client, EXAMPLE_POLICY};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: cargo test --test soak -- --ignored --test-threads=1"]
async fn reload_storm_changes_no_answer() {
    let World { pki, audit, config } = World::new(Setup {
        policy_extra: "reload_interval = \"50ms\"".into(),
        ..Setup::default()
    })
    .await;
    let d = Daemon::spawn(&config);
    let client = Arc::new(Client::new(&pki.ca.cert_pem(), Some(&pki.client)));
    let mut load = Load::new();
    load.spawn(3, "allowed", &client, d.addr, "/app", Mode::KeepAlive);
    load.spawn(1, "allowed", &client, d.addr, "/app", Mode::Fresh(Version::HTTP_11));
    load.spawn(1, "allowed", &client, d.addr, "/app", Mode::Fresh(Version::HTTP_2));
    // The example policy keeps /admin for the ops identity: `client` is denied there.
    load.spawn(1, "denied", &client, d.addr, "/admin/x", Mode::KeepAlive);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = Rss::sample(&d);

    let policy = pki.path("policy.toml");
    let staged = pki.path("policy.toml.new");
    let deadline = Instant::now() + Duration::from_secs(secs());
    let mut rewrites = 0u64;
    while Instant::now() < deadline {
        // Same rules, different bytes: every rewrite is a real reload.
        let text = format!("{EXAMPLE_POLICY}\n# revision {rewrites}\n");
        if rewrites.is_multiple_of(2) {
            std::fs::write(&staged, &text).unwrap();
            std::fs::rename(&staged, &policy).unwrap();
        } else {
            std::fs::write(&policy, &text).unwrap();
        }
        d.signal("HUP");
        rewrites += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let outcomes = load.finish().await;
    let (rss_start, rss_end) = rss.check(&d, "reload-storm");
    let hups = d.stderr_count("SIGHUP: reloading");
    let (status, _, _) = d.terminate(Duration::from_secs(10)).await;

    let allowed = Tally::of(outcomes.iter().filter(|o| o.group == "allowed"));
    let denied = Tally::of(outcomes.iter().filter(|o| o.group == "denied"));
    let all: Vec<_> = outcomes.iter().collect();
    let join = check_audit_file(&audit, &all, 0);
    println!(
        "[soak reload-storm] {rewrites} rewrites + SIGHUPs ({hups} SIGHUP reloads logged); allowed {allowed:?}; \
         denied {denied:?}; audit {join:?}; VmRSS {rss_start} -> {rss_end} KiB"
    );
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        allowed.not(200),
        0,
        "an allowed client was refused during the reload storm: {:?}",
        failures(outcomes.iter().filter(|o| o.group == "allowed"), 200)
    );
    assert_eq!(
        denied.not(403),
        0,
        "a denied client was let through or failed during the reload storm: {:?}",
        failures(outcomes.iter().filter(|o| o.group == "denied"), 403)
    );
    assert!(rewrites >= 100, "too few rewrites to be a storm: {rewrites}");
    assert!(hups > 0, "no SIGHUP reload was logged");
    assert!(allowed.requests >= 100, "too little load to mean anything: {allowed:?}");
    assert_eq!(join.answered, join.records, "audit records = answered requests");
}
