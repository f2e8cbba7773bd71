//! Each layer alone, through `tower::service_fn` (no sockets, no TLS): one request it lets
//! through and one it refuses, with the refusal's status and reason. The inner service records
//! whether it was called, so "refused" also means "nothing went further".

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use tower::{Layer, Service, ServiceExt, service_fn};

use super::check::{Check, CheckLayer};
use super::{BoxFuture, hop, policy, ratelimit, route, sanitize, user};
use crate::body::ProxyBody;
use crate::ctx::{ConnCtx, RequestCtx, RequestId};
use crate::error::{BadRequest, ProxyError};
use crate::identity::{PeerIdentity, TrustedHopConfig};
use crate::pki::{CertAuthority, LeafSpec};
use crate::policy::{Policy, PolicyStore};
use crate::ratelimit::{Limits, Rate};
use crate::upstream::{RouteConfig, RouteTable, UserMode};

const CLIENT: &str = "spiffe://ztgate.dev/ns/default/sa/client";

fn identity(spiffe: &str) -> PeerIdentity {
    static CA: OnceLock<CertAuthority> = OnceLock::new();
    let ca = CA.get_or_init(|| CertAuthority::new("layer tests CA").unwrap());
    let leaf = ca.issue(&LeafSpec::client("client", Some(spiffe))).unwrap();
    PeerIdentity::from_der(&leaf.der).unwrap()
}

fn conn(spiffe: &str) -> Arc<ConnCtx> {
    let peer = "192.0.2.7:50000".parse().unwrap();
    Arc::new(ConnCtx::new(7, peer, identity(spiffe), Some("app.internal".into()), None).unwrap())
}

/// A request as the observing layer hands it on: with its context.
fn request(path: &str, host: &str, spiffe: &str) -> (Request<()>, Arc<RequestCtx>) {
    let mut req = Request::builder().uri(path).body(()).unwrap();
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_str(host).unwrap());
    let ctx = Arc::new(RequestCtx::new(
        RequestId(HeaderValue::from_static("0123456789abcdef0123456789abcdef")),
        conn(spiffe),
    ));
    req.extensions_mut().insert(ctx.clone());
    (req, ctx)
}

/// Sanitize's work, for layers that run after it.
fn canonical(req: &mut Request<()>) {
    sanitize::Sanitize::default().check(req).unwrap();
}

/// The innermost service: counts its calls and answers 200.
fn inner(
    calls: &Arc<AtomicUsize>,
) -> impl Service<Request<()>, Response = Response<ProxyBody>, Error = ProxyError, Future = BoxFuture> + Clone {
    let calls = calls.clone();
    service_fn(move |_req: Request<()>| -> BoxFuture {
        calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(Response::new(Either::Right(Full::new(Bytes::from_static(b"ok"))))) })
    })
}

async fn call<S>(svc: &mut S, req: Request<()>) -> Result<StatusCode, ProxyError>
where
    S: Service<Request<()>, Response = Response<ProxyBody>, Error = ProxyError>,
{
    svc.ready().await?.call(req).await.map(|r| r.status())
}

fn routes() -> Arc<RouteTable> {
    let route = |name: &str, prefix: &str, user: UserMode| RouteConfig {
        name: name.into(),
        host: Some("app.internal".into()),
        path_prefix: prefix.into(),
        upstream: 0,
        rate_limit: None,
        pins: None,
        user,
        request_timeout: None,
        path_parameters: crate::policy::path::PathParameters::Refuse,
        buffer_request_body: None,
    };
    Arc::new(RouteTable::new(&[
        route("users", "/users", UserMode::Required),
        route("app", "/", UserMode::Off),
    ]))
}

