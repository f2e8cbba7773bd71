//! `[posture]` and `[user_auth]`.

use super::jwks::{JwksKeys, jwks_source};
use super::*;

/// Algorithm names, asymmetric only; `default` when the key is absent.
pub(super) fn algorithms(
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

pub(super) fn posture(c: &mut Collector<'_>, p: &Spanned<RawPosture>) -> Option<crate::posture::PostureConfig> {
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
    let keys: [(&str, bool, &[&str]); 21] = [
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
        ("client_cert", p.client_cert.is_some(), &["service"]),
        ("client_key", p.client_key.is_some(), &["service"]),
        ("protocol", p.protocol.is_some(), &["service"]),
        ("header", p.header.is_some(), &["assertion"]),
        ("jwks", p.jwks.is_some(), &["assertion"]),
        ("jwks_url", p.jwks_url.is_some(), &["assertion"]),
        ("oidc_discovery", p.oidc_discovery.is_some(), &["assertion"]),
        ("jwks_ca", p.jwks_ca.is_some(), &["assertion"]),
        ("jwks_refresh_min", p.jwks_refresh_min.is_some(), &["assertion"]),
        ("jwks_refresh_max", p.jwks_refresh_max.is_some(), &["assertion"]),
        ("jwks_timeout", p.jwks_timeout.is_some(), &["assertion"]),
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
            // As for an upstream: ztgate's certificate only means something inside TLS, and a
            // certificate without its key (or the reverse) is a mistake, not half an mTLS setup.
            let https = u.starts_with("https://");
            super::tls_only(
                c,
                https,
                "an https:// posture service",
                &[("client_cert", &p.client_cert), ("client_key", &p.client_key)],
            );
            let client_cert = super::client_pair(c, &p.client_cert, &p.client_key);
            let protocol = match p.protocol.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
                None | Some(("auto", _)) => service::ServiceProtocol::Auto,
                Some(("http1", _)) => service::ServiceProtocol::Http1,
                Some(("http2", _)) => service::ServiceProtocol::Http2,
                Some((other, span)) => {
                    c.push(
                        span,
                        format!(
                            "unknown posture service protocol `{other}` (expected \"auto\", \"http1\" or \"http2\")"
                        ),
                    );
                    service::ServiceProtocol::Auto
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
                client_cert,
                protocol,
            })
        }
        _ => {
            let keys = JwksKeys {
                jwks: &p.jwks,
                url: &p.jwks_url,
                discovery: &p.oidc_discovery,
                ca: &p.jwks_ca,
                refresh_min: &p.jwks_refresh_min,
                refresh_max: &p.jwks_refresh_max,
                timeout: &p.jwks_timeout,
            };
            let jwks = jwks_source(c, span.clone(), &keys, p.issuer.as_ref());
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
                jwks: jwks?,
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

pub(super) fn user_auth(c: &mut Collector<'_>, u: &Spanned<RawUserAuth>) -> Option<crate::user::UserAuthConfig> {
    let span = u.span();
    let u = u.get_ref();
    for v in [&u.issuer, &u.audience] {
        if v.get_ref().trim().is_empty() {
            c.push(v.span(), "must not be empty");
        }
    }
    let keys = JwksKeys {
        jwks: &u.jwks,
        url: &u.jwks_url,
        discovery: &u.oidc_discovery,
        ca: &u.jwks_ca,
        refresh_min: &u.jwks_refresh_min,
        refresh_max: &u.jwks_refresh_max,
        timeout: &u.jwks_timeout,
    };
    let jwks = jwks_source(c, span, &keys, Some(&u.issuer));
    Some(crate::user::UserAuthConfig {
        jwks: jwks?,
        issuer: u.issuer.get_ref().clone(),
        audience: u.audience.get_ref().clone(),
        algorithms: algorithms(c, &u.algorithms, &["ES256", "EdDSA", "RS256"]),
        require_binding: u.require_binding.unwrap_or(false),
    })
}
