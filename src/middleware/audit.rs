//! Writes one audit record per request, whatever its outcome. Sits outside sanitize, route and
//! policy so it sees their rejections; they report what they learned (normalised path, route,
//! deciding rule) through the request's [`Note`]. Refuses new requests with 503 while a blocking
//! audit log cannot be written (fail closed); with group commit (`respond_after = "durable"`)
//! holds each response until its record is on disk, and refuses it with 503 when it cannot be.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use http::{Method, Request, Response, header};
use tower::{Layer, Service};

use super::BoxFuture;
use crate::audit::record::{Posture, RequestRecord, SCHEMA_VERSION, Shadow, timestamp};
use crate::audit::{Auditor, CommitError};
use crate::body::ProxyBody;
use crate::ctx::RequestCtx;
use crate::error::{Outcome, ProxyError};
use crate::upstream::RouteTable;

#[derive(Clone)]
pub(crate) struct AuditLayer {
    auditor: Auditor,
    routes: Arc<RouteTable>,
    /// Upstream names by index, for the record.
    upstreams: Arc<[String]>,
}

impl AuditLayer {
    pub(crate) fn new(auditor: Auditor, routes: Arc<RouteTable>, upstreams: Arc<[String]>) -> Self {
        Self {
            auditor,
            routes,
            upstreams,
        }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;
    fn layer(&self, inner: S) -> Audit<S> {
        Audit {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Audit<S> {
    inner: S,
    layer: AuditLayer,
}

impl<B, S> Service<Request<B>> for Audit<S>
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
        if !self.layer.auditor.enabled() {
            return self.inner.call(req);
        }
        let started = Instant::now();
        let ctx = match RequestCtx::of(&req) {
            Ok(ctx) => ctx.clone(),
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        let method = req.method().clone();
        let raw_path = req.uri().path().to_string();
        let fut = if self.layer.auditor.accepting() {
            self.inner.call(req)
        } else {
            Box::pin(std::future::ready(Err(ProxyError::AuditUnavailable)))
        };
        // Armed until the record is queued: a request whose future is dropped before that (the
        // client reset its connection or stream while the upstream was working on it) is still
        // recorded, as `client-closed`.
        let mut unfinished = Unfinished {
            armed: true,
            layer: self.layer.clone(),
            ctx,
            method,
            raw_path,
            started,
        };
        Box::pin(async move {
            let result = fut.await;
            let Unfinished {
                layer,
                ctx,
                method,
                raw_path,
                ..
            } = &unfinished;
            let decision = Outcome::of(&result);
            let verdict = ctx.verdict.get();
            let (rule, reason, status, bytes) = match &result {
                Ok(resp) => {
                    let bytes = resp
                        .headers()
                        .get(header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok()?.parse().ok());
                    (
                        verdict.and_then(|v| v.0.as_deref()),
                        "allowed",
                        resp.status().as_u16(),
                        bytes,
                    )
                }
                Err(ProxyError::Denied { rule, reason }) => (rule.as_deref(), *reason, 403, None),
                // A rule's own rate limit sets the verdict's rule (the global and route limits
                // run before the policy, so they have none).
                Err(e) => (
                    verdict.and_then(|v| v.0.as_deref()),
                    e.reason(),
                    e.status().as_u16(),
                    None,
                ),
            };
            let end = End {
                decision: decision.as_str(),
                rule,
                reason,
                status,
                bytes,
            };
            let record = layer.record(ctx, method, raw_path, started, end);
            // Serializing plain strings and numbers cannot fail; if it ever does, fail closed.
            if !layer.auditor.group_commit() || matches!(result, Err(ProxyError::AuditUnavailable)) {
                let emitted = layer.auditor.emit(&record).await;
                unfinished.disarm();
                if emitted.is_err() {
                    return Err(ProxyError::Internal("audit record could not be serialized"));
                }
                return result;
            }
            // Group commit: the response waits for its record's durable write; when that write
            // fails the client gets 503 instead, and the log says so.
            let refuse = |r: &mut RequestRecord<'_>| {
                r.decision = "error";
                r.reason = ProxyError::AuditUnavailable.reason();
                r.status = ProxyError::AuditUnavailable.status().as_u16();
                r.bytes = None;
            };
            let queued = layer.auditor.enqueue(record, refuse).await;
            // Queued (or never will be): from here a drop would record the request twice.
            if !matches!(queued, Err(CommitError::Unserializable(_))) {
                unfinished.disarm();
            }
            let committed = match queued {
                Ok(q) => q.durable().await,
                Err(e) => Err(e),
            };
            match committed {
                Ok(()) => result,
                Err(CommitError::NotRecorded) => Err(ProxyError::AuditUnavailable),
                Err(CommitError::Unserializable(_)) => {
                    Err(ProxyError::Internal("audit record could not be serialized"))
                }
            }
        })
    }
}

/// How a request ended, for its record.
struct End<'a> {
    decision: &'static str,
    rule: Option<&'a str>,
    reason: &'a str,
    status: u16,
    bytes: Option<u64>,
}

impl AuditLayer {
    /// The record of one request: what the layers learned (`ctx`) and how it ended (`end`).
    fn record<'a>(
        &'a self,
        ctx: &'a RequestCtx,
        method: &'a Method,
        raw_path: &'a str,
        started: Instant,
        end: End<'a>,
    ) -> RequestRecord<'a> {
        let conn = &ctx.conn;
        let route = ctx.route.get().and_then(|i| self.routes.get(*i));
        RequestRecord {
            v: SCHEMA_VERSION,
            ts: timestamp(SystemTime::now()),
            kind: "request",
            request_id: ctx.id.as_str(),
            conn_id: conn.id,
            peer: &conn.audit_peer,
            identity: &ctx.peer().audit_identity,
            via: ctx.forwarded.get().map(|_| &*conn.audit_identity),
            method: method.as_str(),
            host: ctx.canonical.get().map(|c| c.authority.host()),
            path: ctx.path.get().map_or(raw_path, String::as_str),
            route: route.map(|r| r.name.as_str()),
            upstream: route.and_then(|r| self.upstreams.get(r.upstream)).map(String::as_str),
            reached_upstream: ctx.reached_upstream(),
            decision: end.decision,
            rule: end.rule,
            reason: end.reason,
            shadow: ctx.shadow.get().map(|(rule, reason)| Shadow { rule, reason }),
            user: ctx.user.get().map(|u| u.sub.as_str()),
            posture: ctx.posture.get().map(|(provider, result)| Posture {
                provider,
                result,
                failed: ctx.posture_failed.get().copied(),
            }),
            status: end.status,
            bytes: end.bytes,
            duration_us: started.elapsed().as_micros() as u64,
        }
    }
}

