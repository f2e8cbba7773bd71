//! What happens to a request once the client is in: identity headers, policy, routing and
//! upstream failures.

use http::{Request, StatusCode, Version};
use http_body_util::Empty;

use crate::support::*;

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let s = Server::start(Opts::default()).await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let req = Request::get("/")
            .header(
                "x-forwarded-client-cert",
                "By=spiffe://evil;URI=spiffe://ztgate.dev/ns/ops/sa/admin",
            )
            .header("x-ztgate-identity", ADMIN_ID)
            .header("x-ztgate-user", "root")
            .header("x-forwarded-for", "10.6.6.6")
            .header("x-request-id", "chosen-by-client")
            .body(Empty::new())
            .unwrap();
        let r = s.client().send(s.addr, version, req).await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(echoed(&r.body, "x-ztgate-identity"), [CLIENT_ID], "{version:?}");
        assert!(echoed(&r.body, "x-ztgate-user").is_empty(), "{version:?}");
        let xfcc = echoed(&r.body, "x-forwarded-client-cert");
        assert_eq!(xfcc.len(), 1, "{version:?}");
        assert!(!xfcc[0].contains("evil"), "{version:?}");
        assert_eq!(echoed(&r.body, "x-forwarded-for"), ["127.0.0.1"], "{version:?}");
        assert!(!r.body.contains("chosen-by-client"), "{version:?}");
    }
}

#[tokio::test]
async fn policy_denies_client_on_admin_paths_and_allows_admin() {
    let s = Server::start(Opts::default()).await;
    let denied = s.client().get(s.addr, "/admin/users").await.unwrap();
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let rid = denied.headers["x-request-id"].to_str().unwrap();
    assert_eq!(denied.body, format!("403 access denied (request id {rid})\n"));
    assert!(
        !denied.body.contains("admin-area"),
        "the rule id stays out of the response"
    );

    let allowed = s.admin_client().get(s.addr, "/admin/users").await.unwrap();
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(echoed(&allowed.body, "x-ztgate-identity"), [ADMIN_ID]);
    let m = s.metrics().await;
    for series in [
        r#"ztgate_requests_total{route="default",decision="deny",status_class="4xx"}"#,
        r#"ztgate_requests_total{route="default",decision="allow",status_class="2xx"}"#,
        "ztgate_upstream_duration_seconds_bucket",
        "ztgate_tls_handshake_duration_seconds_bucket",
    ] {
        assert!(m.contains(series), "missing {series}");
    }
}

#[tokio::test]
async fn path_tricks_are_normalised_before_policy() {
    let s = Server::start(Opts::default()).await;
    for path in [
        "/x/../admin/users",
        "/%61dmin/users",
        "//admin/users",
        "/./admin",
        "/ADMIN/../admin",
    ] {
        let r = s.client().get(s.addr, path).await.unwrap();
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
    }
    // The upstream receives the normalised path it was judged by.
    let r = s.admin_client().get(s.addr, "/x/../admin/%75sers").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.starts_with("GET /admin/users "), "{}", r.body);
    for path in ["/admin%2Fusers", "/..", "/a/%2e%2e/%2e%2e/admin"] {
        let r = s.client().get(s.addr, path).await.unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(r.body.starts_with("400 bad request (request id "), "{path}: {}", r.body);
    }
}

