//! The client-certificate profile through the real listener: what WebPKI accepts but no CA
//! should issue is refused in the handshake with `certificate_unknown`, counted and audited under
//! its `profile_*` reason; `[tls.profile]` relaxes a rule or sets the chain depth.

use http::StatusCode;
use ztgate::pki::raw::{self, RawCa, ext};
use ztgate::pki::{CertAuthority, Issued, LeafSpec};

use crate::support::*;

/// Runs `refuse` (which must be refused) and waits until `ztgate_tls_handshakes_total` counted
/// it under `reason`. Metrics are process-wide under `cargo test`: compared before and after.
async fn counted<F: std::future::Future<Output = ()>>(s: &Server, reason: &str, refuse: F) {
    let series = format!("ztgate_tls_handshakes_total{{result=\"{reason}\"}}");
    let before = counter(&s.metrics().await, &series);
    refuse.await;
    let counted = eventually(3, || async { counter(&s.metrics().await, &series) > before }).await;
    assert!(counted, "{series} did not grow from {before}:\n{}", s.metrics().await);
}

/// A PKI whose `client_ca` is `ca` (the server's own certificate still comes from `Pki`'s CA).
fn pki_trusting(ca_pem: &str) -> Pki {
    let pki = Pki::new();
    pki.write("ca.pem", ca_pem);
    pki
}

fn client(s: &Server, cert: &Issued) -> Client {
    Client::new(&s.pki.ca.cert_pem(), Some(cert))
}

/// Refused in the handshake with `certificate_unknown`, counted under `reason`.
async fn assert_refused(s: &Server, cert: &Issued, reason: &str) {
    counted(s, reason, async {
        let err = client(s, cert)
            .get(s.addr, "/app")
            .await
            .expect_err("handshake must fail");
        assert!(err.contains("AlertReceived(CertificateUnknown)"), "{err}");
    })
    .await;
}

/// Refused by rustls itself (before the profile runs): some alert, counted as `bad_certificate`.
async fn assert_refused_by_rustls(s: &Server, cert: &Issued) {
    counted(s, "bad_certificate", async {
        let err = client(s, cert)
            .get(s.addr, "/app")
            .await
            .expect_err("handshake must fail");
        assert!(err.contains("AlertReceived"), "{err}");
    })
    .await;
}

async fn assert_served(s: &Server, cert: &Issued) -> String {
    let r = client(s, cert).get(s.addr, "/app").await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

fn key_cert_sign(c: &mut raw::RawCert) {
    c.extension_mut(ext::KEY_USAGE).unwrap().value = ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_CERT_SIGN]);
}

#[tokio::test]
async fn a_client_certificate_that_can_sign_certificates_is_refused_counted_and_audited() {
    let ca = RawCa::root("profile CA").unwrap();
    let pki = pki_trusting(&ca.cert_pem());
    let log = pki.path("audit.log");
    let mut s = Server::start_with(
        pki,
        Opts {
            audit: Some(format!("file = \"{}\"", log.display())),
            ..Opts::default()
        },
    )
    .await;
    let good = raw::issue_client(&ca, "client", Some(CLIENT_ID), &[], |_| {}).unwrap();
    let body = assert_served(&s, &good).await;
    assert_eq!(echoed(&body, "x-ztgate-identity"), [CLIENT_ID]);

    // WebPKI lets an end-entity certificate asserting keyCertSign through; the profile does not.
    let signer = raw::issue_client(&ca, "client", Some(CLIENT_ID), &[], key_cert_sign).unwrap();
    assert_refused(&s, &signer, "profile_ee_is_ca").await;
    s.stop().await;
    let refusals: Vec<_> = audit_records(&log)
        .into_iter()
        .filter(|r| r["kind"] == "handshake")
        .collect();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["reason"], "profile_ee_is_ca");
    assert_eq!(refusals[0]["decision"], "deny");
}

#[tokio::test]
async fn a_relaxed_rule_lets_its_certificates_in_and_the_others_still_apply() {
    let ca = RawCa::root("profile CA").unwrap();
    let s = Server::start_with(
        pki_trusting(&ca.cert_pem()),
        Opts {
            tls_extra: "[tls.profile]\nrelax = [\"ee-is-ca\"]".into(),
            ..Opts::default()
        },
    )
    .await;
    let signer = raw::issue_client(&ca, "client", Some(CLIENT_ID), &[], key_cert_sign).unwrap();
    assert_served(&s, &signer).await;
    let zero_serial = raw::issue_client(&ca, "client", Some(CLIENT_ID), &[], |c| c.serial = vec![0]).unwrap();
    assert_refused(&s, &zero_serial, "profile_serial").await;
}

#[tokio::test]
async fn an_expired_trust_anchor_verifies_no_client_and_the_valid_one_still_does() {
    let pki = Pki::new();
    let retired = CertAuthority::with_validity("retired CA", -400, -10).unwrap();
    pki.write("ca.pem", &format!("{}{}", retired.cert_pem(), pki.ca.cert_pem()));
    let s = Server::start_with(pki, Opts::default()).await;
    assert_eq!(s.client().get(s.addr, "/app").await.unwrap().status, StatusCode::OK);
    // rustls' WebPKI ignores a trust anchor's validity: this client got in before.
    let stale = retired.issue(&LeafSpec::client("old", Some(CLIENT_ID))).unwrap();
    assert_refused(&s, &stale, "profile_anchor_expired").await;
}

