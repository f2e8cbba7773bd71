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

/// Why an `x-forwarded-client-cert` value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XfccError {
    #[error("XFCC pair without `=` at byte {0}")]
    MissingEquals(usize),
    #[error("XFCC quoted value not closed")]
    UnclosedQuote,
    #[error("XFCC quoted value followed by other characters at byte {0}")]
    TrailingAfterQuote(usize),
    #[error("XFCC empty key at byte {0}")]
    EmptyKey(usize),
}

/// Parses an XFCC header value (the grammar [`render_xfcc`] writes, Envoy's): a `,`-separated
/// list of elements, each a `;`-separated list of `Key=Value` pairs, values optionally quoted
/// with `\"` and `\\` escapes. Returns the elements' pairs in order; values are unescaped but
/// not percent-decoded.
pub fn parse_xfcc(s: &str) -> Result<Vec<Vec<(String, String)>>, XfccError> {
    let bytes = s.as_bytes();
    let mut elements = vec![Vec::new()];
    let mut i = 0;
    if s.is_empty() {
        return Ok(Vec::new());
    }
    loop {
        // Key, up to `=`.
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' {
            if matches!(bytes[i], b';' | b',') {
                return Err(XfccError::MissingEquals(i));
            }
            i += 1;
        }
        if i >= bytes.len() {
            return Err(XfccError::MissingEquals(i));
        }
        let key = s[key_start..i].trim();
        if key.is_empty() {
            return Err(XfccError::EmptyKey(key_start));
        }
        i += 1; // '='
        let mut value = String::new();
        if bytes.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(XfccError::UnclosedQuote),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        let c = s[i + 1..].chars().next().ok_or(XfccError::UnclosedQuote)?;
                        value.push(c);
                        i += 1 + c.len_utf8();
                    }
                    Some(_) => {
                        let c = s[i..].chars().next().ok_or(XfccError::UnclosedQuote)?;
                        value.push(c);
                        i += c.len_utf8();
                    }
                }
            }
            if i < bytes.len() && !matches!(bytes[i], b';' | b',') {
                return Err(XfccError::TrailingAfterQuote(i));
            }
        } else {
            let start = i;
            while i < bytes.len() && !matches!(bytes[i], b';' | b',') {
                i += 1;
            }
            value.push_str(&s[start..i]);
        }
        if let Some(element) = elements.last_mut() {
            element.push((key.to_string(), value));
        }
        match bytes.get(i) {
            None => return Ok(elements),
            Some(b',') => elements.push(Vec::new()),
            _ => {}
        }
        i += 1;
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn parses_envoys_examples_and_quoted_values() {
        let v = parse_xfcc(r#"By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com"#).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0][2],
            (
                "Subject".into(),
                "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client".into()
            )
        );
        let v = parse_xfcc(r#"By=a;Hash=b,By=c;Subject="x\"y;z\\w""#).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1][1].1, r#"x"y;z\w"#);
        assert_eq!(parse_xfcc(""), Ok(vec![]));
        assert_eq!(parse_xfcc("By"), Err(XfccError::MissingEquals(2)));
        assert_eq!(parse_xfcc(r#"Subject="abc"#), Err(XfccError::UnclosedQuote));
        assert_eq!(parse_xfcc(r#"Subject="a"b"#), Err(XfccError::TrailingAfterQuote(11)));
        assert_eq!(parse_xfcc("=x"), Err(XfccError::EmptyKey(0)));
    }
}
