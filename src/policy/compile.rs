//! Raw policy → compiled rules. Runs once per load, off the data path: every pattern is parsed
//! here, every mistake reported with its position, and a pattern that could never match a
//! normalised request is an error rather than a silent hole.

use std::collections::HashMap;
use std::ops::Range;

use http::Method;
use http::header::{HeaderName, HeaderValue};
use toml::Spanned;

use super::cond::{Cidr, Cond, NamePattern, SpiffePattern, Test};
use super::file::{RawCond, RawPolicy};
use super::glob::SegGlob;
use super::{Effect, Mode, Rule};
use crate::diag::Collector;

pub(super) struct Compiled {
    pub(super) rules: Vec<Rule>,
    pub(super) groups: Vec<Cond>,
    /// Non-fatal findings (rules that can never take effect), as (span, message).
    pub(super) warnings: Vec<(Range<usize>, String)>,
}

pub(super) fn compile(raw: RawPolicy, text: &str, c: &mut Collector<'_>) -> Compiled {
    let mut group_ids: HashMap<String, usize> = HashMap::new();
    for (i, g) in raw.groups.iter().enumerate() {
        group_ids.insert(g.name.get_ref().clone(), i);
    }
    let groups: Vec<Cond> = raw
        .groups
        .into_iter()
        .map(|g| {
            let mut cx = Ctx {
                c,
                groups: &group_ids,
                in_group: Some(g.name.get_ref().clone()),
            };
            let listed = cx.cond(g.cond);
            if listed.tests.is_empty() {
                c.push(
                    g.name.span(),
                    format!("group `{}` lists no principals", g.name.get_ref()),
                );
            }
            // A group is a list of principals: a certificate belongs if it matches any entry,
            // whichever key lists it (unlike a rule, whose conditions must all hold).
            Cond {
                tests: vec![Test::Any(
                    listed.tests.into_iter().map(|t| Cond { tests: vec![t] }).collect(),
                )],
            }
        })
        .collect();

    let mut rules = Vec::with_capacity(raw.rules.len());
    let lines = crate::diag::LineIndex::new(text);
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for r in raw.rules {
        let id = r.meta.id;
        if id.get_ref().is_empty() {
            c.push(id.span(), "rule id must not be empty");
        }
        if let Some(first) = first_seen.insert(id.get_ref().clone(), id.span().start) {
            let line = lines.line(first);
            c.push(
                id.span(),
                format!("duplicate rule id `{}` (first defined on line {line})", id.get_ref()),
            );
        }
        let effect = match r.meta.effect.get_ref().as_str() {
            "allow" => Effect::Allow,
            "deny" => Effect::Deny,
            other => {
                c.push(
                    r.meta.effect.span(),
                    format!("unknown effect `{other}` (expected \"allow\" or \"deny\")"),
                );
                Effect::Deny
            }
        };
        let mode = match r.meta.mode.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("enforce") => Mode::Enforce,
            Some("shadow") => Mode::Shadow,
            Some(other) => {
                let span = r.meta.mode.as_ref().map_or(0..0, Spanned::span);
                c.push(
                    span,
                    format!("unknown mode `{other}` (expected \"enforce\" or \"shadow\")"),
                );
                Mode::Enforce
            }
        };
        let posture = r.meta.posture.as_ref().and_then(|v| {
            // On a deny rule a requirement has no clear meaning (deny healthy devices?): refuse.
            if effect != Effect::Allow {
                c.push(
                    v.span(),
                    "`posture` states what an allow rule requires of the device: use it on an allow rule",
                );
                return None;
            }
            match posture_requirement(v.get_ref()) {
                Ok(req) => Some(req),
                Err(e) => {
                    c.push(v.span(), e);
                    None
                }
            }
        });
        let rate_limit = r.meta.rate_limit.as_ref().and_then(|v| {
            if effect != Effect::Allow || mode != Mode::Enforce {
                c.push(
                    v.span(),
                    "`rate_limit` applies to the requests a rule allows: use it on an enforced allow rule",
                );
                return None;
            }
            match rule_rate(v.get_ref()) {
                Ok(rate) => Some(rate),
                Err(e) => {
                    c.push(v.span(), e);
                    None
                }
            }
        });
        let cond = Ctx {
            c,
            groups: &group_ids,
            in_group: None,
        }
        .cond(r.cond);
        let line = lines.line(r.span.start);
        rules.push(Rule {
            id: id.into_inner(),
            effect,
            mode,
            line,
            span: r.span,
            cond,
            rate_limit,
            posture,
        });
    }
    if c.is_empty()
        && !rules
            .iter()
            .any(|r| r.effect == Effect::Allow && r.mode == Mode::Enforce)
    {
        c.push(
            0..0,
            "policy has no enforced allow rule: every request would be denied (add a [[rule]] with effect = \"allow\")",
        );
    }
    let warnings = shadowed(&rules);
    Compiled {
        rules,
        groups,
        warnings,
    }
}

