//! Compiled conditions and how they match. A [`Cond`] is an AND of [`Test`]s; each test's list
//! is any-of. Everything here is pure and allocation-free per request.

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};

use super::glob::SegGlob;
use crate::identity::PeerIdentity;

/// What a rule can look at: the connection's identity and the (normalised) request.
pub struct RequestFacts<'a> {
    pub peer: &'a PeerIdentity,
    pub method: &'a Method,
    /// Normalised path (see [`super::path::normalize`]).
    pub path: &'a str,
    /// Request host without port, lowercase.
    pub host: Option<&'a str>,
    /// Name of the route the request matched.
    pub route: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub source_ip: IpAddr,
    /// The device's posture, when the posture layer looked it up (`None`: no provider or the
    /// policy needs none; every posture requirement then fails).
    pub posture: Option<&'a crate::posture::PostureResult>,
    /// The verified user token's claims, on routes with user authentication.
    pub user: Option<&'a crate::user::User>,
}

#[derive(Debug, Default)]
pub(crate) struct Cond {
    pub(crate) tests: Vec<Test>,
}

#[derive(Debug)]
pub(crate) struct SpiffePattern {
    pub(crate) trust_domain: String,
    pub(crate) path: SegGlob,
    /// `spiffe://td` plus the pattern's literal leading segments (up to the first wildcard):
    /// every ID the pattern matches starts with it at a segment boundary. The index key.
    pub(crate) literal_prefix: String,
}

/// A DNS-style name: exact, or `*.suffix` (one or more labels before the suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NamePattern {
    Exact(String),
    Suffix(String),
}

