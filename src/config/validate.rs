//! Raw TOML structs → typed [`Config`]: every value checked, every problem reported with its
//! position, all problems at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use toml::Spanned;

use super::file::{
    RawAnomaly, RawAudit, RawConfig, RawHeaders, RawListener, RawPosture, RawProfile, RawRate, RawRoute, RawTls,
    RawUpstream, RawUserAuth,
};
use super::{
    AdminConfig, Config, CrlScope, CrlSource, ListenerConfig, LogConfig, LogFormat, PolicyConfig, ProxyProtocolConfig,
    RevocationMode, RouteConfig, TlsConfig, UpstreamConfig, UpstreamProtocol, UserMode,
};
use crate::audit::{AuditConfig, CheckpointConfig, Fsync, OnFull, RespondAfter, SinkConfig};
use crate::diag::{Collector, Diagnostics, parse_duration};
use crate::headers::{HeadersConfig, Underscores};
use crate::policy::path::PathParameters;
use crate::tls::profile::{ProfileConfig, Rule};

pub(super) fn validate(path: &Path, text: &str) -> Result<Config, Diagnostics> {
    let mut c = Collector::new(text);
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            c.push_toml(&e, &[]);
            return Err(finish_err(c, path));
        }
    };

    let listener = listener(&mut c, raw.listener.get_ref());
    let tls = tls(&mut c, raw.tls.get_ref());
    let admin = raw
        .admin
        .as_ref()
        .and_then(|a| addr(&mut c, &a.address).map(|address| AdminConfig { address }));
    let policy = match &raw.policy {
        Some(p) => {
            let p = p.get_ref();
            let reload_interval = p
                .reload_interval
                .as_ref()
                .map_or(Some(Duration::from_secs(1)), |d| duration(&mut c, d));
            reload_interval.map(|reload_interval| PolicyConfig {
                file: non_empty_path(&mut c, &p.file),
                reload_interval,
            })
        }
        None => {
            // Secure by default: no policy is never "allow everyone".
            c.push(
                0..0,
                "missing [policy] table: ztgate refuses to start without an explicit access \
                 policy (add `[policy]` with `file = \"config/policy.toml\"`)",
            );
            None
        }
    };
    let upstreams: Vec<UpstreamConfig> = raw.upstreams.iter().filter_map(|u| upstream(&mut c, u)).collect();
    let routes = routes(&mut c, &raw.routes, &raw.upstreams);
    if raw.upstreams.is_empty() {
        c.push(0..0, "no [[upstream]] defined: ztgate needs at least one to forward to");
    }
    if raw.routes.is_empty() {
        c.push(0..0, "no [[route]] defined: every request would get 404");
    }
    let drain_timeout = raw
        .shutdown
        .as_ref()
        .and_then(|s| s.drain_timeout.as_ref())
        .map_or(Some(Duration::from_secs(30)), |d| duration(&mut c, d));
    let log = raw.log.as_ref().map_or(
        Some(LogConfig {
            format: LogFormat::Pretty,
            level: "info".into(),
        }),
        |l| {
            let format = match l.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
                None | Some(("pretty", _)) => LogFormat::Pretty,
                Some(("json", _)) => LogFormat::Json,
                Some((other, span)) => {
                    c.push(
                        span,
                        format!("unknown log format `{other}` (expected \"pretty\" or \"json\")"),
                    );
                    LogFormat::Pretty
                }
            };
            let level = l.level.as_ref().map_or("info".to_string(), |l| l.get_ref().clone());
            Some(LogConfig { format, level })
        },
    );

    let headers = headers(&mut c, raw.headers.as_ref());
    let audit = raw.audit.as_ref().and_then(|a| audit(&mut c, a));
    let anomaly = raw.anomaly.as_ref().and_then(|a| anomaly(&mut c, a));
    let rate_limit = raw.rate_limit.as_ref().and_then(|r| rate(&mut c, r));
    let posture = raw.posture.as_ref().and_then(|p| posture(&mut c, p));
    let user_auth = raw.user_auth.as_ref().and_then(|u| user_auth(&mut c, u));
    let trusted_hop = raw.trusted_hop.as_ref().map(|t| {
        let t_ref = t.get_ref();
        for id in &t_ref.spiffe_ids {
            if crate::identity::SpiffeId::parse(id.get_ref()).is_err() {
                c.push(
                    id.span(),
                    format!("`{}` is not a SPIFFE ID (spiffe://trust-domain/path)", id.get_ref()),
                );
            }
        }
        let fingerprints: Vec<String> = t_ref
            .fingerprints
            .iter()
            .filter_map(|f| {
                let v = crate::identity::parse_fingerprint(f.get_ref());
                if v.is_none() {
                    c.push(f.span(), "a fingerprint is a SHA-256 in hex (64 digits, `:` allowed)");
                }
                v
            })
            .collect();
        if t_ref.spiffe_ids.is_empty() && fingerprints.is_empty() {
            c.push(
                t.span(),
                "[trusted_hop] lists no front proxy (spiffe_ids or fingerprints)",
            );
        }
        crate::config::TrustedHopConfig {
            spiffe_ids: t_ref.spiffe_ids.iter().map(|s| s.get_ref().clone()).collect(),
            fingerprints,
        }
    });
    if user_auth.is_none()
        && raw.user_auth.is_none()
        && let Some(r) = raw
            .routes
            .iter()
            .find(|r| r.get_ref().user.as_ref().is_some_and(|u| u.get_ref() != "off"))
    {
        c.push(
            r.get_ref().user.as_ref().map_or(0..0, Spanned::span),
            "this route asks for users but there is no [user_auth] table (jwks, issuer, audience)",
        );
    }
    if !c.is_empty() {
        return Err(finish_err(c, path));
    }
    match (listener, tls, policy, drain_timeout, log) {
        (Some(listener), Some(tls), Some(policy), Some(drain_timeout), Some(log)) => Ok(Config {
            source: path.to_path_buf(),
            listener,
            tls,
            admin,
            policy,
            upstreams,
            routes,
            rate_limit,
            audit,
            anomaly,
            posture,
            user_auth,
            trusted_hop,
            drain_timeout,
            log,
            headers,
        }),
        // Every `None` above pushed a problem, so this arm is unreachable in practice; it still
        // fails closed rather than panicking.
        _ => {
            let mut c = Collector::new(text);
            c.push(0..0, "invalid configuration");
            Err(finish_err(c, path))
        }
    }
}

