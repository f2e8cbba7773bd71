//! What ztgate tells an operator is true (issue #19 items 6, 7, 8, 11, 12): metrics from the
//! first scrape, request log lines that carry who and from where on both protocols, log text an
//! operator can read, a dev PKI that can mint another identity.

use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Empty;

use crate::support::*;

/// A `ztgate run` child process whose stderr (JSON logs) is collected line by line.
struct Daemon {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(pki: &Pki, upstream_url: &str, extra: &str) -> Self {
        let policy = pki.write("policy.toml", EXAMPLE_POLICY);
        let cfg = config_toml(pki.dir.path(), &policy, "", upstream_url, "", "/") + extra;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
            .args(["run", "--config", pki.write("ztgate.toml", &cfg).to_str().unwrap()])
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let seen = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for part in line.split("listen\":\"").skip(1).chain(line.split("listen=").skip(1)) {
                    let addr: String = part.chars().take_while(|c| *c != '"' && *c != ' ').collect();
                    if let Ok(a) = addr.parse::<std::net::SocketAddr>() {
                        let _ = addr_tx.send(a);
                    }
                }
                seen.lock().unwrap().push(line);
            }
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        Self { child, addr, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    async fn wait_for(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        eventually(10, || {
            let found = self.lines().iter().any(|l| pred(l));
            async move { found }
        })
        .await;
        self.lines().into_iter().filter(|l| pred(l)).collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn echo_upstream() -> String {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", upstream.local_addr().unwrap());
    tokio::spawn(ztgate::demo::echo_upstream(upstream));
    url
}

// ---- item 6: metrics from the first scrape ------------------------------------------------

#[tokio::test]
async fn counters_with_known_labels_are_exported_before_their_first_event() {
    let mut s = Server::start(Opts::default()).await;
    let scrape = s.metrics().await;
    for series in [
        r#"ztgate_policy_reload_total{result="ok"}"#,
        r#"ztgate_policy_reload_total{result="error"}"#,
        r#"ztgate_tls_reload_total{result="error"}"#,
        r#"ztgate_posture_reload_total{result="error"}"#,
        "ztgate_audit_write_errors_total",
        "ztgate_audit_dropped_total",
        r#"ztgate_anomalies_total{kind="deny_burst"}"#,
        r#"ztgate_anomalies_total{kind="many_sources"}"#,
        r#"ztgate_protocol_errors_total{reason="uri-too-long"}"#,
        r#"ztgate_protocol_errors_total{reason="header-read-timeout"}"#,
        r#"ztgate_request_timeouts_total{phase="response_body"}"#,
        r#"ztgate_tls_handshakes_total{result="unknown_ca"}"#,
        r#"ztgate_tls_handshakes_total{result="no_client_cert"}"#,
        r#"ztgate_tls_handshakes_total{result="profile_ee_is_ca"}"#,
        r#"ztgate_connections_closed_total{reason="keepalive_timeout"}"#,
        r#"ztgate_upstream_errors_total{kind="connect"}"#,
    ] {
        let present = scrape
            .lines()
            .any(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')));
        assert!(present, "{series} missing from the first scrape");
    }
    s.stop().await;
}

#[tokio::test]
async fn requests_total_exports_only_combinations_that_can_happen() {
    let mut s = Server::start(Opts::default()).await;
    let scrape = s.metrics().await;
    let has = |decision: &str, class: &str| {
        scrape.lines().any(|l| {
            l.starts_with(&format!(
                r#"ztgate_requests_total{{route="default",decision="{decision}",status_class="{class}"}} "#
            ))
        })
    };
    assert!(has("allow", "2xx") && has("allow", "5xx"));
    assert!(has("deny", "4xx") && has("rate_limited", "4xx"));
    assert!(has("error", "4xx") && has("error", "5xx"));
    for impossible in [
        ("deny", "2xx"),
        ("deny", "5xx"),
        ("rate_limited", "2xx"),
        ("error", "2xx"),
        ("error", "1xx"),
    ] {
        assert!(!has(impossible.0, impossible.1), "{impossible:?} exported");
    }
    s.stop().await;
}

// ---- item 7: h2 request lines carry the identity and address -------------------------------

/// Every "request rejected" line for the client's 403s, on HTTP/1.1 and on h2, carries the
/// connection's `client.id` and `client.addr` (the connection span is the request span's parent).
#[tokio::test]
async fn request_log_lines_carry_identity_and_address_on_http1_and_h2() {
    let pki = Pki::new();
    let d = Daemon::start(&pki, &echo_upstream().await, "\n[log]\nformat = \"json\"\n");
    let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let path = format!("/admin/{version:?}");
        let req = Request::get(path.as_str()).body(Empty::<Bytes>::new()).unwrap();
        let reply = client.send(d.addr, version, req).await.unwrap();
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        let lines = d
            .wait_for(|l| l.contains("request rejected") && l.contains(&format!("\"http.path\":\"{path}\"")))
            .await;
        assert_eq!(lines.len(), 1, "{version:?}: {:?}", d.lines());
        let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        let spans = v["spans"].as_array().unwrap();
        let conn = spans
            .iter()
            .find(|s| s["name"] == "conn")
            .unwrap_or_else(|| panic!("{version:?}: {v}"));
        assert_eq!(
            conn["client.id"], "spiffe://ztgate.dev/ns/default/sa/client",
            "{version:?}"
        );
        assert!(
            conn["client.addr"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{version:?}"
        );
    }
}

// ---- item 8: logs an operator can read -----------------------------------------------------

/// With stderr a pipe (as under systemd or Kubernetes) and the default pretty format: no ANSI
/// escapes, `admin=` in Display form, a 502's cause with the address dialled and the OS error,
/// and a policy reload with two problems logged as one line naming both.
#[tokio::test]
async fn pretty_logs_to_a_pipe_are_plain_one_line_and_name_the_cause() {
    let pki = Pki::new();
    let d = Daemon::start(&pki, "http://127.0.0.1:1", "");
    let ready = d.wait_for(|l| l.contains("ztgate ready")).await;
    assert!(ready[0].contains("admin=127.0.0.1:"), "{ready:?}");
    assert!(!ready[0].contains("Some("), "{ready:?}");

    let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
    let reply = client.get(d.addr, "/hello").await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let failed = d.wait_for(|l| l.contains("request failed")).await;
    assert!(
        failed[0].contains("connect 127.0.0.1:1: Connection refused (os error 111)"),
        "{failed:?}"
    );

    // Two problems in one policy file: one event, one line, both named.
    std::fs::write(
        pki.path("policy.toml"),
        "[[rule]]\nname = \"a\"\nbogus = 1\n\n[[rule]]\nname = \"b\"\nalso_bogus = 2\n",
    )
    .unwrap();
    signal(&d.child, "HUP");
    let rejected = d.wait_for(|l| l.contains("policy reload rejected")).await;
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].contains("`bogus`") && rejected[0].contains("`also_bogus`"),
        "{rejected:?}"
    );
    let lines = d.lines();
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "ANSI escape in {lines:?}");
    // Every line is an event: it starts with the timestamp's year.
    assert!(lines.iter().all(|l| l.starts_with("20")), "{lines:?}");
}
