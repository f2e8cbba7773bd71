//! The trusted hop's cache of verified forwarded certificates never outlives trust: a cached
//! identity is refused (`forwarded-cert-untrusted`, 403) once a reloaded CRL revokes it, once its
//! CA is removed from the bundle, and once it expires. Hits and misses are counted.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Empty;
use ztgate::pki::{CertAuthority, Issued, LeafSpec};

use crate::support::*;

const HIT: &str = r#"ztgate_trusted_hop_cache_total{result="hit"}"#;
const MISS: &str = r#"ztgate_trusted_hop_cache_total{result="miss"}"#;

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn xfcc(client: &Issued) -> String {
    format!("Cert=\"{}\"", url_encode(&client.cert_pem))
}

/// `GET /app` from the hop (the admin identity), forwarding `client`'s certificate.
async fn forwarded(s: &Server, client: &Issued) -> StatusCode {
    let req = Request::get("/app")
        .header("x-forwarded-client-cert", xfcc(client))
        .body(Empty::<Bytes>::new())
        .unwrap();
    s.admin_client()
        .send(s.addr, Version::HTTP_11, req)
        .await
        .unwrap()
        .status
}

/// A server whose admin identity is a trusted hop, reloading its TLS files every 100 ms.
async fn hop_server(pki: Pki, tls_extra: String) -> Server {
    let log = pki.path("audit.log");
    Server::start_with(
        pki,
        Opts {
            tls_extra: format!("{tls_extra}\nreload_interval = \"100ms\""),
            audit: Some(format!("file = \"{}\"", log.display())),
            extra: format!("[trusted_hop]\nspiffe_ids = [\"{ADMIN_ID}\"]\n"),
            ..Opts::default()
        },
    )
    .await
}

/// Sends the forwarded request until it is refused (the reload has been picked up), then checks
/// the refusal's audit reason.
async fn refused_as_untrusted(s: &Server, client: &Issued) {
    let refused = eventually(5, || async { forwarded(s, client).await == StatusCode::FORBIDDEN }).await;
    assert!(refused, "the cached identity must stop being accepted");
    let log = s.pki.path("audit.log");
    let audited = eventually(5, || async {
        audit_records(&log)
            .last()
            .is_some_and(|r| r["reason"] == "forwarded-cert-untrusted")
    })
    .await;
    assert!(audited, "{:?}", audit_records(&log).last());
}

/// Two forwarded requests: the second is a cache hit.
async fn accepted_then_cached(s: &Server, client: &Issued) {
    let before = s.metrics().await;
    assert!(before.contains(HIT) && before.contains(MISS), "exported from start-up");
    assert_eq!(forwarded(s, client).await, StatusCode::OK);
    assert_eq!(forwarded(s, client).await, StatusCode::OK);
    let after = s.metrics().await;
    assert!(counter(&after, MISS) > counter(&before, MISS), "the first one verified");
    assert!(counter(&after, HIT) > counter(&before, HIT), "the second one did not");
}

#[tokio::test]
async fn a_cached_forwarded_identity_is_refused_once_a_reloaded_crl_revokes_it() {
    let pki = Pki::new();
    let crl = pki.write("ca.crl.pem", &pki.ca.crl_pem(&[]).unwrap());
    let mut s = hop_server(pki, format!("crls = [\"{}\"]", crl.display())).await;
    let client = s.pki.client.clone();
    accepted_then_cached(&s, &client).await;
    std::fs::write(&crl, s.pki.ca.crl_pem(&[&client.serial]).unwrap()).unwrap();
    refused_as_untrusted(&s, &client).await;
    s.stop().await;
}

#[tokio::test]
async fn a_cached_forwarded_identity_is_refused_once_its_ca_is_removed() {
    // The bundle trusts a partner CA too; the forwarded client is the partner's.
    let pki = Pki::new();
    let partner = CertAuthority::new("partner CA").unwrap();
    let client = partner.issue(&LeafSpec::client("partner", Some(CLIENT_ID))).unwrap();
    pki.write("ca.pem", &format!("{}{}", pki.ca.cert_pem(), partner.cert_pem()));
    let mut s = hop_server(pki, String::new()).await;
    accepted_then_cached(&s, &client).await;
    // The hop's own certificate still chains to the remaining CA, so its connections stay.
    s.pki.write("ca.pem", &s.pki.ca.cert_pem());
    refused_as_untrusted(&s, &client).await;
    s.stop().await;
}

#[tokio::test]
async fn a_cached_forwarded_identity_is_refused_once_it_expires() {
    let pki = Pki::new();
    let mut spec = LeafSpec::client("short-lived", Some(CLIENT_ID));
    spec.valid_for_secs = Some(3);
    let client = pki.issue(&spec);
    let mut s = hop_server(pki, String::new()).await;
    accepted_then_cached(&s, &client).await;
    // No reload: only the certificate's notAfter ends the entry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    refused_as_untrusted(&s, &client).await;
    s.stop().await;
}