/// `[headers]`; absent: the defaults (underscored names dropped, no extra strip list, no
/// `Forwarded`).
fn headers(c: &mut Collector<'_>, raw: Option<&RawHeaders>) -> HeadersConfig {
    let Some(raw) = raw else {
        return HeadersConfig::default();
    };
    let with_underscores = match raw.with_underscores.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("drop", _)) => Underscores::Drop,
        Some(("reject", _)) => Underscores::Reject,
        Some(("allow", _)) => Underscores::Allow,
        Some((other, span)) => {
            c.push(
                span,
                format!("unknown with_underscores mode `{other}` (expected \"drop\", \"reject\" or \"allow\")"),
            );
            Underscores::Drop
        }
    };
    let mut strip = Vec::new();
    for name in &raw.strip {
        match http::HeaderName::from_bytes(name.get_ref().to_ascii_lowercase().as_bytes()) {
            Ok(n) if crate::headers::is_protected(&n) => c.push(
                name.span(),
                format!(
                    "`{}` cannot be stripped: ztgate needs it to frame, route or identify the request",
                    name.get_ref()
                ),
            ),
            Ok(n) => strip.push(n),
            Err(_) => c.push(name.span(), format!("`{}` is not a valid header name", name.get_ref())),
        }
    }
    HeadersConfig {
        with_underscores,
        strip,
        forwarded: raw.forwarded.unwrap_or(false),
    }
}

fn finish_err(c: Collector<'_>, path: &Path) -> Diagnostics {
    match c.finish(path) {
        Err(d) => d,
        Ok(()) => Diagnostics {
            path: path.to_path_buf(),
            problems: Vec::new(),
        },
    }
}

fn listener(c: &mut Collector<'_>, l: &RawListener) -> Option<ListenerConfig> {
    let address = addr(c, &l.address);
    let dur = |c: &mut Collector<'_>, v: &Option<Spanned<String>>, default: u64| {
        v.as_ref()
            .map_or(Some(Duration::from_secs(default)), |d| duration(c, d))
    };
    let handshake_timeout = dur(c, &l.handshake_timeout, 10);
    let header_read_timeout = dur(c, &l.header_read_timeout, 10);
    let idle_timeout = dur(c, &l.idle_timeout, 60);
    let request_timeout = l
        .request_timeout
        .as_ref()
        .map_or(Some(None), |d| optional_duration(c, d));
    let max_connections = match &l.max_connections {
        None => Some(10_000),
        Some(n) if *n.get_ref() >= 1 => usize::try_from(*n.get_ref()).ok(),
        Some(n) => {
            c.push(n.span(), "max_connections must be at least 1");
            None
        }
    };
    let proxy_protocol = proxy_protocol(c, l);
    let max_connection_age = match &l.max_connection_age {
        None => Some(None),
        Some(d) => duration(c, d).map(Some),
    };
    let size = |c: &mut Collector<'_>, v: &Option<Spanned<String>>, default: u64| match v {
        None => Some(default),
        Some(s) => match parse_size(s.get_ref()) {
            Ok(n) => Some(n),
            Err(e) => {
                c.push(s.span(), e);
                None
            }
        },
    };
    let max_header_bytes = match size(c, &l.max_header_bytes, 64 * 1024) {
        // hyper needs room for at least one read buffer; 8 KiB is its floor.
        Some(n) if (8 * 1024..=16 * 1024 * 1024).contains(&n) => usize::try_from(n).ok(),
        Some(_) => {
            if let Some(s) = &l.max_header_bytes {
                c.push(s.span(), "max_header_bytes must be between 8KiB and 16MiB");
            }
            None
        }
        None => None,
    };
    let max_headers = match &l.max_headers {
        None => Some(100),
        Some(n) if (1..=10_000).contains(n.get_ref()) => usize::try_from(*n.get_ref()).ok(),
        Some(n) => {
            c.push(n.span(), "max_headers must be between 1 and 10000");
            None
        }
    };
    let max_request_body = match &l.max_request_body {
        Some(s) if s.get_ref() == "unlimited" => Some(None),
        v => size(c, v, 10 * 1024 * 1024).map(Some),
    };
    let max_connections_per_identity = match &l.max_connections_per_identity {
        None => Some(None),
        Some(n) if *n.get_ref() >= 1 => usize::try_from(*n.get_ref()).ok().map(Some),
        Some(n) => {
            c.push(n.span(), "max_connections_per_identity must be at least 1");
            None
        }
    };
    Some(ListenerConfig {
        max_header_bytes: max_header_bytes?,
        max_headers: max_headers?,
        max_request_body: max_request_body?,
        max_connections_per_identity: max_connections_per_identity?,
        max_connection_age: max_connection_age?,
        proxy_protocol: proxy_protocol?,
        address: address?,
        handshake_timeout: handshake_timeout?,
        header_read_timeout: header_read_timeout?,
        idle_timeout: idle_timeout?,
        request_timeout: request_timeout?,
        max_connections: max_connections?,
        require_sni_match: l.require_sni_match.unwrap_or(true),
    })
}

