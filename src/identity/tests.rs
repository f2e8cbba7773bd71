use rcgen::{CertificateParams, DnType, KeyPair, SanType};

use x509_parser::prelude::{FromDer, X509Certificate};

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
    assert_eq!(
        id.display_name().to_string(),
        "spiffe://ztgate.dev/ns/default/sa/client"
    );
}

#[test]
fn cert_without_uri_san_has_no_spiffe_id_and_is_named_by_typed_cn() {
    let der = cert_der(|p| p.distinguished_name.push(DnType::CommonName, "legacy-batch"));
    let id = PeerIdentity::from_der(&der).unwrap();
    assert_eq!(id.spiffe_id, None);
    assert_eq!(id.spiffe_error, None);
    assert_eq!(id.display_name().to_string(), "cn:legacy-batch");
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
    // No raw CR/LF, the embedded quote is escaped twice (RFC 4514 in the DN, then XFCC's own
    // quoting), the separators inside the CN are escaped, and the value parses as one HeaderValue.
    assert!(!xfcc.contains(['\r', '\n']));
    assert!(
        xfcc.contains(r#"Subject="CN=evil\\\"\\; By=spiffe://x\\,\\0D\\0Ax-ztgate-identity: admin";"#),
        "{xfcc}"
    );
    assert!(http::HeaderValue::from_str(&xfcc).is_ok());
    let subject = &parse_xfcc(&xfcc).unwrap()[0][2].1;
    assert_eq!(
        dn::parse(subject).unwrap(),
        [[(
            "CN".to_string(),
            dn::DnValue::Text("evil\"; By=spiffe://x,\r\nx-ztgate-identity: admin".into())
        )]]
    );
}

#[test]
fn garbage_der_is_an_error() {
    assert!(matches!(
        PeerIdentity::from_der(b"not a certificate"),
        Err(IdentityError::Der(_))
    ));
}

#[test]
fn a_dn_value_that_looks_like_a_separator_is_escaped_and_parses_back_as_one_attribute() {
    let der = cert_der(|p| {
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::OrganizationName, "Acme, CN=admin");
        p.distinguished_name.push(DnType::CommonName, "client");
    });
    let id = PeerIdentity::from_der(&der).unwrap();
    // RFC 4514: most specific RDN (last in the DER) first, `,` without spaces.
    assert_eq!(id.subject, r"CN=client,O=Acme\, CN=admin");
    assert_eq!(id.issuer, id.subject, "self-signed");
    let parsed = dn::parse(&id.subject).unwrap();
    let cns: Vec<_> = parsed.iter().flatten().filter(|(t, _)| t == "CN").collect();
    assert_eq!(cns, [&("CN".to_string(), dn::DnValue::Text("client".into()))]);
    // What x509-parser renders on its own cannot be told apart from a DN with a second CN.
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let unescaped = cert.subject().to_string();
    assert_eq!(unescaped, "O=Acme, CN=admin, CN=client");
    assert!(dn::parse(&unescaped).is_err());
}

#[test]
fn rfc4514_escapes_specials_anywhere_hash_and_space_at_the_ends_and_controls_as_hex() {
    let cases = [
        ("plain value", "plain value"),
        (r#"a"b+c,d;e<f>g\h"#, r#"a\"b\+c\,d\;e\<f\>g\\h"#),
        ("#lead", r"\#lead"),
        ("in#side = ok", "in#side = ok"),
        (" both ", r"\ both\ "),
        (" ", r"\ "),
        ("nul\0bell\x07del\x7f", r"nul\00bell\07del\7F"),
        ("Zürich", "Zürich"),
        ("", ""),
    ];
    for (value, want) in cases {
        let mut out = String::new();
        dn::escape_into(&mut out, value);
        assert_eq!(out, want, "{value:?}");
        let back = dn::parse(&format!("CN={out}")).unwrap();
        assert_eq!(back, [[("CN".to_string(), dn::DnValue::Text(value.into()))]], "{out}");
    }
    for unescaped in [
        "CN=a,b", "CN=a;b", "CN= a", "CN=a ", "CN=a\"b", "CN=a\\", "CN=a\\zz", "CN", "=a",
    ] {
        assert!(dn::parse(unescaped).is_err(), "{unescaped:?} must not parse");
    }
    // `+` and `,` between attributes are separators.
    assert_eq!(dn::parse("CN=a+OU=b,O=c").unwrap().len(), 2);
}

/// A Name's DER: each inner slice one RDN of (OID arcs, value DER) pairs.
fn name_der(rdns: &[&[(&[u64], Vec<u8>)]]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence_of(|w| {
            for rdn in rdns {
                w.next().write_set_of(|w| {
                    for (oid, value) in rdn.iter() {
                        w.next().write_sequence(|w| {
                            w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(oid));
                            w.next().write_der(value);
                        });
                    }
                });
            }
        })
    })
}

