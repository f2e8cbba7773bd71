//! `x-forwarded-client-cert` in Envoy's format, rendered once per connection.
//!
//! Grammar (Envoy docs, "x-forwarded-client-cert"): elements are `;`-separated `Key=Value`
//! pairs; a value containing `,`, `;`, `=` or `"` is wrapped in double quotes, with `"` escaped
//! as `\"`. `Subject` is always quoted, as Envoy does. `URI` and `DNS` repeat once per SAN.

use std::borrow::Cow;
use std::fmt::Write;

use super::PeerIdentity;

/// Renders the XFCC element for `peer`. `by` is the URI SAN of ztgate's own server certificate.
pub fn render_xfcc(peer: &PeerIdentity, by: Option<&str>) -> String {
    let mut out = String::with_capacity(128);
    let mut pair = |key: &str, value: &str, force_quote: bool| {
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(key);
        out.push('=');
        let value = header_safe(value);
        if force_quote || value.contains([',', ';', '=', '"']) {
            out.push('"');
            for c in value.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        } else {
            out.push_str(&value);
        }
    };
    if let Some(by) = by {
        pair("By", by, false);
    }
    pair("Hash", &peer.fingerprint_sha256, false);
    pair("Subject", &peer.subject, true);
    for uri in &peer.uris {
        pair("URI", uri, false);
    }
    for dns in &peer.dns {
        pair("DNS", dns, false);
    }
    out
}

/// Makes certificate text safe for an HTTP header value: control characters, non-ASCII bytes
/// and `%` are percent-encoded, so a crafted subject can neither break the header nor smuggle a
/// second one, and the encoding stays reversible.
pub fn header_safe(s: &str) -> Cow<'_, str> {
    let clean = |b: u8| (0x20..0x7f).contains(&b) && b != b'%';
    if s.bytes().all(clean) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if clean(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}
