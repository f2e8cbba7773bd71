//! Access policy: a TOML file of rules, compiled once per load, evaluated per request.
//!
//! Semantics (docs/policy.md): default deny. A request is allowed only if some enforced `allow`
//! rule matches and no enforced `deny` rule matches (deny overrides). Conditions inside a rule
//! are AND-ed; a list means any-of. `mode = "shadow"` rules are evaluated and reported but never
//! change the decision.

mod compile;
mod cond;
mod explain;
mod file;
mod glob;
mod index;
pub mod path;
mod store;

pub use cond::Cidr;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::{Collector, Diagnostics, Problem, line_col};
use cond::Cond;
pub use cond::RequestFacts;
pub use explain::{Explanation, RuleTrace};
pub use glob::SegGlob;
pub use store::PolicyStore;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    /// Evaluated and reported as if enforced, never changes the decision.
    Shadow,
}

#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub effect: Effect,
    pub mode: Mode,
    /// Line of the rule's `[[rule]]` header, for messages.
    pub line: usize,
    span: Range<usize>,
    cond: Cond,
    /// Per-identity budget for the requests this rule allows (enforced allow rules only).
    pub rate_limit: Option<crate::ratelimit::Rate>,
    /// What the device must satisfy for this (allow) rule to apply.
    pub posture: Option<crate::posture::Requirement>,
}

/// `[policy]`: the policy file and how often it is checked for changes.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub file: PathBuf,
    /// How often the file is checked for changes (SIGHUP reloads at once).
    pub reload_interval: Duration,
}

/// Why a request was allowed or denied (machine-readable codes in docs/policy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Reason {
    #[serde(rename = "allowed")]
    Allowed,
    #[serde(rename = "denied-by-rule")]
    DeniedByRule,
    #[serde(rename = "no-allow-rule")]
    NoAllowRule,
    /// An allow rule matched the request but the device failed its posture requirement.
    #[serde(rename = "posture-failed")]
    PostureFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::DeniedByRule => "denied-by-rule",
            Reason::NoAllowRule => "no-allow-rule",
            Reason::PostureFailed => "posture-failed",
        }
    }
}

/// A shadow rule that would have flipped the decision had it been enforced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Shadow<'p> {
    pub rule: &'p str,
    /// `true`: a shadow allow would have allowed a denied request (`shadow-allow`);
    /// `false`: a shadow deny would have denied an allowed one (`shadow-deny`).
    pub would_allow: bool,
}

impl Shadow<'_> {
    pub fn reason(&self) -> &'static str {
        if self.would_allow {
            "shadow-allow"
        } else {
            "shadow-deny"
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision<'p> {
    pub allowed: bool,
    /// The deciding rule: the first matching enforced deny, else the first matching allow.
    pub rule: Option<&'p str>,
    pub reason: Reason,
    pub shadow: Option<Shadow<'p>>,
    /// Index of the deciding rule (for its rate limit).
    #[serde(skip)]
    pub rule_index: Option<usize>,
    /// With `PostureFailed`: the requirement the device failed (`disk_encrypted`, ...) or why its
    /// posture is unavailable (`device-unknown`, `service-down`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posture_failed: Option<&'static str>,
}

