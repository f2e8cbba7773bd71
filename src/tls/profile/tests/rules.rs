//! A test per rule: an allowed and a refused certificate, and the rule relaxed.

use super::*;

#[test]
fn ztgates_own_pki_and_conforming_chains_pass() {
    let ca = CertAuthority::new("dev CA").unwrap();
    let issuing = ca.intermediate("issuing CA").unwrap();
    let direct = ca.issue(&LeafSpec::client("client", Some("spiffe://a/b"))).unwrap();
    let under = issuing.issue(&LeafSpec::client("client", None)).unwrap();
    allowed(&[&direct.der], &[ca.der()]);
    allowed(&[&under.der, issuing.der()], &[ca.der()]);
    let server = ca.issue(&LeafSpec::server("server")).unwrap();
    allowed(&[&server.der], &[ca.der()]);

    let r = root();
    let i = r.intermediate("Issuing CA").unwrap();
    allowed(&[&leaf(&r, |_| {})], &[&r.der]);
    allowed(&[&leaf(&i, |_| {}), &i.der], &[&r.der]);
    // Refused: a chain WebPKI would not have verified (no issuer in client_ca) is a path error.
    let stranger = RawCa::root("Stranger CA").unwrap();
    refused(Rule::Path, &[&leaf(&stranger, |_| {})], &[&r.der]);
}

#[test]
fn an_end_entity_asserting_ca_or_key_cert_sign_is_refused() {
    let r = root();
    allowed(
        &[&leaf(&r, |c| {
            c.push_extension(ext::BASIC_CONSTRAINTS, true, ext::basic_constraints(false, None));
        })],
        &[&r.der],
    );
    let e = refused(
        Rule::EeIsCa,
        &[&leaf(&r, |c| {
            c.extension_mut(ext::KEY_USAGE).unwrap().value =
                ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_CERT_SIGN]);
        })],
        &[&r.der],
    );
    assert!(e.to_string().contains("keyCertSign"), "{e}");
    let e = refused(
        Rule::EeIsCa,
        &[&leaf(&r, |c| {
            c.push_extension(ext::BASIC_CONSTRAINTS, true, ext::basic_constraints(true, None));
        })],
        &[&r.der],
    );
    assert!(e.to_string().contains("cA TRUE"), "{e}");
    assert_eq!(e.cert().map(|c| c.at), Some(Position::Leaf));
}

#[test]
fn serials_must_be_positive_and_at_most_20_octets() {
    let r = root();
    let with_serial = |serial: Vec<u8>| leaf(&r, |c| c.serial = serial);
    // 20 octets, and 20 octets of magnitude behind the sign octet DER needs.
    allowed(&[&with_serial([0x7f; 20].to_vec())], &[&r.der]);
    let mut padded = vec![0x00];
    padded.extend([0xff; 20]);
    allowed(&[&with_serial(padded)], &[&r.der]);
    allowed(&[&with_serial(vec![0x01])], &[&r.der]);

    for (serial, what) in [
        (vec![0x00], "zero"),
        (vec![0xff, 0x01], "negative"),
        (vec![0x80], "negative"),
        ([0x7f; 21].to_vec(), "longer than 20 octets"),
    ] {
        let e = refused(Rule::Serial, &[&with_serial(serial)], &[&r.der]);
        assert!(e.to_string().contains(what), "{e}");
    }
    // The trust anchor's too.
    let zero = RawCa::root_with("Zero CA", |c| c.serial = vec![0]).unwrap();
    let e = refused(Rule::Serial, &[&leaf(&zero, |_| {})], &[&zero.der]);
    assert_eq!(e.cert().map(|c| c.at), Some(Position::Anchor));
}

const UNKNOWN_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 99999, 1];

