//! Wiring: load TLS and policy, build the stack, bind, serve, drain.

pub mod admin;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::audit::Auditor;
use crate::config::Config;
use crate::middleware;
use crate::middleware::forward::{Forward, ForwardSettings};
use crate::policy::PolicyStore;
use crate::policy::{Policy, PolicyError};
use crate::reload;
use crate::server::{self, RuntimeModel, Server};
use crate::telemetry::{self, metrics};
use crate::tls::{self, TlsError};
use crate::upstream::{RouteTable, Upstreams};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Audit(#[from] crate::audit::StartError),
    /// Shutdown: records that did not reach the audit sink (the process exits non-zero).
    #[error(
        "{} audit record(s) were not written to the audit log: {} written to standard error instead, {} lost{}",
        .0.diverted + .0.lost,
        .0.diverted,
        .0.lost,
        if .0.finished { "" } else { "; the writer did not finish, so what it held is unknown" }
    )]
    AuditIncomplete(crate::audit::Delivery),
    #[error("initial CRL download failed (the CRL file does not exist yet, so ztgate cannot start): {0}")]
    CrlFetch(#[from] crate::tls::CrlFetchError),
    #[error("{0}")]
    Posture(#[from] crate::posture::PostureError),
    #[error("{0}")]
    ClusterLimit(#[from] crate::cluster_limit::ClusterLimitError),
    #[error("user tokens: {0}")]
    UserJwks(#[from] crate::user::UserAuthError),
    #[error(
        "policy {0} states posture requirements but the config has no [posture] provider (every such rule would deny)"
    )]
    PostureNotConfigured(std::path::PathBuf),
    #[error("{0}")]
    Workers(#[from] server::WorkerError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl AppError {
    /// The file a start-up error is about, when it is about one file the config names.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.file().map(|(path, _)| path)
    }

    /// The file a start-up error is about, and the config keys (as [`crate::config::FileRef::key`]
    /// names them) that can name it there: the same file may be named by several keys, and the
    /// error belongs to one of these. Empty: any key naming the file.
    pub fn file(&self) -> Option<(&std::path::Path, &'static [&'static str])> {
        use crate::posture::PostureError;
        use crate::user::UserAuthError;
        match self {
            AppError::Tls(e) => Some((e.path(), &[])),
            AppError::Posture(PostureError::Inventory { path, .. }) => Some((path, &["[posture] file"])),
            AppError::Posture(PostureError::Tls(e)) => Some((
                e.path(),
                &[
                    "[posture] ca",
                    "[posture] client_cert",
                    "[posture] client_key",
                    "[posture] jwks_ca",
                ],
            )),
            AppError::Posture(PostureError::Jwks(e)) => Some((&e.path, &["[posture] jwks"])),
            AppError::UserJwks(UserAuthError::Jwks(e)) => Some((&e.path, &["[user_auth] jwks"])),
            AppError::UserJwks(UserAuthError::Tls(e)) => Some((e.path(), &["[user_auth] jwks_ca"])),
            _ => None,
        }
    }
}

/// Logs the config's warnings once, at start (`ztgate check` prints them instead).
pub fn log_config_warnings(cfg: &Config) {
    for w in &cfg.warnings {
        warn!(
            config = %cfg.source.display(),
            line = w.line,
            col = w.col,
            "{}",
            w.message
        );
    }
}

/// The sockets ztgate serves on. The caller binds them, so tests can use `127.0.0.1:0`.
pub struct Listeners {
    /// The mTLS listener: one socket, or with `runtime = "per-core"` one per worker, all bound to
    /// the same address with `SO_REUSEPORT` ([`bind_proxy`]).
    pub proxy: Vec<TcpListener>,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(cfg: &Config) -> Result<Self, AppError> {
        let proxy = bind_proxy(&cfg.listener).await?;
        let admin = match &cfg.admin {
            Some(a) => Some(bind(a.address, "admin listener").await?),
            None => None,
        };
        Ok(Self { proxy, admin })
    }
}

