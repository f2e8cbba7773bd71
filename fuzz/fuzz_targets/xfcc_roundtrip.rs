//! XFCC rendering: for any certificate text (subject, URIs, DNS names — attacker-influenced via
//! the CA's issuance), the header is visible ASCII only, is exactly one element, and parses back
//! to the same values (after `header_safe` encoding). A crafted subject cannot add a pair or an
//! element.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztgate::identity::{PeerIdentity, header_safe, parse_xfcc, render_xfcc};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.split('\u{0}');
    let subject = parts.next().unwrap_or_default().to_string();
    let uris: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .split('\n')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let dns: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .split('\n')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let by = parts.next();
    let id = PeerIdentity {
        spiffe_id: None,
        spiffe_error: None,
        uris: uris.clone(),
        dns: dns.clone(),
        emails: vec![],
        ips: vec![],
        common_name: None,
        organizations: vec![],
        organizational_units: vec![],
        subject: subject.clone(),
        issuer: String::new(),
        serial: "01".into(),
        fingerprint_sha256: "ab".repeat(32),
        spki_sha256: String::new(),
        not_before: 0,
        not_after: 0,
    };
    let xfcc = render_xfcc(&id, by);
    assert!(xfcc.bytes().all(|b| (0x20..0x7f).contains(&b)), "{xfcc:?}");
    let parsed = parse_xfcc(&xfcc).expect("rendered XFCC must parse");
    assert_eq!(parsed.len(), 1, "one element only: {xfcc:?}");
    let pairs = &parsed[0];
    let mut expect: Vec<(String, String)> = Vec::new();
    if let Some(by) = by {
        expect.push(("By".into(), header_safe(by).into_owned()));
    }
    expect.push(("Hash".into(), "ab".repeat(32)));
    expect.push(("Subject".into(), header_safe(&subject).into_owned()));
    expect.extend(uris.iter().map(|u| ("URI".to_string(), header_safe(u).into_owned())));
    expect.extend(dns.iter().map(|d| ("DNS".to_string(), header_safe(d).into_owned())));
    assert_eq!(pairs, &expect, "{xfcc:?}");
});