impl NamePattern {
    pub(crate) fn parse(s: &str) -> Self {
        let s = s.to_ascii_lowercase();
        match s.strip_prefix("*.") {
            Some(suffix) => NamePattern::Suffix(format!(".{suffix}")),
            None => NamePattern::Exact(s),
        }
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(e) => e.eq_ignore_ascii_case(name),
            NamePattern::Suffix(s) => {
                name.len() > s.len()
                    && name
                        .get(name.len() - s.len()..)
                        .is_some_and(|t| t.eq_ignore_ascii_case(s))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub(crate) addr: IpAddr,
    pub(crate) prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("invalid IP address `{a}` in CIDR `{s}`"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() {
            max
        } else {
            p.parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid prefix length in CIDR `{s}` (0..={max})"))?
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(u128::from(net), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

fn mask(net: u128, ip: u128, prefix: u8, bits: u32) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = bits - u32::from(prefix);
    (net >> shift) == (ip >> shift)
}

#[derive(Debug)]
pub(crate) enum Test {
    Spiffe(Vec<SpiffePattern>),
    TrustDomain(Vec<String>),
    Cn(Vec<String>),
    Dns(Vec<NamePattern>),
    Email(Vec<String>),
    Org(Vec<String>),
    Ou(Vec<String>),
    Issuer(Vec<String>),
    /// SHA-256 fingerprints, lowercase hex without separators.
    Fingerprint(Vec<String>),
    /// Indexes into the policy's groups.
    Group(Vec<usize>),
    Route(Vec<String>),
    Host(Vec<NamePattern>),
    Method(Vec<Method>),
    Path(Vec<SegGlob>),
    HeaderEq(Vec<(HeaderName, HeaderValue)>),
    HeaderPresent(Vec<HeaderName>),
    SourceCidr(Vec<Cidr>),
    UserSub(Vec<String>),
    /// Exact addresses, or `@domain`.
    UserEmail(Vec<String>),
    /// Any of these groups.
    UserGroups(Vec<String>),
    /// `amr` contains (or, with `false`, lacks) `mfa`.
    UserMfa(bool),
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
}

impl Test {
    /// The policy-file key this test came from (for `explain` and hints).
    pub(crate) fn key(&self) -> &'static str {
        match self {
            Test::Spiffe(_) => "spiffe_id",
            Test::TrustDomain(_) => "trust_domain",
            Test::Cn(_) => "cn",
            Test::Dns(_) => "dns",
            Test::Email(_) => "email",
            Test::Org(_) => "org",
            Test::Ou(_) => "ou",
            Test::Issuer(_) => "issuer",
            Test::Fingerprint(_) => "fingerprint",
            Test::Group(_) => "group",
            Test::Route(_) => "route",
            Test::Host(_) => "host",
            Test::Method(_) => "methods",
            Test::Path(_) => "paths",
            Test::HeaderEq(_) => "headers",
            Test::HeaderPresent(_) => "headers_present",
            Test::SourceCidr(_) => "source_cidr",
            Test::UserSub(_) => "user_sub",
            Test::UserEmail(_) => "user_email",
            Test::UserGroups(_) => "user_groups",
            Test::UserMfa(_) => "user_mfa",
            Test::All(_) => "all",
            Test::Any(_) => "any",
            Test::Not(_) => "not",
        }
    }

    pub(crate) fn matches(&self, f: &RequestFacts<'_>, groups: &[Cond]) -> bool {
        let p = f.peer;
        match self {
            Test::Spiffe(pats) => p.spiffe_id.as_ref().is_some_and(|id| {
                pats.iter()
                    .any(|pat| pat.trust_domain == id.trust_domain() && pat.path.matches(id.path()))
            }),
            Test::TrustDomain(tds) => p
                .spiffe_id
                .as_ref()
                .is_some_and(|id| tds.iter().any(|t| t == id.trust_domain())),
            Test::Cn(cns) => p.common_name.as_ref().is_some_and(|cn| cns.contains(cn)),
            Test::Dns(pats) => p.dns.iter().any(|d| pats.iter().any(|pat| pat.matches(d))),
            Test::Email(list) => p.emails.iter().any(|e| email_matches(list, e)),
            Test::Org(list) => p.organizations.iter().any(|o| list.contains(o)),
            Test::Ou(list) => p.organizational_units.iter().any(|o| list.contains(o)),
            Test::Issuer(list) => list.contains(&p.issuer),
            Test::Fingerprint(list) => list.contains(&p.fingerprint_sha256),
            Test::Group(ids) => ids.iter().any(|g| groups.get(*g).is_some_and(|c| c.matches(f, groups))),
            Test::Route(list) => f.route.is_some_and(|r| list.iter().any(|l| l == r)),
            Test::Host(pats) => f.host.is_some_and(|h| pats.iter().any(|pat| pat.matches(h))),
            Test::Method(list) => list.contains(f.method),
            Test::Path(globs) => globs.iter().any(|g| g.matches(f.path)),
            Test::HeaderEq(list) => list
                .iter()
                .all(|(n, v)| f.headers.get_all(n).iter().any(|have| have == v)),
            Test::HeaderPresent(list) => list.iter().all(|n| f.headers.contains_key(n)),
            Test::SourceCidr(list) => list.iter().any(|c| c.contains(f.source_ip)),
            Test::UserSub(list) => f.user.is_some_and(|u| list.contains(&u.sub)),
            Test::UserEmail(list) => f
                .user
                .and_then(|u| u.email.as_deref())
                .is_some_and(|e| email_matches(list, e)),
            Test::UserGroups(list) => f.user.is_some_and(|u| u.groups.iter().any(|g| list.contains(g))),
            Test::UserMfa(want) => f.user.is_some_and(|u| u.mfa() == *want),
            Test::All(conds) => conds.iter().all(|c| c.matches(f, groups)),
            Test::Any(conds) => conds.iter().any(|c| c.matches(f, groups)),
            Test::Not(c) => !c.matches(f, groups),
        }
    }
}

fn email_matches(list: &[String], e: &str) -> bool {
    list.iter().any(|want| match want.strip_prefix('@') {
        Some(domain) => e.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain)),
        None => want.eq_ignore_ascii_case(e),
    })
}

impl Cond {
    pub(crate) fn matches(&self, f: &RequestFacts<'_>, groups: &[Cond]) -> bool {
        self.tests.iter().all(|t| t.matches(f, groups))
    }

    /// Three-valued match on the principal alone: `Some(b)` when the certificate decides it
    /// whatever the request, `None` when it depends on the request. `f.peer` is the identity;
    /// its request fields are ignored.
    pub(crate) fn principal_match(&self, f: &RequestFacts<'_>, groups: &[Cond]) -> Option<bool> {
        and3(self.tests.iter().map(|t| t.principal_match(f, groups)))
    }
}

fn and3(it: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for v in it {
        match v {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown { None } else { Some(true) }
}

fn or3(it: impl Iterator<Item = Option<bool>>) -> Option<bool> {
    let mut unknown = false;
    for v in it {
        match v {
            Some(true) => return Some(true),
            None => unknown = true,
            Some(false) => {}
        }
    }
    if unknown { None } else { Some(false) }
}

impl Test {
    fn principal_match(&self, f: &RequestFacts<'_>, groups: &[Cond]) -> Option<bool> {
        match self {
            Test::Route(_)
            | Test::Host(_)
            | Test::Method(_)
            | Test::Path(_)
            | Test::HeaderEq(_)
            | Test::HeaderPresent(_)
            | Test::SourceCidr(_)
            | Test::UserSub(_)
            | Test::UserEmail(_)
            | Test::UserGroups(_)
            | Test::UserMfa(_) => None,
            Test::All(conds) => and3(conds.iter().map(|c| c.principal_match(f, groups))),
            Test::Any(conds) => or3(conds.iter().map(|c| c.principal_match(f, groups))),
            Test::Not(c) => c.principal_match(f, groups).map(|b| !b),
            // Groups hold principal conditions only.
            Test::Group(_)
            | Test::Spiffe(_)
            | Test::TrustDomain(_)
            | Test::Cn(_)
            | Test::Dns(_)
            | Test::Email(_)
            | Test::Org(_)
            | Test::Ou(_)
            | Test::Issuer(_)
            | Test::Fingerprint(_) => Some(self.matches(f, groups)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_match_by_prefix_and_handle_mapped_ipv4() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(!Cidr::parse("fd00::/8").unwrap().contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains("127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten/8").is_err());
    }

    #[test]
    fn name_patterns_match_exact_or_whole_labels_of_a_suffix() {
        let w = NamePattern::parse("*.Internal");
        assert!(w.matches("api.internal"));
        assert!(w.matches("a.b.INTERNAL"));
        assert!(!w.matches("internal"));
        assert!(!w.matches("evilinternal"));
        assert!(NamePattern::parse("api.internal").matches("API.internal"));
    }
}
