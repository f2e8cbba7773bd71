//! `[tls]`: the validated TLS, CRL and revocation settings.

use std::path::PathBuf;
use std::time::Duration;

use http::Uri;

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle every client certificate must chain to.
    pub client_ca: PathBuf,
    /// CRL files (PEM). Includes the `file` of every `crl_sources` entry.
    pub crls: Vec<PathBuf>,
    /// CRLs ztgate downloads itself and writes to their `file` (then reloaded like any CRL file).
    pub crl_sources: Vec<CrlSource>,
    pub crl_fetch_interval: Duration,
    pub crl_scope: CrlScope,
    /// Check each client certificate against the CRL its distribution point names (fetched
    /// when first needed, refreshed every `crl_fetch_interval`).
    pub crl_discovery: RevocationMode,
    /// Check each client certificate with OCSP (answers cached until their nextUpdate).
    pub ocsp: RevocationMode,
    /// The OCSP responder to ask instead of the one in the certificate's AIA extension.
    pub ocsp_responder: Option<Uri>,
    /// Bound on one CRL or OCSP exchange made while a client waits.
    pub revocation_timeout: Duration,
    /// How often the certificate, key, CA and CRL files are checked for changes (SIGHUP reloads
    /// at once).
    pub reload_interval: Duration,
    /// `[tls.profile]`: the RFC 5280 checks on every verified client chain.
    pub profile: crate::tls::profile::ProfileConfig,
}

/// A CRL to fetch over HTTP on a schedule.
#[derive(Debug, Clone)]
pub struct CrlSource {
    pub url: Uri,
    pub file: PathBuf,
}

/// Whether an online revocation check runs, and what happens when it cannot give an answer
/// (the responder or distribution point is down, slow, or answers garbage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationMode {
    Off,
    /// No answer: the connection is refused.
    FailClosed,
    /// No answer: the connection is allowed, and the miss is logged and counted.
    FailOpen,
}

/// Which certificates of a client's chain must have a known revocation status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlScope {
    /// Every certificate in the chain (rustls' default, the strict choice).
    Chain,
    /// Only the client's own certificate.
    Leaf,
}
