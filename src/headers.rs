//! Header names ztgate sets or strips, declared once as statics (no per-request allocation), and
//! RFC 9110 §7.6.1 hop-by-hop handling.

use http::header::{self, HeaderMap, HeaderName};

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub(crate) const X_ZTGATE_IDENTITY: HeaderName = HeaderName::from_static("x-ztgate-identity");
/// The authenticated user's `sub`, on routes with user authentication.
pub(crate) const X_ZTGATE_USER: HeaderName = HeaderName::from_static("x-ztgate-user");

/// Prefix of every identity header ztgate owns; client-sent ones are always removed.
pub(crate) const ZTGATE_PREFIX: &str = "x-ztgate-";

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether the request asks for a protocol upgrade (WebSocket and friends, HTTP/1.1 only).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether the client's `TE` offers `trailers` (RFC 9110 §10.1.4), the token gRPC needs.
pub(crate) fn te_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Removes hop-by-hop headers, including any the `Connection` header names. With `keep_upgrade`
/// the `Upgrade` header and a `Connection: upgrade` survive, so an upgrade can pass through.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most heads carry none of them: one look at the names present instead of a hashed removal
    // per hop-by-hop name (six lookups on the request and six on the response).
    if !keep_upgrade && !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // Names listed in Connection are hop-by-hop too (RFC 9110 §7.6.1). Collect them first: the
    // map cannot be changed while borrowed. Rare in practice, so the Vec usually stays empty.
    let mut named: Vec<HeaderName> = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        for token in v.to_str().unwrap_or("").split(',') {
            let token = token.trim();
            if token.is_empty() || (keep_upgrade && token.eq_ignore_ascii_case("upgrade")) {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.to_ascii_lowercase().as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, http::HeaderValue::from_static("upgrade"));
    }
}

/// What to do with a client header field whose name contains `_`. CGI, WSGI, PHP and Rack
/// upstreams map `-` and `_` to the same variable (`HTTP_X_ZTGATE_IDENTITY`), so
/// `X_Ztgate_Identity` would merge with the real `x-ztgate-identity`. Same choices as Envoy's
/// `headers_with_underscores_action`; nginx drops them by default too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Underscores {
    /// Remove the field and forward the rest (the default; counted).
    #[default]
    Drop,
    /// Refuse the request with 400.
    Reject,
    /// Forward it unchanged (only for upstreams that keep `-` and `_` apart).
    Allow,
}

/// `[headers]`: client-sent fields removed before judging and forwarding, and the optional
/// RFC 7239 `Forwarded` field.
#[derive(Debug, Clone, Default)]
pub struct HeadersConfig {
    pub with_underscores: Underscores,
    /// Extra names removed from every request, on top of [`DEFAULT_STRIP`].
    pub strip: Vec<HeaderName>,
    /// Set `Forwarded: for=…;proto=https;host=…` (RFC 7239) on forwarded requests.
    pub forwarded: bool,
}