#[tokio::test]
async fn identity_without_any_allow_rule_is_denied() {
    let s = Server::start(Opts::default()).await;
    let stranger = s.pki.issue(&ztgate::pki::LeafSpec::client(
        "stranger",
        Some("spiffe://ztgate.dev/ns/x/sa/y"),
    ));
    let r = Client::new(&s.pki.ca.cert_pem(), Some(&stranger))
        .get(s.addr, "/")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(s.client().get(s.addr, "/").await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn upstream_down_is_502_with_request_id_and_no_detail() {
    // Bind then drop a listener: the port is closed, so connects are refused.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let opts = Opts {
        upstream_url: Some(format!("http://{dead}")),
        ..Opts::default()
    };
    let s = Server::start(opts).await;
    let r = s.client().get(s.addr, "/").await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let rid = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(r.body, format!("502 upstream unavailable (request id {rid})\n"));
    assert!(
        s.metrics()
            .await
            .contains("ztgate_upstream_errors_total{kind=\"connect\"}")
    );
}

#[tokio::test]
async fn slow_upstream_is_504_and_fast_requests_still_pass() {
    let opts = Opts {
        upstream_extra: "response_timeout = \"300ms\"".into(),
        ..Opts::default()
    };
    let s = Server::start(opts).await;
    let r = s.client().get(s.addr, "/slow/3000").await.unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(r.body.starts_with("504 upstream timeout (request id "));
    assert_eq!(s.client().get(s.addr, "/fast").await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_route_is_404() {
    let opts = Opts {
        route_prefix: "/api".into(),
        ..Opts::default()
    };
    let s = Server::start(opts).await;
    assert_eq!(
        s.client().get(s.addr, "/api/items").await.unwrap().status,
        StatusCode::OK
    );
    let r = s.client().get(s.addr, "/apix").await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.starts_with("404 no route (request id "));
}

#[tokio::test]
async fn upgrade_requests_pass_through_to_the_upstream() {
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(Opts::default()).await;
    // hyper's client API exposes the upgraded stream; use it over a real mTLS connection.
    let req = Request::get("/ws")
        .header("host", "localhost")
        .header("connection", "upgrade")
        .header("upgrade", "echo-test")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let tls = s.client().tls_connect(tcp).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    let mut resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = hyper::upgrade::on(&mut resp).await.unwrap();
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"ping through ztgate").await.unwrap();
    let mut buf = [0u8; 19];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through ztgate");
}

#[tokio::test]
async fn https_upstream_is_verified_and_sees_ztgates_own_client_certificate_over_h2() {
    // The upstream is a second ztgate (mTLS required, same CA) in front of the echo server; the
    // first one must verify it against the CA and present a client certificate to get in.
    let inner = Server::start(Opts::default()).await;
    let pki = Pki::new_with_ca(&inner.pki);
    let (cert, key) = (
        pki.write("proxy.pem", &pki.client.cert_pem),
        pki.write("proxy-key.pem", &pki.client.key_pem),
    );
    let opts = Opts {
        upstream_url: Some(format!("https://localhost:{}", inner.addr.port())),
        upstream_extra: format!(
            "protocol = \"http2\"\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            pki.path("ca.pem").display(),
            cert.display(),
            key.display()
        ),
        ..Opts::default()
    };
    let outer = Server::start_with(pki, opts).await;
    let r = outer.client().get(outer.addr, "/through").await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // The echo server sits behind the inner ztgate: it sees the inner one's identity headers,
    // derived from the certificate the outer ztgate presented.
    assert_eq!(echoed(&r.body, "x-ztgate-identity"), [CLIENT_ID]);
    assert_eq!(echoed(&r.body, "x-forwarded-client-cert").len(), 1);

    // An upstream whose certificate does not chain to the configured CA is refused: 502.
    let other = Pki::new();
    let opts = Opts {
        upstream_url: Some(format!("https://localhost:{}", inner.addr.port())),
        upstream_extra: format!("ca = \"{}\"", other.path("ca.pem").display()),
        ..Opts::default()
    };
    let untrusting = Server::start_with(other, opts).await;
    assert_eq!(
        untrusting.client().get(untrusting.addr, "/").await.unwrap().status,
        StatusCode::BAD_GATEWAY
    );
}

#[tokio::test]
async fn health_and_readiness_endpoints_answer() {
    let s = Server::start(Opts::default()).await;
    for (path, want) in [("/healthz", 200), ("/readyz", 200), ("/nope", 404)] {
        assert_eq!(s.admin_get(path).await.0, want, "{path}");
    }
    // Certificate lifetimes are exported as seconds left (the test server cert lives a year).
    let m = s.metrics().await;
    let line = m
        .lines()
        .find(|l| l.starts_with(r#"ztgate_certificate_expiry_seconds{cert="server"}"#))
        .expect("server expiry");
    let left: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(left > 300.0 * 86400.0, "{line}");
    // One series per client CA, named by its CN.
    assert!(m.contains(r#"ztgate_certificate_expiry_seconds{cert="client_ca:test CA"}"#));
}

#[tokio::test]
async fn an_identity_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let opts = Opts {
        extra: "[rate_limit]\nrequests_per_second = 1\nburst = 2\n".into(),
        ..Opts::default()
    };
    let s = Server::start(opts).await;
    let client = s.client();
    assert_eq!(client.get(s.addr, "/a").await.unwrap().status, StatusCode::OK);
    assert_eq!(client.get(s.addr, "/b").await.unwrap().status, StatusCode::OK);
    let limited = client.get(s.addr, "/c").await.unwrap();
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["retry-after"], "1");
    assert!(
        limited.body.starts_with("429 rate limited (request id "),
        "{}",
        limited.body
    );
    // The budget is per identity: the admin identity is not affected.
    assert_eq!(s.admin_client().get(s.addr, "/").await.unwrap().status, StatusCode::OK);
    assert!(
        s.metrics()
            .await
            .contains(r#"decision="rate_limited",status_class="4xx"}"#)
    );
}

#[tokio::test]
async fn a_rules_rate_limit_applies_to_what_that_rule_allows() {
    let pki = Pki::new();
    let log = pki.path("audit.log");
    let policy = r#"
[[rule]]
id = "reports-limited"
effect = "allow"
spiffe_id = ["spiffe://ztgate.dev/ns/default/sa/client"]
paths = ["/reports/**"]
rate_limit = { requests_per_second = 1, burst = 1 }

[[rule]]
id = "everything-else"
effect = "allow"
spiffe_id = ["spiffe://ztgate.dev/ns/default/sa/client", "spiffe://ztgate.dev/ns/ops/sa/admin"]
paths = ["/**"]
"#;
    let mut s = Server::start_with(
        pki,
        Opts {
            policy: policy.into(),
            audit: Some(format!("file = \"{}\"", log.display())),
            ..Opts::default()
        },
    )
    .await;
    let client = s.client();
    assert_eq!(client.get(s.addr, "/reports/1").await.unwrap().status, StatusCode::OK);
    let limited = client.get(s.addr, "/reports/2").await.unwrap();
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["retry-after"], "1");
    // Other paths are decided by another rule, without that budget.
    for i in 0..5 {
        assert_eq!(
            client.get(s.addr, &format!("/other/{i}")).await.unwrap().status,
            StatusCode::OK
        );
    }
    // The admin identity does not match the limited rule: "everything-else" allows it, unlimited.
    for i in 0..3 {
        assert_eq!(
            s.admin_client()
                .get(s.addr, &format!("/reports/{i}"))
                .await
                .unwrap()
                .status,
            StatusCode::OK
        );
    }
    s.stop().await;
    let recs = audit_records(&log);
    let limited = recs.iter().find(|r| r["status"] == 429).unwrap();
    assert_eq!(limited["reason"], "rate-limited", "{limited}");
    assert_eq!(limited["rule"], "reports-limited", "{limited}");
}
