//! The per-connection and per-request pure functions besides the policy (benches/policy.rs):
//! identity extraction from a client certificate, XFCC rendering, path normalisation and audit
//! record serialisation.
//!
//!     cargo bench --bench hotpath
//!
//! Identity extraction and XFCC rendering run once per connection; normalisation and the audit
//! record once per request.

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use ztgate::audit::record::{Identity, RequestRecord, SCHEMA_VERSION, timestamp};
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

    let peer: std::net::SocketAddr = "10.1.2.3:51234".parse().unwrap();
    c.bench_function("audit_record_serialize", |b| {
        let mut buf = Vec::with_capacity(1024);
        b.iter(|| {
            buf.clear();
            let record = RequestRecord {
                v: SCHEMA_VERSION,
                ts: timestamp(SystemTime::now()),
                kind: "request",
                request_id: "5db32b3ab49e94ed0000000000000001",
                conn_id: 7,
                peer,
                identity: Identity::from(&id),
                method: "GET",
                host: Some("payments.corp.example"),
                path: "/api/v1/payments/12345/refunds",
                route: Some("payments"),
                upstream: Some("payments"),
                decision: "allow",
                rule: Some("payments-readers"),
                reason: "allowed",
                shadow: None,
                status: 200,
                bytes: Some(512),
                duration_us: 85,
            };
            serde_json::to_writer(&mut buf, black_box(&record)).unwrap();
            black_box(buf.len())
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
