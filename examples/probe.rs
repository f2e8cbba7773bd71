//! Hostile-input probe: sends the request shapes that make a proxy judge one request while the
//! upstream serves another (docs/security.md, "One request, one meaning") to a running ztgate,
//! over HTTP/1.1 (raw bytes) and h2, and checks each answer.
//!
//! Expects the shipped example setup: `ztgate demo` (config/ztgate.toml, the echo upstream that
//! answers with the headers it received, the example policy: the client may use everything but
//! `/admin/**`).
//!
//! ```sh
//! cargo run --release -- demo &          # in another terminal
//! cargo run --example probe -- 127.0.0.1:8443 certs/dev/ca.pem certs/dev/client.pem certs/dev/client-key.pem
//! ```
//! Prints one line per case (`ok` or `FAIL`, what was expected and what came back); exits 1 if
//! any case failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What a case must get back: a status, and for 200s header names the upstream must not see.
struct Expect {
    status: u16,
    absent_upstream: &'static [&'static str],
}

const PLANTED: &[&str] = &[
    "x_ztgate_identity",
    "x-forwarded-host",
    "x-real-ip",
    "x-original-url",
    "x-http-method-override",
    "x-remote-user",
];

struct Probe {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Probe {
    async fn connect(&self, alpn: &[u8]) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let mut config = (*self.tls).clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())
    }

    /// Raw HTTP/1.1: the status line's code and everything after the head.
    async fn h1(&self, raw: &str) -> Result<(u16, String), String> {
        let mut tls = self.connect(b"http/1.1").await?;
        tls.write_all(raw.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), tls.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((status, text.to_ascii_lowercase()))
    }

    /// h2 with `:authority` and extra fields as given.
    async fn h2(&self, authority: &str, path: &str, fields: &[(&str, &str)]) -> Result<(u16, String), String> {
        let tls = self.connect(b"h2").await?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = http::Request::get(format!("https://{authority}{path}"))
            .version(http::Version::HTTP_2)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        for (n, v) in fields {
            let name = http::HeaderName::from_bytes(n.as_bytes()).map_err(|e| e.to_string())?;
            let value = http::HeaderValue::from_str(v).map_err(|e| e.to_string())?;
            req.headers_mut().append(name, value);
        }
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).to_ascii_lowercase()))
    }
}

fn check(name: &str, got: Result<(u16, String), String>, want: &Expect) -> bool {
    let ok = match &got {
        Ok((status, body)) => {
            *status == want.status && want.absent_upstream.iter().all(|h| !body.contains(&format!("{h}:")))
        }
        Err(_) => false,
    };
    let seen = match &got {
        Ok((status, _)) => status.to_string(),
        Err(e) => format!("error: {e}"),
    };
    println!(
        "{} {name}: want {}, got {seen}",
        if ok { "ok  " } else { "FAIL" },
        want.status
    );
    ok
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, ca, cert, key] = args.as_slice() else {
        eprintln!("usage: probe ADDR CA.pem CLIENT.pem CLIENT-KEY.pem");
        std::process::exit(2);
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    let probe = Probe {
        addr: addr.parse()?,
        tls: Arc::new(tls),
    };
    let host = format!("localhost:{}", probe.addr.port());
    let refused = refused_();
    let mut all = true;

    let h1_cases: Vec<(&str, String, Expect)> = vec![
        (
            "h1 two Host fields",
            format!("GET /hello HTTP/1.1\r\nHost: {host}\r\nHost: admin.internal\r\n\r\n"),
            refused_(),
        ),
        ("h1 no Host", "GET /hello HTTP/1.1\r\n\r\n".to_string(), refused_()),
        (
            "h1 absolute-form target vs Host",
            format!("GET http://admin.internal/hello HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            refused_(),
        ),
        (
            "h1 userinfo in Host",
            format!("GET /hello HTTP/1.1\r\nHost: admin@{host}\r\n\r\n"),
            refused_(),
        ),
        (
            "h1 ;parameter in path",
            format!("GET /admin;x=1/users HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            refused_(),
        ),
        (
            "h1 %3B in path",
            format!("GET /admin%3Bx=1/users HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            refused_(),
        ),
        (
            "h1 ..; segment",
            format!("GET /app/..;/admin/users HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            refused_(),
        ),
        (
            "h1 %2F in path",
            format!("GET /admin%2Fusers HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            refused_(),
        ),
        (
            "h1 dot segments to /admin",
            format!("GET /app/../admin/users HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            Expect {
                status: 403,
                absent_upstream: &[],
            },
        ),
        (
            "h1 chunk longer than declared",
            format!(
                "POST /hello HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdefghij\r\n0\r\n\r\n"
            ),
            refused_(),
        ),
        (
            "h1 planted identity and forwarding fields",
            format!(
                "GET /hello HTTP/1.1\r\nHost: {host}\r\nConnection: host\r\n{}\r\n\r\n",
                PLANTED
                    .iter()
                    .map(|h| format!("{h}: forged"))
                    .collect::<Vec<_>>()
                    .join("\r\n")
            ),
            Expect {
                status: 200,
                absent_upstream: PLANTED,
            },
        ),
    ];
    for (name, raw, want) in &h1_cases {
        all &= check(name, probe.h1(raw).await, want);
    }

    let planted: Vec<(&str, &str)> = PLANTED.iter().map(|h| (*h, "forged")).collect();
    all &= check(
        "h2 :authority vs host",
        probe.h2(&host, "/hello", &[("host", "admin.internal")]).await,
        &refused,
    );
    all &= check(
        "h2 two host fields",
        probe.h2(&host, "/hello", &[("host", &host), ("host", &host)]).await,
        &refused,
    );
    all &= check(
        "h2 ;parameter in path",
        probe.h2(&host, "/admin;x=1/users", &[]).await,
        &refused,
    );
    all &= check(
        "h2 %3B in path",
        probe.h2(&host, "/admin%3Bx/users", &[]).await,
        &refused,
    );
    all &= check(
        "h2 planted identity and forwarding fields",
        probe.h2(&host, "/hello", &planted).await,
        &Expect {
            status: 200,
            absent_upstream: PLANTED,
        },
    );
    all &= check(
        "h2 allowed request",
        probe.h2(&host, "/hello", &[]).await,
        &Expect {
            status: 200,
            absent_upstream: &[],
        },
    );
    if !all {
        std::process::exit(1);
    }
    Ok(())
}

fn refused_() -> Expect {
    Expect {
        status: 400,
        absent_upstream: &[],
    }
}