/// Client-sent fields removed from every request by default: ztgate sets the real value, or
/// upstream frameworks trust them for the client's address, certificate or user, or to serve
/// another path or method than the one policy judged. docs/security.md lists why each is here.
pub(crate) const DEFAULT_STRIP: &[&str] = &[
    // Client address and the original request, as proxies report them.
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    // Client certificate, as TLS-terminating proxies pass it.
    "x-client-cert",
    "x-ssl-client-cert",
    "x-ssl-client-dn",
    "x-ssl-client-verify",
    "x-ssl-cert",
    "ssl-client-cert",
    // Authenticated user, as auth proxies pass it.
    "x-remote-user",
    "remote-user",
    "x-authenticated-user",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-auth-request-user",
    "x-auth-request-email",
    // Another path or method than the request line's (IIS/Symfony URL rewrite, method override).
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Why a client header field was removed (label of `ztgate_request_headers_removed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removed {
    /// `x-forwarded-client-cert` or `x-ztgate-*`: only ztgate sets them.
    Identity,
    /// On [`DEFAULT_STRIP`].
    Default,
    /// On `[headers] strip`.
    Configured,
    /// The name contains `_` ([`Underscores::Drop`]).
    Underscore,
}

impl Removed {
    pub(crate) const ALL: [Removed; 4] = [
        Removed::Identity,
        Removed::Default,
        Removed::Configured,
        Removed::Underscore,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Removed::Identity => "identity",
            Removed::Default => "default_list",
            Removed::Configured => "configured",
            Removed::Underscore => "underscore",
        }
    }
}

/// Header fields ztgate needs to frame, route or identify a request: never on a strip list.
pub(crate) fn is_protected(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::UPGRADE,
        header::TE,
        header::EXPECT,
    ]
    .contains(name)
}

/// A cheap first look: every name on [`DEFAULT_STRIP`] starts with `x-` or with one of these
/// letters, which most request fields (`accept`, `host`, `user-agent`, `content-*`) do not.
fn maybe_default_strip(name: &str) -> bool {
    name.starts_with("x-") || matches!(name.as_bytes().first(), Some(b'f' | b't' | b's' | b'r'))
}

fn classify(name: &HeaderName, cfg: &HeadersConfig) -> Option<Removed> {
    let s = name.as_str();
    if s.starts_with(ZTGATE_PREFIX) || name == X_FORWARDED_CLIENT_CERT {
        Some(Removed::Identity)
    } else if maybe_default_strip(s) && DEFAULT_STRIP.contains(&s) {
        Some(Removed::Default)
    } else if cfg.strip.contains(name) {
        Some(Removed::Configured)
    } else if cfg.with_underscores != Underscores::Allow && s.contains('_') {
        Some(Removed::Underscore)
    } else {
        None
    }
}

/// Removes every client-sent field that ztgate sets itself or that upstreams could read as
/// identity, address, path or method: one pass over the names, nothing allocated unless
/// something is removed. Calls `removed` once per field removed.
///
/// # Errors
/// [`UnderscoreRejected`] for a name with `_` under [`Underscores::Reject`] (nothing is removed
/// then).
pub(crate) fn strip_client_headers(
    headers: &mut HeaderMap,
    cfg: &HeadersConfig,
    mut removed: impl FnMut(Removed),
) -> Result<(), UnderscoreRejected> {
    if !headers.keys().any(|k| classify(k, cfg).is_some()) {
        return Ok(());
    }
    let names: Vec<(HeaderName, Removed)> = headers
        .keys()
        .filter_map(|k| classify(k, cfg).map(|r| (k.clone(), r)))
        .collect();
    if cfg.with_underscores == Underscores::Reject && names.iter().any(|(_, r)| *r == Removed::Underscore) {
        return Err(UnderscoreRejected);
    }
    for (name, why) in names {
        if let http::header::Entry::Occupied(e) = headers.entry(name) {
            for _ in e.remove_entry_mult().1 {
                removed(why);
            }
        }
    }
    Ok(())
}

/// A header name contains `_` and the configuration refuses such requests
/// ([`Underscores::Reject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("header name contains '_'")]
pub(crate) struct UnderscoreRejected;

/// The RFC 7239 `Forwarded` value ztgate sets: `for` the client's address (IPv6 quoted and in
/// brackets, §6), `proto=https`, `host` the judged authority (quoted: `:` is not a token char).
pub(crate) fn forwarded_value(client: std::net::IpAddr, authority: &str) -> Option<http::HeaderValue> {
    let value = match client {
        std::net::IpAddr::V4(ip) => format!("for={ip};proto=https;host=\"{authority}\""),
        std::net::IpAddr::V6(ip) => format!("for=\"[{ip}]\";proto=https;host=\"{authority}\""),
    };
    http::HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn a_head_without_hop_by_hop_fields_is_left_as_it_is_and_any_one_of_them_is_found() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("app.internal"));
        h.append("x-app", HeaderValue::from_static("1"));
        h.append("x-app", HeaderValue::from_static("2"));
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
        for name in &HOP_BY_HOP {
            let mut h = before.clone();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h, false);
            assert_eq!(h, before, "{name} must go");
        }
    }

    #[test]
    fn te_trailers_is_found_among_other_codings() {
        let mut h = HeaderMap::new();
        assert!(!te_trailers(&h));
        h.insert(header::TE, HeaderValue::from_static("gzip;q=0.5, Trailers"));
        assert!(te_trailers(&h));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailersx"));
        assert!(!te_trailers(&h));
    }

    #[test]
    fn upgrade_headers_survive_only_for_upgrades() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty());
    }

    fn strip(h: &mut HeaderMap, cfg: &HeadersConfig) -> Result<Vec<&'static str>, UnderscoreRejected> {
        let mut removed = Vec::new();
        strip_client_headers(h, cfg, |r| removed.push(r.as_str()))?;
        Ok(removed)
    }

    #[test]
    fn client_identity_headers_are_all_removed() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_CLIENT_CERT, HeaderValue::from_static("By=evil"));
        h.insert(X_ZTGATE_IDENTITY, HeaderValue::from_static("spiffe://x/admin"));
        h.append("x-ztgate-user", HeaderValue::from_static("root"));
        h.append("x-ztgate-user", HeaderValue::from_static("root2"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        let removed = strip(&mut h, &HeadersConfig::default()).unwrap();
        assert_eq!(removed, ["identity"; 4]);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn forwarding_and_auth_claims_are_removed_by_default_and_the_list_extends() {
        let mut h = HeaderMap::new();
        for name in DEFAULT_STRIP {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("forged"));
        }
        h.insert("x-my-user", HeaderValue::from_static("root"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        let cfg = HeadersConfig {
            strip: vec![HeaderName::from_static("x-my-user")],
            ..HeadersConfig::default()
        };
        let removed = strip(&mut h, &cfg).unwrap();
        assert_eq!(removed.len(), DEFAULT_STRIP.len() + 1);
        assert_eq!(removed.iter().filter(|r| **r == "configured").count(), 1);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn the_first_look_lets_every_default_strip_name_through() {
        for name in DEFAULT_STRIP {
            assert!(maybe_default_strip(name), "{name}");
        }
        assert!(!maybe_default_strip("accept"));
        assert!(!maybe_default_strip("user-agent"));
    }

    #[test]
    fn underscored_names_are_dropped_rejected_or_allowed() {
        let request = || {
            let mut h = HeaderMap::new();
            h.insert("x_ztgate_identity", HeaderValue::from_static("spiffe://x/admin"));
            h.insert("x-app", HeaderValue::from_static("kept"));
            h
        };
        let mut h = request();
        assert_eq!(strip(&mut h, &HeadersConfig::default()).unwrap(), ["underscore"]);
        assert!(!h.contains_key("x_ztgate_identity"));

        let reject = HeadersConfig {
            with_underscores: Underscores::Reject,
            ..HeadersConfig::default()
        };
        assert_eq!(strip(&mut request(), &reject), Err(UnderscoreRejected));

        let allow = HeadersConfig {
            with_underscores: Underscores::Allow,
            ..HeadersConfig::default()
        };
        let mut h = request();
        assert!(strip(&mut h, &allow).unwrap().is_empty());
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn forwarded_quotes_ipv6_and_the_authority() {
        let v4 = forwarded_value("192.0.2.7".parse().unwrap(), "app.internal:8443").unwrap();
        assert_eq!(v4, "for=192.0.2.7;proto=https;host=\"app.internal:8443\"");
        let v6 = forwarded_value("2001:db8::1".parse().unwrap(), "app.internal").unwrap();
        assert_eq!(v6, "for=\"[2001:db8::1]\";proto=https;host=\"app.internal\"");
    }
}
