//! One test per rule, each with a certificate the rule lets through and one it refuses (minted
//! field by field with `pki::raw` where rcgen cannot write the defect), and a check that relaxing
//! exactly that rule lets the refused one through. Then the path search, and certificates shaped
//! the way SPIRE, cert-manager, Vault and step-ca issue theirs.

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::pki::raw::{self, RawCa, RawCert, ext};
use crate::pki::{CertAuthority, LeafSpec};

fn now() -> i64 {
    super::super::freshness::unix_now()
}

fn ders(certs: &[&[u8]]) -> Vec<CertificateDer<'static>> {
    certs.iter().map(|c| CertificateDer::from(c.to_vec())).collect()
}

/// The profile's verdict on `chain` (leaf first, as presented) under `client_ca`.
fn verdict(chain: &[&[u8]], client_ca: &[&[u8]], cfg: &ProfileConfig) -> Result<(), ProfileViolation> {
    let anchors = TrustAnchors::new(&ders(client_ca), cfg);
    let chain = ders(chain);
    check_chain(&chain[0], &chain[1..], &anchors, cfg, now())
}

fn strict() -> ProfileConfig {
    ProfileConfig::default()
}

fn relaxed(rule: Rule) -> ProfileConfig {
    ProfileConfig {
        relaxed: [rule].into_iter().collect(),
        ..ProfileConfig::default()
    }
}

#[track_caller]
fn allowed(chain: &[&[u8]], client_ca: &[&[u8]]) {
    if let Err(e) = verdict(chain, client_ca, &strict()) {
        panic!("refused: {e} ({})", e.reason());
    }
}

/// Refused for breaking `rule` (and only for that: relaxing it lets the chain through).
#[track_caller]
fn refused(rule: Rule, chain: &[&[u8]], client_ca: &[&[u8]]) -> ProfileViolation {
    let e = verdict(chain, client_ca, &strict()).expect_err("the profile let it through");
    assert_eq!(e.rule(), rule, "{e}");
    assert_eq!(e.reason(), rule.reason());
    if rule.relaxable() {
        let relaxed = verdict(chain, client_ca, &relaxed(rule));
        assert!(relaxed.is_ok(), "relaxing {} still refuses: {relaxed:?}", rule.name());
    }
    e
}

fn key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

/// A conforming client certificate of `ca`, changed by `edit`.
fn leaf(ca: &RawCa, edit: impl FnOnce(&mut RawCert)) -> Vec<u8> {
    let mut tpl = ca
        .leaf_template("client", Some("spiffe://corp.example/ns/a/sa/b"), &key())
        .unwrap();
    edit(&mut tpl);
    ca.sign(&tpl).unwrap()
}

fn root() -> RawCa {
    RawCa::root("Root CA").unwrap()
}

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

fn refs(chain: &[Vec<u8>]) -> Vec<&[u8]> {
    chain.iter().map(Vec::as_slice).collect()
}

#[test]
fn the_chain_may_hold_at_most_max_chain_depth_intermediates() {
    let r = root();
    let mut cas = vec![r];
    for n in 1..=7 {
        let next = cas[n - 1].intermediate(&format!("CA {n}")).unwrap();
        cas.push(next);
    }
    let chain_under = |depth: usize| -> Vec<Vec<u8>> {
        let mut chain = vec![leaf(&cas[depth], |_| {})];
        chain.extend((1..=depth).rev().map(|n| cas[n].der.clone()));
        chain
    };
    let root = cas[0].der.clone();
    for depth in 0..=4 {
        allowed(&refs(&chain_under(depth)), &[&root]);
    }
    let five = chain_under(5);
    let e = verdict(&refs(&five), &[&root], &strict()).unwrap_err();
    assert_eq!(
        e,
        ProfileViolation::ChainDepth {
            intermediates: 5,
            max: 4
        }
    );
    assert_eq!(e.reason(), "profile_chain_depth");
    let six = ProfileConfig {
        max_chain_depth: 6,
        ..strict()
    };
    assert_eq!(verdict(&refs(&five), &[&root], &six), Ok(()));
    assert_eq!(verdict(&refs(&chain_under(6)), &[&root], &six), Ok(()));
    let zero = ProfileConfig {
        max_chain_depth: 0,
        ..strict()
    };
    assert_eq!(verdict(&refs(&chain_under(0)), &[&root], &zero), Ok(()));
    assert_eq!(
        verdict(&refs(&chain_under(1)), &[&root], &zero).map_err(|e| e.rule()),
        Err(Rule::ChainDepth)
    );
}

