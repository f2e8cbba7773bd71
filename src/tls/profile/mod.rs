//! ztgate's client-certificate profile: certificates RFC 5280 says a CA must never issue,
//! refused after rustls' WebPKI verifier has built and verified the chain.
//!
//! WebPKI deliberately accepts much of what RFC 5280 forbids (a zero or negative serial, a CA
//! without critical basicConstraints or keyCertSign, a trust anchor that has expired, an end-entity
//! certificate asserting keyCertSign, ...), because the web's PKI is full of it. A zero-trust
//! gateway in front of one organisation's PKI can be stricter: each such certificate is a
//! misissuance or a crafted certificate, and either should not get in.
//!
//! After WebPKI has accepted a chain, [`check_chain`] rebuilds the path it verified (the client's
//! certificate, the intermediates it sent, the `client_ca` certificate they lead to: by names, by
//! key identifiers, and by signature only where those leave a choice), checks its length, and
//! applies the [`Rule`]s to every certificate on it, the trust anchor included. The trust
//! anchors' own checks run once per load ([`TrustAnchors::new`]), not per handshake; what is left
//! per handshake is one x509-parser pass per presented certificate and a few byte comparisons.
//!
//! RFC 822 (email) name constraints, which WebPKI refuses outright, are evaluated here instead
//! for the `client_ca` certificates (see `email.rs`): compliant addresses get in.
//!
//! A violation is a [`ProfileViolation`]; the verifier (`super::verifier`) sends it to the client
//! as `certificate_unknown` and [`super::handshake_failure_reason`] names it by
//! [`ProfileViolation::reason`] (`profile_*`) in the metric, the log and the audit record. Every
//! rule but the path itself and the email constraints can be turned off by name
//! (`[tls.profile] relax`); the chain's length is `[tls.profile] max_chain_depth`. docs/security.md lists the rules and which real PKIs need
//! which relaxation.

mod email;
mod facts;
mod path;
mod rules;
#[cfg(test)]
mod tests;

use std::fmt;

use rustls::pki_types::CertificateDer;

use self::email::EmailConstraints;
pub use self::email::strip_from_anchor as strip_email_constraints;
use self::facts::Facts;
use crate::identity::dn;

/// One rule of the profile, named as `[tls.profile] relax` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// An end-entity certificate asserting cA=TRUE or keyCertSign (RFC 5280 §4.2.1.9, §4.2.1.3).
    EeIsCa,
    /// A serial number that is zero, negative or longer than 20 octets (RFC 5280 §4.1.2.2).
    Serial,
    /// A critical extension ztgate does not understand, on any certificate (RFC 5280 §4.2).
    UnknownCriticalExt,
    /// An extension present twice (RFC 5280 §4.2).
    DuplicateExt,
    /// A CA certificate without basicConstraints cA=TRUE marked critical (RFC 5280 §4.2.1.9).
    CaBasicConstraints,
    /// A CA certificate whose keyUsage is missing or lacks keyCertSign (RFC 5280 §4.2.1.3).
    CaKeyUsage,
    /// A CA certificate with an empty subject (RFC 5280 §4.1.2.6).
    CaSubject,
    /// No authorityKeyIdentifier keyIdentifier on a certificate that is not self-signed
    /// (RFC 5280 §4.2.1.1).
    AkiMissing,
    /// A CA certificate without subjectKeyIdentifier (RFC 5280 §4.2.1.2).
    SkiMissing,
    /// An authorityKeyIdentifier that is not its issuer's subjectKeyIdentifier (RFC 5280 §4.2.1.1).
    KeyIdMismatch,
    /// A critical authorityKeyIdentifier or subjectKeyIdentifier (RFC 5280 §4.2.1.1, §4.2.1.2).
    KeyIdCritical,
    /// A subjectAltName with no name in it (RFC 5280 §4.2.1.6).
    SanEmpty,
    /// An empty subject without a critical subjectAltName (RFC 5280 §4.1.2.6, §4.2.1.6).
    SanNotCritical,
    /// Name constraints on an end-entity certificate (RFC 5280 §4.2.1.10).
    EeNameConstraints,
    /// Name constraints with neither permitted nor excluded subtrees (RFC 5280 §4.2.1.10).
    EmptyNameConstraints,
    /// An RSA modulus shorter than 2048 bits or not a multiple of 8 bits.
    RsaKeySize,
    /// An authorityInfoAccess extension that is critical, empty or unreadable (RFC 5280 §4.2.2.1).
    Aia,
    /// A trust anchor (`client_ca` certificate) past its notAfter.
    AnchorExpired,
    /// An email address outside a CA's RFC 822 name constraints (RFC 5280 §4.2.1.10). Never
    /// relaxed: ztgate evaluates these in WebPKI's place.
    EmailConstraint,
    /// More intermediates than `max_chain_depth`. Set by that key, not by `relax`.
    ChainDepth,
    /// The verified chain cannot be rebuilt. Never relaxed: a check that cannot run denies.
    Path,
}

