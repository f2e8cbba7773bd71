//! What a refusal says: the rule broken and the certificate it is about.

use std::fmt;

use super::Rule;
use crate::identity::dn;

/// Where a certificate sits on the verified path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The client's own (end-entity) certificate.
    Leaf,
    /// An intermediate CA, counted from the leaf (1 issued the leaf).
    Intermediate(usize),
    /// The `client_ca` certificate the path ends at.
    Anchor,
}

/// The certificate a violation is about: its place and its subject (an RFC 4514 DN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRef {
    pub at: Position,
    pub subject: String,
}

impl CertRef {
    pub(super) fn new(at: Position, subject_der: &[u8]) -> Self {
        use x509_parser::prelude::FromDer;
        let subject = x509_parser::x509::X509Name::from_der(subject_der)
            .map(|(_, n)| dn::render(&n))
            .unwrap_or_default();
        Self { at, subject }
    }
}

impl fmt::Display for CertRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Position::Leaf => f.write_str("the client certificate")?,
            Position::Intermediate(n) => write!(f, "intermediate CA {n}")?,
            Position::Anchor => f.write_str("the trust anchor")?,
        }
        if self.subject.is_empty() {
            f.write_str(" (empty subject)")
        } else {
            write!(f, " `{}`", self.subject)
        }
    }
}

