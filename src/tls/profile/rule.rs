//! The rules, by name and reason label, and `[tls.profile]`.

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
    /// Every rule, in the order [`super::check_chain`] applies them to one certificate.
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
