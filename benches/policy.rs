//! Policy decision time at 10, 1,000 and 10,000 rules, policy compile time, and path
//! normalisation.
//!
//!     cargo bench --bench policy
//!
//! Target (policy issue): under 1 µs median at 1,000 rules and under 2 µs at 10,000.
//! The rule mix is what a large deployment looks like: most rules name one workload by exact
//! SPIFFE ID (indexed), some use trust-domain globs, CNs or routes, a few are generic denies.

use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use ztgate::identity::{PeerIdentity, SpiffeId};
use ztgate::policy::{Policy, RequestFacts, path};

fn policy_text(n: usize) -> String {
    let mut t = String::new();
    t += "[[rule]]\nid = \"no-admin\"\neffect = \"deny\"\npaths = [\"/admin/**\"]\nnot = { spiffe_id = [\"spiffe://corp.example/ns/ops/sa/admin\"] }\n";
    t += "[[rule]]\nid = \"no-deletes\"\neffect = \"deny\"\nmethods = [\"DELETE\"]\nroute = [\"legacy\"]\n";
    for i in 0..n.saturating_sub(4) {
        t += &match i % 10 {
            0 => format!("[[rule]]\nid = \"cn-{i}\"\neffect = \"allow\"\ncn = [\"batch-{i}\"]\nmethods = [\"GET\"]\n"),
            1 => format!(
                "[[rule]]\nid = \"ns-{i}\"\neffect = \"allow\"\nspiffe_id = [\"spiffe://corp.example/ns/team{i}/**\"]\npaths = [\"/team{i}/**\"]\n"
            ),
            _ => format!(
                "[[rule]]\nid = \"svc-{i}\"\neffect = \"allow\"\nspiffe_id = [\"spiffe://corp.example/ns/prod/sa/svc{i}\"]\nmethods = [\"GET\", \"POST\"]\npaths = [\"/api/v1/svc{i}/**\", \"/healthz\"]\n"
            ),
        };
    }
    t += "[[rule]]\nid = \"ops\"\neffect = \"allow\"\nspiffe_id = [\"spiffe://corp.example/ns/ops/sa/admin\"]\n";
    t += "[[rule]]\nid = \"shadow-exports\"\neffect = \"deny\"\nmode = \"shadow\"\npaths = [\"/export/**\"]\n";
    t
}

fn peer(spiffe: &str) -> PeerIdentity {
    PeerIdentity {
        spiffe_id: Some(SpiffeId::parse(spiffe).unwrap()),
        spiffe_error: None,
        uris: vec![spiffe.to_string()],
        dns: vec![],
        emails: vec![],
        ips: vec![],
        common_name: Some("svc".into()),
        organizations: vec![],
        organizational_units: vec![],
        subject: "CN=svc".into(),
        issuer: "CN=corp CA".into(),
        serial: "01".into(),
        fingerprint_sha256: "ab".repeat(32),
        spki_sha256: String::new(),
        not_before: 0,
        not_after: i64::MAX,
    }
}

fn bench_policy(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_evaluate");
    for n in [10usize, 1_000, 10_000] {
        let policy = Policy::from_toml(Path::new("bench.toml"), &policy_text(n)).unwrap();
        // A workload whose own rule sits in the middle of the file.
        let who = peer(&format!(
            "spiffe://corp.example/ns/prod/sa/svc{}",
            (n / 2) / 10 * 10 + 2
        ));
        let svc_path = format!("/api/v1/svc{}/items/42", (n / 2) / 10 * 10 + 2);
        let headers = HeaderMap::new();
        let method = Method::GET;
        let source: IpAddr = "10.1.2.3".parse().unwrap();
        let facts = RequestFacts {
            peer: &who,
            method: &method,
            path: &svc_path,
            host: Some("api.internal"),
            route: Some("default"),
            headers: &headers,
            source_ip: source,
            posture: None,
            user: None,
        };
        assert!(
            policy.evaluate(&facts).allowed,
            "bench request must be allowed at n={n}"
        );
        g.bench_with_input(BenchmarkId::new("allowed", n), &n, |b, _| {
            b.iter(|| black_box(policy.evaluate(black_box(&facts))))
        });
        let denied = RequestFacts {
            path: "/admin/users",
            ..facts
        };
        assert!(!policy.evaluate(&denied).allowed);
        g.bench_with_input(BenchmarkId::new("denied", n), &n, |b, _| {
            b.iter(|| black_box(policy.evaluate(black_box(&denied))))
        });
    }
    g.finish();
}

/// Parse + compile (what a reload does, off the request path). Target: well under a second at
/// 10,000 rules, so an operator's edit applies within one reload interval.
fn bench_compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_compile");
    g.sample_size(10);
    for n in [1_000usize, 10_000] {
        let text = policy_text(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter(|| black_box(Policy::from_toml(Path::new("bench.toml"), black_box(text)).unwrap()))
        });
    }
    g.finish();
}

fn bench_normalize(c: &mut Criterion) {
    let mut g = c.benchmark_group("path_normalize");
    g.bench_function("already_normal", |b| {
        b.iter(|| black_box(path::normalize(black_box("/api/v1/items/42"))))
    });
    g.bench_function("dot_segments_and_escapes", |b| {
        b.iter(|| black_box(path::normalize(black_box("/api//v1/./x/../items/%34%32"))))
    });
    g.finish();
}

criterion_group!(benches, bench_policy, bench_compile, bench_normalize);
criterion_main!(benches);
