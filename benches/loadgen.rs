//! mTLS load generator (and a minimal upstream), for benches/compare.sh.
//!
//!     cargo bench --bench loadgen -- load --url https://127.0.0.1:8443/ --ca ca.pem \
//!         --cert client.pem --key client-key.pem [-c 64] [-d 10 | --count N] [--h2 --streams 8] [--new-conn]
//!     cargo bench --bench loadgen -- upstream --listen 127.0.0.1:18080
//!
//! `load` keeps `-c` HTTP/1.1 keep-alive connections busy (or, with `--h2`, `-c` connections with
//! `--streams` concurrent streams each; with `--new-conn`, a full TLS handshake per request,
//! resumption off) for `-d` seconds and prints one line of JSON: requests, requests/s, latency
//! percentiles in microseconds, errors. An `http://` URL is plain HTTP (the upstream's ceiling).
//! `--count N` (COUNTED mode) replaces the deadline: every connection (h2: every stream) sends
//! exactly N requests, so that two runs differ by a known number of requests (benches/callgrind.sh).
//! `upstream` answers every request with 200 and a 13-byte body, as fast as hyper can.
//! Run without a subcommand (as `cargo bench` does), it does nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

struct Opts {
    url: Uri,
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    concurrency: usize,
    duration: Duration,
    h2: bool,
    streams: usize,
    new_conn: bool,
    /// COUNTED mode: requests per connection (h2: per stream) instead of a deadline; 0 = off.
    count: u64,
    server_name: String,
}

impl Opts {
    /// Whether a loop that has sent `sent` requests goes on: until the deadline, or in COUNTED
    /// mode until it has sent exactly `count` (failures included, so a broken target ends the run).
    fn more(&self, sent: u64, deadline: Instant) -> bool {
        if self.count > 0 {
            sent < self.count
        } else {
            Instant::now() < deadline
        }
    }
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// The options of `load` and `idle`; they differ in what the count and the time are called.
fn opts(args: &[String], count_flag: &str, count_default: usize, secs_flag: &str) -> Opts {
    let url: Uri = arg::<String>(args, "--url")
        .expect("--url is required")
        .parse()
        .expect("--url must be a URL");
    Opts {
        server_name: arg(args, "--server-name").unwrap_or_else(|| url.host().unwrap_or("localhost").to_string()),
        url,
        ca: arg(args, "--ca"),
        cert: arg(args, "--cert"),
        key: arg(args, "--key"),
        concurrency: arg(args, count_flag).unwrap_or(count_default),
        duration: Duration::from_secs_f64(arg(args, secs_flag).unwrap_or(10.0)),
        h2: args.iter().any(|a| a == "--h2"),
        streams: arg(args, "--streams").unwrap_or(8),
        new_conn: args.iter().any(|a| a == "--new-conn"),
        count: arg(args, "--count").unwrap_or(0),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.first().map(String::as_str) {
        Some("upstream") => {
            let listen: SocketAddr = arg(&args, "--listen").unwrap_or_else(|| ([127, 0, 0, 1], 18080).into());
            rt.block_on(upstream(listen));
        }
        Some("load") => rt.block_on(load(opts(&args, "-c", 64, "-d"))),
        Some("idle") => rt.block_on(idle(opts(&args, "--conns", 1000, "--hold"))),
        // `cargo bench` runs every bench target with `--bench`: nothing to do without a mode.
        _ => {}
    }
}

async fn upstream(listen: SocketAddr) {
    let l = TcpListener::bind(listen).await.expect("bind");
    eprintln!("upstream listening on {listen}");
    loop {
        let Ok((s, _)) = l.accept().await else { continue };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"hello, world\n"))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(s), svc)
                .await;
        });
    }
}

