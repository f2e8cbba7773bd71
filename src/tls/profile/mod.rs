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

mod check;
mod email;
mod facts;
mod path;
mod rule;
#[cfg(test)]
mod tests;
mod violation;

use rustls::pki_types::CertificateDer;

pub(crate) use self::check::NOT_A_CA;
use self::email::EmailConstraints;
pub use self::email::strip_from_anchor as strip_email_constraints;
use self::facts::Facts;
pub use self::rule::{ProfileConfig, Rule, RuleSet};
pub use self::violation::{CertRef, Position, ProfileViolation};

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
                    let link = check::Link {
                        self_signed,
                        issuer_key_id: if self_signed { f.ski_id() } else { None },
                    };
                    Some(Anchor {
                        verdict: check::check(&f, check::Role::Ca, Position::Anchor, &link, cfg),
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
        let link = check::Link {
            self_signed: f.subject == f.issuer && f.spki == issuer_spki,
            issuer_key_id,
        };
        let (role, at) = match k {
            0 => (check::Role::EndEntity, Position::Leaf),
            k => (check::Role::Ca, Position::Intermediate(k)),
        };
        check::check(f, role, at, &link, cfg)?;
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
