//! Test support: a PKI minted per test, the real ztgate server on 127.0.0.1:0 in-process, the
//! echo upstream, and an mTLS client built on hyper's connection API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsConnector;
use ztgate::app::{self, Listeners};
use ztgate::config::Config;
use ztgate::pki::{CertAuthority, Issued, LeafSpec};

pub const CLIENT_ID: &str = "spiffe://ztgate.dev/ns/default/sa/client";
pub const ADMIN_ID: &str = "spiffe://ztgate.dev/ns/ops/sa/admin";

/// The example policy shipped in config/: client everywhere but /admin, admin everywhere.
pub const EXAMPLE_POLICY: &str = include_str!("../../config/policy.toml");

/// A CA with a server certificate and two client identities, written to a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Arc<CertAuthority>,
    pub client: Issued,
    pub admin: Issued,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(CertAuthority::new("test CA").unwrap());
        let server = ca.issue(&LeafSpec::server("ztgate test server")).unwrap();
        let client = ca.issue(&LeafSpec::client("client", Some(CLIENT_ID))).unwrap();
        let admin = ca.issue(&LeafSpec::client("admin", Some(ADMIN_ID))).unwrap();
        let pki = Self { dir, ca, client, admin };
        pki.write("ca.pem", &pki.ca.cert_pem());
        pki.write("server.pem", &server.cert_pem);
        pki.write("server-key.pem", &server.key_pem);
        pki
    }

    /// A second PKI dir sharing `other`'s CA (and its client identities), with its own server
    /// certificate: for chaining two ztgates.
    pub fn new_with_ca(other: &Pki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = other.ca.clone();
        let server = ca.issue(&LeafSpec::server("ztgate test server 2")).unwrap();
        let pki = Self {
            dir,
            ca,
            client: other.client.clone(),
            admin: other.admin.clone(),
        };
        pki.write("ca.pem", &pki.ca.cert_pem());
        pki.write("server.pem", &server.cert_pem);
        pki.write("server-key.pem", &server.key_pem);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn issue(&self, spec: &LeafSpec) -> Issued {
        self.ca.issue(spec).unwrap()
    }
}

/// Knobs for one test server; `Default` is the example setup.
pub struct Opts {
    pub policy: String,
    /// Extra TOML appended to `[tls]` (e.g. `crls = [...]`).
    pub tls_extra: String,
    /// Upstream URL; `None` starts the echo upstream and points at it.
    pub upstream_url: Option<String>,
    pub upstream_extra: String,
    pub route_prefix: String,
    /// Extra TOML appended to `[policy]` (e.g. `reload_interval = "100ms"`).
    pub policy_extra: String,
    /// Body of an `[audit]` table; `None`: no audit log.
    pub audit: Option<String>,
    /// Extra TOML tables appended to the config.
    pub extra: String,
    /// Extra TOML appended to `[listener]`.
    pub listener_extra: String,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            policy: EXAMPLE_POLICY.to_string(),
            tls_extra: String::new(),
            upstream_url: None,
            upstream_extra: String::new(),
            route_prefix: "/".into(),
            policy_extra: String::new(),
            audit: None,
            extra: String::new(),
            listener_extra: String::new(),
        }
    }
}

/// A running ztgate. Dropping it stops the server.
pub struct Server {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub pki: Pki,
    stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start(opts: Opts) -> Self {
        Self::start_with(Pki::new(), opts).await
    }

