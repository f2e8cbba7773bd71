//! OCSP (RFC 6960) for client certificates: the request ztgate sends for one certificate, and
//! every check on the answer before it is believed.
//!
//! An answer counts only if it is a successful basic response, signed by the certificate's
//! issuer or by a responder certificate that issuer signed for OCSP (the `OCSPSigning` EKU,
//! valid now), covers exactly this certificate (issuer name and key hash, serial), and is
//! current: thisUpdate not in the future, nextUpdate (when given) not past. Nonces are not used:
//! freshness comes from thisUpdate/nextUpdate, which is what makes answers cacheable.

use x509_parser::asn1_rs::BitString;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use x509_parser::x509::AlgorithmIdentifier;
use yasna::models::ObjectIdentifier;
use yasna::{ASN1Error, BERReader, DERWriter, Tag};

const OID_SHA1: &[u64] = &[1, 3, 14, 3, 2, 26];
const OID_OCSP_BASIC: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1, 1];
/// How far a responder's clock may run ahead of ours.
const CLOCK_SKEW_SECS: i64 = 300;

/// Which certificate a request asks about (RFC 6960 §4.1.1), with SHA-1 hashes as every
/// responder understands them (RFC 5019 §2.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    name_hash: Vec<u8>,
    key_hash: Vec<u8>,
    /// The serial number's INTEGER content octets, exactly as in the certificate.
    serial: Vec<u8>,
}

impl CertId {
    pub fn new(leaf: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Self {
        let sha1 = |b: &[u8]| {
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, b)
                .as_ref()
                .to_vec()
        };
        Self {
            name_hash: sha1(leaf.issuer().as_raw()),
            key_hash: sha1(&issuer.public_key().subject_public_key.data),
            serial: leaf.raw_serial().to_vec(),
        }
    }

    pub(crate) fn write(&self, w: DERWriter<'_>) {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_oid(&ObjectIdentifier::from_slice(OID_SHA1));
                w.next().write_null();
            });
            w.next().write_bytes(&self.name_hash);
            w.next().write_bytes(&self.key_hash);
            w.next().write_der(&integer_der(&self.serial));
        });
    }
}

/// An INTEGER's DER from its content octets (which the certificate already holds minimal).
fn integer_der(content: &[u8]) -> Vec<u8> {
    let mut out = vec![0x02];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        // Serials are at most 20 octets (RFC 5280 §4.1.2.2); tolerate up to 255.
        out.extend([0x81, len.min(255) as u8]);
    }
    out.extend_from_slice(&content[..len.min(255)]);
    out
}

/// The DER of an OCSPRequest for one certificate, unsigned and without extensions (RFC 5019).
pub fn request(id: &CertId) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            // TBSRequest { requestList SEQUENCE OF Request { reqCert CertID } }
            w.next().write_sequence(|w| {
                w.next().write_sequence(|w| {
                    w.next().write_sequence(|w| id.write(w.next()));
                });
            });
        });
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    Revoked,
    /// The responder does not know the certificate.
    Unknown,
}

impl CertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Revoked => "revoked",
            Self::Unknown => "unknown",
        }
    }
}

