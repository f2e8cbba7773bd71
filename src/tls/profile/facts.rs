//! What the profile needs from one certificate, read in one pass: x509-parser for the
//! certificate's structure (with extension parsing off, the part of its work the profile does
//! not need), a few lines of DER for the extension values whose exact encoding is the point
//! (an empty name constraints extension, an RSA modulus's bit length, a malformed AIA).

use x509_parser::certificate::X509CertificateParser;
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::{AuthorityInfoAccess, AuthorityKeyIdentifier, BasicConstraints, KeyUsage};
use x509_parser::nom::Parser;
use x509_parser::prelude::FromDer;

/// id-ce (2.5.29) extension OIDs, DER content octets.
pub(super) const SKI: &[u8] = &[0x55, 0x1d, 0x0e];
pub(super) const KU: &[u8] = &[0x55, 0x1d, 0x0f];
pub(super) const SAN: &[u8] = &[0x55, 0x1d, 0x11];
pub(super) const BC: &[u8] = &[0x55, 0x1d, 0x13];
pub(super) const NC: &[u8] = &[0x55, 0x1d, 0x1e];
const CRL_DP: &[u8] = &[0x55, 0x1d, 0x1f];
pub(super) const AKI: &[u8] = &[0x55, 0x1d, 0x23];
const EKU: &[u8] = &[0x55, 0x1d, 0x25];
/// id-pe-authorityInfoAccess 1.3.6.1.5.5.7.1.1.
pub(super) const AIA: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01];
/// The RFC 6962 SCT list 1.3.6.1.4.1.11129.2.4.2 (webpki reads it).
const SCT: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xd6, 0x79, 0x02, 0x04, 0x02];
/// rsaEncryption and id-RSASSA-PSS.
const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];

/// The extensions ztgate understands, so may be critical: those rustls' WebPKI verifier processes
/// (keyUsage, subjectAltName, basicConstraints, nameConstraints, cRLDistributionPoints,
/// extKeyUsage, the SCT list) and those the profile itself reads (subjectKeyIdentifier,
/// authorityKeyIdentifier, authorityInfoAccess, whose criticality has rules of its own).
const KNOWN: &[&[u8]] = &[SKI, KU, SAN, BC, NC, CRL_DP, AKI, EKU, AIA, SCT];

/// One extension as found: its criticality and extnValue's content.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ext<'a> {
    pub(super) critical: bool,
    pub(super) value: &'a [u8],
}

/// One certificate, as far as the profile is concerned. Every slice borrows the DER.
#[derive(Debug)]
pub(super) struct Facts<'a> {
    pub(super) der: &'a [u8],
    /// The subject and issuer Names, full DER (compared byte for byte, as webpki does).
    pub(super) subject: &'a [u8],
    pub(super) issuer: &'a [u8],
    /// SubjectPublicKeyInfo, full DER.
    pub(super) spki: &'a [u8],
    /// serialNumber's INTEGER content octets.
    pub(super) serial: &'a [u8],
    /// Unix seconds.
    pub(super) not_after: i64,
    pub(super) bc: Option<Ext<'a>>,
    pub(super) ku: Option<Ext<'a>>,
    pub(super) san: Option<Ext<'a>>,
    pub(super) nc: Option<Ext<'a>>,
    pub(super) aki: Option<Ext<'a>>,
    pub(super) ski: Option<Ext<'a>>,
    pub(super) aia: Option<Ext<'a>>,
    /// The first critical extension ztgate does not understand (borrowed from the DER).
    pub(super) unknown_critical: Option<Oid<'a>>,
    /// The first extension that appears twice.
    pub(super) duplicate: Option<Oid<'a>>,
}

impl<'a> Facts<'a> {
    /// `None` when x509-parser cannot read the certificate (webpki could, or the chain would
    /// not have verified).
    pub(super) fn parse(der: &'a [u8]) -> Option<Self> {
        let (_, cert) = X509CertificateParser::new()
            .with_deep_parse_extensions(false)
            .parse(der)
            .ok()?;
        let mut facts = Facts {
            der,
            subject: cert.tbs_certificate.subject.as_raw(),
            issuer: cert.tbs_certificate.issuer.as_raw(),
            spki: cert.tbs_certificate.subject_pki.raw,
            serial: cert.raw_serial(),
            not_after: cert.validity().not_after.timestamp(),
            bc: None,
            ku: None,
            san: None,
            nc: None,
            aki: None,
            ski: None,
            aia: None,
            unknown_critical: None,
            duplicate: None,
        };
        let exts = cert.extensions();
        for (i, e) in exts.iter().enumerate() {
            let id = e.oid.as_bytes();
            if facts.duplicate.is_none() && exts[..i].iter().any(|p| p.oid.as_bytes() == id) {
                facts.duplicate = Some(e.oid.clone());
            }
            let found = Some(Ext {
                critical: e.critical,
                value: e.value,
            });
            let slot = match id {
                BC => &mut facts.bc,
                KU => &mut facts.ku,
                SAN => &mut facts.san,
                NC => &mut facts.nc,
                AKI => &mut facts.aki,
                SKI => &mut facts.ski,
                AIA => &mut facts.aia,
                _ => {
                    if e.critical && facts.unknown_critical.is_none() && !KNOWN.contains(&id) {
                        facts.unknown_critical = Some(e.oid.clone());
                    }
                    continue;
                }
            };
            if slot.is_none() {
                *slot = found;
            }
        }
        Some(facts)
    }

    /// An empty subject Name (no RDN).
    pub(super) fn subject_is_empty(&self) -> bool {
        tlv(self.subject).is_some_and(|(_, content, _)| content.is_empty())
    }

