//! Online revocation checks of client certificates, beside the CRL files that rustls checks
//! inside the handshake:
//! - `crl_discovery`: the CRL that the certificate's CRL distribution point names (`http://`),
//!   downloaded the first time a certificate names it, verified against the certificate's
//!   issuer, then refreshed every `crl_fetch_interval` and whenever its nextUpdate passes. A
//!   refresh that revokes the certificate of an open connection closes that connection.
//! - `ocsp`: the certificate's OCSP responder (its AIA extension, or `ocsp_responder`); answers
//!   cached per certificate until their nextUpdate.
//!
//! rustls verifies certificates synchronously and these checks need the network, so they run
//! right after the handshake, before the first request is read: a connection is served only
//! once its certificate is known not to be revoked (or, under `fail-open`, could not be checked).
//! They cover the client's own certificate; intermediates are covered by CRL files.
//!
//! Lookups of one distribution point or one certificate are single-flight (one download however
//! many connections wait), failures are remembered for [`ERROR_TTL`] so that a dead responder is
//! not asked by every connection, and both caches are bounded.

pub mod ocsp;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use http::Uri;
use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use super::fetch::{HttpFetch, MAX_CRL_BYTES, decode};
use crate::telemetry::metrics;
use crate::tls::{RevocationMode, TlsConfig};

/// Distinct distribution points remembered (each is one CA's CRL: a handful in practice).
const MAX_DISTRIBUTION_POINTS: usize = 1024;
/// Certificates whose OCSP answer is remembered.
const MAX_OCSP_ENTRIES: usize = 100_000;
const MAX_OCSP_RESPONSE_BYTES: usize = 64 * 1024;
/// How long a failed lookup is remembered before the next connection tries again.
pub const ERROR_TTL: Duration = Duration::from_secs(5);
/// How long an OCSP answer without a nextUpdate is kept (RFC 6960: newer information is
/// always available, so not long).
const NO_NEXT_UPDATE_TTL: i64 = 300;
/// Upper bound on caching any OCSP answer, whatever its nextUpdate says.
const MAX_OCSP_TTL: i64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The CRL at the certificate's distribution point.
    CrlDp,
    Ocsp,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CrlDp => "crl_dp",
            Self::Ocsp => "ocsp",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CrlDp => "CRL distribution point",
            Self::Ocsp => "OCSP",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("client certificate serial {serial} is revoked ({method})")]
    Revoked { method: Method, serial: String },
    #[error("revocation status of client certificate serial {serial} is unavailable ({method}): {reason}")]
    Unavailable {
        method: Method,
        serial: String,
        reason: Arc<str>,
    },
}

impl RevocationError {
    /// The bounded label used in `ztgate_tls_handshakes_total` and handshake audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Revoked { .. } => "revoked",
            Self::Unavailable { .. } => "revocation_unavailable",
        }
    }
}

/// A CRL from a distribution point, reduced to what a check needs.
struct Crl {
    issuer: Vec<u8>,
    revoked: HashSet<Vec<u8>>,
    this_update: i64,
    next_update: Option<i64>,
}

impl Crl {
    fn current(&self, now: i64) -> bool {
        self.next_update.is_none_or(|n| now <= n)
    }
}

#[derive(Default)]
struct DpSlot {
    crl: ArcSwapOption<Crl>,
    /// The issuing CA's certificate (DER), learnt from the first certificate that named this
    /// point: what the background refresh verifies new CRLs with.
    signer: Mutex<Option<Arc<[u8]>>>,
    failed: Mutex<Option<(Instant, Arc<str>)>>,
    fetching: tokio::sync::Mutex<()>,
}

struct OcspEntry {
    outcome: Result<ocsp::Answer, Arc<str>>,
    /// Unix seconds after which the entry is asked again.
    until: i64,
}

#[derive(Default)]
struct OcspSlot {
    entry: ArcSwapOption<OcspEntry>,
    fetching: tokio::sync::Mutex<()>,
}

