//! The writer task: takes serialized records from a bounded channel, chains them, writes them in
//! batches, fsyncs per policy, signs checkpoints, rotates by size. When a write fails (disk full,
//! file gone) it marks the sink unhealthy — the request path then fails closed — keeps the
//! batch, and retries by reopening the file until a write succeeds, or, once ztgate is stopping
//! and the deadline has passed, writes what it holds to the last-resort sink (standard error).
//!
//! A batch is chained anew at every attempt, so a record whose response was refused meanwhile
//! (group commit) can be replaced by its refused version, and checkpoints are signed at the
//! position they are finally written at.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use super::chain::Chain;
use super::checkpoint::{Reason, SigningKey};
use super::sink::{self, Sink, Tail, last_line};
use super::{AuditConfig, Fsync, Shared, SinkConfig, StartError};
use crate::telemetry::metrics;

const BATCH: usize = 512;
const RETRY: Duration = Duration::from_millis(250);
/// How long the writer waits after the first record of a batch for more to arrive.
const LINGER: Duration = Duration::from_millis(2);
/// How long a writer whose task handle was dropped keeps retrying before it diverts.
const ORPHANED: Duration = Duration::from_secs(30);

/// One record on its way to the writer.
pub(super) struct Entry {
    /// A serialized record (a JSON object).
    pub(super) record: Vec<u8>,
    /// Group commit: told `true` once the record is written (and fsynced), `false` when a write
    /// failed and the response is refused instead.
    pub(super) done: Option<oneshot::Sender<bool>>,
    /// Group commit: the record as it must read when its response is refused (status 503).
    pub(super) refused: Option<Vec<u8>>,
}

/// A line the writer holds until it is written.
enum Held {
    Record(Entry),
    Checkpoint(Reason),
}

/// Checkpoint signing state.
struct Signer {
    key: SigningKey,
    every: u64,
    interval: Duration,
    /// Records held or written since the last checkpoint.
    since: u64,
    /// When the oldest record not covered by a checkpoint arrived.
    oldest: Option<Instant>,
}

pub(super) struct Writer {
    rx: mpsc::Receiver<Entry>,
    sink: Sink,
    chain: Chain,
    fsync: Fsync,
    shared: Arc<Shared>,
    signer: Option<Signer>,
    /// Lines not yet written, oldest first.
    held: Vec<Held>,
    written: metrics::AuditWritten,
}

impl Writer {
    /// Opens the sink, loads the signing key, recovers the chain from the current file's last line.
    pub(super) fn open(rx: mpsc::Receiver<Entry>, cfg: &AuditConfig, shared: Arc<Shared>) -> Result<Self, StartError> {
        let signer = match &cfg.checkpoint {
            Some(c) => Some(Signer {
                key: SigningKey::load(&c.key)?,
                every: c.every.max(1),
                interval: c.interval,
                since: 0,
                oldest: None,
            }),
            None => None,
        };
        let (sink, chain) = match &cfg.sink {
            SinkConfig::Stdout => (Sink::Stdout, Chain::default()),
            SinkConfig::File { path, max_bytes, keep } => open_file(path, *max_bytes, *keep)?,
        };
        Ok(Self {
            rx,
            sink,
            chain,
            fsync: cfg.fsync,
            shared,
            signer,
            held: Vec::new(),
            written: metrics::AuditWritten::register(),
        })
    }

