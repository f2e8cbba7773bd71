//! Distinguished names as RFC 4514 strings: the one form ztgate shows a DN in (XFCC `Subject`,
//! audit `issuer`, `explain`, logs) and the form policy `issuer` entries are written in.
//!
//! RFC 4514 §2: RDNs in reverse order of the DER `RDNSequence` (most specific first, as
//! `openssl x509 -nameopt RFC2253` and Envoy's XFCC `Subject` print them), separated by `,`
//! without spaces; the attributes of a multi-valued RDN joined with `+`. Values are escaped
//! (§2.4) so that no value can be read as a separator: a subject `O=Acme\, CN=admin` has one
//! O and no CN.

use std::fmt::Write;

use x509_parser::asn1_rs::{Any, FromDer, Oid, Tag, ToDer};
use x509_parser::objects::oid_registry;
use x509_parser::oid_registry::{
    OID_DOMAIN_COMPONENT, OID_PKCS9_EMAIL_ADDRESS, OID_USERID, OID_X509_COMMON_NAME, OID_X509_COUNTRY_NAME,
    OID_X509_LOCALITY_NAME, OID_X509_ORGANIZATION_NAME, OID_X509_ORGANIZATIONAL_UNIT, OID_X509_STATE_OR_PROVINCE_NAME,
    OID_X509_STREET_ADDRESS,
};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// The attribute type names of RFC 4514 §3's table, plus `emailAddress` (PKCS #9, as OpenSSL
/// and Envoy write it).
const NAMES: [(&str, Oid<'static>); 10] = [
    ("CN", OID_X509_COMMON_NAME),
    ("L", OID_X509_LOCALITY_NAME),
    ("ST", OID_X509_STATE_OR_PROVINCE_NAME),
    ("O", OID_X509_ORGANIZATION_NAME),
    ("OU", OID_X509_ORGANIZATIONAL_UNIT),
    ("C", OID_X509_COUNTRY_NAME),
    ("STREET", OID_X509_STREET_ADDRESS),
    ("DC", OID_DOMAIN_COMPONENT),
    ("UID", OID_USERID),
    ("emailAddress", OID_PKCS9_EMAIL_ADDRESS),
];

/// `2.5.4`, the X.520 attribute types: the only registry names used beyond [`NAMES`] (the
/// registry also names algorithms and extensions, which are no attribute types).
const X520_PREFIX: [u8; 2] = [0x55, 0x04];

/// Renders `name` as an RFC 4514 string (module docs). Values of a string type are escaped per
/// §2.4 (plus C0 controls and DEL as `\XX`, so the string stays printable); values of any other
/// type, and every value of a type without a name, are `#` and the hex of their DER (§2.4).
pub fn render(name: &X509Name<'_>) -> String {
    let mut out = String::with_capacity(name.as_raw().len());
    let rdns: Vec<_> = name.iter().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            write_attribute(&mut out, attr);
        }
    }
    out
}

fn write_attribute(out: &mut String, attr: &AttributeTypeAndValue<'_>) {
    let name = type_name(attr.attr_type());
    match name {
        Some(n) => out.push_str(n),
        None => out.push_str(&attr.attr_type().to_id_string()),
    }
    out.push('=');
    match name.and_then(|_| text(attr.attr_value())) {
        Some(value) => escape_into(out, &value),
        None => {
            out.push('#');
            // A value x509-parser parsed re-encodes; should it not, the content octets still
            // name the value unambiguously.
            let der = attr
                .attr_value()
                .to_der_vec()
                .unwrap_or_else(|_| attr.as_slice().to_vec());
            upper_hex_into(out, &der);
        }
    }
}