fn proxy_protocol(c: &mut Collector<'_>, l: &RawListener) -> Option<Option<ProxyProtocolConfig>> {
    let mut trusted = Vec::new();
    let mut ok = true;
    for cidr in l.proxy_protocol_trusted.iter().flat_map(|v| v.get_ref()) {
        match crate::policy::Cidr::parse(cidr.get_ref()) {
            Ok(parsed) => trusted.push(parsed),
            Err(e) => {
                c.push(cidr.span(), e);
                ok = false;
            }
        }
    }
    match (l.proxy_protocol.unwrap_or(false), &l.proxy_protocol_trusted) {
        (false, Some(list)) => {
            c.push(
                list.span(),
                "proxy_protocol_trusted is set but proxy_protocol is not enabled (set proxy_protocol = true)",
            );
            None
        }
        (false, None) => Some(None),
        (true, _) if ok => Some(Some(ProxyProtocolConfig { trusted })),
        (true, _) => None,
    }
}

fn tls(c: &mut Collector<'_>, t: &RawTls) -> Option<TlsConfig> {
    let crl_scope = match t.crl_scope.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("chain", _)) => CrlScope::Chain,
        Some(("leaf", _)) => CrlScope::Leaf,
        Some((other, span)) => {
            c.push(
                span,
                format!("unknown crl_scope `{other}` (expected \"chain\" or \"leaf\")"),
            );
            CrlScope::Chain
        }
    };
    let reload_interval = match &t.reload_interval {
        None => Some(Duration::from_secs(5)),
        Some(d) => duration(c, d),
    };
    let mut crls: Vec<PathBuf> = t.crls.iter().map(|p| non_empty_path(c, p)).collect();
    let mut sources = Vec::new();
    let mut sources_ok = true;
    for src in &t.crl_sources {
        let r = src.get_ref();
        let url = match r.url.get_ref().parse::<Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Some(u),
            _ => {
                c.push(
                    r.url.span(),
                    format!(
                        "crl_sources url `{}` must be http://host[:port]/path (CRLs are signed, so plain HTTP is their usual transport)",
                        r.url.get_ref()
                    ),
                );
                None
            }
        };
        let file = non_empty_path(c, &r.file);
        match url {
            Some(url) => {
                if !crls.contains(&file) {
                    crls.push(file.clone());
                }
                sources.push(CrlSource { url, file });
            }
            None => sources_ok = false,
        }
    }
    let crl_sources = sources_ok.then_some(sources);
    let crl_fetch_interval = match &t.crl_fetch_interval {
        None => Some(Duration::from_secs(3600)),
        Some(d) => duration(c, d),
    };
    let crl_discovery = revocation_mode(c, "crl_discovery", t.crl_discovery.as_ref());
    let ocsp = revocation_mode(c, "ocsp", t.ocsp.as_ref());
    let ocsp_responder = match &t.ocsp_responder {
        None => Some(None),
        Some(v) => match v.get_ref().parse::<Uri>() {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Some(Some(u)),
            _ => {
                c.push(
                    v.span(),
                    format!(
                        "ocsp_responder `{}` must be http://host[:port]/path (OCSP answers are signed, so plain HTTP is their usual transport)",
                        v.get_ref()
                    ),
                );
                None
            }
        },
    };
    if let (Some(v), Some(RevocationMode::Off)) = (&t.ocsp_responder, ocsp) {
        c.push(
            v.span(),
            "ocsp_responder is set but ocsp is \"off\" (set ocsp = \"fail-closed\" or \"fail-open\")",
        );
    }
    let revocation_timeout = match &t.revocation_timeout {
        None => Some(Duration::from_secs(3)),
        Some(d) => duration(c, d),
    };
    let profile = t
        .profile
        .as_ref()
        .map_or(Some(ProfileConfig::default()), |p| profile(c, p));
    Some(TlsConfig {
        profile: profile?,
        crl_discovery: crl_discovery?,
        ocsp: ocsp?,
        ocsp_responder: ocsp_responder?,
        revocation_timeout: revocation_timeout?,
        reload_interval: reload_interval?,
        cert: non_empty_path(c, &t.cert),
        key: non_empty_path(c, &t.key),
        client_ca: non_empty_path(c, &t.client_ca),
        crls,
        crl_sources: crl_sources?,
        crl_fetch_interval: crl_fetch_interval?,
        crl_scope,
    })
}