#[test]
fn the_path_is_found_whatever_else_and_in_whatever_order_the_client_sends() {
    let r = root();
    let i1 = r.intermediate("CA 1").unwrap();
    let i2 = i1.intermediate("CA 2").unwrap();
    let l = leaf(&i2, |_| {});
    let unrelated = root();
    // Out of order, with the root and an unrelated certificate thrown in.
    allowed(&[&l, &r.der, &i1.der, &unrelated.der, &i2.der], &[&r.der]);
    // A defective certificate the client sends but that is not on the path is not judged.
    let junk = RawCa::root_with("Junk", |c| c.serial = vec![0]).unwrap();
    allowed(&[&l, &i2.der, &junk.der, &i1.der], &[&r.der]);
    // Refused: a chain that does not reach client_ca (WebPKI would have refused it first).
    refused(Rule::Path, &[&l, &i2.der], &[&r.der]);
}

#[test]
fn of_two_cas_with_one_name_the_one_whose_key_signed_is_judged() {
    // A rotated root keeps its name; the old one has expired and stays in the bundle.
    let old = RawCa::root_with("Corp Root", |c| {
        c.not_before = OffsetDateTime::now_utc() - Duration::days(400);
        c.not_after = OffsetDateTime::now_utc() - Duration::days(1);
    })
    .unwrap();
    let new = RawCa::root("Corp Root").unwrap();
    let bundle: [&[u8]; 2] = [&old.der, &new.der];
    // By key identifier...
    allowed(&[&leaf(&new, |_| {})], &bundle);
    refused(Rule::AnchorExpired, &[&leaf(&old, |_| {})], &bundle);
    // ...and without one (aki-missing relaxed), by signature.
    let cfg = relaxed(Rule::AkiMissing);
    let no_aki = |ca: &RawCa| leaf(ca, |c| c.remove_extension(ext::AUTHORITY_KEY_ID));
    assert_eq!(verdict(&[&no_aki(&new)], &bundle, &cfg), Ok(()));
    assert_eq!(
        verdict(&[&no_aki(&old)], &bundle, &cfg).map_err(|e| e.rule()),
        Err(Rule::AnchorExpired)
    );
}

#[test]
fn the_bundle_problems_are_its_cas_that_break_the_profile() {
    let good = root();
    let no_ku = RawCa::root_with("OpenSSL CA", |c| c.remove_extension(ext::KEY_USAGE)).unwrap();
    let anchors = TrustAnchors::new(&ders(&[&good.der, &no_ku.der]), &strict());
    let problems: Vec<_> = anchors.problems().map(ProfileViolation::rule).collect();
    assert_eq!(problems, [Rule::CaKeyUsage]);
    let relaxed = TrustAnchors::new(&ders(&[&good.der, &no_ku.der]), &relaxed(Rule::CaKeyUsage));
    assert_eq!(relaxed.problems().count(), 0);
}

#[test]
fn every_rule_has_a_distinct_name_and_reason_and_only_path_depth_and_email_are_not_relaxable() {
    let mut names: Vec<_> = Rule::ALL.iter().map(|r| r.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), Rule::ALL.len());
    for r in Rule::ALL {
        assert_eq!(Rule::from_name(r.name()), Some(r));
        assert_eq!(r.reason(), format!("profile_{}", r.name().replace('-', "_")));
        assert_eq!(
            r.relaxable(),
            !matches!(r, Rule::Path | Rule::ChainDepth | Rule::EmailConstraint)
        );
    }
    assert_eq!(Rule::from_name("ca-keyusage"), None);
}

const OID_EMAIL_ADDRESS: &[u64] = &[1, 2, 840, 113549, 1, 9, 1];

/// A root constraining email names: mailboxes on `corp.example` and below, but not the CEO's.
fn email_constrained_root(edit: impl FnOnce(&mut RawCert)) -> RawCa {
    RawCa::root_with("Mail CA", |c| {
        c.push_extension(
            ext::NAME_CONSTRAINTS,
            true,
            ext::name_constraints(
                Some(&[ext::email("corp.example"), ext::email(".corp.example")]),
                Some(&[ext::email("ceo@corp.example")]),
            ),
        );
        edit(c);
    })
    .unwrap()
}

fn with_email_san(ca: &RawCa, email: &str) -> Vec<u8> {
    leaf(ca, |c| {
        c.extension_mut(ext::SUBJECT_ALT_NAME).unwrap().value = ext::general_names(&[ext::email(email)]);
    })
}

