//! The path: its depth, extra or out-of-order certificates, same-named CAs; the bundle.

use super::*;

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