struct Ctx<'c, 'a> {
    c: &'c mut Collector<'a>,
    groups: &'c HashMap<String, usize>,
    /// Set while compiling a group: groups hold principal conditions only.
    in_group: Option<String>,
}

impl Ctx<'_, '_> {
    fn cond(&mut self, raw: RawCond) -> Cond {
        let mut tests = Vec::new();
        macro_rules! list {
            ($field:expr, $variant:ident, $parse:expr) => {
                if let Some(items) = $field {
                    let parsed: Vec<_> = items.iter().filter_map(|s| self.item(s, $parse)).collect();
                    if parsed.len() == items.len() {
                        tests.push(Test::$variant(parsed));
                    }
                }
            };
        }
        list!(raw.spiffe_id, Spiffe, spiffe_pattern);
        list!(raw.trust_domain, TrustDomain, trust_domain);
        list!(raw.cn, Cn, |s: &str| Ok(s.to_string()));
        list!(raw.dns, Dns, |s: &str| Ok(NamePattern::parse(s)));
        list!(raw.email, Email, |s: &str| Ok(s.to_string()));
        list!(raw.org, Org, |s: &str| Ok(s.to_string()));
        list!(raw.ou, Ou, |s: &str| Ok(s.to_string()));
        // Compared by string equality with the rendered issuer: an entry ztgate would never
        // render is refused rather than left to match nothing (in a deny rule or `not`, that
        // would quietly allow).
        list!(raw.issuer, Issuer, |s: &str| crate::identity::dn::check_rendered(s)
            .map(|()| s.to_string()));
        list!(raw.fingerprint, Fingerprint, fingerprint);
        if let Some(names) = &raw.group {
            if let Some(g) = &self.in_group {
                let span = names.first().map_or(0..0, Spanned::span);
                self.c.push(span, format!("group `{g}` cannot refer to other groups"));
            } else {
                let groups = self.groups;
                list!(raw.group, Group, |s: &str| groups.get(s).copied().ok_or_else(|| {
                    let known: Vec<&str> = groups.keys().map(String::as_str).collect();
                    format!(
                        "unknown group `{s}` (defined: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )
                }));
            }
        }
        let request_keys = [
            ("route", raw.route.is_some()),
            ("host", raw.host.is_some()),
            ("methods", raw.methods.is_some()),
            ("paths", raw.paths.is_some()),
            ("headers", raw.headers.is_some()),
            ("headers_present", raw.headers_present.is_some()),
            ("source_cidr", raw.source_cidr.is_some()),
            ("user_sub", raw.user_sub.is_some()),
            ("user_email", raw.user_email.is_some()),
            ("user_groups", raw.user_groups.is_some()),
            ("user_mfa", raw.user_mfa.is_some()),
            ("all", raw.all.is_some()),
            ("any", raw.any.is_some()),
            ("not", raw.not.is_some()),
        ];
        if let Some(g) = self.in_group.clone()
            && let Some((key, _)) = request_keys.iter().find(|(_, set)| *set)
        {
            self.c.push(
                0..0,
                format!("group `{g}` has `{key}`: groups hold principal conditions only (spiffe_id, cn, dns, ...)"),
            );
        }
        list!(raw.route, Route, |s: &str| Ok(s.to_string()));
        list!(raw.host, Host, |s: &str| Ok(NamePattern::parse(s)));
        list!(raw.methods, Method, method);
        list!(raw.paths, Path, path_pattern);
        if let Some(h) = raw.headers {
            let mut pairs = Vec::new();
            for (name, value) in h.get_ref() {
                match (
                    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    (Ok(n), Ok(v)) => pairs.push((n, v)),
                    _ => self.c.push(h.span(), format!("invalid header `{name}: {value}`")),
                }
            }
            tests.push(Test::HeaderEq(pairs));
        }
        list!(raw.headers_present, HeaderPresent, |s: &str| HeaderName::from_bytes(
            s.to_ascii_lowercase().as_bytes()
        )
        .map_err(|_| format!("invalid header name `{s}`")));
        list!(raw.source_cidr, SourceCidr, Cidr::parse);
        list!(raw.user_sub, UserSub, |s: &str| Ok(s.to_string()));
        list!(raw.user_email, UserEmail, |s: &str| Ok(s.to_string()));
        list!(raw.user_groups, UserGroups, |s: &str| Ok(s.to_string()));
        if let Some(mfa) = raw.user_mfa {
            tests.push(Test::UserMfa(mfa));
        }
        if let Some(all) = raw.all {
            tests.push(Test::All(all.into_iter().map(|c| self.cond(c.into_inner())).collect()));
        }
        if let Some(any) = raw.any {
            if any.is_empty() {
                self.c.push(0..0, "`any = []` can never match");
            }
            tests.push(Test::Any(any.into_iter().map(|c| self.cond(c.into_inner())).collect()));
        }
        if let Some(not) = raw.not {
            tests.push(Test::Not(Box::new(self.cond(not.into_inner()))));
        }
        Cond { tests }
    }

    fn item<T>(&mut self, s: &Spanned<String>, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        match parse(s.get_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.c.push(s.span(), e);
                None
            }
        }
    }
}

