//! Deployment paths: PROXY protocol v2 behind an L4 balancer, and the ConfigMap symlink swap
//! that kubelet does when a mounted policy changes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use ztgate::server::proxy_protocol;

use crate::support::*;

/// Sends `prefix` (a PROXY header, or nothing) and then one mTLS HTTP/1.1 request.
async fn get_behind_balancer(s: &Server, prefix: &[u8], path: &str) -> Result<(StatusCode, String), String> {
    let mut tcp = TcpStream::connect(s.addr).await.map_err(|e| e.to_string())?;
    tcp.write_all(prefix).await.map_err(|e| e.to_string())?;
    let config = s.client();
    let tls = tokio::time::timeout(Duration::from_secs(5), config.try_tls_connect(tcp))
        .await
        .map_err(|_| "TLS handshake hung".to_string())??;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| chain(&e))?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", format!("localhost:{}", s.addr.port()))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| chain(&e))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| chain(&e))?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn proxy_protocol_v2_source_address_reaches_policy_upstream_and_audit() {
    let pki = Pki::new();
    let log = pki.path("audit.log");
    // Only clients from the balancer-reported network may use /app; the socket peer is 127.0.0.1.
    let policy = r#"
[[rule]]
id = "from-office"
effect = "allow"
spiffe_id = ["spiffe://ztgate.dev/ns/default/sa/client"]
paths = ["/app/**"]
source_cidr = ["203.0.113.0/24"]
"#;
    let mut s = Server::start_with(
        pki,
        Opts {
            policy: policy.into(),
            listener_extra: "proxy_protocol = true".into(),
            audit: Some(format!("file = \"{}\"", log.display())),
            ..Opts::default()
        },
    )
    .await;
    let lb: SocketAddr = "127.0.0.1:8443".parse().unwrap();
    let office: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    let elsewhere: SocketAddr = "198.51.100.4:40000".parse().unwrap();

    let (status, body) = get_behind_balancer(&s, &proxy_protocol::encode(office, lb), "/app/x")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed(&body, "x-forwarded-for"), vec!["203.0.113.9"]);

    let (status, _) = get_behind_balancer(&s, &proxy_protocol::encode(elsewhere, lb), "/app/x")
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "source_cidr must see the proxied address"
    );

    // IPv6 clients behind an IPv4 balancer are carried too.
    let v6: SocketAddr = "[2001:db8::7]:1234".parse().unwrap();
    let (status, body) = get_behind_balancer(&s, &proxy_protocol::encode(v6, lb), "/other")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("request id"), "{body}");

    // A LOCAL header (the balancer's health check) keeps the socket address.
    let mut local = proxy_protocol::SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    let (status, _) = get_behind_balancer(&s, &local, "/app/x").await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "127.0.0.1 is not in the office network");

    // Without the header, or with a v1 text header, the connection is refused before TLS.
    let err = get_behind_balancer(&s, b"", "/app/x").await.unwrap_err();
    assert!(!err.is_empty());
    let err = get_behind_balancer(&s, b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 8443\r\n", "/app/x")
        .await
        .unwrap_err();
    assert!(!err.is_empty());
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"ztgate_tls_handshakes_total{result="proxy_protocol_invalid"}"#),
        "{metrics}"
    );
    s.stop().await;

    let recs = audit_records(&log);
    let peers: Vec<&str> = recs
        .iter()
        .filter(|r| r["kind"] == "request")
        .filter_map(|r| r["peer"].as_str())
        .collect();
    assert_eq!(peers.len(), 4, "{recs:?}");
    assert_eq!(peers[0], "203.0.113.9:40000");
    assert_eq!(peers[1], "198.51.100.4:40000");
    assert_eq!(peers[2], "[2001:db8::7]:1234");
    assert!(peers[3].starts_with("127.0.0.1:"), "{}", peers[3]);
    let refused: Vec<&serde_json::Value> = recs.iter().filter(|r| r["kind"] == "handshake").collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|r| r["reason"] == "proxy_protocol_invalid"));
}