    pub async fn start_with(pki: Pki, opts: Opts) -> Self {
        let upstream_url = match opts.upstream_url {
            Some(u) => u,
            None => {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", l.local_addr().unwrap());
                tokio::spawn(ztgate::demo::echo_upstream(l));
                url
            }
        };
        let policy = pki.write("policy.toml", &opts.policy);
        let config_text = config_toml(
            pki.dir.path(),
            &policy,
            &opts.tls_extra,
            &upstream_url,
            &opts.upstream_extra,
            &opts.route_prefix,
        )
        .replace("[policy]\n", &format!("[policy]\n{}\n", opts.policy_extra))
        .replace(
            "handshake_timeout = \"2s\"\n",
            &format!("handshake_timeout = \"2s\"\n{}\n", opts.listener_extra),
        ) + &opts.audit.map(|a| format!("\n[audit]\n{a}\n")).unwrap_or_default()
            + "\n"
            + &opts.extra;
        let config_path = pki.write("ztgate.toml", &config_text);
        let cfg = Config::load(&config_path).unwrap();
        // One socket, or one per worker with `runtime = "per-core"`.
        let proxy = app::bind_proxy(&cfg.listener).await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin_addr) = (proxy[0].local_addr().unwrap(), admin.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            proxy,
            admin: Some(admin),
        };
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(errors) = app::serve(cfg, listeners, shutdown).await {
                panic!("server failed: {errors:?}");
            }
        });
        Self {
            addr,
            admin: admin_addr,
            pki,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Drains and waits until ztgate has stopped (audit records flushed).
    pub async fn stop(&mut self) {
        self.shutdown();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(std::time::Duration::from_secs(10), t)
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Starts the graceful drain (as SIGTERM does).
    pub fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.pki.ca.cert_pem(), Some(&self.pki.client))
    }

    pub fn admin_client(&self) -> Client {
        Client::new(&self.pki.ca.cert_pem(), Some(&self.pki.admin))
    }

    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.1
    }

    /// The value of the sample `series` (name and labels, as `/metrics` prints them), 0 when
    /// absent. The recorder is process-wide: under `cargo test` other tests of this binary
    /// count in it too, so compare values taken before and after.
    pub async fn counter(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// GET on the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let tcp = TcpStream::connect(self.admin).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", "admin")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        (
            status,
            String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn config_toml(
    dir: &Path,
    policy: &Path,
    tls_extra: &str,
    upstream: &str,
    upstream_extra: &str,
    prefix: &str,
) -> String {
    let d = dir.display();
    format!(
        r#"
[listener]
address = "127.0.0.1:0"
handshake_timeout = "2s"

[tls]
cert = "{d}/server.pem"
key = "{d}/server-key.pem"
client_ca = "{d}/ca.pem"
{tls_extra}

[admin]
address = "127.0.0.1:0"

[policy]
file = "{policy}"

[[upstream]]
name = "app"
url = "{upstream}"
{upstream_extra}

[[route]]
name = "default"
path_prefix = "{prefix}"
upstream = "app"

[shutdown]
drain_timeout = "5s"
"#,
        policy = policy.display()
    )
}

/// A response as the test sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// An mTLS client. `cert = None` presents no client certificate; a certificate is presented with
/// its chain (`Issued::chain_pem`).
pub struct Client {
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    pub fn new(ca_pem: &str, cert: Option<&Issued>) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let builder = rustls::ClientConfig::builder_with_provider(ztgate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(c) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(c.chain_pem.as_bytes())
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            config: Arc::new(config),
        }
    }

    pub async fn get(&self, addr: SocketAddr, path: &str) -> Result<Reply, String> {
        self.send(addr, Version::HTTP_11, Request::get(path).body(Empty::new()).unwrap())
            .await
    }

    /// An HTTP/1.1 keep-alive connection to send several requests on.
    pub async fn connect_h1(&self, addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = self.tls_connect(tcp).await;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        sender
    }

    /// A TLS connection offering HTTP/1.1 only.
    pub async fn tls_connect(&self, tcp: TcpStream) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// A TLS connection offering only h2.
    pub async fn tls_connect_h2(&self, tcp: TcpStream) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// An h2 connection (ALPN h2) to send requests with body type `B` on.
    pub async fn h2_sender<B>(&self, addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
    where
        B: hyper::body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = self.tls_connect_h2(tcp).await;
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    /// Like [`Client::tls_connect`], but a refused handshake is an error, not a panic.
    pub async fn try_tls_connect(&self, tcp: TcpStream) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| chain(&e))
    }

    /// Sends one request on a fresh connection with the given HTTP version (ALPN picks it).
    pub async fn send(
        &self,
        addr: SocketAddr,
        version: Version,
        mut req: Request<Empty<Bytes>>,
    ) -> Result<Reply, String> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![if version == Version::HTTP_2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        }];
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| chain(&e))?;
        let io = TokioIo::new(tls);
        let resp = if version == Version::HTTP_2 {
            *req.uri_mut() = format!("https://localhost:{}{}", addr.port(), req.uri())
                .parse()
                .unwrap();
            let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| chain(&e))?;
            tokio::spawn(conn);
            sender.send_request(req).await.map_err(|e| chain(&e))?
        } else {
            if !req.headers().contains_key("host") {
                req.headers_mut()
                    .insert("host", format!("localhost:{}", addr.port()).parse().unwrap());
            }
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| chain(&e))?;
            tokio::spawn(conn);
            sender.send_request(req).await.map_err(|e| chain(&e))?
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| chain(&e))?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// The whole error chain as one string, so tests can look for the TLS alert inside.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = format!("{e:?}");
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(" <- ");
        s.push_str(&format!("{inner:?}"));
        cur = inner.source();
    }
    s
}

/// The value of one series (`name{labels}`) in a Prometheus text scrape; 0 when absent.
/// Metrics are process-wide and `cargo test` runs tests in parallel threads of one process, so
/// tests compare a series before and after (at least their own increments), never an absolute.
pub fn counter(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The value of a header line in the echo upstream's body (`name: value`).
pub fn echoed<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    body.lines()
        .filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .collect()
}

/// Sends `GET path` on an open HTTP/1.1 connection; returns the status.
pub async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> StatusCode {
    sender.ready().await.expect("connection dropped");
    let req = Request::get(path)
        .header("host", format!("localhost:{}", addr.port()))
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("connection dropped");
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

/// Polls `f` every 50 ms until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// Starts the real `ztgate run` binary on `config` (which listens on port 0, logs JSON) and
/// returns it with the address it bound, read from its "ztgate ready" log line.
pub fn spawn_daemon(config: &Path) -> (std::process::Child, SocketAddr) {
    spawn_daemon_with(config, |_| {}) // the rest of stderr is drained
}

/// [`spawn_daemon`], handing every later stderr line to `on_line` (from a thread of its own).
pub fn spawn_daemon_with(
    config: &Path,
    mut on_line: impl FnMut(String) + Send + 'static,
) -> (std::process::Child, SocketAddr) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ztgate"))
        .args(["run", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("ztgate exited before it was ready").unwrap();
        if let Some(rest) = line.split("\"listen\":\"").nth(1) {
            break rest.split('"').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(&mut on_line));
    (child, addr)
}

/// Waits (off the runtime's threads) until the daemon exits; its exit status.
pub async fn wait_for_exit(mut child: std::process::Child) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap()
}

/// Sends `signal` (e.g. "TERM", "HUP") to a process.
pub fn signal(child: &std::process::Child, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// The audit log's records, parsed (one JSON object per line).
pub fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The DER of a PEM CRL (what a distribution point usually serves).
pub fn crl_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateRevocationListDer;
    use rustls::pki_types::pem::PemObject;
    CertificateRevocationListDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}
