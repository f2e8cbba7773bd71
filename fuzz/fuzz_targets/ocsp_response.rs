//! OCSP responses as a responder (or whoever sits between it and ztgate) could send them: the
//! outer structure and the signed response data are parsed without a panic, and arbitrary bytes
//! are never taken as a verified answer.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use x509_parser::prelude::FromDer;
use ztgate::pki::{CertAuthority, LeafSpec};
use ztgate::tls::revocation::ocsp;

struct Fixture {
    ca: Vec<u8>,
    leaf: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let ca = CertAuthority::new("fuzz CA").expect("CA");
        let leaf = ca.issue(&LeafSpec::client("c", None)).expect("leaf");
        Fixture {
            ca: ca.der().to_vec(),
            leaf: leaf.der,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = ocsp::parse_unverified(data);
    let f = fixture();
    let (_, ca) = x509_parser::certificate::X509Certificate::from_der(&f.ca).expect("CA parses");
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&f.leaf).expect("leaf parses");
    let id = ocsp::CertId::new(&leaf, &ca);
    // Only the CA can sign an answer; the fuzzer cannot forge one.
    if let Ok(answer) = ocsp::check_response(data, &id, &ca, 1_800_000_000) {
        panic!("unsigned input accepted: {answer:?}");
    }
});