/// The status recorded for a request whose client went away before its response: nginx's 499
/// ("client closed request"). Never sent; the record says no response was.
pub(crate) const CLIENT_CLOSED_STATUS: u16 = 499;

/// A request whose response future is dropped before its record was queued: the client reset
/// its connection (HTTP/1.1) or its stream (h2), or the drain deadline cut the connection. The
/// request may have reached the upstream, which may have acted on it, so it is recorded like any
/// other: `decision` `error`, `reason` `client-closed`, status 499, with the rule the policy
/// applied (if it got that far) and `reached_upstream`. The record is queued from a task of its
/// own, since a drop cannot wait for queue space.
struct Unfinished {
    armed: bool,
    layer: AuditLayer,
    ctx: Arc<RequestCtx>,
    method: Method,
    raw_path: String,
    started: Instant,
}

impl Unfinished {
    /// The record is queued: nothing left to do on drop.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(request_id = %self.ctx.id.as_str(), "audit: a request cut before its response could not be recorded (no runtime)");
            return;
        };
        let (layer, ctx, method, started) = (self.layer.clone(), self.ctx.clone(), self.method.clone(), self.started);
        let raw_path = std::mem::take(&mut self.raw_path);
        runtime.spawn(async move {
            let end = End {
                decision: "error",
                rule: ctx.verdict.get().and_then(|v| v.0.as_deref()),
                reason: "client-closed",
                status: CLIENT_CLOSED_STATUS,
                bytes: None,
            };
            let record = layer.record(&ctx, &method, &raw_path, started, end);
            // Serializing plain strings and numbers cannot fail; `emit` logs and counts it if
            // it ever does.
            let _ = layer.auditor.emit(&record).await;
        });
    }
}
