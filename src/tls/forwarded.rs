//! Forwarded client chains (`[trusted_hop]`): one `x-forwarded-client-cert` element (Envoy's
//! `Cert`/`Chain` fields, URL-encoded PEM) parsed, verified against the live client CA and CRLs
//! exactly as a handshake is, and turned into the client's identity; verified values are
//! remembered so that a hop's keep-alive traffic does not pay a chain verification per request.
//!
//! The cache, and why it cannot outlive trust:
//! - Keyed by the SHA-256 of the header value (32 bytes, whatever the chain's size): a value
//!   maps to the identity only if it is byte for byte what was verified; a different value
//!   naming the same certificate is verified on its own.
//! - Each entry carries the trust generation ([`ServerTls::generation`]) it was verified under.
//!   Every CA/CRL reload installs a new generation, and the first lookup that sees it empties the
//!   cache: a removed CA or a CRL that now revokes the certificate takes effect at the next
//!   request, as it does for new handshakes. A verification that finished under an older
//!   generation than the cache already holds is not stored.
//! - Each entry expires at the earliest of: the notAfter of every certificate in the forwarded
//!   value, the nextUpdate of every configured CRL (past it the verifier fails closed,
//!   `crl_expired`) and the notAfter of every client CA still valid at the time (the profile
//!   refuses chains to an expired anchor). So a cached answer is never one the verifier would
//!   not give now, short of a reload, which empties the cache anyway.
//! - Refusals are not cached: a refused value costs one verification per request, as before.
//!   Caching them would let a hop fill the cache with garbage that evicts good entries, and a
//!   refusal can become wrong without a reload (a certificate not yet valid becomes valid).
//! - Bounded: at most `max_entries`; when full, CLOCK eviction (insertion order, an entry used
//!   since it was last looked at gets a second round), an approximation of LRU without a list to
//!   reorder on every hit.
//!
//! No cache crate: the generation and deadline rules are the point of this code, and a bounded
//! map with CLOCK is ~60 lines on `std` (`quick_cache`/`moka` would bring their own eviction
//! policy and an extra dependency for the same map).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use metrics::Counter;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};

use super::{ExpiryKind, ServerTls};
use crate::identity::{PeerIdentity, parse_xfcc};
use crate::telemetry::metrics as names;

/// Why a forwarded client certificate was refused. The request is denied (403) with
/// [`ForwardedError::reason`]; it is never downgraded to the hop's own identity.
#[derive(Debug, thiserror::Error)]
pub enum ForwardedError {
    /// Not one well-formed XFCC element with PEM that decodes.
    #[error("x-forwarded-client-cert is malformed")]
    Invalid,
    /// The element has no `Cert` field.
    #[error("x-forwarded-client-cert has no Cert field")]
    Missing,
    /// The chain does not verify against the client CA, CRLs and profile now.
    #[error("forwarded client certificate does not verify: {0}")]
    Untrusted(#[source] rustls::Error),
}

impl ForwardedError {
    /// The denial reason (audit `reason`, docs/audit.md).
    pub fn reason(&self) -> &'static str {
        match self {
            ForwardedError::Invalid => "forwarded-cert-invalid",
            ForwardedError::Missing => "forwarded-cert-missing",
            ForwardedError::Untrusted(_) => "forwarded-cert-untrusted",
        }
    }
}

/// Verifies forwarded chains, with the cache of verified values described in the module docs.
pub struct ForwardedChains {
    /// `None` when `[trusted_hop] cache_entries = 0`: every request verifies.
    cache: Option<Cache>,
}

impl ForwardedChains {
    /// A verifier remembering up to `max_entries` verified values (0: none).
    pub fn new(max_entries: usize) -> Self {
        Self {
            cache: (max_entries > 0).then(|| Cache::new(max_entries)),
        }
    }

    /// The identity of the client whose certificate `value` (one XFCC element) forwards, if its
    /// chain verifies under `tls` now.
    ///
    /// # Errors
    /// [`ForwardedError`]: malformed, no `Cert`, or the chain does not verify.
    pub fn verify(&self, value: &[u8], tls: &ServerTls) -> Result<PeerIdentity, ForwardedError> {
        let Some(cache) = &self.cache else {
            return verify_uncached(value, tls).map(|(id, _)| id);
        };
        let key: [u8; 32] = Sha256::digest(value).into();
        let now = unix_now();
        if let Some(id) = cache.get(&key, tls.generation, now) {
            cache.hit.increment(1);
            return Ok(id);
        }
        cache.miss.increment(1);
        let (identity, chain_until) = verify_uncached(value, tls)?;
        let until = trust_until(tls, now).map_or(chain_until, |t| t.min(chain_until));
        cache.insert(key, tls.generation, identity.clone(), until);
        Ok(identity)
    }

