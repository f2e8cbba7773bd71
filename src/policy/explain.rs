//! `ztgate explain`: the decision a request would get, the rule that made it, and for the rules
//! that did not match, which condition failed. Evaluates every rule (no index) with the same
//! decision function as the data path, so it cannot disagree with it.

use std::fmt::Write;

use serde::Serialize;

use super::cond::RequestFacts;
use super::{Decision, Effect, Matches, Mode, Policy};

#[derive(Debug, Serialize)]
pub struct RuleTrace<'p> {
    pub id: &'p str,
    pub effect: Effect,
    pub mode: Mode,
    pub line: usize,
    pub matched: bool,
    /// Keys of the top-level conditions that failed (empty when matched).
    pub failed: Vec<&'static str>,
    /// Top-level conditions that held, out of `total`.
    pub satisfied: usize,
    pub total: usize,
}

#[derive(Debug, Serialize)]
pub struct Explanation<'p> {
    pub decision: Decision<'p>,
    pub rules: Vec<RuleTrace<'p>>,
}

impl Policy {
    pub fn explain(&self, f: &RequestFacts<'_>) -> Explanation<'_> {
        let mut m = Matches::default();
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let mut failed: Vec<&'static str> = rule
                .cond
                .tests
                .iter()
                .filter(|t| !t.matches(f, &self.groups))
                .map(|t| t.key())
                .collect();
            if failed.is_empty() && m.record_checked(i, rule, f).is_err() {
                failed.push("posture");
            }
            let matched = failed.is_empty();
            let total = rule.cond.tests.len() + usize::from(rule.posture.is_some());
            rules.push(RuleTrace {
                id: &rule.id,
                effect: rule.effect,
                mode: rule.mode,
                line: rule.line,
                matched,
                satisfied: total - failed.len(),
                failed,
                total,
            });
        }
        Explanation {
            decision: m.decide(&self.rules),
            rules,
        }
    }
}

impl Explanation<'_> {
    /// Human-readable report: the decision, the matching rules, and the nearest misses.
    pub fn render_text(&self) -> String {
        let d = &self.decision;
        let mut out = String::new();
        let verdict = if d.allowed { "ALLOW" } else { "DENY (403)" };
        let _ = writeln!(out, "decision: {verdict}");
        let _ = writeln!(out, "reason:   {}", d.reason.as_str());
        let _ = writeln!(out, "rule:     {}", d.rule.unwrap_or("(none)"));
        if let Some(p) = d.posture_failed {
            let _ = writeln!(out, "posture:  failed `{p}`");
        }
        if let Some(s) = &d.shadow {
            let _ = writeln!(out, "shadow:   {} by rule {} (not enforced)", s.reason(), s.rule);
        }
        let matched: Vec<&RuleTrace<'_>> = self.rules.iter().filter(|r| r.matched).collect();
        let _ = writeln!(out, "\nmatching rules:");
        if matched.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for r in &matched {
            let _ = writeln!(
                out,
                "  {:<32} {:<5} {:<7} line {}",
                r.id,
                effect(r.effect),
                mode(r.mode),
                r.line
            );
        }
        let mut misses: Vec<&RuleTrace<'_>> = self.rules.iter().filter(|r| !r.matched).collect();
        // Nearest first: the larger the share of conditions that held, the closer the miss.
        misses.sort_by(|a, b| {
            (b.satisfied * a.total.max(1))
                .cmp(&(a.satisfied * b.total.max(1)))
                .then(a.line.cmp(&b.line))
        });
        if !misses.is_empty() {
            let _ = writeln!(out, "\nnearest rules that did not match:");
            for r in misses.iter().take(5) {
                let _ = writeln!(
                    out,
                    "  {:<32} {:<5} {:<7} line {:<4} failed: {}",
                    r.id,
                    effect(r.effect),
                    mode(r.mode),
                    r.line,
                    r.failed.join(", ")
                );
            }
        }
        out
    }
}

fn effect(e: Effect) -> &'static str {
    match e {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
    }
}

fn mode(m: Mode) -> &'static str {
    match m {
        Mode::Enforce => "enforce",
        Mode::Shadow => "shadow",
    }
}
