//! Candidate selection so that evaluation does not grow with the rule count. Each rule is filed
//! under the most selective key among its top-level conditions: the literal prefix of its SPIFFE
//! patterns (the whole ID for an exact pattern, `spiffe://td/ns` for `spiffe://td/ns/*/sa/x`),
//! else its CNs, fingerprints or routes. Rules with none are "generic" and always candidates. A
//! request looks only at the generic rules plus the buckets of its own keys.

use std::collections::HashMap;

use super::Rule;
use super::cond::{RequestFacts, Test};

#[derive(Debug, Default)]
pub(super) struct Index {
    generic: Vec<u32>,
    /// Keyed by a SPIFFE ID prefix that ends at a segment boundary.
    by_spiffe_prefix: HashMap<String, Vec<u32>>,
    by_cn: HashMap<String, Vec<u32>>,
    by_fingerprint: HashMap<String, Vec<u32>>,
    by_route: HashMap<String, Vec<u32>>,
}

impl Index {
    pub(super) fn build(rules: &[Rule]) -> Self {
        let mut ix = Index::default();
        for (i, rule) in rules.iter().enumerate() {
            let i = i as u32;
            let tests = &rule.cond.tests;
            let spiffe = tests.iter().find_map(|t| match t {
                Test::Spiffe(pats) => Some(pats.iter().map(|p| p.literal_prefix.clone()).collect::<Vec<_>>()),
                _ => None,
            });
            let list = |f: fn(&Test) -> Option<&Vec<String>>| tests.iter().find_map(f).cloned();
            let (map, keys) = if let Some(prefixes) = spiffe {
                (&mut ix.by_spiffe_prefix, prefixes)
            } else if let Some(cns) = list(|t| if let Test::Cn(v) = t { Some(v) } else { None }) {
                (&mut ix.by_cn, cns)
            } else if let Some(fps) = list(|t| if let Test::Fingerprint(v) = t { Some(v) } else { None }) {
                (&mut ix.by_fingerprint, fps)
            } else if let Some(routes) = list(|t| if let Test::Route(v) = t { Some(v) } else { None }) {
                (&mut ix.by_route, routes)
            } else {
                ix.generic.push(i);
                continue;
            };
            for k in keys {
                let bucket = map.entry(k).or_default();
                if bucket.last() != Some(&i) {
                    bucket.push(i);
                }
            }
        }
        ix
    }

    /// Rule indexes that may match `f`; a rule not yielded cannot match it. A rule listing two
    /// SPIFFE patterns whose prefixes both lead to the peer's ID may be yielded twice, which is
    /// harmless: evaluation keeps the lowest matching index per kind.
    pub(super) fn candidates<'a>(&'a self, f: &'a RequestFacts<'a>) -> impl Iterator<Item = u32> + 'a {
        let p = f.peer;
        // Skipping empty maps saves hashing the key: most policies use one or two kinds of key.
        let get = |m: &'a HashMap<String, Vec<u32>>, k: Option<&str>| {
            k.filter(|_| !m.is_empty())
                .and_then(|k| m.get(k))
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .copied()
        };
        // With no SPIFFE-keyed rule there is nothing to look up: skip walking the ID.
        let id = match &p.spiffe_id {
            Some(s) if !self.by_spiffe_prefix.is_empty() => s.as_str(),
            _ => "",
        };
        // Every prefix of the ID that ends at a segment boundary after the trust domain, and the
        // whole ID: "spiffe://td", "spiffe://td/ns", ..., "spiffe://td/ns/x/sa/y". A byte scan:
        // '/' is ASCII, so each position is a char boundary, and IDs are too short for memchr's
        // setup to pay off.
        let scheme = "spiffe://".len().min(id.len());
        let prefixes = id.as_bytes()[scheme..]
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'/')
            .map(move |(i, _)| &id[..scheme + i])
            .chain((!id.is_empty()).then_some(id));
        self.generic
            .iter()
            .copied()
            .chain(prefixes.flat_map(move |k| get(&self.by_spiffe_prefix, Some(k))))
            .chain(get(&self.by_cn, p.common_name.as_deref()))
            .chain(get(&self.by_fingerprint, Some(p.fingerprint_sha256.as_str())))
            .chain(get(&self.by_route, f.route))
    }
}
