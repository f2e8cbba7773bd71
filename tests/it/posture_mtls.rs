//! The posture service over mTLS: ztgate presents its own certificate (`client_cert`,
//! `client_key`) to a posture service that requires one, over HTTP/2 (ALPN) or HTTP/1.1. A
//! service that refuses the certificate makes posture fail closed (403, `service-down`),
//! counted, and logged with the service's address and the TLS error. `protocol = "http2"` speaks
//! h2 with prior knowledge to a plain `http://` service.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use ztgate::identity::PeerIdentity;
use ztgate::pki::{CertAuthority, LeafSpec};

use crate::support::*;

/// ztgate's identity towards the posture service.
const ZTGATE_ID: &str = "spiffe://ztgate.dev/ns/edge/sa/ztgate";

const POLICY: &str = r#"
[[rule]]
id = "managed-devices"
effect = "allow"
trust_domain = ["ztgate.dev"]
posture = { managed = true }
"#;

/// What the posture service saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    /// The URI SAN of the client certificate presented on the connection.
    peer: Option<String>,
    version: Version,
}

/// A posture service on 127.0.0.1:0 (hyper over tokio-rustls) that requires a client
/// certificate chaining to `client_ca_pem`, offers `alpn`, and answers every device as managed.
/// Returns its port, what it saw per request, and the handshake errors it had.
async fn posture_service(
    server_ca: &CertAuthority,
    client_ca_pem: &str,
    alpn: &[&[u8]],
) -> (u16, Arc<Mutex<Vec<Seen>>>, Arc<Mutex<Vec<String>>>) {
    let server = server_ca.issue(&LeafSpec::server("posture service")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ztgate::tls::provider())
            .build()
            .unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(ztgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let (s, r) = (seen.clone(), refused.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else { return };
            let (acceptor, seen, refused) = (acceptor.clone(), s.clone(), r.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).into_fallible().await {
                    Ok(tls) => tls,
                    Err((e, tcp)) => {
                        refused.lock().unwrap().push(e.to_string());
                        // Closed gracefully, as a real server does: the client reads the alert
                        // instead of a reset (which drops unread data).
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        drop(tcp);
                        return;
                    }
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|der| PeerIdentity::from_der(der).ok())
                    .and_then(|id| id.uris.first().cloned());
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    seen.lock().unwrap().push(Seen {
                        peer: peer.clone(),
                        version: req.version(),
                    });
                    async move {
                        let body = Full::new(Bytes::from_static(br#"{"managed": true}"#));
                        Ok::<_, std::convert::Infallible>(Response::new(body))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, seen, refused)
}

/// `[posture]` for the service on `port`, verified with `pki`'s CA, presenting ztgate's own
/// certificate (written to `pki`'s dir), plus `extra` keys.
fn posture_toml(pki: &Pki, port: u16, extra: &str) -> String {
    let me = pki.issue(&LeafSpec::client("ztgate", Some(ZTGATE_ID)));
    let cert = pki.write("ztgate-client.pem", &me.chain_pem);
    let key = pki.write("ztgate-client-key.pem", &me.key_pem);
    format!(
        "[posture]\nprovider = \"service\"\nurl = \"https://localhost:{port}/devices/{{device}}\"\n\
         ca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\ntimeout = \"2s\"\ncache_ttl = \"1h\"\n{extra}\n",
        pki.path("ca.pem").display(),
        cert.display(),
        key.display()
    )
}

async fn start(pki: Pki, port: u16, extra: &str) -> Server {
    let opts = Opts {
        policy: POLICY.into(),
        extra: posture_toml(&pki, port, extra),
        ..Opts::default()
    };
    Server::start_with(pki, opts).await
}

#[tokio::test]
async fn the_posture_service_sees_ztgates_own_certificate_over_h2() {
    let pki = Pki::new();
    let (port, seen, _) = posture_service(&pki.ca, &pki.ca.cert_pem(), &[b"h2", b"http/1.1"]).await;
    let mut s = start(pki, port, "").await;
    let r = s.client().get(s.addr, "/app").await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].peer.as_deref(), Some(ZTGATE_ID), "{seen:?}");
    assert_eq!(
        seen[0].version,
        Version::HTTP_2,
        "ALPN picks h2 when the service offers it"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_posture_service_sees_ztgates_own_certificate_over_http1() {
    // A service that speaks HTTP/1.1 only: ALPN falls back to it.
    let pki = Pki::new();
    let (port, seen, _) = posture_service(&pki.ca, &pki.ca.cert_pem(), &[b"http/1.1"]).await;
    let mut s = start(pki, port, "").await;
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].peer.as_deref(), Some(ZTGATE_ID));
        assert_eq!(seen[0].version, Version::HTTP_11);
    }
    s.stop().await;

    // `protocol = "http1"` keeps to HTTP/1.1 even where the service would speak h2.
    let pki = Pki::new();
    let (port, seen, _) = posture_service(&pki.ca, &pki.ca.cert_pem(), &[b"h2", b"http/1.1"]).await;
    let mut s = start(pki, port, "protocol = \"http1\"").await;
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    assert_eq!(seen.lock().unwrap()[0].version, Version::HTTP_11);
    s.stop().await;
}

#[tokio::test]
async fn a_posture_service_refusing_ztgates_certificate_fails_closed_counted_and_logged() {
    // The service trusts another CA than the one that issued ztgate's certificate.
    let pki = Pki::new();
    let stranger = CertAuthority::new("posture clients CA").unwrap();
    let (port, seen, refused) = posture_service(&pki.ca, &stranger.cert_pem(), &[b"h2", b"http/1.1"]).await;
    let log = pki.path("audit.log");
    let opts = Opts {
        policy: POLICY.into(),
        audit: Some(format!("file = \"{}\"", log.display())),
        extra: posture_toml(&pki, port, ""),
        ..Opts::default()
    };
    let series = r#"ztgate_posture_checks_total{provider="service",result="service-down"}"#;
    let mut s = Server::start_with(pki, opts).await;
    let before = counter(&s.metrics().await, series);
    let r = s.client().get(s.addr, "/app").await.unwrap();
    assert_eq!(r.status, StatusCode::FORBIDDEN, "posture unknown: fail closed");
    assert!(seen.lock().unwrap().is_empty(), "no request got through");
    assert!(
        refused.lock().unwrap().iter().any(|e| e.contains("UnknownIssuer")),
        "{:?}",
        refused.lock().unwrap()
    );
    assert!(counter(&s.metrics().await, series) > before);
    let rec = eventually(5, || async {
        std::path::Path::new(&log).exists()
            && audit_records(&log)
                .iter()
                .any(|r| r["kind"] == "request" && r["posture"]["result"] == "service-down")
    })
    .await;
    assert!(rec, "the audit record names service-down");
    s.stop().await;

    // The daemon's log line names the posture service and the TLS error.
    let pki = Pki::new();
    let stranger = CertAuthority::new("posture clients CA").unwrap();
    let (port, _, _) = posture_service(&pki.ca, &stranger.cert_pem(), &[b"h2", b"http/1.1"]).await;
    let policy = pki.write("policy.toml", POLICY);
    let cfg = config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/")
        + "\n[log]\nformat = \"json\"\n\n"
        + &posture_toml(&pki, port, "");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let (mut child, addr) = spawn_daemon_with(&pki.write("ztgate.toml", &cfg), move |l| sink.lock().unwrap().push(l));
    let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
    assert_eq!(client.get(addr, "/app").await.unwrap().status, StatusCode::FORBIDDEN);
    let service = format!("https://localhost:{port}");
    let logged = eventually(5, || {
        let lines = lines.clone();
        let service = service.clone();
        async move {
            lines.lock().unwrap().iter().any(|l| {
                l.contains("posture service request failed") && l.contains(&service) && l.contains("UnknownCA")
            })
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(logged, "{:#?}", lines.lock().unwrap());
}

#[test]
fn posture_service_tls_mistakes_are_reported_by_check() {
    let pki = Pki::new();
    let policy = pki.write("policy.toml", EXAMPLE_POLICY);
    let base = config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/");
    let ca = pki.path("ca.pem");
    let ca = ca.display();
    let service = "[posture]\nprovider = \"service\"\nurl = \"https://localhost:1/d/{device}\"\n";
    for (extra, needle) in [
        (
            format!("{service}ca = \"{ca}\"\nclient_cert = \"c.pem\"\n"),
            "`client_cert` and `client_key` must be set together",
        ),
        (
            "[posture]\nprovider = \"service\"\nurl = \"http://localhost:1/d/{device}\"\nclient_cert = \"c.pem\"\nclient_key = \"k.pem\"\n".to_string(),
            "`client_cert` only applies to an https:// posture service",
        ),
        (
            format!("{service}ca = \"{ca}\"\nprotocol = \"spdy\"\n"),
            "unknown posture service protocol `spdy`",
        ),
        (
            "[posture]\nprovider = \"inventory\"\nfile = \"d.toml\"\nclient_key = \"k.pem\"\n".to_string(),
            "`client_key` does not apply to the inventory posture provider",
        ),
    ] {
        let text = format!("{base}\n{extra}");
        let err = ztgate::config::Config::from_toml(std::path::Path::new("z.toml"), &text)
            .err()
            .unwrap_or_else(|| panic!("accepted: {extra}"))
            .to_string();
        assert!(err.contains(needle), "{extra}: {err}");
        assert!(err.contains("z.toml:"), "{err}");
    }

    // A key file that is not there: `check` names it, like any other certificate problem.
    let missing = pki.path("nope-key.pem");
    let cfg = format!(
        "{base}\n{service}ca = \"{ca}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        pki.path("server.pem").display(),
        missing.display()
    );
    let path = pki.write("ztgate.toml", &cfg);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("[posture] client_key"), "named by its key: {out}");
    assert!(out.contains(&missing.display().to_string()), "{out}");

    // A key file that is there but holds no key: named by its key too.
    pki.write("nope-key.pem", "not a key\n");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("[posture] client_key") && out.contains("no PEM private key"),
        "{out}"
    );
}

#[tokio::test]
async fn protocol_http2_speaks_h2_with_prior_knowledge_to_a_plain_http_service() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let versions: Arc<Mutex<Vec<Version>>> = Arc::default();
    let v = versions.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let v = v.clone();
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                v.lock().unwrap().push(req.version());
                async move {
                    let body = Full::new(Bytes::from_static(br#"{"managed": true}"#));
                    Ok::<_, std::convert::Infallible>(Response::new(body))
                }
            });
            tokio::spawn(
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .into_owned(),
            );
        }
    });
    let opts = Opts {
        policy: POLICY.into(),
        extra: format!(
            "[posture]\nprovider = \"service\"\nurl = \"http://127.0.0.1:{port}/devices/{{device}}\"\nprotocol = \"http2\"\ntimeout = \"2s\"\n"
        ),
        ..Opts::default()
    };
    let mut s = Server::start(opts).await;
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    assert_eq!(*versions.lock().unwrap(), [Version::HTTP_2]);
    s.stop().await;
}
