//! The client certificate verifier: rustls' `WebPkiClientVerifier`, then ztgate's RFC 5280
//! profile over the chain it verified, with revocation-data failures reported as what they are.
//!
//! rustls maps "a CRL is past its nextUpdate" and "no CRL covers this certificate" to the TLS
//! alert `unknown_ca` (as OpenSSL does), which sends the client's operator looking at their CA.
//! Neither is about the client's certificate: it is ztgate's revocation data that is stale or
//! missing. [`ClientVerifier`] turns both into `CertificateError::Other` carrying a
//! [`RevocationRefused`], which rustls sends as `certificate_unknown` (RFC 8446 §6.2: "some other
//! (unspecified) issue arose in processing the certificate") and
//! [`super::handshake_failure_reason`] still names precisely.
//!
//! A chain WebPKI accepts then goes through [`super::profile::check_chain`]; a violation is sent
//! the same way (`certificate_unknown`, carrying the [`ProfileViolation`], reason `profile_*`).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme};

use super::profile::{self, ProfileConfig, ProfileViolation, TrustAnchors};

/// Why the verifier refused a chain for want of usable revocation data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RevocationRefused {
    /// A configured CRL covering the chain is past its nextUpdate (RFC 5280 §5.1.2.5): ztgate
    /// fails closed rather than trust a list that may miss recent revocations.
    #[error(
        "a CRL covering the client certificate's chain is past its nextUpdate (seconds since the epoch: {})",
        .next_update.map_or_else(|| "not given".to_string(), |s| s.to_string())
    )]
    CrlExpired {
        /// The CRL's nextUpdate, Unix seconds, when rustls reports it.
        next_update: Option<u64>,
    },
    /// `crl_scope = "chain"` and no configured CRL covers a certificate of the chain.
    #[error("no configured CRL covers a certificate of the client's chain")]
    UnknownStatus,
}

impl RevocationRefused {
    /// The handshake reason label (metric, log, audit).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::CrlExpired { .. } => "crl_expired",
            Self::UnknownStatus => "unknown_revocation_status",
        }
    }

    /// The refusal inside a rustls error, if that is what it is.
    pub fn from_rustls(e: &Error) -> Option<&Self> {
        match e {
            Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => inner.downcast_ref(),
            _ => None,
        }
    }
}

/// Delegates everything to the wrapped verifier, re-types its revocation-data errors, and checks
/// what it verified against the profile (see the module docs).
#[derive(Debug)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// `client_ca`, as the profile judged it at load.
    anchors: TrustAnchors,
    profile: ProfileConfig,
}

impl ClientVerifier {
    /// `inner` verifies against the same `client_ca` bundle `anchors` was read from.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, anchors: TrustAnchors, profile: ProfileConfig) -> Self {
        Self {
            inner,
            anchors,
            profile,
        }
    }
}

/// A profile violation as rustls sends it: `certificate_unknown`, the violation kept inside for
/// [`super::handshake_failure_reason`].
fn refused(v: ProfileViolation) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(v))))
}

fn retype(e: Error) -> Error {
    let refused = match &e {
        Error::InvalidCertificate(CertificateError::ExpiredRevocationList) => {
            RevocationRefused::CrlExpired { next_update: None }
        }
        Error::InvalidCertificate(CertificateError::ExpiredRevocationListContext { next_update, .. }) => {
            RevocationRefused::CrlExpired {
                next_update: Some(next_update.as_secs()),
            }
        }
        Error::InvalidCertificate(CertificateError::UnknownRevocationStatus) => RevocationRefused::UnknownStatus,
        _ => return e,
    };
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(refused))))
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(retype)?;
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        profile::check_chain(end_entity, intermediates, &self.anchors, &self.profile, now).map_err(refused)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::AlertDescription;

    use super::*;

    fn alert(e: &Error) -> Option<AlertDescription> {
        match e {
            Error::InvalidCertificate(c) => Some(c.clone().into()),
            _ => None,
        }
    }

    fn reason(e: Error) -> &'static str {
        super::super::handshake_failure_reason(&std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    #[test]
    fn revocation_data_failures_become_certificate_unknown_and_keep_their_reason() {
        let at = |s| UnixTime::since_unix_epoch(Duration::from_secs(s));
        let cases = [
            (
                CertificateError::ExpiredRevocationListContext {
                    time: at(200),
                    next_update: at(100),
                },
                "crl_expired",
            ),
            (CertificateError::ExpiredRevocationList, "crl_expired"),
            (CertificateError::UnknownRevocationStatus, "unknown_revocation_status"),
        ];
        for (raw, want) in cases {
            assert_eq!(
                alert(&Error::InvalidCertificate(raw.clone())),
                Some(AlertDescription::UnknownCA)
            );
            let retyped = retype(Error::InvalidCertificate(raw));
            assert_eq!(alert(&retyped), Some(AlertDescription::CertificateUnknown), "{want}");
            assert_eq!(reason(retyped), want);
        }
        let expired = retype(Error::InvalidCertificate(
            CertificateError::ExpiredRevocationListContext {
                time: at(200),
                next_update: at(100),
            },
        ));
        assert_eq!(
            RevocationRefused::from_rustls(&expired),
            Some(&RevocationRefused::CrlExpired { next_update: Some(100) })
        );
    }

    #[test]
    fn profile_violations_become_certificate_unknown_and_keep_their_reason() {
        let v = ProfileViolation::ChainDepth {
            intermediates: 5,
            max: 4,
        };
        let e = refused(v.clone());
        assert_eq!(alert(&e), Some(AlertDescription::CertificateUnknown));
        assert_eq!(ProfileViolation::from_rustls(&e), Some(&v));
        assert_eq!(RevocationRefused::from_rustls(&e), None);
        assert_eq!(reason(e), "profile_chain_depth");
        // A revocation refusal is not taken for a profile violation.
        let crl = retype(Error::InvalidCertificate(CertificateError::UnknownRevocationStatus));
        assert_eq!(ProfileViolation::from_rustls(&crl), None);
        assert_eq!(reason(crl), "unknown_revocation_status");
    }

    #[test]
    fn certificate_failures_keep_rustls_alert_and_reason() {
        for (raw, alert_want, want) in [
            (
                CertificateError::UnknownIssuer,
                AlertDescription::UnknownCA,
                "unknown_ca",
            ),
            (
                CertificateError::Revoked,
                AlertDescription::CertificateRevoked,
                "revoked",
            ),
            (
                CertificateError::Expired,
                AlertDescription::CertificateExpired,
                "expired",
            ),
        ] {
            let e = retype(Error::InvalidCertificate(raw));
            assert_eq!(alert(&e), Some(alert_want));
            assert_eq!(RevocationRefused::from_rustls(&e), None);
            assert_eq!(reason(e), want);
        }
        // Another `Other` error is not taken for a revocation refusal.
        let other = Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(std::io::Error::other(
            "x",
        )))));
        assert_eq!(reason(other), "bad_certificate");
    }
}
