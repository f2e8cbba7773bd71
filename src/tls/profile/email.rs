//! RFC 822 (email) name constraints (RFC 5280 §4.2.1.10), which rustls' WebPKI does not
//! evaluate: it refuses every certificate carrying an email address under a CA that constrains
//! email names, compliant or not, and never looks at a subject's emailAddress attribute.
//!
//! For the `client_ca` certificates, ztgate takes the email subtrees out of the name constraints
//! WebPKI gets ([`strip_from_anchor`]; every other name form stays with WebPKI) and evaluates them
//! here instead, after WebPKI has verified the chain. An intermediate CA's email constraints stay
//! in its signed certificate, so WebPKI still refuses email SANs under it; what reaches the
//! profile is checked against the email constraints of every CA on the path, the trust anchor's
//! and the intermediates', on every email address of every certificate below them: rfc822Name
//! SANs and, stricter than RFC 5280 (which asks it only without a SAN), every emailAddress
//! attribute of the subject.
//!
//! A constraint is a mailbox (`root@example.com`: exactly that one, the local part compared
//! exactly, the host without case), a host (`example.com`: any mailbox on it) or a domain
//! (`.example.com`: any mailbox on a host below it, not on the host itself).

use rustls::pki_types::{Der, TrustAnchor};

use super::facts::{Elements, tlv};

/// rfc822Name, GeneralName's `[1] IMPLICIT IA5String`.
const RFC822_NAME: u8 = 0x81;
/// pkcs-9 emailAddress 1.2.840.113549.1.9.1.
const EMAIL_ADDRESS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];

/// One CA's email subtrees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct EmailConstraints {
    pub(super) permitted: Vec<Vec<u8>>,
    pub(super) excluded: Vec<Vec<u8>>,
}

impl EmailConstraints {
    /// The email subtrees of a nameConstraints extension's value (its SEQUENCE), `None` when it
    /// has none.
    pub(super) fn from_extension(value: &[u8]) -> Option<Self> {
        let (0x30, content, _) = tlv(value)? else {
            return None;
        };
        let mut found = Self::default();
        for (tag, subtrees) in Elements(content) {
            let list = match tag {
                0xa0 => &mut found.permitted,
                0xa1 => &mut found.excluded,
                _ => continue,
            };
            for (_, subtree) in Elements(subtrees) {
                if let Some((RFC822_NAME, base, _)) = tlv(subtree) {
                    list.push(base.to_vec());
                }
            }
        }
        (!found.permitted.is_empty() || !found.excluded.is_empty()).then_some(found)
    }

    /// Why `email` breaks these constraints, if it does.
    pub(super) fn judge(&self, email: &[u8]) -> Option<&'static str> {
        let Some(at) = email.iter().rposition(|b| *b == b'@') else {
            return Some("is not a mailbox");
        };
        let (local, host) = (&email[..at], &email[at + 1..]);
        if local.is_empty() || host.is_empty() {
            return Some("is not a mailbox");
        }
        if self.excluded.iter().any(|c| matches(c, local, host)) {
            return Some("is within an excluded subtree");
        }
        if !self.permitted.is_empty() && !self.permitted.iter().any(|c| matches(c, local, host)) {
            return Some("is outside the permitted subtrees");
        }
        None
    }
}

/// Whether the mailbox `local@host` is within the constraint `c` (see the module docs).
fn matches(c: &[u8], local: &[u8], host: &[u8]) -> bool {
    if let Some(at) = c.iter().rposition(|b| *b == b'@') {
        return &c[..at] == local && c[at + 1..].eq_ignore_ascii_case(host);
    }
    if let Some(domain) = c.strip_prefix(b".") {
        return host.len() > domain.len() + 1
            && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
            && host[host.len() - domain.len() - 1] == b'.';
    }
    c.eq_ignore_ascii_case(host)
}

/// The email addresses a certificate names: its rfc822Name SANs (from subjectAltName's value)
/// and its subject's emailAddress attributes (from the subject Name's DER).
pub(super) fn addresses<'a>(san: Option<&'a [u8]>, subject: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    if let Some((0x30, names, _)) = san.and_then(tlv) {
        out.extend(Elements(names).filter(|(tag, _)| *tag == RFC822_NAME).map(|(_, v)| v));
    }
    if let Some((0x30, rdns, _)) = tlv(subject) {
        for (_, rdn) in Elements(rdns) {
            for (_, attr) in Elements(rdn) {
                let mut parts = Elements(attr);
                if let (Some((0x06, oid)), Some((_, value))) = (parts.next(), parts.next())
                    && oid == EMAIL_ADDRESS
                {
                    out.push(value);
                }
            }
        }
    }
    out
}

/// Takes the email subtrees out of a trust anchor's name constraints, so that rustls' WebPKI
/// evaluates the other name forms and the profile the email ones (see the module docs).
/// `anchor.name_constraints` holds the NameConstraints SEQUENCE's content. Constraints that do
/// not parse to the last octet are left as they are (WebPKI then refuses what they cover).
pub fn strip_from_anchor(anchor: &mut TrustAnchor<'static>) {
    let Some(nc) = &anchor.name_constraints else {
        return;
    };
    let mut kept = Vec::new();
    let mut stripped = false;
    let mut rest = nc.as_ref();
    while !rest.is_empty() {
        let Some((tag, subtrees, after)) = tlv(rest) else {
            return;
        };
        rest = after;
        let mut keep = Vec::new();
        let mut inner = subtrees;
        while !inner.is_empty() {
            let Some((sub_tag, subtree, after)) = tlv(inner) else {
                return;
            };
            inner = after;
            if matches!(tlv(subtree), Some((RFC822_NAME, _, _))) {
                stripped = true;
            } else {
                keep.extend(encode(sub_tag, subtree));
            }
        }
        if !keep.is_empty() {
            kept.extend(encode(tag, &keep));
        }
    }
    if stripped {
        anchor.name_constraints = (!kept.is_empty()).then(|| Der::from(kept));
    }
}

/// A DER TLV (definite length).
fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let octets = len.to_be_bytes();
        let skip = octets.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (octets.len() - skip) as u8);
        out.extend_from_slice(&octets[skip..]);
    }
    out.extend_from_slice(content);
    out
}
