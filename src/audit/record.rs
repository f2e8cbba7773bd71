//! Audit record schema (version 1, docs/audit.md). Records are serialized on the request path
//! from borrowed data; the writer adds `seq` and `prev`.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::identity::PeerIdentity;

pub const SCHEMA_VERSION: u32 = 1;

/// A record that can become one line of the audit log: a JSON object (docs/audit.md).
pub trait AuditRecord {
    /// The record as a JSON object, without a line ending.
    ///
    /// # Errors
    /// Only serde's error, for the records serde writes; the request record's own writer
    /// cannot fail.
    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error>;
}

/// Records written by serde (all but the request record, which has its own writer).
macro_rules! serde_record {
    ($($t:ty),* $(,)?) => {
        $(impl AuditRecord for $t {
            fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
                serde_json::to_vec(self)
            }
        })*
    };
}
serde_record!(HandshakeRecord<'_>, ProtocolRecord<'_>, serde_json::Value);

#[derive(Serialize)]
pub struct Identity<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cn: Option<&'a str>,
    pub fingerprint: &'a str,
    pub issuer: &'a str,
    pub serial: &'a str,
}

impl<'a> From<&'a PeerIdentity> for Identity<'a> {
    fn from(p: &'a PeerIdentity) -> Self {
        Self {
            spiffe_id: p.spiffe_id.as_ref().map(|s| s.as_str()),
            cn: p.common_name.as_deref(),
            fingerprint: &p.fingerprint_sha256,
            issuer: &p.issuer,
            serial: &p.serial,
        }
    }
}

/// One request's decision. Written by its own JSON writer ([`AuditRecord`] below); the serde
/// derive is kept for the test that holds the two to the same output.
#[cfg_attr(test, derive(Serialize))]
pub struct RequestRecord<'a> {
    pub v: u32,
    pub ts: String,
    /// Always `"request"`.
    pub kind: &'static str,
    pub request_id: &'a str,
    pub conn_id: u64,
    /// `ConnCtx::audit_peer`, serialized once per connection.
    pub peer: &'a RawValue,
    /// An [`Identity`], serialized once per connection (`ConnCtx::audit_identity`).
    pub identity: &'a RawValue,
    /// The front proxy that forwarded `identity` (trusted hop), when there was one.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub via: Option<&'a RawValue>,
    pub method: &'a str,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub host: Option<&'a str>,
    /// Normalised path when normalisation succeeded, else the raw one.
    pub path: &'a str,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub route: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub upstream: Option<&'a str>,
    /// Whether the request was handed to an upstream connection (so the upstream may have seen
    /// all or part of it). `false` for every request refused before forwarding.
    pub reached_upstream: bool,
    /// `allow`, `deny` or `error`.
    pub decision: &'static str,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub rule: Option<&'a str>,
    pub reason: &'a str,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub shadow: Option<Shadow<'a>>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub user: Option<&'a str>,
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub posture: Option<Posture<'a>>,
    pub status: u16,
    /// Response body size when the response declared it (`content-length`).
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub bytes: Option<u64>,
    pub duration_us: u64,
}