pub struct Revocation {
    crl_mode: RevocationMode,
    ocsp_mode: RevocationMode,
    ocsp_responder: Option<Uri>,
    http: HttpFetch,
    points: DashMap<Uri, Arc<DpSlot>>,
    ocsp: DashMap<Box<str>, Arc<OcspSlot>>,
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Revocation {
    /// `None` when neither check is on.
    pub fn new(cfg: &TlsConfig) -> Option<Arc<Self>> {
        if cfg.crl_discovery == RevocationMode::Off && cfg.ocsp == RevocationMode::Off {
            return None;
        }
        Some(Arc::new(Self {
            crl_mode: cfg.crl_discovery,
            ocsp_mode: cfg.ocsp,
            ocsp_responder: cfg.ocsp_responder.clone(),
            http: HttpFetch::new(cfg.revocation_timeout),
            points: DashMap::new(),
            ocsp: DashMap::new(),
        }))
    }

    /// Checks a client chain that passed the handshake. `roots` is the client CA bundle (the
    /// issuer of a certificate whose chain is just itself). `fingerprint` keys the OCSP cache.
    pub async fn check(
        &self,
        chain: &[CertificateDer<'_>],
        roots: &[CertificateDer<'_>],
        fingerprint: &str,
    ) -> Result<(), RevocationError> {
        let Some(leaf_der) = chain.first() else {
            return Ok(());
        };
        let Ok((_, leaf)) = X509Certificate::from_der(leaf_der) else {
            // The handshake verified it, so it parses; if not, fail closed whatever the mode.
            return Err(RevocationError::Unavailable {
                method: Method::CrlDp,
                serial: String::new(),
                reason: "the certificate cannot be parsed".into(),
            });
        };
        let issuers = Issuers { chain, roots };
        if self.crl_mode != RevocationMode::Off {
            let verdict = match distribution_points(&leaf).first() {
                // A certificate that names no distribution point has nothing to check here.
                None => None,
                Some(url) => Some(self.crl_dp(url, &leaf, &issuers).await),
            };
            if let Some(verdict) = verdict {
                self.judge(Method::CrlDp, self.crl_mode, &leaf, verdict)?;
            }
        }
        if self.ocsp_mode != RevocationMode::Off {
            let verdict = self.ocsp(&leaf, &issuers, fingerprint).await;
            self.judge(Method::Ocsp, self.ocsp_mode, &leaf, verdict)?;
        }
        Ok(())
    }

    fn judge(
        &self,
        method: Method,
        mode: RevocationMode,
        leaf: &X509Certificate<'_>,
        verdict: Result<ocsp::CertStatus, Arc<str>>,
    ) -> Result<(), RevocationError> {
        let serial = || leaf.raw_serial_as_string();
        let (result, outcome) = match verdict {
            Ok(ocsp::CertStatus::Good) => ("good", Ok(())),
            Ok(ocsp::CertStatus::Revoked) => (
                "revoked",
                Err(RevocationError::Revoked {
                    method,
                    serial: serial(),
                }),
            ),
            Ok(ocsp::CertStatus::Unknown) => (
                "unknown",
                Err(RevocationError::Unavailable {
                    method,
                    serial: serial(),
                    reason: "the responder does not know this certificate".into(),
                }),
            ),
            Err(reason) => (
                "error",
                Err(RevocationError::Unavailable {
                    method,
                    serial: serial(),
                    reason,
                }),
            ),
        };
        metrics::revocation_check(method.as_str(), result);
        match outcome {
            Err(e @ RevocationError::Unavailable { .. }) if mode == RevocationMode::FailOpen => {
                tracing::warn!(error = %e, "allowing the connection anyway (fail-open)");
                Ok(())
            }
            other => other,
        }
    }

    async fn crl_dp(
        &self,
        url: &Uri,
        leaf: &X509Certificate<'_>,
        issuers: &Issuers<'_>,
    ) -> Result<ocsp::CertStatus, Arc<str>> {
        let slot = match self.points.get(url) {
            Some(s) => s.clone(),
            None if self.points.len() >= MAX_DISTRIBUTION_POINTS => {
                return Err(format!("more than {MAX_DISTRIBUTION_POINTS} distribution points in use").into());
            }
            None => self.points.entry(url.clone()).or_default().clone(),
        };
        let verdict = |crl: &Crl| {
            if crl.issuer != leaf.issuer().as_raw() {
                return Err(Arc::<str>::from(format!(
                    "the CRL at {url} is not issued by {}",
                    leaf.issuer()
                )));
            }
            Ok(if crl.revoked.contains(leaf.raw_serial()) {
                ocsp::CertStatus::Revoked
            } else {
                ocsp::CertStatus::Good
            })
        };
        let now = now_unix();
        if let Some(crl) = slot.crl.load_full().filter(|c| c.current(now)) {
            return verdict(&crl);
        }
        let _one = slot.fetching.lock().await;
        if let Some(crl) = slot.crl.load_full().filter(|c| c.current(now)) {
            return verdict(&crl);
        }
        if let Some((at, reason)) = lock(&slot.failed).clone()
            && at.elapsed() < ERROR_TTL
        {
            return Err(reason);
        }
        let issuer_der = issuers.find(leaf)?;
        match self.fetch_crl(url, &issuer_der).await {
            Ok(crl) => {
                metrics::revocation_fetch(Method::CrlDp.as_str(), "ok");
                let out = verdict(&crl);
                slot.crl.store(Some(Arc::new(crl)));
                *lock(&slot.signer) = Some(issuer_der);
                *lock(&slot.failed) = None;
                super::export_expiry(&self.expiry());
                out
            }
            Err(reason) => {
                metrics::revocation_fetch(Method::CrlDp.as_str(), "error");
                tracing::warn!(%url, %reason, "cannot fetch the CRL of a client certificate's distribution point");
                *lock(&slot.failed) = Some((Instant::now(), reason.clone()));
                Err(reason)
            }
        }
    }

    /// Downloads the CRL at `url` and keeps it only if it is signed by `issuer_der` and current.
    async fn fetch_crl(&self, url: &Uri, issuer_der: &[u8]) -> Result<Crl, Arc<str>> {
        let body = self
            .http
            .get(url, MAX_CRL_BYTES)
            .await
            .map_err(|e| Arc::<str>::from(e.to_string()))?;
        let ders = decode(&body).map_err(|e| Arc::<str>::from(format!("{url}: not a CRL: {e}")))?;
        let (_, issuer) =
            X509Certificate::from_der(issuer_der).map_err(|e| Arc::<str>::from(format!("issuer unreadable: {e}")))?;
        let now = now_unix();
        for der in &ders {
            let Ok((_, crl)) = CertificateRevocationList::from_der(der) else {
                continue;
            };
            if crl.issuer().as_raw() != issuer.subject().as_raw() {
                continue;
            }
            if crl.verify_signature(issuer.public_key()).is_err() {
                return Err(format!("{url}: the CRL is not signed by {}", issuer.subject()).into());
            }
            let parsed = Crl {
                issuer: crl.issuer().as_raw().to_vec(),
                revoked: crl
                    .iter_revoked_certificates()
                    .map(|r| r.raw_serial().to_vec())
                    .collect(),
                this_update: crl.last_update().timestamp(),
                next_update: crl.next_update().map(|t| t.timestamp()),
            };
            if !parsed.current(now) {
                return Err(format!("{url}: the CRL served is past its nextUpdate").into());
            }
            return Ok(parsed);
        }
        Err(format!("{url}: no CRL issued by {}", issuer.subject()).into())
    }

    async fn ocsp(
        &self,
        leaf: &X509Certificate<'_>,
        issuers: &Issuers<'_>,
        fingerprint: &str,
    ) -> Result<ocsp::CertStatus, Arc<str>> {
        let now = now_unix();
        let fresh = |e: &OcspEntry| now < e.until;
        let settle = |e: &OcspEntry| e.outcome.clone().map(|a| a.status);
        let cached = self.ocsp.get(fingerprint).map(|s| s.clone());
        if let Some(e) = cached.as_ref().and_then(|s| s.entry.load_full()).filter(|e| fresh(e)) {
            return settle(&e);
        }
        let slot = match cached {
            Some(slot) => slot,
            None => {
                if self.ocsp.len() >= MAX_OCSP_ENTRIES {
                    self.ocsp
                        .retain(|_, s| s.entry.load().as_ref().is_some_and(|e| now < e.until));
                }
                if self.ocsp.len() >= MAX_OCSP_ENTRIES {
                    // Still full of current answers: ask without remembering.
                    Arc::new(OcspSlot::default())
                } else {
                    self.ocsp.entry(fingerprint.into()).or_default().clone()
                }
            }
        };
        let _one = slot.fetching.lock().await;
        if let Some(e) = slot.entry.load_full().filter(|e| fresh(e)) {
            return settle(&e);
        }
        let outcome = self.ask_ocsp(leaf, issuers).await;
        metrics::revocation_fetch(Method::Ocsp.as_str(), if outcome.is_ok() { "ok" } else { "error" });
        let until = match &outcome {
            Ok(a) => a
                .next_update
                .unwrap_or(now + NO_NEXT_UPDATE_TTL)
                .min(now + MAX_OCSP_TTL),
            Err(reason) => {
                tracing::warn!(%reason, "OCSP check of a client certificate failed");
                now + ERROR_TTL.as_secs() as i64
            }
        };
        let entry = OcspEntry { outcome, until };
        let out = settle(&entry);
        slot.entry.store(Some(Arc::new(entry)));
        out
    }

    async fn ask_ocsp(&self, leaf: &X509Certificate<'_>, issuers: &Issuers<'_>) -> Result<ocsp::Answer, Arc<str>> {
        let url = match &self.ocsp_responder {
            Some(u) => u.clone(),
            None => ocsp_url(leaf).ok_or_else(|| {
                Arc::<str>::from("the certificate names no OCSP responder (AIA) and ocsp_responder is not set")
            })?,
        };
        let issuer_der = issuers.find(leaf)?;
        let (_, issuer) =
            X509Certificate::from_der(&issuer_der).map_err(|e| Arc::<str>::from(format!("issuer unreadable: {e}")))?;
        let id = ocsp::CertId::new(leaf, &issuer);
        let body = self
            .http
            .post(
                &url,
                "application/ocsp-request",
                ocsp::request(&id),
                MAX_OCSP_RESPONSE_BYTES,
            )
            .await
            .map_err(|e| Arc::<str>::from(e.to_string()))?;
        ocsp::check_response(&body, &id, &issuer, now_unix()).map_err(|e| Arc::<str>::from(format!("{url}: {e}")))
    }

    /// Downloads every known distribution point's CRL again. Returns how many changed.
    pub async fn refresh(&self) -> usize {
        let points: Vec<(Uri, Arc<DpSlot>)> = self
            .points
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        let mut changed = 0;
        for (url, slot) in points {
            let Some(signer) = lock(&slot.signer).clone() else {
                continue;
            };
            let _one = slot.fetching.lock().await;
            match self.fetch_crl(&url, &signer).await {
                Ok(crl) => {
                    metrics::revocation_fetch(Method::CrlDp.as_str(), "ok");
                    let newer = slot
                        .crl
                        .load()
                        .as_ref()
                        .is_none_or(|old| old.this_update < crl.this_update || old.revoked != crl.revoked);
                    if newer {
                        changed += 1;
                        slot.crl.store(Some(Arc::new(crl)));
                        super::export_expiry(&self.expiry());
                    }
                    *lock(&slot.failed) = None;
                }
                Err(reason) => {
                    metrics::revocation_fetch(Method::CrlDp.as_str(), "error");
                    tracing::warn!(%url, %reason, "CRL refresh failed; keeping the current one until its nextUpdate");
                }
            }
        }
        changed
    }

    /// Whether a cached answer (never the network) says this chain's certificate is revoked:
    /// what decides which open connections a refresh closes.
    pub fn known_revoked(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some(Ok((_, leaf))) = chain.first().map(|d| X509Certificate::from_der(d)) else {
            return false;
        };
        distribution_points(&leaf).iter().any(|url| {
            self.points
                .get(url)
                .and_then(|s| s.crl.load_full())
                .is_some_and(|crl| crl.issuer == leaf.issuer().as_raw() && crl.revoked.contains(leaf.raw_serial()))
        })
    }

    /// The discovered CRLs' ages and nextUpdates, labelled by URL (for the CRL gauges).
    pub fn expiry(&self) -> Vec<super::Expiry> {
        let mut out = Vec::new();
        for e in &self.points {
            if let Some(crl) = e.value().crl.load_full() {
                let label = e.key().to_string();
                if let Some(at) = crl.next_update {
                    out.push(super::Expiry {
                        label: label.clone(),
                        kind: super::ExpiryKind::Crl,
                        at,
                    });
                }
                out.push(super::Expiry {
                    label,
                    kind: super::ExpiryKind::CrlIssued,
                    at: crl.this_update,
                });
            }
        }
        out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The `http://` URLs of a certificate's CRL distribution points (LDAP and others are skipped).
pub fn distribution_points(cert: &X509Certificate<'_>) -> Vec<Uri> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for p in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                    out.extend(names.iter().filter_map(http_uri));
                }
            }
        }
    }
    out
}

/// The first `http://` OCSP responder in a certificate's AIA extension.
pub fn ocsp_url(cert: &X509Certificate<'_>) -> Option<Uri> {
    cert.extensions().iter().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityInfoAccess(aia) => aia
            .iter()
            .filter(|d| d.access_method == x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_OCSP)
            .find_map(|d| http_uri(&d.access_location)),
        _ => None,
    })
}

