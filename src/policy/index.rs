//! Candidate selection so that evaluation does not grow with the rule count. Each rule is filed
//! under the most selective exact key among its top-level conditions (SPIFFE ID, CN,
//! fingerprint, route); rules with none are "generic" and always candidates. A request then
//! looks only at the generic rules plus the buckets of its own keys.

use std::collections::HashMap;

use super::Rule;
use super::cond::{RequestFacts, Test};

#[derive(Debug, Default)]
pub(super) struct Index {
    generic: Vec<u32>,
    by_spiffe: HashMap<String, Vec<u32>>,
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
            let exact_spiffe = tests.iter().find_map(|t| match t {
                Test::Spiffe(pats) => pats.iter().map(|p| p.exact.clone()).collect::<Option<Vec<_>>>(),
                _ => None,
            });
            let pick = |f: fn(&Test) -> Option<&Vec<String>>| tests.iter().find_map(f).cloned();
            let (map, keys) = if let Some(ids) = exact_spiffe {
                (&mut ix.by_spiffe, ids)
            } else if let Some(cns) = pick(|t| if let Test::Cn(v) = t { Some(v) } else { None }) {
                (&mut ix.by_cn, cns)
            } else if let Some(fps) = pick(|t| if let Test::Fingerprint(v) = t { Some(v) } else { None }) {
                (&mut ix.by_fingerprint, fps)
            } else if let Some(routes) = pick(|t| if let Test::Route(v) = t { Some(v) } else { None }) {
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

    /// Rule indexes that may match `f`; every rule not yielded cannot match it. A rule may be
    /// yielded only once: it sits in exactly one map (or the generic list) and each map is
    /// looked up with one key.
    pub(super) fn candidates<'a>(&'a self, f: &RequestFacts<'_>) -> impl Iterator<Item = u32> + 'a {
        let p = f.peer;
        let get = |m: &'a HashMap<String, Vec<u32>>, k: Option<&str>| {
            k.and_then(|k| m.get(k))
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .copied()
        };
        self.generic
            .iter()
            .copied()
            .chain(get(&self.by_spiffe, p.spiffe_id.as_ref().map(|s| s.as_str())))
            .chain(get(&self.by_cn, p.common_name.as_deref()))
            .chain(get(&self.by_fingerprint, Some(p.fingerprint_sha256.as_str())))
            .chain(get(&self.by_route, f.route))
    }
}