impl AuditRecord for RequestRecord<'_> {
    /// The same object, field for field and byte for byte, as serde_json writes from the
    /// struct's derive (absent options skipped), without serde's generic path.
    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        use super::json::{string, uint};
        let mut out = Vec::with_capacity(384 + self.peer.get().len() + self.identity.get().len());
        out.extend_from_slice(b"{\"v\":");
        uint(&mut out, u64::from(self.v));
        out.extend_from_slice(b",\"ts\":");
        string(&mut out, &self.ts);
        out.extend_from_slice(b",\"kind\":");
        string(&mut out, self.kind);
        out.extend_from_slice(b",\"request_id\":");
        string(&mut out, self.request_id);
        out.extend_from_slice(b",\"conn_id\":");
        uint(&mut out, self.conn_id);
        out.extend_from_slice(b",\"peer\":");
        out.extend_from_slice(self.peer.get().as_bytes());
        out.extend_from_slice(b",\"identity\":");
        out.extend_from_slice(self.identity.get().as_bytes());
        if let Some(via) = self.via {
            out.extend_from_slice(b",\"via\":");
            out.extend_from_slice(via.get().as_bytes());
        }
        out.extend_from_slice(b",\"method\":");
        string(&mut out, self.method);
        if let Some(host) = self.host {
            out.extend_from_slice(b",\"host\":");
            string(&mut out, host);
        }
        out.extend_from_slice(b",\"path\":");
        string(&mut out, self.path);
        if let Some(route) = self.route {
            out.extend_from_slice(b",\"route\":");
            string(&mut out, route);
        }
        if let Some(upstream) = self.upstream {
            out.extend_from_slice(b",\"upstream\":");
            string(&mut out, upstream);
        }
        out.extend_from_slice(b",\"reached_upstream\":");
        out.extend_from_slice(if self.reached_upstream { b"true" } else { b"false" });
        out.extend_from_slice(b",\"decision\":");
        string(&mut out, self.decision);
        if let Some(rule) = self.rule {
            out.extend_from_slice(b",\"rule\":");
            string(&mut out, rule);
        }
        out.extend_from_slice(b",\"reason\":");
        string(&mut out, self.reason);
        if let Some(shadow) = &self.shadow {
            out.extend_from_slice(b",\"shadow\":");
            out.extend_from_slice(b"{\"rule\":");
            string(&mut out, shadow.rule);
            out.extend_from_slice(b",\"reason\":");
            string(&mut out, shadow.reason);
            out.push(b'}');
        }
        if let Some(user) = self.user {
            out.extend_from_slice(b",\"user\":");
            string(&mut out, user);
        }
        if let Some(posture) = &self.posture {
            out.extend_from_slice(b",\"posture\":");
            out.extend_from_slice(b"{\"provider\":");
            string(&mut out, posture.provider);
            out.extend_from_slice(b",\"result\":");
            string(&mut out, posture.result);
            if let Some(failed) = posture.failed {
                out.extend_from_slice(b",\"failed\":");
                string(&mut out, failed);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b",\"status\":");
        uint(&mut out, u64::from(self.status));
        if let Some(bytes) = self.bytes {
            out.extend_from_slice(b",\"bytes\":");
            uint(&mut out, bytes);
        }
        out.extend_from_slice(b",\"duration_us\":");
        uint(&mut out, self.duration_us);
        out.push(b'}');
        Ok(out)
    }
}

/// The posture verdict on a request that needed one.
#[cfg_attr(test, derive(Serialize))]
pub struct Posture<'a> {
    pub provider: &'a str,
    /// `found`, or why the device's posture is unavailable (`device-unknown`, `service-down`, ...).
    pub result: &'a str,
    /// The requirement the device failed, when that decided the request.
    #[cfg_attr(test, serde(skip_serializing_if = "Option::is_none"))]
    pub failed: Option<&'a str>,
}

#[cfg_attr(test, derive(Serialize))]
pub struct Shadow<'a> {
    pub rule: &'a str,
    pub reason: &'static str,
}

/// A refused TLS handshake, or a certificate refused right after it (an online revocation
/// check: then the record carries the `identity` that was refused).
#[derive(Serialize)]
pub struct HandshakeRecord<'a> {
    pub v: u32,
    pub ts: String,
    /// Always `"handshake"`.
    pub kind: &'static str,
    pub conn_id: u64,
    pub peer: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<&'a RawValue>,
    pub decision: &'static str,
    pub reason: &'static str,
}

/// A request the HTTP parser refused before ztgate's layers saw it (malformed, head too large,
/// header read timeout): there is no request id, method or path, only the connection.
#[derive(Serialize)]
pub struct ProtocolRecord<'a> {
    pub v: u32,
    pub ts: String,
    /// Always `"protocol"`.
    pub kind: &'static str,
    pub conn_id: u64,
    pub peer: &'a RawValue,
    pub identity: &'a RawValue,
    /// Always `"error"`.
    pub decision: &'static str,
    pub reason: &'static str,
    /// The status hyper answered; absent when it closed without an answer (header timeout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// RFC 3339 UTC timestamp with microseconds, e.g. `2026-11-23T08:45:37.123456Z`.
