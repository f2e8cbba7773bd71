//! `[[upstream]]`, `[[route]]` and rate limits.

use super::*;

pub(super) fn upstream(c: &mut Collector<'_>, u: &Spanned<RawUpstream>) -> Option<UpstreamConfig> {
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
    super::tls_only(
        c,
        https,
        "an https:// upstream",
        &[
            ("ca", &r.ca),
            ("client_cert", &r.client_cert),
            ("client_key", &r.client_key),
        ],
    );
    let client_cert = super::client_pair(c, &r.client_cert, &r.client_key);
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
    let held_connections = match &r.held_connections {
        None => Some(DEFAULT_HELD_CONNECTIONS),
        Some(n) if (0..=MAX_HELD_CONNECTIONS).contains(n.get_ref()) => usize::try_from(*n.get_ref()).ok(),
        Some(n) => {
            c.push(
                n.span(),
                format!("held_connections must be between 0 and {MAX_HELD_CONNECTIONS}"),
            );
            None
        }
    };
    if r.name.get_ref().is_empty() {
        c.push(r.name.span(), "upstream name must not be empty");
    }
    Some(UpstreamConfig {
        name: r.name.get_ref().clone(),
        url: url?,
        connect_timeout: connect_timeout?,
        response_timeout: response_timeout?,
        pool_idle_timeout: pool_idle_timeout?,
        held_connections: held_connections?,
        protocol,
        ca: r.ca.as_ref().map(|p| non_empty_path(c, p)),
        client_cert,
    })
}

/// `held_connections` when the file does not say: as many idle connections as a pool keeps after
/// a burst of that many concurrent requests, so quiet client connections cannot pin more of a
/// worker-per-connection upstream (Apache prefork, thread-per-connection servers) than that.
pub(crate) const DEFAULT_HELD_CONNECTIONS: usize = 32;

/// Most `held_connections`: more is a typo.
const MAX_HELD_CONNECTIONS: i64 = 1_000_000;

pub(super) fn routes(
    c: &mut Collector<'_>,
    routes: &[Spanned<RawRoute>],
    upstreams: &[Spanned<RawUpstream>],
    upstreams_skipped: bool,
) -> Vec<RouteConfig> {
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
            // An upstream left out for a problem already reported may be the one named here.
            None if upstreams_skipped => None,
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

/// `pin_spki_sha256` (base64 of a 32-byte SHA-256) and `pin_fingerprints` (hex, `:` allowed).
pub(super) fn pins(c: &mut Collector<'_>, r: &RawRoute) -> Option<crate::config::Pins> {
    use base64::Engine;
    if r.pin_spki_sha256.is_none() && r.pin_fingerprints.is_none() {
        return None;
    }
    let mut pins = crate::config::Pins::default();
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

pub(super) fn rate(c: &mut Collector<'_>, r: &Spanned<RawRate>) -> Option<crate::ratelimit::Rate> {
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
