//! The audit log: one hash-chained JSON line per decision and per refused TLS handshake, each
//! carrying its own hash, with Ed25519-signed checkpoints.
//!
//! Delivery: the request path serializes its record and queues it on a bounded channel; a
//! writer thread chains, batches and writes. With `on_full = "block"` (the default) nothing is
//! dropped: a slow sink makes requests wait for queue space, and a failing sink (disk full, file
//! gone) makes ztgate refuse new requests with 503 until a write succeeds again. With
//! `on_full = "drop"` a full queue drops the record and counts it. With `respond_after =
//! "durable"` (group commit) a response waits until its record is written and fsynced, and is
//! refused with 503 when that write fails. At shutdown, records that cannot reach the sink by the
//! deadline are written to standard error, marked, and counted — see docs/audit.md.

mod chain;
pub mod checkpoint;
mod json;
pub mod record;
mod sink;
mod verify;
mod writer;

pub use record::AuditRecord;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::error;

pub use chain::{Chain, GENESIS, hash_line};
pub use checkpoint::{CheckpointConfig, KeyError, SigningKey, VerifyingKey};
pub use sink::NOT_WRITTEN;
pub use verify::{CheckpointFault, Proven, Verified, VerifyError, verify};

use crate::telemetry::metrics;
use writer::Entry;

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

/// When a request's response is released, relative to its audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespondAfter {
    /// Once the record is queued (the default): a write failure refuses the *next* requests.
    Queued,
    /// Once the record is written and fsynced (group commit: one write and one fdatasync serve
    /// every response waiting at that moment); a failed write refuses this response with 503.
    Durable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub sink: SinkConfig,
    pub fsync: Fsync,
    pub on_full: OnFull,
    pub respond_after: RespondAfter,
    /// Records queued between the request path and the writer.
    pub queue: usize,
    /// Signed checkpoints; `None` without a signing key.
    pub checkpoint: Option<CheckpointConfig>,
}

/// The audit log cannot be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the audit log {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit signing key: {0}")]
    Key(#[from] KeyError),
    #[error("cannot start the audit writer thread: {0}")]
    Thread(#[source] std::io::Error),
}

pub(crate) struct Shared {
    /// False while the sink is failing.
    healthy: AtomicBool,
    /// Lines written to the last-resort sink (standard error) instead of the audit sink.
    diverted: AtomicU64,
    /// Lines that reached neither.
    lost: AtomicU64,
}

/// What became of the records at shutdown, from [`AuditTask::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Lines written to standard error (marked [`NOT_WRITTEN`]) instead of the audit sink.
    pub diverted: u64,
    /// Lines that reached neither (standard error failed too).
    pub lost: u64,
    /// False when the writer did not finish in time (stuck in a write): what it held is unknown.
    pub finished: bool,
}

impl Delivery {
    /// True when every record reached the audit sink.
    pub fn complete(&self) -> bool {
        self.finished && self.diverted == 0 && self.lost == 0
    }
}

/// The running writer thread.
pub struct AuditTask {
    done: oneshot::Receiver<()>,
    stop: watch::Sender<Option<Instant>>,
    shared: Arc<Shared>,
}

/// Beyond the deadline, how long `finish` waits for the writer to divert what it holds.
const DIVERT_GRACE: Duration = Duration::from_secs(5);

impl AuditTask {
    /// Stops accepting records and writes everything queued, a shutdown checkpoint and an fsync.
    /// A sink still failing at `deadline` gets no more retries: what is held and queued goes to
    /// standard error instead. Never panics; the result says whether everything reached the sink.
    pub async fn finish(self, deadline: Duration) -> Delivery {
        let _ = self.stop.send(Some(Instant::now() + deadline));
        let finished = matches!(
            tokio::time::timeout(deadline + DIVERT_GRACE, self.done).await,
            Ok(Ok(()))
        );
        let delivery = Delivery {
            diverted: self.shared.diverted.load(Ordering::Acquire),
            lost: self.shared.lost.load(Ordering::Acquire),
            finished,
        };
        if !finished {
            error!(
                deadline_ms = deadline.as_millis(),
                "audit writer did not finish within the drain timeout (stuck writing): the records it held may be lost"
            );
        }
        delivery
    }
}

