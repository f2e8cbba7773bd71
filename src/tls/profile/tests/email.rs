//! RFC 822 name constraints, evaluated in WebPKI's place.

use super::*;

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