/// The short name ztgate writes for an attribute type (RFC 4514 §2.3), `None` for the dotted OID.
fn type_name(oid: &Oid<'_>) -> Option<&'static str> {
    if let Some((name, _)) = NAMES.iter().find(|(_, o)| o == oid) {
        return Some(name);
    }
    if !oid.as_bytes().starts_with(&X520_PREFIX) {
        return None;
    }
    // The registry is keyed by `Oid<'static>`; only X.520 types beyond the table get here.
    let sn = oid_registry().get(&oid.to_owned())?.sn();
    is_descr(sn).then_some(sn)
}

/// RFC 4512 `descr`: `ALPHA *( ALPHA / DIGIT / HYPHEN )`.
fn is_descr(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic()) && b.all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// The value as text, for the ASN.1 string types with a Unicode reading; `None` otherwise.
fn text(value: &Any<'_>) -> Option<String> {
    let data = value.as_bytes();
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::NumericString | Tag::VisibleString => {
            std::str::from_utf8(data).ok().map(str::to_string)
        }
        // T.61 has no faithful Unicode mapping; plain ASCII reads the same in both.
        Tag::TeletexString if data.is_ascii() => std::str::from_utf8(data).ok().map(str::to_string),
        Tag::BmpString if data.len().is_multiple_of(2) => {
            char::decode_utf16(data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])))
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString if data.len().is_multiple_of(4) => data
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

/// Appends `value` escaped per RFC 4514 §2.4: `"` `+` `,` `;` `<` `>` `\` anywhere, `#` or space
/// first, space last, NUL as `\00`; other C0 controls and DEL as `\XX` too.
pub fn escape_into(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0'..='\x1f' | '\x7f' => {
                out.push('\\');
                upper_hex_into(out, &[c as u8]);
            }
            _ => out.push(c),
        }
    }
}

fn upper_hex_into(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
}

/// One attribute value of a parsed DN string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnValue {
    /// A string value, unescaped.
    Text(String),
    /// A `#hexstring` value: the DER of the value (RFC 4514 §2.4).
    Der(Vec<u8>),
}

/// Why a string is not an RFC 4514 DN. Byte offsets are into the string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    #[error("expected an attribute type (a name such as `CN`, or a dotted OID) at byte {0}")]
    Type(usize),
    #[error("expected `=` after the attribute type at byte {0}")]
    Equals(usize),
    #[error("bad escape at byte {0} (`\\` must precede a special character or two hex digits)")]
    Escape(usize),
    #[error("character at byte {0} must be escaped")]
    Unescaped(usize),
    #[error("bad #hexstring value at byte {0}")]
    Hex(usize),
    #[error("escaped bytes are not UTF-8 in the value at byte {0}")]
    Utf8(usize),
}

/// A DN as parsed: RDNs in the string's order (most specific first), each a list of
/// `(type, value)` with the type as written.
pub type ParsedDn = Vec<Vec<(String, DnValue)>>;

/// Parses an RFC 4514 §3 string strictly: no spaces around separators, every special character
/// escaped. The empty string is the empty DN.
pub fn parse(s: &str) -> Result<ParsedDn, DnError> {
    let b = s.as_bytes();
    let mut rdns: ParsedDn = Vec::new();
    if s.is_empty() {
        return Ok(rdns);
    }
    let mut rdn = Vec::new();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-' || b[i] == b'.') {
            i += 1;
        }
        let ty = &s[start..i];
        let numeric = ty.bytes().next().is_some_and(|c| c.is_ascii_digit());
        let valid = if numeric {
            ty.split('.')
                .all(|arc| !arc.is_empty() && arc.bytes().all(|c| c.is_ascii_digit()))
        } else {
            is_descr(ty)
        };
        if !valid {
            return Err(DnError::Type(start));
        }
        if b.get(i) != Some(&b'=') {
            return Err(DnError::Equals(i));
        }
        i += 1;
        let (value, end) = parse_value(s, i)?;
        rdn.push((ty.to_string(), value));
        i = end;
        match b.get(i) {
            None => {
                rdns.push(rdn);
                return Ok(rdns);
            }
            Some(b'+') => {}
            Some(_) => rdns.push(std::mem::take(&mut rdn)), // `,` (parse_value stops only there)
        }
        i += 1;
    }
}

