//! Device posture (inventory, HTTP service, signed assertion) and user tokens, end to end through
//! the real listener with real TLS. JWTs are signed in the test with keys minted here.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use ztgate::pki::{Issued, LeafSpec};

use crate::support::{Client, Opts, Pki, Server, audit_records, echoed, eventually};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn fingerprint(i: &Issued) -> String {
    Sha256::digest(&i.der).iter().map(|b| format!("{b:02x}")).collect()
}

fn x5t(i: &Issued) -> String {
    B64.encode(Sha256::digest(&i.der))
}

/// A signing key and its public JWK.
pub(crate) struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
    pub(crate) jwk: serde_json::Value,
}

impl Signer {
    pub(crate) fn es256(kid: &str) -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = kp.public_key_raw();
        Self {
            key: EncodingKey::from_ec_der(&kp.serialize_der()),
            alg: Algorithm::ES256,
            kid: kid.into(),
            jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65])}),
        }
    }

    fn ed25519(kid: &str) -> Self {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Self {
            key: EncodingKey::from_ed_der(&kp.serialize_der()),
            alg: Algorithm::EdDSA,
            kid: kid.into(),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
                "x": B64.encode(kp.public_key_raw())}),
        }
    }

    pub(crate) fn sign(&self, claims: &serde_json::Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

pub(crate) fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) const POSTURE_POLICY: &str = r#"
[[rule]]
id = "healthy-devices"
effect = "allow"
trust_domain = ["ztgate.dev"]
posture = { managed = true, disk_encrypted = true, min_os_version = "14.2" }
"#;