/// The mTLS listener's sockets as `[listener]` asks: one for `runtime = "shared"`, `workers` of
/// them sharing the address with `SO_REUSEPORT` for `"per-core"` (port 0: the port the first got).
pub async fn bind_proxy(l: &crate::server::ListenerConfig) -> Result<Vec<TcpListener>, AppError> {
    let addr = l.address;
    match l.runtime {
        RuntimeModel::Shared => Ok(vec![bind(addr, "mTLS listener").await?]),
        RuntimeModel::PerCore => server::bind_reuseport(addr, l.workers)
            .await
            .map_err(|source| AppError::Bind {
                addr,
                // The same words as the shared runtime's: a port another process holds is
                // refused by the probe bind, not by SO_REUSEPORT.
                what: "mTLS listener",
                source,
            }),
    }
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, what, source })
}

/// The loaded state of a config: the server and the live policy it reads.
pub struct Prepared {
    pub server: Arc<Server>,
    pub policy: Arc<PolicyStore>,
    pub limits: Arc<crate::ratelimit::Limits>,
    /// `[cluster_rate_limit]`, pruned with `limits`.
    pub cluster_limit: Option<Arc<crate::cluster_limit::ClusterLimiter>>,
    /// Posture and user-token files to watch for changes.
    pub reloadables: Vec<crate::posture::Reloadable>,
}