/// Why the profile refused a chain: one variant per [`Rule`], with the certificate it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileViolation {
    #[error("the verified chain cannot be rebuilt from what the client sent and client_ca: {why}")]
    Path { why: &'static str },
    #[error(
        "the chain has {intermediates} intermediate CA(s) between the client certificate and its trust anchor; [tls.profile] max_chain_depth allows {max}"
    )]
    ChainDepth { intermediates: usize, max: u8 },
    #[error("{cert} expired at {at}: an expired trust anchor verifies no client", at = super::super::freshness::rfc3339(*.not_after))]
    AnchorExpired {
        cert: CertRef,
        /// Unix seconds.
        not_after: i64,
    },
    #[error("{cert} is an end-entity certificate asserting {what} (RFC 5280 §4.2.1.9, §4.2.1.3)")]
    EeIsCa { cert: CertRef, what: &'static str },
    #[error("{cert} has a serial number that is {what} (RFC 5280 §4.1.2.2: positive, at most 20 octets)")]
    Serial { cert: CertRef, what: &'static str },
    #[error("{cert} has a critical extension ztgate does not understand: {oid} (RFC 5280 §4.2)")]
    UnknownCriticalExt { cert: CertRef, oid: String },
    #[error("{cert} carries extension {oid} more than once (RFC 5280 §4.2)")]
    DuplicateExt { cert: CertRef, oid: String },
    #[error("{cert} is a CA whose basicConstraints {what} (RFC 5280 §4.2.1.9: present, critical, cA TRUE)")]
    CaBasicConstraints { cert: CertRef, what: &'static str },
    #[error("{cert} is a CA whose keyUsage {what} (RFC 5280 §4.2.1.3)")]
    CaKeyUsage { cert: CertRef, what: &'static str },
    #[error("{cert} is a CA with an empty subject (RFC 5280 §4.1.2.6)")]
    CaSubject { cert: CertRef },
    #[error("{cert} has no authorityKeyIdentifier keyIdentifier and is not self-signed (RFC 5280 §4.2.1.1)")]
    AkiMissing { cert: CertRef },
    #[error("{cert} is a CA without subjectKeyIdentifier (RFC 5280 §4.2.1.2)")]
    SkiMissing { cert: CertRef },
    #[error("{cert} has an authorityKeyIdentifier that is not its issuer's subjectKeyIdentifier (RFC 5280 §4.2.1.1)")]
    KeyIdMismatch { cert: CertRef },
    #[error("{cert} marks its {which} critical (RFC 5280 §4.2.1.1, §4.2.1.2: non-critical)")]
    KeyIdCritical { cert: CertRef, which: &'static str },
    #[error("{cert} has a subjectAltName with no name in it (RFC 5280 §4.2.1.6)")]
    SanEmpty { cert: CertRef },
    #[error("{cert} has an empty subject and {what} (RFC 5280 §4.1.2.6: the subjectAltName must then be critical)")]
    SanNotCritical { cert: CertRef, what: &'static str },
    #[error("{cert} is an end-entity certificate with name constraints (RFC 5280 §4.2.1.10)")]
    EeNameConstraints { cert: CertRef },
    #[error("{cert} has name constraints with no permitted and no excluded subtree (RFC 5280 §4.2.1.10)")]
    EmptyNameConstraints { cert: CertRef },
    #[error("{cert} has an RSA key of {bits} bits (ztgate requires at least 2048, a multiple of 8)")]
    RsaKeySize { cert: CertRef, bits: usize },
    #[error("{cert} has an authorityInfoAccess extension that {what} (RFC 5280 §4.2.2.1)")]
    Aia { cert: CertRef, what: &'static str },
    #[error(
        "{cert} names the email address `{email}`, which {what} of {by}'s email name constraints (RFC 5280 §4.2.1.10)"
    )]
    EmailConstraint {
        cert: CertRef,
        /// The address, lossily as UTF-8.
        email: String,
        what: &'static str,
        /// The CA whose constraints it breaks.
        by: CertRef,
    },
}

impl ProfileViolation {
    /// The rule broken.
    pub fn rule(&self) -> Rule {
        match self {
            Self::Path { .. } => Rule::Path,
            Self::ChainDepth { .. } => Rule::ChainDepth,
            Self::AnchorExpired { .. } => Rule::AnchorExpired,
            Self::EeIsCa { .. } => Rule::EeIsCa,
            Self::Serial { .. } => Rule::Serial,
            Self::UnknownCriticalExt { .. } => Rule::UnknownCriticalExt,
            Self::DuplicateExt { .. } => Rule::DuplicateExt,
            Self::CaBasicConstraints { .. } => Rule::CaBasicConstraints,
            Self::CaKeyUsage { .. } => Rule::CaKeyUsage,
            Self::CaSubject { .. } => Rule::CaSubject,
            Self::AkiMissing { .. } => Rule::AkiMissing,
            Self::SkiMissing { .. } => Rule::SkiMissing,
            Self::KeyIdMismatch { .. } => Rule::KeyIdMismatch,
            Self::KeyIdCritical { .. } => Rule::KeyIdCritical,
            Self::SanEmpty { .. } => Rule::SanEmpty,
            Self::SanNotCritical { .. } => Rule::SanNotCritical,
            Self::EeNameConstraints { .. } => Rule::EeNameConstraints,
            Self::EmptyNameConstraints { .. } => Rule::EmptyNameConstraints,
            Self::RsaKeySize { .. } => Rule::RsaKeySize,
            Self::Aia { .. } => Rule::Aia,
            Self::EmailConstraint { .. } => Rule::EmailConstraint,
        }
    }

    /// The handshake reason label (metric, log, audit), e.g. `profile_serial`.
    pub fn reason(&self) -> &'static str {
        self.rule().reason()
    }

    /// The certificate the violation is about (`None` for the path and its length).
    pub fn cert(&self) -> Option<&CertRef> {
        match self {
            Self::Path { .. } | Self::ChainDepth { .. } => None,
            Self::AnchorExpired { cert, .. }
            | Self::EeIsCa { cert, .. }
            | Self::Serial { cert, .. }
            | Self::UnknownCriticalExt { cert, .. }
            | Self::DuplicateExt { cert, .. }
            | Self::CaBasicConstraints { cert, .. }
            | Self::CaKeyUsage { cert, .. }
            | Self::CaSubject { cert }
            | Self::AkiMissing { cert }
            | Self::SkiMissing { cert }
            | Self::KeyIdMismatch { cert }
            | Self::KeyIdCritical { cert, .. }
            | Self::SanEmpty { cert }
            | Self::SanNotCritical { cert, .. }
            | Self::EeNameConstraints { cert }
            | Self::EmptyNameConstraints { cert }
            | Self::RsaKeySize { cert, .. }
            | Self::Aia { cert, .. }
            | Self::EmailConstraint { cert, .. } => Some(cert),
        }
    }

    /// The violation inside a rustls error (as the verifier wraps it), if that is what it is.
    pub fn from_rustls(e: &rustls::Error) -> Option<&Self> {
        match e {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(inner))) => {
                inner.downcast_ref()
            }
            _ => None,
        }
    }
}