#[test]
fn a_trust_anchors_email_name_constraints_are_evaluated() {
    let ca = email_constrained_root(|_| {});
    for ok in [
        "alice@corp.example",
        "bob@mail.corp.example",
        "alice@CORP.Example",
        "CEO@corp.example",
    ] {
        allowed(&[&with_email_san(&ca, ok)], &[&ca.der]);
    }
    // Certificates without an email address are not affected.
    allowed(&[&leaf(&ca, |_| {})], &[&ca.der]);
    for (bad, what) in [
        ("eve@evil.example", "outside the permitted subtrees"),
        ("eve@corp.example.evil", "outside the permitted subtrees"),
        ("eve@xcorp.example", "outside the permitted subtrees"),
        ("ceo@corp.example", "within an excluded subtree"),
        ("ceo@CORP.EXAMPLE", "within an excluded subtree"),
        ("no-at-sign", "not a mailbox"),
    ] {
        let e = refused(Rule::EmailConstraint, &[&with_email_san(&ca, bad)], &[&ca.der]);
        assert!(e.to_string().contains(what), "{bad}: {e}");
        assert!(e.to_string().contains("`CN=Mail CA`"), "{e}");
    }
    // An emailAddress in the subject is judged too, SAN or not.
    let subject_email = leaf(&ca, |c| {
        c.subject = raw::name(&[(raw::OID_CN, "eve"), (OID_EMAIL_ADDRESS, "eve@evil.example")]);
    });
    refused(Rule::EmailConstraint, &[&subject_email], &[&ca.der]);
}

#[test]
fn an_intermediates_email_name_constraints_apply_to_subject_email_addresses_below_it() {
    let r = root();
    let i = r
        .intermediate_with("Team CA", |c| {
            c.push_extension(
                ext::NAME_CONSTRAINTS,
                true,
                ext::name_constraints(Some(&[ext::email(".team.corp.example")]), None),
            )
        })
        .unwrap();
    let with_subject_email = |email: &str| {
        leaf(&i, |c| {
            c.subject = raw::name(&[(raw::OID_CN, "x"), (OID_EMAIL_ADDRESS, email)]);
        })
    };
    allowed(&[&with_subject_email("a@host.team.corp.example"), &i.der], &[&r.der]);
    let e = refused(
        Rule::EmailConstraint,
        &[&with_subject_email("a@corp.example"), &i.der],
        &[&r.der],
    );
    assert!(e.to_string().contains("intermediate CA 1 `CN=Team CA`"), "{e}");
}

#[test]
fn only_the_email_subtrees_are_taken_from_what_webpki_enforces() {
    use rustls::pki_types::TrustAnchor;
    let anchor = |nc: Vec<u8>| {
        // WebPKI keeps the NameConstraints SEQUENCE's content.
        let (_, content, _) = super::facts::tlv(&nc).unwrap();
        TrustAnchor {
            subject: Vec::new().into(),
            subject_public_key_info: Vec::new().into(),
            name_constraints: Some(content.to_vec().into()),
        }
    };
    let mut mixed = anchor(ext::name_constraints(
        Some(&[ext::email("corp.example"), ext::dns("corp.example")]),
        Some(&[ext::email("ceo@corp.example")]),
    ));
    strip_email_constraints(&mut mixed);
    let want = ext::name_constraints(Some(&[ext::dns("corp.example")]), None);
    assert_eq!(
        mixed.name_constraints.as_deref(),
        Some(super::facts::tlv(&want).unwrap().1)
    );
    let mut email_only = anchor(ext::name_constraints(Some(&[ext::email("corp.example")]), None));
    strip_email_constraints(&mut email_only);
    assert_eq!(email_only.name_constraints, None);
    // Nothing to take, or constraints that do not parse: left as they are.
    for nc in [
        ext::name_constraints(Some(&[ext::dns("corp.example")]), None),
        raw::seq(&[&[0xa0, 0x05, 0x30, 0x03, 0x81]]),
    ] {
        let mut a = anchor(nc);
        let before = a.name_constraints.clone();
        strip_email_constraints(&mut a);
        assert_eq!(a.name_constraints, before);
    }
}

// Real issuers' certificates, minted the way each writes them (assumptions from their sources and
// defaults as of 2025, stated per issuer; docs/security.md repeats them).

