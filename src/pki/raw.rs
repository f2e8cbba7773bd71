//! Certificates written field by field, for what rcgen will not write: the defects ztgate's
//! client-certificate profile refuses (a zero, negative or 21-octet serial, a CA without
//! subjectKeyIdentifier, a critical authorityKeyIdentifier, an empty name constraints extension,
//! a 2047-bit RSA modulus, a malformed authorityInfoAccess, ...), and certificates shaped the way
//! other issuers (SPIRE, cert-manager, Vault, step-ca) write theirs. For tests and labs.
//!
//! [`RawCa::root`] and [`RawCa::child`] start from a template that conforms to RFC 5280 and to
//! ztgate's profile; a test changes one field of the template and signs it.

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData, SigningKey};
use time::{Duration, OffsetDateTime};

use super::PkiError;

/// A DER TLV: `tag`, the definite length, `content`.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of the given DER elements.
pub fn seq(items: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &items.concat())
}

/// The DER of an OBJECT IDENTIFIER.
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    tlv(0x06, &oid_content(arcs))
}

fn oid_content(arcs: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (a * 40 + b, rest),
        _ => (0, &[][..]),
    };
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        let mut chunk = vec![(arc & 0x7f) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            chunk.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        chunk.reverse();
        out.extend(chunk);
    }
    out
}

/// A Name with one RDN per `(attribute OID, value)`, values as UTF8String.
pub fn name(attrs: &[(&[u64], &str)]) -> Vec<u8> {
    let rdns: Vec<Vec<u8>> = attrs
        .iter()
        .map(|(t, v)| tlv(0x31, &seq(&[&oid(t), &tlv(0x0c, v.as_bytes())])))
        .collect();
    let refs: Vec<&[u8]> = rdns.iter().map(Vec::as_slice).collect();
    seq(&refs)
}

/// A Name holding one commonName; `""` gives the empty Name (an empty SEQUENCE).
pub fn cn(common_name: &str) -> Vec<u8> {
    if common_name.is_empty() {
        return seq(&[]);
    }
    name(&[(OID_CN, common_name)])
}

pub const OID_CN: &[u64] = &[2, 5, 4, 3];
pub const OID_O: &[u64] = &[2, 5, 4, 10];
pub const OID_C: &[u64] = &[2, 5, 4, 6];
/// x500UniqueIdentifier, which SPIRE writes into X.509-SVID subjects.
pub const OID_UNIQUE_ID: &[u64] = &[2, 5, 4, 45];

/// One extension of a [`RawCert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawExtension {
    pub oid: Vec<u64>,
    pub critical: bool,
    /// extnValue's content: the extension's own DER.
    pub value: Vec<u8>,
}

impl RawExtension {
    pub fn new(oid: &[u64], critical: bool, value: Vec<u8>) -> Self {
        Self {
            oid: oid.to_vec(),
            critical,
            value,
        }
    }

    fn der(&self) -> Vec<u8> {
        let critical = if self.critical { tlv(0x01, &[0xff]) } else { Vec::new() };
        seq(&[&oid(&self.oid), &critical, &tlv(0x04, &self.value)])
    }
}

/// Extension OIDs and their values.
pub mod ext;

/// A certificate's fields, written as given: nothing is normalised or checked.
#[derive(Debug, Clone)]
pub struct RawCert {
    /// serialNumber's INTEGER content octets, as written (zero, negative, 21 octets: all allowed).
    pub serial: Vec<u8>,
    /// issuer Name, DER.
    pub issuer: Vec<u8>,
    /// subject Name, DER.
    pub subject: Vec<u8>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
    pub extensions: Vec<RawExtension>,
}

impl RawCert {
    /// The extension with this OID, to change it.
    pub fn extension_mut(&mut self, oid: &[u64]) -> Option<&mut RawExtension> {
        self.extensions.iter_mut().find(|e| e.oid == oid)
    }

    /// Drops the extension with this OID.
    pub fn remove_extension(&mut self, oid: &[u64]) {
        self.extensions.retain(|e| e.oid != oid);
    }

    /// Adds an extension at the end.
    pub fn push_extension(&mut self, oid: &[u64], critical: bool, value: Vec<u8>) {
        self.extensions.push(RawExtension::new(oid, critical, value));
    }

