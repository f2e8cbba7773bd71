//! rustls configuration: the mTLS server side (client certificate required, CRLs honoured) and
//! the client side used for `https://` upstreams.
//!
//! rustls' strict defaults are kept: `WebPkiClientVerifier` checks the chain, validity, the
//! clientAuth EKU (when the certificate carries an EKU extension) and revocation, and a CRL past
//! its nextUpdate fails closed (`enforce_revocation_expiration`). ztgate's RFC 5280 profile
//! ([`profile`]) then refuses what WebPKI lets through but no CA should issue.

mod config;
mod fetch;
mod forwarded;
mod freshness;
mod pem;
pub mod profile;
pub mod revocation;
mod verifier;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

pub use config::{CrlScope, CrlSource, RevocationMode, TlsConfig};
pub use fetch::{CrlFetchError, CrlFetcher, Fetched};
pub use forwarded::{ForwardedChains, ForwardedError};
pub use freshness::{StaleTrust, stale_trust};
pub use pem::{load_certs, load_crls, load_key};
pub use verifier::{ClientVerifier, RevocationRefused};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {kind} from {path}: {source}")]
    Pem {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} contains no {kind}")]
    Empty { kind: &'static str, path: PathBuf },
    #[error("CA certificate in {path} is unusable as a trust anchor: {source}")]
    BadCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "cannot build the client certificate verifier (CA {ca}, CRLs {}): {source}",
        .crls.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Verifier {
        ca: PathBuf,
        crls: Vec<PathBuf>,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("certificate {cert} and key {key} do not form a usable pair: {source}")]
    KeyPair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("server certificate {path} cannot be parsed: {reason}")]
    BadServerCert { path: PathBuf, reason: String },
}

impl TlsError {
    /// The file the error is about (for a certificate/key pair, the certificate).
    pub fn path(&self) -> &Path {
        match self {
            TlsError::Pem { path, .. }
            | TlsError::Empty { path, .. }
            | TlsError::BadCa { path, .. }
            | TlsError::BadServerCert { path, .. } => path,
            TlsError::Verifier { ca, .. } => ca,
            TlsError::KeyPair { cert, .. } => cert,
        }
    }
}

/// The crypto provider every TLS object in ztgate uses: ring's (aws-lc-rs's with the `aws-lc-rs`
/// feature, kept to repeat the measurement behind the choice: docs/performance.md, "Crypto
/// provider"), with the AES-128-GCM suites first (see [`suite_rank`]).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            #[cfg(feature = "aws-lc-rs")]
            let mut p = rustls::crypto::aws_lc_rs::default_provider();
            #[cfg(not(feature = "aws-lc-rs"))]
            let mut p = rustls::crypto::ring::default_provider();
            p.cipher_suites.sort_by_key(|s| suite_rank(s.suite()));
            Arc::new(p)
        })
        .clone()
}

/// The listener picks the suite by its own order (`ignore_client_order`), and that order puts
/// AES-128-GCM first: every suite offered is strong, and AES-128-GCM with SHA-256 is the
/// cheapest on servers (AES-NI; SHA-NI for the key schedule and transcript, where SHA-384 has
/// no hardware help and cost ~4 % of a full handshake's CPU in a profile). OpenSSL-based
/// clients prefer AES-256-GCM-SHA384 and would otherwise get it. Same choice as Go's crypto/tls.
fn suite_rank(s: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as C;
    match s {
        C::TLS13_AES_128_GCM_SHA256
        | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        _ => 1,
    }
}

/// The listener's TLS state, built once per (re)load.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// First URI SAN of ztgate's own certificate: the `By` element of XFCC.
    pub server_uri: Option<String>,
    /// When the server certificate, the client CA and each CRL run out (for metrics).
    pub expiry: Vec<Expiry>,
    /// The client certificate verifier inside `config` ([`ClientVerifier`]: rustls' WebPKI
    /// verifier and ztgate's profile), kept to re-check open connections' chains after a reload (a CRL that now
    /// revokes them or has gone stale, a CA that is gone) and to verify forwarded chains.
    pub verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    /// The client CA bundle: issuers for the online revocation checks.
    pub client_ca: Arc<[rustls::pki_types::CertificateDer<'static>]>,
    /// The trust generation: unique per [`server_tls`] call and increasing, so every reload's
    /// client CA and CRLs are a newer generation than what was verified before. Caches of
    /// verification results (forwarded chains) are keyed by it.
    pub generation: u64,
}

