//! Trust material that loads but does not do its job: a CRL past its nextUpdate (every
//! handshake it covers fails closed), a CA past its notAfter or breaking the client-certificate
//! profile (it verifies nothing). `ztgate check` reports these; [`ca_expiries`] gives each CA its
//! own expiry gauge.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::TlsConfig;
use super::profile::{NOT_A_CA, ProfileViolation, Rule, TrustAnchors};
use super::{load_certs, load_crls};
use crate::identity::dn;

/// One finding of [`stale_trust`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaleTrust {
    /// A CRL in `[tls] crls` is past its nextUpdate (RFC 5280 §5.1.2.5): the handshakes it covers
    /// fail with `crl_expired`. Always a problem.
    CrlExpired {
        /// The CRL file (one of `[tls] crls`).
        path: PathBuf,
        /// The CRL's issuer, an RFC 4514 DN.
        issuer: String,
        /// Unix seconds.
        next_update: i64,
    },
    /// A CA in `client_ca` is past its notAfter and verifies no client (`profile_anchor_expired`).
    /// A warning while another CA in the bundle is valid, a problem when none is.
    CaExpired {
        /// The `client_ca` bundle.
        path: PathBuf,
        /// The CA's subject, an RFC 4514 DN.
        subject: String,
        /// Unix seconds.
        not_after: i64,
        /// No CA in the bundle is valid: every handshake fails.
        none_valid: bool,
        /// `[tls.profile] relax` lists `anchor-expired`: it still verifies clients.
        relaxed: bool,
    },
    /// A CA in `client_ca` breaks the client-certificate profile (docs/security.md): no chain
    /// ending at it is accepted. Always a problem.
    CaProfile {
        /// The `client_ca` bundle.
        path: PathBuf,
        /// The rule it breaks, naming the CA.
        violation: ProfileViolation,
    },
}

impl StaleTrust {
    /// The file the finding is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::CrlExpired { path, .. } | Self::CaExpired { path, .. } | Self::CaProfile { path, .. } => path,
        }
    }

    /// Whether `check` fails on it (exit 64) rather than warning.
    pub fn is_problem(&self) -> bool {
        match self {
            Self::CrlExpired { .. } | Self::CaProfile { .. } => true,
            Self::CaExpired { none_valid, .. } => *none_valid,
        }
    }
}

