use std::path::Path;
use std::time::Duration;

use super::*;
use crate::pki::{CertAuthority, Issued, LeafSpec};

/// The listener's TLS state for `ca_pem` as the client CA, with `crl_pem` as the one CRL.
fn server_tls(dir: &Path, ca_pem: &str, crl_pem: Option<&str>) -> ServerTls {
    let server_ca = CertAuthority::new("server CA").unwrap();
    let server = server_ca.issue(&LeafSpec::server("ztgate")).unwrap();
    std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
    std::fs::write(dir.join("server-key.pem"), &server.key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    let crls = match crl_pem {
        Some(pem) => {
            std::fs::write(dir.join("ca.crl.pem"), pem).unwrap();
            vec![dir.join("ca.crl.pem")]
        }
        None => vec![],
    };
    let cfg = crate::tls::TlsConfig {
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        client_ca: dir.join("ca.pem"),
        crls,
        crl_sources: vec![],
        crl_fetch_interval: Duration::from_secs(3600),
        crl_scope: crate::tls::CrlScope::Leaf,
        crl_discovery: crate::tls::RevocationMode::Off,
        ocsp: crate::tls::RevocationMode::Off,
        ocsp_responder: None,
        revocation_timeout: Duration::from_secs(1),
        reload_interval: Duration::from_secs(1),
        profile: crate::tls::profile::ProfileConfig::default(),
    };
    crate::tls::server_tls(&cfg).unwrap()
}

fn xfcc(leaf: &Issued) -> Vec<u8> {
    let enc: String = leaf
        .cert_pem
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("Cert=\"{enc}\"").into_bytes()
}

fn id(i: u8) -> PeerIdentity {
    let ca = CertAuthority::new("ids").unwrap();
    let leaf = ca.issue(&LeafSpec::client(&format!("c{i}"), None)).unwrap();
    PeerIdentity::from_der(&leaf.der).unwrap()
}

#[test]
fn a_verified_value_is_served_from_the_cache_until_the_trust_generation_changes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::new("client CA").unwrap();
    let alice = ca.issue(&LeafSpec::client("alice", None)).unwrap();
    let tls = server_tls(dir.path(), &ca.cert_pem(), None);
    let chains = ForwardedChains::new(8);
    let first = chains.verify(&xfcc(&alice), &tls).unwrap();
    assert_eq!(first.common_name.as_deref(), Some("alice"));
    assert_eq!(chains.len(), 1);
    let cache = chains.cache.as_ref().unwrap();
    assert!(
        cache
            .get(&Sha256::digest(xfcc(&alice)).into(), tls.generation, unix_now())
            .is_some()
    );
    assert_eq!(
        chains.verify(&xfcc(&alice), &tls).unwrap(),
        first,
        "a hit is the same identity"
    );

    // The CA is replaced (a reload): the new generation empties the cache, and the chain is
    // judged by the new trust: refused.
    let other = CertAuthority::new("other CA").unwrap();
    let reloaded = server_tls(dir.path(), &other.cert_pem(), None);
    assert!(reloaded.generation > tls.generation);
    let err = chains.verify(&xfcc(&alice), &reloaded).unwrap_err();
    assert_eq!(err.reason(), "forwarded-cert-untrusted");
    assert_eq!(chains.len(), 0, "refusals are not cached; the old entries are gone");
    // A verification that finished under the old trust is not stored under the new one.
    chains.verify(&xfcc(&alice), &tls).unwrap();
    assert_eq!(chains.len(), 0);
}

#[test]
fn a_cached_chain_stops_being_accepted_once_a_reloaded_crl_revokes_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::new("client CA").unwrap();
    let alice = ca.issue(&LeafSpec::client("alice", None)).unwrap();
    let tls = server_tls(dir.path(), &ca.cert_pem(), Some(&ca.crl_pem(&[]).unwrap()));
    let chains = ForwardedChains::new(8);
    chains.verify(&xfcc(&alice), &tls).unwrap();
    chains.verify(&xfcc(&alice), &tls).unwrap();
    let revoking = server_tls(dir.path(), &ca.cert_pem(), Some(&ca.crl_pem(&[&alice.serial]).unwrap()));
    let err = chains.verify(&xfcc(&alice), &revoking).unwrap_err();
    assert!(
        matches!(
            &err,
            ForwardedError::Untrusted(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked))
        ),
        "{err:?}"
    );
}

