//! Extension OIDs and their values, DER.

use super::{oid, seq, tlv};

pub const SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
pub const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
pub const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
pub const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
pub const NAME_CONSTRAINTS: &[u64] = &[2, 5, 29, 30];
pub const AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];
pub const EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
pub const AUTHORITY_INFO_ACCESS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];

/// keyUsage bits (RFC 5280 §4.2.1.3), as the named bit's position.
pub const DIGITAL_SIGNATURE: u16 = 0;
pub const KEY_ENCIPHERMENT: u16 = 2;
pub const KEY_AGREEMENT: u16 = 4;
pub const KEY_CERT_SIGN: u16 = 5;
pub const CRL_SIGN: u16 = 6;

pub const EKU_SERVER_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 1];
pub const EKU_CLIENT_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];

/// BasicConstraints: `cA` (omitted when false, as DER requires) and pathLenConstraint.
pub fn basic_constraints(ca: bool, path_len: Option<u8>) -> Vec<u8> {
    let ca = if ca { tlv(0x01, &[0xff]) } else { Vec::new() };
    let path_len = path_len.map(|n| tlv(0x02, &[n])).unwrap_or_default();
    seq(&[&ca, &path_len])
}

/// KeyUsage with the given bits set (minimal BIT STRING).
pub fn key_usage(bits: &[u16]) -> Vec<u8> {
    let mut v = 0u16;
    for b in bits {
        v |= 0x8000 >> b;
    }
    let used = 16 - v.trailing_zeros().min(16) as usize;
    let bytes = v.to_be_bytes();
    let n = used.div_ceil(8);
    let mut content = vec![((8 - used % 8) % 8) as u8];
    content.extend_from_slice(&bytes[..n]);
    tlv(0x03, &content)
}

pub fn ext_key_usage(purposes: &[&[u64]]) -> Vec<u8> {
    let oids: Vec<Vec<u8>> = purposes.iter().map(|p| oid(p)).collect();
    let refs: Vec<&[u8]> = oids.iter().map(Vec::as_slice).collect();
    seq(&refs)
}

/// SubjectKeyIdentifier: an OCTET STRING.
pub fn subject_key_id(id: &[u8]) -> Vec<u8> {
    tlv(0x04, id)
}

/// AuthorityKeyIdentifier with keyIdentifier [0] only.
pub fn authority_key_id(id: &[u8]) -> Vec<u8> {
    seq(&[&tlv(0x80, id)])
}

/// A GeneralName: dNSName [2].
pub fn dns(name: &str) -> Vec<u8> {
    tlv(0x82, name.as_bytes())
}

/// A GeneralName: uniformResourceIdentifier [6].
pub fn uri(uri: &str) -> Vec<u8> {
    tlv(0x86, uri.as_bytes())
}

/// A GeneralName: rfc822Name [1].
pub fn email(mailbox: &str) -> Vec<u8> {
    tlv(0x81, mailbox.as_bytes())
}

/// GeneralNames (subjectAltName's value) from GeneralName DERs.
pub fn general_names(names: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &names.concat())
}

/// NameConstraints: permittedSubtrees [0] and excludedSubtrees [1], each written only when
/// `Some` (an empty `Some(&[])` writes the empty, non-conforming subtree list).
pub fn name_constraints(permitted: Option<&[Vec<u8>]>, excluded: Option<&[Vec<u8>]>) -> Vec<u8> {
    let subtrees = |tag: u8, bases: Option<&[Vec<u8>]>| {
        bases
            .map(|bases| {
                let items: Vec<Vec<u8>> = bases.iter().map(|b| seq(&[b])).collect();
                tlv(tag, &items.concat())
            })
            .unwrap_or_default()
    };
    seq(&[&subtrees(0xa0, permitted), &subtrees(0xa1, excluded)])
}

/// AuthorityInfoAccess naming one OCSP responder.
pub fn aia_ocsp(url: &str) -> Vec<u8> {
    seq(&[&seq(&[&oid(&[1, 3, 6, 1, 5, 5, 7, 48, 1]), &uri(url)])])
}
