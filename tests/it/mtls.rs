//! Who gets in: the TLS handshake requires a client certificate chaining to the CA, valid now,
//! with the clientAuth EKU, and not revoked.

use http::{StatusCode, Version};
use rcgen::ExtendedKeyUsagePurpose;
use ztgate::pki::{CertAuthority, LeafSpec};

use crate::support::*;

#[tokio::test]
async fn valid_client_is_served_and_upstream_sees_its_identity() {
    let s = Server::start(Opts::default()).await;
    let r = s.client().get(s.addr, "/hello").await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(echoed(&r.body, "x-ztgate-identity"), [CLIENT_ID]);
    let xfcc = echoed(&r.body, "x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1);
    assert!(xfcc[0].starts_with("Hash="), "{}", xfcc[0]);
    assert!(xfcc[0].contains(r#"Subject="CN=client""#), "{}", xfcc[0]);
    assert!(xfcc[0].ends_with(&format!("URI={CLIENT_ID}")), "{}", xfcc[0]);
    assert_eq!(echoed(&r.body, "x-forwarded-proto"), ["https"]);
    assert_eq!(echoed(&r.body, "x-forwarded-for"), ["127.0.0.1"]);
    let rid = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(
        echoed(&r.body, "x-request-id"),
        [rid],
        "the client and the upstream see the same request id"
    );
}

#[tokio::test]
async fn http1_and_h2_clients_are_both_served() {
    let s = Server::start(Opts::default()).await;
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let req = http::Request::get("/v").body(Default::default()).unwrap();
        let r = s.client().send(s.addr, version, req).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{version:?}");
        // The upstream always speaks HTTP/1.1 and gets a Host with the port.
        assert!(r.body.starts_with("GET /v HTTP/1.1\n"), "{version:?}: {}", r.body);
        assert_eq!(
            echoed(&r.body, "host"),
            [format!("localhost:{}", s.addr.port()).as_str()],
            "{version:?}"
        );
        assert_eq!(echoed(&r.body, "x-ztgate-identity"), [CLIENT_ID], "{version:?}");
    }
}

/// Asserts a client is refused during the handshake with the given TLS alert, and that the
/// refusal is counted under `reason`.
async fn assert_refused(s: &Server, client: Client, alert: &str, reason: &str) {
    let err = client.get(s.addr, "/").await.expect_err("handshake must fail");
    assert!(err.contains(alert), "expected alert {alert}, got: {err}");
    let metrics = s.metrics().await;
    let line = format!("ztgate_tls_handshakes_total{{result=\"{reason}\"}}");
    assert!(metrics.contains(&line), "missing {line} in:\n{metrics}");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let s = Server::start(Opts::default()).await;
    assert_refused(
        &s,
        Client::new(&s.pki.ca.cert_pem(), None),
        "CertificateRequired",
        "no_client_cert",
    )
    .await;
    assert_eq!(s.client().get(s.addr, "/").await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let s = Server::start(Opts::default()).await;
    let other = CertAuthority::new("other CA").unwrap();
    let stranger = other.issue(&LeafSpec::client("client", Some(CLIENT_ID))).unwrap();
    assert_refused(
        &s,
        Client::new(&s.pki.ca.cert_pem(), Some(&stranger)),
        "UnknownCA",
        "unknown_ca",
    )
    .await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let s = Server::start(Opts::default()).await;
    let mut spec = LeafSpec::client("client", Some(CLIENT_ID));
    (spec.valid_from_days, spec.valid_until_days) = (-30, -1);
    let expired = s.pki.issue(&spec);
    assert_refused(
        &s,
        Client::new(&s.pki.ca.cert_pem(), Some(&expired)),
        "CertificateExpired",
        "expired",
    )
    .await;
}

#[tokio::test]
async fn certificate_without_client_auth_eku_is_refused() {
    let s = Server::start(Opts::default()).await;
    let mut spec = LeafSpec::client("client", Some(CLIENT_ID));
    spec.eku = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_only = s.pki.issue(&spec);
    assert_refused(
        &s,
        Client::new(&s.pki.ca.cert_pem(), Some(&server_only)),
        "UnsupportedCertificate",
        "bad_eku",
    )
    .await;
}

#[tokio::test]
async fn revoked_certificate_is_refused_and_others_still_served() {
    let pki = Pki::new();
    let revoked = pki.issue(&LeafSpec::client("client", Some(CLIENT_ID)));
    let crl = pki.ca.crl_pem(&[&revoked.serial]).unwrap();
    let crl_path = pki.write("ca.crl.pem", &crl);
    let opts = Opts {
        tls_extra: format!("crls = [\"{}\"]", crl_path.display()),
        ..Opts::default()
    };
    let s = Server::start_with(pki, opts).await;
    assert_refused(
        &s,
        Client::new(&s.pki.ca.cert_pem(), Some(&revoked)),
        "CertificateRevoked",
        "revoked",
    )
    .await;
    assert!(
        s.metrics()
            .await
            .contains(r#"ztgate_crl_next_update_seconds{crl="ca.crl.pem"}"#)
    );
    assert_eq!(s.client().get(s.addr, "/").await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn plain_http_on_the_tls_port_is_closed_without_a_response() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(Opts::default()).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1"),
        "no HTTP may be served without TLS"
    );
    assert!(
        s.metrics()
            .await
            .contains("ztgate_tls_handshakes_total{result=\"protocol\"}")
    );
}

#[tokio::test]
async fn sessions_are_never_resumed_so_every_connection_verifies_the_certificate() {
    use hyper_util::rt::TokioIo;
    let s = Server::start(Opts::default()).await;
    // One client (one session cache, resumption enabled as rustls clients default to) makes a
    // request, reading anything the server offers for resumption, then connects again.
    let client = s.client();
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let tls = client.tls_connect(tcp).await;
        kinds.push(tls.get_ref().1.handshake_kind());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/")
            .header("host", "localhost")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        assert_eq!(sender.send_request(req).await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        kinds,
        [Some(rustls::HandshakeKind::Full), Some(rustls::HandshakeKind::Full)]
    );
}

/// The listener chooses the cipher suite by its own order: a client that prefers
/// AES-256-GCM-SHA384 (as OpenSSL does, and rustls' default order) still gets AES-128-GCM, on
/// TLS 1.3 and 1.2; a client that offers only AES-256 gets AES-256.
#[tokio::test]
async fn the_server_picks_aes_128_gcm_whatever_order_the_client_prefers() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::sync::Arc;
    let s = Server::start(Opts::default()).await;
    let negotiated = |suites: Vec<rustls::SupportedCipherSuite>, version: &'static rustls::SupportedProtocolVersion| {
        let pki = &s.pki;
        let addr = s.addr;
        async move {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(pki.ca.cert_pem().as_bytes()).unwrap())
                .unwrap();
            // rustls' own default order: AES-256 first.
            let mut provider = rustls::crypto::ring::default_provider();
            provider.cipher_suites = suites;
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots)
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(pki.client.cert_pem.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(pki.client.key_pem.as_bytes()).unwrap(),
                )
                .unwrap();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            tls.get_ref().1.negotiated_cipher_suite().unwrap().suite()
        }
    };
    let defaults = rustls::crypto::ring::default_provider().cipher_suites;
    assert_eq!(
        format!("{:?}", defaults[0].suite()),
        "TLS13_AES_256_GCM_SHA384",
        "the client must prefer AES-256 for this test to mean anything"
    );
    assert_eq!(
        negotiated(defaults.clone(), &rustls::version::TLS13).await,
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
    );
    assert_eq!(
        negotiated(defaults.clone(), &rustls::version::TLS12).await,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    );
    let only_256: Vec<_> = defaults
        .into_iter()
        .filter(|s| s.suite() == rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
        .collect();
    assert_eq!(
        negotiated(only_256, &rustls::version::TLS13).await,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    );
}