/// `[tls.profile]`: `max_chain_depth` within what WebPKI verifies, `relax` naming known rules
/// (a typo gets the closest name).
fn profile(c: &mut Collector<'_>, p: &RawProfile) -> Option<ProfileConfig> {
    let mut ok = true;
    let max_chain_depth = match &p.max_chain_depth {
        None => ProfileConfig::DEFAULT_MAX_CHAIN_DEPTH,
        Some(v) => match u8::try_from(*v.get_ref()) {
            Ok(n) if n <= ProfileConfig::MAX_CHAIN_DEPTH_LIMIT => n,
            _ => {
                c.push(
                    v.span(),
                    format!(
                        "max_chain_depth must be 0..={} (intermediate CAs between a client certificate and its trust anchor; rustls verifies no deeper chain)",
                        ProfileConfig::MAX_CHAIN_DEPTH_LIMIT
                    ),
                );
                ok = false;
                0
            }
        },
    };
    let mut relaxed = Vec::new();
    for name in &p.relax {
        match Rule::from_name(name.get_ref()) {
            Some(rule) if rule.relaxable() => relaxed.push(rule),
            Some(Rule::ChainDepth) => {
                c.push(name.span(), "`chain-depth` is not relaxed: set max_chain_depth instead");
                ok = false;
            }
            Some(rule) => {
                let why = if rule == Rule::EmailConstraint {
                    "ztgate evaluates email name constraints in rustls' place, and relaxing would ignore them"
                } else {
                    "a chain that cannot be rebuilt is always refused"
                };
                c.push(name.span(), format!("`{}` cannot be relaxed: {why}", rule.name()));
                ok = false;
            }
            None => {
                let names: Vec<&str> = Rule::ALL.iter().filter(|r| r.relaxable()).map(|r| r.name()).collect();
                let hint = match crate::diag::closest(name.get_ref(), &names) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => format!("known rules: {}", names.join(", ")),
                };
                c.push(
                    name.span(),
                    format!("unknown profile rule `{}` ({hint})", name.get_ref()),
                );
                ok = false;
            }
        }
    }
    ok.then(|| ProfileConfig {
        max_chain_depth,
        relaxed: relaxed.into_iter().collect(),
    })
}

fn revocation_mode(c: &mut Collector<'_>, key: &str, v: Option<&Spanned<String>>) -> Option<RevocationMode> {
    match v.map(|s| (s.get_ref().as_str(), s.span())) {
        None | Some(("off", _)) => Some(RevocationMode::Off),
        Some(("fail-closed", _)) => Some(RevocationMode::FailClosed),
        Some(("fail-open", _)) => Some(RevocationMode::FailOpen),
        Some((other, span)) => {
            c.push(
                span,
                format!("unknown {key} `{other}` (expected \"off\", \"fail-closed\" or \"fail-open\")"),
            );
            None
        }
    }
}

fn upstream(c: &mut Collector<'_>, u: &Spanned<RawUpstream>) -> Option<UpstreamConfig> {
    let r = u.get_ref();
    let url = match r.url.get_ref().parse::<Uri>() {
        Ok(url) => {
            let scheme_ok = matches!(url.scheme_str(), Some("http" | "https"));
            let bare = url.path_and_query().is_none_or(|p| p.as_str() == "/");
            if !scheme_ok || url.authority().is_none() {
                c.push(
                    r.url.span(),
                    format!(
                        "upstream url `{}` must be http://host:port or https://host:port",
                        r.url.get_ref()
                    ),
                );
                None
            } else if !bare {
                c.push(
                    r.url.span(),
                    format!(
                        "upstream url `{}` must not have a path: routes forward the request's own path",
                        r.url.get_ref()
                    ),
                );
                None
            } else {
                Some(url)
            }
        }
        Err(e) => {
            c.push(r.url.span(), format!("invalid upstream url `{}`: {e}", r.url.get_ref()));
            None
        }
    };
    let https = url.as_ref().is_some_and(|u| u.scheme_str() == Some("https"));
    let protocol = match r.protocol.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
        None | Some(("http1", _)) => UpstreamProtocol::Http1,
        Some(("http2", _)) => UpstreamProtocol::Http2,
        Some((other, span)) => {
            c.push(
                span,
                format!("unknown upstream protocol `{other}` (expected \"http1\" or \"http2\")"),
            );
            UpstreamProtocol::Http1
        }
    };
    for (field, value) in [
        ("ca", &r.ca),
        ("client_cert", &r.client_cert),
        ("client_key", &r.client_key),
    ] {
        if let (Some(v), false) = (value, https) {
            c.push(v.span(), format!("`{field}` only applies to an https:// upstream"));
        }
    }
    let client_cert = match (&r.client_cert, &r.client_key) {
        (Some(cert), Some(key)) => Some((non_empty_path(c, cert), non_empty_path(c, key))),
        (None, None) => None,
        (Some(v), None) | (None, Some(v)) => {
            c.push(v.span(), "`client_cert` and `client_key` must be set together");
            None
        }
    };
    let connect_timeout = r
        .connect_timeout
        .as_ref()
        .map_or(Some(Duration::from_secs(2)), |d| duration(c, d));
    let response_timeout = r
        .response_timeout
        .as_ref()
        .map_or(Some(Duration::from_secs(30)), |d| duration(c, d));
    // Below Node's (5 s), uvicorn's (5 s) and Apache's (5 s) keep-alive timeouts.
    let pool_idle_timeout = r
        .pool_idle_timeout
        .as_ref()
        .map_or(Some(Duration::from_secs(4)), |d| duration(c, d));
    if r.name.get_ref().is_empty() {
        c.push(r.name.span(), "upstream name must not be empty");
    }
    Some(UpstreamConfig {
        name: r.name.get_ref().clone(),
        url: url?,
        connect_timeout: connect_timeout?,
        response_timeout: response_timeout?,
        pool_idle_timeout: pool_idle_timeout?,
        protocol,
        ca: r.ca.as_ref().map(|p| non_empty_path(c, p)),
        client_cert,
    })
}