/// The request path's handle on the audit log. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    inner: Option<Inner>,
}

#[derive(Clone)]
struct Inner {
    tx: mpsc::Sender<Entry>,
    shared: Arc<Shared>,
    on_full: OnFull,
    respond_after: RespondAfter,
}

impl Auditor {
    /// No audit log configured: records are not written.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Opens the sink, loads the signing key and starts the writer on its own thread (it does
    /// blocking file I/O, and must outlive the server's runtime to deliver at shutdown). The
    /// writer ends after [`AuditTask::finish`], or once every clone of the `Auditor` is dropped.
    pub fn start(cfg: &AuditConfig) -> Result<(Self, AuditTask), StartError> {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            diverted: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        });
        let writer = writer::Writer::open(rx, cfg, shared.clone())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(StartError::Thread)?;
        let (stop, stopped) = watch::channel(None);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("ztgate-audit".into())
            .spawn(move || {
                rt.block_on(writer.run(stopped));
                let _ = done_tx.send(());
            })
            .map_err(StartError::Thread)?;
        metrics::audit_healthy(true);
        Ok((
            Self {
                inner: Some(Inner {
                    tx,
                    shared: shared.clone(),
                    on_full: cfg.on_full,
                    respond_after: cfg.respond_after,
                }),
            },
            AuditTask { done, stop, shared },
        ))
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether responses wait for their record's durable write (`respond_after = "durable"`).
    pub fn group_commit(&self) -> bool {
        matches!(&self.inner, Some(i) if i.respond_after == RespondAfter::Durable)
    }

    /// Whether new requests may be served: false while a blocking audit log cannot be written
    /// (fail closed).
    pub fn accepting(&self) -> bool {
        match &self.inner {
            Some(i) if i.on_full == OnFull::Block => i.shared.healthy.load(Ordering::Acquire),
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
    pub async fn emit<R: AuditRecord + ?Sized>(&self, record: &R) -> Result<(), Unserializable> {
        if !self.enabled() {
            return Ok(());
        }
        self.record(serialize(record)?).await;
        Ok(())
    }

    /// Queues one serialized record (a JSON object). Waits for queue space in `block` mode.
    async fn record(&self, record: Vec<u8>) {
        if let Some(inner) = &self.inner {
            inner
                .send(Entry {
                    record,
                    done: None,
                    refused: None,
                })
                .await;
        }
    }

    /// Serializes and queues the record of a response about to be sent. With group commit
    /// (`respond_after = "durable"`), waits until the record is written and fsynced; when that
    /// failed (or the sink is already failing) the log holds the record as `refuse` rewrites it
    /// for the 503 the client gets instead. Without group commit this is [`Auditor::emit`].
    ///
    /// # Errors
    /// [`CommitError::NotRecorded`]: refuse the response (503). [`CommitError::Unserializable`]:
    /// as for [`Auditor::emit`].
    pub async fn commit<R: AuditRecord>(&self, record: R, refuse: impl FnOnce(&mut R)) -> Result<(), CommitError> {
        self.enqueue(record, refuse).await?.durable().await
    }

    /// [`Auditor::commit`] in two steps: this one returns once the record is queued (so a caller
    /// cancelled after it knows the record is in the queue), [`Queued::durable`] waits for the
    /// write.
    ///
    /// # Errors
    /// [`CommitError::Unserializable`], before anything is queued.
    pub async fn enqueue<R: AuditRecord>(
        &self,
        mut record: R,
        refuse: impl FnOnce(&mut R),
    ) -> Result<Queued, CommitError> {
        let Some(inner) = &self.inner else {
            return Ok(Queued::Done(Ok(())));
        };
        if inner.respond_after == RespondAfter::Queued {
            self.emit(&record).await?;
            return Ok(Queued::Done(Ok(())));
        }
        if !inner.shared.healthy.load(Ordering::Acquire) {
            // Known failing: refuse at once rather than wait for the next failed write.
            refuse(&mut record);
            self.emit(&record).await?;
            return Ok(Queued::Done(Err(CommitError::NotRecorded)));
        }
        let bytes = serialize(&record)?;
        refuse(&mut record);
        let refused = serialize(&record)?;
        let (done, written) = oneshot::channel();
        inner
            .send(Entry {
                record: bytes,
                done: Some(done),
                refused: Some(refused),
            })
            .await;
        Ok(Queued::Waiting(written))
    }
}

/// A record [`Auditor::enqueue`] has queued.
pub enum Queued {
    /// Nothing to wait for: queued without group commit, or already known refused.
    Done(Result<(), CommitError>),
    /// Group commit: the writer says whether the record was written.
    Waiting(oneshot::Receiver<bool>),
}

impl Queued {
    /// Waits for the record's durable write (group commit).
    ///
    /// # Errors
    /// [`CommitError::NotRecorded`]: the write failed, or the record never reached the writer
    /// (diverted at shutdown); the response must be refused (503).
    pub async fn durable(self) -> Result<(), CommitError> {
        match self {
            Queued::Done(r) => r,
            Queued::Waiting(written) => match written.await {
                Ok(true) => Ok(()),
                // Refused by the writer, or never reached it (diverted at shutdown).
                Ok(false) | Err(_) => Err(CommitError::NotRecorded),
            },
        }
    }
}

impl Inner {
    async fn send(&self, entry: Entry) {
        let refused_while_down = self.on_full == OnFull::Block && !self.shared.healthy.load(Ordering::Acquire);
        if self.on_full == OnFull::Drop || refused_while_down {
            // While the sink is down, records of the requests refused *because* it is down are
            // queued if there is room; waiting for room would turn the 503 into a hang.
            match self.tx.try_send(entry) {
                Ok(()) => {}
                // `block` never drops a record: with the log down and the queue full, the record
                // of the refused request goes to the last resort (standard error), as at shutdown.
                Err(mpsc::error::TrySendError::Full(e)) if refused_while_down => {
                    self.last_resort(&e.record, "the audit log was down and its queue full");
                }
                // `drop`: dropped and counted, as configured.
                Err(mpsc::error::TrySendError::Full(_)) => metrics::audit_dropped(),
                Err(mpsc::error::TrySendError::Closed(e)) => {
                    self.last_resort(&e.record, "the audit writer had stopped (shutdown)");
                }
            }
            return;
        }
        if let Err(mpsc::error::SendError(e)) = self.tx.send(entry).await {
            self.last_resort(&e.record, "the audit writer had stopped (shutdown)");
        }
    }

    /// A record that cannot be queued goes to the last resort, unchained (`sink::divert`), and
    /// is counted as diverted (the exit code says so at shutdown), or as lost when even that fails.
    fn last_resort(&self, record: &[u8], why: &str) {
        let counter = if sink::divert(record, why) {
            &self.shared.diverted
        } else {
            metrics::audit_dropped();
            &self.shared.lost
        };
        counter.fetch_add(1, Ordering::AcqRel);
    }
}

/// Serializes a record; a failure is logged at ERROR and counted as dropped.
fn serialize<R: AuditRecord + ?Sized>(record: &R) -> Result<Vec<u8>, Unserializable> {
    record.to_json().map_err(|e| {
        metrics::audit_dropped();
        tracing::error!(error = %e, "audit record could not be serialized; dropped");
        Unserializable
    })
}

/// Why [`Auditor::commit`] did not record a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Group commit: the record could not be written; the response must be refused (503).
    #[error("the audit record could not be written")]
    NotRecorded,
    #[error(transparent)]
    Unserializable(#[from] Unserializable),
}

/// An audit record could not be serialized (see [`Auditor::emit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("audit record could not be serialized")]
pub struct Unserializable;

#[cfg(test)]
mod tests;
