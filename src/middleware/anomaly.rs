//! Feeds each request's outcome to the anomaly detector (atomics only, no lock) and reports what
//! it flags: a warning log, `ztgate_anomalies_total{kind}` and an audit record of kind
//! `anomaly`. Never changes the response.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use http::{Request, Response};
use tower::{Layer, Service};
use tracing::warn;

use super::BoxFuture;
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

#[derive(Clone)]
pub(crate) struct AnomalyLayer {
    detector: Option<Arc<Detector>>,
    auditor: Auditor,
}

impl AnomalyLayer {
    pub(crate) fn new(detector: Option<Arc<Detector>>, auditor: Auditor) -> Self {
        Self { detector, auditor }
    }
}

impl<S> Layer<S> for AnomalyLayer {
    type Service = Anomaly<S>;
    fn layer(&self, inner: S) -> Anomaly<S> {
        Anomaly {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Anomaly<S> {
    inner: S,
    layer: AnomalyLayer,
}

impl<B, S> Service<Request<B>> for Anomaly<S>
where
    // The inner future is already boxed: the pass-through path hands it on as it is.
    B: Send + 'static,
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = ProxyError, Future = BoxFuture>,
{
    type Response = Response<ProxyBody>;
    type Error = ProxyError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> BoxFuture {
        let (Some(detector), Ok(ctx)) = (self.layer.detector.clone(), RequestCtx::of(&req)) else {
            return self.inner.call(req);
        };
        let ctx = ctx.clone();
        let conn = ctx.conn.clone();
        let auditor = self.layer.auditor.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            if let Some(stats) = &conn.anomaly {
                let denied = Outcome::of(&result) == Outcome::Deny;
                let route = ctx.route.get().copied();
                for flag in detector.request(stats, route, denied, now_ms()) {
                    report(&auditor, &conn, &flag).await;
                }
            }
            result
        })
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