    /// Entries held now (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.lock().map.len())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The earliest CRL nextUpdate, and notAfter of a client CA still valid at `now` (Unix seconds).
fn trust_until(tls: &ServerTls, now: i64) -> Option<i64> {
    tls.expiry
        .iter()
        .filter(|e| match e.kind {
            ExpiryKind::Crl => true,
            ExpiryKind::Certificate => e.label.starts_with("client_ca:") && e.at > now,
            ExpiryKind::CrlIssued => false,
        })
        .map(|e| e.at)
        .min()
}

/// Parses one XFCC element, decodes `Cert` (and `Chain`), verifies them against the client CA and
/// CRLs now. Returns the client's identity and the earliest notAfter among the certificates
/// forwarded (Unix seconds).
fn verify_uncached(value: &[u8], tls: &ServerTls) -> Result<(PeerIdentity, i64), ForwardedError> {
    let text = std::str::from_utf8(value).map_err(|_| ForwardedError::Invalid)?;
    let elements = parse_xfcc(text).map_err(|_| ForwardedError::Invalid)?;
    // One element: the hop's client. More would mean a chain of proxies this hop did not verify.
    let [element] = elements.as_slice() else {
        return Err(ForwardedError::Invalid);
    };
    let field = |key: &str| {
        element
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    };
    let cert_pem = percent_decode(field("Cert").ok_or(ForwardedError::Missing)?)?;
    let leaf = CertificateDer::from_pem_slice(&cert_pem).map_err(|_| ForwardedError::Invalid)?;
    let mut intermediates = Vec::new();
    if let Some(chain) = field("Chain") {
        for c in CertificateDer::pem_slice_iter(&percent_decode(chain)?) {
            let c = c.map_err(|_| ForwardedError::Invalid)?;
            // The chain field repeats the leaf (Envoy): only the others are intermediates.
            if c != leaf {
                intermediates.push(c);
            }
        }
    }
    tls.verifier
        .verify_client_cert(&leaf, &intermediates, UnixTime::now())
        .map_err(|e| {
            tracing::info!(error = %e, "forwarded client certificate does not verify");
            ForwardedError::Untrusted(e)
        })?;
    let identity = PeerIdentity::from_der(&leaf).map_err(|_| ForwardedError::Invalid)?;
    let mut until = identity.not_after;
    for c in &intermediates {
        use x509_parser::prelude::FromDer;
        // Verified above, so it parses; one that did not would only end the entry at once.
        let at = x509_parser::certificate::X509Certificate::from_der(c)
            .map_or(i64::MIN, |(_, cert)| cert.validity().not_after.timestamp());
        until = until.min(at);
    }
    Ok((identity, until))
}

fn percent_decode(s: &str) -> Result<Vec<u8>, ForwardedError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(ForwardedError::Invalid)?;
            out.push(hex);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(out)
}

type Key = [u8; 32];

struct Entry {
    identity: PeerIdentity,
    /// Usable while now (Unix seconds) is below this.
    until: i64,
    /// Looked up since the eviction hand last passed (CLOCK's reference bit).
    used: bool,
}

/// The map and its eviction order. `order` holds each key of `map` exactly once.
struct State {
    generation: u64,
    map: HashMap<Key, Entry>,
    order: VecDeque<Key>,
}

struct Cache {
    max: usize,
    state: Mutex<State>,
    hit: Counter,
    miss: Counter,
}

impl Cache {
    fn new(max: usize) -> Self {
        Self {
            max,
            state: Mutex::new(State {
                generation: 0,
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
            hit: metrics::counter!(names::TRUSTED_HOP_CACHE_TOTAL, "result" => "hit"),
            miss: metrics::counter!(names::TRUSTED_HOP_CACHE_TOTAL, "result" => "miss"),
        }
    }

    /// The state; a panic while it was held left it consistent (every mutation below is
    /// complete before anything that could panic), so a poisoned lock is used as is.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, key: &Key, generation: u64, now: i64) -> Option<PeerIdentity> {
        let mut s = self.lock();
        if s.generation != generation {
            if generation > s.generation {
                s.enter(generation);
            }
            return None;
        }
        let e = s.map.get_mut(key)?;
        if now >= e.until {
            return None; // left for eviction or the next insert of this key to replace
        }
        e.used = true;
        Some(e.identity.clone())
    }

    fn insert(&self, key: Key, generation: u64, identity: PeerIdentity, until: i64) {
        let mut s = self.lock();
        if generation < s.generation {
            return; // verified under trust a reload has replaced since
        }
        if generation > s.generation {
            s.enter(generation);
        }
        let entry = Entry {
            identity,
            until,
            used: false,
        };
        if let Some(old) = s.map.get_mut(&key) {
            *old = entry;
            return;
        }
        while s.map.len() >= self.max {
            if !s.evict_one() {
                s.map.clear(); // `order` lost track of `map` (cannot happen): start over
            }
        }
        s.map.insert(key, entry);
        s.order.push_back(key);
    }
}

impl State {
    /// A new trust generation: nothing verified under the old one is reused.
    fn enter(&mut self, generation: u64) {
        self.generation = generation;
        self.map.clear();
        self.order.clear();
    }

    /// CLOCK: the oldest entry not used since the hand last passed it goes. Ends within two
    /// rounds, since the first clears every `used` bit it passes. `false` when there was none.
    fn evict_one(&mut self) -> bool {
        while let Some(key) = self.order.pop_front() {
            match self.map.get_mut(&key) {
                Some(e) if e.used => {
                    e.used = false;
                    self.order.push_back(key);
                }
                _ => {
                    self.map.remove(&key);
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests;
