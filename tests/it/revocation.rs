//! Online revocation: CRLs found through client certificates' distribution points, and OCSP.
//! A real local HTTP responder serves CRLs and OCSP answers minted per test; the listener,
//! TLS and certificates are real.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use ztgate::pki::{Issued, LeafSpec};
use ztgate::tls::revocation::ocsp::CertStatus;

use crate::support::*;

/// A CRL distribution point (`GET /ca.crl`) and an OCSP responder (`POST /ocsp`) in one.
#[derive(Default)]
struct Responder {
    crl: Mutex<Vec<u8>>,
    ocsp: Mutex<Vec<u8>>,
    /// 200, or the status every request gets (503: the service is down).
    status: AtomicU16,
    crl_hits: AtomicUsize,
    ocsp_hits: AtomicUsize,
    /// The body of the last OCSP request, to check what ztgate asked.
    last_request: Mutex<Vec<u8>>,
}

impl Responder {
    async fn start() -> (Arc<Self>, String) {
        use http_body_util::BodyExt;
        use hyper::service::service_fn;
        let me = Arc::new(Self::default());
        me.status.store(200, Ordering::SeqCst);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let r = me.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let r = r.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let r = r.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let bytes = if path == "/ca.crl" {
                                r.crl_hits.fetch_add(1, Ordering::SeqCst);
                                r.crl.lock().unwrap().clone()
                            } else {
                                r.ocsp_hits.fetch_add(1, Ordering::SeqCst);
                                *r.last_request.lock().unwrap() = body.to_vec();
                                r.ocsp.lock().unwrap().clone()
                            };
                            let mut resp = http::Response::new(http_body_util::Full::new(Bytes::from(bytes)));
                            *resp.status_mut() = StatusCode::from_u16(r.status.load(Ordering::SeqCst)).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (me, base)
    }
}

/// A client certificate naming `base`'s distribution point and OCSP responder.
fn client_cert(pki: &Pki, cn: &str, base: &str) -> Issued {
    let mut spec = LeafSpec::client(cn, Some(&format!("spiffe://ztgate.dev/ns/default/sa/{cn}")));
    spec.crl_urls = vec![format!("{base}/ca.crl")];
    spec.ocsp_url = Some(format!("{base}/ocsp"));
    pki.issue(&spec)
}

const POLICY: &str = r#"
[[rule]]
id = "all"
effect = "allow"
spiffe_id = ["spiffe://ztgate.dev/**"]
paths = ["/**"]
"#;

async fn metric(s: &Server, needle: &str) -> bool {
    eventually(3, || async { s.metrics().await.contains(needle) }).await
}

fn refusals(log: &std::path::Path) -> Vec<serde_json::Value> {
    audit_records(log)
        .into_iter()
        .filter(|r| r["kind"] == "handshake")
        .collect()
}