/// The next trust generation (starts at 1).
fn next_generation() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    GENERATION.fetch_add(1, Ordering::Relaxed) + 1
}

impl ServerTls {
    /// Whether a chain that passed the handshake earlier still verifies now (after a reload).
    pub fn still_trusted(&self, chain: &[rustls::pki_types::CertificateDer<'static>]) -> Result<(), rustls::Error> {
        let (leaf, intermediates) = chain.split_first().ok_or(rustls::Error::NoCertificatesPresented)?;
        self.verifier
            .verify_client_cert(leaf, intermediates, rustls::pki_types::UnixTime::now())
            .map(|_| ())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryKind {
    Certificate,
    /// A CRL's nextUpdate.
    Crl,
    /// A CRL's thisUpdate (reported as an age).
    CrlIssued,
}

#[derive(Debug, Clone)]
pub struct Expiry {
    /// `server`, `client_ca:<CA>` (one per CA of the bundle, see `freshness::ca_expiries`), or
    /// the CRL's file name.
    pub label: String,
    pub kind: ExpiryKind,
    /// Unix seconds.
    pub at: i64,
}

pub fn server_tls(cfg: &TlsConfig) -> Result<ServerTls, TlsError> {
    let certs = load_certs(&cfg.cert)?;
    let key = load_key(&cfg.key)?;
    let mut roots = load_roots(&cfg.client_ca)?;
    // The profile evaluates the CAs' email name constraints, which WebPKI cannot.
    roots.roots.iter_mut().for_each(profile::strip_email_constraints);
    let crls = cfg.crls.iter().map(|p| load_crls(p)).collect::<Result<Vec<_>, _>>()?;
    let mut expiry = Vec::new();
    let client_ca: Arc<[rustls::pki_types::CertificateDer<'static>]> = load_certs(&cfg.client_ca)?.into();
    for (label, at) in freshness::ca_expiries(&client_ca) {
        expiry.push(Expiry {
            label,
            kind: ExpiryKind::Certificate,
            at,
        });
    }
    for (path, list) in cfg.crls.iter().zip(&crls) {
        use x509_parser::prelude::FromDer;
        let parsed: Vec<_> = list
            .iter()
            .filter_map(|der| x509_parser::revocation_list::CertificateRevocationList::from_der(der).ok())
            .map(|(_, crl)| (crl.last_update().timestamp(), crl.next_update().map(|t| t.timestamp())))
            .collect();
        let label = path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        if let Some(at) = parsed.iter().filter_map(|(_, next)| *next).min() {
            expiry.push(Expiry {
                label: label.clone(),
                kind: ExpiryKind::Crl,
                at,
            });
        }
        // The oldest CRL in the file decides how fresh its revocation data is.
        if let Some(at) = parsed.iter().map(|(this, _)| *this).min() {
            expiry.push(Expiry {
                label,
                kind: ExpiryKind::CrlIssued,
                at,
            });
        }
    }

    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .with_crls(crls.into_iter().flatten())
        // A CRL past its nextUpdate may miss revocations: fail closed (`crl_expired`).
        .enforce_revocation_expiration();
    if cfg.crl_scope == CrlScope::Leaf {
        verifier = verifier.only_check_end_entity_revocation();
    }
    let verifier = verifier.build().map_err(|source| TlsError::Verifier {
        ca: cfg.client_ca.clone(),
        crls: cfg.crls.clone(),
        source,
    })?;
    let anchors = profile::TrustAnchors::new(&client_ca, &cfg.profile);
    for v in anchors.problems() {
        // `ztgate check` fails on these; a running ztgate says so at every (re)load.
        tracing::warn!(path = %cfg.client_ca.display(), reason = v.reason(), "client_ca: {v}; no client chaining to it is accepted");
    }
    let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> =
        Arc::new(ClientVerifier::new(verifier, anchors, cfg.profile));

    let server_uri = {
        let leaf = certs.first().ok_or_else(|| TlsError::Empty {
            kind: "certificate",
            path: cfg.cert.clone(),
        })?;
        let id = crate::identity::PeerIdentity::from_der(leaf).map_err(|e| TlsError::BadServerCert {
            path: cfg.cert.clone(),
            reason: e.to_string(),
        })?;
        expiry.push(Expiry {
            label: "server".into(),
            kind: ExpiryKind::Certificate,
            at: id.not_after,
        });
        id.uris.into_iter().next()
    };

    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::KeyPair {
            cert: cfg.cert.clone(),
            key: cfg.key.clone(),
            source,
        })?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::KeyPair {
            cert: cfg.cert.clone(),
            key: cfg.key.clone(),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    // No session resumption: a resumed session skips client-certificate verification, so it
    // could outlive the revocation (CRL update) of the certificate it was first made with. Every
    // connection pays a full handshake instead (about 0.6 ms of CPU here, docs/performance.md).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(ServerTls {
        config: Arc::new(config),
        server_uri,
        expiry,
        verifier,
        client_ca,
        generation: next_generation(),
    })
}

/// TLS client config for an `https://` upstream: verified against `ca`, optionally presenting
/// ztgate's own certificate. ALPN is left empty: the HTTPS connector sets it from the protocol.
pub fn upstream_client_config(ca: &Path, client_cert: Option<&(PathBuf, PathBuf)>) -> Result<ClientConfig, TlsError> {
    let roots = load_roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::BadCa {
            path: ca.to_path_buf(),
            source,
        })?
        .with_root_certificates(roots);
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|source| TlsError::KeyPair {
                cert: cert.clone(),
                key: key.clone(),
                source,
            })?,
    };
    Ok(config)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// Why a TLS handshake failed, as a bounded metric label.