fn tls_config(o: &Opts) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = o.ca.as_deref().expect("--ca is required for https");
    for c in CertificateDer::pem_file_iter(ca).expect("read --ca") {
        roots.add(c.expect("CA certificate")).expect("CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(ztgate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots);
    let mut config = match (&o.cert, &o.key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(c)
                    .expect("read --cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("cert"),
                PrivateKeyDer::from_pem_file(k).expect("read --key"),
            )
            .expect("client cert"),
        _ => builder.with_no_client_auth(),
    };
    // A full handshake per connection when asked: no resumption.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![if o.h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    Arc::new(config)
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

async fn connect(o: &Opts, tls: &Option<Arc<rustls::ClientConfig>>) -> Result<Sender, String> {
    let host = o.url.host().unwrap_or("127.0.0.1");
    let port = o.url.port_u16().unwrap_or(if tls.is_some() { 443 } else { 80 });
    let tcp = TcpStream::connect((host, port)).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    macro_rules! handshake {
        ($io:expr) => {
            if o.h2 {
                let (s, c) = hyper::client::conn::http2::handshake(TokioExecutor::new(), $io)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(c);
                Sender::H2(s)
            } else {
                let (s, c) = hyper::client::conn::http1::handshake($io)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(c);
                Sender::H1(s)
            }
        };
    }
    Ok(match tls {
        Some(cfg) => {
            let name = ServerName::try_from(o.server_name.clone()).map_err(|e| e.to_string())?;
            let stream = TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            handshake!(TokioIo::new(stream))
        }
        None => handshake!(TokioIo::new(tcp)),
    })
}

async fn send(sender: &mut Sender, o: &Opts) -> Result<(), String> {
    let path = o.url.path_and_query().map_or("/", |p| p.as_str());
    let resp = match sender {
        Sender::H1(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            let host = o.url.authority().map_or("localhost", |a| a.as_str());
            let req = Request::get(path)
                .header("host", host)
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            s.send_request(req).await.map_err(|e| e.to_string())?
        }
        Sender::H2(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            let req = Request::get(o.url.clone())
                .body(Empty::new())
                .map_err(|e| e.to_string())?;
            s.send_request(req).await.map_err(|e| e.to_string())?
        }
    };
    let ok = resp.status().is_success();
    resp.into_body().collect().await.map_err(|e| e.to_string())?;
    if ok { Ok(()) } else { Err("non-2xx".into()) }
}

async fn load(o: Opts) {
    let o = Arc::new(o);
    let tls = (o.url.scheme_str() == Some("https")).then(|| tls_config(&o));
    let deadline = Instant::now() + o.duration;
    let mut tasks = Vec::new();
    let connections = o.concurrency;
    for _ in 0..connections {
        let (o, tls) = (o.clone(), tls.clone());
        let per_conn = if o.h2 { o.streams } else { 1 };
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            if o.new_conn {
                let mut sent = 0;
                while o.more(sent, deadline) {
                    sent += 1;
                    let t = Instant::now();
                    match connect(&o, &tls).await {
                        Ok(mut s) => match send(&mut s, &o).await {
                            Ok(()) => lat.push(t.elapsed().as_micros() as u32),
                            Err(_) => errors += 1,
                        },
                        Err(_) => errors += 1,
                    }
                }
                return (lat, errors);
            }
            let Ok(first) = connect(&o, &tls).await else {
                return (lat, 1);
            };
            let senders: Vec<Sender> = match first {
                Sender::H1(s) => vec![Sender::H1(s)],
                Sender::H2(s) => (0..per_conn).map(|_| Sender::H2(s.clone())).collect(),
            };
            let mut streams = Vec::new();
            for mut s in senders {
                let o = o.clone();
                streams.push(tokio::spawn(async move {
                    let (mut lat, mut errors) = (Vec::with_capacity(1 << 16), 0u64);
                    let mut sent = 0;
                    while o.more(sent, deadline) {
                        sent += 1;
                        let t = Instant::now();
                        match send(&mut s, &o).await {
                            Ok(()) => lat.push(t.elapsed().as_micros() as u32),
                            Err(_) => {
                                errors += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    (lat, errors)
                }));
            }
            for st in streams {
                if let Ok((l, e)) = st.await {
                    lat.extend(l);
                    errors += e;
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    let (mut all, mut errors) = (Vec::new(), 0u64);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"requests\":{},\"rps\":{:.0},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{},\"errors\":{}}}",
        all.len(),
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all.last().copied().unwrap_or(0),
        errors
    );
}

/// Opens `--conns` mTLS connections (each completes one request, so the proxy has set it up
/// fully), prints `{"open":N}` and holds them idle for `--hold` seconds.
async fn idle(o: Opts) {
    let o = Arc::new(o);
    let tls = (o.url.scheme_str() == Some("https")).then(|| tls_config(&o));
    let mut held = Vec::with_capacity(o.concurrency);
    let mut failed = 0;
    for chunk in 0..o.concurrency.div_ceil(100) {
        let n = 100.min(o.concurrency - chunk * 100);
        let mut batch = Vec::new();
        for _ in 0..n {
            let (o, tls) = (o.clone(), tls.clone());
            batch.push(tokio::spawn(async move {
                let mut s = connect(&o, &tls).await.ok()?;
                send(&mut s, &o).await.ok()?;
                Some(s)
            }));
        }
        for b in batch {
            match b.await {
                Ok(Some(s)) => held.push(s),
                _ => failed += 1,
            }
        }
    }
    println!("{{\"open\":{},\"failed\":{}}}", held.len(), failed);
    tokio::time::sleep(o.duration).await;
    drop(held);
}
