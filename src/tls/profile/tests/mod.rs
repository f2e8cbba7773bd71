//! One test per rule, each with a certificate the rule lets through and one it refuses (minted
//! field by field with `pki::raw` where rcgen cannot write the defect), and a check that relaxing
//! exactly that rule lets the refused one through (`rules.rs`); the path search, its depth and the
//! bundle (`chains.rs`); email name constraints (`email.rs`); certificates shaped the way SPIRE,
//! cert-manager, Vault and step-ca issue theirs (`issuers.rs`).

mod chains;
mod email;
mod issuers;
mod rules;

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
