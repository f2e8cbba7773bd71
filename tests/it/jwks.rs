//! Key sets fetched from an identity provider (`jwks_url`, `oidc_discovery`), end to end: a real
//! HTTPS IdP on 127.0.0.1:0 (hyper over tokio-rustls, its certificate minted here) serves a JWKS
//! with `Cache-Control` and `ETag`, rotates its key mid-test, fails and goes down; ztgate verifies
//! user tokens through its real listener.

use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use tokio::net::TcpListener;
use ztgate::pki::LeafSpec;

use crate::posture::{Signer, jwks, now};
use crate::support::{Client, Opts, Pki, Server, counter, eventually};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers.
    Up,
    /// Answers every request with 500.
    Failing,
    /// Closes every connection before TLS.
    Down,
}

struct IdpState {
    jwks: String,
    /// Bumped per rotation; the ETag is `"v{version}"`.
    version: u32,
    mode: Mode,
    /// The `issuer` the discovery document states.
    doc_issuer: String,
    /// Requests per path, in order.
    seen: Vec<String>,
}

/// A local HTTPS identity provider.
struct Idp {
    port: u16,
    state: Arc<Mutex<IdpState>>,
}

impl Idp {
    /// Serves `/jwks` (max-age one hour, ETag, 304 on a matching If-None-Match) and
    /// `/.well-known/openid-configuration`, with a certificate from `pki`'s CA.
    async fn start(pki: &Pki, keys: String, mode: Mode) -> Self {
        let cert = pki.issue(&LeafSpec::server("idp"));
        let mut cfg = rustls::ServerConfig::builder_with_provider(ztgate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(IdpState {
            jwks: keys,
            version: 1,
            mode,
            doc_issuer: format!("https://127.0.0.1:{port}"),
            seen: Vec::new(),
        }));
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = l.accept().await else { return };
                if st.lock().unwrap().mode == Mode::Down {
                    drop(tcp);
                    continue;
                }
                let (acceptor, st) = (acceptor.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        // Down also for a kept-alive connection: an error aborts it unanswered.
                        let down = st.lock().unwrap().mode == Mode::Down;
                        let resp = if down { Err("down") } else { Ok(answer(&st, &req, port)) };
                        async move { resp }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self { port, state }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Publishes a new key set (a new ETag).
    fn rotate(&self, keys: String) {
        let mut s = self.state.lock().unwrap();
        s.jwks = keys;
        s.version += 1;
    }

    fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    fn requests(&self, path: &str) -> usize {
        self.state.lock().unwrap().seen.iter().filter(|p| *p == path).count()
    }
}

fn answer(state: &Mutex<IdpState>, req: &Request<hyper::body::Incoming>, port: u16) -> Response<Full<Bytes>> {
    let mut s = state.lock().unwrap();
    s.seen.push(req.uri().path().to_string());
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if s.mode == Mode::Failing {
        return reply(StatusCode::INTERNAL_SERVER_ERROR, "down for maintenance".into());
    }
    match req.uri().path() {
        "/.well-known/openid-configuration" => reply(
            StatusCode::OK,
            json!({"issuer": s.doc_issuer, "jwks_uri": format!("https://127.0.0.1:{port}/jwks")}).to_string(),
        ),
        "/jwks" => {
            let etag = format!("\"v{}\"", s.version);
            let matches = req.headers().get("if-none-match").is_some_and(|v| v == etag.as_str());
            let mut r = if matches {
                reply(StatusCode::NOT_MODIFIED, String::new())
            } else {
                reply(StatusCode::OK, s.jwks.clone())
            };
            let h = r.headers_mut();
            h.insert("cache-control", "public, max-age=3600".parse().unwrap());
            h.insert("etag", etag.parse().unwrap());
            h.insert("content-type", "application/json".parse().unwrap());
            r
        }
        "/moved" => {
            let mut r = reply(StatusCode::FOUND, String::new());
            let to = format!("https://127.0.0.1:{port}/jwks");
            r.headers_mut().insert("location", to.parse().unwrap());
            r
        }
        _ => reply(StatusCode::NOT_FOUND, String::new()),
    }
}

const POLICY: &str = r#"
[[rule]]
id = "everyone"
effect = "allow"
trust_domain = ["ztgate.dev"]
"#;

/// `[user_auth]` with `source` (the key set's keys) and a route `/u` that requires a user.
fn user_auth_toml(pki: &Pki, issuer: &str, source: &str) -> String {
    let ca = pki.write("idp-ca.pem", &pki.ca.cert_pem());
    format!(
        "[user_auth]\n{source}\njwks_ca = \"{}\"\njwks_refresh_min = \"1s\"\njwks_timeout = \"2s\"\n\
         issuer = \"{issuer}\"\naudience = \"ztgate\"\n\n\
         [[route]]\nname = \"users\"\npath_prefix = \"/u\"\nupstream = \"app\"\nuser = \"required\"\n",
        ca.display()
    )
}

async fn start(pki: Pki, issuer: &str, source: &str) -> Server {
    let extra = user_auth_toml(&pki, issuer, source);
    Server::start_with(
        pki,
        Opts {
            policy: POLICY.into(),
            extra,
            ..Opts::default()
        },
    )
    .await
}

fn token(signer: &Signer, issuer: &str, sub: &str) -> String {
    format!(
        "Bearer {}",
        signer.sign(&json!({"iss": issuer, "aud": "ztgate", "sub": sub, "exp": now() + 600}))
    )
}

/// The status of `GET /u/` with `authorization`.
async fn status(client: &Client, server: &Server, authorization: &str) -> StatusCode {
    let req = Request::get("/u/")
        .header("authorization", authorization)
        .body(Empty::<Bytes>::new())
        .unwrap();
    client.send(server.addr, Version::HTTP_11, req).await.unwrap().status
}

/// The metrics recorder is one per process and `cargo test` runs a binary's tests on threads of
/// one process, so every server of these tests counts into the same `ztgate_jwks_*` series: the
/// tests run one at a time, and a count that must stay still is compared with its value when the
/// test's server started, not with 0.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn fetches(server: &Server, result: &str) -> f64 {
    counter(
        &server.metrics().await,
        &format!("ztgate_jwks_fetches_total{{source=\"user_auth\",result=\"{result}\"}}"),
    )
}

#[tokio::test]
async fn a_fetched_key_set_follows_a_rotation_and_keeps_the_last_good_set_when_the_idp_fails() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let (a, b, c) = (Signer::es256("key-a"), Signer::es256("key-b"), Signer::es256("key-c"));
    let idp = Idp::start(&pki, jwks(&[&a]), Mode::Up).await;
    let issuer = "https://idp.test";
    let server = start(pki, issuer, &format!("jwks_url = \"{}/jwks\"", idp.url())).await;
    let client = server.client();
    assert!(
        eventually(5, || async { server.admin_get("/readyz").await.0 == 200 }).await,
        "ready once the key set is loaded"
    );
    assert_eq!(
        status(&client, &server, &token(&a, issuer, "alice")).await,
        StatusCode::OK
    );
    let scrape = server.metrics().await;
    assert!(counter(&scrape, "ztgate_jwks_fetches_total{source=\"user_auth\",result=\"ok\"}") >= 1.0);
    assert_eq!(counter(&scrape, "ztgate_jwks_keys{source=\"user_auth\"}"), 1.0);
    assert!(
        counter(
            &scrape,
            "ztgate_jwks_last_success_timestamp_seconds{source=\"user_auth\"}"
        ) > 1e9
    );

