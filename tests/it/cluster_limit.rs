//! The cluster-wide rate limit against a real redis-server: two ztgate instances share one
//! budget; Redis killed mid-test gives the configured failure mode; Redis restarted, sharing
//! resumes; TLS (with a client certificate) to Redis.

use std::time::{Duration, Instant};

use http::StatusCode;

use crate::support::{Opts, Pki, Server, counter};
use crate::support_redis::{Redis, RedisTls};

fn opts(rate: &str, cluster: &str) -> Opts {
    Opts {
        extra: format!("[rate_limit]\n{rate}\n\n[cluster_rate_limit]\n{cluster}\n"),
        ..Opts::default()
    }
}

async fn status(s: &Server, path: &str) -> StatusCode {
    s.client().get(s.addr, path).await.unwrap().status
}

/// The metrics recorder is one per process, and `cargo test` runs this binary's tests as threads
/// of one process: the tests here take turns, and compare the round-trip counters with their
/// value when the test began.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const RESULTS: [&str; 4] = ["granted", "exhausted", "error", "timeout"];

fn round_trips(metrics: &str, result: &str) -> f64 {
    counter(
        metrics,
        &format!(r#"ztgate_cluster_rate_limit_round_trips_total{{result="{result}"}}"#),
    )
}

#[tokio::test]
async fn two_replicas_share_one_budget_and_answer_429_with_retry_after_beyond_it() {
    let _serial = SERIAL.lock().await;
    let redis = Redis::start();
    let lease = 2;
    let cluster = format!("redis_url = \"{}\"\nlease = {lease}\n", redis.url());
    // Burst 10 at 1 request per second: alone, each replica would pass 10 of its 12.
    let rate = "requests_per_second = 1\nburst = 10";
    let a = Server::start(opts(rate, &cluster)).await;
    let b = Server::start(opts(rate, &cluster)).await;
    let m0 = a.metrics().await;
    let started = Instant::now();
    let (mut ok, mut limited) = (0u32, 0u32);
    for i in 0..24 {
        let s = if i % 2 == 0 { &a } else { &b };
        let reply = s.client().get(s.addr, "/x").await.unwrap();
        match reply.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let retry: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=2).contains(&retry), "Retry-After {retry}");
            }
            other => panic!("unexpected {other}"),
        }
    }
    // The shared budget: the burst, what refilled meanwhile, and at most one lease per replica
    // taken early (the documented overshoot bound, replicas × lease).
    let refilled = started.elapsed().as_secs() as u32 + 1;
    assert!(
        ok <= 10 + refilled + 2 * lease,
        "{ok} passed: more than the shared budget"
    );
    assert!(
        ok >= 10 - 2 * lease,
        "{ok} passed: less than the budget minus the leases held"
    );
    assert_eq!(ok + limited, 24);
    let m = a.metrics().await;
    let delta = |r: &str| round_trips(&m, r) - round_trips(&m0, r);
    assert!(delta("granted") >= 1.0);
    assert!(delta("exhausted") >= 1.0);
    // Fewer round trips than requests: leases and the cached "empty until" answer.
    let trips: f64 = RESULTS.iter().map(|r| delta(r)).sum();
    assert!(trips < 24.0, "{trips} round trips for 24 requests");
}