    /// basicConstraints' cA flag; `None` without the extension or when it does not parse.
    pub(super) fn is_ca(&self) -> Option<bool> {
        let bc = self.bc?;
        BasicConstraints::from_der(bc.value).ok().map(|(_, b)| b.ca)
    }

    /// keyUsage keyCertSign; `None` without the extension or when it does not parse.
    pub(super) fn key_cert_sign(&self) -> Option<bool> {
        let ku = self.ku?;
        KeyUsage::from_der(ku.value).ok().map(|(_, k)| k.key_cert_sign())
    }

    /// The subjectKeyIdentifier's octets (`None` if absent or malformed).
    pub(super) fn ski_id(&self) -> Option<&'a [u8]> {
        let ski = self.ski?;
        match tlv(ski.value)? {
            (0x04, id, []) if !id.is_empty() => Some(id),
            _ => None,
        }
    }

    /// The authorityKeyIdentifier's keyIdentifier (`None` if absent, malformed, or carrying
    /// only issuer and serial).
    pub(super) fn aki_id(&self) -> Option<&'a [u8]> {
        let aki = self.aki?;
        match AuthorityKeyIdentifier::from_der(aki.value) {
            Ok(([], a)) => a.key_identifier.map(|k| k.0).filter(|k| !k.is_empty()),
            _ => None,
        }
    }

    /// How many names subjectAltName holds (`None` without the extension or when it does not
    /// parse: an unreadable SAN fails webpki first).
    pub(super) fn san_names(&self) -> Option<usize> {
        let san = self.san?;
        match tlv(san.value)? {
            (0x30, content, []) => Some(Elements(content).count()),
            _ => None,
        }
    }

    /// How many subtrees nameConstraints lists, permitted and excluded together (`Some(0)` for
    /// an empty or unreadable extension; `None` without one).
    pub(super) fn name_constraint_subtrees(&self) -> Option<usize> {
        let nc = self.nc?;
        let Some((0x30, content, [])) = tlv(nc.value) else {
            return Some(0);
        };
        Some(
            Elements(content)
                .filter(|(tag, _)| matches!(tag, 0xa0 | 0xa1))
                .map(|(_, subtrees)| Elements(subtrees).count())
                .sum(),
        )
    }

    /// Whether the AIA extension is a non-empty sequence of AccessDescriptions with nothing
    /// after it (`None` without the extension).
    pub(super) fn aia_well_formed(&self) -> Option<bool> {
        let aia = self.aia?;
        Some(matches!(AuthorityInfoAccess::from_der(aia.value), Ok(([], a)) if !a.accessdescs.is_empty()))
    }

    /// The RSA modulus's length in bits; `None` for other key types.
    pub(super) fn rsa_modulus_bits(&self) -> Option<usize> {
        let (_, spki, _) = tlv(self.spki)?;
        let (_, alg, rest) = tlv(spki)?;
        let (_, alg_oid, _) = tlv(alg)?;
        if alg_oid != RSA && alg_oid != RSA_PSS {
            return None;
        }
        let Some((0x03, [0, key @ ..], _)) = tlv(rest) else {
            return Some(0);
        };
        let Some((0x30, key, _)) = tlv(key) else {
            return Some(0);
        };
        let Some((0x02, modulus, _)) = tlv(key) else {
            return Some(0);
        };
        let modulus = &modulus[modulus.iter().take_while(|b| **b == 0).count()..];
        Some(
            modulus
                .first()
                .map_or(0, |top| modulus.len() * 8 - top.leading_zeros() as usize),
        )
    }
}

/// One DER TLV at the start of `input`: tag (low-tag-number form), content, what follows.
/// `None` if the length is indefinite, longer than four octets, or runs past the input.
pub(super) fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (octets, rest) = rest.split_at(n);
        (octets.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), rest)
    };
    (rest.len() >= len).then(|| {
        let (content, rest) = rest.split_at(len);
        (tag, content, rest)
    })
}

/// The TLVs of a constructed value's content, in order; stops at the first malformed one.
pub(super) struct Elements<'a>(pub(super) &'a [u8]);

impl<'a> Iterator for Elements<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (tag, content, rest) = tlv(self.0)?;
        self.0 = rest;
        Some((tag, content))
    }
}

/// The three parts of a certificate that a signature check needs: the tbsCertificate (full
/// DER), signatureAlgorithm's content and the signature (the BIT STRING's octets).
fn signed_parts(der: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (_, cert, _) = tlv(der)?;
    let (_, _, rest) = tlv(cert)?;
    let tbs = &cert[..cert.len() - rest.len()];
    let (_, alg, rest) = tlv(rest)?;
    match tlv(rest)? {
        (0x03, [0, signature @ ..], []) => Some((tbs, alg, signature)),
        _ => None,
    }
}

/// Whether the key in `issuer_spki` made `cert`'s signature, with the signature algorithms of
/// ztgate's crypto provider (the ones webpki verified the chain with). Used only where names and
/// key identifiers leave more than one candidate issuer, and for a trust anchor's self-signature
/// (at load).
pub(super) fn signed_by(cert: &[u8], issuer_spki: &[u8]) -> bool {
    let Some((tbs, sig_alg, signature)) = signed_parts(cert) else {
        return false;
    };
    let Some((_, spki, _)) = tlv(issuer_spki) else {
        return false;
    };
    let Some((_, key_alg, rest)) = tlv(spki) else {
        return false;
    };
    let Some((0x03, [0, key @ ..], _)) = tlv(rest) else {
        return false;
    };
    crate::tls::provider()
        .signature_verification_algorithms
        .all
        .iter()
        .filter(|a| a.signature_alg_id().as_ref() == sig_alg && a.public_key_alg_id().as_ref() == key_alg)
        .any(|a| a.verify_signature(key, tbs, signature).is_ok())
}