/// `posture = { managed = true, disk_encrypted = true, firewall = true, os = ["macos"],
/// min_os_version = "14.2", max_staleness = "24h", tags = ["corp"] }`.
fn posture_requirement(v: &toml::Value) -> Result<crate::posture::Requirement, String> {
    use crate::posture::{Requirement, Version};
    const KEYS: [&str; 7] = [
        "managed",
        "disk_encrypted",
        "firewall",
        "os",
        "min_os_version",
        "max_staleness",
        "tags",
    ];
    let t = v
        .as_table()
        .ok_or("`posture` must be a table, e.g. posture = { managed = true }")?;
    let mut req = Requirement::default();
    for (k, v) in t {
        let flag = || v.as_bool().ok_or(format!("posture.{k} must be true or false"));
        let strings = || -> Result<Vec<String>, String> {
            match v {
                toml::Value::String(s) => Ok(vec![s.clone()]),
                toml::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or(format!("posture.{k} must be a list of strings")),
                _ => Err(format!("posture.{k} must be a list of strings")),
            }
        };
        match k.as_str() {
            "managed" => req.managed = Some(flag()?),
            "disk_encrypted" => req.disk_encrypted = Some(flag()?),
            "firewall" => req.firewall = Some(flag()?),
            "os" => req.os = strings()?.iter().map(|o| o.to_ascii_lowercase()).collect(),
            "tags" => req.tags = strings()?,
            "min_os_version" => {
                let s = v
                    .as_str()
                    .ok_or("posture.min_os_version must be a string, e.g. \"14.2\"")?;
                req.min_os_version =
                    Some(Version::parse(s).ok_or(format!("posture.min_os_version `{s}` is not a dotted version"))?);
            }
            "max_staleness" => {
                let s = v
                    .as_str()
                    .ok_or("posture.max_staleness must be a duration, e.g. \"24h\"")?;
                req.max_staleness = Some(crate::diag::parse_duration(s)?);
            }
            other => {
                let hint =
                    crate::diag::closest(other, &KEYS).map_or(String::new(), |c| format!(" (did you mean `{c}`?)"));
                return Err(format!(
                    "unknown posture requirement `{other}`{hint}; known: {}",
                    KEYS.join(", ")
                ));
            }
        }
    }
    if req == Requirement::default() {
        return Err("`posture = {}` requires nothing; state at least one requirement".into());
    }
    Ok(req)
}

