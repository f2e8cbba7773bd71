//! Rebuilding the path WebPKI verified. rustls' verifier says only "verified", not through which
//! certificates, and a client may send extra certificates, in any order after its own (RFC 8446
//! §4.4.2), so the profile finds the path again, the way WebPKI searches: from the leaf, each
//! issuer is a `client_ca` certificate (tried first) or a presented one whose subject is the
//! child's issuer name, byte for byte. Where several fit, the child's authorityKeyIdentifier picks
//! by subjectKeyIdentifier, and where keys still differ, the child's signature decides (a
//! signature check is paid only then, e.g. two CAs of the same name without key identifiers).

use super::facts::{self, Facts};
use super::{ProfileConfig, ProfileViolation, TrustAnchors};

/// A path: indices into the presented certificates, leaf first, then the trust anchor's index.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Path {
    pub(super) certs: Vec<usize>,
    pub(super) anchor: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidate {
    Anchor(usize),
    Presented(usize),
}

pub(super) fn build(
    presented: &[Facts<'_>],
    anchors: &TrustAnchors,
    cfg: &ProfileConfig,
) -> Result<Path, ProfileViolation> {
    let mut certs = vec![0];
    let mut used = vec![false; presented.len()];
    if let Some(u) = used.first_mut() {
        *u = true;
    }
    let subject = |c: Candidate| match c {
        Candidate::Anchor(i) => anchors.0[i].subject.as_slice(),
        Candidate::Presented(i) => presented[i].subject,
    };
    let spki = |c: Candidate| match c {
        Candidate::Anchor(i) => anchors.0[i].spki.as_slice(),
        Candidate::Presented(i) => presented[i].spki,
    };
    let key_id = |c: Candidate| match c {
        Candidate::Anchor(i) => anchors.0[i].key_id.as_deref(),
        Candidate::Presented(i) => presented[i].ski_id(),
    };
    // One more step than WebPKI's deepest path, then give up (the depth rule reports it).
    while certs.len() <= usize::from(ProfileConfig::MAX_CHAIN_DEPTH_LIMIT) + 1 {
        let child = certs
            .last()
            .and_then(|&i| presented.get(i))
            .ok_or(ProfileViolation::Path {
                why: "no certificate presented",
            })?;
        let mut candidates: Vec<Candidate> = (0..anchors.0.len())
            .map(Candidate::Anchor)
            .chain((0..presented.len()).filter(|&i| !used[i]).map(Candidate::Presented))
            .filter(|&c| subject(c) == child.issuer)
            .collect();
        if let Some(aki) = child.aki_id() {
            let by_key_id: Vec<Candidate> = candidates.iter().copied().filter(|&c| key_id(c) == Some(aki)).collect();
            // No match: keep them all, and let the key-id-mismatch rule say so.
            if !by_key_id.is_empty() {
                candidates = by_key_id;
            }
        }
        if candidates
            .iter()
            .any(|&c| spki(c) != candidates.first().map_or(&[][..], |&f| spki(f)))
        {
            candidates.retain(|&c| facts::signed_by(child.der, spki(c)));
        }
        match candidates.first() {
            None => {
                return Err(ProfileViolation::Path {
                    why: "no issuer found for a certificate",
                });
            }
            Some(&Candidate::Anchor(anchor)) => return Ok(Path { certs, anchor }),
            Some(&Candidate::Presented(i)) => {
                used[i] = true;
                certs.push(i);
            }
        }
    }
    // Longer than WebPKI verifies: not the path it found, but too long in any case.
    Err(ProfileViolation::ChainDepth {
        intermediates: certs.len() - 1,
        max: cfg.max_chain_depth,
    })
}