fn utf8(s: &str) -> Vec<u8> {
    yasna::construct_der(|w| w.write_utf8_string(s))
}

#[test]
fn multi_valued_rdns_join_with_plus_and_unnamed_or_non_string_values_are_hex_der() {
    let bmp = yasna::construct_der(|w| w.write_bmp_string("Dr"));
    let der = name_der(&[
        &[(&[2, 5, 4, 3], utf8("a")), (&[2, 5, 4, 11], utf8("b"))],
        &[(&[1, 2, 3, 4], utf8("x"))],
        &[(&[2, 5, 4, 3], yasna::construct_der(|w| w.write_i64(5)))],
        &[(&[2, 5, 4, 12], bmp)],
        &[(
            &[0, 9, 2342, 19200300, 100, 1, 25],
            yasna::construct_der(|w| w.write_ia5_string("corp")),
        )],
    ]);
    let (_, name) = x509_parser::x509::X509Name::from_der(&der).unwrap();
    let rendered = dn::render(&name);
    assert_eq!(rendered, "DC=corp,title=Dr,CN=#020105,1.2.3.4=#0C0178,CN=a+OU=b");
    assert!(dn::check_rendered(&rendered).is_ok());
    // The same DN written any other way is refused, with the form ztgate would match.
    for other in [
        "1.2.3.4=x",
        "CN=a+OU=b,1.2.3.4=#0c0178",
        "cn=a+OU=b",
        "TITLE=Dr",
        "2.5.4.3=a",
    ] {
        assert!(dn::check_rendered(other).is_err(), "{other}");
    }
}

#[test]
fn policy_issuer_strings_must_be_written_as_ztgate_renders_dns() {
    for ok in [
        "CN=corp CA",
        r"CN=client,O=Acme\, CN=admin",
        "O=Corp+OU=pki,DC=example",
        "",
    ] {
        assert_eq!(dn::check_rendered(ok), Ok(()), "{ok}");
    }
    let legacy = dn::check_rendered("CN=corp CA, O=Corp").unwrap_err();
    assert!(legacy.contains("not an RFC 4514 distinguished name"), "{legacy}");
    assert!(legacy.contains("-nameopt RFC2253"), "{legacy}");
    let cases = [
        ("cn=corp CA", "CN=corp CA"),
        (r"CN=a\2Cb", r"CN=a\,b"),
        ("2.5.4.3=#0C0161", "CN=a"),
        (r"CN=x\=y", "CN=x=y"),
    ];
    for (written, canonical) in cases {
        let e = dn::check_rendered(written).unwrap_err();
        assert!(
            e.contains(&format!("writes this DN as `{canonical}`")),
            "{written}: {e}"
        );
    }
}

#[test]
fn only_an_svid_is_named_by_a_spiffe_id_other_names_are_typed() {
    let forged = cert_der(|p| {
        p.distinguished_name
            .push(DnType::CommonName, "spiffe://ztgate.dev/ns/ops/sa/admin")
    });
    let id = PeerIdentity::from_der(&forged).unwrap();
    assert_eq!(id.display_name().to_string(), "cn:spiffe://ztgate.dev/ns/ops/sa/admin");
    let svid = cert_der(|p| {
        p.distinguished_name.push(DnType::CommonName, "admin");
        p.subject_alt_names = vec![uri("spiffe://ztgate.dev/ns/ops/sa/admin")];
    });
    let id = PeerIdentity::from_der(&svid).unwrap();
    assert_eq!(id.display_name().to_string(), "spiffe://ztgate.dev/ns/ops/sa/admin");
    // An invalid SPIFFE URI is no SVID either: named by its CN.
    let bad = cert_der(|p| {
        p.distinguished_name.push(DnType::CommonName, "admin");
        p.subject_alt_names = vec![uri("spiffe://Ztgate.dev/ns/ops/sa/admin")];
    });
    assert_eq!(
        PeerIdentity::from_der(&bad).unwrap().display_name().to_string(),
        "cn:admin"
    );
    // No CN: the fingerprint; a CN with control characters or non-ASCII stays header-safe.
    let bare = cert_der(|p| p.distinguished_name = rcgen::DistinguishedName::new());
    let id = PeerIdentity::from_der(&bare).unwrap();
    assert_eq!(
        id.display_name().to_string(),
        format!("sha256:{}", id.fingerprint_sha256)
    );
    let odd = cert_der(|p| p.distinguished_name.push(DnType::CommonName, "a\r\nb %é"));
    let name = PeerIdentity::from_der(&odd).unwrap().display_name().to_string();
    assert_eq!(name, "cn:a%0D%0Ab %25%C3%A9");
    assert!(http::HeaderValue::from_str(&name).is_ok());
}