    /// Runs until `stop` carries a deadline (or every sender is gone), writes what is queued, signs
    /// a last checkpoint, and past the deadline diverts what cannot be written to standard error.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<Option<Instant>>) {
        let mut batch: Vec<Entry> = Vec::with_capacity(BATCH);
        let mut last_sync = Instant::now();
        let mut give_up: Option<Instant> = None;
        loop {
            if give_up.is_none()
                && let Some(at) = *stop.borrow()
            {
                // No new records; what is queued is still delivered below.
                self.rx.close();
                give_up = Some(at);
            }
            if self.held.is_empty() {
                let due = self.signer.as_ref().and_then(|s| s.oldest.map(|o| o + s.interval));
                let n = if give_up.is_some() {
                    self.rx.recv_many(&mut batch, BATCH).await
                } else {
                    tokio::select! {
                        n = self.rx.recv_many(&mut batch, BATCH) => n,
                        changed = stop.changed() => {
                            if changed.is_err() {
                                // The task handle is gone without `finish`: deliver what is
                                // queued, within the ordinary bound.
                                self.rx.close();
                                give_up = Some(Instant::now() + ORPHANED);
                            }
                            continue;
                        }
                        () = sleep_until(due) => {
                            self.held.push(Held::Checkpoint(Reason::Interval));
                            self.covered();
                            continue;
                        }
                    }
                };
                if n == 0 {
                    break;
                }
                if n < BATCH && give_up.is_none() {
                    // Linger briefly so one wake-up, one write and one fsync serve many records.
                    tokio::time::sleep(LINGER).await;
                    while batch.len() < 4 * BATCH {
                        match self.rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                }
                for e in batch.drain(..) {
                    self.held.push(Held::Record(e));
                    self.count_record();
                }
            }
            let waiting = self
                .held
                .iter()
                .any(|h| matches!(h, Held::Record(Entry { done: Some(_), .. })));
            let sync = waiting
                || match self.fsync {
                    Fsync::Batch => true,
                    Fsync::Interval(every) => last_sync.elapsed() >= every,
                };
            let (buf, chain, lines) = self.chain_held();
            let started = Instant::now();
            match self.sink.write(&buf, sync) {
                Ok(()) => {
                    self.written.written(lines, started.elapsed().as_secs_f64());
                    if sync {
                        last_sync = Instant::now();
                    }
                    self.chain = chain;
                    for h in self.held.drain(..) {
                        if let Held::Record(Entry { done: Some(done), .. }) = h {
                            let _ = done.send(true);
                        }
                    }
                    if !self.shared.healthy.swap(true, Ordering::AcqRel) {
                        info!("audit log writable again; accepting requests");
                        metrics::audit_healthy(true);
                    }
                    if self.sink.is_full() {
                        if self.signer.as_ref().is_some_and(|s| s.since > 0) {
                            // Each rotated file ends with a checkpoint covering it.
                            self.held.push(Held::Checkpoint(Reason::Rotation));
                            self.covered();
                            continue;
                        }
                        if let Err(e) = self.sink.rotate_and_reopen() {
                            error!(error = %e, "audit log rotation failed; writing on to the current file");
                        }
                    }
                }
                Err(e) => {
                    if self.shared.healthy.swap(false, Ordering::AcqRel) {
                        error!(error = %e, "AUDIT LOG WRITE FAILED: refusing new requests (503) until it recovers");
                        metrics::audit_healthy(false);
                    }
                    metrics::audit_write_error();
                    self.refuse_waiters();
                    if let Some(at) = give_up.or(*stop.borrow())
                        && Instant::now() >= at
                    {
                        self.divert_all(&e.to_string());
                        break;
                    }
                    tokio::time::sleep(RETRY).await;
                    if let Err(e) = self.sink.reopen() {
                        warn!(error = %e, "audit log still cannot be opened");
                    }
                }
            }
        }
        self.finish();
    }

    /// The shutdown checkpoint and the final fsync, once nothing else is queued.
    fn finish(&mut self) {
        if self.held.is_empty() && self.signer.as_ref().is_some_and(|s| s.since > 0) {
            self.held.push(Held::Checkpoint(Reason::Shutdown));
            self.covered();
            let (buf, chain, lines) = self.chain_held();
            match self.sink.write(&buf, true) {
                Ok(()) => {
                    self.written.written(lines, 0.0);
                    self.chain = chain;
                    self.held.clear();
                }
                Err(e) => self.divert_all(&e.to_string()),
            }
        }
        if let Err(e) = self.sink.sync() {
            error!(error = %e, "final audit fsync failed");
        }
    }

