//! The audit log: one hash-chained JSON line per decision and per refused TLS handshake.
//!
//! Delivery: the request path serializes its record and queues it on a bounded channel; a
//! writer task chains, batches and writes. With `on_full = "block"` (the default) nothing is
//! dropped: a slow sink makes requests wait for queue space, and a failing sink (disk full, file
//! gone) makes ztgate refuse new requests with 503 until a write succeeds again. With
//! `on_full = "drop"` a full queue drops the record and counts it. Records still queued at
//! shutdown are written before the process exits; a crash can lose the queue (at most
//! `queue` records) — see docs/audit.md.

mod chain;
pub mod record;
mod verify;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tracing::warn;

pub use chain::{Chain, GENESIS, hash_line};
pub use verify::{Verified, VerifyError, verify};

use crate::telemetry::metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkConfig {
    File {
        path: PathBuf,
        /// Rotate when the file reaches this size.
        max_bytes: u64,
        /// Rotated files kept (`audit.log.1` .. `audit.log.N`).
        keep: usize,
    },
    /// JSON lines on standard output (containers); logs go to standard error.
    Stdout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every batch write (the default: a record acknowledged to the kernel is on disk).
    Batch,
    /// At most this often.
    Interval(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Requests wait for queue space; a failing sink fails closed. Nothing is dropped.
    Block,
    /// A record that finds the queue full is dropped and counted.
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub sink: SinkConfig,
    pub fsync: Fsync,
    pub on_full: OnFull,
    /// Records queued between the request path and the writer.
    pub queue: usize,
}

pub(crate) struct Shared {
    /// False while the sink is failing.
    healthy: AtomicBool,
}

/// The running writer task.
pub struct AuditTask {
    handle: JoinHandle<()>,
    stop: Arc<Notify>,
}

impl AuditTask {
    /// Stops accepting records, writes everything queued, fsyncs. Bounded by `deadline` (a sink
    /// that is down at shutdown would otherwise be retried forever).
    pub async fn finish(self, deadline: Duration) {
        self.stop.notify_one();
        if tokio::time::timeout(deadline, self.handle).await.is_err() {
            tracing::error!("audit writer did not finish within {deadline:?}; queued records may be lost");
        }
    }
}

/// The request path's handle on the audit log. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    inner: Option<(mpsc::Sender<Vec<u8>>, Arc<Shared>, OnFull)>,
}

impl Auditor {
    /// No audit log configured: records are not written.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Opens the sink and starts the writer task. The task ends (after writing everything
    /// queued) once every clone of the returned `Auditor` is dropped.
    pub fn start(cfg: &AuditConfig) -> std::io::Result<(Self, AuditTask)> {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
        });
        let writer = writer::Writer::open(rx, &cfg.sink, cfg.fsync, shared.clone())?;
        metrics::audit_healthy(true);
        let stop = Arc::new(Notify::new());
        // The writer does blocking file I/O (write, fsync): give it a blocking-pool thread so it
        // never stalls the runtime's worker threads, which serve connections.
        let rt = tokio::runtime::Handle::current();
        let run = writer.run(stop.clone());
        let handle = tokio::task::spawn_blocking(move || rt.block_on(run));
        Ok((
            Self {
                inner: Some((tx, shared, cfg.on_full)),
            },
            AuditTask { handle, stop },
        ))
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether new requests may be served: false while a blocking audit log cannot be written
    /// (fail closed).
    pub fn accepting(&self) -> bool {
        match &self.inner {
            Some((_, shared, OnFull::Block)) => shared.healthy.load(Ordering::Acquire),
            _ => true,
        }
    }

    /// Serializes one record (a JSON object, docs/audit.md) and queues it: the one way every
    /// decision reaches the audit log.
    ///
    /// # Errors
    /// [`Unserializable`] when the record cannot be serialized (a bug: records hold strings
    /// and numbers). It is logged at ERROR and counted in `ztgate_audit_dropped_total` here,
    /// never skipped silently; the request path fails closed on it.
    pub async fn emit<R: serde::Serialize>(&self, record: &R) -> Result<(), Unserializable> {
        if !self.enabled() {
            return Ok(());
        }
        match serde_json::to_vec(record) {
            Ok(bytes) => {
                self.record(bytes).await;
                Ok(())
            }
            Err(e) => {
                metrics::audit_dropped();
                tracing::error!(error = %e, "audit record could not be serialized; dropped");
                Err(Unserializable)
            }
        }
    }

    /// Queues one serialized record (a JSON object). Waits for queue space in `block` mode.
    async fn record(&self, record: Vec<u8>) {
        let Some((tx, shared, on_full)) = &self.inner else {
            return;
        };
        let refused_while_down = *on_full == OnFull::Block && !shared.healthy.load(Ordering::Acquire);
        if *on_full == OnFull::Drop || refused_while_down {
            // While the sink is down, records of the requests refused *because* it is down are
            // queued if there is room; waiting for room would turn the 503 into a hang.
            if tx.try_send(record).is_err() {
                metrics::audit_dropped();
                if refused_while_down {
                    warn!("audit queue full while the audit log is down: record of a refused request dropped");
                }
            }
            return;
        }
        if tx.send(record).await.is_err() {
            // The writer is gone only after shutdown; count it rather than lose it silently.
            metrics::audit_dropped();
        }
    }
}

/// An audit record could not be serialized (see [`Auditor::emit`]).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("audit record could not be serialized")]
pub struct Unserializable;

#[cfg(test)]
mod tests;