#[test]
fn an_unknown_critical_extension_is_refused_on_every_certificate_of_the_chain() {
    let r = root();
    let i = r.intermediate("Issuing CA").unwrap();
    // Unknown but not critical, and known and critical (EKU): fine.
    allowed(
        &[
            &leaf(&i, |c| {
                c.push_extension(UNKNOWN_OID, false, vec![0x05, 0x00]);
                c.extension_mut(ext::EXT_KEY_USAGE).unwrap().critical = true;
            }),
            &i.der,
        ],
        &[&r.der],
    );
    let critical = |c: &mut RawCert| c.push_extension(UNKNOWN_OID, true, vec![0x05, 0x00]);
    let e = refused(Rule::UnknownCriticalExt, &[&leaf(&i, critical), &i.der], &[&r.der]);
    assert!(e.to_string().contains("1.3.6.1.4.1.99999.1"), "{e}");
    let bad_i = r.intermediate_with("Issuing CA", critical).unwrap();
    let e = refused(
        Rule::UnknownCriticalExt,
        &[&leaf(&bad_i, |_| {}), &bad_i.der],
        &[&r.der],
    );
    assert_eq!(e.cert().map(|c| c.at), Some(Position::Intermediate(1)));
    // WebPKI ignores the trust anchor's extensions; the profile does not.
    let bad_root = RawCa::root_with("Root CA", critical).unwrap();
    let e = refused(Rule::UnknownCriticalExt, &[&leaf(&bad_root, |_| {})], &[&bad_root.der]);
    assert_eq!(e.cert().map(|c| c.at), Some(Position::Anchor));
}

#[test]
fn an_extension_present_twice_is_refused() {
    let r = root();
    allowed(
        &[&leaf(&r, |c| c.push_extension(UNKNOWN_OID, false, vec![0x05, 0x00]))],
        &[&r.der],
    );
    let twice = leaf(&r, |c| {
        c.push_extension(UNKNOWN_OID, false, vec![0x05, 0x00]);
        c.push_extension(UNKNOWN_OID, false, vec![0x05, 0x00]);
    });
    refused(Rule::DuplicateExt, &[&twice], &[&r.der]);
}

#[test]
fn a_ca_needs_critical_basic_constraints_with_ca_true() {
    let r = root();
    let conforming = r.intermediate("Issuing CA").unwrap();
    allowed(&[&leaf(&conforming, |_| {}), &conforming.der], &[&r.der]);
    for (edit, what) in [
        (
            Box::new(|c: &mut RawCert| c.extension_mut(ext::BASIC_CONSTRAINTS).unwrap().critical = false)
                as Box<dyn Fn(&mut RawCert)>,
            "is not critical",
        ),
        (
            Box::new(|c: &mut RawCert| c.remove_extension(ext::BASIC_CONSTRAINTS)),
            "is missing",
        ),
        (
            Box::new(|c: &mut RawCert| {
                c.extension_mut(ext::BASIC_CONSTRAINTS).unwrap().value = ext::basic_constraints(false, None);
            }),
            "says cA FALSE",
        ),
    ] {
        // As a trust anchor (WebPKI does not look at an anchor's basicConstraints at all).
        let anchor = RawCa::root_with("Root CA", &edit).unwrap();
        let e = refused(Rule::CaBasicConstraints, &[&leaf(&anchor, |_| {})], &[&anchor.der]);
        assert!(e.to_string().contains(what), "{e}");
        assert_eq!(e.cert().map(|c| c.at), Some(Position::Anchor));
    }
    // As an intermediate: WebPKI requires cA TRUE there, but not that it be critical.
    let non_critical = r
        .intermediate_with("Issuing CA", |c| {
            c.extension_mut(ext::BASIC_CONSTRAINTS).unwrap().critical = false;
        })
        .unwrap();
    let e = refused(
        Rule::CaBasicConstraints,
        &[&leaf(&non_critical, |_| {}), &non_critical.der],
        &[&r.der],
    );
    assert_eq!(e.cert().map(|c| c.at), Some(Position::Intermediate(1)));
}

