//! WebSocket over h2 (RFC 8441): an extended CONNECT with `:protocol = websocket` from the
//! client becomes an HTTP/1.1 upgrade (RFC 6455 §4.1) to the upstream, and the two streams are
//! joined once the upstream switches protocols. WebSocket frames are the same on both sides, so
//! bytes pass through unchanged.
//!
//! ztgate is the WebSocket client towards the upstream: it makes the `Sec-WebSocket-Key` and
//! checks the upstream's `Sec-WebSocket-Accept`, since an h2 client sends neither (RFC 8441 §5).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode, Version};

/// Whether `req` is an RFC 8441 extended CONNECT for a WebSocket. hyper sets the `:protocol`
/// extension only on CONNECT requests; the sanitize layer then judges (and forwards) the request
/// as the `GET` the upstream will see, so the method is not checked here.
pub(crate) fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_ref().eq_ignore_ascii_case(b"websocket"))
}

/// Turns the head of an extended CONNECT into an HTTP/1.1 WebSocket upgrade: `GET`, `Upgrade:
/// websocket`, a fresh `Sec-WebSocket-Key`. Returns the key, to check the upstream's answer.
///
/// # Errors
/// When no random key can be drawn (the system RNG failed).
pub(crate) fn to_upgrade_request(method: &mut Method, headers: &mut HeaderMap) -> Result<HeaderValue, &'static str> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| "no randomness for Sec-WebSocket-Key")?;
    let key = HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(nonce))
        .map_err(|_| "Sec-WebSocket-Key is not a header value")?;
    *method = Method::GET;
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_KEY, key.clone());
    headers
        .entry(header::SEC_WEBSOCKET_VERSION)
        .or_insert(HeaderValue::from_static("13"));
    Ok(key)
}

/// Whether the upstream's `101` answers `key` (RFC 6455 §4.2.2: SHA-1 of key + GUID, base64).
pub(crate) fn accepts(headers: &HeaderMap, key: &HeaderValue) -> bool {
    let want = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    headers
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .is_some_and(|v| v.as_bytes() == want.as_bytes())
}

/// The upstream's `101` head as the h2 client's `200` (RFC 8441 §5): the HTTP/1.1 handshake
/// fields stay behind; the negotiated subprotocol and extensions go on.
pub(crate) fn to_connect_response(status: &mut StatusCode, headers: &mut HeaderMap) {
    *status = StatusCode::OK;
    for name in [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_ACCEPT,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extended_connect_becomes_an_upgrade_and_only_the_right_accept_passes() {
        let mut method = Method::CONNECT;
        let mut h = HeaderMap::new();
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat"));
        let key = to_upgrade_request(&mut method, &mut h).unwrap();
        assert_eq!(method, Method::GET);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "chat");
        assert_eq!(h[header::SEC_WEBSOCKET_KEY].len(), 24);

        let mut answer = HeaderMap::new();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        answer.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).unwrap());
        assert!(accepts(&answer, &key));
        answer.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("d3Jvbmc="));
        assert!(!accepts(&answer, &key));

        let mut status = StatusCode::SWITCHING_PROTOCOLS;
        answer.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        to_connect_response(&mut status, &mut answer);
        assert_eq!(status, StatusCode::OK);
        assert!(answer.is_empty());
    }
}
