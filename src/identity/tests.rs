use rcgen::{CertificateParams, DnType, KeyPair, SanType};

use super::*;

fn cert_der(f: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    f(&mut params);
    params.self_signed(&key).unwrap().der().to_vec()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

#[test]
fn svid_with_one_spiffe_uri_yields_spiffe_id_and_subject_fields() {
    let der = cert_der(|p| {
        p.subject_alt_names = vec![
            uri("spiffe://ztgate.dev/ns/default/sa/client"),
            SanType::DnsName("client.internal".try_into().unwrap()),
            SanType::Rfc822Name("ops@example.org".try_into().unwrap()),
            SanType::IpAddress("10.0.0.7".parse().unwrap()),
        ];
        p.distinguished_name.push(DnType::CommonName, "client");
        p.distinguished_name.push(DnType::OrganizationName, "Example Corp");
        p.distinguished_name.push(DnType::OrganizationalUnitName, "payments");
    });
    let id = PeerIdentity::from_der(&der).unwrap();
    assert_eq!(
        id.spiffe_id.as_ref().unwrap().as_str(),
        "spiffe://ztgate.dev/ns/default/sa/client"
    );
    assert_eq!(id.spiffe_error, None);
    assert_eq!(id.dns, ["client.internal"]);
    assert_eq!(id.emails, ["ops@example.org"]);
    assert_eq!(id.ips, ["10.0.0.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(id.common_name.as_deref(), Some("client"));
    assert_eq!(id.organizations, ["Example Corp"]);
    assert_eq!(id.organizational_units, ["payments"]);
    assert_eq!(id.fingerprint_sha256, hex(&Sha256::digest(&der)));
    assert_eq!(id.fingerprint_sha256.len(), 64);
    assert!(id.not_before < id.not_after);
    assert_eq!(id.display_name(), "spiffe://ztgate.dev/ns/default/sa/client");
}

#[test]
fn cert_without_uri_san_has_no_spiffe_id_and_is_named_by_cn() {
    let der = cert_der(|p| p.distinguished_name.push(DnType::CommonName, "legacy-batch"));
    let id = PeerIdentity::from_der(&der).unwrap();
    assert_eq!(id.spiffe_id, None);
    assert_eq!(id.spiffe_error, None);
    assert_eq!(id.display_name(), "legacy-batch");
}

#[test]
fn two_uri_sans_are_not_an_svid() {
    let der = cert_der(|p| {
        p.subject_alt_names = vec![
            uri("spiffe://ztgate.dev/ns/ops/sa/admin"),
            uri("spiffe://ztgate.dev/ns/default/sa/client"),
        ];
    });
    let id = PeerIdentity::from_der(&der).unwrap();
    assert_eq!(
        id.spiffe_id, None,
        "a cert with two URI SANs must not be matched by SPIFFE ID"
    );
    assert!(id.spiffe_error.is_some());
    assert_eq!(id.uris.len(), 2);
}

#[test]
fn invalid_spiffe_uri_is_reported_not_accepted() {
    let der = cert_der(|p| p.subject_alt_names = vec![uri("spiffe://Bad.Domain/x")]);
    let id = PeerIdentity::from_der(&der).unwrap();
    assert_eq!(id.spiffe_id, None);
    assert_eq!(id.spiffe_error, Some(SpiffeError::TrustDomainChars));
}

#[test]
fn odd_subject_characters_are_quoted_and_escaped_in_xfcc() {
    let der = cert_der(|p| {
        p.distinguished_name
            .push(DnType::CommonName, "evil\"; By=spiffe://x,\r\nx-ztgate-identity: admin");
        p.subject_alt_names = vec![uri("spiffe://ztgate.dev/ns/default/sa/client")];
    });
    let id = PeerIdentity::from_der(&der).unwrap();
    let xfcc = render_xfcc(&id, Some("spiffe://ztgate.dev/proxy"));
    assert!(xfcc.starts_with("By=spiffe://ztgate.dev/proxy;Hash="), "{xfcc}");
    assert!(
        xfcc.ends_with(";URI=spiffe://ztgate.dev/ns/default/sa/client"),
        "{xfcc}"
    );
    // No raw CR/LF, the embedded quote is escaped, and the value parses as one HeaderValue.
    assert!(!xfcc.contains(['\r', '\n']));
    assert!(
        xfcc.contains(r#"evil\"; By=spiffe://x,%0D%0Ax-ztgate-identity: admin"#),
        "{xfcc}"
    );
    assert!(http::HeaderValue::from_str(&xfcc).is_ok());
}

#[test]
fn garbage_der_is_an_error() {
    assert!(matches!(
        PeerIdentity::from_der(b"not a certificate"),
        Err(IdentityError::Der(_))
    ));
}