/// A verified answer about one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: CertStatus,
    /// Unix seconds.
    pub this_update: i64,
    pub next_update: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum OcspError {
    #[error("malformed OCSP response ({0})")]
    Malformed(String),
    #[error("the responder refused the request: {0}")]
    Refused(&'static str),
    #[error("not a basic OCSP response")]
    NotBasic,
    #[error("the response is not signed by the certificate's issuer or a responder it authorised")]
    BadSignature,
    #[error("the response does not cover this certificate")]
    NotForThisCertificate,
    #[error("the response is not valid yet (thisUpdate {0})")]
    NotYetValid(i64),
    #[error("the response is stale (its nextUpdate {0} has passed)")]
    Stale(i64),
}

impl From<ASN1Error> for OcspError {
    fn from(e: ASN1Error) -> Self {
        Self::Malformed(e.to_string())
    }
}

/// Parses and checks an OCSP response for `id` (a certificate issued by `issuer`) at `now`.
pub fn check_response(der: &[u8], id: &CertId, issuer: &X509Certificate<'_>, now: i64) -> Result<Answer, OcspError> {
    let basic = parse_outer(der)?;
    verify_signer(&basic, issuer, now)?;
    let singles = yasna::parse_der(&basic.tbs, parse_response_data)?;
    let single = singles
        .into_iter()
        .find(|s| &s.id == id)
        .ok_or(OcspError::NotForThisCertificate)?;
    if single.answer.this_update > now + CLOCK_SKEW_SECS {
        return Err(OcspError::NotYetValid(single.answer.this_update));
    }
    if let Some(next) = single.answer.next_update
        && next + CLOCK_SKEW_SECS < now
    {
        return Err(OcspError::Stale(next));
    }
    Ok(single.answer)
}

/// Parses a response the way [`check_response`] does, but without the signature check, which
/// stands before the parsing of the signed part: for the fuzz target, which cannot sign. Returns
/// how many single responses it holds.
#[doc(hidden)]
pub fn parse_unverified(der: &[u8]) -> Result<usize, OcspError> {
    let basic = parse_outer(der)?;
    Ok(yasna::parse_der(&basic.tbs, parse_response_data)?.len())
}

struct Basic {
    /// tbsResponseData, as signed.
    tbs: Vec<u8>,
    sig_alg: Vec<u8>,
    /// The signature BIT STRING's octets (no unused bits in any algorithm ztgate accepts).
    signature: Vec<u8>,
    certs: Vec<Vec<u8>>,
}

fn parse_outer(der: &[u8]) -> Result<Basic, OcspError> {
    let (status, bytes) = yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let status = r.next().read_enum()?;
            let bytes = r.read_optional(|r| {
                r.read_tagged(Tag::context(0), |r| {
                    r.read_sequence(|r| {
                        let kind = r.next().read_oid()?;
                        let body = r.next().read_bytes()?;
                        Ok((kind, body))
                    })
                })
            })?;
            Ok((status, bytes))
        })
    })?;
    let refused = match status {
        0 => None,
        1 => Some("malformedRequest"),
        2 => Some("internalError"),
        3 => Some("tryLater"),
        5 => Some("sigRequired"),
        6 => Some("unauthorized"),
        _ => Some("an unknown status"),
    };
    if let Some(r) = refused {
        return Err(OcspError::Refused(r));
    }
    let (kind, body) = bytes.ok_or_else(|| OcspError::Malformed("successful but no responseBytes".into()))?;
    if kind != ObjectIdentifier::from_slice(OID_OCSP_BASIC) {
        return Err(OcspError::NotBasic);
    }
    let basic = yasna::parse_der(&body, |r| {
        r.read_sequence(|r| {
            let tbs = r.next().read_der()?;
            let sig_alg = r.next().read_der()?;
            let (signature, bits) = r.next().read_bitvec_bytes()?;
            if bits % 8 != 0 {
                return Err(ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
            }
            let certs = r
                .read_optional(|r| r.read_tagged(Tag::context(0), |r| r.collect_sequence_of(|r| r.read_der())))?
                .unwrap_or_default();
            Ok(Basic {
                tbs,
                sig_alg,
                signature,
                certs,
            })
        })
    })?;
    Ok(basic)
}