    /// Chains the held lines after the current chain: the bytes, the chain after them, and the
    /// number of records among them.
    fn chain_held(&self) -> (Vec<u8>, Chain, usize) {
        let mut chain = self.chain.clone();
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut records = 0;
        for h in &self.held {
            match h {
                Held::Record(e) => {
                    chain.append(&e.record, &mut buf);
                    records += 1;
                }
                Held::Checkpoint(reason) => {
                    // Only held when there is a signer.
                    if let Some(s) = &self.signer {
                        let cp = s.key.checkpoint(&chain, *reason);
                        chain.append(&cp, &mut buf);
                    }
                }
            }
        }
        (buf, chain, records)
    }

    fn count_record(&mut self) {
        if let Some(s) = &mut self.signer {
            s.since += 1;
            s.oldest.get_or_insert_with(Instant::now);
            if s.since >= s.every || s.oldest.is_some_and(|o| o.elapsed() >= s.interval) {
                let reason = if s.since >= s.every {
                    Reason::Records
                } else {
                    Reason::Interval
                };
                self.held.push(Held::Checkpoint(reason));
                self.covered();
            }
        }
    }

    fn covered(&mut self) {
        if let Some(s) = &mut self.signer {
            s.since = 0;
            s.oldest = None;
        }
    }

    /// Group commit: the write failed, so the responses waiting for it are refused (503) and their
    /// records replaced by what the client got.
    fn refuse_waiters(&mut self) {
        for h in &mut self.held {
            if let Held::Record(e) = h
                && let Some(done) = e.done.take()
            {
                if let Some(refused) = e.refused.take() {
                    e.record = refused;
                }
                let _ = done.send(false);
            }
        }
    }

    /// Past the shutdown deadline: everything held and queued goes to standard error, chained as it
    /// would have been written (so it can be appended to the file later and still verify).
    fn divert_all(&mut self, why: &str) {
        self.rx.close();
        while let Ok(e) = self.rx.try_recv() {
            self.held.push(Held::Record(e));
            self.count_record();
        }
        if self.signer.as_ref().is_some_and(|s| s.since > 0) {
            // Signed here too: the diverted lines end proven.
            self.held.push(Held::Checkpoint(Reason::Shutdown));
            self.covered();
        }
        self.refuse_waiters();
        let (buf, chain, _) = self.chain_held();
        let (mut diverted, mut lost) = (0u64, 0u64);
        for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if sink::divert(line, why) {
                diverted += 1;
            } else {
                lost += 1;
            }
        }
        self.held.clear();
        self.chain = chain;
        self.shared.diverted.fetch_add(diverted, Ordering::AcqRel);
        self.shared.lost.fetch_add(lost, Ordering::AcqRel);
        error!(
            diverted,
            lost,
            error = why,
            "audit log not writable at shutdown: {diverted} line(s) written to standard error instead (\"ztgate\":\"{}\"), {lost} lost",
            sink::NOT_WRITTEN
        );
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Opens the audit file and continues the chain after its last line.
fn open_file(path: &Path, max_bytes: u64, keep: usize) -> Result<(Sink, Chain), StartError> {
    let io = |source| StartError::Open {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut sink = Sink::File {
        path: path.to_path_buf(),
        file: None,
        len: 0,
        max_bytes,
        keep,
    };
    let chain = match last_line(path).map_err(io)? {
        // Empty or missing: a start right after a rotation continues from the rotated file.
        Tail::Empty => match last_line(&PathBuf::from(format!("{}.1", path.display()))) {
            Ok(Tail::Line(line)) => Chain::after(&line).unwrap_or_default(),
            _ => Chain::default(),
        },
        Tail::Line(line) => Chain::after(&line).unwrap_or_else(|| {
            warn!(file = %path.display(), "last audit line is not a chained record; starting a new chain");
            Chain::default()
        }),
        Tail::Partial(line) => {
            // A crash mid-write: keep the damaged file as evidence (verify flags it) and continue
            // the chain from its last complete line in a new file.
            error!(file = %path.display(), "audit file ends with a partial line; rotating it aside");
            sink.rotate().map_err(io)?;
            line.and_then(|l| Chain::after(&l)).unwrap_or_default()
        }
    };
    sink.reopen().map_err(io)?;
    Ok((sink, chain))
}