/// SPIRE server CA (self-signed, no UpstreamAuthority): subject `C=US, O=SPIFFE`, the trust
/// domain as a URI SAN, critical basicConstraints cA, critical keyUsage
/// certSign+cRLSign+digitalSignature, a subjectKeyIdentifier (Go). X.509-SVID: subject
/// `C=US, O=SPIRE, x500UniqueIdentifier=…`, critical basicConstraints cA FALSE, critical keyUsage
/// digitalSignature+keyEncipherment+keyAgreement, EKU serverAuth+clientAuth, the SPIFFE ID as
/// the only (non-critical) URI SAN, SKI, AKI (Go copies the parent's SKI), 128-bit serial.
#[test]
fn spire_x509_svids_pass() {
    let ca = RawCa::root_with("", |c| {
        c.subject = raw::name(&[(raw::OID_C, "US"), (raw::OID_O, "SPIFFE")]);
        c.issuer = c.subject.clone();
        c.extension_mut(ext::KEY_USAGE).unwrap().value =
            ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_CERT_SIGN, ext::CRL_SIGN]);
        c.push_extension(
            ext::SUBJECT_ALT_NAME,
            false,
            ext::general_names(&[ext::uri("spiffe://example.org")]),
        );
    })
    .unwrap();
    let downstream = ca
        .intermediate_with("", |c| {
            c.subject = raw::name(&[(raw::OID_C, "US"), (raw::OID_O, "SPIFFE"), (raw::OID_UNIQUE_ID, "a1b2")]);
            c.push_extension(
                ext::SUBJECT_ALT_NAME,
                false,
                ext::general_names(&[ext::uri("spiffe://example.org")]),
            );
        })
        .unwrap();
    let svid = |ca: &RawCa| {
        leaf(ca, |c| {
            c.subject = raw::name(&[
                (raw::OID_C, "US"),
                (raw::OID_O, "SPIRE"),
                (raw::OID_UNIQUE_ID, "9f86d081"),
            ]);
            c.push_extension(ext::BASIC_CONSTRAINTS, true, ext::basic_constraints(false, None));
            c.extension_mut(ext::KEY_USAGE).unwrap().value =
                ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_ENCIPHERMENT, ext::KEY_AGREEMENT]);
            c.extension_mut(ext::EXT_KEY_USAGE).unwrap().value =
                ext::ext_key_usage(&[ext::EKU_SERVER_AUTH, ext::EKU_CLIENT_AUTH]);
            let id = raw::key_id(&c.spki);
            c.push_extension(ext::SUBJECT_KEY_ID, false, ext::subject_key_id(&id));
        })
    };
    allowed(&[&svid(&ca)], &[&ca.der]);
    allowed(&[&svid(&downstream), &downstream.der], &[&ca.der]);
}

/// cert-manager: a `SelfSigned` issuer's `isCA: true` Certificate (critical basicConstraints cA,
/// critical keyUsage digitalSignature+keyEncipherment+certSign: cert-manager adds certSign to a
/// CA's usages, SKI from Go, no AKI), then a `CA` issuer's leaf with only `dnsNames` (empty
/// subject, so Go marks the SAN critical), critical keyUsage digitalSignature+keyEncipherment,
/// no EKU, a 128-bit serial that may need the DER sign octet.
#[test]
fn cert_manager_ca_issuer_certificates_pass() {
    let ca = RawCa::root_with("cluster-ca", |c| {
        c.extension_mut(ext::KEY_USAGE).unwrap().value =
            ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_ENCIPHERMENT, ext::KEY_CERT_SIGN]);
    })
    .unwrap();
    let l = leaf(&ca, |c| {
        c.subject = raw::cn("");
        c.serial = [&[0x00][..], &[0xc3; 16]].concat();
        c.extension_mut(ext::KEY_USAGE).unwrap().value =
            ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_ENCIPHERMENT]);
        c.remove_extension(ext::EXT_KEY_USAGE);
        let san = c.extension_mut(ext::SUBJECT_ALT_NAME).unwrap();
        san.critical = true;
        san.value = ext::general_names(&[ext::dns("api.default.svc.cluster.local")]);
    });
    allowed(&[&l], &[&ca.der]);
}