#[tokio::test]
async fn proxy_protocol_from_an_untrusted_source_is_refused() {
    let mut s = Server::start(Opts {
        listener_extra: r#"proxy_protocol = true
proxy_protocol_trusted = ["10.0.0.0/8", "fd00::/8"]"#
            .into(),
        ..Opts::default()
    })
    .await;
    let forged = proxy_protocol::encode("10.1.2.3:1".parse().unwrap(), s.addr);
    let err = get_behind_balancer(&s, &forged, "/app/x").await.unwrap_err();
    assert!(!err.is_empty());
    let metrics = s.metrics().await;
    assert!(
        metrics.contains(r#"ztgate_tls_handshakes_total{result="proxy_protocol_untrusted"}"#),
        "{metrics}"
    );
    s.stop().await;
}

#[tokio::test]
async fn proxy_protocol_is_off_by_default_and_its_header_is_then_not_tls() {
    let mut s = Server::start(Opts::default()).await;
    let header = proxy_protocol::encode("203.0.113.9:1".parse().unwrap(), s.addr);
    assert!(get_behind_balancer(&s, &header, "/app/x").await.is_err());
    let (status, body) = get_behind_balancer(&s, b"", "/app/x").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(echoed(&body, "x-forwarded-for"), vec!["127.0.0.1"]);
    s.stop().await;
}

/// kubelet mounts a ConfigMap as `dir/policy.toml -> ..data/policy.toml`, `..data -> ..<ts>/`,
/// and updates it by writing a new `..<ts2>/` and renaming a new `..data` symlink over the old
/// one. The reload must notice even when size and mtime of the new file equal the old one's.
#[cfg(unix)]
#[tokio::test]
async fn policy_reloads_on_a_kubelet_style_configmap_symlink_swap() {
    use std::os::unix::fs::symlink;

    let pki = Pki::new();
    // The test PKI directory plays the mount: ztgate's [policy] file is `<dir>/policy.toml`.
    let mount = pki.dir.path().to_path_buf();
    let v1 = mount.join("..2026_11_23_10_00_00.000000001");
    std::fs::create_dir_all(&v1).unwrap();
    // Two policies of the same length: only which identity gets /admin differs.
    let allow = |sa: &str| {
        format!(
            r#"
[[rule]]
id = "admin"
effect = "allow"
spiffe_id = ["spiffe://ztgate.dev/ns/{sa}"]
paths = ["/admin/**"]
"#
        )
    };
    let (p1, p2) = (allow("ops/sa/admin"), allow("ops/sa/other"));
    assert_eq!(p1.len(), p2.len());
    std::fs::write(v1.join("policy.toml"), &p1).unwrap();
    symlink("..2026_11_23_10_00_00.000000001", mount.join("..data")).unwrap();
    symlink("..data/policy.toml", mount.join("policy.toml")).unwrap();

    // Start-up writes the same policy through the symlink.
    let mut s = Server::start_with(
        pki,
        Opts {
            policy: p1.clone(),
            policy_extra: "reload_interval = \"100ms\"".into(),
            ..Opts::default()
        },
    )
    .await;
    assert!(
        std::fs::symlink_metadata(mount.join("policy.toml"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        s.admin_client().get(s.addr, "/admin/x").await.unwrap().status,
        StatusCode::OK
    );
    let mtime = std::fs::metadata(v1.join("policy.toml")).unwrap().modified().unwrap();

    // The swap, as kubelet's AtomicWriter does it; same size, same mtime.
    let v2 = mount.join("..2026_11_23_10_05_00.000000002");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("policy.toml"), &p2).unwrap();
    std::fs::File::options()
        .write(true)
        .open(v2.join("policy.toml"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    symlink("..2026_11_23_10_05_00.000000002", mount.join("..data_tmp")).unwrap();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    let addr = s.addr;
    let denied = eventually(10, || {
        let admin = s.admin_client();
        async move { admin.get(addr, "/admin/x").await.map(|r| r.status) == Ok(StatusCode::FORBIDDEN) }
    })
    .await;
    assert!(denied, "the swapped-in policy was not loaded");
    s.stop().await;
}
