//! The rules, applied to one certificate given its place on the path.

use super::facts::Facts;
use super::{CertRef, Position, ProfileConfig, ProfileViolation, Rule};

/// What the certificate is on the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// The client's own certificate.
    EndEntity,
    /// An intermediate or the trust anchor.
    Ca,
}

/// What the certificate's issuer on the path says about it.
#[derive(Debug)]
pub(super) struct Link<'a> {
    /// Issued by its own key (same name and key as its issuer): no authorityKeyIdentifier needed.
    pub(super) self_signed: bool,
    /// The issuer's subjectKeyIdentifier, which the certificate's authorityKeyIdentifier must
    /// equal; `None` when the issuer has none or is not on the path (a trust anchor that is not
    /// self-signed).
    pub(super) issuer_key_id: Option<&'a [u8]>,
}

/// The first rule of `cfg` that `f` breaks, in [`Rule::ALL`]'s order.
pub(super) fn check(
    f: &Facts<'_>,
    role: Role,
    at: Position,
    link: &Link<'_>,
    cfg: &ProfileConfig,
) -> Result<(), ProfileViolation> {
    let cert = || CertRef::new(at, f.subject);
    let on = |rule| cfg.enforces(rule);
    if on(Rule::Serial)
        && let Some(what) = serial_defect(f.serial)
    {
        return Err(ProfileViolation::Serial { cert: cert(), what });
    }
    if on(Rule::DuplicateExt)
        && let Some(oid) = &f.duplicate
    {
        return Err(ProfileViolation::DuplicateExt {
            cert: cert(),
            oid: oid.to_id_string(),
        });
    }
    if on(Rule::UnknownCriticalExt)
        && let Some(oid) = &f.unknown_critical
    {
        return Err(ProfileViolation::UnknownCriticalExt {
            cert: cert(),
            oid: oid.to_id_string(),
        });
    }
    match role {
        Role::EndEntity => end_entity(f, cfg, cert)?,
        Role::Ca => ca(f, cfg, cert)?,
    }
    if on(Rule::AkiMissing) && !link.self_signed && f.aki_id().is_none() {
        return Err(ProfileViolation::AkiMissing { cert: cert() });
    }
    if on(Rule::KeyIdCritical) {
        let which = match (f.aki, f.ski) {
            (Some(aki), _) if aki.critical => Some("authorityKeyIdentifier"),
            (_, Some(ski)) if ski.critical => Some("subjectKeyIdentifier"),
            _ => None,
        };
        if let Some(which) = which {
            return Err(ProfileViolation::KeyIdCritical { cert: cert(), which });
        }
    }
    if on(Rule::KeyIdMismatch)
        && let (Some(aki), Some(ski)) = (f.aki_id(), link.issuer_key_id)
        && aki != ski
    {
        return Err(ProfileViolation::KeyIdMismatch { cert: cert() });
    }
    if on(Rule::SanEmpty) && f.san_names() == Some(0) {
        return Err(ProfileViolation::SanEmpty { cert: cert() });
    }
    if on(Rule::SanNotCritical) && f.subject_is_empty() {
        let what = match f.san {
            None => Some("no subjectAltName"),
            Some(san) if !san.critical => Some("a non-critical subjectAltName"),
            Some(_) => None,
        };
        if let Some(what) = what {
            return Err(ProfileViolation::SanNotCritical { cert: cert(), what });
        }
    }
    if on(Rule::RsaKeySize)
        && let Some(bits) = f.rsa_modulus_bits()
        && (bits < 2048 || bits % 8 != 0)
    {
        return Err(ProfileViolation::RsaKeySize { cert: cert(), bits });
    }
    if on(Rule::Aia)
        && let Some(aia) = f.aia
    {
        let what = if aia.critical {
            Some("is critical")
        } else if f.aia_well_formed() == Some(false) {
            Some("is empty or cannot be read")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(ProfileViolation::Aia { cert: cert(), what });
        }
    }
    Ok(())
}

fn end_entity(f: &Facts<'_>, cfg: &ProfileConfig, cert: impl Fn() -> CertRef) -> Result<(), ProfileViolation> {
    if cfg.enforces(Rule::EeIsCa) {
        let what = if f.is_ca() == Some(true) {
            Some("cA TRUE in basicConstraints")
        } else if f.key_cert_sign() == Some(true) {
            Some("keyCertSign in keyUsage")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(ProfileViolation::EeIsCa { cert: cert(), what });
        }
    }
    if cfg.enforces(Rule::EeNameConstraints) && f.nc.is_some() {
        return Err(ProfileViolation::EeNameConstraints { cert: cert() });
    }
    Ok(())
}

/// What [`ProfileViolation::CaBasicConstraints`] says of a certificate whose basicConstraints
/// say cA FALSE: no CA at all (a leaf), which `check` words apart from a CA issued badly.
pub(crate) const NOT_A_CA: &str = "says cA FALSE";

fn ca(f: &Facts<'_>, cfg: &ProfileConfig, cert: impl Fn() -> CertRef) -> Result<(), ProfileViolation> {
    if cfg.enforces(Rule::CaBasicConstraints) {
        let what = match (f.bc, f.is_ca()) {
            (None, _) => Some("is missing"),
            (Some(_), None) => Some("cannot be read"),
            (Some(_), Some(false)) => Some(NOT_A_CA),
            (Some(bc), Some(true)) if !bc.critical => Some("is not critical"),
            (Some(_), Some(true)) => None,
        };
        if let Some(what) = what {
            return Err(ProfileViolation::CaBasicConstraints { cert: cert(), what });
        }
    }
    if cfg.enforces(Rule::CaKeyUsage) {
        let what = match (f.ku, f.key_cert_sign()) {
            (None, _) => Some("is missing"),
            (Some(_), None) => Some("cannot be read"),
            (Some(_), Some(false)) => Some("lacks keyCertSign"),
            (Some(_), Some(true)) => None,
        };
        if let Some(what) = what {
            return Err(ProfileViolation::CaKeyUsage { cert: cert(), what });
        }
    }
    if cfg.enforces(Rule::CaSubject) && f.subject_is_empty() {
        return Err(ProfileViolation::CaSubject { cert: cert() });
    }
    if cfg.enforces(Rule::SkiMissing) && f.ski_id().is_none() {
        return Err(ProfileViolation::SkiMissing { cert: cert() });
    }
    if cfg.enforces(Rule::EmptyNameConstraints) && f.name_constraint_subtrees() == Some(0) {
        return Err(ProfileViolation::EmptyNameConstraints { cert: cert() });
    }
    Ok(())
}

/// What is wrong with a serial number's INTEGER content octets, if anything.
fn serial_defect(serial: &[u8]) -> Option<&'static str> {
    match serial.first() {
        None => return Some("empty"),
        Some(b) if b & 0x80 != 0 => return Some("negative"),
        Some(_) => {}
    }
    let magnitude = &serial[serial.iter().take_while(|b| **b == 0).count()..];
    if magnitude.is_empty() {
        Some("zero")
    } else if magnitude.len() > 20 {
        Some("longer than 20 octets")
    } else {
        None
    }
}