#[test]
fn a_ca_needs_key_usage_with_key_cert_sign() {
    let r = root();
    allowed(&[&leaf(&r, |_| {})], &[&r.der]);
    let no_ku = RawCa::root_with("Root CA", |c| c.remove_extension(ext::KEY_USAGE)).unwrap();
    let e = refused(Rule::CaKeyUsage, &[&leaf(&no_ku, |_| {})], &[&no_ku.der]);
    assert!(e.to_string().contains("is missing"), "{e}");
    let i = r
        .intermediate_with("Issuing CA", |c| {
            c.extension_mut(ext::KEY_USAGE).unwrap().value = ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::CRL_SIGN]);
        })
        .unwrap();
    let e = refused(Rule::CaKeyUsage, &[&leaf(&i, |_| {}), &i.der], &[&r.der]);
    assert!(e.to_string().contains("lacks keyCertSign"), "{e}");
}

#[test]
fn a_ca_with_an_empty_subject_is_refused() {
    let r = root();
    let named = r.intermediate("Issuing CA").unwrap();
    allowed(&[&leaf(&named, |_| {}), &named.der], &[&r.der]);
    let nameless = r
        .intermediate_with("", |c| {
            c.push_extension(
                ext::SUBJECT_ALT_NAME,
                true,
                ext::general_names(&[ext::uri("spiffe://corp.example")]),
            )
        })
        .unwrap();
    refused(Rule::CaSubject, &[&leaf(&nameless, |_| {}), &nameless.der], &[&r.der]);
}

#[test]
fn a_certificate_that_is_not_self_signed_needs_an_authority_key_identifier() {
    let r = root();
    // A self-signed root needs none (RawCa::root writes none).
    allowed(&[&leaf(&r, |_| {})], &[&r.der]);
    let e = refused(
        Rule::AkiMissing,
        &[&leaf(&r, |c| c.remove_extension(ext::AUTHORITY_KEY_ID))],
        &[&r.der],
    );
    assert_eq!(e.cert().map(|c| c.at), Some(Position::Leaf));
    // An AKI with only authorityCertIssuer and serial does not count.
    let issuer_serial = raw::seq(&[&raw::tlv(0xa1, &raw::tlv(0xa4, &r.subject)), &raw::tlv(0x82, &[0x01])]);
    refused(
        Rule::AkiMissing,
        &[&leaf(&r, |c| {
            c.extension_mut(ext::AUTHORITY_KEY_ID).unwrap().value = issuer_serial;
        })],
        &[&r.der],
    );
    let i = r
        .intermediate_with("Issuing CA", |c| c.remove_extension(ext::AUTHORITY_KEY_ID))
        .unwrap();
    let e = refused(Rule::AkiMissing, &[&leaf(&i, |_| {}), &i.der], &[&r.der]);
    assert_eq!(e.cert().map(|c| c.at), Some(Position::Intermediate(1)));
    // An intermediate installed as the trust anchor is not self-signed: it needs one too.
    let with_aki = r.intermediate("Issuing CA").unwrap();
    allowed(&[&leaf(&with_aki, |_| {})], &[&with_aki.der]);
    let e = refused(Rule::AkiMissing, &[&leaf(&i, |_| {})], &[&i.der]);
    assert_eq!(e.cert().map(|c| c.at), Some(Position::Anchor));
}

#[test]
fn a_ca_needs_a_subject_key_identifier() {
    let r = root();
    // An end-entity certificate needs none.
    allowed(&[&leaf(&r, |c| c.remove_extension(ext::SUBJECT_KEY_ID))], &[&r.der]);
    let no_ski = RawCa::root_with("Root CA", |c| c.remove_extension(ext::SUBJECT_KEY_ID)).unwrap();
    let e = refused(Rule::SkiMissing, &[&leaf(&no_ski, |_| {})], &[&no_ski.der]);
    assert_eq!(e.cert().map(|c| c.at), Some(Position::Anchor));
    let i = r
        .intermediate_with("Issuing CA", |c| c.remove_extension(ext::SUBJECT_KEY_ID))
        .unwrap();
    refused(Rule::SkiMissing, &[&leaf(&i, |_| {}), &i.der], &[&r.der]);
}

