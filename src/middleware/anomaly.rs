//! Feeds each request's outcome to the anomaly detector (atomics only, no lock; called by the
//! observing layer, [`super::observe`]) and reports what it flags: a warning log, `ztgate_anomalies_total{kind}` and an audit record of kind
//! `anomaly`. Never changes the response.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use http::Response;
use tracing::warn;

use crate::anomaly::{Detector, Flag};
use crate::audit::Auditor;
use crate::audit::record::{Identity, SCHEMA_VERSION, timestamp};
use crate::body::ProxyBody;
use crate::ctx::{ConnCtx, RequestCtx};
use crate::error::{Outcome, ProxyError};
use crate::telemetry::metrics;

/// Milliseconds on a monotonic clock (the detector only compares times).
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Feeds one finished request to the detector and reports each flag it raises (the
/// connection's stats; nothing when the connection has none).
pub(crate) async fn observe(
    detector: &Detector,
    auditor: &Auditor,
    ctx: &RequestCtx,
    result: &Result<Response<ProxyBody>, ProxyError>,
) {
    let conn = &ctx.conn;
    if let Some(stats) = &conn.anomaly {
        let denied = Outcome::of(result) == Outcome::Deny;
        let route = ctx.route.get().copied();
        for flag in detector.request(stats, route, denied, now_ms()) {
            report(auditor, conn, &flag).await;
        }
    }
}

/// Logs, counts and audits one flag.
pub(crate) async fn report(auditor: &Auditor, conn: &ConnCtx, flag: &Flag) {
    metrics::anomaly(flag.kind.as_str());
    warn!(kind = flag.kind.as_str(), detail = %flag.detail, client.id = %conn.identity.display_name(), "anomaly flagged");
    #[derive(serde::Serialize)]
    struct AnomalyRecord<'a> {
        v: u32,
        ts: String,
        kind: &'static str,
        anomaly: &'static str,
        detail: &'a str,
        conn_id: u64,
        peer: std::net::SocketAddr,
        identity: Identity<'a>,
    }
    impl crate::audit::AuditRecord for AnomalyRecord<'_> {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec(self)
        }
    }
    let record = AnomalyRecord {
        v: SCHEMA_VERSION,
        ts: timestamp(SystemTime::now()),
        kind: "anomaly",
        anomaly: flag.kind.as_str(),
        detail: &flag.detail,
        conn_id: conn.id,
        peer: conn.peer_addr,
        identity: Identity::from(&conn.identity),
    };
    // Logged and counted by `emit` if it ever fails; the request goes on either way.
    let _ = auditor.emit(&record).await;
}