#[tokio::test]
async fn distribution_point_crls_are_fetched_once_cached_and_revoke_new_and_open_connections() {
    let (resp, base) = Responder::start().await;
    let pki = Pki::new();
    *resp.crl.lock().unwrap() = crl_der(&pki.ca.crl_pem(&[]).unwrap());
    let alice = client_cert(&pki, "alice", &base);
    let log = pki.path("audit.log");
    let mut s = Server::start_with(
        pki,
        Opts {
            policy: POLICY.into(),
            tls_extra: "crl_discovery = \"fail-closed\"\ncrl_fetch_interval = \"300ms\"".into(),
            audit: Some(format!("file = \"{}\"", log.display())),
            ..Opts::default()
        },
    )
    .await;
    let alice_client = Client::new(&s.pki.ca.cert_pem(), Some(&alice));
    // Nothing is fetched before a certificate names the point.
    assert_eq!(resp.crl_hits.load(Ordering::SeqCst), 0);
    for _ in 0..3 {
        assert_eq!(alice_client.get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    }
    let hits = resp.crl_hits.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&hits),
        "one fetch (and maybe one refresh), not one per connection: {hits}"
    );
    // A certificate without a distribution point has nothing to check.
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    assert!(metric(&s, r#"ztgate_revocation_checks_total{method="crl_dp",result="good"}"#).await);
    assert!(metric(&s, &format!("ztgate_crl_age_seconds{{crl=\"{base}/ca.crl\"}}")).await);

    // The CA revokes alice: the next refresh closes her open connection...
    let mut open = alice_client.connect_h1(s.addr).await;
    assert_eq!(get_on(&mut open, s.addr, "/app").await, StatusCode::OK);
    *resp.crl.lock().unwrap() = crl_der(&s.pki.ca.crl_pem(&[&alice.serial]).unwrap());
    assert!(
        eventually(5, || async { open.is_closed() }).await,
        "the refreshed CRL revokes alice: her open connection must close"
    );
    // ...and her new ones are refused right after the handshake.
    let err = alice_client.get(s.addr, "/app").await.unwrap_err();
    assert!(!err.is_empty());
    assert!(metric(&s, r#"ztgate_tls_handshakes_total{result="revoked"}"#).await);
    assert!(
        metric(
            &s,
            r#"ztgate_revocation_checks_total{method="crl_dp",result="revoked"}"#
        )
        .await
    );
    // Other clients are not affected.
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    s.stop().await;
    let refused = refusals(&log);
    let rec = refused
        .iter()
        .find(|r| r["reason"] == "revoked")
        .expect("an audit record");
    assert_eq!(rec["decision"], "deny");
    assert_eq!(
        rec["identity"]["spiffe_id"], "spiffe://ztgate.dev/ns/default/sa/alice",
        "the record names who was refused: {rec}"
    );
}

#[tokio::test]
async fn an_unreachable_or_forged_distribution_point_fails_closed_or_open_as_configured() {
    let (resp, base) = Responder::start().await;
    let pki = Pki::new();
    resp.status.store(503, Ordering::SeqCst);
    let bob = client_cert(&pki, "bob", &base);
    let log = pki.path("audit.log");
    let ca_pem = pki.ca.cert_pem();
    let mut closed = Server::start_with(
        pki,
        Opts {
            policy: POLICY.into(),
            tls_extra: "crl_discovery = \"fail-closed\"".into(),
            audit: Some(format!("file = \"{}\"", log.display())),
            ..Opts::default()
        },
    )
    .await;
    let bob_client = Client::new(&ca_pem, Some(&bob));
    assert!(bob_client.get(closed.addr, "/app").await.is_err(), "no CRL, no entry");
    // A CRL signed by another CA is not believed either (after the failure is forgotten).
    resp.status.store(200, Ordering::SeqCst);
    let mallory = Pki::new();
    *resp.crl.lock().unwrap() = crl_der(&mallory.ca.crl_pem(&[]).unwrap());
    tokio::time::sleep(ztgate::tls::revocation::ERROR_TTL + Duration::from_millis(100)).await;
    assert!(
        bob_client.get(closed.addr, "/app").await.is_err(),
        "a CRL from another CA"
    );
    assert!(
        metric(
            &closed,
            r#"ztgate_revocation_checks_total{method="crl_dp",result="error"}"#
        )
        .await
    );
    assert!(
        metric(
            &closed,
            r#"ztgate_revocation_fetches_total{method="crl_dp",result="error"}"#
        )
        .await
    );
    // The real CRL arrives: bob gets in once the failure is forgotten.
    *resp.crl.lock().unwrap() = crl_der(&closed.pki.ca.crl_pem(&[]).unwrap());
    tokio::time::sleep(ztgate::tls::revocation::ERROR_TTL + Duration::from_millis(100)).await;
    assert_eq!(
        bob_client.get(closed.addr, "/app").await.unwrap().status,
        StatusCode::OK
    );
    closed.stop().await;
    let refused = refusals(&log);
    assert!(
        refused.len() >= 2 && refused.iter().all(|r| r["reason"] == "revocation_unavailable"),
        "{refused:?}"
    );

    // fail-open: the same outage lets bob in, counted.
    resp.status.store(503, Ordering::SeqCst);
    let pki = Pki::new();
    let carol = client_cert(&pki, "carol", &base);
    let mut open = Server::start_with(
        pki,
        Opts {
            policy: POLICY.into(),
            tls_extra: "crl_discovery = \"fail-open\"".into(),
            ..Opts::default()
        },
    )
    .await;
    let carol_client = Client::new(&open.pki.ca.cert_pem(), Some(&carol));
    assert_eq!(
        carol_client.get(open.addr, "/app").await.unwrap().status,
        StatusCode::OK
    );
    open.stop().await;
}

#[tokio::test]
async fn ocsp_answers_are_verified_cached_until_next_update_and_decide_the_connection() {
    let (resp, base) = Responder::start().await;
    let pki = Pki::new();
    let alice = client_cert(&pki, "alice", &base);
    let bob = client_cert(&pki, "bob", &base);
    let log = pki.path("audit.log");
    let mut s = Server::start_with(
        pki,
        Opts {
            policy: POLICY.into(),
            tls_extra: "ocsp = \"fail-closed\"".into(),
            audit: Some(format!("file = \"{}\"", log.display())),
            ..Opts::default()
        },
    )
    .await;
    let ca = s.pki.ca.clone();
    let ca_pem = ca.cert_pem();

    // good, valid for an hour: asked once, then cached.
    *resp.ocsp.lock().unwrap() = ca.ocsp_response(&alice.der, CertStatus::Good, Some(3600)).unwrap();
    let alice_client = Client::new(&ca_pem, Some(&alice));
    for _ in 0..3 {
        assert_eq!(alice_client.get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(resp.ocsp_hits.load(Ordering::SeqCst), 1, "cached until nextUpdate");
    // What ztgate asked is a DER OCSPRequest naming alice's serial.
    let req = resp.last_request.lock().unwrap().clone();
    assert_eq!(req[0], 0x30);
    assert!(req.windows(alice.serial.len()).any(|w| w == alice.serial.as_slice()));

    // revoked: refused, audited with the identity.
    *resp.ocsp.lock().unwrap() = ca.ocsp_response(&bob.der, CertStatus::Revoked, Some(3600)).unwrap();
    let bob_client = Client::new(&ca_pem, Some(&bob));
    assert!(bob_client.get(s.addr, "/app").await.is_err());
    assert!(metric(&s, r#"ztgate_revocation_checks_total{method="ocsp",result="revoked"}"#).await);
    assert!(metric(&s, r#"ztgate_revocation_checks_total{method="ocsp",result="good"}"#).await);

    // A certificate with no responder in its AIA and no ocsp_responder: no answer, refused.
    assert!(s.client().get(s.addr, "/app").await.is_err());
    s.stop().await;
    let refused = refusals(&log);
    let revoked = refused
        .iter()
        .find(|r| r["reason"] == "revoked")
        .expect("bob's refusal");
    assert_eq!(
        revoked["identity"]["spiffe_id"],
        "spiffe://ztgate.dev/ns/default/sa/bob"
    );
    assert!(
        refused.iter().any(|r| r["reason"] == "revocation_unavailable"),
        "{refused:?}"
    );
}

#[tokio::test]
async fn ocsp_outages_forgeries_and_unknown_answers_fail_closed_or_open_as_configured() {
    let (resp, base) = Responder::start().await;
    let pki = Pki::new();
    let dave = client_cert(&pki, "dave", &base);
    let erin = client_cert(&pki, "erin", &base);
    let frank = client_cert(&pki, "frank", &base);
    let mut s = Server::start_with(
        pki,
        Opts {
            policy: POLICY.into(),
            tls_extra: "ocsp = \"fail-closed\"\nrevocation_timeout = \"500ms\"".into(),
            ..Opts::default()
        },
    )
    .await;
    let ca = s.pki.ca.clone();
    let ca_pem = ca.cert_pem();
    // Forged: "good", but signed by another CA's key.
    let mallory = Pki::new();
    *resp.ocsp.lock().unwrap() = ca
        .ocsp_response_signed_by(&mallory.ca, &dave.der, CertStatus::Good, Some(3600))
        .unwrap();
    assert!(Client::new(&ca_pem, Some(&dave)).get(s.addr, "/app").await.is_err());
    // unknown: the responder does not know erin.
    *resp.ocsp.lock().unwrap() = ca.ocsp_response(&erin.der, CertStatus::Unknown, Some(3600)).unwrap();
    assert!(Client::new(&ca_pem, Some(&erin)).get(s.addr, "/app").await.is_err());
    assert!(metric(&s, r#"ztgate_revocation_checks_total{method="ocsp",result="unknown"}"#).await);
    // Down: 503.
    resp.status.store(503, Ordering::SeqCst);
    assert!(Client::new(&ca_pem, Some(&frank)).get(s.addr, "/app").await.is_err());
    assert!(metric(&s, r#"ztgate_revocation_checks_total{method="ocsp",result="error"}"#).await);
    assert!(metric(&s, r#"ztgate_tls_handshakes_total{result="revocation_unavailable"}"#).await);
    s.stop().await;

    // fail-open, with the responder set in the config (frank's AIA is ignored): the outage lets
    // frank in; a "revoked" answer still refuses.
    let pki = Pki::new();
    let grace = pki.issue(&LeafSpec::client(
        "grace",
        Some("spiffe://ztgate.dev/ns/default/sa/grace"),
    ));
    let heidi = pki.issue(&LeafSpec::client(
        "heidi",
        Some("spiffe://ztgate.dev/ns/default/sa/heidi"),
    ));
    let mut open = Server::start_with(
        pki,
        Opts {
            policy: POLICY.into(),
            tls_extra: format!("ocsp = \"fail-open\"\nocsp_responder = \"{base}/ocsp\""),
            ..Opts::default()
        },
    )
    .await;
    let ca = open.pki.ca.clone();
    let before = resp.ocsp_hits.load(Ordering::SeqCst);
    assert_eq!(
        Client::new(&ca.cert_pem(), Some(&grace))
            .get(open.addr, "/app")
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    assert_eq!(
        resp.ocsp_hits.load(Ordering::SeqCst),
        before + 1,
        "the configured responder was asked"
    );
    resp.status.store(200, Ordering::SeqCst);
    *resp.ocsp.lock().unwrap() = ca.ocsp_response(&heidi.der, CertStatus::Revoked, Some(3600)).unwrap();
    assert!(
        Client::new(&ca.cert_pem(), Some(&heidi))
            .get(open.addr, "/app")
            .await
            .is_err()
    );
    open.stop().await;
}

#[test]
fn revocation_settings_are_checked_with_their_line() {
    let dir = std::path::Path::new("/nonexistent");
    let base = config_toml(
        dir,
        &dir.join("policy.toml"),
        "ocsp = \"sometimes\"",
        "http://127.0.0.1:1",
        "",
        "/",
    );
    let err = ztgate::config::Config::from_toml(std::path::Path::new("z.toml"), &base)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown ocsp `sometimes`"), "{err}");
    assert!(err.contains("z.toml:10:"), "{err}");
    for (extra, says) in [
        ("crl_discovery = \"yes\"", "unknown crl_discovery `yes`"),
        (
            "ocsp_responder = \"http://127.0.0.1:1/ocsp\"",
            "ocsp_responder is set but ocsp is \"off\"",
        ),
        (
            "ocsp = \"fail-open\"\nocsp_responder = \"https://ocsp.example\"",
            "must be http://",
        ),
        ("ocsp = \"fail-closed\"\nrevocation_timeout = \"soon\"", "soon"),
    ] {
        let text = config_toml(dir, &dir.join("policy.toml"), extra, "http://127.0.0.1:1", "", "/");
        let err = ztgate::config::Config::from_toml(std::path::Path::new("z.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{extra}: {err}");
    }
}