#[test]
fn key_identifiers_must_link_each_certificate_to_its_issuer() {
    let r = root();
    allowed(&[&leaf(&r, |_| {})], &[&r.der]);
    refused(
        Rule::KeyIdMismatch,
        &[&leaf(&r, |c| {
            c.extension_mut(ext::AUTHORITY_KEY_ID).unwrap().value = ext::authority_key_id(&[0x42; 20]);
        })],
        &[&r.der],
    );
    let i = r
        .intermediate_with("Issuing CA", |c| {
            c.extension_mut(ext::AUTHORITY_KEY_ID).unwrap().value = ext::authority_key_id(&[0x42; 20]);
        })
        .unwrap();
    refused(Rule::KeyIdMismatch, &[&leaf(&i, |_| {}), &i.der], &[&r.der]);
    // A self-signed root whose AKI names its own key (as Vault writes them) links; another does not.
    let own = RawCa::root_with("Root CA", |c| {
        let id = raw::key_id(&c.spki);
        c.push_extension(ext::AUTHORITY_KEY_ID, false, ext::authority_key_id(&id));
    })
    .unwrap();
    allowed(&[&leaf(&own, |_| {})], &[&own.der]);
    let other = RawCa::root_with("Root CA", |c| {
        c.push_extension(ext::AUTHORITY_KEY_ID, false, ext::authority_key_id(&[0x42; 20]));
    })
    .unwrap();
    refused(Rule::KeyIdMismatch, &[&leaf(&other, |_| {})], &[&other.der]);
}

#[test]
fn key_identifiers_must_not_be_critical() {
    let r = root();
    allowed(&[&leaf(&r, |_| {})], &[&r.der]);
    let e = refused(
        Rule::KeyIdCritical,
        &[&leaf(&r, |c| {
            c.extension_mut(ext::AUTHORITY_KEY_ID).unwrap().critical = true
        })],
        &[&r.der],
    );
    assert!(e.to_string().contains("authorityKeyIdentifier"), "{e}");
    let i = r
        .intermediate_with("Issuing CA", |c| {
            c.extension_mut(ext::SUBJECT_KEY_ID).unwrap().critical = true
        })
        .unwrap();
    let e = refused(Rule::KeyIdCritical, &[&leaf(&i, |_| {}), &i.der], &[&r.der]);
    assert!(e.to_string().contains("subjectKeyIdentifier"), "{e}");
}

#[test]
fn a_subject_alt_name_must_hold_a_name() {
    let r = root();
    allowed(&[&leaf(&r, |_| {})], &[&r.der]);
    refused(
        Rule::SanEmpty,
        &[&leaf(&r, |c| {
            c.extension_mut(ext::SUBJECT_ALT_NAME).unwrap().value = ext::general_names(&[]);
        })],
        &[&r.der],
    );
}

#[test]
fn an_empty_subject_needs_a_critical_subject_alt_name() {
    let r = root();
    // Go's crypto/x509 (so SPIRE, cert-manager, Vault, step-ca) marks the SAN critical then.
    allowed(
        &[&leaf(&r, |c| {
            c.subject = raw::cn("");
            c.extension_mut(ext::SUBJECT_ALT_NAME).unwrap().critical = true;
        })],
        &[&r.der],
    );
    let e = refused(
        Rule::SanNotCritical,
        &[&leaf(&r, |c| c.subject = raw::cn(""))],
        &[&r.der],
    );
    assert!(e.to_string().contains("non-critical"), "{e}");
    let e = refused(
        Rule::SanNotCritical,
        &[&leaf(&r, |c| {
            c.subject = raw::cn("");
            c.remove_extension(ext::SUBJECT_ALT_NAME);
        })],
        &[&r.der],
    );
    assert!(e.to_string().contains("no subjectAltName"), "{e}");
}

fn permitted_dns() -> Vec<u8> {
    ext::name_constraints(Some(&[ext::dns("corp.example")]), None)
}