impl fmt::Display for StaleTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CrlExpired {
                issuer, next_update, ..
            } => write!(
                f,
                "CRL of `{issuer}` is past its nextUpdate {}: every handshake it covers is refused (crl_expired); install a current CRL",
                rfc3339(*next_update)
            ),
            Self::CaExpired {
                subject,
                not_after,
                none_valid,
                relaxed,
                ..
            } => {
                write!(f, "CA `{subject}` expired at {}", rfc3339(*not_after))?;
                if *relaxed {
                    f.write_str(
                        ": `anchor-expired` is relaxed, so it still verifies clients; remove it from the bundle",
                    )
                } else if *none_valid {
                    f.write_str(" and no CA in the bundle is valid: every handshake is refused")
                } else {
                    f.write_str(": it verifies no client any more; remove it from the bundle")
                }
            }
            // A certificate with cA FALSE is not a CA that was issued badly but no CA at all:
            // most often a client or server certificate given as `client_ca`.
            Self::CaProfile {
                violation: violation @ ProfileViolation::CaBasicConstraints { cert, what: NOT_A_CA },
                ..
            } => write!(
                f,
                "{cert} is not a CA certificate (its basicConstraints say cA FALSE: a client or server certificate?): client_ca must hold the CA that issued the client certificates; no client chaining to it is accepted ({})",
                violation.reason()
            ),
            Self::CaProfile { violation, .. } => {
                write!(
                    f,
                    "{violation}: no client chaining to it is accepted ({})",
                    violation.reason()
                )?;
                let rule = violation.rule();
                if rule.relaxable() {
                    write!(
                        f,
                        "; reissue the CA, or accept it with [tls.profile] relax = [\"{}\"]",
                        rule.name()
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// What in `cfg`'s CRL files and client CA bundle is stale at `now` (Unix seconds), in file
/// order. Files that do not load are skipped: [`super::server_tls`] reports those.
pub fn stale_trust(cfg: &TlsConfig, now: i64) -> Vec<StaleTrust> {
    let mut found = Vec::new();
    if let Ok(cas) = load_certs(&cfg.client_ca) {
        let parsed: Vec<_> = cas
            .iter()
            .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
            .collect();
        let relaxed = !cfg.profile.enforces(Rule::AnchorExpired);
        let none_valid = !relaxed && !parsed.iter().any(|c| valid_at(c, now));
        for ca in parsed.iter().filter(|c| c.validity().not_after.timestamp() < now) {
            found.push(StaleTrust::CaExpired {
                path: cfg.client_ca.clone(),
                subject: dn::render(ca.subject()),
                not_after: ca.validity().not_after.timestamp(),
                none_valid,
                relaxed,
            });
        }
        for violation in TrustAnchors::new(&cas, &cfg.profile).problems() {
            found.push(StaleTrust::CaProfile {
                path: cfg.client_ca.clone(),
                violation: violation.clone(),
            });
        }
    }
    for path in &cfg.crls {
        let Ok(crls) = load_crls(path) else { continue };
        for der in &crls {
            let Ok((_, crl)) = CertificateRevocationList::from_der(der) else {
                continue;
            };
            if let Some(next) = crl.next_update().map(|t| t.timestamp())
                && next < now
            {
                found.push(StaleTrust::CrlExpired {
                    path: path.clone(),
                    issuer: dn::render(crl.issuer()),
                    next_update: next,
                });
            }
        }
    }
    found
}

/// Each CA's notAfter (Unix seconds) under its gauge label, in bundle order:
/// `client_ca:` + its subject CN (else its whole RFC 4514 subject, else its SHA-256 fingerprint's
/// first 8 octets in hex), with `:` and that fingerprint appended where two CAs would share a
/// label (a rotated CA that kept its name). Bounded by the bundle's size; an expired CA keeps its
/// series, negative, until it is removed.
pub(super) fn ca_expiries(bundle: &[CertificateDer<'_>]) -> Vec<(String, i64)> {
    let fingerprint = |der: &[u8]| {
        let d = ring::digest::digest(&ring::digest::SHA256, der);
        d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let named: Vec<(String, String, i64)> = bundle
        .iter()
        .filter_map(|der| {
            let (_, c) = X509Certificate::from_der(der).ok()?;
            let fp = fingerprint(der);
            let cn = c.subject().iter_common_name().next().and_then(|a| a.as_str().ok());
            let name = match cn {
                Some(cn) if !cn.is_empty() => cn.to_string(),
                _ => Some(dn::render(c.subject()))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| fp.clone()),
            };
            let name: String = name.chars().take(96).collect();
            Some((name, fp, c.validity().not_after.timestamp()))
        })
        .collect();
    named
        .iter()
        .map(|(name, fp, at)| {
            let shared = named.iter().filter(|(other, _, _)| other == name).count() > 1;
            let label = if shared {
                format!("client_ca:{name}:{fp}")
            } else {
                format!("client_ca:{name}")
            };
            (label, *at)
        })
        .collect()
}

fn valid_at(c: &X509Certificate<'_>, now: i64) -> bool {
    (c.validity().not_before.timestamp()..=c.validity().not_after.timestamp()).contains(&now)
}

#[cfg(test)]
pub(super) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC); the bare number if out of range.
pub(super) fn rfc3339(secs: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => secs.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::CertAuthority;

    fn der(ca: &CertAuthority) -> CertificateDer<'static> {
        CertificateDer::from(ca.der().to_vec())
    }

    #[test]
    fn each_ca_has_its_own_expiry_series_and_an_expired_one_does_not_hide_the_others() {
        let now = unix_now();
        let old = CertAuthority::with_validity("old CA", -30, -1).unwrap();
        let current = CertAuthority::with_validity("current CA", -1, 30).unwrap();
        let later = CertAuthority::with_validity("next CA", -1, 365).unwrap();
        let series = ca_expiries(&[der(&old), der(&later), der(&current)]);
        let labels: Vec<&str> = series.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            labels,
            ["client_ca:old CA", "client_ca:next CA", "client_ca:current CA"]
        );
        let left = |i: usize| (series[i].1 - now) / 86_400;
        assert_eq!((left(0), left(1), left(2)), (-1, 365, 30), "{series:?}");
        assert!(ca_expiries(&[]).is_empty());
    }

    #[test]
    fn cas_sharing_a_name_get_their_fingerprint_in_the_label() {
        let a = CertAuthority::new("Corp Root").unwrap();
        let b = CertAuthority::new("Corp Root").unwrap();
        let other = CertAuthority::new("Other Root").unwrap();
        let series = ca_expiries(&[der(&a), der(&b), der(&other)]);
        assert!(series[0].0.starts_with("client_ca:Corp Root:"), "{series:?}");
        assert!(series[1].0.starts_with("client_ca:Corp Root:"), "{series:?}");
        assert_ne!(series[0].0, series[1].0);
        assert_eq!(series[0].0.len(), "client_ca:Corp Root:".len() + 16);
        assert_eq!(series[2].0, "client_ca:Other Root");
    }

    #[test]
    fn rfc3339_renders_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_423_537), "2026-11-23T08:45:37Z");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
    }
}
