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
    let series = |route: &str, decision: &str, class: &str| {
        scrape.lines().any(|l| {
            l.starts_with(&format!(
                r#"ztgate_requests_total{{route="{route}",decision="{decision}",status_class="{class}"}} "#
            ))
        })
    };
    let has = |decision: &str, class: &str| series("default", decision, class);
    // No route matched: refused before the rate limit and the upstream, so never allowed or
    // rate limited; refused as an error (400, 404, 421) or denied by the trusted hop.
    assert!(series("none", "error", "4xx") && series("none", "deny", "4xx"));
    for impossible in ["allow", "rate_limited"] {
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            assert!(!series("none", impossible, class), "none/{impossible}/{class} exported");
        }
    }
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

/// Log fields are plain text, not Rust Debug: a certificate's URI SANs as one list (not
/// `["…", "…"]`) and the drain deadline as `deadline_ms` (not `30s` Debug text).
#[tokio::test]
async fn log_fields_are_plain_text_not_rust_debug() {
    let pki = Pki::new();
    let d = Daemon::start(&pki, "http://127.0.0.1:1", "");
    let mut spec = ztgate::pki::LeafSpec::client("odd", None);
    spec.uris = vec!["spiffe://EXAMPLE.org/a".into(), "https://example.org/b".into()];
    let odd = pki.issue(&spec);
    let client = Client::new(&pki.ca.cert_pem(), Some(&odd));
    let _ = client.get(d.addr, "/hello").await;
    let warned = d.wait_for(|l| l.contains("not a valid SVID")).await;
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains(" uris=spiffe://EXAMPLE.org/a, https://example.org/b"),
        "{warned:?}"
    );
    assert!(!warned[0].contains("[\""), "{warned:?}");

    signal(&d.child, "TERM");
    let closed = d.wait_for(|l| l.contains("listener closed")).await;
    // config_toml's drain_timeout = "5s".
    assert!(
        closed[0].contains("listener closed, draining in-flight requests ") && closed[0].ends_with(" deadline_ms=5000"),
        "{closed:?}"
    );
}

// ---- item 11: a dev PKI that can mint another identity --------------------------------------

fn ztgate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(args)
        .output()
        .unwrap()
}

fn issuer_cn(pem_path: &std::path::Path) -> String {
    let pem = std::fs::read(pem_path).unwrap();
    let der: rustls::pki_types::CertificateDer = rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    cert.issuer().to_string()
}

/// A closed standard error (`ztgate check 2>&1 | head -1`) does not turn a config error's exit 64
/// into a panic's 101: service managers and scripts act on the code.
#[test]
fn a_closed_stderr_keeps_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ztgate.toml");
    std::fs::write(&cfg, "[listener]\naddress = 5\n").unwrap();
    for verb in ["check", "run"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
            .args([verb, "--config", cfg.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before ztgate writes its errors: the writes fail with EPIPE.
        drop(child.stderr.take());
        assert_eq!(child.wait().unwrap().code(), Some(64), "{verb}");
    }
}

/// `ztgate demo` away from the checkout says where to run it (exit 64, as for any config that
/// cannot be read) instead of a bare "cannot read".
#[test]
fn demo_outside_the_checkout_says_where_to_run_it() {
    let dir = tempfile::tempdir().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .arg("demo")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "error: cannot read config file config/ztgate.toml: no such file (the demo runs on the repository's \
         config: start it from the root of the ztgate checkout, or pass --config PATH)"
    );
}

/// `certs issue --name` names two files inside `--out` and nothing else: a name that is a path
/// is refused and nothing is written outside.
#[test]
fn certs_issue_refuses_a_name_that_would_write_outside_out() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = dir.path().join("out").join("deeper");
    assert!(
        ztgate(&["certs", "dev", "--out", pki.to_str().unwrap()])
            .status
            .success()
    );
    for name in ["../../evil", "a/b", "..", ""] {
        let o = ztgate(&[
            "certs",
            "issue",
            "--spiffe-id",
            "spiffe://ztgate.dev/ns/default/sa/x",
            "--name",
            name,
            "--ca-dir",
            pki.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{name}: {o:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).trim(),
            format!(
                "error: `{name}` cannot name certificate files: use letters, digits, `.`, `_` and `-` only (no `/`, not `.` or `..`)"
            )
        );
    }
    assert!(!dir.path().join("evil.pem").exists());
    assert!(!out.exists(), "nothing is created for a refused name");
}

