use super::ocsp::{self, CertId, CertStatus, OcspError};
use super::*;
use crate::pki::{CertAuthority, LeafSpec};

fn now() -> i64 {
    now_unix()
}

fn minted(ca: &CertAuthority) -> crate::pki::Issued {
    let mut spec = LeafSpec::client("c", Some("spiffe://t/c"));
    spec.crl_urls = vec!["ldap://dir/cn=x".into(), "http://127.0.0.1:9/ca.crl".into()];
    spec.ocsp_url = Some("http://127.0.0.1:9/ocsp".into());
    ca.issue(&spec).unwrap()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

#[test]
fn reads_distribution_points_and_the_ocsp_responder_from_the_certificate() {
    let ca = CertAuthority::new("t").unwrap();
    let leaf = minted(&ca);
    let cert = parse(&leaf.der);
    // The LDAP point is skipped: ztgate fetches over HTTP only.
    assert_eq!(
        distribution_points(&cert),
        vec![Uri::from_static("http://127.0.0.1:9/ca.crl")]
    );
    assert_eq!(ocsp_url(&cert), Some(Uri::from_static("http://127.0.0.1:9/ocsp")));
    let plain = ca.issue(&LeafSpec::client("p", None)).unwrap();
    assert!(distribution_points(&parse(&plain.der)).is_empty());
    assert_eq!(ocsp_url(&parse(&plain.der)), None);
}

#[test]
fn the_request_names_the_certificate_by_issuer_hashes_and_serial() {
    let ca = CertAuthority::new("t").unwrap();
    let leaf = minted(&ca);
    let id = CertId::new(&parse(&leaf.der), &parse(ca.der()));
    let req = ocsp::request(&id);
    // OCSPRequest { TBSRequest { requestList { Request { CertID } } } }, CertID with SHA-1.
    let serial = yasna::parse_der(&req, |r| {
        r.read_sequence(|r| {
            r.next().read_sequence(|r| {
                r.next().read_sequence(|r| {
                    r.next().read_sequence(|r| {
                        r.next().read_sequence(|r| {
                            r.next().read_sequence(|r| {
                                let oid = r.next().read_oid()?;
                                assert_eq!(oid.components(), &[1, 3, 14, 3, 2, 26]);
                                r.next().read_null()
                            })?;
                            assert_eq!(r.next().read_bytes()?.len(), 20);
                            assert_eq!(r.next().read_bytes()?.len(), 20);
                            r.next().read_bigint_bytes()
                        })
                    })
                })
            })
        })
    })
    .unwrap();
    assert_eq!(serial.0, leaf.serial);
}

#[test]
fn good_revoked_and_unknown_answers_are_read_with_their_validity() {
    let ca = CertAuthority::new("t").unwrap();
    let leaf = minted(&ca);
    let (cert, issuer) = (parse(&leaf.der), parse(ca.der()));
    let id = CertId::new(&cert, &issuer);
    for status in [CertStatus::Good, CertStatus::Revoked, CertStatus::Unknown] {
        let resp = ca.ocsp_response(&leaf.der, status, Some(3600)).unwrap();
        let answer = ocsp::check_response(&resp, &id, &issuer, now()).unwrap();
        assert_eq!(answer.status, status);
        assert!((answer.this_update - (now() - 60)).abs() <= 2, "{answer:?}");
        assert!((answer.next_update.unwrap() - (now() + 3600)).abs() <= 2, "{answer:?}");
    }
    let open_ended = ca.ocsp_response(&leaf.der, CertStatus::Good, None).unwrap();
    assert_eq!(
        ocsp::check_response(&open_ended, &id, &issuer, now())
            .unwrap()
            .next_update,
        None
    );
}

#[test]
fn forged_misdirected_stale_and_refused_answers_are_not_believed() {
    let ca = CertAuthority::new("t").unwrap();
    let leaf = minted(&ca);
    let (cert, issuer) = (parse(&leaf.der), parse(ca.der()));
    let id = CertId::new(&cert, &issuer);

    // Signed by another CA's key: the issuer's name is right, the signature is not.
    let mallory = CertAuthority::new("t").unwrap();
    let forged = ca
        .ocsp_response_signed_by(&mallory, &leaf.der, CertStatus::Good, Some(3600))
        .unwrap();
    assert!(matches!(
        ocsp::check_response(&forged, &id, &issuer, now()),
        Err(OcspError::BadSignature)
    ));

    // A genuine "good" for another certificate of the same CA.
    let other = ca.issue(&LeafSpec::client("o", None)).unwrap();
    let misdirected = ca.ocsp_response(&other.der, CertStatus::Good, Some(3600)).unwrap();
    assert!(matches!(
        ocsp::check_response(&misdirected, &id, &issuer, now()),
        Err(OcspError::NotForThisCertificate)
    ));

    // Past its nextUpdate (beyond the clock-skew allowance), or read an hour before it was made.
    let stale = ca.ocsp_response(&leaf.der, CertStatus::Good, Some(-600)).unwrap();
    assert!(matches!(
        ocsp::check_response(&stale, &id, &issuer, now()),
        Err(OcspError::Stale(_))
    ));
    let fresh = ca.ocsp_response(&leaf.der, CertStatus::Good, Some(3600)).unwrap();
    assert!(matches!(
        ocsp::check_response(&fresh, &id, &issuer, now() - 3600),
        Err(OcspError::NotYetValid(_))
    ));

    // OCSPResponse { responseStatus tryLater } and plain garbage.
    assert!(matches!(
        ocsp::check_response(&[0x30, 0x03, 0x0a, 0x01, 0x03], &id, &issuer, now()),
        Err(OcspError::Refused("tryLater"))
    ));
    assert!(matches!(
        ocsp::check_response(b"<html>502</html>", &id, &issuer, now()),
        Err(OcspError::Malformed(_))
    ));
    // One flipped byte in the signed data.
    let mut tampered = fresh.clone();
    let at = tampered.len() - 90;
    tampered[at] ^= 1;
    assert!(ocsp::check_response(&tampered, &id, &issuer, now()).is_err());
}

#[test]
fn the_issuer_is_found_by_name_and_when_names_collide_by_key() {
    let ca = CertAuthority::new("same name").unwrap();
    let twin = CertAuthority::new("same name").unwrap();
    let leaf = ca.issue(&LeafSpec::client("c", None)).unwrap();
    let cert = parse(&leaf.der);
    let chain = [CertificateDer::from(leaf.der.clone())];
    let roots = [
        CertificateDer::from(twin.der().to_vec()),
        CertificateDer::from(ca.der().to_vec()),
    ];
    let found = Issuers {
        chain: &chain,
        roots: &roots,
    }
    .find(&cert)
    .unwrap();
    assert_eq!(&*found, ca.der());
    let only_twin = [CertificateDer::from(twin.der().to_vec())];
    // A single candidate by name is taken as is: the handshake already verified the chain.
    assert_eq!(
        &*Issuers {
            chain: &chain,
            roots: &only_twin
        }
        .find(&cert)
        .unwrap(),
        twin.der()
    );
    let stranger = CertAuthority::new("other").unwrap();
    let none = [CertificateDer::from(stranger.der().to_vec())];
    assert!(
        Issuers {
            chain: &chain,
            roots: &none
        }
        .find(&cert)
        .is_err()
    );
}

#[test]
fn a_responder_the_issuer_delegated_to_may_answer_and_no_other_certificate_may() {
    use rcgen::ExtendedKeyUsagePurpose as Eku;
    let ca = CertAuthority::new("t").unwrap();
    let leaf = minted(&ca);
    let (cert, issuer) = (parse(&leaf.der), parse(ca.der()));
    let id = CertId::new(&cert, &issuer);
    let mut spec = LeafSpec::client("ocsp responder", None);
    spec.eku = vec![Eku::OcspSigning];
    let responder = ca.issue(&spec).unwrap();
    let resp = ca
        .ocsp_response_by_responder(&responder, &leaf.der, CertStatus::Revoked, Some(3600))
        .unwrap();
    assert_eq!(
        ocsp::check_response(&resp, &id, &issuer, now()).unwrap().status,
        CertStatus::Revoked
    );
    // A certificate of the same CA without the OCSPSigning EKU (any client) may not answer.
    let client = ca.issue(&LeafSpec::client("client", None)).unwrap();
    let resp = ca
        .ocsp_response_by_responder(&client, &leaf.der, CertStatus::Good, Some(3600))
        .unwrap();
    assert!(matches!(
        ocsp::check_response(&resp, &id, &issuer, now()),
        Err(OcspError::BadSignature)
    ));
    // Nor may a responder that another CA delegated to.
    let other = CertAuthority::new("t").unwrap();
    let stranger = other.issue(&spec).unwrap();
    let resp = ca
        .ocsp_response_by_responder(&stranger, &leaf.der, CertStatus::Good, Some(3600))
        .unwrap();
    assert!(matches!(
        ocsp::check_response(&resp, &id, &issuer, now()),
        Err(OcspError::BadSignature)
    ));
}