#[test]
fn name_constraints_on_an_end_entity_are_refused() {
    let r = root();
    let i = r
        .intermediate_with("Issuing CA", |c| {
            c.push_extension(ext::NAME_CONSTRAINTS, true, permitted_dns())
        })
        .unwrap();
    allowed(&[&leaf(&i, |_| {}), &i.der], &[&r.der]);
    refused(
        Rule::EeNameConstraints,
        &[&leaf(&r, |c| {
            c.push_extension(ext::NAME_CONSTRAINTS, true, permitted_dns())
        })],
        &[&r.der],
    );
}

#[test]
fn name_constraints_without_any_subtree_are_refused() {
    let r = root();
    let excluded_only = r
        .intermediate_with("Issuing CA", |c| {
            c.push_extension(
                ext::NAME_CONSTRAINTS,
                true,
                ext::name_constraints(None, Some(&[ext::dns("evil.example")])),
            )
        })
        .unwrap();
    allowed(&[&leaf(&excluded_only, |_| {}), &excluded_only.der], &[&r.der]);
    for nc in [
        ext::name_constraints(None, None),
        ext::name_constraints(Some(&[]), Some(&[])),
    ] {
        let i = r
            .intermediate_with("Issuing CA", |c| c.push_extension(ext::NAME_CONSTRAINTS, true, nc))
            .unwrap();
        refused(Rule::EmptyNameConstraints, &[&leaf(&i, |_| {}), &i.der], &[&r.der]);
    }
    let anchor = RawCa::root_with("Root CA", |c| {
        c.push_extension(ext::NAME_CONSTRAINTS, true, ext::name_constraints(None, None))
    })
    .unwrap();
    refused(Rule::EmptyNameConstraints, &[&leaf(&anchor, |_| {})], &[&anchor.der]);
}

#[test]
fn rsa_keys_need_2048_bits_and_a_whole_number_of_octets() {
    let r = root();
    for bits in [2048, 3072, 4096] {
        allowed(&[&leaf(&r, |c| c.spki = raw::rsa_spki(bits))], &[&r.der]);
    }
    for bits in [1024, 2047, 2049, 2052] {
        let e = refused(
            Rule::RsaKeySize,
            &[&leaf(&r, |c| c.spki = raw::rsa_spki(bits))],
            &[&r.der],
        );
        assert!(e.to_string().contains(&format!("{bits} bits")), "{e}");
    }
}

#[test]
fn a_malformed_authority_info_access_is_refused() {
    let r = root();
    allowed(
        &[&leaf(&r, |c| {
            c.push_extension(
                ext::AUTHORITY_INFO_ACCESS,
                false,
                ext::aia_ocsp("http://ocsp.corp.example"),
            )
        })],
        &[&r.der],
    );
    for (critical, value) in [
        (true, ext::aia_ocsp("http://ocsp.corp.example")),
        (false, raw::seq(&[])),
        (false, vec![0x04, 0x01, 0x00]),
        (
            false,
            [ext::aia_ocsp("http://ocsp.corp.example"), vec![0x05, 0x00]].concat(),
        ),
    ] {
        refused(
            Rule::Aia,
            &[&leaf(&r, |c| {
                c.push_extension(ext::AUTHORITY_INFO_ACCESS, critical, value)
            })],
            &[&r.der],
        );
    }
}

#[test]
fn an_expired_trust_anchor_verifies_no_client() {
    let valid = root();
    allowed(&[&leaf(&valid, |_| {})], &[&valid.der]);
    let expired = RawCa::root_with("Old Root CA", |c| {
        c.not_before = OffsetDateTime::now_utc() - Duration::days(400);
        c.not_after = OffsetDateTime::now_utc() - Duration::days(10);
    })
    .unwrap();
    let e = refused(
        Rule::AnchorExpired,
        &[&leaf(&expired, |_| {})],
        &[&valid.der, &expired.der],
    );
    assert!(e.to_string().contains("Old Root CA"), "{e}");
    // Next to it in the bundle, the valid CA's clients pass.
    allowed(&[&leaf(&valid, |_| {})], &[&expired.der, &valid.der]);
}
