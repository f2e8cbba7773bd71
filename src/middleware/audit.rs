//! Writes one audit record per request, whatever its outcome. The observing layer
//! ([`super::observe`]) calls it outside sanitize, route and policy so it sees their rejections;
//! they report what they learned (normalised path, route, deciding rule) through the request's
//! [`RequestCtx`]. Refuses new requests with 503 while a blocking
//! audit log cannot be written (fail closed); with group commit (`respond_after = "durable"`)
//! holds each response until its record is on disk, and refuses it with 503 when it cannot be.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Method, Request, Response, header};

use crate::audit::record::{Posture, RequestRecord, SCHEMA_VERSION, Shadow, timestamp};
use crate::audit::{Auditor, CommitError};
use crate::body::ProxyBody;
use crate::ctx::RequestCtx;
use crate::error::{Outcome, ProxyError};
use crate::upstream::RouteTable;

/// What a request's audit record is built from besides the request's context. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AuditSetup {
    pub(crate) auditor: Auditor,
    routes: Arc<RouteTable>,
    /// Upstream names by index, for the record.
    upstreams: Arc<[String]>,
}

/// What is known of a request only before the stack consumes it.
pub(crate) struct Started {
    method: Method,
    raw_path: String,
}

impl AuditSetup {
    pub(crate) fn new(auditor: Auditor, routes: Arc<RouteTable>, upstreams: Arc<[String]>) -> Self {
        Self {
            auditor,
            routes,
            upstreams,
        }
    }

    /// `None` when no audit log is configured.
    pub(crate) fn begin<B>(&self, req: &Request<B>) -> Option<Started> {
        self.auditor.enabled().then(|| Started {
            method: req.method().clone(),
            raw_path: req.uri().path().to_string(),
        })
    }

    /// Whether the log takes records now; when it does not, the request is refused with 503
    /// before the checks run (fail closed).
    pub(crate) fn accepting(&self) -> bool {
        self.auditor.accepting()
    }

    /// Writes the request's record and returns its result: as it was, or, when the record
    /// cannot be made durable under group commit, 503 (500 if it cannot be serialized at all).
    /// `queued` turns true once the record is in the audit queue: from then on, a caller that is
    /// dropped (the client went away) must not record the request again ([`AuditSetup::cut`]).
    pub(crate) async fn finish(
        &self,
        started: &Started,
        ctx: &RequestCtx,
        since: Instant,
        result: Result<Response<ProxyBody>, ProxyError>,
        queued: &mut bool,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let verdict = ctx.verdict.get();
        let decision = Outcome::of(&result);
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
        let record = self.record(started, ctx, since, end);
        // Serializing plain strings and numbers cannot fail; if it ever does, fail closed.
        if !self.auditor.group_commit() || matches!(result, Err(ProxyError::AuditUnavailable)) {
            let emitted = self.auditor.emit(&record).await;
            *queued = true;
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
        let enqueued = self.auditor.enqueue(record, refuse).await;
        // Unserializable: nothing was queued, and nothing will be (logged and counted by emit).
        *queued = true;
        let committed = match enqueued {
            Ok(q) => q.durable().await,
            Err(e) => Err(e),
        };
        match committed {
            Ok(()) => result,
            Err(CommitError::NotRecorded) => Err(ProxyError::AuditUnavailable),
            Err(CommitError::Unserializable(_)) => Err(ProxyError::Internal("audit record could not be serialized")),
        }
    }

    /// Writes the record of a request whose answer never came because its future was dropped:
    /// the client reset its connection (HTTP/1.1) or its stream (h2) first, or the drain
    /// deadline cut the connection. The request may have reached the upstream, which may have
    /// acted on it, so it is recorded like any other: `decision` `error`, `reason`
    /// `client-closed`, status [`CLIENT_CLOSED_STATUS`] (never sent), with the rule the policy
    /// applied (if it got that far) and `reached_upstream`.
    pub(crate) async fn cut(&self, started: &Started, ctx: &RequestCtx, since: Instant) {
        let end = End {
            decision: "error",
            rule: ctx.verdict.get().and_then(|v| v.0.as_deref()),
            reason: "client-closed",
            status: CLIENT_CLOSED_STATUS,
            bytes: None,
        };
        // Serializing plain strings and numbers cannot fail; `emit` logs and counts it if it
        // ever does.
        let _ = self.auditor.emit(&self.record(started, ctx, since, end)).await;
    }

    /// The record of one request: what the layers learned (`ctx`) and how it ended (`end`).
    fn record<'a>(
        &'a self,
        started: &'a Started,
        ctx: &'a RequestCtx,
        since: Instant,
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
            method: started.method.as_str(),
            host: ctx.canonical.get().map(|c| c.authority.host()),
            path: ctx.path.get().map_or(started.raw_path.as_str(), String::as_str),
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
            duration_us: since.elapsed().as_micros() as u64,
        }
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

/// The status recorded for a request whose client went away before its response: nginx's 499
/// ("client closed request"). Never sent; the record says no response was.
pub(crate) const CLIENT_CLOSED_STATUS: u16 = 499;