/// `certs dev` keeps the CA key (0600) and names each CA uniquely; `certs issue` mints a third
/// identity from it that the proxy accepts and the policy judges: 403 before a rule names it,
/// 200 after.
#[tokio::test]
async fn certs_issue_mints_a_third_identity_that_policy_can_allow() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let o = ztgate(&["certs", "dev", "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "{o:?}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(a.join("ca-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (ca_a, ca_b) = (issuer_cn(&a.join("ca.pem")), issuer_cn(&b.join("ca.pem")));
    assert!(ca_a.starts_with("CN=ztgate dev CA "), "{ca_a}");
    assert_ne!(ca_a, ca_b, "two dev CAs share a name");

    let reader = "spiffe://ztgate.dev/ns/default/sa/reader";
    let o = ztgate(&[
        "certs",
        "issue",
        "--spiffe-id",
        reader,
        "--dns",
        "reader.local",
        "--ca-dir",
        a.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("reader.pem"));
    assert_eq!(issuer_cn(&a.join("reader.pem")), ca_a);
    let cert_pem = std::fs::read_to_string(a.join("reader.pem")).unwrap();
    let der: rustls::pki_types::CertificateDer =
        rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let id = ztgate::identity::PeerIdentity::from_der(&der).unwrap();
    assert_eq!(id.spiffe_id.unwrap().as_str(), reader);
    assert_eq!(id.dns, vec!["reader.local".to_string()]);
    // Again without --force: refused, the files are kept.
    let again = ztgate(&[
        "certs",
        "issue",
        "--spiffe-id",
        reader,
        "--ca-dir",
        a.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    // Not a SPIFFE ID: refused.
    let bad = ztgate(&[
        "certs",
        "issue",
        "--spiffe-id",
        "reader",
        "--ca-dir",
        a.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a SPIFFE ID"));

    let issued = ztgate::pki::Issued {
        chain_pem: cert_pem.clone(),
        cert_pem,
        key_pem: std::fs::read_to_string(a.join("reader-key.pem")).unwrap(),
        der: der.to_vec(),
        serial: vec![],
    };
    let policy = a.join("policy.toml");
    std::fs::write(&policy, EXAMPLE_POLICY).unwrap();
    let upstream = echo_upstream().await;
    let cfg = config_toml(&a, &policy, "", &upstream, "", "/") + "\n[log]\nformat = \"json\"\n";
    std::fs::write(a.join("ztgate.toml"), cfg).unwrap();
    let (mut child, addr) = spawn_daemon(&a.join("ztgate.toml"));
    let client = Client::new(&std::fs::read_to_string(a.join("ca.pem")).unwrap(), Some(&issued));
    assert_eq!(client.get(addr, "/hello").await.unwrap().status, StatusCode::FORBIDDEN);
    let allow = format!("\n[[rule]]\nid = \"reader\"\neffect = \"allow\"\nspiffe_id = [\"{reader}\"]\n");
    std::fs::write(&policy, format!("{EXAMPLE_POLICY}{allow}")).unwrap();
    signal(&child, "HUP");
    let allowed = eventually(10, || {
        let c = &client;
        async move { c.get(addr, "/hello").await.map(|r| r.status) == Ok(StatusCode::OK) }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(allowed);
}

// ---- item 12: usage errors and help ---------------------------------------------------------

/// A usage error exits 2 (README's exit codes), and `--config` and `certs issue`'s flags have
/// help text.
#[test]
fn usage_errors_exit_2_and_flags_have_help() {
    let o = ztgate(&["run", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let o = ztgate(&["certs", "issue"]);
    assert_eq!(o.status.code(), Some(2), "--spiffe-id is required");
    let help = String::from_utf8(ztgate(&["run", "--help"]).stdout).unwrap();
    assert!(
        help.contains("--config <CONFIG>") && help.contains("The config file (TOML)"),
        "{help}"
    );
    let help = String::from_utf8(ztgate(&["certs", "issue", "--help"]).stdout).unwrap();
    for flag in [
        "--spiffe-id <ID>",
        "--dns <NAME>",
        "--ca-dir <DIR>",
        "--out <DIR>",
        "--name",
        "--force",
    ] {
        assert!(help.contains(flag), "{flag} in {help}");
    }
}

// ---- item 10: explain says who issued the certificate and whether the handshake takes it ----

fn explain_json(pki: &Pki, cert_pem: &str) -> serde_json::Value {
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = pki.write(
        "ztgate.toml",
        &config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/"),
    );
    let cert = pki.write("explained.pem", cert_pem);
    let o = ztgate(&[
        "explain",
        "--config",
        cfg.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--url",
        "https://localhost/hello",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn explain_json_has_the_issuer_and_whether_the_handshake_would_refuse_the_certificate() {
    let pki = Pki::new();
    let ok = explain_json(&pki, &pki.client.cert_pem);
    assert_eq!(ok["issuer"], "CN=test CA");
    assert_eq!(
        ok["handshake"],
        serde_json::json!({ "accepted": true, "reason": "ok", "detail": null })
    );
    assert_eq!(ok["status"], 200);

    let mut server_only = ztgate::pki::LeafSpec::client("svc", Some(CLIENT_ID));
    server_only.eku = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let mut expired = ztgate::pki::LeafSpec::client("old", Some(CLIENT_ID));
    (expired.valid_from_days, expired.valid_until_days) = (-30, -1);
    let other = ztgate::pki::CertAuthority::new("other CA").unwrap();
    for (pem, reason) in [
        (pki.issue(&server_only).cert_pem, "bad_eku"),
        (pki.issue(&expired).cert_pem, "expired"),
        (
            other
                .issue(&ztgate::pki::LeafSpec::client("c", Some(CLIENT_ID)))
                .unwrap()
                .cert_pem,
            "unknown_ca",
        ),
    ] {
        let v = explain_json(&pki, &pem);
        assert_eq!(v["handshake"]["accepted"], false, "{reason}: {v}");
        assert_eq!(v["handshake"]["reason"], reason, "{v}");
        assert!(v["handshake"]["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
}

// ---- item 9 (part): a leaf certificate as client_ca -----------------------------------------

#[test]
fn check_refuses_a_client_certificate_given_as_client_ca_and_says_what_it_is() {
    let pki = Pki::new();
    pki.write("client.pem", &pki.client.cert_pem);
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let d = pki.dir.path().display().to_string();
    let cfg = config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/").replace(
        &format!("client_ca = \"{d}/ca.pem\""),
        &format!("client_ca = \"{d}/client.pem\""),
    );
    let o = ztgate(&["check", "--config", pki.write("ztgate.toml", &cfg).to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{out}");
    assert!(
        out.contains("the trust anchor `CN=client` is not a CA certificate") && out.contains("client.pem"),
        "{out}"
    );
    assert!(!out.contains("relax"), "relaxing would not make a leaf a CA: {out}");
    // The CA itself passes.
    let good = ztgate(&[
        "check",
        "--config",
        pki.write(
            "good.toml",
            &config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/"),
        )
        .to_str()
        .unwrap(),
    ]);
    assert!(good.status.success(), "{good:?}");
}

#[test]
fn check_reports_a_type_error_in_plain_words_with_its_line() {
    let pki = Pki::new();
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/").replace(
        "handshake_timeout = \"2s\"\n",
        "handshake_timeout = \"2s\"\nmax_connections = \"lots\"\n",
    );
    let path = pki.write("ztgate.toml", &cfg);
    let o = ztgate(&["check", "--config", path.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{out}");
    let line = cfg.lines().position(|l| l.starts_with("max_connections")).unwrap() + 1;
    assert!(
        out.contains(&format!(
            "ztgate.toml:{line}:19: [listener] max_connections: expected a whole number (no quotes), found the string \"lots\""
        )),
        "{out}"
    );
}
