//! CRL files (`[tls] crls`) that cannot vouch for a client fail closed: a CRL past its nextUpdate
//! (`crl_expired`) or no CRL covering the chain (`unknown_revocation_status`). The client reads
//! the alert `certificate_unknown` (ztgate's revocation data is the problem), not `unknown_ca`
//! (rustls' default, which blames the client's CA). Online revocation is in revocation.rs.

use std::time::Duration;

use http::StatusCode;
use ztgate::pki::CertAuthority;

use crate::support::*;

/// `opts` with the CRL file at `crl` and a fast reload.
fn with_crl(crl: &std::path::Path, audit: Option<&std::path::Path>) -> Opts {
    Opts {
        tls_extra: format!("crls = [\"{}\"]\nreload_interval = \"100ms\"", crl.display()),
        audit: audit.map(|log| format!("file = \"{}\"", log.display())),
        ..Opts::default()
    }
}

async fn metric(s: &Server, needle: &str) -> bool {
    eventually(3, || async { s.metrics().await.contains(needle) }).await
}

#[tokio::test]
async fn a_crl_past_its_next_update_refuses_clients_with_certificate_unknown_until_refreshed() {
    let pki = Pki::new();
    let crl = pki.write("ca.crl.pem", &pki.ca.crl_pem_until(&[], -3600).unwrap());
    let log = pki.path("audit.log");
    let mut s = Server::start_with(pki, with_crl(&crl, Some(&log))).await;

    let err = s.client().get(s.addr, "/app").await.unwrap_err();
    assert!(err.contains("AlertReceived(CertificateUnknown)"), "{err}");
    assert!(!err.contains("UnknownCA"), "{err}");
    assert!(
        metric(&s, "ztgate_tls_handshakes_total{result=\"crl_expired\"} ").await,
        "{}",
        s.metrics().await
    );
    assert!(metric(&s, "ztgate_crl_next_update_seconds{crl=\"ca.crl.pem\"} -").await);

    // A current CRL lets the same client in again.
    std::fs::write(&crl, s.pki.ca.crl_pem(&[]).unwrap()).unwrap();
    let (addr, client) = (s.addr, s.client());
    assert!(
        eventually(5, || async {
            client.get(addr, "/app").await.is_ok_and(|r| r.status == StatusCode::OK)
        })
        .await,
        "a refreshed CRL admits the client"
    );
    s.stop().await;
    let refusals: Vec<_> = audit_records(&log)
        .into_iter()
        .filter(|r| r["kind"] == "handshake")
        .collect();
    assert!(!refusals.is_empty());
    for r in &refusals {
        assert_eq!(r["reason"], "crl_expired", "{r}");
        assert_eq!(r["decision"], "deny", "{r}");
    }
}

#[tokio::test]
async fn a_crl_that_goes_stale_on_reload_closes_open_connections() {
    let pki = Pki::new();
    let crl = pki.write("ca.crl.pem", &pki.ca.crl_pem(&[]).unwrap());
    let s = Server::start_with(pki, with_crl(&crl, None)).await;
    let mut open = s.client().connect_h1(s.addr).await;
    assert_eq!(get_on(&mut open, s.addr, "/app").await, StatusCode::OK);

    // The wrapped verifier re-checks open chains after the reload, and the stale CRL fails them.
    std::fs::write(&crl, s.pki.ca.crl_pem_until(&[], -60).unwrap()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !open.is_closed() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        open.is_closed(),
        "an open connection must not outlive its CRL's freshness"
    );
    assert!(metric(&s, "ztgate_connections_closed_total{reason=\"untrusted\"} ").await);
    let err = s.client().get(s.addr, "/app").await.unwrap_err();
    assert!(err.contains("AlertReceived(CertificateUnknown)"), "{err}");
}

#[tokio::test]
async fn no_crl_covering_the_chain_is_unknown_revocation_status_with_certificate_unknown() {
    let pki = Pki::new();
    let other = CertAuthority::new("other CA").unwrap();
    let crl = pki.write("ca.crl.pem", &other.crl_pem(&[]).unwrap());
    let s = Server::start_with(pki, with_crl(&crl, None)).await;

    let err = s.client().get(s.addr, "/app").await.unwrap_err();
    assert!(err.contains("AlertReceived(CertificateUnknown)"), "{err}");
    assert!(metric(&s, "ztgate_tls_handshakes_total{result=\"unknown_revocation_status\"} ").await);

    // The client's own CA's CRL covers it.
    std::fs::write(&crl, s.pki.ca.crl_pem(&[]).unwrap()).unwrap();
    let (addr, client) = (s.addr, s.client());
    assert!(
        eventually(5, || async {
            client.get(addr, "/app").await.is_ok_and(|r| r.status == StatusCode::OK)
        })
        .await
    );
}

#[tokio::test]
async fn an_expired_ca_left_in_the_bundle_does_not_hide_the_valid_cas_expiry_gauge() {
    let pki = Pki::new();
    let expired = CertAuthority::with_validity("retired CA", -400, -10).unwrap();
    // The expired CA first: once, the bundle's earliest notAfter was its only series.
    pki.write("ca.pem", &format!("{}{}", expired.cert_pem(), pki.ca.cert_pem()));
    let s = Server::start_with(pki, Opts::default()).await;
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    let value = |m: &str, needle: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(needle))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in {m}"))
    };
    let valid = "ztgate_certificate_expiry_seconds{cert=\"client_ca:test CA\"} ";
    assert!(metric(&s, valid).await);
    let m = s.metrics().await;
    // One series per CA: the valid test CA runs ten years, the retired one ended ten days ago.
    assert!(value(&m, valid) > 3000.0 * 86_400.0, "{m}");
    let retired = value(&m, "ztgate_certificate_expiry_seconds{cert=\"client_ca:retired CA\"} ");
    assert!((retired + 10.0 * 86_400.0).abs() < 600.0, "{retired}");
    assert!(!m.contains("cert=\"client_ca\""), "no bundle-wide series any more: {m}");
}