/// A compiled policy.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    groups: Vec<Cond>,
    index: index::Index,
    /// One per-identity limiter per rule that has a `rate_limit` (indexed like `rules`). Built per
    /// (re)load: a reload starts every identity with a full budget.
    limiters: Vec<Option<crate::ratelimit::RuleLimiter>>,
    /// Whether any rule states a posture requirement (else the posture layer skips the lookup).
    uses_posture: bool,
    /// Findings that do not stop the policy from loading (printed by `check`).
    pub warnings: Vec<Problem>,
    pub source: PathBuf,
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
        let raw = file::parse(text, &mut c);
        let compiled = compile::compile(raw, text, &mut c);
        c.finish(path).map_err(PolicyError::Invalid)?;
        let warnings = compiled
            .warnings
            .into_iter()
            .map(|(span, message)| {
                let (line, col) = line_col(text, span.start);
                Problem { line, col, message }
            })
            .collect();
        let index = index::Index::build(&compiled.rules);
        let limiters = compiled
            .rules
            .iter()
            .map(|r| r.rate_limit.map(crate::ratelimit::RuleLimiter::new))
            .collect();
        Ok(Self {
            uses_posture: compiled.rules.iter().any(|r| r.posture.is_some()),
            limiters,
            rules: compiled.rules,
            groups: compiled.groups,
            index,
            warnings,
            source: path.to_path_buf(),
        })
    }

    /// Whether any request at all from `peer` could be allowed: false when an enforced deny
    /// rule matches the certificate whatever the request, or when no enforced allow rule can
    /// match it. After a policy reload, open connections of identities allowed nowhere are
    /// closed.
    pub fn may_allow(&self, peer: &crate::identity::PeerIdentity) -> bool {
        let headers = http::HeaderMap::new();
        let f = RequestFacts {
            peer,
            method: &http::Method::GET,
            path: "/",
            host: None,
            route: None,
            headers: &headers,
            source_ip: std::net::IpAddr::from([0, 0, 0, 0]),
            posture: None,
            user: None,
        };
        let enforced = |e: Effect| {
            self.rules
                .iter()
                .filter(move |r| r.mode == Mode::Enforce && r.effect == e)
        };
        if enforced(Effect::Deny).any(|r| r.cond.principal_match(&f, &self.groups) == Some(true)) {
            return false;
        }
        enforced(Effect::Allow).any(|r| r.cond.principal_match(&f, &self.groups) != Some(false))
    }

    /// `Ok` if the rule at `rule` has no rate limit or `key` is within it; else how long to wait.
    pub fn check_rule_limit(&self, rule: usize, key: &std::sync::Arc<str>) -> Result<(), std::time::Duration> {
        match self.limiters.get(rule) {
            Some(Some(l)) => l.check(key),
            _ => Ok(()),
        }
    }

    /// Forgets idle identities in the per-rule limiters (bounded memory).
    pub fn prune_limits(&self) {
        for l in self.limiters.iter().flatten() {
            l.prune();
        }
    }

    pub fn uses_posture(&self) -> bool {
        self.uses_posture
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The decision for one request. Looks only at the index's candidates; [`Policy::explain`]
    /// looks at every rule and must agree (tested).
    pub fn evaluate(&self, f: &RequestFacts<'_>) -> Decision<'_> {
        let mut m = Matches::default();
        for i in self.index.candidates(f) {
            let i = i as usize;
            if let Some(rule) = self.rules.get(i)
                && rule.cond.matches(f, &self.groups)
            {
                let _ = m.record_checked(i, rule, f);
            }
        }
        m.decide(&self.rules)
    }
}

/// Lowest index of each kind of matching rule.
#[derive(Default)]
struct Matches {
    deny: Option<usize>,
    allow: Option<usize>,
    shadow_deny: Option<usize>,
    shadow_allow: Option<usize>,
    /// The first enforced allow rule that matched but whose posture requirement failed.
    posture: Option<(usize, &'static str)>,
}

impl Matches {
    fn record(&mut self, i: usize, rule: &Rule) {
        let slot = match (rule.mode, rule.effect) {
            (Mode::Enforce, Effect::Deny) => &mut self.deny,
            (Mode::Enforce, Effect::Allow) => &mut self.allow,
            (Mode::Shadow, Effect::Deny) => &mut self.shadow_deny,
            (Mode::Shadow, Effect::Allow) => &mut self.shadow_allow,
        };
        *slot = Some(slot.map_or(i, |j| j.min(i)));
    }

    /// Records a rule whose conditions matched, if the device also meets its posture
    /// requirement; else remembers the failed requirement (for the denial's reason).
    fn record_checked(&mut self, i: usize, rule: &Rule, f: &RequestFacts<'_>) -> Result<(), &'static str> {
        if let Some(req) = &rule.posture
            && let Err(failed) = req.check(f.posture, std::time::SystemTime::now())
        {
            if rule.mode == Mode::Enforce && self.posture.is_none_or(|(j, _)| i < j) {
                self.posture = Some((i, failed));
            }
            return Err(failed);
        }
        self.record(i, rule);
        Ok(())
    }

    fn decide(self, rules: &[Rule]) -> Decision<'_> {
        let id = |i: Option<usize>| i.and_then(|i| rules.get(i)).map(|r| r.id.as_str());
        let allowed = self.deny.is_none() && self.allow.is_some();
        let reason = match (self.deny, self.allow, self.posture) {
            (Some(_), _, _) => Reason::DeniedByRule,
            (None, Some(_), _) => Reason::Allowed,
            (None, None, Some(_)) => Reason::PostureFailed,
            (None, None, None) => Reason::NoAllowRule,
        };
        let posture_failed = match reason {
            Reason::PostureFailed => self.posture.map(|(_, failed)| failed),
            _ => None,
        };
        let deciding = match reason {
            Reason::PostureFailed => self.posture.map(|(i, _)| i),
            _ => self.deny.or(self.allow),
        };
        let shadow = match (allowed, self.shadow_deny, self.shadow_allow) {
            (true, Some(d), _) => id(Some(d)).map(|rule| Shadow {
                rule,
                would_allow: false,
            }),
            // Only a request that no enforced deny matched could be flipped by a shadow allow.
            (false, _, Some(a)) if self.deny.is_none() => id(Some(a)).map(|rule| Shadow {
                rule,
                would_allow: true,
            }),
            _ => None,
        };
        Decision {
            allowed,
            rule: id(deciding),
            reason,
            shadow,
            rule_index: deciding,
            posture_failed,
        }
    }
}

#[cfg(test)]
mod tests;
