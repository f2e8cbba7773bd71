//! Full mTLS handshakes in memory: ztgate's own server TLS config (`tls::server_tls`, the client
//! certificate verifier included) against a rustls client presenting a certificate, with no
//! sockets, so that what is measured is the CPU a handshake costs, not the network.
//!
//!     cargo bench --bench handshake
//!
//! `handshake/<chain>` times the server's side only (its `read_tls`, `process_new_packets` and
//! `write_tls` calls, the connection's creation included); the client's work is left out of the
//! number. Chains: `direct` (a client certificate issued by the CA in `client_ca`, the dev PKI's
//! shape) and `one_intermediate` (issued by an intermediate the client sends along).
//! Handshakes per second on one core are 1 / the time shown.
//!
//! `profile_check/<chain>` times the client-certificate profile alone (`tls::profile::check_chain`
//! on the chain the client sends, against the parsed `client_ca`): the part of the handshake's
//! cost that the profile adds.
//!
//!     cargo bench --bench handshake -- count 1000 [one_intermediate]
//!
//! runs that many handshakes without criterion, for an instruction count free of clock noise:
//! run it under `valgrind --tool=callgrind` for two counts and divide the difference.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use ztgate::config::{CrlScope, RevocationMode, TlsConfig};
use ztgate::pki::{CertAuthority, Issued, LeafSpec};
use ztgate::tls::profile::{ProfileConfig, TrustAnchors, check_chain};

fn client_config(root: &CertAuthority, client: &Issued) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(root.der().to_vec())).unwrap();
    let chain = CertificateDer::pem_slice_iter(client.chain_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap();
    // HANDSHAKE_KX=X25519|secp256r1|X25519MLKEM768 limits the client to one key-exchange group
    // (default: every group of the provider, as rustls orders them).
    let mut provider = (*ztgate::tls::provider()).clone();
    if let Ok(kx) = std::env::var("HANDSHAKE_KX") {
        provider
            .kx_groups
            .retain(|g| format!("{:?}", g.name()).eq_ignore_ascii_case(&kx));
        assert!(
            !provider.kx_groups.is_empty(),
            "HANDSHAKE_KX={kx}: the provider has no such group"
        );
    }
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// Moves every pending TLS record from `from` into `to`.
fn pump(from: &mut dyn FnMut(&mut Vec<u8>), to: &mut dyn FnMut(&[u8])) {
    let mut buf = Vec::new();
    from(&mut buf);
    if !buf.is_empty() {
        to(&buf);
    }
}

/// One full handshake; returns the time spent in the server's calls.
fn handshake(server_config: &Arc<ServerConfig>, client_config: &Arc<ClientConfig>) -> Duration {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client_config.clone(), name).unwrap();
    let started = Instant::now();
    let mut server = ServerConnection::new(server_config.clone()).unwrap();
    let mut server_time = started.elapsed();
    loop {
        pump(
            &mut |buf| {
                while client.wants_write() {
                    client.write_tls(buf).unwrap();
                }
            },
            &mut |mut bytes| {
                let t = Instant::now();
                while !bytes.is_empty() {
                    server.read_tls(&mut bytes).unwrap();
                    server.process_new_packets().unwrap();
                }
                server_time += t.elapsed();
            },
        );
        let t = Instant::now();
        let mut out = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut out).unwrap();
        }
        server_time += t.elapsed();
        if !out.is_empty() {
            let mut bytes = &out[..];
            while !bytes.is_empty() {
                client.read_tls(&mut bytes).unwrap();
                client.process_new_packets().unwrap();
            }
        }
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() && !server.wants_write() {
            break;
        }
    }
    black_box(&server);
    server_time
}

/// The server's TLS config and, per chain shape, a client config presenting a certificate.
struct Setup {
    _dir: tempfile::TempDir,
    server: Arc<ServerConfig>,
    /// Per chain shape: the client's config and the chain it presents (DER, leaf first).
    clients: Vec<(&'static str, Arc<ClientConfig>, Vec<CertificateDer<'static>>)>,
    /// `client_ca`, DER.
    client_ca: Vec<CertificateDer<'static>>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = CertAuthority::new("bench root CA").unwrap();
    let issuing = root.intermediate("bench issuing CA").unwrap();
    let server = root.issue(&LeafSpec::server("bench server")).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let tls = TlsConfig {
        cert: write("server.pem", &server.cert_pem),
        key: write("server-key.pem", &server.key_pem),
        client_ca: write("ca.pem", &root.cert_pem()),
        crls: vec![],
        crl_sources: vec![],
        crl_fetch_interval: Duration::from_secs(3600),
        crl_scope: CrlScope::Chain,
        crl_discovery: RevocationMode::Off,
        ocsp: RevocationMode::Off,
        ocsp_responder: None,
        revocation_timeout: Duration::from_secs(3),
        reload_interval: Duration::from_secs(5),
        profile: Default::default(),
    };
    let server = ztgate::tls::server_tls(&tls).unwrap().config;
    let clients = [("direct", &root), ("one_intermediate", &issuing)]
        .into_iter()
        .map(|(name, issuer)| {
            let client = issuer
                .issue(&LeafSpec::client(
                    "payments",
                    Some("spiffe://corp.example/ns/prod/sa/payments"),
                ))
                .unwrap();
            let chain = CertificateDer::pem_slice_iter(client.chain_pem.as_bytes())
                .map(Result::unwrap)
                .collect();
            (name, client_config(&root, &client), chain)
        })
        .collect();
    Setup {
        _dir: dir,
        server,
        clients,
        client_ca: vec![CertificateDer::from(root.der().to_vec())],
    }
}

fn bench(c: &mut Criterion) {
    let s = setup();
    let mut g = c.benchmark_group("handshake");
    for (name, client, _) in &s.clients {
        g.bench_function(*name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| handshake(&s.server, client)).sum())
        });
    }
    g.finish();

    let cfg = ProfileConfig::default();
    let anchors = TrustAnchors::new(&s.client_ca, &cfg);
    let now = i64::try_from(rustls::pki_types::UnixTime::now().as_secs()).unwrap();
    let mut g = c.benchmark_group("profile_check");
    for (name, _, chain) in &s.clients {
        g.bench_function(*name, |b| {
            b.iter(|| check_chain(black_box(&chain[0]), black_box(&chain[1..]), &anchors, &cfg, now).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "count") {
        let n: usize = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(1000);
        let chain = args.get(i + 2).map_or("direct", String::as_str);
        let s = setup();
        let (_, client, _) = s.clients.iter().find(|(name, _, _)| *name == chain).unwrap();
        for _ in 0..n {
            black_box(handshake(&s.server, client));
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
