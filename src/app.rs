//! Wiring: load TLS and policy, build the stack, bind, serve, drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::middleware;
use crate::policy::{Policy, PolicyError};
use crate::reload::{self, PolicyStore};
use crate::server::{self, Server};
use crate::telemetry::{self, admin, metrics};
use crate::tls::{self, TlsError};
use crate::upstream::{Forward, RouteTable};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The sockets ztgate serves on. The caller binds them, so tests can use `127.0.0.1:0`.
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(cfg: &Config) -> Result<Self, AppError> {
        let proxy = bind(cfg.listener.address, "mTLS listener").await?;
        let admin = match &cfg.admin {
            Some(a) => Some(bind(a.address, "admin listener").await?),
            None => None,
        };
        Ok(Self { proxy, admin })
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
}

/// Loads everything the data path needs: TLS material, policy, upstream clients. Used by `run`
/// and by `check`, so that `check` fails exactly when `run` would.
pub fn prepare(cfg: &Config) -> Result<Prepared, Vec<AppError>> {
    let mut errors = Vec::new();
    let tls = tls::server_tls(&cfg.tls).map_err(|e| errors.push(e.into())).ok();
    let policy = Policy::load(&cfg.policy.file).map_err(|e| errors.push(e.into())).ok();
    let routes = Arc::new(RouteTable::new(&cfg.routes));
    let forward = Forward::new(cfg, routes.clone())
        .map_err(|e| errors.push(e.into()))
        .ok();
    match (tls, policy, forward) {
        (Some(tls), Some(policy), Some(forward)) => {
            let policy = PolicyStore::new(policy);
            let stack = middleware::stack(middleware::Parts {
                policy: policy.clone(),
                routes,
                forward,
                metrics: metrics::RequestMetrics::register(),
                require_sni_match: cfg.listener.require_sni_match,
            });
            Ok(Prepared {
                server: Server::new(cfg.listener.clone(), tls, stack),
                policy,
            })
        }
        _ => Err(errors),
    }
}

/// Runs ztgate on bound listeners until `shutdown` completes, then drains.
pub async fn serve(cfg: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) -> Result<(), Vec<AppError>> {
    let handle = metrics::install();
    let Prepared { server, policy } = prepare(&cfg)?;
    let ready = admin::Readiness::default();
    let (stop_admin, admin_stopped) = watch::channel(false);
    let admin_task = listeners.admin.map(|l| {
        let mut rx = admin_stopped.clone();
        tokio::spawn(admin::serve(l, handle, ready.clone(), async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }))
    });
    let proxy_addr = listeners
        .proxy
        .local_addr()
        .map_or_else(|_| cfg.listener.address.to_string(), |a| a.to_string());
    ready.set(true);
    info!(listen = %proxy_addr, admin = ?cfg.admin.as_ref().map(|a| a.address), policy = %cfg.policy.file.display(), "ztgate ready");
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
            policy,
            cfg.policy.file.clone(),
            cfg.policy.reload_interval,
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            },
        ))
    };
    server::serve(listeners.proxy, server, cfg.drain_timeout, shutdown).await;
    let _ = stop_admin.send(true);
    let _ = reload_task.await;
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    Ok(())
}

/// `ztgate run`: bind, serve until SIGTERM/SIGINT, drain.
pub async fn run(cfg: Config) -> Result<(), Vec<AppError>> {
    telemetry::init_logging(cfg.log.format, &cfg.log.level);
    let listeners = Listeners::bind(&cfg).await.map_err(|e| vec![e])?;
    serve(cfg, listeners, server::shutdown::signal()).await
}
