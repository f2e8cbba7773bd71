//! The peer's identity, parsed once per connection from its verified certificate.
//!
//! [`PeerIdentity::from_der`] is a pure function over DER bytes: the TLS layer has already
//! verified the chain, this only reads what the certificate says.

mod config;
pub mod dn;
mod spiffe;
mod xfcc;

use std::fmt;
use std::net::IpAddr;

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

pub use config::TrustedHopConfig;
pub use spiffe::{SpiffeError, SpiffeId};
pub use xfcc::{XfccError, header_safe, parse_xfcc, render_xfcc};

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Set only for a valid X.509-SVID: exactly one URI SAN, and it is a valid SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// Why a certificate with a `spiffe://` URI SAN did not yield a SPIFFE ID (for logs).
    pub spiffe_error: Option<SpiffeError>,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub emails: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    pub organizational_units: Vec<String>,
    /// Subject DN as an RFC 4514 string ([`dn::render`]: most specific RDN first, `,` without
    /// spaces, values escaped), e.g. `CN=client,O=Acme\, Inc.`.
    pub subject: String,
    /// Issuer DN, rendered like `subject`: what policy `issuer` entries are compared with.
    pub issuer: String,
    /// Serial number, lowercase hex without separators.
    pub serial: String,
    /// SHA-256 of the certificate's DER, lowercase hex (Envoy's XFCC `Hash`).
    pub fingerprint_sha256: String,
    /// SHA-256 of the SubjectPublicKeyInfo, standard base64 (HPKP / Envoy `verify_certificate_spki`
    /// format): stays the same across re-issuance with the same key.
    pub spki_sha256: String,
    /// Validity bounds, seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("client certificate is not valid DER: {0}")]
    Der(String),
    #[error("client certificate has a malformed subjectAltName extension: {0}")]
    San(String),
}

impl PeerIdentity {
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Der(e.to_string()))?;

        let mut uris = Vec::new();
        let mut dns = Vec::new();
        let mut emails = Vec::new();
        let mut ips = Vec::new();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::San(e.to_string()))?;
        for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::URI(u) => uris.push((*u).to_string()),
                GeneralName::DNSName(d) => dns.push((*d).to_string()),
                GeneralName::RFC822Name(e) => emails.push((*e).to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        ips.push(ip);
                    }
                }
                _ => {}
            }
        }

        // X.509-SVID §2: an SVID carries exactly one URI SAN. A certificate with several URIs
        // (even if one is spiffe://) is not an SVID, and matching it by SPIFFE ID would let the
        // holder pick which identity it is judged by.
        let (spiffe_id, spiffe_error) = match uris.as_slice() {
            [only] if only.starts_with("spiffe://") => match SpiffeId::parse(only) {
                Ok(id) => (Some(id), None),
                Err(e) => (None, Some(e)),
            },
            many if many.iter().any(|u| u.starts_with("spiffe://")) => (None, Some(SpiffeError::Scheme)),
            _ => (None, None),
        };

        let subject = cert.subject();
        let attr_strings = |iter: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
            iter.filter_map(|a| a.as_str().ok().map(str::to_string))
                .collect::<Vec<_>>()
        };
        let common_name = attr_strings(&mut subject.iter_common_name()).into_iter().next();
        let organizations = attr_strings(&mut subject.iter_organization());
        let organizational_units = attr_strings(&mut subject.iter_organizational_unit());

        Ok(PeerIdentity {
            spiffe_id,
            spiffe_error,
            uris,
            dns,
            emails,
            ips,
            common_name,
            organizations,
            organizational_units,
            subject: dn::render(subject),
            issuer: dn::render(cert.issuer()),
            serial: hex(cert.raw_serial()),
            fingerprint_sha256: hex(&Sha256::digest(der)),
            spki_sha256: {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(Sha256::digest(cert.public_key().raw))
            },
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// The name this peer is known by in `x-ztgate-identity`, logs and `explain`: typed by its
    /// source, so that only a verified SVID reads as a SPIFFE ID (see [`IdentityName`]).
    pub fn display_name(&self) -> IdentityName<'_> {
        match (&self.spiffe_id, &self.common_name) {
            (Some(id), _) => IdentityName::Spiffe(id),
            (None, Some(cn)) => IdentityName::CommonName(cn),
            (None, None) => IdentityName::Fingerprint(&self.fingerprint_sha256),
        }
    }
}

/// A peer's name, typed by where it came from. Its `Display` form is what `x-ztgate-identity`
/// carries, and it is always a valid header value (printable ASCII):
///
/// - `spiffe://<trust-domain>/<path>`: the SPIFFE ID of an X.509-SVID (exactly one URI SAN, a
///   valid SPIFFE ID), and only then;
/// - `cn:<subject CN>`: no SVID, the subject common name, with control characters, non-ASCII
///   bytes and `%` percent-encoded ([`header_safe`]);
/// - `sha256:<64 lowercase hex digits>`: neither, the certificate's SHA-256 fingerprint.
///
/// A `cn:` or `sha256:` name can never start with `spiffe:`, whatever the certificate says, so
/// an upstream that trusts `spiffe://` names cannot be handed one by a CN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityName<'a> {
    /// A verified SVID's SPIFFE ID: `spiffe://...`.
    Spiffe(&'a SpiffeId),
    /// No SVID: the subject CN as the certificate has it (encoded on display): `cn:...`.
    CommonName(&'a str),
    /// Neither: the certificate's SHA-256 fingerprint, lowercase hex: `sha256:...`.
    Fingerprint(&'a str),
}

impl fmt::Display for IdentityName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // SPIFFE IDs are validated to a header-safe character set.
            Self::Spiffe(id) => f.write_str(id.as_str()),
            Self::CommonName(cn) => write!(f, "cn:{}", header_safe(cn)),
            Self::Fingerprint(hex) => write!(f, "sha256:{hex}"),
        }
    }
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A SHA-256 certificate fingerprint as operators write it (hex, any case, `:` allowed), in the
/// form [`PeerIdentity::fingerprint_sha256`] has; `None` if it is not 64 hex digits.
pub(crate) fn parse_fingerprint(s: &str) -> Option<String> {
    let hex: String = s
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // Bytes, not chars: no UTF-8 encoding per digit (the audit chain hexes a hash per record).
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]);
    }
    // Only ASCII hex digits were written: always valid UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests;