    /// The DER certificate, signed ECDSA P-256 SHA-256 with `key`.
    pub fn sign(&self, key: &KeyPair) -> Result<Vec<u8>, PkiError> {
        let alg = seq(&[&oid(OID_ECDSA_WITH_SHA256)]);
        let exts: Vec<Vec<u8>> = self.extensions.iter().map(RawExtension::der).collect();
        let extensions = if exts.is_empty() {
            Vec::new()
        } else {
            tlv(0xa3, &tlv(0x30, &exts.concat()))
        };
        let tbs = seq(&[
            &tlv(0xa0, &tlv(0x02, &[2])),
            &tlv(0x02, &self.serial),
            &alg,
            &self.issuer,
            &seq(&[&time(self.not_before), &time(self.not_after)]),
            &self.subject,
            &self.spki,
            &extensions,
        ]);
        let signature = key.sign(&tbs)?;
        let mut bits = vec![0];
        bits.extend(signature);
        Ok(seq(&[&tbs, &alg, &tlv(0x03, &bits)]))
    }
}

/// UTCTime through 2049, GeneralizedTime after (RFC 5280 §4.1.2.5).
fn time(t: OffsetDateTime) -> Vec<u8> {
    let s = format!(
        "{:02}{:02}{:02}{:02}{:02}Z",
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if t.year() < 2050 {
        tlv(0x17, format!("{:02}{s}", t.year() % 100).as_bytes())
    } else {
        tlv(0x18, format!("{:04}{s}", t.year()).as_bytes())
    }
}

const OID_ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];

/// The key identifier ztgate's raw certificates use: SHA-256 of the SPKI, first 20 octets.
pub fn key_id(spki: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, spki).as_ref()[..20].to_vec()
}

/// An RSA SubjectPublicKeyInfo whose modulus is exactly `bits` long (odd, top bit set; not a
/// usable key, only the size matters) with exponent 65537.
pub fn rsa_spki(bits: usize) -> Vec<u8> {
    let len = bits.div_ceil(8);
    let mut n = vec![0x5au8; len];
    if let Some(first) = n.first_mut() {
        let top = bits.saturating_sub(1) % 8;
        *first = (1u8 << top) | ((0x5a_u8) & ((1u8 << top) - 1));
    }
    if let Some(last) = n.last_mut() {
        *last |= 1;
    }
    if n.first().is_some_and(|b| b & 0x80 != 0) {
        n.insert(0, 0);
    }
    let key = seq(&[&tlv(0x02, &n), &tlv(0x02, &[0x01, 0x00, 0x01])]);
    let mut bitstring = vec![0];
    bitstring.extend(key);
    seq(&[
        &seq(&[&oid(&[1, 2, 840, 113549, 1, 1, 1]), &tlv(0x05, &[])]),
        &tlv(0x03, &bitstring),
    ])
}

/// A random positive 16-octet serial.
pub fn serial() -> Result<Vec<u8>, PkiError> {
    Ok(super::random_serial()?.to_bytes())
}

/// A CA whose certificate was written by [`RawCert`]: its key, subject and key identifier.
pub struct RawCa {
    pub der: Vec<u8>,
    pub key: KeyPair,
    pub subject: Vec<u8>,
    pub key_id: Vec<u8>,
}

impl RawCa {
    /// A conforming self-signed root: critical basicConstraints cA=TRUE, critical keyUsage
    /// keyCertSign + cRLSign, a subjectKeyIdentifier, valid from yesterday for ten years.
    pub fn root(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let tpl = Self::ca_template(common_name, &key, None)?;
        Self::sign_ca(tpl, key, None)
    }

