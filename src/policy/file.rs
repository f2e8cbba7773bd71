//! The policy file's raw shape. Each `[[rule]]` and `[group.*]` is deserialized on its own, so a
//! mistake in one rule does not hide the mistakes in the next: `ztgate check` lists them all.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diag::Collector;

/// Keys of a rule that are not conditions.
const META_KEYS: [&str; 6] = ["id", "effect", "description", "mode", "posture", "rate_limit"];

/// Every key a rule may have, for "did you mean" hints.
pub(super) const RULE_KEYS: &[&str] = &[
    "id",
    "effect",
    "description",
    "mode",
    "posture",
    "rate_limit",
    "spiffe_id",
    "trust_domain",
    "cn",
    "dns",
    "email",
    "org",
    "ou",
    "issuer",
    "fingerprint",
    "group",
    "route",
    "host",
    "methods",
    "paths",
    "headers",
    "headers_present",
    "source_cidr",
    "user_sub",
    "user_email",
    "user_groups",
    "user_mfa",
    "all",
    "any",
    "not",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMeta {
    pub(super) id: Spanned<String>,
    pub(super) effect: Spanned<String>,
    #[allow(dead_code)] // for humans reading the file; accepted so the key is not a typo
    pub(super) description: Option<String>,
    pub(super) mode: Option<Spanned<String>>,
    pub(super) posture: Option<Spanned<toml::Value>>,
    pub(super) rate_limit: Option<Spanned<toml::Value>>,
}

pub(super) type List = Option<Vec<Spanned<String>>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCond {
    pub(super) spiffe_id: List,
    pub(super) trust_domain: List,
    pub(super) cn: List,
    pub(super) dns: List,
    pub(super) email: List,
    pub(super) org: List,
    pub(super) ou: List,
    pub(super) issuer: List,
    pub(super) fingerprint: List,
    pub(super) group: List,
    pub(super) route: List,
    pub(super) host: List,
    pub(super) methods: List,
    pub(super) paths: List,
    pub(super) headers: Option<Spanned<BTreeMap<String, String>>>,
    pub(super) headers_present: List,
    pub(super) source_cidr: List,
    pub(super) user_sub: List,
    pub(super) user_email: List,
    pub(super) user_groups: List,
    pub(super) user_mfa: Option<bool>,
    pub(super) all: Option<Vec<Spanned<RawCond>>>,
    pub(super) any: Option<Vec<Spanned<RawCond>>>,
    pub(super) not: Option<Box<Spanned<RawCond>>>,
}

pub(super) struct RawRule {
    pub(super) meta: RawMeta,
    pub(super) cond: RawCond,
    pub(super) span: Range<usize>,
}

pub(super) struct RawGroup {
    pub(super) name: Spanned<String>,
    pub(super) cond: RawCond,
}

#[derive(Default)]
pub(super) struct RawPolicy {
    pub(super) rules: Vec<RawRule>,
    pub(super) groups: Vec<RawGroup>,
}

/// Parses the document; problems go to `c`. Rules and groups that parse are returned even when
/// others do not, so later checks can still report on them.
pub(super) fn parse(text: &str, c: &mut Collector<'_>) -> RawPolicy {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in &errors {
            c.push_toml(e, &[]);
        }
        return RawPolicy::default();
    }
    let mut out = RawPolicy::default();
    for (key, value) in doc.into_inner() {
        match key.get_ref().as_ref() {
            "rule" => match value.into_inner() {
                DeValue::Array(items) => {
                    for item in items {
                        if let Some(rule) = parse_rule(item, c) {
                            out.rules.push(rule);
                        }
                    }
                }
                _ => c.push(
                    key.span(),
                    "`rule` must be an array of tables: write each rule as [[rule]]",
                ),
            },
            "group" => match value.into_inner() {
                DeValue::Table(groups) => {
                    for (name, body) in groups {
                        let name = Spanned::new(name.span(), name.into_inner().into_owned());
                        if let Some(cond) = deserialize::<RawCond>(body, c, RULE_KEYS) {
                            out.groups.push(RawGroup { name, cond });
                        }
                    }
                }
                _ => c.push(key.span(), "`group` must be a table of named groups: [group.NAME]"),
            },
            other => c.push(
                key.span(),
                format!("unknown top-level key `{other}` (a policy has [[rule]] entries and [group.NAME] tables)"),
            ),
        }
    }
    out
}

fn parse_rule(item: Spanned<DeValue<'_>>, c: &mut Collector<'_>) -> Option<RawRule> {
    let span = item.span();
    let DeValue::Table(table) = item.into_inner() else {
        c.push(span, "each rule must be a table ([[rule]])");
        return None;
    };
    // Split the rule's keys into its identity (id, effect, ...) and its conditions, and
    // deserialize each half strictly: an unknown key in either is an error.
    let (mut meta, mut cond) = (DeTable::new(), DeTable::new());
    for (k, v) in table {
        if META_KEYS.contains(&k.get_ref().as_ref()) {
            meta.insert(k, v);
        } else {
            cond.insert(k, v);
        }
    }
    let meta = deserialize::<RawMeta>(Spanned::new(span.clone(), DeValue::Table(meta)), c, RULE_KEYS);
    let cond = deserialize::<RawCond>(Spanned::new(span.clone(), DeValue::Table(cond)), c, RULE_KEYS);
    Some(RawRule {
        meta: meta?,
        cond: cond?,
        span,
    })
}

fn deserialize<T: DeserializeOwned>(v: Spanned<DeValue<'_>>, c: &mut Collector<'_>, keys: &[&str]) -> Option<T> {
    match T::deserialize(ValueDeserializer::from(v)) {
        Ok(t) => Some(t),
        Err(e) => {
            c.push_toml(&e, keys);
            None
        }
    }
}