fn http_uri(name: &GeneralName<'_>) -> Option<Uri> {
    match name {
        GeneralName::URI(u) => u
            .parse::<Uri>()
            .ok()
            .filter(|u| u.scheme_str() == Some("http") && u.authority().is_some()),
        _ => None,
    }
}

/// Where a certificate's issuer may be: the rest of the chain the client sent, then the client
/// CA bundle.
struct Issuers<'a> {
    chain: &'a [CertificateDer<'a>],
    roots: &'a [CertificateDer<'a>],
}

impl Issuers<'_> {
    /// The certificate that issued `leaf` (DER): same subject as the leaf's issuer and, when
    /// several share that name (a CA being rotated), the one whose key verifies the leaf. Only
    /// on cache misses, so the parsing here is not per connection.
    fn find(&self, leaf: &X509Certificate<'_>) -> Result<Arc<[u8]>, Arc<str>> {
        let named: Vec<(&CertificateDer<'_>, X509Certificate<'_>)> = self
            .chain
            .iter()
            .skip(1)
            .chain(self.roots)
            .filter_map(|der| X509Certificate::from_der(der).ok().map(|(_, c)| (der, c)))
            .filter(|(_, c)| c.subject().as_raw() == leaf.issuer().as_raw())
            .collect();
        let found = match named.as_slice() {
            [(der, _)] => Some(*der),
            _ => named
                .iter()
                .find(|(_, c)| leaf.verify_signature(Some(c.public_key())).is_ok())
                .map(|(der, _)| *der),
        };
        found.map(|der| Arc::from(der.as_ref())).ok_or_else(|| {
            format!(
                "the issuer `{}` is not in the chain or the client CA bundle",
                leaf.issuer()
            )
            .into()
        })
    }
}

#[cfg(test)]
mod tests;