    /// A root from a template the caller changed: `edit` gets the conforming template.
    pub fn root_with(common_name: &str, edit: impl FnOnce(&mut RawCert)) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut tpl = Self::ca_template(common_name, &key, None)?;
        edit(&mut tpl);
        Self::sign_ca(tpl, key, None)
    }

    /// A conforming intermediate CA issued by this one (adds an authorityKeyIdentifier).
    pub fn intermediate(&self, common_name: &str) -> Result<Self, PkiError> {
        self.intermediate_with(common_name, |_| {})
    }

    /// An intermediate CA from a template the caller changed.
    pub fn intermediate_with(&self, common_name: &str, edit: impl FnOnce(&mut RawCert)) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut tpl = Self::ca_template(common_name, &key, Some(self))?;
        edit(&mut tpl);
        Self::sign_ca(tpl, key, Some(self))
    }

    fn ca_template(common_name: &str, key: &KeyPair, issuer: Option<&RawCa>) -> Result<RawCert, PkiError> {
        let spki = key.subject_public_key_info();
        let now = OffsetDateTime::now_utc();
        let mut extensions = vec![
            RawExtension::new(ext::BASIC_CONSTRAINTS, true, ext::basic_constraints(true, None)),
            RawExtension::new(
                ext::KEY_USAGE,
                true,
                ext::key_usage(&[ext::KEY_CERT_SIGN, ext::CRL_SIGN]),
            ),
            RawExtension::new(ext::SUBJECT_KEY_ID, false, ext::subject_key_id(&key_id(&spki))),
        ];
        if let Some(issuer) = issuer {
            extensions.push(RawExtension::new(
                ext::AUTHORITY_KEY_ID,
                false,
                ext::authority_key_id(&issuer.key_id),
            ));
        }
        let subject = cn(common_name);
        Ok(RawCert {
            serial: serial()?,
            issuer: issuer.map_or_else(|| subject.clone(), |i| i.subject.clone()),
            subject,
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(if issuer.is_some() { 5 * 365 } else { 3650 }),
            spki,
            extensions,
        })
    }

    fn sign_ca(tpl: RawCert, key: KeyPair, issuer: Option<&RawCa>) -> Result<Self, PkiError> {
        let der = tpl.sign(issuer.map_or(&key, |i| &i.key))?;
        Ok(Self {
            der,
            key_id: key_id(&tpl.spki),
            subject: tpl.subject,
            key,
        })
    }

    /// A conforming client certificate template for `key`: subject CN, URI SAN (if given),
    /// critical keyUsage digitalSignature, EKU clientAuth, the authorityKeyIdentifier of this
    /// CA, valid from yesterday for a year.
    pub fn leaf_template(&self, common_name: &str, uri: Option<&str>, key: &KeyPair) -> Result<RawCert, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut extensions = vec![
            RawExtension::new(ext::KEY_USAGE, true, ext::key_usage(&[ext::DIGITAL_SIGNATURE])),
            RawExtension::new(ext::EXT_KEY_USAGE, false, ext::ext_key_usage(&[ext::EKU_CLIENT_AUTH])),
            RawExtension::new(ext::AUTHORITY_KEY_ID, false, ext::authority_key_id(&self.key_id)),
        ];
        if let Some(uri) = uri {
            extensions.push(RawExtension::new(
                ext::SUBJECT_ALT_NAME,
                false,
                ext::general_names(&[ext::uri(uri)]),
            ));
        }
        Ok(RawCert {
            serial: serial()?,
            issuer: self.subject.clone(),
            subject: cn(common_name),
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(365),
            spki: key.subject_public_key_info(),
            extensions,
        })
    }

    /// Signs `cert` with this CA's key (whatever its issuer field says).
    pub fn sign(&self, cert: &RawCert) -> Result<Vec<u8>, PkiError> {
        cert.sign(&self.key)
    }

    /// The certificate, PEM.
    pub fn cert_pem(&self) -> String {
        pem(&self.der)
    }
}

/// A certificate as PEM.
pub fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A client certificate minted from a [`RawCert`] with a fresh P-256 key, as [`super::Issued`]:
/// `edit` changes the conforming template of `ca`; `chain` are the intermediates' DER the
/// client sends after its own certificate (nearest first).
pub fn issue_client(
    ca: &RawCa,
    common_name: &str,
    uri: Option<&str>,
    chain: &[&[u8]],
    edit: impl FnOnce(&mut RawCert),
) -> Result<super::Issued, PkiError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut tpl = ca.leaf_template(common_name, uri, &key)?;
    edit(&mut tpl);
    let der = ca.sign(&tpl)?;
    let cert_pem = pem(&der);
    let chain_pem = std::iter::once(der.as_slice())
        .chain(chain.iter().copied())
        .map(pem)
        .collect();
    Ok(super::Issued {
        cert_pem,
        chain_pem,
        key_pem: key.serialize_pem(),
        serial: tpl.serial,
        der,
    })
}