/// One value starting at `start`; returns it and the index of the separator (or the end).
fn parse_value(s: &str, start: usize) -> Result<(DnValue, usize), DnError> {
    let b = s.as_bytes();
    let mut i = start;
    if b.get(i) == Some(&b'#') {
        i += 1;
        let mut der = Vec::new();
        while i < b.len() && !matches!(b[i], b',' | b'+') {
            der.push(hex_pair(b, i).ok_or(DnError::Hex(i))?);
            i += 2;
        }
        if der.is_empty() {
            return Err(DnError::Hex(start));
        }
        return Ok((DnValue::Der(der), i));
    }
    let mut bytes = Vec::new();
    // Index in `bytes` after the last escaped byte: an unescaped trailing space is an error,
    // an escaped one is not.
    let mut escaped_until = 0;
    while i < b.len() && !matches!(b[i], b',' | b'+') {
        match b[i] {
            b'\\' => {
                let next = *b.get(i + 1).ok_or(DnError::Escape(i))?;
                if b" \"#+,;<=>\\".contains(&next) {
                    bytes.push(next);
                    i += 2;
                } else {
                    bytes.push(hex_pair(b, i + 1).ok_or(DnError::Escape(i))?);
                    i += 3;
                }
                escaped_until = bytes.len();
            }
            b'"' | b';' | b'<' | b'>' | b'\0' => return Err(DnError::Unescaped(i)),
            b' ' if i == start => return Err(DnError::Unescaped(i)),
            c => {
                bytes.push(c);
                i += 1;
            }
        }
    }
    if bytes.last() == Some(&b' ') && escaped_until < bytes.len() {
        return Err(DnError::Unescaped(i - 1));
    }
    let text = String::from_utf8(bytes).map_err(|_| DnError::Utf8(start))?;
    Ok((DnValue::Text(text), i))
}

fn hex_pair(b: &[u8], i: usize) -> Option<u8> {
    let pair = std::str::from_utf8(b.get(i..i + 2)?).ok()?;
    u8::from_str_radix(pair, 16).ok()
}

/// Checks that `s` is a DN exactly as [`render`] writes one, so that comparing it with a
/// rendered DN by string equality means what it says: RFC 4514 syntax, the attribute type names
/// ztgate uses, its escaping. On a mismatch, the error says how ztgate would write it.
pub fn check_rendered(s: &str) -> Result<(), String> {
    const HOW: &str = "ztgate writes DNs per RFC 4514: most specific RDN first, `,` without spaces, \
                       as `openssl x509 -noout -issuer -nameopt RFC2253` prints them";
    let parsed = parse(s).map_err(|e| format!("`{s}` is not an RFC 4514 distinguished name: {e} ({HOW})"))?;
    let mut canonical = String::with_capacity(s.len());
    for (i, rdn) in parsed.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        for (j, (ty, value)) in rdn.iter().enumerate() {
            if j > 0 {
                canonical.push('+');
            }
            let oid = oid_of(ty).ok_or_else(|| format!("`{s}`: unknown attribute type `{ty}` (use a dotted OID)"))?;
            let name = type_name(&oid);
            canonical.push_str(name.map_or_else(|| oid.to_id_string(), str::to_string).as_str());
            canonical.push('=');
            match (value, name) {
                (DnValue::Text(t), Some(_)) => escape_into(&mut canonical, t),
                // A named type's string value is rendered as text, however it was written.
                (DnValue::Der(der), Some(_)) if let Some(t) = Any::from_der(der).ok().and_then(|(_, a)| text(&a)) => {
                    escape_into(&mut canonical, &t);
                }
                (DnValue::Der(der), _) => {
                    canonical.push('#');
                    upper_hex_into(&mut canonical, der);
                }
                (DnValue::Text(_), None) => {
                    return Err(format!(
                        "`{s}`: a value of `{ty}` (an attribute type without a name) is written as #hex of its DER"
                    ));
                }
            }
        }
    }
    if canonical == s {
        Ok(())
    } else {
        Err(format!(
            "`{s}` would never match: ztgate writes this DN as `{canonical}` ({HOW})"
        ))
    }
}

/// The OID an attribute type names (case-insensitively, as RFC 4512 descriptors are).
fn oid_of(ty: &str) -> Option<Oid<'static>> {
    if ty.bytes().next().is_some_and(|c| c.is_ascii_digit()) {
        return ty.parse().ok();
    }
    if let Some((_, oid)) = NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(ty)) {
        return Some(oid.clone());
    }
    oid_registry()
        .iter()
        .find(|(oid, e)| oid.as_bytes().starts_with(&X520_PREFIX) && e.sn().eq_ignore_ascii_case(ty))
        .map(|(oid, _)| oid.to_owned())
}
