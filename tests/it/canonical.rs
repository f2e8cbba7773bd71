//! One request, one meaning: what policy judges is exactly what the upstream receives. Each
//! attack from the issue is sent through the real listener over real TLS, over HTTP/1.1 and h2,
//! to a recording upstream that keeps every request it got (head and whole body).
//!
//! Setup: two routes on one upstream, `app.internal` and `admin.internal`; the client identity
//! may only use `app.internal`, and the example policy's `/admin/**` is for the admin only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// What the recording upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: Version,
    /// The request target as received (h2: with `:authority`).
    pub uri: http::Uri,
    pub headers: HeaderMap,
    /// The whole body, or the error that ended it (an aborted message).
    pub body: Result<Bytes, String>,
}

pub type Log = Arc<Mutex<Vec<Seen>>>;

/// A hyper server (HTTP/1.1 and h2 prior knowledge) that records each request once its body
/// has ended, then answers 200 `ok`.
pub async fn recording_upstream() -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|c| c.to_bytes()).map_err(|e| e.to_string());
                        seen.lock().unwrap().push(Seen {
                            version: parts.version,
                            uri: parts.uri,
                            headers: parts.headers,
                            body,
                        });
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (url, log)
}

const CLIENT_ONLY_APP: &str = r#"
[[rule]]
id = "client-app-host"
effect = "allow"
spiffe_id = ["spiffe://ztgate.dev/ns/default/sa/client"]
host = ["app.internal"]

[[rule]]
id = "ops-admin"
effect = "allow"
spiffe_id = ["spiffe://ztgate.dev/ns/ops/sa/admin"]
"#;

const TWO_HOSTS: &str = r#"
[[route]]
name = "app"
host = "app.internal"
upstream = "app"

[[route]]
name = "admin"
host = "admin.internal"
upstream = "app"
"#;

async fn start(policy: &str, upstream_extra: &str, extra: &str, audit: Option<&std::path::Path>) -> (Server, Log) {
    let (url, log) = recording_upstream().await;
    let s = Server::start(Opts {
        policy: policy.into(),
        upstream_url: Some(url),
        upstream_extra: upstream_extra.into(),
        listener_extra: "require_sni_match = false".into(),
        extra: extra.into(),
        audit: audit.map(|p| format!("file = \"{}\"", p.display())),
        ..Opts::default()
    })
    .await;
    (s, log)
}