#[tokio::test]
async fn redis_down_fails_closed_with_503_and_limiting_resumes_when_it_is_back() {
    let _serial = SERIAL.lock().await;
    let mut redis = Redis::start();
    let cluster = format!(
        "redis_url = \"{}\"\nlease = 1\ntimeout = \"200ms\"\non_error = \"closed\"\n",
        redis.url()
    );
    let s = Server::start(opts("requests_per_second = 100\nburst = 100", &cluster)).await;
    let m0 = s.metrics().await;
    assert_eq!(status(&s, "/a").await, StatusCode::OK, "Redis up: within the budget");
    redis.kill();
    let reply = s.client().get(s.addr, "/b").await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "Redis down: fail closed");
    assert!(
        reply.body.starts_with("503 service unavailable (request id "),
        "{}",
        reply.body
    );
    let m = s.metrics().await;
    let closed: f64 = ["error", "timeout", "unavailable"]
        .iter()
        .map(|r| {
            let series = format!(r#"ztgate_cluster_rate_limit_backend_errors_total{{reason="{r}",on_error="closed"}}"#);
            counter(&m, &series) - counter(&m0, &series)
        })
        .sum();
    assert!(closed >= 1.0, "the refusal is counted:\n{m}");
    redis.restart();
    let mut back = false;
    for _ in 0..100 {
        if status(&s, "/c").await == StatusCode::OK {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "Redis restarted: requests pass again");
    // And the answer came from Redis again (lease = 1: one round trip per request).
    let granted = r#"ztgate_cluster_rate_limit_round_trips_total{result="granted"}"#;
    let before = counter(&s.metrics().await, granted);
    assert_eq!(status(&s, "/d").await, StatusCode::OK);
    assert!(counter(&s.metrics().await, granted) > before, "shared limiting resumed");
}

#[tokio::test]
async fn redis_down_with_on_error_open_passes_counted_and_the_replica_limit_still_holds() {
    let _serial = SERIAL.lock().await;
    let mut redis = Redis::start();
    let cluster = format!(
        "redis_url = \"{}\"\nlease = 1\ntimeout = \"200ms\"\non_error = \"open\"\n",
        redis.url()
    );
    let s = Server::start(opts("requests_per_second = 1\nburst = 3", &cluster)).await;
    let m0 = s.metrics().await;
    redis.kill();
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(status(&s, "/a").await);
    }
    assert_eq!(
        codes,
        [200, 200, 200, 429, 429].map(|c| StatusCode::from_u16(c).unwrap()),
        "open: Redis down lets requests through, up to this replica's own limit"
    );
    let m = s.metrics().await;
    let open: f64 = ["error", "timeout", "unavailable"]
        .iter()
        .map(|r| {
            let series = format!(r#"ztgate_cluster_rate_limit_backend_errors_total{{reason="{r}",on_error="open"}}"#);
            counter(&m, &series) - counter(&m0, &series)
        })
        .sum();
    assert!(open >= 3.0, "each request passed open is counted:\n{m}");
}

#[tokio::test]
async fn a_redis_that_does_not_answer_costs_a_request_at_most_the_timeout_then_none() {
    let _serial = SERIAL.lock().await;
    let redis = Redis::start();
    let cluster = format!(
        "redis_url = \"{}\"\nlease = 1\ntimeout = \"100ms\"\non_error = \"closed\"\n",
        redis.url()
    );
    let s = Server::start(opts("requests_per_second = 100\nburst = 100", &cluster)).await;
    let m0 = s.metrics().await;
    assert_eq!(status(&s, "/a").await, StatusCode::OK, "connected");
    redis.freeze(true);
    let started = Instant::now();
    assert_eq!(status(&s, "/b").await, StatusCode::SERVICE_UNAVAILABLE);
    let first = started.elapsed();
    assert!(first < Duration::from_millis(600), "bounded by the timeout: {first:?}");
    let started = Instant::now();
    assert_eq!(status(&s, "/c").await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < first,
        "right after a failure the next request is decided at once ({:?} after {first:?})",
        started.elapsed()
    );
    let m = s.metrics().await;
    let errors = |reason: &str| {
        let series =
            format!(r#"ztgate_cluster_rate_limit_backend_errors_total{{reason="{reason}",on_error="closed"}}"#);
        counter(&m, &series) - counter(&m0, &series)
    };
    assert!(errors("timeout") >= 1.0, "{m}");
    assert!(errors("unavailable") >= 1.0, "{m}");
    redis.freeze(false);
    let mut back = false;
    for _ in 0..100 {
        if status(&s, "/d").await == StatusCode::OK {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "Redis answers again: requests pass again");
}

#[tokio::test]
async fn tls_to_redis_with_a_client_certificate_shares_the_budget() {
    let _serial = SERIAL.lock().await;
    // Redis' server certificate and ztgate's client certificate, from a CA minted here.
    let pki = Pki::new();
    let server = pki.ca.issue(&ztgate::pki::LeafSpec::server("redis")).unwrap();
    let client = pki.ca.issue(&ztgate::pki::LeafSpec::client("ztgate", None)).unwrap();
    let tls = RedisTls {
        cert: pki.write("redis.pem", &server.cert_pem),
        key: pki.write("redis-key.pem", &server.key_pem),
        ca: pki.path("ca.pem"),
    };
    let cert = pki.write("redis-client.pem", &client.chain_pem);
    let key = pki.write("redis-client-key.pem", &client.key_pem);
    let redis = Redis::start_tls(tls);
    let cluster = format!(
        "redis_url = \"{}\"\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\nlease = 1\ntimeout = \"1s\"\n",
        redis.url(),
        pki.path("ca.pem").display(),
        cert.display(),
        key.display()
    );
    let s = Server::start_with(pki, opts("requests_per_second = 1\nburst = 2", &cluster)).await;
    let m0 = s.metrics().await;
    let codes = [status(&s, "/a").await, status(&s, "/b").await, status(&s, "/c").await];
    assert_eq!(
        codes,
        [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS],
        "Redis answered over TLS (a failed round trip would be 503: on_error is closed)"
    );
    let m = s.metrics().await;
    assert!(round_trips(&m, "granted") - round_trips(&m0, "granted") >= 2.0);
}

/// A Redis that refuses the credentials: the log says why (the authentication error, with the
/// URL and never its password), not only that a request's wait ran out.
#[tokio::test]
async fn a_refused_connection_logs_its_real_cause_with_the_url_and_no_password() {
    let _serial = SERIAL.lock().await;
    use std::sync::{Arc, Mutex};
    let redis = Redis::start_with_password("right-password");
    let pki = Pki::new();
    let policy = pki.write("policy.toml", crate::support::EXAMPLE_POLICY);
    let base = crate::support::config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/")
        + "\n[log]\nformat = \"json\"\n\n[rate_limit]\nrequests_per_second = 100\n\n";
    // No password (connecting works; the command is refused, NOAUTH), then a wrong one (AUTH
    // fails while connecting).
    for (url, shown, message) in [
        (redis.url(), redis.url(), "cluster rate limit: Redis round trip failed"),
        (
            format!("redis://:hunter2@127.0.0.1:{}", redis.port),
            format!("redis://:***@127.0.0.1:{}", redis.port),
            "cluster rate limit: cannot connect to Redis",
        ),
    ] {
        let cfg = base.clone() + &format!("[cluster_rate_limit]\nredis_url = \"{url}\"\ntimeout = \"1s\"\nlease = 1\n");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let (mut child, addr) =
            crate::support::spawn_daemon_with(&pki.write("ztgate.toml", &cfg), move |l| sink.lock().unwrap().push(l));
        let client = crate::support::Client::new(&pki.ca.cert_pem(), Some(&pki.client));
        let reply = client.get(addr, "/x").await.unwrap();
        let logged = crate::support::eventually(5, || {
            let lines = lines.clone();
            let shown = shown.clone();
            async move {
                lines.lock().unwrap().iter().any(|l| {
                    l.contains("\"level\":\"WARN\"")
                        && l.contains(message)
                        && l.contains(&format!("\"url\":\"{shown}\""))
                        && l.contains("uthentication")
                })
            }
        })
        .await;
        let _ = child.kill();
        let _ = child.wait();
        let lines = lines.lock().unwrap();
        assert!(logged, "{url}: {lines:#?}");
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "on_error is closed");
        assert!(
            !lines.iter().any(|l| l.contains("did not answer in time")),
            "known within the timeout: an error, not a timeout: {lines:#?}"
        );
        assert!(!lines.iter().any(|l| l.contains("hunter2")), "{lines:#?}");
    }
}
