//! `[trusted_hop]`: front proxies whose forwarded client certificates are accepted.

/// Front proxies (identified by their own client certificate) allowed to forward a client's
/// certificate in `x-forwarded-client-cert`.
#[derive(Debug, Clone, Default)]
pub struct TrustedHopConfig {
    /// Exact SPIFFE IDs of the front proxies.
    pub spiffe_ids: Vec<String>,
    /// SHA-256 fingerprints (lowercase hex) of the front proxies' certificates.
    pub fingerprints: Vec<String>,
    /// How many verified forwarded values are remembered (`cache_entries`, default 10000; 0:
    /// every request verifies its chain). See `tls::ForwardedChains` for what ends an entry.
    pub cache_entries: usize,
}

impl TrustedHopConfig {
    pub fn trusts(&self, id: &crate::identity::PeerIdentity) -> bool {
        id.spiffe_id
            .as_ref()
            .is_some_and(|s| self.spiffe_ids.iter().any(|t| t == s.as_str()))
            || self.fingerprints.contains(&id.fingerprint_sha256)
    }
}