    // The IdP rotates to key B; the set says it is fresh for an hour, but a token signed by B
    // names a kid the set lacks, which fetches it again within the one-second cool-down.
    idp.rotate(jwks(&[&b]));
    let before = idp.requests("/jwks");
    let started = std::time::Instant::now();
    let bob = token(&b, issuer, "bob");
    assert!(
        eventually(5, || async { status(&client, &server, &bob).await == StatusCode::OK }).await,
        "a token signed by the new key is accepted after the refetch"
    );
    let after = idp.requests("/jwks") - before;
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert!(
        (1..=2).contains(&after),
        "refetches are coalesced and rate-limited ({after} for ~{} polls)",
        started.elapsed().as_millis() / 50
    );
    // Key A is gone from the set: its tokens stop working at once, cached or not.
    let r = client
        .send(
            server.addr,
            Version::HTTP_11,
            Request::get("/u/")
                .header("authorization", token(&a, issuer, "alice"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    // The IdP fails (500), then goes down: a token with an unknown kid makes ztgate ask, the
    // failure is counted, and the last good set (key B) keeps working.
    for (mode, result) in [(Mode::Failing, "http_status"), (Mode::Down, "unreachable")] {
        idp.set_mode(mode);
        let failed_before = fetches(&server, result).await;
        let unknown = token(&c, issuer, "carol");
        assert!(
            eventually(6, || async {
                assert_eq!(status(&client, &server, &unknown).await, StatusCode::UNAUTHORIZED);
                fetches(&server, result).await > failed_before
            })
            .await,
            "{mode:?}: the failed fetch is counted as {result}"
        );
        assert_eq!(
            status(&client, &server, &token(&b, issuer, &format!("dave-{result}"))).await,
            StatusCode::OK,
            "{mode:?}: the last good key set is kept"
        );
        assert_eq!(server.admin_get("/readyz").await.0, 200, "{mode:?}: still ready");
    }
}

#[tokio::test]
async fn started_while_the_idp_is_down_every_token_is_refused_until_it_answers() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let a = Signer::es256("key-a");
    let idp = Idp::start(&pki, jwks(&[&a]), Mode::Down).await;
    let issuer = "https://idp.test";
    let server = start(pki, issuer, &format!("jwks_url = \"{}/jwks\"", idp.url())).await;
    let ok_before = fetches(&server, "ok").await;
    let client = server.client();
    let alice = token(&a, issuer, "alice");
    for _ in 0..3 {
        let r = client
            .send(
                server.addr,
                Version::HTTP_11,
                Request::get("/u/")
                    .header("authorization", &alice)
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "fail closed: no key set was ever loaded"
        );
        assert!(
            r.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let scrape = server.metrics().await;
    assert!(
        counter(
            &scrape,
            "ztgate_user_auth_total{result=\"user-token-keys-unavailable\"}"
        ) >= 3.0
    );
    assert!(
        counter(
            &scrape,
            "ztgate_jwks_fetches_total{source=\"user_auth\",result=\"unreachable\"}"
        ) >= 1.0
    );
    assert_eq!(
        counter(&scrape, "ztgate_jwks_fetches_total{source=\"user_auth\",result=\"ok\"}"),
        ok_before
    );
    assert_eq!(
        server.admin_get("/readyz").await.0,
        503,
        "not ready before the first key set"
    );
    // Routes without users are served meanwhile.
    assert_eq!(client.get(server.addr, "/other").await.unwrap().status, StatusCode::OK);

    idp.set_mode(Mode::Up);
    assert!(
        eventually(5, || async { status(&client, &server, &alice).await == StatusCode::OK }).await,
        "accepted once the IdP answers (the retry backoff is capped at jwks_refresh_min)"
    );
    assert_eq!(server.admin_get("/readyz").await.0, 200);
}

#[tokio::test]
async fn posture_assertions_verify_against_a_key_set_fetched_from_the_mdm() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let (mdm, next) = (Signer::es256("mdm-1"), Signer::es256("mdm-2"));
    let idp = Idp::start(&pki, jwks(&[&mdm]), Mode::Up).await;
    let ca = pki.write("mdm-ca.pem", &pki.ca.cert_pem());
    let extra = format!(
        "[posture]\nprovider = \"assertion\"\njwks_url = \"{}/jwks\"\njwks_ca = \"{}\"\n\
         jwks_refresh_min = \"1s\"\nissuer = \"https://mdm.test\"\n",
        idp.url(),
        ca.display()
    );
    let opts = Opts {
        policy: crate::posture::POSTURE_POLICY.into(),
        extra,
        ..Opts::default()
    };
    let server = Server::start_with(pki, opts).await;
    let client = server.client();
    let get = |token: String| {
        let client = &client;
        let server = &server;
        async move {
            let req = Request::get("/app")
                .header("x-device-assertion", token)
                .body(Empty::<Bytes>::new())
                .unwrap();
            client.send(server.addr, Version::HTTP_11, req).await.unwrap().status
        }
    };
    let later = now() + 3600;
    let signed = crate::posture::assertion(&mdm, Some(&server.pki.client), later);
    assert!(eventually(5, || async { get(signed.clone()).await == StatusCode::OK }).await);
    idp.rotate(jwks(&[&next]));
    let rotated = crate::posture::assertion(&next, Some(&server.pki.client), later);
    assert!(
        eventually(5, || async { get(rotated.clone()).await == StatusCode::OK }).await,
        "the MDM's new key is fetched on its unknown kid"
    );
    let scrape = server.metrics().await;
    assert!(
        counter(
            &scrape,
            "ztgate_jwks_fetches_total{source=\"posture_assertion\",result=\"ok\"}"
        ) >= 2.0
    );
    assert_eq!(counter(&scrape, "ztgate_jwks_keys{source=\"posture_assertion\"}"), 1.0);
}

#[tokio::test]
async fn a_key_set_over_1_mib_is_invalid_not_unreachable() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let a = Signer::es256("key-a");
    let mut set: serde_json::Value = serde_json::from_str(&jwks(&[&a])).unwrap();
    set["padding"] = json!("x".repeat(1024 * 1024));
    let idp = Idp::start(&pki, set.to_string(), Mode::Up).await;
    let issuer = "https://idp.test";
    let server = start(pki, issuer, &format!("jwks_url = \"{}/jwks\"", idp.url())).await;
    let (unreachable_before, ok_before) = (fetches(&server, "unreachable").await, fetches(&server, "ok").await);
    assert!(
        eventually(5, || async { fetches(&server, "invalid").await >= 1.0 }).await,
        "the oversized set is counted as invalid"
    );
    assert_eq!(fetches(&server, "unreachable").await, unreachable_before);
    assert_eq!(fetches(&server, "ok").await, ok_before);
    assert_eq!(server.admin_get("/readyz").await.0, 503, "no key set loaded");
    let alice = token(&a, issuer, "alice");
    assert_eq!(
        status(&server.client(), &server, &alice).await,
        StatusCode::UNAUTHORIZED
    );

    // The log line names the limit (a daemon of its own, to read its log).
    let pki = &server.pki;
    let policy = pki.write("policy.toml", POLICY);
    let cfg = crate::support::config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/")
        + "\n[log]\nformat = \"json\"\n\n"
        + &user_auth_toml(pki, issuer, &format!("jwks_url = \"{}/jwks\"", idp.url()));
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let (mut child, _) =
        crate::support::spawn_daemon_with(&pki.write("daemon.toml", &cfg), move |l| sink.lock().unwrap().push(l));
    let logged = eventually(5, || {
        let lines = lines.clone();
        async move {
            lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("JWKS fetch failed") && l.contains("the document is larger than 1 MiB"))
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(logged, "{:#?}", lines.lock().unwrap());
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let a = Signer::es256("key-a");
    let idp = Idp::start(&pki, jwks(&[&a]), Mode::Up).await;
    let issuer = "https://idp.test";
    let server = start(pki, issuer, &format!("jwks_url = \"{}/moved\"", idp.url())).await;
    let ok_before = fetches(&server, "ok").await;
    assert!(
        eventually(5, || async { fetches(&server, "http_status").await >= 1.0 }).await,
        "a 302 is a failed fetch"
    );
    assert_eq!(idp.requests("/jwks"), 0, "its Location is not fetched");
    assert_eq!(fetches(&server, "ok").await, ok_before);
    assert_eq!(
        status(&server.client(), &server, &token(&a, issuer, "alice")).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn oidc_discovery_finds_the_key_set_of_the_configured_issuer() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let a = Signer::es256("key-a");
    // As Keycloak publishes it: an encryption key (RSA-OAEP) beside the signing key; and an
    // ES512 key ztgate does not support. Both are skipped, the set is used.
    let mut set: serde_json::Value = serde_json::from_str(&jwks(&[&a])).unwrap();
    let keys = set["keys"].as_array_mut().unwrap();
    keys.insert(
        0,
        json!({"kty": "RSA", "kid": "enc1", "use": "enc", "alg": "RSA-OAEP",
        "n": B64.encode([0xc5u8; 256]), "e": "AQAB"}),
    );
    keys.push(
        json!({"kty": "EC", "crv": "P-521", "kid": "p521", "use": "sig", "alg": "ES512",
        "x": B64.encode([1u8; 66]), "y": B64.encode([2u8; 66])}),
    );
    let idp = Idp::start(&pki, set.to_string(), Mode::Up).await;
    let issuer = idp.url();
    let server = start(pki, &issuer, "oidc_discovery = true").await;
    let invalid_before = fetches(&server, "invalid").await;
    let client = server.client();
    let alice = token(&a, &issuer, "alice");
    assert!(eventually(5, || async { status(&client, &server, &alice).await == StatusCode::OK }).await);
    assert_eq!(
        counter(&server.metrics().await, "ztgate_jwks_keys{source=\"user_auth\"}"),
        1.0,
        "only the signing key is loaded"
    );
    assert_eq!(fetches(&server, "invalid").await, invalid_before);
    assert_eq!(idp.requests("/.well-known/openid-configuration"), 1);
    assert!(idp.requests("/jwks") >= 1);
    assert_eq!(
        status(&client, &server, &token(&a, "https://other.test", "alice")).await,
        StatusCode::UNAUTHORIZED,
        "the configured issuer is still required of tokens"
    );
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_refused_with_a_clear_log() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let a = Signer::es256("key-a");
    let idp = Idp::start(&pki, jwks(&[&a]), Mode::Up).await;
    idp.state.lock().unwrap().doc_issuer = "https://evil.test".into();
    let issuer = idp.url();
    let policy = pki.write("policy.toml", POLICY);
    let cfg = crate::support::config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/")
        + "\n[log]\nformat = \"json\"\n\n"
        + &user_auth_toml(&pki, &issuer, "oidc_discovery = true");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let (mut child, addr) =
        crate::support::spawn_daemon_with(&pki.write("ztgate.toml", &cfg), move |l| sink.lock().unwrap().push(l));
    let client = Client::new(&pki.ca.cert_pem(), Some(&pki.client));
    let logged = eventually(5, || {
        let lines = lines.clone();
        let issuer = issuer.clone();
        async move {
            lines.lock().unwrap().iter().any(|l| {
                l.contains("JWKS fetch failed and no key set was ever loaded")
                    && l.contains("names issuer `https://evil.test`")
                    && l.contains(&format!("not the configured `{issuer}`"))
            })
        }
    })
    .await;
    let req = Request::get("/u/")
        .header("authorization", token(&a, &issuer, "alice"))
        .body(Empty::new())
        .unwrap();
    let refused = client.send(addr, Version::HTTP_11, req).await.unwrap().status;
    let _ = child.kill();
    let _ = child.wait();
    assert!(logged, "{:#?}", lines.lock().unwrap());
    assert_eq!(
        refused,
        StatusCode::UNAUTHORIZED,
        "keys from that document are never used"
    );
    assert_eq!(idp.requests("/jwks"), 0, "its jwks_uri is not even fetched");
}

#[test]
fn key_set_source_mistakes_are_reported_with_their_line() {
    let pki = Pki::new();
    let policy = pki.write("policy.toml", crate::support::EXAMPLE_POLICY);
    let ca = pki.write("ca-bundle.pem", &pki.ca.cert_pem());
    let base = crate::support::config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/");
    let user = |keys: &str| format!("[user_auth]\nissuer = \"https://idp.test\"\naudience = \"a\"\n{keys}\n");
    let ca_key = format!("jwks_ca = \"{}\"", ca.display());
    for (extra, bad_line, needle) in [
        (user(""), "[user_auth]", "no key set: set one of `jwks`"),
        (
            user(&format!(
                "jwks = \"{}\"\njwks_url = \"https://idp.test/keys\"",
                ca.display()
            )),
            "jwks_url",
            "`jwks_url` conflicts with `jwks`",
        ),
        (
            user(&format!("jwks_url = \"http://idp.test/keys\"\n{ca_key}")),
            "jwks_url",
            "must be an https:// URL",
        ),
        (
            user("jwks_url = \"https://idp.test/keys\""),
            "[user_auth]",
            "needs `jwks_ca`",
        ),
        (
            user(&format!("jwks = \"{}\"\n{ca_key}", ca.display())),
            "jwks_ca",
            "only applies to a fetched key set",
        ),
        (
            user(&format!(
                "oidc_discovery = true\n{ca_key}\njwks_refresh_min = \"2h\"\njwks_refresh_max = \"1h\""
            )),
            "jwks_refresh_min",
            "must not exceed jwks_refresh_max",
        ),
        (
            user(&format!(
                "jwks_url = \"https://idp.test/keys\"\n{ca_key}\njwks_timeout = \"soon\""
            )),
            "jwks_timeout",
            "",
        ),
        (
            format!("[posture]\nprovider = \"assertion\"\noidc_discovery = true\n{ca_key}\n"),
            "[posture]",
            "oidc_discovery needs `issuer`",
        ),
        (
            "[posture]\nprovider = \"inventory\"\nfile = \"d.toml\"\njwks_url = \"https://mdm.test/k\"\n".to_string(),
            "[posture]",
            "`jwks_url` does not apply to the inventory posture provider",
        ),
    ] {
        let text = format!("{base}\n{extra}");
        let line = text
            .lines()
            .position(|l| l.starts_with(bad_line))
            .map(|i| i + 1)
            .unwrap();
        let err = ztgate::config::Config::from_toml(std::path::Path::new("z.toml"), &text)
            .err()
            .unwrap_or_else(|| panic!("accepted: {extra}"))
            .to_string();
        assert!(err.contains(needle), "{extra}: {err}");
        assert!(err.contains(&format!("z.toml:{line}:")), "{extra}: line {line}: {err}");
    }
}
