//! The client-certificate profile on arbitrary DER: the input is read as a sequence of
//! certificates (a chain as a client sends it, and the same certificates as a `client_ca`
//! bundle), and as a trust anchor's name constraints. Never a panic; a chain of garbage is never
//! accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use ztgate::tls::profile::{ProfileConfig, TrustAnchors, check_chain, strip_email_constraints};

/// Splits `data` into DER TLVs (definite lengths up to four octets); stops at the first that
/// does not fit.
fn tlvs(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let (len, header) = match data[1] {
            n @ 0..=0x7f => (usize::from(n), 2),
            n @ 0x81..=0x84 => {
                let k = usize::from(n & 0x7f);
                if data.len() < 2 + k {
                    break;
                }
                (data[2..2 + k].iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)), 2 + k)
            }
            _ => break,
        };
        let Some(end) = header.checked_add(len).filter(|e| *e <= data.len()) else {
            break;
        };
        out.push(&data[..end]);
        data = &data[end..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let certs: Vec<CertificateDer<'_>> = tlvs(data).into_iter().map(CertificateDer::from).collect();
    let relaxed = ProfileConfig {
        relaxed: ztgate::tls::profile::Rule::ALL.into_iter().filter(|r| r.relaxable()).collect(),
        ..ProfileConfig::default()
    };
    for cfg in [ProfileConfig::default(), relaxed] {
        let anchors = TrustAnchors::new(&certs, &cfg);
        let _ = anchors.problems().map(|p| p.to_string()).count();
        if let Some((leaf, rest)) = certs.split_first() {
            if let Err(e) = check_chain(leaf, rest, &anchors, &cfg, 1_800_000_000) {
                let _ = (e.to_string(), e.reason());
            }
        }
    }
    let mut anchor = TrustAnchor {
        subject: Vec::new().into(),
        subject_public_key_info: Vec::new().into(),
        name_constraints: Some(data.to_vec().into()),
    };
    strip_email_constraints(&mut anchor);
    if let Some(nc) = &anchor.name_constraints {
        assert!(nc.as_ref().len() <= data.len());
    }
});
