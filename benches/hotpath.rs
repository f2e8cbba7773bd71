//! The per-connection and per-request pure functions besides the policy (benches/policy.rs):
//! identity extraction from a client certificate, XFCC rendering, path normalisation and audit
//! record serialisation, and a device posture check for a known device (inventory lookup plus the
//! policy's requirement check: the cost posture adds to a request), and a trusted hop's forwarded
//! certificate verified per request with and without the cache of verified values.
//!
//!     cargo bench --bench hotpath
//!
//! Identity extraction and XFCC rendering run once per connection; normalisation and the audit
//! record once per request.

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use ztgate::audit::record::{AuditRecord, Identity, RequestRecord, SCHEMA_VERSION, timestamp};
use ztgate::identity::{PeerIdentity, render_xfcc};
use ztgate::pki::{CertAuthority, LeafSpec};
use ztgate::policy::path;

fn bench(c: &mut Criterion) {
    let ca = CertAuthority::new("bench CA").unwrap();
    let mut spec = LeafSpec::client("payments", Some("spiffe://corp.example/ns/prod/sa/payments"));
    spec.dns = vec!["payments.prod.svc.cluster.local".into()];
    let leaf = ca.issue(&spec).unwrap();

    c.bench_function("identity_from_der", |b| {
        b.iter(|| PeerIdentity::from_der(black_box(&leaf.der)).unwrap())
    });
    let id = PeerIdentity::from_der(&leaf.der).unwrap();
    c.bench_function("xfcc_render", |b| {
        b.iter(|| render_xfcc(black_box(&id), Some("spiffe://corp.example/ns/edge/sa/ztgate")))
    });

    let mut g = c.benchmark_group("path_normalize");
    g.bench_function("already_normal", |b| {
        b.iter(|| path::normalize(black_box("/api/v1/payments/12345/refunds")).unwrap())
    });
    g.bench_function("dot_segments_and_escapes", |b| {
        b.iter(|| path::normalize(black_box("/api/v1//payments/./%61bc/../12345/refunds")).unwrap())
    });
    g.finish();

    // Identity and peer are serialized once per connection (ConnCtx), as ztgate does.
    let peer: std::net::SocketAddr = "10.1.2.3:51234".parse().unwrap();
    let peer = serde_json::value::to_raw_value(&peer).unwrap();
    let identity = serde_json::value::to_raw_value(&Identity::from(&id)).unwrap();
    c.bench_function("audit_record_serialize", |b| {
        b.iter(|| {
            let record = RequestRecord {
                v: SCHEMA_VERSION,
                ts: timestamp(SystemTime::now()),
                kind: "request",
                request_id: "5db32b3ab49e94ed0000000000000001",
                conn_id: 7,
                peer: &peer,
                identity: &identity,
                via: None,
                method: "GET",
                host: Some("payments.corp.example"),
                path: "/api/v1/payments/12345/refunds",
                route: Some("payments"),
                upstream: Some("payments"),
                reached_upstream: true,
                decision: "allow",
                rule: Some("payments-readers"),
                reason: "allowed",
                shadow: None,
                user: None,
                posture: None,
                status: 200,
                bytes: Some(512),
                duration_us: 85,
            };
            // The record's own writer (audit/json.rs), as the request path uses it.
            black_box(record.to_json().unwrap().len())
        })
    });
}

/// What posture adds per request for a device already known: one inventory probe by the
/// device id (borrowed from the connection's identity) and the rule's requirement check.
fn posture(c: &mut Criterion) {
    use ztgate::posture::inventory::Inventory;
    use ztgate::posture::{DeviceIdSource, Lookup, PostureProvider, Query, Requirement, Version};

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devices.toml");
    // 10,000 devices: a fleet-sized inventory, so the probe is not a toy one.
    let mut text = String::new();
    for i in 0..10_000u32 {
        text.push_str(&format!(
            "[device.\"{i:064x}\"]\nmanaged = true\ndisk_encrypted = true\nos = \"macos\"\nos_version = \"14.{}\"\nlast_seen = {}\n",
            i % 10,
            1_795_000_000 + i
        ));
    }
    std::fs::write(&file, text).unwrap();
    let inv = Inventory::load(&file, DeviceIdSource::Fingerprint).unwrap();
    let device = format!("{:064x}", 4321);
    let headers = http::HeaderMap::new();
    let req = Requirement {
        managed: Some(true),
        disk_encrypted: Some(true),
        os: vec!["macos".into()],
        min_os_version: Version::parse("14.0"),
        max_staleness: Some(std::time::Duration::from_secs(10 * 365 * 86_400)),
        ..Requirement::default()
    };
    let now = SystemTime::now();
    c.bench_function("posture_inventory_cached_check", |b| {
        b.iter(|| {
            let q = Query {
                device_id: black_box(&device),
                fingerprint: &device,
                headers: &headers,
            };
            let Lookup::Ready(result) = inv.lookup(&q) else {
                unreachable!("the inventory answers at once")
            };
            black_box(req.check(Some(&result), now)).unwrap()
        })
    });
}

/// A trusted hop's forwarded certificate (`x-forwarded-client-cert` with `Cert` and `Chain`,
/// as Envoy sends it) judged per request: parsed and verified against the client CA every time
/// (`cache_entries = 0`), or found in the cache of verified values (the default).
fn trusted_hop(c: &mut Criterion) {
    use ztgate::tls::{ForwardedChains, TlsConfig};

    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::new("bench CA").unwrap();
    let server = ca.issue(&LeafSpec::server("ztgate")).unwrap();
    let leaf = ca
        .issue(&LeafSpec::client(
            "payments",
            Some("spiffe://corp.example/ns/prod/sa/payments"),
        ))
        .unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cfg = TlsConfig {
        cert: write("server.pem", &server.cert_pem),
        key: write("server-key.pem", &server.key_pem),
        client_ca: write("ca.pem", &ca.cert_pem()),
        crls: vec![write("ca.crl.pem", &ca.crl_pem(&[]).unwrap())],
        crl_sources: vec![],
        crl_fetch_interval: std::time::Duration::from_secs(3600),
        crl_scope: ztgate::tls::CrlScope::Chain,
        crl_discovery: ztgate::tls::RevocationMode::Off,
        ocsp: ztgate::tls::RevocationMode::Off,
        ocsp_responder: None,
        revocation_timeout: std::time::Duration::from_secs(1),
        reload_interval: std::time::Duration::from_secs(1),
        profile: ztgate::tls::profile::ProfileConfig::default(),
    };
    let tls = ztgate::tls::server_tls(&cfg).unwrap();
    let enc = |pem: &str| -> String {
        pem.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let value = format!(
        "Hash=00;Cert=\"{}\";Chain=\"{}\";URI=spiffe://corp.example/ns/prod/sa/payments",
        enc(&leaf.cert_pem),
        enc(&leaf.chain_pem)
    );
    let mut g = c.benchmark_group("trusted_hop_verify");
    let uncached = ForwardedChains::new(0);
    g.bench_function("uncached", |b| {
        b.iter(|| uncached.verify(black_box(value.as_bytes()), &tls).unwrap())
    });
    let cached = ForwardedChains::new(10_000);
    g.bench_function("cached", |b| {
        b.iter(|| cached.verify(black_box(value.as_bytes()), &tls).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench, posture, trusted_hop);
criterion_main!(benches);