pub fn handshake_failure_reason(err: &io::Error) -> &'static str {
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return match err.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => {
                "client_closed"
            }
            _ => "io",
        };
    };
    verification_failure_reason(tls)
}

/// Why rustls refused a client chain, as a bounded metric label (the handshake's reasons: also
/// used when a chain is verified again after a reload).
pub fn verification_failure_reason(tls: &rustls::Error) -> &'static str {
    use rustls::{CertificateError, Error as E};
    match tls {
        E::NoCertificatesPresented => "no_client_cert",
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "unknown_ca",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "not_yet_valid",
            CertificateError::Revoked => "revoked",
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => "bad_eku",
            CertificateError::UnknownRevocationStatus => "unknown_revocation_status",
            CertificateError::ExpiredRevocationList | CertificateError::ExpiredRevocationListContext { .. } => {
                "crl_expired"
            }
            // What ClientVerifier re-typed (the two arms above are for a bare WebPKI verifier)
            // or refused by the profile.
            CertificateError::Other(_) => RevocationRefused::from_rustls(tls)
                .map(RevocationRefused::reason)
                .or_else(|| profile::ProfileViolation::from_rustls(tls).map(profile::ProfileViolation::reason))
                .unwrap_or("bad_certificate"),
            _ => "bad_certificate",
        },
        E::NoApplicationProtocol => "no_alpn",
        E::PeerIncompatible(_) => "incompatible",
        _ => "protocol",
    }
}

/// Sets the expiry gauges (`ztgate_certificate_expiry_seconds`, `ztgate_crl_next_update_seconds`,
/// `ztgate_crl_age_seconds`) from absolute times (Unix seconds).
pub fn export_expiry(entries: &[Expiry]) {
    use crate::telemetry::metrics::{CERT_EXPIRY, CRL_AGE, CRL_NEXT_UPDATE};
    use ::metrics::gauge;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    for e in entries {
        let left = (e.at - now) as f64;
        match e.kind {
            ExpiryKind::Certificate => gauge!(CERT_EXPIRY, "cert" => e.label.clone()).set(left),
            ExpiryKind::Crl => gauge!(CRL_NEXT_UPDATE, "crl" => e.label.clone()).set(left),
            ExpiryKind::CrlIssued => gauge!(CRL_AGE, "crl" => e.label.clone()).set(-left),
        }
    }
}