fn routes(c: &mut Collector<'_>, routes: &[Spanned<RawRoute>], upstreams: &[Spanned<RawUpstream>]) -> Vec<RouteConfig> {
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, u) in upstreams.iter().enumerate() {
        let name = u.get_ref().name.get_ref().as_str();
        if by_name.insert(name, i).is_some() {
            c.push(u.get_ref().name.span(), format!("duplicate upstream name `{name}`"));
        }
    }
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    for r in routes {
        let r = r.get_ref();
        let name = r.name.get_ref();
        if seen.insert(name.clone(), ()).is_some() {
            c.push(r.name.span(), format!("duplicate route name `{name}`"));
        }
        let upstream = match by_name.get(r.upstream.get_ref().as_str()) {
            Some(i) => Some(*i),
            None => {
                let known: Vec<&str> = by_name.keys().copied().collect();
                c.push(
                    r.upstream.span(),
                    format!(
                        "route `{name}` names unknown upstream `{}` (defined: {})",
                        r.upstream.get_ref(),
                        known.join(", ")
                    ),
                );
                None
            }
        };
        let path_prefix = match &r.path_prefix {
            None => "/".to_string(),
            Some(p) if p.get_ref().starts_with('/') && !p.get_ref().contains(['?', '#', '*']) => {
                let p = p.get_ref();
                // "/api/" and "/api" mean the same segment-aware prefix.
                if p.len() > 1 {
                    p.trim_end_matches('/').to_string()
                } else {
                    p.clone()
                }
            }
            Some(p) => {
                c.push(
                    p.span(),
                    format!(
                        "path_prefix `{}` must start with `/` and contain no `?`, `#` or `*`",
                        p.get_ref()
                    ),
                );
                "/".to_string()
            }
        };
        // Requests are routed by their canonical host: lowercase, no trailing dot.
        let host = r
            .host
            .as_ref()
            .map(|h| h.get_ref().trim_end_matches('.').to_ascii_lowercase());
        let rate_limit = r.rate_limit.as_ref().and_then(|l| rate(c, l));
        if let Some(upstream) = upstream {
            let pins = pins(c, r);
            let user = match r.user.as_ref().map(|u| (u.get_ref().as_str(), u.span())) {
                None | Some(("off", _)) => UserMode::Off,
                Some(("optional", _)) => UserMode::Optional,
                Some(("required", _)) => UserMode::Required,
                Some((other, span)) => {
                    c.push(
                        span,
                        format!("unknown user mode `{other}` (expected \"off\", \"optional\" or \"required\")"),
                    );
                    UserMode::Off
                }
            };
            let request_timeout = r.request_timeout.as_ref().map(|d| optional_duration(c, d).flatten());
            let path_parameters = match r.path_parameters.as_ref().map(|p| (p.get_ref().as_str(), p.span())) {
                None | Some(("refuse", _)) => PathParameters::Refuse,
                Some(("allow", _)) => PathParameters::Allow,
                Some((other, span)) => {
                    c.push(
                        span,
                        format!("unknown path_parameters mode `{other}` (expected \"refuse\" or \"allow\")"),
                    );
                    PathParameters::Refuse
                }
            };
            let buffer_request_body = match &r.buffer_request_body {
                None => None,
                Some(v) => match parse_size(v.get_ref()) {
                    Ok(n) if n <= 64 * 1024 * 1024 => Some(n),
                    Ok(_) => {
                        c.push(
                            v.span(),
                            "buffer_request_body must be at most 64MiB (it is held in memory per request)",
                        );
                        None
                    }
                    Err(e) => {
                        c.push(v.span(), e);
                        None
                    }
                },
            };
            out.push(RouteConfig {
                name: name.clone(),
                host,
                path_prefix,
                upstream,
                rate_limit,
                pins,
                user,
                request_timeout,
                path_parameters,
                buffer_request_body,
            });
        }
    }
    out
}

/// Algorithm names, asymmetric only; `default` when the key is absent.
fn algorithms(
    c: &mut Collector<'_>,
    v: &Option<Vec<Spanned<String>>>,
    default: &[&str],
) -> Vec<jsonwebtoken::Algorithm> {
    let names: Vec<(String, std::ops::Range<usize>)> = match v {
        Some(list) => list.iter().map(|a| (a.get_ref().clone(), a.span())).collect(),
        None => default.iter().map(|a| (a.to_string(), 0..0)).collect(),
    };
    let mut out = Vec::new();
    for (name, span) in names {
        match crate::jwt::parse_algorithm(&name) {
            Some(a) => out.push(a),
            None => c.push(
                span,
                format!(
                    "algorithm `{name}` is not accepted (asymmetric only: ES256, ES384, EdDSA, RS256/384/512, PS256/384/512; never none or HS*)"
                ),
            ),
        }
    }
    if out.is_empty() && v.is_some() {
        c.push(0..0, "algorithms must list at least one algorithm");
    }
    out
}