/// The issuer signed the response itself, or signed the certificate of a responder it delegated
/// OCSP to (RFC 6960 §4.2.2.2).
fn verify_signer(basic: &Basic, issuer: &X509Certificate<'_>, now: i64) -> Result<(), OcspError> {
    let (_, alg) = AlgorithmIdentifier::from_der(&basic.sig_alg).map_err(|e| OcspError::Malformed(e.to_string()))?;
    let sig = BitString::new(0, &basic.signature);
    let signed_by = |spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>| {
        x509_parser::verify::verify_signature(spki, &alg, &sig, &basic.tbs).is_ok()
    };
    if signed_by(issuer.public_key()) {
        return Ok(());
    }
    for der in &basic.certs {
        let Ok((_, responder)) = X509Certificate::from_der(der) else {
            continue;
        };
        let delegated = responder.issuer().as_raw() == issuer.subject().as_raw()
            && responder.verify_signature(Some(issuer.public_key())).is_ok()
            && responder.validity().not_before.timestamp() <= now
            && now <= responder.validity().not_after.timestamp()
            && matches!(responder.extended_key_usage(), Ok(Some(eku)) if eku.value.ocsp_signing);
        if delegated && signed_by(responder.public_key()) {
            return Ok(());
        }
    }
    Err(OcspError::BadSignature)
}

struct Single {
    id: CertId,
    answer: Answer,
}

fn parse_response_data(r: BERReader<'_, '_>) -> Result<Vec<Single>, ASN1Error> {
    r.read_sequence(|r| {
        r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_u8()))?;
        r.next().read_der()?; // responderID: the signature check above is what matters
        r.next().read_generalized_time()?; // producedAt
        let singles = r.next().collect_sequence_of(parse_single)?;
        r.read_optional(|r| r.read_tagged(Tag::context(1), |r| r.read_der()))?;
        Ok(singles)
    })
}

fn parse_single(r: BERReader<'_, '_>) -> Result<Single, ASN1Error> {
    r.read_sequence(|r| {
        let id = r.next().read_sequence(|r| {
            let alg = r.next().read_sequence(|r| {
                let oid = r.next().read_oid()?;
                r.read_optional(|r| r.read_null())?;
                Ok(oid)
            })?;
            let name_hash = r.next().read_bytes()?;
            let key_hash = r.next().read_bytes()?;
            let serial = r.next().read_der()?;
            // Only SHA-1 CertIDs (what ztgate asks with) can match: others get an empty hash.
            let sha1 = alg == ObjectIdentifier::from_slice(OID_SHA1);
            Ok(CertId {
                name_hash: if sha1 { name_hash } else { Vec::new() },
                key_hash,
                serial: integer_content(&serial).to_vec(),
            })
        })?;
        let status = {
            let r = r.next();
            let tag = r.lookahead_tag()?;
            if tag == Tag::context(0) {
                r.read_tagged_implicit(Tag::context(0), |r| r.read_null())?;
                CertStatus::Good
            } else if tag == Tag::context(1) {
                // RevokedInfo { revocationTime, revocationReason [0] OPTIONAL }
                r.read_tagged_implicit(Tag::context(1), |r| {
                    r.read_sequence(|r| {
                        r.next().read_generalized_time()?;
                        r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_enum()))?;
                        Ok(())
                    })
                })?;
                CertStatus::Revoked
            } else if tag == Tag::context(2) {
                r.read_tagged_implicit(Tag::context(2), |r| r.read_null())?;
                CertStatus::Unknown
            } else {
                return Err(ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
            }
        };
        let this_update = r.next().read_generalized_time()?.datetime().unix_timestamp();
        let next_update = r.read_optional(|r| {
            r.read_tagged(Tag::context(0), |r| {
                Ok(r.read_generalized_time()?.datetime().unix_timestamp())
            })
        })?;
        r.read_optional(|r| r.read_tagged(Tag::context(1), |r| r.read_der()))?;
        Ok(Single {
            id,
            answer: Answer {
                status,
                this_update,
                next_update,
            },
        })
    })
}

/// An INTEGER's content octets from its DER (short or one-byte long length).
fn integer_content(der: &[u8]) -> &[u8] {
    match der {
        [0x02, 0x81, _, rest @ ..] => rest,
        [0x02, len, rest @ ..] if *len < 0x80 => rest,
        _ => &[],
    }
}