/// `depth` intermediates under the server's client CA, and a client certificate from the last.
fn chain_of(pki: &Pki, depth: usize) -> Issued {
    let mut cas: Vec<CertAuthority> = Vec::new();
    for n in 1..=depth {
        let next = cas
            .last()
            .map_or(&*pki.ca, |c| c)
            .intermediate(&format!("CA {n}"))
            .unwrap();
        cas.push(next);
    }
    cas.last()
        .map_or(&*pki.ca, |c| c)
        .issue(&LeafSpec::client("deep", Some(CLIENT_ID)))
        .unwrap()
}

#[tokio::test]
async fn a_chain_longer_than_max_chain_depth_is_refused() {
    let s = Server::start(Opts::default()).await;
    assert_served(&s, &chain_of(&s.pki, 4)).await;
    assert_refused(&s, &chain_of(&s.pki, 5), "profile_chain_depth").await;

    // Up to WebPKI's own limit when configured; beyond it rustls refuses by itself.
    let deep = Server::start(Opts {
        tls_extra: "[tls.profile]\nmax_chain_depth = 6".into(),
        ..Opts::default()
    })
    .await;
    assert_served(&deep, &chain_of(&deep.pki, 6)).await;
    assert_refused_by_rustls(&deep, &chain_of(&deep.pki, 7)).await;
}

/// An X.509-SVID as SPIRE issues it (see the profile's unit tests for the shape), through a real
/// handshake; and the same SVID with a non-critical SAN under its empty subject, which Go-based
/// issuers never write, refused.
#[tokio::test]
async fn a_spire_shaped_svid_is_served_and_a_non_conforming_one_is_not() {
    let ca = RawCa::root_with("", |c| {
        c.subject = raw::name(&[(raw::OID_C, "US"), (raw::OID_O, "SPIFFE")]);
        c.issuer = c.subject.clone();
        c.extension_mut(ext::KEY_USAGE).unwrap().value =
            ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_CERT_SIGN, ext::CRL_SIGN]);
        c.push_extension(
            ext::SUBJECT_ALT_NAME,
            false,
            ext::general_names(&[ext::uri("spiffe://ztgate.dev")]),
        );
    })
    .unwrap();
    let s = Server::start_with(pki_trusting(&ca.cert_pem()), Opts::default()).await;
    let svid = |subject: Vec<u8>| {
        raw::issue_client(&ca, "", Some(CLIENT_ID), &[], move |c| {
            c.subject = subject;
            c.push_extension(ext::BASIC_CONSTRAINTS, true, ext::basic_constraints(false, None));
            c.extension_mut(ext::KEY_USAGE).unwrap().value =
                ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_ENCIPHERMENT, ext::KEY_AGREEMENT]);
            c.extension_mut(ext::EXT_KEY_USAGE).unwrap().value =
                ext::ext_key_usage(&[ext::EKU_SERVER_AUTH, ext::EKU_CLIENT_AUTH]);
        })
        .unwrap()
    };
    let spire = svid(raw::name(&[
        (raw::OID_C, "US"),
        (raw::OID_O, "SPIRE"),
        (raw::OID_UNIQUE_ID, "9f86d081884c7d65"),
    ]));
    let body = assert_served(&s, &spire).await;
    assert_eq!(echoed(&body, "x-ztgate-identity"), [CLIENT_ID]);
    assert_refused(&s, &svid(raw::cn("")), "profile_san_not_critical").await;
}

/// RFC 822 name constraints on a `client_ca` certificate: rustls refuses every certificate with an
/// email address under them; ztgate evaluates them, and leaves the other name forms to rustls.
#[tokio::test]
async fn email_name_constraints_on_client_ca_admit_compliant_addresses_only() {
    let ca = RawCa::root_with("Mail CA", |c| {
        c.push_extension(
            ext::NAME_CONSTRAINTS,
            true,
            ext::name_constraints(Some(&[ext::email(".corp.example"), ext::dns("corp.example")]), None),
        )
    })
    .unwrap();
    let s = Server::start_with(pki_trusting(&ca.cert_pem()), Opts::default()).await;
    let with_sans = |sans: Vec<Vec<u8>>| {
        raw::issue_client(&ca, "alice", None, &[], move |c| {
            c.push_extension(ext::SUBJECT_ALT_NAME, false, ext::general_names(&sans));
        })
        .unwrap()
    };
    let alice = with_sans(vec![ext::email("alice@mail.corp.example"), ext::uri(CLIENT_ID)]);
    let body = assert_served(&s, &alice).await;
    assert_eq!(echoed(&body, "x-ztgate-identity"), [CLIENT_ID]);
    assert_refused(
        &s,
        &with_sans(vec![ext::email("eve@evil.example")]),
        "profile_email_constraint",
    )
    .await;
    // The DNS subtree is still rustls' to enforce.
    assert_refused_by_rustls(&s, &with_sans(vec![ext::dns("api.evil.example")])).await;
}
