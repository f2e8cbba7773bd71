//! A small certificate authority on rcgen: the dev PKI (`ztgate certs dev`) and the certificates
//! the tests mint. ECDSA P-256 keys throughout. [`raw`] writes what rcgen will not (defective
//! certificates, other issuers' shapes).

mod dev;
pub mod raw;

pub use dev::{
    DEV_ADMIN_SPIFFE_ID, DEV_AUDIT_SIGNING_KEY, DEV_AUDIT_VERIFY_KEY, DEV_CLIENT_SPIFFE_ID, IssueRequest,
    issue_from_dir, write_audit_signing_key, write_dev_pki,
};

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, RevocationReason,
    RevokedCertParams, SanType, SerialNumber, SigningKey,
};
use time::{Duration, OffsetDateTime};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot create certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse a certificate: {0}")]
    Parse(String),
    #[error("{0} already exists; pass --force to replace the dev PKI")]
    Exists(PathBuf),
    #[error("no secure random source: {0}")]
    Random(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    NotDevCa { path: PathBuf, problem: &'static str },
    #[error("`{0}` is not a SPIFFE ID (spiffe://trust-domain/path)")]
    SpiffeId(String),
    #[error(
        "`{0}` cannot name certificate files: use letters, digits, `.`, `_` and `-` only (no `/`, not `.` or `..`)"
    )]
    FileName(String),
    #[error("{0} already exists; pass --force to replace it")]
    IdentityExists(PathBuf),
}

/// A CA that can issue leaf certificates, intermediate CAs and CRLs: self-signed (a root) or
/// issued by another [`CertAuthority`] (an intermediate).
pub struct CertAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The same key, for what rcgen does not sign itself (OCSP responses).
    key: KeyPair,
    /// PEM of this CA's certificate followed by the intermediates above it, root excluded: what
    /// a client whose certificate this CA issued sends after its own.
    chain_pem: String,
}

/// What a leaf certificate should say. Validity is relative to now, in days.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    /// Subject O, written before the CN (the usual most-general-first DER order).
    pub organization: Option<String>,
    pub dns: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub uris: Vec<String>,
    pub eku: Vec<ExtendedKeyUsagePurpose>,
    pub valid_from_days: i64,
    pub valid_until_days: i64,
    /// Overrides `valid_until_days` with a notAfter this many seconds from now (short-lived
    /// certificates, tests of what happens at expiry).
    pub valid_for_secs: Option<i64>,
    /// CRL distribution point URLs (`crl_discovery`).
    pub crl_urls: Vec<String>,
    /// OCSP responder URL, written in the AIA extension.
    pub ocsp_url: Option<String>,
}