///
/// Called for every audit record: the date and time up to the second are formatted once per
/// second (per thread) and reused; only the microseconds are written each time.
pub fn timestamp(t: SystemTime) -> String {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let mut out = String::with_capacity(27);
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            *cached = (secs, seconds_prefix(secs));
        }
        out.push_str(&cached.1);
    });
    out.push('.');
    let micros = d.subsec_micros();
    for place in [100_000, 10_000, 1_000, 100, 10, 1] {
        // A digit 0..=9: the cast cannot truncate.
        out.push(char::from(b'0' + ((micros / place) % 10) as u8));
    }
    out.push('Z');
    out
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time.
fn seconds_prefix(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_record_writer_matches_serde_byte_for_byte() {
        let peer = RawValue::from_string(r#"{"ip":"192.0.2.7","port":50000}"#.into()).unwrap();
        let identity =
            RawValue::from_string(r#"{"spiffe_id":"spiffe://ztgate.dev/ns/default/sa/client"}"#.into()).unwrap();
        let via = RawValue::from_string(r#"{"cn":"front"}"#.into()).unwrap();
        let full = RequestRecord {
            v: SCHEMA_VERSION,
            ts: timestamp(SystemTime::UNIX_EPOCH),
            kind: "request",
            request_id: "0123456789abcdef0123456789abcdef",
            conn_id: u64::MAX,
            peer: &peer,
            identity: &identity,
            via: Some(&via),
            method: "GET",
            host: Some("app.internal:8443"),
            path: "/a \"quoted\" path\\with\ttab\u{1}ctl/ünï",
            route: Some("app"),
            upstream: Some("backend"),
            reached_upstream: true,
            decision: "deny",
            rule: Some("rule \"x\""),
            reason: "no_rule_matched",
            shadow: Some(Shadow {
                rule: "shadow-1",
                reason: "would_allow",
            }),
            user: Some("alice@example.com"),
            posture: Some(Posture {
                provider: "file",
                result: "found",
                failed: Some("disk_encrypted"),
            }),
            status: 403,
            bytes: Some(0),
            duration_us: 1234,
        };
        assert_eq!(
            String::from_utf8(full.to_json().unwrap()).unwrap(),
            serde_json::to_string(&full).unwrap()
        );
        let sparse = RequestRecord {
            via: None,
            host: None,
            route: None,
            upstream: None,
            reached_upstream: false,
            rule: None,
            shadow: None,
            user: None,
            posture: Some(Posture {
                provider: "http",
                result: "service-down",
                failed: None,
            }),
            bytes: None,
            ..full
        };
        assert_eq!(
            String::from_utf8(sparse.to_json().unwrap()).unwrap(),
            serde_json::to_string(&sparse).unwrap()
        );
        let bare = RequestRecord {
            posture: None,
            ..sparse
        };
        let line = String::from_utf8(bare.to_json().unwrap()).unwrap();
        assert_eq!(line, serde_json::to_string(&bare).unwrap());
        // And it is one JSON object a reader can parse.
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["status"], 403);
    }
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_422_337_123_456);
        assert_eq!(timestamp(t), "2026-11-23T08:25:37.123456Z");
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000000Z");
        // The cached second is reused only within that second.
        let a = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_422_337_000_007);
        let b = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_422_338_999_999);
        assert_eq!(timestamp(a), "2026-11-23T08:25:37.000007Z");
        assert_eq!(timestamp(a), "2026-11-23T08:25:37.000007Z");
        assert_eq!(timestamp(b), "2026-11-23T08:25:38.999999Z");
        assert_eq!(timestamp(a), "2026-11-23T08:25:37.000007Z");
    }
}