/// Sends raw bytes over an HTTP/1.1 mTLS connection; returns the status of the first response.
async fn raw_h1(s: &Server, bytes: &[u8]) -> u16 {
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let mut tls = s.client().tls_connect(tcp).await;
    tls.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Sends one h2 request with `:authority` = `authority` and the given extra fields.
async fn h2(s: &Server, authority: &str, path: &str, fields: &[(&str, &str)]) -> u16 {
    let mut sender = s.client().h2_sender(s.addr).await;
    let mut req = Request::get(format!("https://{authority}{path}"))
        .version(Version::HTTP_2)
        .body(Empty::<Bytes>::new())
        .unwrap();
    for (n, v) in fields {
        req.headers_mut()
            .append(http::HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

fn hosts_seen(seen: &Seen) -> Vec<String> {
    seen.headers
        .get_all(http::header::HOST)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn http1_host_must_be_exactly_one_and_is_forwarded_once() {
    let audit = tempfile::NamedTempFile::new().unwrap();
    let (mut s, log) = start(CLIENT_ONLY_APP, "", TWO_HOSTS, Some(audit.path())).await;
    let before = s.metrics().await;
    // RFC 9112 §3.2: two Host fields, or none, is a 400; nothing reaches the upstream.
    assert_eq!(
        raw_h1(
            &s,
            b"GET /x HTTP/1.1\r\nHost: app.internal\r\nHost: admin.internal\r\n\r\n"
        )
        .await,
        400
    );
    assert_eq!(raw_h1(&s, b"GET /x HTTP/1.1\r\n\r\n").await, 400);
    // An absolute-form target naming another authority than Host.
    assert_eq!(
        raw_h1(
            &s,
            b"GET http://admin.internal/x HTTP/1.1\r\nHost: app.internal\r\n\r\n"
        )
        .await,
        400
    );
    // Userinfo and percent-encoding in Host.
    assert_eq!(
        raw_h1(&s, b"GET /x HTTP/1.1\r\nHost: app.internal@admin.internal\r\n\r\n").await,
        400
    );
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());

    // Allowed: one Host, forwarded canonical (lowercase, no trailing dot) and exactly once, even
    // when the client's Connection header names Host.
    assert_eq!(
        raw_h1(
            &s,
            b"GET /x HTTP/1.1\r\nHost: App.Internal.\r\nConnection: host\r\n\r\n"
        )
        .await,
        200
    );
    // The client may not use admin.internal, whatever the case or trailing dot.
    assert_eq!(
        raw_h1(&s, b"GET /x HTTP/1.1\r\nHost: ADMIN.internal.\r\n\r\n").await,
        403
    );
    {
        let seen = log.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(hosts_seen(&seen[0]), ["app.internal"]);
    }
    let after = s.metrics().await;
    for reason in [
        "host-duplicate",
        "host-missing",
        "authority-conflict",
        "authority-malformed",
    ] {
        let series = format!(r#"ztgate_bad_requests_total{{reason="{reason}"}}"#);
        assert!(
            counter(&after, &series) - counter(&before, &series) >= 1.0,
            "{series}\n{after}"
        );
    }
    s.stop().await;
    let reasons: Vec<String> = audit_records(audit.path())
        .iter()
        .map(|r| format!("{} {}", r["status"], r["reason"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(
        reasons,
        [
            "400 host-duplicate",
            "400 host-missing",
            "400 authority-conflict",
            "400 authority-malformed",
            "200 allowed",
            "403 no-allow-rule",
        ]
    );
}

#[tokio::test]
async fn h2_authority_and_host_must_agree_and_one_host_goes_upstream() {
    let (mut s, log) = start(CLIENT_ONLY_APP, "", TWO_HOSTS, None).await;
    // RFC 9113 §8.3.1: :authority and host must not differ.
    assert_eq!(h2(&s, "app.internal", "/x", &[("host", "admin.internal")]).await, 400);
    assert_eq!(
        h2(
            &s,
            "app.internal",
            "/x",
            &[("host", "app.internal"), ("host", "app.internal")]
        )
        .await,
        400
    );
    assert!(log.lock().unwrap().is_empty());
    // Equal (after canonicalisation): allowed, and the HTTP/1.1 upstream gets one Host.
    assert_eq!(h2(&s, "app.internal", "/x", &[("host", "APP.internal")]).await, 200);
    assert_eq!(h2(&s, "app.internal:443", "/x", &[]).await, 200);
    assert_eq!(h2(&s, "admin.internal", "/x", &[]).await, 403);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(hosts_seen(&seen[0]), ["app.internal"]);
    assert_eq!(hosts_seen(&seen[1]), ["app.internal:443"]);
    s.stop().await;
}

#[tokio::test]
async fn an_h2_upstream_gets_the_judged_authority_and_no_host_field() {
    let (mut s, log) = start(CLIENT_ONLY_APP, "protocol = \"http2\"", TWO_HOSTS, None).await;
    assert_eq!(
        raw_h1(&s, b"GET /x HTTP/1.1\r\nHost: app.internal:8443\r\n\r\n").await,
        200
    );
    assert_eq!(h2(&s, "app.internal", "/y", &[]).await, 200);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (got, authority) in seen.iter().zip(["app.internal:8443", "app.internal"]) {
        assert_eq!(got.version, Version::HTTP_2);
        assert_eq!(got.uri.authority().map(|a| a.as_str()), Some(authority));
        assert!(hosts_seen(got).is_empty(), "{got:?}");
    }
    s.stop().await;
}

/// A route for Servlet-style upstreams that use matrix parameters.
const MATRIX_ROUTE: &str = r#"
[[route]]
name = "servlet"
path_prefix = "/servlet"
upstream = "app"
path_parameters = "allow"
"#;

#[tokio::test]
async fn path_parameters_are_refused_unless_the_route_judges_without_them() {
    let (mut s, log) = start(EXAMPLE_POLICY, "", MATRIX_ROUTE, None).await;
    let get = |path: &'static str| {
        let c = s.client();
        let addr = s.addr;
        async move { c.get(addr, path).await.unwrap().status.as_u16() }
    };
    // Tomcat serves `/admin;x=1/users` as `/admin/users`: refused by default, in every encoding.
    assert_eq!(get("/admin;x=1/users").await, 400);
    assert_eq!(get("/admin%3Bx=1/users").await, 400);
    assert_eq!(get("/app;jsessionid=1").await, 400);
    // The query is not the path: a `;` there is fine.
    assert_eq!(get("/app?a=1;b=2").await, 200);
    // Opted in: judged without parameters, forwarded as sent.
    assert_eq!(get("/servlet/admin;x=1/users").await, 200);
    assert_eq!(get("/servlet/app/..;/admin").await, 400);
    assert_eq!(get("/servlet;x=1/a%3Bb").await, 400);
    let seen = log.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|r| r.uri.path_and_query().unwrap().as_str()).collect();
    assert_eq!(paths, ["/app?a=1;b=2", "/servlet/admin;x=1/users"]);
    s.stop().await;

    // Under the example policy `/admin/**` is the admin's: a route that allows parameters judges
    // `/servlet;x/../admin`-style tricks on the stripped, normalised path.
    let opt_in_everywhere =
        "[[route]]\nname = \"all\"\npath_prefix = \"/admin\"\nupstream = \"app\"\npath_parameters = \"allow\"\n";
    let (mut s, log) = start(EXAMPLE_POLICY, "", opt_in_everywhere, None).await;
    let c = s.client();
    assert_eq!(c.get(s.addr, "/admin;x=1/users").await.unwrap().status, 403);
    let admin = s.admin_client();
    assert_eq!(admin.get(s.addr, "/admin;x=1/users").await.unwrap().status, 200);
    assert_eq!(log.lock().unwrap().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn identity_forwarding_and_override_claims_never_reach_the_upstream() {
    let claims = [
        "X_Ztgate_Identity: spiffe://ztgate.dev/ns/ops/sa/admin",
        "X-Ztgate-Identity: spiffe://ztgate.dev/ns/ops/sa/admin",
        "X-Forwarded-Client-Cert: By=x;URI=spiffe://ztgate.dev/ns/ops/sa/admin",
        "Forwarded: for=10.0.0.1",
        "X-Real-IP: 10.0.0.1",
        "X-Forwarded-For: 10.0.0.1",
        "X-Forwarded-Host: admin.internal",
        "X-Forwarded-Port: 443",
        "X-Client-Cert: forged",
        "X-SSL-Client-Cert: forged",
        "X-SSL-Client-DN: CN=admin",
        "X-Remote-User: admin",
        "X-Authenticated-User: admin",
        "X-Original-URL: /admin/users",
        "X-HTTP-Method-Override: DELETE",
        "X-My-User: admin",
    ];
    let extra = "[headers]\nstrip = [\"X-My-User\"]\nforwarded = true\n";
    let (mut s, log) = start(EXAMPLE_POLICY, "", extra, None).await;
    let before = s.metrics().await;
    let head = format!(
        "GET /app HTTP/1.1\r\nHost: app.internal\r\n{}\r\n\r\n",
        claims.join("\r\n")
    );
    assert_eq!(raw_h1(&s, head.as_bytes()).await, 200);
    // The same over h2 (underscored names are legal there too).
    let h2_fields: Vec<(String, String)> = claims
        .iter()
        .map(|c| {
            let (n, v) = c.split_once(": ").unwrap();
            (n.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    let fields: Vec<(&str, &str)> = h2_fields.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(h2(&s, "app.internal", "/app", &fields).await, 200);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for got in &seen {
        for claim in claims {
            let name = claim.split_once(':').unwrap().0.to_ascii_lowercase();
            let values: Vec<_> = got.headers.get_all(name.as_str()).iter().collect();
            match name.as_str() {
                // Set by ztgate, once, from the verified connection.
                "x-ztgate-identity" => assert_eq!(values, [CLIENT_ID], "{got:?}"),
                "x-forwarded-for" => assert_eq!(values, ["127.0.0.1"]),
                "x-forwarded-client-cert" => {
                    assert!(values.len() == 1 && !values[0].to_str().unwrap().starts_with("By=x;"))
                }
                "forwarded" => assert_eq!(values, ["for=127.0.0.1;proto=https;host=\"app.internal\""]),
                _ => assert!(values.is_empty(), "{name} reached the upstream: {values:?}"),
            }
        }
    }
    // Per request: the underscored name, 2 identity fields, 12 on the default list, 1 configured.
    let after = s.metrics().await;
    for (reason, n) in [
        ("underscore", 2.0),
        ("identity", 4.0),
        ("configured", 2.0),
        ("default_list", 24.0),
    ] {
        let series = format!(r#"ztgate_request_headers_removed_total{{reason="{reason}"}}"#);
        assert!(
            counter(&after, &series) - counter(&before, &series) >= n,
            "{series}\n{after}"
        );
    }
    s.stop().await;

    let (mut s, log) = start(EXAMPLE_POLICY, "", "[headers]\nwith_underscores = \"reject\"\n", None).await;
    assert_eq!(
        raw_h1(
            &s,
            b"GET /app HTTP/1.1\r\nHost: app.internal\r\nX_Ztgate_Identity: x\r\n\r\n"
        )
        .await,
        400
    );
    assert!(log.lock().unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_body_refused_midway_reaches_the_upstream_as_an_aborted_message() {
    for protocol in ["http1", "http2"] {
        let audit = tempfile::NamedTempFile::new().unwrap();
        let (mut s, log) = start(
            EXAMPLE_POLICY,
            &format!("protocol = \"{protocol}\""),
            "",
            Some(audit.path()),
        )
        .await;
        // The first chunk says 5 bytes and carries 10: ztgate has already streamed the head and
        // the first 5 bytes upstream when the chunk parser fails.
        for _ in 0..5 {
            let status = raw_h1(
                &s,
                b"POST /app HTTP/1.1\r\nHost: app.internal\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdefghij\r\n0\r\n\r\n",
            )
            .await;
            assert_eq!(status, 400, "{protocol}");
        }
        // Give the upstream time to see the end of each message, then: none complete.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = log.lock().unwrap().clone();
        for got in &seen {
            assert!(
                got.body.is_err(),
                "{protocol}: the upstream got a complete request: {got:?}"
            );
        }
        s.stop().await;
        let records = audit_records(audit.path());
        assert_eq!(records.len(), 5);
        for r in &records {
            assert_eq!(r["reason"], "body-malformed");
            assert!(r["reached_upstream"].is_boolean(), "{r}");
        }
    }
}

#[tokio::test]
async fn a_buffered_route_validates_small_bodies_before_anything_is_forwarded() {
    let audit = tempfile::NamedTempFile::new().unwrap();
    let route = "[[route]]\nname = \"upload\"\npath_prefix = \"/upload\"\nupstream = \"app\"\nbuffer_request_body = \"64KiB\"\n";
    let (mut s, log) = start(EXAMPLE_POLICY, "", route, Some(audit.path())).await;
    let bad = b"POST /upload HTTP/1.1\r\nHost: app.internal\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdefghij\r\n0\r\n\r\n";
    assert_eq!(raw_h1(&s, bad).await, 400);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    let good = b"POST /upload HTTP/1.1\r\nHost: app.internal\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n3\r\nfgh\r\n0\r\n\r\n";
    assert_eq!(raw_h1(&s, good).await, 200);
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.as_deref().ok(), Some(&b"abcdefgh"[..]));
    s.stop().await;
    let records = audit_records(audit.path());
    let summary: Vec<(u64, &str, bool)> = records
        .iter()
        .map(|r| {
            (
                r["status"].as_u64().unwrap(),
                r["reason"].as_str().unwrap(),
                r["reached_upstream"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, [(400, "body-malformed", false), (200, "allowed", true)]);
}