#[test]
fn entries_end_at_the_earliest_certificate_notafter_or_crl_nextupdate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::new("client CA").unwrap();
    let mut spec = LeafSpec::client("short", None);
    spec.valid_for_secs = Some(3600);
    let short = ca.issue(&spec).unwrap();
    let long = ca.issue(&LeafSpec::client("long", None)).unwrap();
    // A CRL due in 600 s: past it the verifier refuses (crl_expired), so no entry lives longer.
    let tls = server_tls(dir.path(), &ca.cert_pem(), Some(&ca.crl_pem_until(&[], 600).unwrap()));
    let chains = ForwardedChains::new(8);
    let now = unix_now();
    let until = |v: &[u8]| {
        let key: Key = Sha256::digest(v).into();
        chains.cache.as_ref().unwrap().lock().map.get(&key).unwrap().until
    };
    let short_id = chains.verify(&xfcc(&short), &tls).unwrap();
    chains.verify(&xfcc(&long), &tls).unwrap();
    assert!(
        (now + 590..=now + 610).contains(&until(&xfcc(&long))),
        "the CRL's nextUpdate bounds it"
    );
    assert!(until(&xfcc(&short)) <= short_id.not_after);

    // Without a CRL, the certificate's own notAfter: and once past it, the entry is not served.
    let tls = server_tls(dir.path(), &ca.cert_pem(), None);
    chains.verify(&xfcc(&short), &tls).unwrap();
    assert_eq!(until(&xfcc(&short)), short_id.not_after);
    let cache = chains.cache.as_ref().unwrap();
    let key: Key = Sha256::digest(xfcc(&short)).into();
    assert!(cache.get(&key, tls.generation, short_id.not_after - 1).is_some());
    assert!(cache.get(&key, tls.generation, short_id.not_after).is_none());
}

#[test]
fn malformed_values_are_refused_and_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::new("client CA").unwrap();
    let tls = server_tls(dir.path(), &ca.cert_pem(), None);
    let chains = ForwardedChains::new(8);
    for (bad, reason) in [
        (&b"Cert=\"%zz\""[..], "forwarded-cert-invalid"),
        (b"Hash=abc", "forwarded-cert-missing"),
        (b"Cert=a,Cert=b", "forwarded-cert-invalid"),
        (b"\xff", "forwarded-cert-invalid"),
    ] {
        assert_eq!(chains.verify(bad, &tls).unwrap_err().reason(), reason);
    }
    assert_eq!(chains.len(), 0);
}

#[test]
fn a_disabled_cache_verifies_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertAuthority::new("client CA").unwrap();
    let alice = ca.issue(&LeafSpec::client("alice", None)).unwrap();
    let tls = server_tls(dir.path(), &ca.cert_pem(), None);
    let chains = ForwardedChains::new(0);
    assert!(chains.cache.is_none());
    assert!(chains.verify(&xfcc(&alice), &tls).is_ok());
    assert!(chains.verify(&xfcc(&alice), &tls).is_ok());
}

#[test]
fn a_full_cache_evicts_an_entry_not_used_since_the_hand_passed_it() {
    let cache = Cache::new(2);
    let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
    cache.insert(a, 1, id(1), i64::MAX);
    cache.insert(b, 1, id(2), i64::MAX);
    assert!(cache.get(&a, 1, 0).is_some()); // a is used: it gets a second round
    cache.insert(c, 1, id(3), i64::MAX);
    assert!(cache.get(&a, 1, 0).is_some());
    assert!(cache.get(&b, 1, 0).is_none(), "b was the oldest unused");
    assert!(cache.get(&c, 1, 0).is_some());
    let s = cache.lock();
    assert_eq!((s.map.len(), s.order.len()), (2, 2));
}

#[test]
fn percent_decoding_is_strict() {
    assert_eq!(percent_decode("a%20b%0A").unwrap(), b"a b\n");
    assert!(percent_decode("a%2").is_err());
    assert!(percent_decode("a%zz").is_err());
}
