//! Header names ztgate sets or strips, declared once as statics (no per-request allocation), and
//! RFC 9110 §7.6.1 hop-by-hop handling.

use http::header::{self, HeaderMap, HeaderName};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub const X_ZTGATE_IDENTITY: HeaderName = HeaderName::from_static("x-ztgate-identity");
/// The authenticated user's `sub`, on routes with user authentication.
pub const X_ZTGATE_USER: HeaderName = HeaderName::from_static("x-ztgate-user");

/// Prefix of every identity header ztgate owns; client-sent ones are always removed.
pub const ZTGATE_PREFIX: &str = "x-ztgate-";

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether the request asks for a protocol upgrade (WebSocket and friends, HTTP/1.1 only).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, including any the `Connection` header names. With `keep_upgrade`
/// the `Upgrade` header and a `Connection: upgrade` survive, so an upgrade can pass through.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
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

/// Removes identity headers a client may have sent: they are set only by ztgate.
pub fn strip_identity(headers: &mut HeaderMap) {
    headers.remove(X_FORWARDED_CLIENT_CERT);
    if headers.keys().any(|k| k.as_str().starts_with(ZTGATE_PREFIX)) {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with(ZTGATE_PREFIX))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
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

    #[test]
    fn client_identity_headers_are_all_removed() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_CLIENT_CERT, HeaderValue::from_static("By=evil"));
        h.insert(X_ZTGATE_IDENTITY, HeaderValue::from_static("spiffe://x/admin"));
        h.insert("x-ztgate-user", HeaderValue::from_static("root"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_identity(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-app"], "kept");
    }
}