fn posture(c: &mut Collector<'_>, p: &Spanned<RawPosture>) -> Option<crate::posture::PostureConfig> {
    use crate::posture::{DeviceIdSource, PostureConfig, ProviderConfig, assertion, service};
    let span = p.span();
    let p = p.get_ref();
    let device_id = match &p.device_id {
        None => Some(DeviceIdSource::Fingerprint),
        Some(d) => {
            let v = DeviceIdSource::parse(d.get_ref());
            if v.is_none() {
                c.push(
                    d.span(),
                    format!(
                        "unknown device_id `{}` (expected \"fingerprint\", \"serial\", \"uri_san\" or \"dns_san\")",
                        d.get_ref()
                    ),
                );
            }
            v
        }
    };
    // Keys that belong to another provider are refused, not ignored: a `timeout` on an
    // inventory would look like it does something.
    let keys: [(&str, bool, &[&str]); 12] = [
        ("file", p.file.is_some(), &["inventory"]),
        (
            "reload_interval",
            p.reload_interval.is_some(),
            &["inventory", "assertion"],
        ),
        ("url", p.url.is_some(), &["service"]),
        ("timeout", p.timeout.is_some(), &["service"]),
        ("cache_ttl", p.cache_ttl.is_some(), &["service"]),
        ("stale_if_error", p.stale_if_error.is_some(), &["service"]),
        ("max_entries", p.max_entries.is_some(), &["service"]),
        ("ca", p.ca.is_some(), &["service"]),
        ("header", p.header.is_some(), &["assertion"]),
        ("jwks", p.jwks.is_some(), &["assertion"]),
        ("issuer", p.issuer.is_some(), &["assertion"]),
        ("audience", p.audience.is_some(), &["assertion"]),
    ];
    let provider = p.provider.get_ref().as_str();
    if !["inventory", "service", "assertion"].contains(&provider) {
        c.push(
            p.provider.span(),
            format!("unknown posture provider `{provider}` (expected \"inventory\", \"service\" or \"assertion\")"),
        );
        return None;
    }
    for (key, set, for_providers) in keys {
        if set && !for_providers.contains(&provider) {
            c.push(
                span.clone(),
                format!("`{key}` does not apply to the {provider} posture provider"),
            );
        }
    }
    if p.algorithms.is_some() && provider != "assertion" {
        c.push(
            span.clone(),
            format!("`algorithms` does not apply to the {provider} posture provider"),
        );
    }
    let need = |c: &mut Collector<'_>, v: &Option<Spanned<String>>, key: &str| -> Option<Spanned<String>> {
        if v.is_none() {
            c.push(span.clone(), format!("the {provider} posture provider needs `{key}`"));
        }
        v.clone()
    };
    let dur = |c: &mut Collector<'_>, v: &Option<Spanned<String>>, default: Duration| {
        v.as_ref().map_or(Some(default), |d| duration(c, d))
    };
    let provider = match provider {
        "inventory" => {
            let file = need(c, &p.file, "file")?;
            ProviderConfig::Inventory {
                file: non_empty_path(c, &file),
                reload_interval: dur(c, &p.reload_interval, Duration::from_secs(5))?,
            }
        }
        "service" => {
            let url = need(c, &p.url, "url")?;
            let u = url.get_ref();
            let scheme_ok = u.starts_with("http://") || (u.starts_with("https://") && p.ca.is_some());
            if !scheme_ok || !u.contains("{device}") || u.replace("{device}", "x").parse::<http::Uri>().is_err() {
                c.push(
                    url.span(),
                    format!(
                        "posture service url `{u}` must be http://... (or https://... with `ca`) and contain `{{device}}`"
                    ),
                );
            }
            let max_entries = match &p.max_entries {
                None => 100_000,
                Some(n) if *n.get_ref() > 0 => *n.get_ref() as usize,
                Some(n) => {
                    c.push(n.span(), "max_entries must be at least 1");
                    1
                }
            };
            ProviderConfig::Service(service::ServiceConfig {
                url: u.clone(),
                timeout: dur(c, &p.timeout, Duration::from_millis(500))?,
                cache_ttl: dur(c, &p.cache_ttl, Duration::from_secs(60))?,
                stale_if_error: p
                    .stale_if_error
                    .as_ref()
                    .map_or(Some(Duration::ZERO), |d| duration(c, d))?,
                max_entries,
                ca: p.ca.as_ref().map(|ca| non_empty_path(c, ca)),
            })
        }
        _ => {
            let jwks = need(c, &p.jwks, "jwks")?;
            let header = p
                .header
                .as_ref()
                .map_or(Some(http::HeaderName::from_static("x-device-assertion")), |h| {
                    let name = http::HeaderName::from_bytes(h.get_ref().to_ascii_lowercase().as_bytes()).ok();
                    if name.is_none() {
                        c.push(h.span(), format!("invalid header name `{}`", h.get_ref()));
                    }
                    name
                })?;
            if header.as_str().starts_with(crate::headers::ZTGATE_PREFIX)
                || header == crate::headers::X_FORWARDED_CLIENT_CERT
                || header == http::header::AUTHORIZATION
            {
                c.push(
                    span.clone(),
                    format!("the assertion header cannot be `{header}` (ztgate strips or uses it)"),
                );
            }
            ProviderConfig::Assertion(assertion::AssertionConfig {
                header,
                jwks: non_empty_path(c, &jwks),
                issuer: p.issuer.as_ref().map(|s| s.get_ref().clone()),
                audience: p.audience.as_ref().map(|s| s.get_ref().clone()),
                algorithms: algorithms(c, &p.algorithms, &["ES256", "EdDSA"]),
            })
        }
    };
    Some(PostureConfig {
        device_id: device_id?,
        provider,
    })
}