/// Loads everything the data path needs: TLS material, policy, upstream clients. Used by `run`
/// and by `check`, so that `check` fails exactly when `run` would.
pub fn prepare(cfg: &Config, auditor: Auditor) -> Result<Prepared, Vec<AppError>> {
    let detector = cfg.anomaly.clone().map(|a| Arc::new(crate::anomaly::Detector::new(a)));
    let mut errors = Vec::new();
    let tls = tls::server_tls(&cfg.tls).map_err(|e| errors.push(e.into())).ok();
    let policy = Policy::load(&cfg.policy.file).map_err(|e| errors.push(e.into())).ok();
    let routes = Arc::new(RouteTable::new(&cfg.routes));
    // A pool per per-core worker, so each worker's pooled requests stay on its own thread.
    let pools = match cfg.listener.runtime {
        RuntimeModel::PerCore => cfg.listener.workers,
        RuntimeModel::Shared => std::num::NonZeroUsize::MIN,
    };
    let forward = Upstreams::new(&cfg.upstreams, pools)
        .map(|upstreams| {
            let settings = ForwardSettings {
                max_request_body: cfg.listener.max_request_body,
                request_timeout: cfg.listener.request_timeout,
                set_forwarded: cfg.headers.forwarded,
            };
            Forward::new(upstreams, routes.clone(), settings)
        })
        .map_err(|e| errors.push(e.into()))
        .ok();
    let posture = cfg
        .posture
        .as_ref()
        .map(|p| crate::posture::build(p).map(|b| (b, p.device_id)))
        .transpose()
        .map_err(|e| errors.push(e.into()))
        .ok();
    let user_auth = cfg
        .user_auth
        .as_ref()
        .map(|u| crate::user::UserAuth::load(u).map(Arc::new))
        .transpose()
        .map_err(|e| errors.push(e.into()))
        .ok();
    let cluster_limit = cfg
        .cluster_rate_limit
        .as_ref()
        .map(|c| {
            crate::cluster_limit::ClusterLimiter::new(
                c,
                cfg.rate_limit,
                &routes.rate_limits(),
                &routes.names().collect::<Vec<_>>(),
            )
            .map(Arc::new)
        })
        .transpose()
        .map_err(|e| errors.push(e.into()))
        .ok();
    // Rules with posture requirements and no provider would deny every request they cover:
    // refuse to start rather than let the operator find out from 403s.
    if let Some(p) = &policy
        && p.uses_posture()
        && cfg.posture.is_none()
    {
        errors.push(AppError::PostureNotConfigured(p.source.clone()));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    match (tls, policy, forward, posture, user_auth, cluster_limit) {
        (Some(tls), Some(policy), Some(forward), Some(posture), Some(user_auth), Some(cluster_limit)) => {
            let tls = Arc::new(arc_swap::ArcSwap::from_pointee(tls));
            let mut reloadables = Vec::new();
            let posture = posture.map(|(built, device_id)| {
                reloadables.extend(built.reloadable);
                middleware::posture::PostureSetup {
                    provider: built.provider,
                    device_id,
                    consumed_header: built.consumed_header,
                }
            });
            if let Some(u) = &user_auth {
                reloadables.push(crate::posture::Reloadable::User(u.clone()));
            }
            let policy = PolicyStore::new(policy);
            let request_metrics = crate::middleware::metrics::RequestMetrics::register(routes.names());
            let penalty = cfg.anomaly.as_ref().and_then(|a| a.tighten.map(|(rate, _)| rate));
            let limits = Arc::new(crate::ratelimit::Limits::new(
                cfg.rate_limit,
                &routes.rate_limits(),
                penalty,
            ));
            let stack = middleware::stack(middleware::Parts {
                policy: policy.clone(),
                routes,
                forward,
                metrics: request_metrics,
                require_sni_match: cfg.listener.require_sni_match,
                auditor: auditor.clone(),
                upstream_names: cfg.upstreams.iter().map(|u| u.name.clone()).collect(),
                detector: detector.clone(),
                limits: limits.clone(),
                cluster_limit: cluster_limit.clone(),
                posture,
                user_auth,
                trusted_hop: cfg.trusted_hop.clone(),
                headers: Arc::new(cfg.headers.clone()),
                tls: tls.clone(),
            });
            Ok(Prepared {
                server: Server::new(
                    cfg.listener.clone(),
                    tls,
                    stack,
                    auditor,
                    detector,
                    cfg.drain_timeout,
                    crate::tls::revocation::Revocation::new(&cfg.tls),
                ),
                policy,
                limits,
                cluster_limit,
                reloadables,
            })
        }
        _ => Err(errors),
    }
}

/// Bound on one CRL download (connect, request, body).
const CRL_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs ztgate on bound listeners until `shutdown` completes, then drains.
pub async fn serve(cfg: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) -> Result<(), Vec<AppError>> {
    let handle = metrics::install();
    metrics::zero(
        metrics::BAD_REQUESTS_TOTAL,
        "reason",
        crate::error::BadRequest::ALL.map(crate::error::BadRequest::code),
    );
    metrics::zero(
        metrics::TLS_HANDSHAKES_TOTAL,
        "result",
        crate::tls::profile::Rule::ALL.map(crate::tls::profile::Rule::reason),
    );
    metrics::zero(
        metrics::ANOMALIES_TOTAL,
        "kind",
        crate::anomaly::Kind::ALL.map(crate::anomaly::Kind::as_str),
    );
    // A fetched CRL whose file does not exist yet is downloaded before anything else: without
    // it the listener cannot verify revocation, and ztgate does not start without that.
    let fetcher = Arc::new(crate::tls::CrlFetcher::new(
        cfg.tls.client_ca.clone(),
        CRL_FETCH_TIMEOUT,
    ));
    for src in cfg.tls.crl_sources.iter().filter(|s| !s.file.exists()) {
        fetcher.fetch(src).await.map_err(|e| vec![AppError::CrlFetch(e)])?;
        info!(url = %src.url, file = %src.file.display(), "initial CRL downloaded");
    }
    let (auditor, audit_task) = match &cfg.audit {
        Some(a) => {
            let (auditor, task) = Auditor::start(a).map_err(|e| vec![AppError::Audit(e)])?;
            (auditor, Some(task))
        }
        None => {
            warn!("no [audit] table in the config: decisions are not audited");
            (Auditor::disabled(), None)
        }
    };
    let Prepared {
        server,
        policy,
        limits,
        cluster_limit,
        reloadables,
    } = prepare(&cfg, auditor.clone())?;
    let posture_interval = match cfg.posture.as_ref().map(|p| &p.provider) {
        Some(crate::posture::ProviderConfig::Inventory { reload_interval, .. }) => *reload_interval,
        _ => std::time::Duration::from_secs(5),
    };
    let ready = admin::Readiness::default();
    let (stop_admin, admin_stopped) = watch::channel(false);
    // Fetched key sets: one refresher each, started before the listener so that the first fetch
    // is under way when the first token arrives. Until it succeeds, tokens are refused and
    // /readyz says not ready; start-up does not wait for the IdP.
    let (remote_keys, reloadables): (Vec<_>, Vec<_>) =
        reloadables.into_iter().partition(|item| item.remote_jwks().is_some());
    ready.require_key_sets(remote_keys.iter().filter_map(|i| i.remote_jwks()).collect());
    let jwks_tasks: Vec<_> = remote_keys
        .into_iter()
        .filter_map(|item| {
            let jwks = item.remote_jwks()?;
            let mut rx = admin_stopped.clone();
            Some(tokio::spawn(async move {
                jwks.refresh(|| item.clear_cache(), async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await;
            }))
        })
        .collect();
    let admin_task = listeners.admin.map(|l| {
        let mut rx = admin_stopped.clone();
        tokio::spawn(admin::serve(l, handle, ready.clone(), auditor.clone(), async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }))
    });
    let proxy_addr = listeners
        .proxy
        .first()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| cfg.listener.address.to_string(), |a| a.to_string());
    ready.set(true);
    info!(listen = %proxy_addr, admin = %cfg.admin.as_ref().map_or_else(|| "off".to_string(), |a| a.address.to_string()), policy = %cfg.policy.file.display(), "ztgate ready");
    let shutdown = {
        let ready = ready.clone();
        async move {
            shutdown.await;
            // Load balancers see "not ready" at once and stop sending new connections.
            ready.set(false);
        }
    };
    let reload_task = {
        let mut rx = admin_stopped.clone();
        tokio::spawn(reload::watch_policy(
            policy.clone(),
            cfg.policy.file.clone(),
            cfg.policy.reload_interval,
            server.clone(),
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            },
        ))
    };
    let tls_reload_task = {
        let mut rx = admin_stopped.clone();
        tokio::spawn(reload::watch_tls(server.clone(), cfg.tls.clone(), async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }))
    };
    let posture_tasks: Vec<_> = reloadables
        .into_iter()
        .map(|item| {
            let mut rx = admin_stopped.clone();
            tokio::spawn(reload::watch_posture(item, posture_interval, async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }))
        })
        .collect();
    let crl_fetch_task = (!cfg.tls.crl_sources.is_empty()).then(|| {
        let mut rx = admin_stopped.clone();
        tokio::spawn(reload::fetch_crls(
            fetcher,
            cfg.tls.crl_sources.clone(),
            cfg.tls.crl_fetch_interval,
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            },
        ))
    });
    let revocation_task = server.revocation.clone().and_then(|rev| {
        // Only distribution-point CRLs are refreshed in the background; OCSP answers are asked
        // again when they run out and a connection needs them.
        (cfg.tls.crl_discovery != crate::config::RevocationMode::Off).then(|| {
            let mut rx = admin_stopped.clone();
            tokio::spawn(reload::refresh_distribution_points(
                rev,
                server.clone(),
                cfg.tls.crl_fetch_interval,
                async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                },
            ))
        })
    });
    let expiry_task = {
        let mut rx = admin_stopped.clone();
        let policy_for_prune = policy.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                                        _ = tick.tick() => {
                        tls::export_expiry(&server.tls.load().expiry);
                        if let Some(rev) = &server.revocation {
                            tls::export_expiry(&rev.expiry());
                        }
                        // Idle identities' buckets are full again: forget them (bounded memory).
                        limits.prune();
                        if let Some(c) = &cluster_limit {
                            c.prune();
                        }
                        policy_for_prune.load().prune_limits();
                        crate::telemetry::loglimit::summarize();
                    }
                    _ = rx.wait_for(|stop| *stop) => break,
                }
            }
        })
    };
    let served = serve_proxy(&cfg, listeners.proxy, server, shutdown).await;
    let _ = stop_admin.send(true);
    let _ = reload_task.await;
    let _ = tls_reload_task.await;
    if let Some(t) = crl_fetch_task {
        let _ = t.await;
    }
    if let Some(t) = revocation_task {
        let _ = t.await;
    }
    for t in posture_tasks.into_iter().chain(jwks_tasks) {
        let _ = t.await;
    }
    let _ = expiry_task.await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    served.map_err(|e| vec![e])?;
    // Every clone of the auditor held by the server and its tasks is gone with them; records of
    // anything still running reach the writer or, once it has stopped, standard error.
    drop(auditor);
    if let Some(t) = audit_task {
        let delivery = t.finish(cfg.drain_timeout).await;
        if !delivery.complete() {
            let e = AppError::AuditIncomplete(delivery);
            tracing::error!("{e}");
            return Err(vec![e]);
        }
    }
    Ok(())
}

