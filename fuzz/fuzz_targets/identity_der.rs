//! Identity extraction from arbitrary DER (what a client certificate could be, had it passed
//! verification): never a panic, whatever comes out renders as a header-safe XFCC value that
//! parses back, its DNs parse as RFC 4514, and its name is header-safe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ztgate::identity::{PeerIdentity, parse_xfcc, render_xfcc};

fuzz_target!(|data: &[u8]| {
    if let Ok(id) = PeerIdentity::from_der(data) {
        let xfcc = render_xfcc(&id, None);
        assert!(xfcc.bytes().all(|b| (0x20..0x7f).contains(&b)), "{xfcc:?}");
        assert!(parse_xfcc(&xfcc).is_ok(), "{xfcc:?}");
        assert_eq!(id.fingerprint_sha256.len(), 64);
        // DNs are RFC 4514 strings that parse back; the name is a header value.
        assert!(ztgate::identity::dn::parse(&id.subject).is_ok(), "{:?}", id.subject);
        assert!(ztgate::identity::dn::parse(&id.issuer).is_ok(), "{:?}", id.issuer);
        let name = id.display_name().to_string();
        assert!(name.bytes().all(|b| (0x20..0x7f).contains(&b)), "{name:?}");
    }
});
