//! Access policy: a TOML file of rules, compiled once per load, evaluated per request.
//!
//! Semantics: default deny. A request is allowed only if some `allow` rule matches and no `deny`
//! rule matches (deny overrides). Conditions inside a rule are AND-ed; a list means any-of.
//!
//! This is the first cut (principal by SPIFFE ID or CN, method, path, `not`); the policy issue
//! extends the condition set, adds indexing, `explain` and hot reload.

mod glob;
pub mod path;

use std::path::Path;

use http::Method;
use serde::Deserialize;
use toml::Spanned;

use crate::diag::{Collector, Diagnostics};
use crate::identity::PeerIdentity;
pub use glob::SegGlob;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    effect: Spanned<String>,
    #[allow(dead_code)] // documentation for humans; kept so that the key is accepted
    description: Option<String>,
    spiffe_id: Option<Vec<Spanned<String>>>,
    cn: Option<Vec<String>>,
    methods: Option<Vec<Spanned<String>>>,
    paths: Option<Vec<Spanned<String>>>,
    not: Option<Box<RawCond>>,
}

/// The conditions of a rule, without its id and effect (used for `not`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCond {
    spiffe_id: Option<Vec<Spanned<String>>>,
    cn: Option<Vec<String>>,
    methods: Option<Vec<Spanned<String>>>,
    paths: Option<Vec<Spanned<String>>>,
    not: Option<Box<RawCond>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug)]
struct Rule {
    id: String,
    effect: Effect,
    cond: Cond,
}

#[derive(Debug, Default)]
struct Cond {
    spiffe: Option<Vec<SpiffePattern>>,
    cn: Option<Vec<String>>,
    methods: Option<Vec<Method>>,
    paths: Option<Vec<SegGlob>>,
    not: Option<Box<Cond>>,
}

#[derive(Debug)]
struct SpiffePattern {
    trust_domain: String,
    path: SegGlob,
}

/// What a rule can look at.
pub struct RequestFacts<'a> {
    pub peer: &'a PeerIdentity,
    pub method: &'a Method,
    /// Normalised path (see [`path::normalize`]).
    pub path: &'a str,
}

/// The outcome of evaluating a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    pub allowed: bool,
    /// The rule that decided: the matching deny, else the first matching allow.
    pub rule: Option<&'p str>,
    /// Machine-readable reason code (listed in docs/policy.md).
    pub reason: &'static str,
}

/// A compiled policy.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(path, &text)
    }

    pub fn from_toml(path: &Path, text: &str) -> Result<Self, PolicyError> {
        let mut c = Collector::new(text);
        let raw: RawPolicy = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                c.push_toml(&e);
                return Err(invalid(c, path));
            }
        };
        let mut rules = Vec::with_capacity(raw.rules.len());
        let mut ids = std::collections::HashMap::new();
        for r in raw.rules {
            if let Some(first_line) = ids.insert(r.id.get_ref().clone(), r.id.span().start) {
                let (line, _) = crate::diag::line_col(text, first_line);
                c.push(
                    r.id.span(),
                    format!("duplicate rule id `{}` (first defined on line {line})", r.id.get_ref()),
                );
            }
            let effect = match r.effect.get_ref().as_str() {
                "allow" => Effect::Allow,
                "deny" => Effect::Deny,
                other => {
                    c.push(
                        r.effect.span(),
                        format!("unknown effect `{other}` (expected \"allow\" or \"deny\")"),
                    );
                    Effect::Deny
                }
            };
            let cond = compile_cond(
                &mut c,
                RawCond {
                    spiffe_id: r.spiffe_id,
                    cn: r.cn,
                    methods: r.methods,
                    paths: r.paths,
                    not: r.not,
                },
            );
            rules.push(Rule {
                id: r.id.into_inner(),
                effect,
                cond,
            });
        }
        if !rules.iter().any(|r| r.effect == Effect::Allow) && c.is_empty() {
            c.push(
                0..0,
                "policy has no allow rule: every request would be denied (add a [[rule]] with effect = \"allow\")",
            );
        }
        if !c.is_empty() {
            return Err(invalid(c, path));
        }
        Ok(Self { rules })
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn evaluate(&self, req: &RequestFacts<'_>) -> Decision<'_> {
        let mut allow: Option<&str> = None;
        for rule in &self.rules {
            if !rule.cond.matches(req) {
                continue;
            }
            match rule.effect {
                Effect::Deny => {
                    return Decision {
                        allowed: false,
                        rule: Some(&rule.id),
                        reason: "denied-by-rule",
                    };
                }
                Effect::Allow => {
                    allow.get_or_insert(&rule.id);
                }
            }
        }
        match allow {
            Some(id) => Decision {
                allowed: true,
                rule: Some(id),
                reason: "allowed",
            },
            None => Decision {
                allowed: false,
                rule: None,
                reason: "no-matching-allow",
            },
        }
    }
}