/// The mTLS listener's accept loops, on the runtime model `[listener] runtime` names, until
/// `shutdown`; then the drain. `shared`: a loop per socket on the current runtime (normally one
/// socket). `per-core`: a thread with its own runtime per socket.
async fn serve_proxy(
    cfg: &Config,
    proxy: Vec<TcpListener>,
    server: Arc<Server>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    let drain = cfg.drain_timeout;
    match cfg.listener.runtime {
        // Normally one socket; the loops run as tasks of this runtime.
        RuntimeModel::Shared => server::serve_here(proxy, server, drain, shutdown).await,
        RuntimeModel::PerCore => server::serve_per_core(proxy, server, drain, shutdown).await?,
    }
    Ok(())
}

/// `ztgate run`: bind, serve until SIGTERM/SIGINT, drain.
pub async fn run(cfg: Config) -> Result<(), Vec<AppError>> {
    telemetry::init_logging(cfg.log.format, &cfg.log.level);
    log_config_warnings(&cfg);
    let listeners = Listeners::bind(&cfg).await.map_err(|e| vec![e])?;
    serve(cfg, listeners, server::shutdown::signal()).await
}

/// A request described on the command line, for `ztgate explain`.
pub struct ExplainRequest {
    pub cert: std::path::PathBuf,
    pub method: String,
    pub url: String,
    pub source_ip: std::net::IpAddr,
    /// `name: value` pairs.
    pub headers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("cannot read the client certificate {path}: {reason}")]
    Cert { path: std::path::PathBuf, reason: String },
    #[error("invalid request: {0}")]
    Request(String),
}

