//! Where a key set comes from: `jwks`, `jwks_url` or `oidc_discovery`, in `[user_auth]` and the
//! assertion posture provider.

use super::*;

/// The keys that say where a key set comes from, in `[user_auth]` and the assertion provider.
pub(super) struct JwksKeys<'a> {
    pub(super) jwks: &'a Option<Spanned<String>>,
    pub(super) url: &'a Option<Spanned<String>>,
    pub(super) discovery: &'a Option<Spanned<bool>>,
    pub(super) ca: &'a Option<Spanned<String>>,
    pub(super) refresh_min: &'a Option<Spanned<String>>,
    pub(super) refresh_max: &'a Option<Spanned<String>>,
    pub(super) timeout: &'a Option<Spanned<String>>,
}

/// Defaults of the fetched key set's options (docs/configuration.md).
const JWKS_REFRESH_MIN: Duration = Duration::from_secs(30);
const JWKS_REFRESH_MAX: Duration = Duration::from_secs(3600);
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Exactly one of `jwks`, `jwks_url`, `oidc_discovery = true`, with the options of a fetched
/// set only where the set is fetched. `issuer` is the table's, which discovery starts from.
pub(super) fn jwks_source(
    c: &mut Collector<'_>,
    table: std::ops::Range<usize>,
    k: &JwksKeys<'_>,
    issuer: Option<&Spanned<String>>,
) -> Option<crate::jwt::JwksSource> {
    use crate::jwt::{JwksSource, RemoteJwksConfig, RemoteLocation};
    let discovery = k.discovery.as_ref().filter(|d| *d.get_ref());
    let chosen: Vec<(&str, std::ops::Range<usize>)> = [
        ("jwks", k.jwks.as_ref().map(Spanned::span)),
        ("jwks_url", k.url.as_ref().map(Spanned::span)),
        ("oidc_discovery", discovery.map(Spanned::span)),
    ]
    .into_iter()
    .filter_map(|(key, span)| Some((key, span?)))
    .collect();
    // A conflict is reported, and the rest is still checked so that `check` lists every problem.
    let conflict = match chosen.as_slice() {
        [] => {
            c.push(
                table,
                "no key set: set one of `jwks` (a file), `jwks_url` or `oidc_discovery = true`",
            );
            return None;
        }
        [_] => false,
        [(first, _), (second, span), ..] => {
            c.push(
                span.clone(),
                format!("`{second}` conflicts with `{first}`: set exactly one of `jwks`, `jwks_url`, `oidc_discovery = true`"),
            );
            true
        }
    };
    let options = [
        ("jwks_ca", k.ca.as_ref().map(Spanned::span)),
        ("jwks_refresh_min", k.refresh_min.as_ref().map(Spanned::span)),
        ("jwks_refresh_max", k.refresh_max.as_ref().map(Spanned::span)),
        ("jwks_timeout", k.timeout.as_ref().map(Spanned::span)),
    ];
    if let Some(file) = k.jwks {
        let path = non_empty_path(c, file);
        if !conflict {
            for (key, span) in options {
                if let Some(span) = span {
                    c.push(
                        span,
                        format!("`{key}` only applies to a fetched key set (`jwks_url` or `oidc_discovery`)"),
                    );
                }
            }
            return Some(JwksSource::File(path));
        }
    }
    let https = |s: &str| {
        s.parse::<http::Uri>()
            .ok()
            .filter(|u| u.scheme_str() == Some("https") && u.host().is_some_and(|h| !h.is_empty()))
    };
    let url = k.url.as_ref().and_then(|url| {
        let parsed = https(url.get_ref());
        if parsed.is_none() {
            c.push(
                url.span(),
                format!(
                    "jwks_url `{}` must be an https:// URL (plain http is refused: the keys decide who is let in)",
                    url.get_ref()
                ),
            );
        }
        parsed.map(RemoteLocation::Url)
    });
    let discovered = discovery.and_then(|_| match issuer {
        Some(i) if https(i.get_ref()).is_some() => Some(RemoteLocation::Discovery {
            issuer: i.get_ref().clone(),
        }),
        Some(i) => {
            c.push(
                i.span(),
                format!("oidc_discovery needs an https:// `issuer`, not `{}`", i.get_ref()),
            );
            None
        }
        None => {
            c.push(
                table.clone(),
                "oidc_discovery needs `issuer` (the discovery document is found from it)",
            );
            None
        }
    });
    let location = url.or(discovered);
    let ca = match k.ca {
        Some(ca) => Some(non_empty_path(c, ca)),
        None => {
            c.push(
                table,
                "a fetched key set needs `jwks_ca`: the PEM bundle of CAs that verify the IdP (for a public IdP, the system bundle, e.g. /etc/ssl/certs/ca-certificates.crt)",
            );
            None
        }
    };
    let dur = |c: &mut Collector<'_>, v: &Option<Spanned<String>>, default: Duration| {
        v.as_ref().map_or(Some(default), |d| duration(c, d))
    };
    let refresh_min = dur(c, k.refresh_min, JWKS_REFRESH_MIN);
    let refresh_max = dur(c, k.refresh_max, JWKS_REFRESH_MAX);
    let timeout = dur(c, k.timeout, JWKS_TIMEOUT);
    if let (Some(min), Some(max)) = (refresh_min, refresh_max)
        && min > max
    {
        let span = k
            .refresh_min
            .as_ref()
            .or(k.refresh_max.as_ref())
            .map_or(0..0, Spanned::span);
        c.push(
            span,
            format!("jwks_refresh_min ({min:?}) must not exceed jwks_refresh_max ({max:?})"),
        );
        return None;
    }
    if conflict {
        return None;
    }
    Some(JwksSource::Remote(RemoteJwksConfig {
        location: location?,
        ca: ca?,
        refresh_min: refresh_min?,
        refresh_max: refresh_max?,
        timeout: timeout?,
    }))
}
