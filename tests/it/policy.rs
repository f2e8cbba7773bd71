//! The policy engine through the real listener: shadow rules, hot reload on a live connection,
//! broken edits kept out, SIGHUP, Host/SNI mismatch, and `ztgate explain`.

use http::{Request, StatusCode, Version};
use http_body_util::Empty;

use crate::support::*;

const SHADOW_POLICY: &str = r#"
[[rule]]
id = "client-app"
effect = "allow"
spiffe_id = ["spiffe://ztgate.dev/ns/default/sa/client"]

[[rule]]
id = "trial-no-exports"
effect = "deny"
mode = "shadow"
paths = ["/export/**"]
"#;

#[tokio::test]
async fn shadow_deny_is_counted_but_the_request_is_served() {
    let s = Server::start(Opts {
        policy: SHADOW_POLICY.into(),
        ..Opts::default()
    })
    .await;
    let r = s.client().get(s.addr, "/export/all").await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "a shadow rule must never change the decision");
    let m = s.metrics().await;
    assert!(
        m.contains("ztgate_policy_shadow_decisions_total{outcome=\"shadow-deny\"}"),
        "{m}"
    );
    // An unrelated path is served without a shadow finding.
    assert_eq!(s.client().get(s.addr, "/other").await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn edited_policy_applies_on_a_live_connection_and_a_broken_edit_is_kept_out() {
    let opts = Opts {
        policy_extra: "reload_interval = \"100ms\"".into(),
        ..Opts::default()
    };
    let s = Server::start(opts).await;
    let mut conn = s.client().connect_h1(s.addr).await;
    assert_eq!(get_on(&mut conn, s.addr, "/reports").await, StatusCode::OK);

    // A good edit: deny /reports to everyone. It applies without dropping the connection.
    let denied =
        format!("{EXAMPLE_POLICY}\n[[rule]]\nid = \"no-reports\"\neffect = \"deny\"\npaths = [\"/reports/**\"]\n");
    s.pki.write("policy.toml", &denied);
    let mut applied = false;
    for _ in 0..100 {
        if get_on(&mut conn, s.addr, "/reports").await == StatusCode::FORBIDDEN {
            applied = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(applied, "the edited policy must apply within a few seconds");
    assert_eq!(get_on(&mut conn, s.addr, "/app").await, StatusCode::OK);

    // A broken edit (a typo) is rejected; the last good policy stays in force.
    s.pki
        .write("policy.toml", &denied.replace("effect = \"deny\"", "efect = \"deny\""));
    let rejected = eventually(5, || async {
        s.metrics()
            .await
            .contains("ztgate_policy_reload_total{result=\"error\"}")
    })
    .await;
    assert!(rejected, "the broken reload must be counted");
    assert_eq!(get_on(&mut conn, s.addr, "/reports").await, StatusCode::FORBIDDEN);
    assert_eq!(get_on(&mut conn, s.addr, "/app").await, StatusCode::OK);
}

#[tokio::test]
async fn sighup_reloads_the_policy_at_once() {
    let pki = Pki::new();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", upstream.local_addr().unwrap());
    tokio::spawn(ztgate::demo::echo_upstream(upstream));
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    // Polling every hour: only SIGHUP can make the change visible within the test.
    let cfg = config_toml(pki.dir.path(), &policy, "", &upstream_url, "", "/")
        .replace("[policy]\n", "[policy]\nreload_interval = \"1h\"\n")
        + "\n[log]\nformat = \"json\"\n";
    let (mut child, addr) = spawn_daemon(&pki.write("ztgate.toml", &cfg));
    let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
    assert_eq!(
        client.get(addr, "/admin/x").await.unwrap().status,
        StatusCode::FORBIDDEN
    );

    pki.write(
        "policy.toml",
        &EXAMPLE_POLICY.replace("paths = [\"/admin/**\"]", "paths = [\"/nothing-here/**\"]"),
    );
    signal(&child, "HUP");
    let applied = eventually(5, || async {
        client.get(addr, "/admin/x").await.unwrap().status == StatusCode::OK
    })
    .await;
    signal(&child, "TERM");
    let _ = child.wait();
    assert!(applied, "SIGHUP must reload the policy");
}

#[tokio::test]
async fn host_that_differs_from_sni_is_421() {
    let s = Server::start(Opts::default()).await;
    // The client's SNI is "localhost"; asking for another service on this connection is refused.
    let req = Request::get("/")
        .header("host", "billing.internal")
        .body(Empty::new())
        .unwrap();
    let r = s.client().send(s.addr, Version::HTTP_11, req).await.unwrap();
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    assert!(r.body.starts_with("421 misdirected request (request id "), "{}", r.body);
    let same = Request::get("/")
        .header("host", "LOCALHOST:1234")
        .body(Empty::new())
        .unwrap();
    assert_eq!(
        s.client().send(s.addr, Version::HTTP_11, same).await.unwrap().status,
        StatusCode::OK
    );
}

fn explain(pki: &Pki, cert: &str, url: &str, json: bool) -> String {
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = pki.write(
        "ztgate.toml",
        &config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/"),
    );
    let cert = pki.path(cert);
    let mut args = vec![
        "explain",
        "--config",
        cfg.to_str().unwrap(),
        "--cert",
        cert.to_str().unwrap(),
        "--url",
        url,
    ];
    if json {
        args.push("--json");
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(&args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn explain_names_the_deciding_rule_and_the_failed_condition() {
    let pki = Pki::new();
    pki.write("client.pem", &pki.client.cert_pem);
    pki.write("admin.pem", &pki.admin.cert_pem);

    let text = explain(&pki, "client.pem", "https://localhost:8443/x/../admin/users", false);
    assert!(
        text.contains("request:  GET localhost /admin/users (route default)"),
        "{text}"
    );
    assert!(text.contains("decision: DENY (403)"), "{text}");
    assert!(text.contains("rule:     admin-area-only-for-ops"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("ops-admin") && l.ends_with("failed: spiffe_id")),
        "{text}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&explain(&pki, "admin.pem", "https://localhost/admin/users", true)).unwrap();
    assert_eq!(json["status"], 200);
    assert_eq!(json["decision"]["rule"], "ops-admin");
    assert_eq!(json["decision"]["reason"], "allowed");
    let deny = json["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "admin-area-only-for-ops")
        .unwrap();
    assert_eq!(deny["matched"], false);
    assert_eq!(deny["failed"], serde_json::json!(["not"]));

    let bad = explain(&pki, "client.pem", "https://localhost/a%2Fb", false);
    assert!(bad.contains("400 bad request"), "{bad}");
}

#[test]
fn explain_names_a_certificate_without_an_svid_by_its_typed_cn() {
    let pki = Pki::new();
    let forged = pki.issue(&ztgate::pki::LeafSpec::client(ADMIN_ID, None));
    pki.write("forged.pem", &forged.cert_pem);
    pki.write("admin.pem", &pki.admin.cert_pem);

    let text = explain(&pki, "forged.pem", "https://localhost/admin/users", false);
    assert!(text.starts_with(&format!("identity: cn:{ADMIN_ID}\n")), "{text}");
    assert!(text.contains("decision: DENY (403)"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&explain(&pki, "forged.pem", "https://localhost/admin/users", true)).unwrap();
    assert_eq!(json["identity"], format!("cn:{ADMIN_ID}"));
    assert_eq!(json["status"], 403);

    let real = explain(&pki, "admin.pem", "https://localhost/admin/users", false);
    assert!(real.starts_with(&format!("identity: {ADMIN_ID}\n")), "{real}");
    assert!(real.contains("decision: ALLOW"), "{real}");
}

#[tokio::test]
async fn a_pinned_route_admits_only_the_pinned_key_or_certificate() {
    let pki = Pki::new();
    let log = pki.path("audit.log");
    let admin_spki = ztgate::identity::PeerIdentity::from_der(&pki.admin.der)
        .unwrap()
        .spki_sha256;
    let client_fp = ztgate::identity::PeerIdentity::from_der(&pki.client.der)
        .unwrap()
        .fingerprint_sha256;
    // Colon-separated uppercase, as `openssl x509 -fingerprint -sha256` prints it.
    let client_fp_colons = client_fp
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let upstream_url = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(ztgate::demo::echo_upstream(l));
        url
    };
    let extra = format!(
        r#"
[[route]]
name = "vault"
path_prefix = "/vault"
upstream = "app"
pin_spki_sha256 = ["{admin_spki}"]

[[route]]
name = "ledger"
path_prefix = "/ledger"
upstream = "app"
pin_fingerprints = ["{client_fp_colons}"]
"#
    );
    let mut s = Server::start_with(
        pki,
        Opts {
            upstream_url: Some(upstream_url),
            audit: Some(format!("file = \"{}\"", log.display())),
            extra,
            ..Opts::default()
        },
    )
    .await;
    // The example policy lets the client reach everything but /admin: the pin still says no.
    assert_eq!(
        s.client().get(s.addr, "/vault/x").await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        s.admin_client().get(s.addr, "/vault/x").await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(
        s.client().get(s.addr, "/ledger/x").await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(
        s.admin_client().get(s.addr, "/ledger/x").await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    // Unpinned routes are unaffected.
    assert_eq!(s.client().get(s.addr, "/other").await.unwrap().status, StatusCode::OK);
    s.stop().await;
    let recs = audit_records(&log);
    let denied: Vec<_> = recs.iter().filter(|r| r["decision"] == "deny").collect();
    assert_eq!(denied.len(), 2, "{recs:?}");
    assert!(
        denied.iter().all(|r| r["reason"] == "certificate-not-pinned"),
        "{denied:?}"
    );
    assert_eq!(denied[0]["route"], "vault");
}

#[test]
fn bad_pins_are_config_errors_with_their_line() {
    let pki = Pki::new();
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let cfg = config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:8080", "", "/")
        + "\n[[route]]\nname = \"p\"\npath_prefix = \"/p\"\nupstream = \"app\"\npin_spki_sha256 = [\"not-base64!\"]\npin_fingerprints = [\"abcd\"]\n";
    let path = pki.write("ztgate.toml", &cfg);
    let err = ztgate::config::Config::load(&path).unwrap_err().to_string();
    let line = |needle: &str| cfg.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    assert!(
        err.contains(&format!(":{}:", line("pin_spki_sha256"))) && err.contains("base64 SHA-256"),
        "{err}"
    );
    assert!(
        err.contains(&format!(":{}:", line("pin_fingerprints"))) && err.contains("64 hex digits"),
        "{err}"
    );
}