impl LeafSpec {
    /// A client certificate: CN, optional SPIFFE ID as URI SAN, clientAuth EKU, one year.
    pub fn client(cn: &str, spiffe_id: Option<&str>) -> Self {
        Self {
            common_name: cn.into(),
            organization: None,
            dns: vec![],
            ips: vec![],
            uris: spiffe_id.map(|s| vec![s.to_string()]).unwrap_or_default(),
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            valid_from_days: -1,
            valid_until_days: 365,
            valid_for_secs: None,
            crl_urls: vec![],
            ocsp_url: None,
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1` (plus `dns`), serverAuth EKU.
    pub fn server(cn: &str) -> Self {
        Self {
            common_name: cn.into(),
            organization: None,
            dns: vec!["localhost".into()],
            ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
            uris: vec![],
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
            valid_from_days: -1,
            valid_until_days: 365,
            valid_for_secs: None,
            crl_urls: vec![],
            ocsp_url: None,
        }
    }
}

/// A leaf certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate alone.
    pub cert_pem: String,
    /// The certificate followed by the intermediates up to (not including) the root: what the
    /// client presents. Equal to `cert_pem` for a certificate issued by a root.
    pub chain_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
    pub serial: Vec<u8>,
}

impl CertAuthority {
    /// A CA valid from yesterday for ten years.
    pub fn new(common_name: &str) -> Result<Self, PkiError> {
        Self::with_validity(common_name, -1, 3650)
    }

    /// A CA valid from `valid_from_days` to `valid_until_days` relative to now (negative: in the
    /// past), to test expired trust anchors.
    pub fn with_validity(common_name: &str, valid_from_days: i64, valid_until_days: i64) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let params = ca_params(common_name, valid_from_days, valid_until_days)?;
        let copy = KeyPair::try_from(key.serialize_der())?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, key)?,
            key: copy,
            chain_pem: String::new(),
        })
    }

    /// The CA whose certificate is `cert_pem` (self-signed, a CN-only subject: a CA
    /// `ztgate certs dev` minted) and whose key is `key_pem`, to issue more certificates. rcgen
    /// cannot adopt an existing certificate, so this holds a fresh self-signature over the same
    /// name and key: what it issues names the same issuer and key identifier, and so verifies
    /// under the original `ca.pem`; [`CertAuthority::cert_pem`] is not that file.
    pub fn from_pem(cert_path: &Path, cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let not_dev = |problem| PkiError::NotDevCa {
            path: cert_path.to_path_buf(),
            problem,
        };
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| not_dev("not a PEM certificate"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| not_dev("not a certificate"))?;
        if !cert.is_ca() || cert.subject() != cert.issuer() {
            return Err(not_dev("not a self-signed CA certificate"));
        }
        let mut names = cert.subject().iter_attributes();
        let cn = match (names.next(), names.next()) {
            (Some(only), None) if only.attr_type() == &x509_parser::oid_registry::OID_X509_COMMON_NAME => only
                .as_str()
                .map_err(|_| not_dev("the CA's common name is not text"))?
                .to_string(),
            _ => {
                return Err(not_dev(
                    "the CA's subject is not a single common name (not a ztgate dev CA)",
                ));
            }
        };
        let key = KeyPair::from_pem(key_pem)?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(not_dev("the CA key does not belong to this certificate"));
        }
        let copy = KeyPair::try_from(key.serialize_der())?;
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(ca_params(&cn, -1, 3650)?, key)?,
            key: copy,
            chain_pem: String::new(),
        })
    }

    /// An intermediate CA issued by this one, valid from yesterday for five years (within its
    /// issuer's validity as a real CA would cut it). Certificates it issues carry the chain up
    /// to the root in [`Issued::chain_pem`].
    pub fn intermediate(&self, common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = ca_params(common_name, -1, 5 * 365)?;
        params.use_authority_key_identifier_extension = true;
        let copy = KeyPair::try_from(key.serialize_der())?;
        let issuer = CertifiedIssuer::signed_by(params, key, &self.issuer)?;
        let chain_pem = format!("{}{}", issuer.pem(), self.chain_pem);
        Ok(Self {
            issuer,
            key: copy,
            chain_pem,
        })
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        // rcgen's default DN holds a CN already, which would keep the CN first.
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(o) = &spec.organization {
            params.distinguished_name.push(DnType::OrganizationName, o.as_str());
        }
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = spec.eku.clone();
        params.use_authority_key_identifier_extension = true;
        let mut sans = Vec::new();
        for d in &spec.dns {
            sans.push(SanType::DnsName(d.clone().try_into()?));
        }
        for ip in &spec.ips {
            sans.push(SanType::IpAddress(*ip));
        }
        for u in &spec.uris {
            sans.push(SanType::URI(u.clone().try_into()?));
        }
        params.subject_alt_names = sans;
        if !spec.crl_urls.is_empty() {
            params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
                uris: spec.crl_urls.clone(),
            }];
        }
        if let Some(url) = &spec.ocsp_url {
            params.custom_extensions.push(rcgen::CustomExtension::from_oid_content(
                OID_AUTHORITY_INFO_ACCESS,
                authority_info_access(url),
            ));
        }
        let now = OffsetDateTime::now_utc();
        params.not_before = now + Duration::days(spec.valid_from_days);
        params.not_after = match spec.valid_for_secs {
            Some(secs) => now + Duration::seconds(secs),
            None => now + Duration::days(spec.valid_until_days),
        };
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            chain_pem: format!("{}{}", cert.pem(), self.chain_pem),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            serial: serial.to_bytes(),
        })
    }

    /// The CA's certificate, DER.
    pub fn der(&self) -> &[u8] {
        self.issuer.der()
    }

    /// An OCSP response, signed by this CA, saying `status` about `leaf` (a certificate this CA
    /// issued): what a responder would answer. `next_update_secs` is from now. For tests and labs.
    pub fn ocsp_response(
        &self,
        leaf_der: &[u8],
        status: crate::tls::revocation::ocsp::CertStatus,
        next_update_secs: Option<i64>,
    ) -> Result<Vec<u8>, PkiError> {
        self.ocsp_response_signed_by(self, leaf_der, status, next_update_secs)
    }

    /// The same, about a certificate this CA issued, but signed with `signer`'s key (a forgery,
    /// which ztgate must refuse).
    pub fn ocsp_response_signed_by(
        &self,
        signer: &CertAuthority,
        leaf_der: &[u8],
        status: crate::tls::revocation::ocsp::CertStatus,
        next_update_secs: Option<i64>,
    ) -> Result<Vec<u8>, PkiError> {
        self.ocsp_response_with(&signer.key, signer.der(), false, leaf_der, status, next_update_secs)
    }

    /// The same, signed by a delegated responder (`responder`, a certificate this CA issued,
    /// normally with the OCSPSigning EKU), whose certificate travels in the response.
    pub fn ocsp_response_by_responder(
        &self,
        responder: &Issued,
        leaf_der: &[u8],
        status: crate::tls::revocation::ocsp::CertStatus,
        next_update_secs: Option<i64>,
    ) -> Result<Vec<u8>, PkiError> {
        let key = KeyPair::from_pem(&responder.key_pem)?;
        self.ocsp_response_with(&key, &responder.der, true, leaf_der, status, next_update_secs)
    }

    fn ocsp_response_with(
        &self,
        signer_key: &KeyPair,
        signer_der: &[u8],
        include_signer: bool,
        leaf_der: &[u8],
        status: crate::tls::revocation::ocsp::CertStatus,
        next_update_secs: Option<i64>,
    ) -> Result<Vec<u8>, PkiError> {
        use crate::tls::revocation::ocsp::CertStatus;
        use x509_parser::prelude::FromDer;
        use yasna::Tag;
        use yasna::models::{GeneralizedTime, ObjectIdentifier};
        let parse = |der| {
            x509_parser::certificate::X509Certificate::from_der(der)
                .map(|(_, c)| c)
                .map_err(|e| PkiError::Parse(e.to_string()))
        };
        let (leaf, issuer) = (parse(leaf_der)?, parse(self.der())?);
        let id = crate::tls::revocation::ocsp::CertId::new(&leaf, &issuer);
        let signer_key_hash = ring::digest::digest(
            &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            &parse(signer_der)?.public_key().subject_public_key.data,
        );
        let now = OffsetDateTime::now_utc();
        let time = |t: OffsetDateTime| GeneralizedTime::from_datetime(t.replace_nanosecond(0).unwrap_or(t));
        let tbs = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                // responderID byKey: [2] EXPLICIT KeyHash, the SHA-1 of the signer's key (how
                // OpenSSL finds the signer; ztgate itself relies on the signature alone).
                w.next()
                    .write_tagged(Tag::context(2), |w| w.write_bytes(signer_key_hash.as_ref()));
                w.next().write_generalized_time(&time(now));
                w.next().write_sequence(|w| {
                    w.next().write_sequence(|w| {
                        id.write(w.next());
                        match status {
                            CertStatus::Good => w.next().write_tagged_implicit(Tag::context(0), |w| w.write_null()),
                            CertStatus::Unknown => w.next().write_tagged_implicit(Tag::context(2), |w| w.write_null()),
                            CertStatus::Revoked => w.next().write_tagged_implicit(Tag::context(1), |w| {
                                w.write_sequence(|w| w.next().write_generalized_time(&time(now - Duration::minutes(1))))
                            }),
                        }
                        w.next().write_generalized_time(&time(now - Duration::minutes(1)));
                        if let Some(secs) = next_update_secs {
                            w.next().write_tagged(Tag::context(0), |w| {
                                w.write_generalized_time(&time(now + Duration::seconds(secs)))
                            });
                        }
                    });
                });
            });
        });
        let signature = signer_key.sign(&tbs)?;
        let basic = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&tbs);
                w.next().write_sequence(|w| {
                    w.next().write_oid(&ObjectIdentifier::from_slice(OID_ECDSA_WITH_SHA256));
                });
                w.next().write_bitvec_bytes(&signature, signature.len() * 8);
                if include_signer {
                    w.next().write_tagged(Tag::context(0), |w| {
                        w.write_sequence(|w| w.next().write_der(signer_der))
                    });
                }
            });
        });
        Ok(yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_enum(0);
                w.next().write_tagged(Tag::context(0), |w| {
                    w.write_sequence(|w| {
                        w.next()
                            .write_oid(&ObjectIdentifier::from_slice(&[1, 3, 6, 1, 5, 5, 7, 48, 1, 1]));
                        w.next().write_bytes(&basic);
                    });
                });
            });
        }))
    }

    /// A CRL revoking the given serials, valid for a week.
    pub fn crl_pem(&self, revoked: &[&[u8]]) -> Result<String, PkiError> {
        self.crl_pem_until(revoked, 7 * 24 * 3600)
    }

    /// A CRL revoking the given serials whose nextUpdate is `next_update_secs` from now
    /// (negative: a stale CRL). Its thisUpdate is five minutes ago, or a day before a past
    /// nextUpdate.
    pub fn crl_pem_until(&self, revoked: &[&[u8]], next_update_secs: i64) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let next_update = now + Duration::seconds(next_update_secs);
        let params = CertificateRevocationListParams {
            this_update: (now - Duration::minutes(5)).min(next_update - Duration::days(1)),
            next_update,
            crl_number: SerialNumber::from(now.unix_timestamp().unsigned_abs()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now - Duration::minutes(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// A CA certificate's parameters: critical basicConstraints cA=TRUE, keyUsage keyCertSign,
/// cRLSign and digitalSignature (critical), a subjectKeyIdentifier (rcgen writes it for CAs), a
/// random positive serial: what RFC 5280 §4.2.1 asks of a CA and ztgate's profile checks.
fn ca_params(common_name: &str, valid_from_days: i64, valid_until_days: i64) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now + Duration::days(valid_from_days);
    params.not_after = now + Duration::days(valid_until_days);
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// The DER of an AuthorityInfoAccess extension naming one OCSP responder.
fn authority_info_access(url: &str) -> Vec<u8> {
    use yasna::models::ObjectIdentifier;
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_oid(&ObjectIdentifier::from_slice(OID_AD_OCSP));
                w.next()
                    .write_tagged_implicit(yasna::Tag::context(6), |w| w.write_ia5_string(url));
            });
        });
    })
}

const OID_AUTHORITY_INFO_ACCESS: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];
const OID_AD_OCSP: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 48, 1];
const OID_ECDSA_WITH_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    crate::tls::provider()
        .secure_random
        .fill(&mut b)
        .map_err(|e| PkiError::Random(format!("{e:?}")))?;
    b[0] &= 0x7f; // positive, as RFC 5280 requires
    b[0] |= 0x01; // and no leading zero byte to trim
    Ok(SerialNumber::from_slice(&b))
}