async fn get_with(
    client: &Client,
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> crate::support::Reply {
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    client
        .send(addr, Version::HTTP_11, req.body(Empty::new()).unwrap())
        .await
        .unwrap()
}

/// Reads request records in order as the writer task flushes them.
struct Log {
    path: std::path::PathBuf,
    seen: usize,
}

impl Log {
    fn new(path: std::path::PathBuf) -> Self {
        Self { path, seen: 0 }
    }

    /// The record of the next request (waits until it is written).
    async fn next(&mut self) -> serde_json::Value {
        let n = self.seen;
        let path = self.path.clone();
        let mut found = None;
        for _ in 0..100 {
            let recs: Vec<serde_json::Value> = if path.exists() {
                audit_records(&path)
                    .into_iter()
                    .filter(|r| r["kind"] == "request")
                    .collect()
            } else {
                Vec::new()
            };
            if let Some(r) = recs.into_iter().nth(n) {
                found = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.seen += 1;
        found.unwrap_or_else(|| panic!("no audit record #{n} in {}", path.display()))
    }

    /// Skips the records of `n` requests.
    async fn skip(&mut self, n: usize) {
        for _ in 0..n {
            self.next().await;
        }
    }
}

#[tokio::test]
async fn inventory_admits_healthy_devices_and_names_the_failed_requirement() {
    let pki = Pki::new();
    let stranger = pki.issue(&LeafSpec::client(
        "stranger",
        Some("spiffe://ztgate.dev/ns/x/sa/stranger"),
    ));
    let inventory = format!(
        r#"
[device."{client}"]
managed = true
disk_encrypted = true
os = "macos"
os_version = "14.5"

[device."{admin}"]
managed = true
disk_encrypted = false
os_version = "14.5"
"#,
        client = fingerprint(&pki.client),
        admin = fingerprint(&pki.admin),
    );
    let inv = pki.write("devices.toml", &inventory);
    let log = pki.path("audit.log");
    let mut server = Server::start_with(
        pki,
        Opts {
            policy: POSTURE_POLICY.into(),
            audit: Some(format!("file = \"{}\"", log.display())),
            extra: format!(
                "[posture]\nprovider = \"inventory\"\nfile = \"{}\"\nreload_interval = \"100ms\"\n",
                inv.display()
            ),
            ..Opts::default()
        },
    )
    .await;
    let ca = server.pki.ca.cert_pem();
    let mut audit = Log::new(log);
    let client = server.client();
    assert_eq!(client.get(server.addr, "/app").await.unwrap().status, StatusCode::OK);
    audit.skip(1).await;

    let admin = server.admin_client();
    let denied = admin.get(server.addr, "/app").await.unwrap();
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert!(
        !denied.body.contains("disk"),
        "no detail to the client: {}",
        denied.body
    );
    let rec = audit.next().await;
    assert_eq!(rec["reason"], "posture-failed");
    assert_eq!(rec["rule"], "healthy-devices");
    assert_eq!(rec["posture"]["provider"], "inventory");
    assert_eq!(rec["posture"]["result"], "found");
    assert_eq!(rec["posture"]["failed"], "disk_encrypted");

    let unknown = Client::new(&ca, Some(&stranger));
    assert_eq!(
        unknown.get(server.addr, "/app").await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    let rec = audit.next().await;
    assert_eq!(rec["posture"]["result"], "device-unknown");
    assert_eq!(rec["posture"]["failed"], "device-unknown");
    let m = server.metrics().await;
    assert!(
        m.contains(r#"ztgate_posture_denials_total{requirement="disk_encrypted"}"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ztgate_posture_checks_total{provider="inventory",result="device-unknown"}"#),
        "{m}"
    );

    // The admin's disk gets encrypted: the inventory is reloaded and the next request passes.
    std::fs::write(
        &inv,
        inventory.replace("disk_encrypted = false", "disk_encrypted = true"),
    )
    .unwrap();
    assert!(
        eventually(5, || async {
            admin.get(server.addr, "/app").await.unwrap().status == StatusCode::OK
        })
        .await
    );
    // A broken inventory is refused and the last good one stays.
    std::fs::write(&inv, "[device.\"x\"]\nmanagd = true\n").unwrap();
    assert!(
        eventually(5, || async {
            server
                .metrics()
                .await
                .contains(r#"ztgate_posture_reload_total{result="error"}"#)
        })
        .await
    );
    assert_eq!(admin.get(server.addr, "/app").await.unwrap().status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_policy_with_posture_and_no_provider_does_not_start() {
    let pki = Pki::new();
    let policy = pki.write("policy.toml", POSTURE_POLICY);
    let cfg_text = crate::support::config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/");
    let cfg_path = pki.write("ztgate.toml", &cfg_text);
    let cfg = ztgate::config::Config::load(&cfg_path).unwrap();
    let errors = ztgate::app::prepare(&cfg, ztgate::audit::Auditor::disabled())
        .err()
        .unwrap();
    let text = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(text.contains("no [posture] provider"), "{text}");
}

/// A posture service on 127.0.0.1:0: answers per device id from `answers`
/// (status, body, delay), counting requests per device.
async fn posture_service(
    answers: HashMap<String, (u16, String, Duration)>,
) -> (std::net::SocketAddr, Arc<std::sync::Mutex<HashMap<String, usize>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
    let answers = Arc::new(answers);
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else { return };
            let (answers, hits) = (answers.clone(), h.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (answers, hits) = (answers.clone(), hits.clone());
                    async move {
                        let device = req.uri().path().trim_start_matches("/devices/").to_string();
                        *hits.lock().unwrap().entry(device.clone()).or_default() += 1;
                        let (status, body, delay) =
                            answers
                                .get(&device)
                                .cloned()
                                .unwrap_or((404, "{}".into(), Duration::ZERO));
                        tokio::time::sleep(delay).await;
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}

fn service_opts(pki: &Pki, url: &str, log: &std::path::Path) -> Opts {
    let _ = pki;
    Opts {
        policy: POSTURE_POLICY.into(),
        audit: Some(format!("file = \"{}\"", log.display())),
        extra: format!(
            "[posture]\nprovider = \"service\"\nurl = \"{url}/devices/{{device}}\"\ntimeout = \"300ms\"\ncache_ttl = \"1h\"\n"
        ),
        ..Opts::default()
    }
}

#[tokio::test]
async fn posture_service_answers_are_cached_and_concurrent_lookups_coalesce() {
    let pki = Pki::new();
    let healthy = r#"{"managed": true, "disk_encrypted": true, "os_version": "15.0"}"#.to_string();
    let (client_fp, admin_fp) = (fingerprint(&pki.client), fingerprint(&pki.admin));
    let answers = HashMap::from([
        (client_fp.clone(), (200, healthy.clone(), Duration::ZERO)),
        // Slow enough that the concurrent requests below all arrive while it is in flight.
        (admin_fp.clone(), (200, healthy, Duration::from_millis(150))),
    ]);
    let (svc, hits) = posture_service(answers).await;
    let log = pki.path("audit.log");
    let opts = service_opts(&pki, &format!("http://{svc}"), &log);
    let mut server = Server::start_with(pki, opts).await;
    let client = server.client();
    for _ in 0..3 {
        assert_eq!(client.get(server.addr, "/").await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(hits.lock().unwrap().get(&client_fp), Some(&1), "answers are cached");

    let admin = Arc::new(server.admin_client());
    let addr = server.addr;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let admin = admin.clone();
            tokio::spawn(async move { admin.get(addr, "/").await.unwrap().status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        hits.lock().unwrap().get(&admin_fp),
        Some(&1),
        "one lookup for 8 concurrent requests"
    );
    let m = server.metrics().await;
    assert!(
        m.contains(r#"ztgate_posture_cache_total{provider="service",result="hit"}"#),
        "{m}"
    );
    assert!(m.contains("ztgate_posture_lookup_duration_seconds_bucket"), "{m}");
    server.stop().await;
}

#[tokio::test]
async fn posture_service_down_hanging_or_garbage_fails_closed() {
    let pki = Pki::new();
    let stranger = pki.issue(&LeafSpec::client("stranger", Some("spiffe://ztgate.dev/ns/x/sa/s")));
    let answers = HashMap::from([
        // Hangs far past the 300 ms timeout.
        (fingerprint(&pki.client), (200, "{}".into(), Duration::from_secs(30))),
        (
            fingerprint(&pki.admin),
            (200, "<html>oops</html>".into(), Duration::ZERO),
        ),
        (fingerprint(&stranger), (500, "".into(), Duration::ZERO)),
    ]);
    let (svc, _) = posture_service(answers).await;
    let log = pki.path("audit.log");
    let opts = service_opts(&pki, &format!("http://{svc}"), &log);
    let mut server = Server::start_with(pki, opts).await;
    let ca = server.pki.ca.cert_pem();
    let mut audit = Log::new(log);

    let started = std::time::Instant::now();
    assert_eq!(
        server.client().get(server.addr, "/").await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the lookup is bounded by its timeout"
    );
    assert_eq!(audit.next().await["posture"]["result"], "service-timeout");

    assert_eq!(
        server.admin_client().get(server.addr, "/").await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(audit.next().await["posture"]["result"], "service-garbage");

    let s = Client::new(&ca, Some(&stranger));
    assert_eq!(s.get(server.addr, "/").await.unwrap().status, StatusCode::FORBIDDEN);
    assert_eq!(audit.next().await["posture"]["result"], "service-down");
    let m = server.metrics().await;
    assert!(
        m.contains(r#"ztgate_posture_checks_total{provider="service",result="service-timeout"}"#),
        "{m}"
    );
    server.stop().await;

    // Nothing listening at all.
    let pki = Pki::new();
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let log = pki.path("audit.log");
    let opts = service_opts(&pki, &format!("http://{dead}"), &log);
    let mut server = Server::start_with(pki, opts).await;
    assert_eq!(
        server.client().get(server.addr, "/").await.unwrap().status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(Log::new(log).next().await["posture"]["result"], "service-down");
    server.stop().await;
}

fn assertion_opts(pki: &Pki, signers: &[&Signer], log: &std::path::Path) -> Opts {
    let jwks_path = pki.write("mdm-jwks.json", &jwks(signers));
    Opts {
        policy: POSTURE_POLICY.into(),
        audit: Some(format!("file = \"{}\"", log.display())),
        extra: format!(
            "[posture]\nprovider = \"assertion\"\njwks = \"{}\"\nissuer = \"https://mdm.test\"\n",
            jwks_path.display()
        ),
        ..Opts::default()
    }
}

pub(crate) fn assertion(signer: &Signer, bound_to: Option<&Issued>, exp: u64) -> String {
    let mut claims = json!({
        "iss": "https://mdm.test", "sub": "device-1", "exp": exp, "iat": now(),
        "posture": {"managed": true, "disk_encrypted": true, "os_version": "14.6"},
    });
    if let Some(cert) = bound_to {
        claims["cnf"] = json!({"x5t#S256": x5t(cert)});
    }
    signer.sign(&claims)
}

#[tokio::test]
async fn signed_assertions_must_verify_be_current_and_bound_to_the_certificate() {
    let pki = Pki::new();
    let (mdm, mdm_ed, rogue) = (Signer::es256("mdm-1"), Signer::ed25519("mdm-2"), Signer::es256("mdm-1"));
    let log = pki.path("audit.log");
    let opts = assertion_opts(&pki, &[&mdm, &mdm_ed], &log);
    let mut server = Server::start_with(pki, opts).await;
    let (client, admin) = (server.client(), server.admin_client());
    let mut audit = Log::new(log);
    let pki = &server.pki;
    let later = now() + 3600;
    let cases: Vec<(&str, &Client, Option<String>, &str)> = vec![
        (
            "valid ES256",
            &client,
            Some(assertion(&mdm, Some(&pki.client), later)),
            "allow",
        ),
        (
            "valid EdDSA",
            &client,
            Some(assertion(&mdm_ed, Some(&pki.client), later)),
            "allow",
        ),
        ("missing", &client, None, "assertion-missing"),
        (
            "expired",
            &client,
            Some(assertion(&mdm, Some(&pki.client), now() - 600)),
            "assertion-expired",
        ),
        (
            "wrong key",
            &client,
            Some(assertion(&rogue, Some(&pki.client), later)),
            "assertion-bad-signature",
        ),
        (
            "unbound",
            &client,
            Some(assertion(&mdm, None, later)),
            "assertion-unbound",
        ),
        // The client's assertion replayed by another certificate.
        (
            "replayed",
            &admin,
            Some(assertion(&mdm, Some(&pki.client), later)),
            "assertion-wrong-certificate",
        ),
        ("garbage", &client, Some("not.a.jwt".into()), "assertion-malformed"),
    ];
    for (name, who, token, want) in cases {
        let headers: Vec<(&str, &str)> = token.iter().map(|t| ("x-device-assertion", t.as_str())).collect();
        let reply = get_with(who, server.addr, "/", &headers).await;
        let rec = audit.next().await;
        if want == "allow" {
            assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.body);
            assert!(
                echoed(&reply.body, "x-device-assertion").is_empty(),
                "{name}: assertion forwarded"
            );
        } else {
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{name}");
            assert_eq!(rec["posture"]["result"], want, "{name}: {rec}");
        }
    }
    server.stop().await;
}

fn user_opts(pki: &Pki, idp: &Signer, policy: &str, binding: bool) -> Opts {
    let jwks_path = pki.write("idp-jwks.json", &jwks(&[idp]));
    Opts {
        policy: policy.into(),
        audit: Some(format!("file = \"{}\"", pki.path("audit.log").display())),
        extra: format!(
            "[user_auth]\njwks = \"{}\"\nissuer = \"https://idp.test\"\naudience = \"ztgate\"\nrequire_binding = {binding}\n\n\
             [[route]]\nname = \"users\"\npath_prefix = \"/u\"\nupstream = \"app\"\nuser = \"required\"\n",
            jwks_path.display()
        ),
        ..Opts::default()
    }
}

fn user_token(idp: &Signer, sub: &str, groups: &[&str], aud: &str, bound_to: Option<&Issued>) -> String {
    let mut claims = json!({"iss": "https://idp.test", "aud": aud, "sub": sub, "exp": now() + 600,
        "email": format!("{sub}@corp.test"), "groups": groups, "amr": ["pwd", "mfa"]});
    if let Some(c) = bound_to {
        claims["cnf"] = json!({"x5t#S256": x5t(c)});
    }
    idp.sign(&claims)
}

const USER_POLICY: &str = r#"
[[rule]]
id = "sre-with-mfa"
effect = "allow"
route = ["users"]
user_groups = ["sre"]
user_mfa = true

[[rule]]
id = "everything-else"
effect = "allow"
route = ["default"]
trust_domain = ["ztgate.dev"]
"#;

#[tokio::test]
async fn user_tokens_are_verified_passed_upstream_and_matched_by_policy() {
    let pki = Pki::new();
    let idp = Signer::es256("idp");
    let opts = user_opts(&pki, &idp, USER_POLICY, false);
    let mut server = Server::start_with(pki, opts).await;
    let client = server.client();
    let mut audit = Log::new(server.pki.path("audit.log"));
    let bearer = |t: &str| format!("Bearer {t}");

    let good = bearer(&user_token(&idp, "alice", &["sre"], "ztgate", None));
    let reply = get_with(
        &client,
        server.addr,
        "/u/x",
        &[("authorization", &good), ("x-ztgate-user", "mallory")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        echoed(&reply.body, "x-ztgate-user"),
        vec!["alice"],
        "spoofed header replaced"
    );
    assert_eq!(audit.next().await["user"], "alice");

    let dev = bearer(&user_token(&idp, "bob", &["dev"], "ztgate", None));
    assert_eq!(
        get_with(&client, server.addr, "/u/x", &[("authorization", &dev)])
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    audit.skip(1).await;

    let missing = get_with(&client, server.addr, "/u/x", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers["www-authenticate"], "Bearer realm=\"ztgate\"");
    assert_eq!(audit.next().await["reason"], "user-token-missing");

    let wrong_aud = bearer(&user_token(&idp, "alice", &["sre"], "other-app", None));
    let other_idp = Signer::es256("idp");
    let forged = bearer(&user_token(&other_idp, "alice", &["sre"], "ztgate", None));
    // An HS256 token "signed" with the public key (algorithm confusion) is refused outright.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"iss": "https://idp.test", "aud": "ztgate", "sub": "alice", "exp": now() + 600}),
        &EncodingKey::from_secret(idp.jwk.to_string().as_bytes()),
    )
    .unwrap();
    for (token, reason) in [
        (wrong_aud, "user-token-wrong-audience"),
        (forged, "user-token-bad-signature"),
        (bearer(&hs), "user-token-disallowed-algorithm"),
        ("Basic YWxpY2U6cHc=".to_string(), "user-token-not-bearer"),
    ] {
        let r = get_with(&client, server.addr, "/u/x", &[("authorization", &token)]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{reason}");
        assert!(
            r.headers["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        assert_eq!(audit.next().await["reason"], reason);
    }
    // Routes without user authentication ignore tokens entirely.
    assert_eq!(client.get(server.addr, "/other").await.unwrap().status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn bound_user_tokens_only_work_with_their_certificate() {
    let pki = Pki::new();
    let idp = Signer::ed25519("idp");
    let opts = user_opts(&pki, &idp, USER_POLICY, true);
    let mut server = Server::start_with(pki, opts).await;
    let mut audit = Log::new(server.pki.path("audit.log"));
    let bound = format!(
        "Bearer {}",
        user_token(&idp, "alice", &["sre"], "ztgate", Some(&server.pki.client))
    );
    let unbound = format!("Bearer {}", user_token(&idp, "alice", &["sre"], "ztgate", None));
    let (client, admin) = (server.client(), server.admin_client());
    assert_eq!(
        get_with(&client, server.addr, "/u/", &[("authorization", &bound)])
            .await
            .status,
        StatusCode::OK
    );
    audit.skip(1).await;
    assert_eq!(
        get_with(&admin, server.addr, "/u/", &[("authorization", &bound)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(audit.next().await["reason"], "user-token-wrong-certificate");
    assert_eq!(
        get_with(&client, server.addr, "/u/", &[("authorization", &unbound)])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(audit.next().await["reason"], "user-token-unbound");
    server.stop().await;
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn a_trusted_hop_forwards_verified_client_identities_and_nobody_else_can() {
    let pki = Pki::new();
    let log = pki.path("audit.log");
    // The admin identity plays the front proxy.
    let opts = Opts {
        audit: Some(format!("file = \"{}\"", log.display())),
        extra: format!("[trusted_hop]\nspiffe_ids = [\"{}\"]\n", crate::support::ADMIN_ID),
        ..Opts::default()
    };
    let mut server = Server::start_with(pki, opts).await;
    let mut audit = Log::new(log);
    let (client, hop) = (server.client(), server.admin_client());
    let client_xfcc = format!(
        "Hash={};Cert=\"{}\"",
        fingerprint(&server.pki.client),
        url_encode(&server.pki.client.cert_pem)
    );

    // Judged as the forwarded client: /admin is the admin's (the hop's) only.
    let r = get_with(
        &hop,
        server.addr,
        "/admin/x",
        &[("x-forwarded-client-cert", &client_xfcc)],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let rec = audit.next().await;
    assert_eq!(rec["identity"]["spiffe_id"], crate::support::CLIENT_ID);
    assert_eq!(rec["via"]["spiffe_id"], crate::support::ADMIN_ID);
    let r = get_with(&hop, server.addr, "/app", &[("x-forwarded-client-cert", &client_xfcc)]).await;
    assert_eq!(r.status, StatusCode::OK);
    audit.skip(1).await;
    assert_eq!(echoed(&r.body, "x-ztgate-identity"), vec![crate::support::CLIENT_ID]);
    let upstream_xfcc = echoed(&r.body, "x-forwarded-client-cert");
    assert!(
        upstream_xfcc[0].contains(&fingerprint(&server.pki.client)),
        "{upstream_xfcc:?}"
    );
    assert!(
        !upstream_xfcc[0].contains("Cert="),
        "the PEM is not passed on: {upstream_xfcc:?}"
    );

    // The hop's own requests are its own.
    assert_eq!(
        get_with(&hop, server.addr, "/admin/x", &[]).await.status,
        StatusCode::OK
    );
    audit.skip(1).await;

    // An untrusted connection claiming to forward the admin is ignored: judged as itself.
    let admin_xfcc = format!("Cert=\"{}\"", url_encode(&server.pki.admin.cert_pem));
    let r = get_with(
        &client,
        server.addr,
        "/admin/x",
        &[("x-forwarded-client-cert", &admin_xfcc)],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let rec = audit.next().await;
    assert_eq!(rec["identity"]["spiffe_id"], crate::support::CLIENT_ID);
    assert!(rec.get("via").is_none());

    // A forged certificate (another CA, same SPIFFE ID) forwarded by the trusted hop is refused.
    let rogue = ztgate::pki::CertAuthority::new("rogue CA").unwrap();
    let forged = rogue
        .issue(&LeafSpec::client("admin", Some(crate::support::ADMIN_ID)))
        .unwrap();
    let forged_xfcc = format!(
        "Cert=\"{}\";Chain=\"{}\"",
        url_encode(&forged.cert_pem),
        url_encode(&format!("{}{}", forged.cert_pem, rogue.cert_pem()))
    );
    let r = get_with(
        &hop,
        server.addr,
        "/admin/x",
        &[("x-forwarded-client-cert", &forged_xfcc)],
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(audit.next().await["reason"], "forwarded-cert-untrusted");
    // Garbage and two elements are refused, not downgraded to the hop's identity.
    for bad in ["Cert=\"%zz\"", "Hash=abc", &format!("{client_xfcc},{client_xfcc}")] {
        let r = get_with(&hop, server.addr, "/admin/x", &[("x-forwarded-client-cert", bad)]).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{bad}");
        let reason = audit.next().await["reason"].clone();
        assert!(
            reason == "forwarded-cert-invalid" || reason == "forwarded-cert-missing",
            "{bad}: {reason}"
        );
    }
    server.stop().await;
}

#[test]
fn posture_and_user_config_mistakes_are_reported_with_their_line() {
    let pki = Pki::new();
    let policy = pki.write("policy.toml", crate::support::EXAMPLE_POLICY);
    let base = crate::support::config_toml(pki.dir.path(), &policy, "", "http://127.0.0.1:1", "", "/");
    for (extra, needle) in [
        ("[posture]\nprovider = \"mdm\"\n", "unknown posture provider `mdm`"),
        ("[posture]\nprovider = \"inventory\"\n", "needs `file`"),
        (
            "[posture]\nprovider = \"inventory\"\nfile = \"d.toml\"\ntimeout = \"1s\"\n",
            "`timeout` does not apply",
        ),
        (
            "[posture]\nprovider = \"service\"\nurl = \"http://127.0.0.1:1/devices\"\n",
            "contain `{device}`",
        ),
        (
            "[posture]\nprovider = \"assertion\"\njwks = \"j.json\"\nalgorithms = [\"HS256\"]\n",
            "never none or HS*",
        ),
        (
            "[posture]\nprovider = \"assertion\"\njwks = \"j.json\"\nheader = \"x-ztgate-posture\"\n",
            "cannot be",
        ),
        (
            "[posture]\nprovider = \"inventory\"\nfile = \"d.toml\"\ndevice_id = \"imei\"\n",
            "unknown device_id",
        ),
        (
            "[[route]]\nname = \"u\"\npath_prefix = \"/u\"\nupstream = \"app\"\nuser = \"required\"\n",
            "no [user_auth]",
        ),
        ("[trusted_hop]\nspiffe_ids = [\"front\"]\n", "not a SPIFFE ID"),
    ] {
        let text = format!("{base}\n{extra}");
        let err = ztgate::config::Config::from_toml(std::path::Path::new("z.toml"), &text)
            .err()
            .unwrap_or_else(|| panic!("accepted: {extra}"))
            .to_string();
        assert!(err.contains(needle), "{extra}: {err}");
        assert!(err.contains("z.toml:"), "{err}");
    }
}