/// What the TLS handshake would say of the certificate `explain` was given.
#[derive(serde::Serialize)]
struct Handshake {
    /// Whether the listener's verifier (client CA, CRL files, profile) accepts it now. Online
    /// revocation (`crl_discovery`, `ocsp`) needs the network and is not asked.
    accepted: bool,
    /// `ok`, or the handshake failure reason (docs/metrics.md), e.g. `bad_eku`, `expired`.
    reason: &'static str,
    /// rustls' message when refused.
    detail: Option<String>,
}

impl Handshake {
    fn text(&self) -> String {
        match &self.detail {
            None => "accepted".to_string(),
            Some(d) => format!(
                "REFUSED ({}: {d}): a client with this certificate never reaches the policy",
                self.reason
            ),
        }
    }
}

/// `ztgate explain`: what the data path would answer, step by step (normalise, route, policy),
/// as text or JSON.
pub fn explain(cfg: &Config, req: &ExplainRequest, json: bool) -> Result<String, ExplainError> {
    use crate::identity::PeerIdentity;
    use crate::policy::{RequestFacts, path};

    let policy = Policy::load(&cfg.policy.file)?;
    let chain = tls::load_certs(&req.cert)?;
    let der = chain.first().cloned().ok_or_else(|| ExplainError::Cert {
        path: req.cert.clone(),
        reason: "no certificate in file".into(),
    })?;
    // What the handshake would say of this certificate (and the intermediates in the file) now:
    // the listener's own verifier, with the configured client CA, CRLs and profile.
    let handshake = match tls::server_tls(&cfg.tls)?.still_trusted(&chain) {
        Ok(()) => Handshake {
            accepted: true,
            reason: "ok",
            detail: None,
        },
        Err(e) => Handshake {
            accepted: false,
            reason: tls::verification_failure_reason(&e),
            detail: Some(e.to_string()),
        },
    };
    let peer = PeerIdentity::from_der(&der).map_err(|e| ExplainError::Cert {
        path: req.cert.clone(),
        reason: e.to_string(),
    })?;
    let method = http::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| ExplainError::Request(format!("invalid method `{}`", req.method)))?;
    let uri: http::Uri = req
        .url
        .parse()
        .map_err(|e| ExplainError::Request(format!("invalid URL `{}`: {e}", req.url)))?;
    // The same canonical authority and path the proxy derives (src/canonical.rs).
    let host = uri
        .authority()
        .map(|a| crate::canonical::CanonicalAuthority::parse(a.as_str().as_bytes()))
        .transpose()
        .map_err(|e| ExplainError::Request(format!("URL `{}`: {e}", req.url)))?
        .map(|a| a.host().to_string());
    let mut headers = http::HeaderMap::new();
    for h in &req.headers {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| ExplainError::Request(format!("header `{h}` must be `name: value`")))?;
        let name = http::HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| ExplainError::Request(format!("invalid header name `{n}`")))?;
        let value = http::HeaderValue::from_str(v.trim())
            .map_err(|_| ExplainError::Request(format!("invalid header value in `{h}`")))?;
        headers.append(name, value);
    }

    let identity = peer.display_name().to_string();
    let issuer = peer.issuer.clone();
    let head_text = format!(
        "identity: {identity}\nissuer:   {issuer}\nhandshake: {}\n",
        handshake.text()
    );
    let early = |status: u16, why: String| -> String {
        if json {
            serde_json::json!({
                "identity": identity, "issuer": issuer, "handshake": handshake,
                "status": status, "error": why,
            })
            .to_string()
        } else {
            format!("{head_text}decision: {why}\n")
        }
    };
    let path = match path::normalize(uri.path()) {
        Ok(p) => p.into_owned(),
        Err(e) => return Ok(early(400, format!("400 bad request ({e})"))),
    };
    let without = match path::without_parameters(&path) {
        Ok(p) => p,
        Err(e) => return Ok(early(400, format!("400 bad request ({e})"))),
    };
    let had_parameters = without.is_some();
    let path = without.unwrap_or(path);
    let routes = RouteTable::new(&cfg.routes);
    let Some(route) = routes.find(host.as_deref(), &path).and_then(|i| routes.get(i)) else {
        return Ok(early(
            404,
            format!("404 no route for host {:?} path {path}", host.unwrap_or_default()),
        ));
    };
    if had_parameters && route.path_parameters == path::PathParameters::Refuse {
        return Ok(early(
            400,
            format!(
                "400 bad request (';' path parameter; route {} does not allow them)",
                route.name
            ),
        ));
    }
    let facts = RequestFacts {
        peer: &peer,
        method: &method,
        path: &path,
        host: host.as_deref(),
        route: Some(&route.name),
        headers: &headers,
        source_ip: req.source_ip,
        // `explain` has no device or user: posture requirements show as unavailable and user
        // conditions as unmet.
        posture: None,
        user: None,
    };
    let explanation = policy.explain(&facts);
    let status = if explanation.decision.allowed { 200 } else { 403 };
    if json {
        let out = serde_json::json!({
            "identity": identity,
            "issuer": issuer,
            "handshake": handshake,
            "request": { "method": method.as_str(), "host": host, "path": path, "route": route.name },
            "status": status,
            "decision": explanation.decision,
            "rules": explanation.rules,
        });
        return Ok(serde_json::to_string_pretty(&out).unwrap_or_default() + "\n");
    }
    let head = format!(
        "{head_text}request:  {method} {} {path} (route {})\n",
        host.as_deref().unwrap_or("-"),
        route.name
    );
    Ok(head + &explanation.render_text())
}