fn user_auth(c: &mut Collector<'_>, u: &Spanned<RawUserAuth>) -> Option<crate::user::UserAuthConfig> {
    let u = u.get_ref();
    for v in [&u.issuer, &u.audience] {
        if v.get_ref().trim().is_empty() {
            c.push(v.span(), "must not be empty");
        }
    }
    Some(crate::user::UserAuthConfig {
        jwks: non_empty_path(c, &u.jwks),
        issuer: u.issuer.get_ref().clone(),
        audience: u.audience.get_ref().clone(),
        algorithms: algorithms(c, &u.algorithms, &["ES256", "EdDSA", "RS256"]),
        require_binding: u.require_binding.unwrap_or(false),
    })
}

fn addr(c: &mut Collector<'_>, v: &Spanned<String>) -> Option<SocketAddr> {
    match v.get_ref().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            c.push(
                v.span(),
                format!(
                    "invalid address `{}`: expected IP:PORT, e.g. 127.0.0.1:8443",
                    v.get_ref()
                ),
            );
            None
        }
    }
}

fn duration(c: &mut Collector<'_>, v: &Spanned<String>) -> Option<Duration> {
    match parse_duration(v.get_ref()) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            c.push(v.span(), "duration must be greater than zero");
            None
        }
        Err(e) => {
            c.push(v.span(), e);
            None
        }
    }
}

/// A duration or `"off"` (`Some(None)`); `None` after reporting a bad value.
fn optional_duration(c: &mut Collector<'_>, v: &Spanned<String>) -> Option<Option<Duration>> {
    if v.get_ref() == "off" {
        Some(None)
    } else {
        duration(c, v).map(Some)
    }
}

fn non_empty_path(c: &mut Collector<'_>, v: &Spanned<String>) -> PathBuf {
    if v.get_ref().trim().is_empty() {
        c.push(v.span(), "path must not be empty");
    }
    PathBuf::from(v.get_ref())
}

fn audit(c: &mut Collector<'_>, a: &RawAudit) -> Option<AuditConfig> {
    let choice = |c: &mut Collector<'_>, v: &Option<Spanned<String>>, allowed: &[&str], default: &str| -> String {
        match v {
            None => default.to_string(),
            Some(s) if allowed.contains(&s.get_ref().as_str()) => s.get_ref().clone(),
            Some(s) => {
                let quoted: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
                c.push(
                    s.span(),
                    format!("unknown value `{}` (expected {})", s.get_ref(), quoted.join(" or ")),
                );
                default.to_string()
            }
        }
    };
    let positive = |c: &mut Collector<'_>, v: &Option<Spanned<i64>>, default: usize, what: &str| match v {
        None => default,
        Some(n) => usize::try_from(*n.get_ref())
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                c.push(n.span(), format!("{what} must be a positive number"));
                default
            }),
    };
    let sink = choice(c, &a.sink, &["file", "stdout"], "file");
    let max_bytes = match &a.max_size {
        None => 100 * 1024 * 1024,
        Some(s) => parse_size(s.get_ref()).unwrap_or_else(|e| {
            c.push(s.span(), e);
            0
        }),
    };
    let keep = match &a.keep {
        None => 10,
        Some(n) => usize::try_from(*n.get_ref()).unwrap_or_else(|_| {
            c.push(n.span(), "keep must be 0 or more");
            0
        }),
    };
    let sink = match (sink.as_str(), &a.file) {
        ("stdout", None) => SinkConfig::Stdout,
        ("stdout", Some(f)) => {
            c.push(f.span(), "`file` conflicts with sink = \"stdout\"");
            SinkConfig::Stdout
        }
        (_, Some(f)) => SinkConfig::File {
            path: non_empty_path(c, f),
            max_bytes,
            keep,
        },
        (_, None) => {
            c.push(
                0..0,
                "[audit] with sink = \"file\" needs `file = \"...\"` (or sink = \"stdout\")",
            );
            return None;
        }
    };
    let fsync = match choice(c, &a.fsync, &["batch", "interval"], "batch").as_str() {
        "interval" => Fsync::Interval(
            a.fsync_interval
                .as_ref()
                .map_or(Some(Duration::from_secs(1)), |d| duration(c, d))?,
        ),
        _ => Fsync::Batch,
    };
    let on_full = match choice(c, &a.on_full, &["block", "drop"], "block").as_str() {
        "drop" => OnFull::Drop,
        _ => OnFull::Block,
    };
    let respond_after = match choice(c, &a.respond_after, &["queued", "durable"], "queued").as_str() {
        "durable" => RespondAfter::Durable,
        _ => RespondAfter::Queued,
    };
    if let Some(r) = a
        .respond_after
        .as_ref()
        .filter(|_| respond_after == RespondAfter::Durable)
    {
        // A response that waits for its record contradicts both dropping it and deferring its fsync.
        if on_full == OnFull::Drop {
            c.push(
                r.span(),
                "respond_after = \"durable\" conflicts with on_full = \"drop\"",
            );
        }
        if matches!(fsync, Fsync::Interval(_)) {
            c.push(
                r.span(),
                "respond_after = \"durable\" conflicts with fsync = \"interval\"",
            );
        }
    }
    let queue = positive(c, &a.queue, 8192, "queue");
    let every = positive(c, &a.checkpoint_every, 1000, "checkpoint_every") as u64;
    let interval = a
        .checkpoint_interval
        .as_ref()
        .map_or(Some(Duration::from_secs(60)), |d| duration(c, d))?;
    let checkpoint = match &a.signing_key {
        Some(k) => Some(CheckpointConfig {
            key: non_empty_path(c, k),
            every,
            interval,
        }),
        None => {
            for span in [
                a.checkpoint_every.as_ref().map(Spanned::span),
                a.checkpoint_interval.as_ref().map(Spanned::span),
            ]
            .into_iter()
            .flatten()
            {
                c.push(span, "checkpoints need `signing_key = \"...\"` in [audit]");
            }
            None
        }
    };
    Some(AuditConfig {
        sink,
        fsync,
        on_full,
        respond_after,
        queue,
        checkpoint,
    })
}

