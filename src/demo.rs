//! `ztgate demo`: the dev PKI, a small echo upstream and the proxy on the shipped config, with
//! curl lines to try. The echo upstream is also what the integration tests forward to.

/// `println!` that cannot panic on a closed standard output (`ztgate demo | head`).
macro_rules! println {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

use std::convert::Infallible;
use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::app::{self, Listeners};
use crate::config::Config;
use crate::{pki, server, telemetry};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Pki(#[from] pki::PkiError),
    #[error("cannot start the echo upstream on {addr}: {source} (is something else using the port?)")]
    Upstream {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    App(String),
}

pub async fn run(config_path: &Path) -> Result<(), DemoError> {
    // The files are minted below when missing, so they are not checked here (`serve` loads them).
    let cfg = Config::load_unchecked(config_path)?;
    telemetry::init_logging(cfg.log.format, &cfg.log.level);
    app::log_config_warnings(&cfg);

    let pki_dir = cfg.tls.client_ca.parent().unwrap_or(Path::new(".")).to_path_buf();
    if !cfg.tls.client_ca.exists() {
        pki::write_dev_pki(&pki_dir, false)?;
        println!("minted a dev PKI in {}", shown(&pki_dir).display());
    }
    // A dev PKI minted before `certs dev` made an audit signing key gets one now.
    let signing_key = cfg.audit.as_ref().and_then(|a| a.checkpoint.as_ref()).map(|c| &c.key);
    if let Some(key) = signing_key.filter(|k| !k.exists())
        && key.parent() == Some(pki_dir.as_path())
        && key.file_name() == Some(std::ffi::OsStr::new(pki::DEV_AUDIT_SIGNING_KEY))
    {
        pki::write_audit_signing_key(&pki_dir)?;
        println!("minted a dev audit signing key in {}", shown(&pki_dir).display());
    }

    let upstream_addr = cfg
        .upstreams
        .first()
        .and_then(|u| u.url.authority())
        .map_or_else(|| "127.0.0.1:8080".to_string(), |a| a.as_str().to_string());
    let upstream = TcpListener::bind(&upstream_addr)
        .await
        .map_err(|source| DemoError::Upstream {
            addr: upstream_addr.clone(),
            source,
        })?;
    tokio::spawn(echo_upstream(upstream));

    let listeners = Listeners::bind(&cfg).await.map_err(|e| DemoError::App(e.to_string()))?;
    let port = listeners
        .proxy
        .first()
        .and_then(|l| l.local_addr().ok())
        .map_or(8443, |a| a.port());
    let shown_pki = shown(&pki_dir);
    let d = shown_pki.display();
    println!(
        "\nztgate demo: proxy https://localhost:{port} -> echo upstream http://{upstream_addr}\n\
         \n  # allowed (client identity, policy rule client-app):\n  \
         curl --cacert {d}/ca.pem --cert {d}/client.pem --key {d}/client-key.pem https://localhost:{port}/hello\n\
         \n  # denied with 403 (only the admin identity may use /admin):\n  \
         curl --cacert {d}/ca.pem --cert {d}/client.pem --key {d}/client-key.pem https://localhost:{port}/admin/users\n\
         \n  # allowed for admin:\n  \
         curl --cacert {d}/ca.pem --cert {d}/admin.pem --key {d}/admin-key.pem https://localhost:{port}/admin/users\n\
         \n  # refused during the TLS handshake (no client certificate):\n  \
         curl --cacert {d}/ca.pem https://localhost:{port}/hello\n"
    );
    if let Some(a) = &cfg.admin {
        println!("  # metrics and health:\n  curl http://{}/metrics\n", a.address);
    }
    if let Some(crate::audit::SinkConfig::File { path, .. }) = cfg.audit.as_ref().map(|a| &a.sink) {
        let key = match signing_key {
            Some(_) => format!("--key {d}/{} ", pki::DEV_AUDIT_VERIFY_KEY),
            None => String::new(),
        };
        println!(
            "  # the audit log, and its proof (after Ctrl-C, up to the shutdown checkpoint):
  \
             ztgate audit verify {key}{}\n",
            shown(path).display()
        );
    }
    println!("Ctrl-C stops the demo.\n");
    app::serve(cfg, listeners, server::shutdown::signal())
        .await
        .map_err(|errors| DemoError::App(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")))
}

/// A path for the curl lines printed above: `config/../certs/dev` (the shipped config's paths
/// are relative to its folder) reads `certs/dev`. Display only: `..` after a symlinked folder
/// would mean something else, so ztgate itself opens the path as resolved.
fn shown(p: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// A plain-HTTP upstream that answers every request with what it received: method, path and
/// headers, one per line. `GET /slow/<ms>` waits that long first (for drain demos and tests);
/// `/status/<code>` answers with that status; a WebSocket upgrade (RFC 6455) becomes a real
/// WebSocket that echoes every message; any other upgrade is accepted and echoes raw bytes.
pub async fn echo_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service_fn(echo))
                .await;
        });
    }
}

/// Echoes every text and binary message until the client closes (pings are answered by
/// tungstenite itself).
async fn websocket_echo<S>(io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            break;
        }
    }
}

async fn echo(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if crate::headers::is_upgrade(req.headers())
        && let Some(key) = req.headers().get("sec-websocket-key")
        && req
            .headers()
            .get(http::header::UPGRADE)
            .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
    {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                websocket_echo(TokioIo::new(upgraded)).await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
        h.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        if let Ok(v) = http::HeaderValue::from_str(&accept) {
            h.insert("sec-websocket-accept", v);
        }
        return Ok(resp);
    }
    if crate::headers::is_upgrade(req.headers()) {
        // Accept any other upgrade and echo raw bytes back: enough to show upgrades pass through.
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut rd, &mut wr).await;
            }
        });
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(http::header::CONNECTION, http::HeaderValue::from_static("upgrade"));
        if let Some(proto) = req.headers().get(http::header::UPGRADE) {
            h.insert(http::header::UPGRADE, proto.clone());
        }
        return Ok(resp);
    }
    let mut out = String::new();
    let _ = writeln!(out, "{} {} {:?}", req.method(), req.uri(), req.version());
    for (name, value) in req.headers() {
        let _ = writeln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
    }
    let path = req.uri().path().to_string();
    let mut status = StatusCode::OK;
    if let Some(ms) = path.strip_prefix("/slow/").and_then(|s| s.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    if let Some(code) = path.strip_prefix("/status/").and_then(|s| s.parse::<u16>().ok()) {
        status = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !body.is_empty() {
        let _ = writeln!(out, "\n{}", String::from_utf8_lossy(&body));
    }
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    *resp.status_mut() = status;
    Ok(resp)
}
