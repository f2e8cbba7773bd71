//! Open connections do not outlive trust: a CRL or CA reload closes the connections it revokes,
//! a connection ends at its client certificate's notAfter or at `max_connection_age`, and a
//! certificate rotation takes effect for new connections without dropping the others. A broken
//! new certificate keeps the current one.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use ztgate::identity::PeerIdentity;
use ztgate::pki::LeafSpec;

use crate::support::*;

/// Waits up to `secs` for ztgate to close the connection behind `sender`.
async fn closed_within(sender: &SendRequest<Empty<Bytes>>, secs: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if sender.is_closed() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn metric_line(s: &Server, needle: &str, secs: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if s.metrics().await.contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn crl_reload_closes_the_revoked_clients_open_connection_and_refuses_its_new_ones() {
    let pki = Pki::new();
    let crl = pki.write("ca.crl.pem", &pki.ca.crl_pem(&[]).unwrap());
    let mut s = Server::start_with(
        pki,
        Opts {
            tls_extra: format!("crls = [\"{}\"]\nreload_interval = \"100ms\"", crl.display()),
            ..Opts::default()
        },
    )
    .await;
    let mut client_conn = s.client().connect_h1(s.addr).await;
    let mut admin_conn = s.admin_client().connect_h1(s.addr).await;
    assert_eq!(get_on(&mut client_conn, s.addr, "/app").await, StatusCode::OK);
    assert_eq!(get_on(&mut admin_conn, s.addr, "/admin/x").await, StatusCode::OK);

    // Revoke the client's certificate (not the admin's) and let the watcher pick the file up.
    let revoked = s.pki.ca.crl_pem(&[&s.pki.client.serial]).unwrap();
    std::fs::write(&crl, revoked).unwrap();
    assert!(
        closed_within(&client_conn, 5).await,
        "the revoked client's open connection must be closed after the CRL reload"
    );
    assert_eq!(
        get_on(&mut admin_conn, s.addr, "/admin/y").await,
        StatusCode::OK,
        "a still-trusted client's connection stays open"
    );
    let err = s.client().get(s.addr, "/app").await.unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    assert!(metric_line(&s, r#"ztgate_connections_closed_total{reason="untrusted"}"#, 2).await);
    assert!(metric_line(&s, r#"ztgate_tls_reload_total{result="ok"}"#, 2).await);
    s.stop().await;
}

#[tokio::test]
async fn a_broken_certificate_file_keeps_the_current_one_and_a_rotation_takes_effect_without_drops() {
    let mut s = Server::start(Opts {
        tls_extra: "reload_interval = \"100ms\"".into(),
        ..Opts::default()
    })
    .await;
    let server_cn = |tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        let der = &tls.get_ref().1.peer_certificates().unwrap()[0];
        PeerIdentity::from_der(der).unwrap().common_name.unwrap()
    };
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let first = server_cn(&s.client().tls_connect(tcp).await);
    let mut before = s.client().connect_h1(s.addr).await;
    assert_eq!(get_on(&mut before, s.addr, "/app").await, StatusCode::OK);

    // A half-written or corrupt certificate: rejected, counted, the current one stays.
    std::fs::write(s.pki.path("server.pem"), "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    assert!(metric_line(&s, r#"ztgate_tls_reload_total{result="error"}"#, 5).await);
    let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    assert_eq!(server_cn(&s.client().tls_connect(tcp).await), first);

    // The rotation: a new certificate and key (written one after the other, as tools do).
    let rotated = s.pki.issue(&LeafSpec::server("ztgate-rotated"));
    std::fs::write(s.pki.path("server-key.pem"), &rotated.key_pem).unwrap();
    std::fs::write(s.pki.path("server.pem"), &rotated.cert_pem).unwrap();
    let addr = s.addr;
    let client = s.client();
    let took = eventually(5, || {
        let client = &client;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let tls = client.tls_connect(tcp).await;
            let der = &tls.get_ref().1.peer_certificates().unwrap()[0];
            PeerIdentity::from_der(der).unwrap().common_name.as_deref() == Some("ztgate-rotated")
        }
    })
    .await;
    assert!(took, "new connections must get the rotated certificate");
    assert!(!before.is_closed(), "a rotation must not drop open connections");
    assert_eq!(get_on(&mut before, s.addr, "/app").await, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn a_connection_ends_when_its_client_certificate_expires() {
    let pki = Pki::new();
    let mut spec = LeafSpec::client("short-lived", Some("spiffe://ztgate.dev/ns/default/sa/client"));
    spec.valid_for_secs = Some(3);
    let short = pki.issue(&spec);
    let mut s = Server::start_with(pki, Opts::default()).await;
    let client = Client::new(&s.pki.ca.cert_pem(), Some(&short));
    let mut conn = client.connect_h1(s.addr).await;
    assert_eq!(get_on(&mut conn, s.addr, "/app").await, StatusCode::OK);
    assert!(!conn.is_closed());
    assert!(
        closed_within(&conn, 8).await,
        "the connection must be closed at the certificate's notAfter"
    );
    assert!(metric_line(&s, r#"ztgate_connections_closed_total{reason="cert_expired"}"#, 2).await);
    let err = client.get(s.addr, "/app").await.unwrap_err();
    assert!(err.contains("Expired"), "{err}");
    s.stop().await;
}

#[tokio::test]
async fn max_connection_age_closes_gracefully_after_the_request_in_flight() {
    let mut s = Server::start(Opts {
        listener_extra: "max_connection_age = \"1s\"".into(),
        ..Opts::default()
    })
    .await;
    let mut conn = s.client().connect_h1(s.addr).await;
    // In flight when the age is reached: it must finish.
    assert_eq!(get_on(&mut conn, s.addr, "/slow/1500").await, StatusCode::OK);
    assert!(
        closed_within(&conn, 3).await,
        "the connection must close once it is too old"
    );
    assert!(metric_line(&s, r#"ztgate_connections_closed_total{reason="max_age"}"#, 2).await);
    // A new connection is fine.
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    s.stop().await;
}

/// A plain-HTTP server answering every GET with the current `body` (a CRL distribution point).
async fn crl_server(body: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> String {
    use hyper::service::service_fn;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ca.crl", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let bytes = body.lock().unwrap().clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(Bytes::from(
                            bytes,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    url
}

#[tokio::test]
async fn crls_are_fetched_checked_and_applied_to_new_and_open_connections() {
    let pki = Pki::new();
    let body = std::sync::Arc::new(std::sync::Mutex::new(crl_der(&pki.ca.crl_pem(&[]).unwrap())));
    let url = crl_server(body.clone()).await;
    let file = pki.path("fetched/ca.crl.pem");
    assert!(!file.exists());
    let mut s = Server::start_with(
        pki,
        Opts {
            tls_extra: format!(
                "reload_interval = \"100ms\"\ncrl_fetch_interval = \"200ms\"\ncrl_sources = [{{ url = \"{url}\", file = \"{}\" }}]",
                file.display()
            ),
            ..Opts::default()
        },
    )
    .await;
    // Fetched before the listener serves (DER served, PEM written).
    let mut open = s.client().connect_h1(s.addr).await;
    assert_eq!(get_on(&mut open, s.addr, "/app").await, StatusCode::OK);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .starts_with("-----BEGIN X509 CRL-----")
    );
    assert!(metric_line(&s, "ztgate_crl_age_seconds{crl=\"ca.crl.pem\"}", 2).await);

    // A CRL signed by another CA is refused and changes nothing.
    let other = Pki::new();
    *body.lock().unwrap() = crl_der(&other.ca.crl_pem(&[&s.pki.client.serial]).unwrap());
    assert!(metric_line(&s, r#"ztgate_crl_fetch_total{result="untrusted"}"#, 5).await);
    // Garbage (an error page) is refused too.
    *body.lock().unwrap() = b"<html>502 Bad Gateway</html>".to_vec();
    assert!(metric_line(&s, r#"ztgate_crl_fetch_total{result="invalid"}"#, 5).await);
    assert!(!open.is_closed());
    assert_eq!(get_on(&mut open, s.addr, "/app").await, StatusCode::OK);

    // The CA revokes the client: a newer CRL (thisUpdate has one-second resolution).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    *body.lock().unwrap() = crl_der(&s.pki.ca.crl_pem(&[&s.pki.client.serial]).unwrap());
    assert!(
        closed_within(&open, 8).await,
        "the revoked client's connection must be closed"
    );
    assert!(metric_line(&s, r#"ztgate_crl_fetch_total{result="updated"}"#, 2).await);
    let err = s.client().get(s.addr, "/app").await.unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    assert_eq!(
        s.admin_client().get(s.addr, "/admin/x").await.unwrap().status,
        StatusCode::OK
    );
    s.stop().await;
}

#[tokio::test]
async fn a_policy_reload_closes_connections_of_identities_it_allows_nowhere() {
    let mut s = Server::start(Opts {
        policy_extra: "reload_interval = \"100ms\"".into(),
        ..Opts::default()
    })
    .await;
    let mut client_conn = s.client().connect_h1(s.addr).await;
    let mut admin_conn = s.admin_client().connect_h1(s.addr).await;
    assert_eq!(get_on(&mut client_conn, s.addr, "/app").await, StatusCode::OK);
    assert_eq!(get_on(&mut admin_conn, s.addr, "/admin/x").await, StatusCode::OK);

    // The new policy has no rule for the client any more; the admin keeps /admin.
    std::fs::write(
        s.pki.path("policy.toml"),
        r#"
[[rule]]
id = "admin-only"
effect = "allow"
spiffe_id = ["spiffe://ztgate.dev/ns/ops/sa/admin"]
paths = ["/admin/**"]
"#,
    )
    .unwrap();
    assert!(
        closed_within(&client_conn, 5).await,
        "the client's connection must be closed: no request of it can be allowed any more"
    );
    assert!(!admin_conn.is_closed());
    assert_eq!(get_on(&mut admin_conn, s.addr, "/admin/y").await, StatusCode::OK);
    assert!(metric_line(&s, r#"ztgate_connections_closed_total{reason="policy"}"#, 2).await);
    // New connections of the client still complete TLS, and get 403 from the policy.
    assert_eq!(
        s.client().get(s.addr, "/app").await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    s.stop().await;
}

/// A TCP relay in front of ztgate that passes the client's first TLS record (the ClientHello)
/// and ztgate's answers, but holds every later client byte (its certificate and Finished)
/// until `release` fires: a handshake kept in flight for as long as the test wants.
async fn holding_relay(
    target: std::net::SocketAddr,
    release: tokio::sync::oneshot::Receiver<()>,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = l.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(target).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
            let _ = cw.shutdown().await;
        });
        let mut header = [0u8; 5];
        cr.read_exact(&mut header).await.unwrap();
        let mut hello = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
        cr.read_exact(&mut hello).await.unwrap();
        sw.write_all(&header).await.unwrap();
        sw.write_all(&hello).await.unwrap();
        let _ = release.await;
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    });
    addr
}

/// Issue #22: a handshake in flight while its CA is removed from `client_ca` completed under the
/// old trust and was served afterwards (5 of 5 requests). It is judged by the trust current
/// when it completes: refused, 0 requests answered, and a fresh connection is refused too.
#[tokio::test]
async fn a_handshake_in_flight_across_a_ca_removal_is_judged_by_the_trust_current_when_it_completes() {
    let mut s = Server::start(Opts {
        tls_extra: "reload_interval = \"100ms\"".into(),
        ..Opts::default()
    })
    .await;
    let before = s.metrics().await;
    let (release, held) = tokio::sync::oneshot::channel();
    let relay = holding_relay(s.addr, held).await;
    // The client's side of the handshake completes (TLS 1.3: after its Finished is written),
    // while ztgate still waits for the bytes the relay holds.
    let tcp = tokio::net::TcpStream::connect(relay).await.unwrap();
    let tls = s.client().tls_connect(tcp).await;

    // Remove the CA from client_ca: the bundle now holds another CA only (named differently, so
    // WebPKI finds no issuer: `unknown_ca`).
    let other = ztgate::pki::CertAuthority::new("other CA").unwrap();
    std::fs::write(s.pki.path("ca.pem"), other.cert_pem()).unwrap();
    let (addr, client) = (s.addr, s.client());
    let refused = eventually(5, || {
        let client = &client;
        async move { client.get(addr, "/app").await.is_err() }
    })
    .await;
    assert!(refused, "a fresh connection must be refused once the CA is gone");
    let err = s.client().get(s.addr, "/app").await.unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");

    // Now the held flight reaches ztgate.
    release.send(()).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut answered = 0;
    for _ in 0..5 {
        if sender.ready().await.is_err() {
            break;
        }
        let req = http::Request::get("/app")
            .header("host", format!("localhost:{}", s.addr.port()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        if sender.send_request(req).await.is_ok() {
            answered += 1;
        }
    }
    assert_eq!(
        answered, 0,
        "no request may be answered on a connection whose CA was removed"
    );
    let after = s.metrics().await;
    let series = r#"ztgate_tls_handshakes_total{result="unknown_ca"}"#;
    // At least the fresh connections and the held one.
    assert!(counter(&after, series) >= counter(&before, series) + 2.0, "{after}");
    s.stop().await;
}