fn invalid(c: Collector<'_>, path: &Path) -> PolicyError {
    match c.finish(path) {
        Err(d) => PolicyError::Invalid(d),
        Ok(()) => PolicyError::Invalid(Diagnostics {
            path: path.to_path_buf(),
            problems: Vec::new(),
        }),
    }
}

fn compile_cond(c: &mut Collector<'_>, raw: RawCond) -> Cond {
    let spiffe = raw.spiffe_id.map(|list| {
        list.iter()
            .filter_map(|p| match compile_spiffe(p.get_ref()) {
                Ok(p) => Some(p),
                Err(e) => {
                    c.push(p.span(), e);
                    None
                }
            })
            .collect()
    });
    let methods = raw.methods.map(|list| {
        list.iter()
            .filter_map(
                |m| match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
                    Ok(m) => Some(m),
                    Err(_) => {
                        c.push(m.span(), format!("invalid HTTP method `{}`", m.get_ref()));
                        None
                    }
                },
            )
            .collect()
    });
    let paths = raw.paths.map(|list| {
        list.iter()
            .filter_map(|p| match SegGlob::compile(p.get_ref()) {
                Ok(g) => Some(g),
                Err(e) => {
                    c.push(p.span(), e);
                    None
                }
            })
            .collect()
    });
    Cond {
        spiffe,
        cn: raw.cn,
        methods,
        paths,
        not: raw.not.map(|n| Box::new(compile_cond(c, *n))),
    }
}

fn compile_spiffe(pattern: &str) -> Result<SpiffePattern, String> {
    let rest = pattern
        .strip_prefix("spiffe://")
        .ok_or_else(|| format!("spiffe_id pattern `{pattern}` must start with spiffe://"))?;
    let (td, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    if td.is_empty() || td.contains('*') {
        return Err(format!("spiffe_id pattern `{pattern}` needs a literal trust domain"));
    }
    Ok(SpiffePattern {
        trust_domain: td.to_string(),
        path: SegGlob::compile(path)?,
    })
}

impl Cond {
    fn matches(&self, req: &RequestFacts<'_>) -> bool {
        if let Some(pats) = &self.spiffe {
            let Some(id) = &req.peer.spiffe_id else {
                return false;
            };
            if !pats
                .iter()
                .any(|p| p.trust_domain == id.trust_domain() && p.path.matches(id.path()))
            {
                return false;
            }
        }
        if let Some(cns) = &self.cn {
            match &req.peer.common_name {
                Some(cn) if cns.iter().any(|c| c == cn) => {}
                _ => return false,
            }
        }
        if let Some(methods) = &self.methods
            && !methods.contains(req.method)
        {
            return false;
        }
        if let Some(paths) = &self.paths
            && !paths.iter().any(|g| g.matches(req.path))
        {
            return false;
        }
        !self.not.as_ref().is_some_and(|not| not.matches(req))
    }
}

#[cfg(test)]
mod tests;