#[tokio::test]
async fn sanitize_makes_the_request_canonical_or_refuses_it() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CheckLayer(sanitize::Sanitize::default()).layer(inner(&calls));
    let (req, ctx) = request("/a/./b/../c", "App.Internal.:8443", CLIENT);
    assert_eq!(call(&mut svc, req).await.unwrap(), StatusCode::OK);
    let c = ctx.canonical().unwrap();
    assert_eq!(c.authority.value(), "app.internal:8443");
    assert_eq!(ctx.path.get().map(String::as_str), Some("/a/c"));

    let (mut req, _) = request("/", "app.internal", CLIENT);
    req.headers_mut()
        .append(header::HOST, HeaderValue::from_static("admin.internal"));
    let err = call(&mut svc, req).await.unwrap_err();
    assert!(
        matches!(err, ProxyError::BadRequest(BadRequest::HostDuplicate)),
        "{err}"
    );
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn route_records_the_match_or_refuses_with_404_and_421() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CheckLayer(route::Route::new(routes(), true)).layer(inner(&calls));
    let (mut req, ctx) = request("/orders", "app.internal", CLIENT);
    canonical(&mut req);
    assert_eq!(call(&mut svc, req).await.unwrap(), StatusCode::OK);
    assert_eq!(ctx.route.get().copied(), Some(1));

    // The client named app.internal in SNI; a request for another host on that connection is
    // misdirected, and a host no route serves is not found.
    for (host, want) in [
        ("other.internal", StatusCode::MISDIRECTED_REQUEST),
        ("app.internal.evil", StatusCode::MISDIRECTED_REQUEST),
    ] {
        let (mut req, _) = request("/x", host, CLIENT);
        canonical(&mut req);
        assert_eq!(call(&mut svc, req).await.unwrap_err().status(), want, "{host}");
    }
    let mut no_sni = CheckLayer(route::Route::new(routes(), false)).layer(inner(&calls));
    let (mut req, _) = request("/x", "nowhere.internal", CLIENT);
    canonical(&mut req);
    let err = call(&mut no_sni, req).await.unwrap_err();
    assert!(matches!(err, ProxyError::NoRoute { .. }), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A request after sanitize and route, judged as `spiffe`.
fn routed(path: &str, spiffe: &str) -> Request<()> {
    let (mut req, ctx) = request(path, "app.internal", spiffe);
    canonical(&mut req);
    let route = routes().find(Some("app.internal"), path).unwrap();
    ctx.route.set(route).unwrap();
    req
}

#[tokio::test]
async fn policy_allows_by_rule_and_denies_with_the_rule_that_decided() {
    let text = include_str!("../../config/policy.toml");
    let policy = Policy::from_toml(std::path::Path::new("policy.toml"), text).unwrap();
    let metrics = super::metrics::RequestMetrics::register(routes().names());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc =
        CheckLayer(policy::PolicyCheck::new(PolicyStore::new(policy), routes(), metrics)).layer(inner(&calls));
    assert_eq!(call(&mut svc, routed("/orders", CLIENT)).await.unwrap(), StatusCode::OK);
    let err = call(&mut svc, routed("/admin/users", CLIENT)).await.unwrap_err();
    let ProxyError::Denied { rule, reason } = &err else {
        panic!("expected a denial, got {err}");
    };
    assert_eq!(rule.as_deref(), Some("admin-area-only-for-ops"));
    assert_eq!(*reason, "denied-by-rule");
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
    // An identity no rule names is denied by default.
    let err = call(&mut svc, routed("/orders", "spiffe://ztgate.dev/ns/x/sa/stranger"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProxyError::Denied {
                rule: None,
                reason: "no-allow-rule"
            }
        ),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn rate_limit_lets_the_burst_through_then_answers_429_with_retry_after() {
    let rate = Rate {
        per_second: NonZeroU32::new(1).unwrap(),
        burst: NonZeroU32::new(2).unwrap(),
    };
    let limits = Arc::new(Limits::new(Some(rate), &[None, None], None));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CheckLayer(ratelimit::RateLimit::new(limits)).layer(inner(&calls));
    for _ in 0..2 {
        assert_eq!(call(&mut svc, routed("/orders", CLIENT)).await.unwrap(), StatusCode::OK);
    }
    let err = call(&mut svc, routed("/orders", CLIENT)).await.unwrap_err();
    assert!(matches!(err, ProxyError::RateLimited { retry_after_secs: 1 }), "{err}");
    let resp = err.to_response(&HeaderValue::from_static("id"));
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    // Another identity has its own budget.
    assert_eq!(
        call(&mut svc, routed("/orders", "spiffe://ztgate.dev/ns/x/sa/other"))
            .await
            .unwrap(),
        StatusCode::OK
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn user_check_passes_routes_without_users_and_answers_401_without_a_bearer_token() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.public_key_raw());
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","alg":"EdDSA","x":"{x}"}}]}}"#),
    )
    .unwrap();
    let auth = crate::user::UserAuth::load(&crate::user::UserAuthConfig {
        jwks: crate::jwt::JwksSource::File(jwks),
        issuer: "https://idp.example".into(),
        audience: "ztgate".into(),
        algorithms: vec![jsonwebtoken::Algorithm::EdDSA],
        require_binding: false,
    })
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CheckLayer(user::UserCheck::new(Some(Arc::new(auth)), routes())).layer(inner(&calls));
    assert_eq!(call(&mut svc, routed("/orders", CLIENT)).await.unwrap(), StatusCode::OK);
    let err = call(&mut svc, routed("/users/1", CLIENT)).await.unwrap_err();
    assert!(
        matches!(err, ProxyError::Unauthenticated(crate::user::UserError::Missing)),
        "{err}"
    );
    let resp = err.to_response(&HeaderValue::from_static("id"));
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer realm=\"ztgate\"");
    let mut basic = routed("/users/1", CLIENT);
    basic
        .headers_mut()
        .insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dTpw"));
    let err = call(&mut svc, basic).await.unwrap_err();
    assert!(
        matches!(err, ProxyError::Unauthenticated(crate::user::UserError::NotBearer)),
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn user_check_fails_closed_when_a_route_needs_users_and_none_are_configured() {
    let calls = Arc::new(AtomicUsize::new(0));
    // No `[user_auth]`: a route that needs users fails closed (500), one that does not passes.
    let mut svc = CheckLayer(user::UserCheck::new(None, routes())).layer(inner(&calls));
    assert_eq!(call(&mut svc, routed("/orders", CLIENT)).await.unwrap(), StatusCode::OK);
    let err = call(&mut svc, routed("/users/1", CLIENT)).await.unwrap_err();
    assert!(matches!(err, ProxyError::Internal(_)), "{err}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn trusted_hop_ignores_other_clients_and_refuses_two_forwarded_certificates() {
    let dir = tempfile::tempdir().unwrap();
    crate::pki::write_dev_pki(dir.path(), false).unwrap();
    let tls = crate::tls::TlsConfig {
        cert: dir.path().join("server.pem"),
        key: dir.path().join("server-key.pem"),
        client_ca: dir.path().join("ca.pem"),
        crls: vec![],
        crl_sources: vec![],
        crl_fetch_interval: Duration::from_secs(3600),
        crl_scope: crate::tls::CrlScope::Chain,
        crl_discovery: crate::tls::RevocationMode::Off,
        ocsp: crate::tls::RevocationMode::Off,
        ocsp_responder: None,
        revocation_timeout: Duration::from_secs(1),
        reload_interval: Duration::from_secs(1),
        profile: crate::tls::profile::ProfileConfig::default(),
    };
    let tls = Arc::new(arc_swap::ArcSwap::from_pointee(crate::tls::server_tls(&tls).unwrap()));
    let hop_id = "spiffe://ztgate.dev/ns/edge/sa/front";
    let cfg = TrustedHopConfig {
        spiffe_ids: vec![hop_id.into()],
        fingerprints: vec![],
        cache_entries: 0,
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = CheckLayer(hop::TrustedHop::new(Some(cfg), tls)).layer(inner(&calls));
    // A client that is not a trusted hop: its XFCC is left for sanitize to strip, and the
    // request is judged as the client itself.
    let (mut req, ctx) = request("/", "app.internal", CLIENT);
    req.headers_mut()
        .insert("x-forwarded-client-cert", HeaderValue::from_static("Hash=ab"));
    assert_eq!(call(&mut svc, req).await.unwrap(), StatusCode::OK);
    assert!(ctx.forwarded.get().is_none());
    assert_eq!(ctx.peer().identity.spiffe_id.as_ref().map(|s| s.as_str()), Some(CLIENT));
    // The trusted hop forwarding two client certificates: ambiguous, refused.
    let (mut req, ctx) = request("/", "app.internal", hop_id);
    for v in ["Hash=ab", "Hash=cd"] {
        req.headers_mut()
            .append("x-forwarded-client-cert", HeaderValue::from_static(v));
    }
    let err = call(&mut svc, req).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProxyError::Denied {
                reason: "forwarded-cert-invalid",
                ..
            }
        ),
        "{err}"
    );
    assert!(ctx.forwarded.get().is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn every_layer_fails_closed_without_a_request_context() {
    let calls = Arc::new(AtomicUsize::new(0));
    let bare = || {
        let mut req = Request::builder().uri("/").body(()).unwrap();
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("app.internal"));
        req
    };
    let limits = Arc::new(Limits::new(
        Some(Rate {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(1).unwrap(),
        }),
        &[],
        None,
    ));
    let errs = [
        call(
            &mut CheckLayer(sanitize::Sanitize::default()).layer(inner(&calls)),
            bare(),
        )
        .await,
        call(
            &mut CheckLayer(route::Route::new(routes(), false)).layer(inner(&calls)),
            bare(),
        )
        .await,
        call(
            &mut CheckLayer(ratelimit::RateLimit::new(limits)).layer(inner(&calls)),
            bare(),
        )
        .await,
        call(
            &mut CheckLayer(user::UserCheck::new(None, routes())).layer(inner(&calls)),
            bare(),
        )
        .await,
    ];
    for e in errs {
        let e = e.unwrap_err();
        assert!(matches!(e, ProxyError::Internal(_)), "{e}");
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// The observing layer over `inner`, with an audit log in `dir` (durable: each response waits for
/// its record, so the file is complete when the call returns).
fn observed<S>(inner: S, dir: &std::path::Path) -> (super::observe::Observe<S>, crate::audit::AuditTask) {
    use crate::audit::{AuditConfig, Auditor, Fsync, OnFull, RespondAfter, SinkConfig};
    let (auditor, task) = Auditor::start(&AuditConfig {
        sink: SinkConfig::File {
            path: dir.join("audit.log"),
            max_bytes: u64::MAX,
            keep: 1,
        },
        fsync: Fsync::Batch,
        on_full: OnFull::Block,
        respond_after: RespondAfter::Durable,
        queue: 16,
        checkpoint: None,
    })
    .unwrap();
    let routes = routes();
    let metrics = super::metrics::RequestMetrics::register(["users", "app"].into_iter());
    let audit = super::audit::AuditSetup::new(auditor, routes, Arc::from(vec!["app".to_string()]));
    (
        super::observe::ObserveLayer::new(metrics, audit, None).layer(inner),
        task,
    )
}

fn audit_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn observe_answers_every_request_with_its_id_and_records_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    // Allows /ok, denies anything else, like the checks inside would.
    let inner = service_fn(move |req: Request<()>| {
        let id = RequestCtx::of(&req).unwrap().id.as_str().to_string();
        seen2.lock().unwrap().push(id);
        let path = req.uri().path().to_string();
        async move {
            if path == "/ok" {
                Ok(Response::new(Either::Right(Full::new(Bytes::from_static(b"ok")))))
            } else {
                Err(ProxyError::Denied {
                    rule: Some("no-such-rule".into()),
                    reason: "no_rule_matched",
                })
            }
        }
    });
    let (mut svc, task) = observed(inner, dir.path());
    let mut ids = Vec::new();
    for path in ["/ok", "/nope"] {
        let mut req = Request::builder().uri(path).body(()).unwrap();
        req.extensions_mut().insert(conn(CLIENT));
        let resp = svc.ready().await.unwrap().call(req).await.unwrap();
        let id = resp.headers()[crate::headers::X_REQUEST_ID]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 32);
        ids.push((resp.status(), id));
    }
    assert_eq!(ids[0].0, StatusCode::OK);
    assert_eq!(ids[1].0, StatusCode::FORBIDDEN);
    // The checks saw the same id the client got.
    assert_eq!(*seen.lock().unwrap(), vec![ids[0].1.clone(), ids[1].1.clone()]);
    drop(svc);
    assert!(task.finish(Duration::from_secs(5)).await.complete());
    let records = audit_lines(dir.path());
    assert_eq!(records.len(), 2, "one record per request: {records:?}");
    assert_eq!(records[0]["request_id"], ids[0].1.as_str());
    assert_eq!(records[0]["decision"], "allow");
    assert_eq!(records[0]["status"], 200);
    assert_eq!(records[1]["request_id"], ids[1].1.as_str());
    assert_eq!(records[1]["decision"], "deny");
    assert_eq!(records[1]["rule"], "no-such-rule");
    assert_eq!(records[1]["status"], 403);
}

#[tokio::test]
async fn observe_fails_closed_without_a_connection_context() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let (mut svc, task) = observed(inner(&calls), dir.path());
    let req = Request::builder().uri("/").body(()).unwrap();
    let resp = svc.ready().await.unwrap().call(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(resp.headers()[crate::headers::X_REQUEST_ID].len(), 32);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    drop(svc);
    assert!(task.finish(Duration::from_secs(5)).await.complete());
}

/// A check that counts its calls and passes or refuses as told.
#[derive(Clone)]
struct Counting(Arc<AtomicUsize>, bool);

impl Check for Counting {
    fn check<B>(&self, _req: &mut Request<B>) -> Result<(), ProxyError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        if self.1 {
            Ok(())
        } else {
            Err(ProxyError::Internal("refused by the test check"))
        }
    }
}

#[tokio::test]
async fn chained_checks_run_in_order_and_stop_at_the_first_refusal() {
    let (a, b, calls) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut pass = CheckLayer((Counting(a.clone(), true), Counting(b.clone(), true))).layer(inner(&calls));
    assert_eq!(
        call(&mut pass, request("/", "app.internal", CLIENT).0).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(
        (
            a.load(Ordering::SeqCst),
            b.load(Ordering::SeqCst),
            calls.load(Ordering::SeqCst)
        ),
        (1, 1, 1)
    );
    let mut refuse = CheckLayer((Counting(a.clone(), false), Counting(b.clone(), true))).layer(inner(&calls));
    let err = call(&mut refuse, request("/", "app.internal", CLIENT).0)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        ProxyError::Internal("refused by the test check").to_string()
    );
    // The refusal ends the chain: the second check and the inner service never ran.
    assert_eq!(
        (
            a.load(Ordering::SeqCst),
            b.load(Ordering::SeqCst),
            calls.load(Ordering::SeqCst)
        ),
        (2, 1, 1)
    );
}
