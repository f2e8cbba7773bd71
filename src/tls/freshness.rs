//! Trust material that loads but no longer does its job: a CRL past its nextUpdate (every
//! handshake it covers fails closed), a CA past its notAfter (it verifies nothing). `ztgate
//! check` reports these; [`ca_expiry`] keeps an expired CA out of the expiry gauge.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::{load_certs, load_crls};
use crate::config::TlsConfig;
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
    /// A CA in `client_ca` is past its notAfter and verifies no client. A warning while another
    /// CA in the bundle is valid, a problem when none is.
    CaExpired {
        /// The `client_ca` bundle.
        path: PathBuf,
        /// The CA's subject, an RFC 4514 DN.
        subject: String,
        /// Unix seconds.
        not_after: i64,
        /// No CA in the bundle is valid: every handshake fails.
        none_valid: bool,
    },
}

impl StaleTrust {
    /// The file the finding is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::CrlExpired { path, .. } | Self::CaExpired { path, .. } => path,
        }
    }

    /// Whether `check` fails on it (exit 64) rather than warning.
    pub fn is_problem(&self) -> bool {
        match self {
            Self::CrlExpired { .. } => true,
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
                ..
            } => {
                write!(f, "CA `{subject}` expired at {}", rfc3339(*not_after))?;
                if *none_valid {
                    f.write_str(" and no CA in the bundle is valid: every handshake is refused")
                } else {
                    f.write_str(": it verifies no client any more; remove it from the bundle")
                }
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
        let none_valid = !parsed.iter().any(|c| valid_at(c, now));
        for ca in parsed.iter().filter(|c| c.validity().not_after.timestamp() < now) {
            found.push(StaleTrust::CaExpired {
                path: cfg.client_ca.clone(),
                subject: dn::render(ca.subject()),
                not_after: ca.validity().not_after.timestamp(),
                none_valid,
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

/// The `client_ca` expiry the gauge shows: the earliest notAfter among the CAs valid at `now`
/// (Unix seconds); when none is, the latest one's (already past, so the gauge is negative).
/// `None` for a bundle without a parseable certificate.
pub(super) fn ca_expiry(bundle: &[CertificateDer<'_>], now: i64) -> Option<i64> {
    let parsed: Vec<_> = bundle
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| c))
        .collect();
    let not_after = |c: &X509Certificate<'_>| c.validity().not_after.timestamp();
    parsed
        .iter()
        .filter(|c| valid_at(c, now))
        .map(not_after)
        .min()
        .or_else(|| parsed.iter().map(not_after).max())
}

fn valid_at(c: &X509Certificate<'_>, now: i64) -> bool {
    (c.validity().not_before.timestamp()..=c.validity().not_after.timestamp()).contains(&now)
}

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
    fn an_expired_ca_does_not_drive_the_bundle_expiry() {
        let now = unix_now();
        let old = CertAuthority::with_validity("old CA", -30, -1).unwrap();
        let current = CertAuthority::with_validity("current CA", -1, 30).unwrap();
        let later = CertAuthority::with_validity("next CA", -1, 365).unwrap();
        let at = ca_expiry(&[der(&old), der(&later), der(&current)], now).unwrap();
        assert!(
            (at - now - 30 * 86_400).abs() < 120,
            "the earliest valid CA's: {}",
            at - now
        );
        // With nothing valid, the most recent expiry: negative, as it should alarm.
        let old2 = CertAuthority::with_validity("older CA", -60, -10).unwrap();
        let at = ca_expiry(&[der(&old2), der(&old)], now).unwrap();
        assert!((at - now + 86_400).abs() < 120, "{}", at - now);
        assert_eq!(ca_expiry(&[], now), None);
    }

    #[test]
    fn rfc3339_renders_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_423_537), "2026-11-23T08:45:37Z");
        assert_eq!(rfc3339(i64::MAX), i64::MAX.to_string());
    }
}