fn spiffe_pattern(p: &str) -> Result<SpiffePattern, String> {
    let rest = p
        .strip_prefix("spiffe://")
        .ok_or_else(|| format!("spiffe_id pattern `{p}` must start with spiffe://"))?;
    let (td, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    trust_domain(td).map_err(|e| format!("in `{p}`: {e}"))?;
    if path.split('/').any(|s| s == "." || s == "..") || path.ends_with('/') {
        return Err(format!(
            "spiffe_id pattern `{p}` can never match: SPIFFE IDs have no empty, `.` or `..` segments"
        ));
    }
    let mut literal_prefix = format!("spiffe://{td}");
    for seg in path.split('/').skip(1).take_while(|s| !s.contains('*')) {
        literal_prefix.push('/');
        literal_prefix.push_str(seg);
    }
    Ok(SpiffePattern {
        trust_domain: td.to_string(),
        path: SegGlob::compile(if path.is_empty() { "/" } else { path })?,
        literal_prefix,
    })
}

fn trust_domain(td: &str) -> Result<String, String> {
    if td.is_empty() || td.contains('*') {
        return Err("a trust domain must be literal (no `*`)".into());
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
    {
        return Err(format!(
            "trust domain `{td}` can never match: SPIFFE trust domains are lowercase letters, digits, '.', '-', '_'"
        ));
    }
    Ok(td.to_string())
}

fn fingerprint(s: &str) -> Result<String, String> {
    crate::identity::parse_fingerprint(s)
        .ok_or_else(|| format!("fingerprint `{s}` must be a SHA-256 in hex (64 digits, colons allowed)"))
}

/// Path patterns are matched against *normalised* paths; a pattern that normalisation would
/// change can never match, which is an easy way to leave a hole in a deny rule.
fn path_pattern(p: &str) -> Result<SegGlob, String> {
    if p.split('/').any(|s| s == "." || s == "..") {
        return Err(format!(
            "path pattern `{p}` can never match: requests are normalised, so `.`/`..` never appear"
        ));
    }
    if p.contains("//") {
        return Err(format!(
            "path pattern `{p}` can never match: duplicate slashes are merged before matching"
        ));
    }
    let bytes = p.as_bytes();
    for (i, _) in p.match_indices('%') {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => {
                return Err(format!(
                    "path pattern `{p}` can never match: `%{:02X}` is decoded to `{}` before matching; write it plainly",
                    b, b as char
                ));
            }
            Some(b'/' | b'\\') => {
                return Err(format!(
                    "path pattern `{p}` can never match: requests with an encoded `/` or `\\` are refused"
                ));
            }
            Some(_) if bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase) => {
                return Err(format!(
                    "path pattern `{p}` can never match: percent-escapes are normalised to uppercase hex"
                ));
            }
            Some(_) => {}
            None => return Err(format!("path pattern `{p}` has a malformed percent-escape")),
        }
    }
    SegGlob::compile(p)
}

/// Finds enforced allow rules that can never take effect because an enforced deny rule matches
/// every request they match. Only plain lists are compared (a deny with `not`/`any`/`all` is
/// not reasoned about), so this finds the common mistake without false alarms.
fn shadowed(rules: &[Rule]) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    let denies: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.effect == Effect::Deny && r.mode == Mode::Enforce)
        .collect();
    for deny in &denies {
        if deny.cond.tests.is_empty() {
            out.push((
                deny.span.clone(),
                format!("deny rule `{}` has no conditions: it denies every request", deny.id),
            ));
        }
    }
    for allow in rules
        .iter()
        .filter(|r| r.effect == Effect::Allow && r.mode == Mode::Enforce)
    {
        if let Some(deny) = denies.iter().find(|d| covers(&d.cond, &allow.cond)) {
            out.push((
                allow.span.clone(),
                format!(
                    "allow rule `{}` never takes effect: deny rule `{}` (line {}) matches every request it matches",
                    allow.id, deny.id, deny.line
                ),
            ));
        }
    }
    out
}