/// `1048576`, `512KiB`, `100MiB`, `1GiB`.
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size `{s}` must start with a number, e.g. `100MiB`"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` in `{s}` (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(mult)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("size `{s}` must be positive and not overflow"))
}

fn anomaly(c: &mut Collector<'_>, a: &RawAnomaly) -> Option<crate::anomaly::AnomalyConfig> {
    if a.enabled == Some(false) {
        return None;
    }
    let d = crate::anomaly::AnomalyConfig::default();
    let count = |c: &mut Collector<'_>, v: &Option<Spanned<i64>>, default: u64, what: &str| match v {
        None => default,
        Some(n) => u64::try_from(*n.get_ref()).ok().filter(|n| *n > 0).unwrap_or_else(|| {
            c.push(n.span(), format!("{what} must be a positive number"));
            default
        }),
    };
    let rate_factor = match &a.rate_factor {
        Some(f) if *f.get_ref() <= 1.0 => {
            c.push(f.span(), "rate_factor must be greater than 1");
            d.rate_factor
        }
        Some(f) => *f.get_ref(),
        None => d.rate_factor,
    };
    let dur = |c: &mut Collector<'_>, v: &Option<Spanned<String>>, default: Duration| {
        v.as_ref().map_or(Some(default), |s| duration(c, s)).unwrap_or(default)
    };
    Some(crate::anomaly::AnomalyConfig {
        rate_factor,
        rate_min: u32::try_from(count(c, &a.rate_min, u64::from(d.rate_min), "rate_min")).unwrap_or(u32::MAX),
        warmup: dur(c, &a.warmup, d.warmup),
        deny_burst: u32::try_from(count(c, &a.deny_burst, u64::from(d.deny_burst), "deny_burst")).unwrap_or(u32::MAX),
        learn_requests: count(c, &a.learn_requests, d.learn_requests, "learn_requests"),
        max_sources: usize::try_from(count(c, &a.max_sources, d.max_sources as u64, "max_sources"))
            .unwrap_or(usize::MAX),
        cooldown: dur(c, &a.cooldown, d.cooldown),
        max_identities: usize::try_from(count(c, &a.max_identities, d.max_identities as u64, "max_identities"))
            .unwrap_or(usize::MAX),
        tighten: match (&a.tighten_rate, &a.tighten_for) {
            (Some(r), hold) => rate(c, r).map(|r| (r, dur(c, hold, Duration::from_secs(300)))),
            (None, Some(f)) => {
                c.push(
                    f.span(),
                    "tighten_for needs tighten_rate = { requests_per_second = N, burst = M }",
                );
                None
            }
            (None, None) => None,
        },
    })
}

fn rate(c: &mut Collector<'_>, r: &Spanned<RawRate>) -> Option<crate::ratelimit::Rate> {
    use std::num::NonZeroU32;
    let raw = r.get_ref();
    let positive = |v: i64| u32::try_from(v).ok().and_then(NonZeroU32::new);
    let per_second = positive(raw.requests_per_second);
    // A burst defaults to one second's worth.
    let burst = raw.burst.map_or(per_second, positive);
    match (per_second, burst) {
        (Some(per_second), Some(burst)) => Some(crate::ratelimit::Rate { per_second, burst }),
        _ => {
            c.push(
                r.span(),
                "rate_limit needs requests_per_second (and burst, if set) between 1 and 4294967295",
            );
            None
        }
    }
}

/// `pin_spki_sha256` (base64 of a 32-byte SHA-256) and `pin_fingerprints` (hex, `:` allowed).
fn pins(c: &mut Collector<'_>, r: &RawRoute) -> Option<super::Pins> {
    use base64::Engine;
    if r.pin_spki_sha256.is_none() && r.pin_fingerprints.is_none() {
        return None;
    }
    let mut pins = super::Pins::default();
    for p in r.pin_spki_sha256.iter().flatten() {
        match base64::engine::general_purpose::STANDARD.decode(p.get_ref().trim()) {
            Ok(bytes) if bytes.len() == 32 => pins.spki_sha256.push(p.get_ref().trim().to_string()),
            _ => c.push(
                p.span(),
                "pin_spki_sha256 entries are base64 SHA-256 hashes (44 characters), e.g. from `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64`",
            ),
        }
    }
    for p in r.pin_fingerprints.iter().flatten() {
        if let Some(hex) = crate::identity::parse_fingerprint(p.get_ref()) {
            pins.fingerprints.push(hex);
        } else {
            c.push(
                p.span(),
                "pin_fingerprints entries are SHA-256 certificate fingerprints (64 hex digits, `:` allowed)",
            );
        }
    }
    if pins.spki_sha256.is_empty() && pins.fingerprints.is_empty() {
        c.push(
            r.name.span(),
            "route pins are empty: no client could use this route (remove the pin keys or add a pin)",
        );
    }
    Some(pins)
}