/// Vault PKI: a root with critical basicConstraints cA and keyUsage certSign+cRLSign, SKI and an
/// AKI naming its own key, a 20-octet serial (< 2^159); a role's leaf with CN and DNS SANs,
/// critical keyUsage digitalSignature+keyAgreement+keyEncipherment, EKU serverAuth+clientAuth,
/// SKI, AKI, and the mount's AIA (issuing certificate URL).
#[test]
fn vault_pki_certificates_pass() {
    let serial = || [&[0x5a][..], &[0x17; 19]].concat();
    let ca = RawCa::root_with("vault-root", |c| {
        c.serial = serial();
        let id = raw::key_id(&c.spki);
        c.push_extension(ext::AUTHORITY_KEY_ID, false, ext::authority_key_id(&id));
    })
    .unwrap();
    let int = ca.intermediate_with("vault-int", |c| c.serial = serial()).unwrap();
    let ca_issuers = raw::seq(&[&raw::seq(&[
        &raw::oid(&[1, 3, 6, 1, 5, 5, 7, 48, 2]),
        &ext::uri("https://vault.example:8200/v1/pki_int/ca"),
    ])]);
    let l = leaf(&int, |c| {
        c.serial = serial();
        c.subject = raw::cn("app.service.consul");
        c.extension_mut(ext::KEY_USAGE).unwrap().value =
            ext::key_usage(&[ext::DIGITAL_SIGNATURE, ext::KEY_ENCIPHERMENT, ext::KEY_AGREEMENT]);
        c.extension_mut(ext::EXT_KEY_USAGE).unwrap().value =
            ext::ext_key_usage(&[ext::EKU_SERVER_AUTH, ext::EKU_CLIENT_AUTH]);
        c.extension_mut(ext::SUBJECT_ALT_NAME).unwrap().value = ext::general_names(&[ext::dns("app.service.consul")]);
        let id = raw::key_id(&c.spki);
        c.push_extension(ext::SUBJECT_KEY_ID, false, ext::subject_key_id(&id));
        c.push_extension(ext::AUTHORITY_INFO_ACCESS, false, ca_issuers);
    });
    allowed(&[&l, &int.der], &[&ca.der]);
}

/// step-ca (`step ca init`): root with critical basicConstraints cA pathLen 1 and intermediate
/// with pathLen 0, both critical keyUsage certSign+cRLSign, SKI, the intermediate's AKI; a leaf
/// from the default template: CN and SANs, critical keyUsage digitalSignature, EKU
/// serverAuth+clientAuth, SKI, AKI, and step's non-critical provisioner extension.
#[test]
fn step_ca_certificates_pass() {
    let ca = RawCa::root_with("Smallstep Root CA", |c| {
        c.extension_mut(ext::BASIC_CONSTRAINTS).unwrap().value = ext::basic_constraints(true, Some(1));
    })
    .unwrap();
    let int = ca
        .intermediate_with("Smallstep Intermediate CA", |c| {
            c.extension_mut(ext::BASIC_CONSTRAINTS).unwrap().value = ext::basic_constraints(true, Some(0));
        })
        .unwrap();
    let l = leaf(&int, |c| {
        c.subject = raw::cn("svc.internal");
        c.extension_mut(ext::EXT_KEY_USAGE).unwrap().value =
            ext::ext_key_usage(&[ext::EKU_SERVER_AUTH, ext::EKU_CLIENT_AUTH]);
        c.extension_mut(ext::SUBJECT_ALT_NAME).unwrap().value = ext::general_names(&[ext::dns("svc.internal")]);
        let id = raw::key_id(&c.spki);
        c.push_extension(ext::SUBJECT_KEY_ID, false, ext::subject_key_id(&id));
        c.push_extension(
            &[1, 3, 6, 1, 4, 1, 37476, 9000, 64, 1],
            false,
            raw::seq(&[&raw::tlv(0x02, &[1])]),
        );
    });
    allowed(&[&l, &int.der], &[&ca.der]);
}

/// `openssl req -x509` with OpenSSL 3's default `v3_ca` section: critical basicConstraints cA,
/// SKI, an AKI naming its own key, and no keyUsage at all. Refused by `ca-key-usage`, which is
/// why that rule is relaxable.
#[test]
fn an_openssl_default_ca_needs_ca_key_usage_relaxed() {
    let ca = RawCa::root_with("OpenSSL Test CA", |c| {
        c.remove_extension(ext::KEY_USAGE);
        let id = raw::key_id(&c.spki);
        c.push_extension(ext::AUTHORITY_KEY_ID, false, ext::authority_key_id(&id));
    })
    .unwrap();
    refused(Rule::CaKeyUsage, &[&leaf(&ca, |_| {})], &[&ca.der]);
}