/// `deny` matches a superset of what `allow` matches: each of deny's tests has a counterpart in
/// allow with the same key and a subset of its values.
fn covers(deny: &Cond, allow: &Cond) -> bool {
    !deny.tests.is_empty()
        && deny.tests.iter().all(|d| {
            let Some(dv) = values(d) else { return false };
            allow
                .tests
                .iter()
                .any(|a| a.key() == d.key() && values(a).is_some_and(|av| av.iter().all(|v| dv.contains(v))))
        })
}

fn values(t: &Test) -> Option<Vec<String>> {
    Some(match t {
        Test::Spiffe(p) => p.iter().map(|p| format!("{}{:?}", p.trust_domain, p.path)).collect(),
        Test::TrustDomain(v) | Test::Cn(v) | Test::Email(v) | Test::Org(v) | Test::Ou(v) | Test::Issuer(v) => v.clone(),
        Test::Fingerprint(v) | Test::Route(v) => v.clone(),
        Test::Method(v) => v.iter().map(ToString::to_string).collect(),
        Test::Path(v) => v.iter().map(|g| format!("{g:?}")).collect(),
        Test::Dns(v) | Test::Host(v) => v.iter().map(|p| format!("{p:?}")).collect(),
        Test::SourceCidr(v) => v.iter().map(|c| format!("{c:?}")).collect(),
        Test::UserSub(v) | Test::UserEmail(v) | Test::UserGroups(v) => v.clone(),
        Test::UserMfa(b) => vec![b.to_string()],
        Test::Group(v) => v.iter().map(ToString::to_string).collect(),
        Test::HeaderEq(_) | Test::HeaderPresent(_) | Test::All(_) | Test::Any(_) | Test::Not(_) => return None,
    })
}

/// `rate_limit = { requests_per_second = N, burst = M }` on a rule (burst defaults to N).
fn rule_rate(v: &toml::Value) -> Result<crate::ratelimit::Rate, String> {
    use std::num::NonZeroU32;
    let usage = "rate_limit must be a table like { requests_per_second = 10, burst = 20 }";
    let t = v.as_table().ok_or(usage)?;
    if let Some(k) = t
        .keys()
        .find(|k| !matches!(k.as_str(), "requests_per_second" | "burst"))
    {
        return Err(format!(
            "unknown key `{k}` in rate_limit (valid keys: requests_per_second, burst)"
        ));
    }
    let positive = |key: &str| -> Result<Option<NonZeroU32>, String> {
        match t.get(key) {
            None => Ok(None),
            Some(x) => x
                .as_integer()
                .and_then(|n| u32::try_from(n).ok())
                .and_then(NonZeroU32::new)
                .map(Some)
                .ok_or_else(|| format!("rate_limit {key} must be an integer between 1 and 4294967295")),
        }
    };
    let per_second = positive("requests_per_second")?.ok_or(usage)?;
    let burst = positive("burst")?.unwrap_or(per_second);
    Ok(crate::ratelimit::Rate { per_second, burst })
}

/// Methods a `methods` entry may name: RFC 9110's, PATCH (RFC 5789) and WebDAV's (RFC 4918). A
/// typo such as `GTE` would be a valid extension token that no client sends, so a rule naming it
/// would silently never match: anything else is refused, with the closest known method.
const KNOWN_METHODS: [&str; 16] = [
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
];

fn method(s: &str) -> Result<Method, String> {
    let upper = s.to_ascii_uppercase();
    if !KNOWN_METHODS.contains(&upper.as_str()) {
        let hint = crate::diag::closest(&upper, &KNOWN_METHODS)
            .map(|m| format!(" (did you mean `{m}`?)"))
            .unwrap_or_default();
        return Err(format!(
            "unknown HTTP method `{s}`{hint}; known: {}",
            KNOWN_METHODS.join(", ")
        ));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|_| format!("invalid HTTP method `{s}`"))
}