impl Rule {
    /// Every rule, in the order [`check_chain`] applies them to one certificate.
    pub const ALL: [Rule; 21] = [
        Rule::Path,
        Rule::ChainDepth,
        Rule::Serial,
        Rule::DuplicateExt,
        Rule::UnknownCriticalExt,
        Rule::EeIsCa,
        Rule::EeNameConstraints,
        Rule::CaBasicConstraints,
        Rule::CaKeyUsage,
        Rule::CaSubject,
        Rule::SkiMissing,
        Rule::EmptyNameConstraints,
        Rule::AkiMissing,
        Rule::KeyIdCritical,
        Rule::KeyIdMismatch,
        Rule::SanEmpty,
        Rule::SanNotCritical,
        Rule::RsaKeySize,
        Rule::Aia,
        Rule::EmailConstraint,
        Rule::AnchorExpired,
    ];

    /// The name `[tls.profile] relax` takes (kebab-case).
    pub fn name(self) -> &'static str {
        match self {
            Rule::EeIsCa => "ee-is-ca",
            Rule::Serial => "serial",
            Rule::UnknownCriticalExt => "unknown-critical-ext",
            Rule::DuplicateExt => "duplicate-ext",
            Rule::CaBasicConstraints => "ca-basic-constraints",
            Rule::CaKeyUsage => "ca-key-usage",
            Rule::CaSubject => "ca-subject",
            Rule::AkiMissing => "aki-missing",
            Rule::SkiMissing => "ski-missing",
            Rule::KeyIdMismatch => "key-id-mismatch",
            Rule::KeyIdCritical => "key-id-critical",
            Rule::SanEmpty => "san-empty",
            Rule::SanNotCritical => "san-not-critical",
            Rule::EeNameConstraints => "ee-name-constraints",
            Rule::EmptyNameConstraints => "empty-name-constraints",
            Rule::RsaKeySize => "rsa-key-size",
            Rule::Aia => "aia",
            Rule::AnchorExpired => "anchor-expired",
            Rule::EmailConstraint => "email-constraint",
            Rule::ChainDepth => "chain-depth",
            Rule::Path => "path",
        }
    }

    /// The handshake reason label (metric, log, audit): `profile_` and the name in snake_case.
    pub fn reason(self) -> &'static str {
        match self {
            Rule::EeIsCa => "profile_ee_is_ca",
            Rule::Serial => "profile_serial",
            Rule::UnknownCriticalExt => "profile_unknown_critical_ext",
            Rule::DuplicateExt => "profile_duplicate_ext",
            Rule::CaBasicConstraints => "profile_ca_basic_constraints",
            Rule::CaKeyUsage => "profile_ca_key_usage",
            Rule::CaSubject => "profile_ca_subject",
            Rule::AkiMissing => "profile_aki_missing",
            Rule::SkiMissing => "profile_ski_missing",
            Rule::KeyIdMismatch => "profile_key_id_mismatch",
            Rule::KeyIdCritical => "profile_key_id_critical",
            Rule::SanEmpty => "profile_san_empty",
            Rule::SanNotCritical => "profile_san_not_critical",
            Rule::EeNameConstraints => "profile_ee_name_constraints",
            Rule::EmptyNameConstraints => "profile_empty_name_constraints",
            Rule::RsaKeySize => "profile_rsa_key_size",
            Rule::Aia => "profile_aia",
            Rule::AnchorExpired => "profile_anchor_expired",
            Rule::EmailConstraint => "profile_email_constraint",
            Rule::ChainDepth => "profile_chain_depth",
            Rule::Path => "profile_path",
        }
    }

    /// Whether `[tls.profile] relax` may name it (all but `path`, `chain-depth` and
    /// `email-constraint`).
    pub fn relaxable(self) -> bool {
        !matches!(self, Rule::Path | Rule::ChainDepth | Rule::EmailConstraint)
    }

    /// The rule `relax` names by `name`, if any (relaxable or not).
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == name)
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of [`Rule`]s (the relaxed ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleSet(u32);

impl RuleSet {
    pub fn insert(&mut self, rule: Rule) {
        self.0 |= rule.bit();
    }

    pub fn contains(self, rule: Rule) -> bool {
        self.0 & rule.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Rule> for RuleSet {
    fn from_iter<I: IntoIterator<Item = Rule>>(iter: I) -> Self {
        let mut set = RuleSet::default();
        for r in iter {
            set.insert(r);
        }
        set
    }
}

/// `[tls.profile]`: how strict the profile is. `Default` is the strict profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileConfig {
    /// Most intermediate CAs allowed between a client certificate and its trust anchor
    /// (`0..=6`; WebPKI itself stops at 6). Default [`ProfileConfig::DEFAULT_MAX_CHAIN_DEPTH`].
    pub max_chain_depth: u8,
    /// Rules turned off (`relax`); never [`Rule::Path`] or [`Rule::ChainDepth`].
    pub relaxed: RuleSet,
}

impl ProfileConfig {
    /// Four intermediates: deeper than any of SPIRE (nested servers), cert-manager, Vault or
    /// step-ca build by default (one or two), shallower than WebPKI's six.
    pub const DEFAULT_MAX_CHAIN_DEPTH: u8 = 4;
    /// WebPKI refuses longer chains itself (`MAX_SUB_CA_COUNT`).
    pub const MAX_CHAIN_DEPTH_LIMIT: u8 = 6;

    /// Whether `rule` is checked.
    pub fn enforces(&self, rule: Rule) -> bool {
        !self.relaxed.contains(rule)
    }
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            max_chain_depth: Self::DEFAULT_MAX_CHAIN_DEPTH,
            relaxed: RuleSet::default(),
        }
    }
}

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
    fn new(at: Position, subject_der: &[u8]) -> Self {
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
    #[error("{cert} expired at {at}: an expired trust anchor verifies no client", at = super::freshness::rfc3339(*.not_after))]
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

/// The `client_ca` bundle as the profile sees it, built once per (re)load: each CA's subject,
/// key and key identifier to find it by, its notAfter, and its verdict under the static rules
/// (the CA rules, the serial, the extensions), so that a handshake only looks the verdict up.
#[derive(Debug, Default)]
pub struct TrustAnchors(Vec<Anchor>);

#[derive(Debug)]
struct Anchor {
    subject: Vec<u8>,
    spki: Vec<u8>,
    key_id: Option<Vec<u8>>,
    subject_text: CertRef,
    /// Unix seconds.
    not_after: i64,
    verdict: Result<(), ProfileViolation>,
    /// Its RFC 822 name constraints, which the profile evaluates instead of WebPKI.
    email: Option<EmailConstraints>,
}

impl TrustAnchors {
    /// Reads the bundle's CA certificates and judges each under `cfg`. A certificate x509-parser
    /// cannot read is left out: no path can end at it, so chains under it fail with
    /// `profile_path` (rustls would have refused to load it first).
    pub fn new(bundle: &[CertificateDer<'_>], cfg: &ProfileConfig) -> Self {
        Self(
            bundle
                .iter()
                .filter_map(|der| {
                    let f = Facts::parse(der)?;
                    // A trust anchor has no issuer on the path: self-signed is checked by its
                    // own signature, and its key identifiers must then agree with each other.
                    let self_signed = f.subject == f.issuer && facts::signed_by(f.der, f.spki);
                    let link = rules::Link {
                        self_signed,
                        issuer_key_id: if self_signed { f.ski_id() } else { None },
                    };
                    Some(Anchor {
                        verdict: rules::check(&f, rules::Role::Ca, Position::Anchor, &link, cfg),
                        subject: f.subject.to_vec(),
                        spki: f.spki.to_vec(),
                        key_id: f.ski_id().map(<[u8]>::to_vec),
                        subject_text: CertRef::new(Position::Anchor, f.subject),
                        not_after: f.not_after,
                        email: f.nc.and_then(|nc| EmailConstraints::from_extension(nc.value)),
                    })
                })
                .collect(),
        )
    }

    /// What the static rules found wrong with the bundle's CAs, one violation per CA that has
    /// one, in bundle order. `ztgate check` reports these: no chain ending at such a CA passes.
    pub fn problems(&self) -> impl Iterator<Item = &ProfileViolation> {
        self.0.iter().filter_map(|a| a.verdict.as_ref().err())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks the chain a client presented (`end_entity` then `intermediates`, as rustls hands them
/// to the verifier) against the profile, after WebPKI has verified it against the same
/// `anchors`. `now` is Unix seconds (the handshake's time, for the anchor's expiry).
///
/// Errors: the first violation found, checking the path's length, then the leaf, the
/// intermediates from the leaf up, and the trust anchor.
pub fn check_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchors: &TrustAnchors,
    cfg: &ProfileConfig,
    now: i64,
) -> Result<(), ProfileViolation> {
    let mut presented = Vec::with_capacity(1 + intermediates.len());
    for der in std::iter::once(end_entity).chain(intermediates) {
        presented.push(Facts::parse(der).ok_or(ProfileViolation::Path {
            why: "a certificate cannot be parsed",
        })?);
    }
    let path = path::build(&presented, anchors, cfg)?;
    let depth = path.certs.len() - 1;
    if depth > usize::from(cfg.max_chain_depth) {
        return Err(ProfileViolation::ChainDepth {
            intermediates: depth,
            max: cfg.max_chain_depth,
        });
    }
    let anchor = &anchors.0[path.anchor];
    for (k, &i) in path.certs.iter().enumerate() {
        let f = &presented[i];
        let (issuer_spki, issuer_key_id) = match path.certs.get(k + 1) {
            Some(&p) => (presented[p].spki, presented[p].ski_id()),
            None => (anchor.spki.as_slice(), anchor.key_id.as_deref()),
        };
        let link = rules::Link {
            self_signed: f.subject == f.issuer && f.spki == issuer_spki,
            issuer_key_id,
        };
        let (role, at) = match k {
            0 => (rules::Role::EndEntity, Position::Leaf),
            k => (rules::Role::Ca, Position::Intermediate(k)),
        };
        rules::check(f, role, at, &link, cfg)?;
    }
    check_email(&presented, &path.certs, anchor)?;
    anchor.verdict.clone()?;
    if cfg.enforces(Rule::AnchorExpired) && anchor.not_after < now {
        return Err(ProfileViolation::AnchorExpired {
            cert: anchor.subject_text.clone(),
            not_after: anchor.not_after,
        });
    }
    Ok(())
}

/// Every CA's email name constraints, from the trust anchor down, onto every email address of
/// each certificate below it (a self-issued intermediate excepted, RFC 5280 §6.1.3). Free when no
/// CA on the path constrains email names, the usual case.
fn check_email(presented: &[Facts<'_>], path: &[usize], anchor: &Anchor) -> Result<(), ProfileViolation> {
    let mut constraints: Vec<(CertRef, EmailConstraints)> = Vec::new();
    if let Some(c) = &anchor.email {
        constraints.push((anchor.subject_text.clone(), c.clone()));
    }
    if constraints.is_empty() && path.iter().skip(1).all(|&i| presented[i].nc.is_none()) {
        return Ok(());
    }
    for (k, &i) in path.iter().enumerate().rev() {
        let f = &presented[i];
        let at = if k == 0 {
            Position::Leaf
        } else {
            Position::Intermediate(k)
        };
        if !constraints.is_empty() && (k == 0 || f.subject != f.issuer) {
            for email in email::addresses(f.san.map(|s| s.value), f.subject) {
                for (by, c) in &constraints {
                    if let Some(what) = c.judge(email) {
                        return Err(ProfileViolation::EmailConstraint {
                            cert: CertRef::new(at, f.subject),
                            email: String::from_utf8_lossy(email).into_owned(),
                            what,
                            by: by.clone(),
                        });
                    }
                }
            }
        }
        if k > 0
            && let Some(c) = f.nc.and_then(|nc| EmailConstraints::from_extension(nc.value))
        {
            constraints.push((CertRef::new(at, f.subject), c));
        }
    }
    Ok(())
}
