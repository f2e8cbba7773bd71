//! The writer task: takes serialized records from a bounded channel, chains them, writes them in
//! batches, fsyncs per policy, rotates by size. When a write fails (disk full, file gone) it
//! marks the sink unhealthy — the request path then fails closed — keeps the batch, and retries
//! by reopening the file until a write succeeds.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::chain::Chain;
use super::{Fsync, Shared, SinkConfig};
use crate::telemetry::metrics;

const BATCH: usize = 512;
const RETRY: Duration = Duration::from_millis(250);
/// How long the writer waits after the first record of a batch for more to arrive.
const LINGER: Duration = Duration::from_millis(2);

enum Sink {
    File {
        path: PathBuf,
        file: Option<File>,
        /// Bytes in the current file.
        len: u64,
        max_bytes: u64,
        keep: usize,
    },
    Stdout,
}

pub(super) struct Writer {
    rx: mpsc::Receiver<Vec<u8>>,
    sink: Sink,
    chain: Chain,
    fsync: Fsync,
    shared: Arc<Shared>,
}

impl Writer {
    /// Opens the sink and recovers the chain from the current file's last line.
    pub(super) fn open(
        rx: mpsc::Receiver<Vec<u8>>,
        sink: &SinkConfig,
        fsync: Fsync,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        let (sink, chain) = match sink {
            SinkConfig::Stdout => (Sink::Stdout, Chain::default()),
            SinkConfig::File { path, max_bytes, keep } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let mut sink = Sink::File {
                    path: path.clone(),
                    file: None,
                    len: 0,
                    max_bytes: *max_bytes,
                    keep: *keep,
                };
                let chain = match last_line(path)? {
                    Tail::Empty => Chain::default(),
                    Tail::Line(line) => Chain::after(&line).unwrap_or_else(|| {
                        warn!(file = %path.display(), "last audit line is not a chained record; starting a new chain");
                        Chain::default()
                    }),
                    Tail::Partial(line) => {
                        // A crash mid-write: keep the damaged file as evidence (verify flags it)
                        // and continue the chain from its last complete line in a new file.
                        error!(file = %path.display(), "audit file ends with a partial line; rotating it aside");
                        sink.rotate()?;
                        line.and_then(|l| Chain::after(&l)).unwrap_or_default()
                    }
                };
                sink.reopen()?;
                (sink, chain)
            }
        };
        Ok(Self {
            rx,
            sink,
            chain,
            fsync,
            shared,
        })
    }

    /// Runs until `stop` is notified (or every sender is gone), then writes what is queued.
    pub(super) async fn run(mut self, stop: Arc<tokio::sync::Notify>) {
        let mut stopping = false;
        let mut records: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut pending_records = 0usize;
        let mut last_sync = Instant::now();
        loop {
            if buf.is_empty() {
                // Wait for work; 0 means the channel is closed and drained.
                let n = if stopping {
                    self.rx.recv_many(&mut records, BATCH).await
                } else {
                    tokio::select! {
                        n = self.rx.recv_many(&mut records, BATCH) => n,
                        () = stop.notified() => {
                            // No new records; what is queued is still delivered below.
                            self.rx.close();
                            stopping = true;
                            continue;
                        }
                    }
                };
                if n == 0 {
                    break;
                }
                if n < BATCH && !stopping {
                    // Linger briefly so one wake-up, one write and one fsync serve many records.
                    // Requests do not wait for this (only for queue space).
                    tokio::time::sleep(LINGER).await;
                    while records.len() < 4 * BATCH {
                        match self.rx.try_recv() {
                            Ok(r) => records.push(r),
                            Err(_) => break,
                        }
                    }
                }
                for r in records.drain(..) {
                    self.chain.append(&r, &mut buf);
                    pending_records += 1;
                }
            }
            let sync = match self.fsync {
                Fsync::Batch => true,
                Fsync::Interval(every) => last_sync.elapsed() >= every,
            };
            let started = Instant::now();
            match self.sink.write(&buf, sync) {
                Ok(()) => {
                    metrics::audit_written(pending_records, started.elapsed().as_secs_f64());
                    if sync {
                        last_sync = Instant::now();
                    }
                    buf.clear();
                    pending_records = 0;
                    if !self.shared.healthy.swap(true, Ordering::AcqRel) {
                        info!("audit log writable again; accepting requests");
                        metrics::audit_healthy(true);
                    }
                    if let Err(e) = self.sink.rotate_if_full() {
                        error!(error = %e, "audit log rotation failed; writing on to the current file");
                    }
                }
                Err(e) => {
                    if self.shared.healthy.swap(false, Ordering::AcqRel) {
                        error!(error = %e, "AUDIT LOG WRITE FAILED: refusing new requests (503) until it recovers");
                        metrics::audit_healthy(false);
                    }
                    metrics::audit_write_error();
                    tokio::time::sleep(RETRY).await;
                    if let Err(e) = self.sink.reopen() {
                        warn!(error = %e, "audit log still cannot be opened");
                    }
                }
            }
        }
        if let Err(e) = self.sink.sync() {
            error!(error = %e, "final audit fsync failed");
        }
    }
}

impl Sink {
    fn write(&mut self, buf: &[u8], sync: bool) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(buf)?;
                out.flush()
            }
            Sink::File { file, len, .. } => {
                let f = file
                    .as_mut()
                    .ok_or_else(|| io::Error::other("audit file is not open"))?;
                if let Err(e) = f.write_all(buf) {
                    // Never leave half a batch behind: the retry writes it whole, and a partial
                    // line would break the chain.
                    let _ = f.set_len(*len);
                    return Err(e);
                }
                if sync {
                    f.sync_data()?;
                }
                *len += buf.len() as u64;
                Ok(())
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        match self {
            Sink::File { file: Some(f), .. } => f.sync_all(),
            _ => Ok(()),
        }
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File { path, file, len, .. } = self {
            let f = OpenOptions::new().create(true).append(true).open(&*path)?;
            *len = f.metadata().map(|m| m.len()).unwrap_or(0);
            *file = Some(f);
        }
        Ok(())
    }

    fn rotate_if_full(&mut self) -> io::Result<()> {
        match self {
            Sink::File { len, max_bytes, .. } if *len >= *max_bytes => {
                self.rotate()?;
                self.reopen()
            }
            _ => Ok(()),
        }
    }

    /// `path` → `path.1`, `path.1` → `path.2`, ...; the oldest beyond `keep` is deleted.
    fn rotate(&mut self) -> io::Result<()> {
        let Sink::File { path, file, keep, .. } = self else {
            return Ok(());
        };
        if let Some(f) = file.take() {
            f.sync_all()?;
        }
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        let _ = std::fs::remove_file(numbered(*keep));
        for n in (1..*keep).rev() {
            if numbered(n).exists() {
                std::fs::rename(numbered(n), numbered(n + 1))?;
            }
        }
        if *keep > 0 {
            std::fs::rename(&*path, numbered(1))?;
        } else {
            std::fs::remove_file(&*path)?;
        }
        Ok(())
    }
}

enum Tail {
    Empty,
    Line(Vec<u8>),
    /// The file does not end with a newline; the last complete line, if any.
    Partial(Option<Vec<u8>>),
}

/// The file's last line, reading only its tail.
fn last_line(path: &Path) -> io::Result<Tail> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Tail::Empty),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(Tail::Empty);
    }
    let start = len.saturating_sub(256 * 1024);
    f.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail)?;
    let complete = tail.ends_with(b"\n");
    let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let mut lines = body.rsplit(|b| *b == b'\n');
    let last = lines.next().map(<[u8]>::to_vec);
    Ok(if complete {
        last.map_or(Tail::Empty, Tail::Line)
    } else {
        Tail::Partial(lines.next().map(<[u8]>::to_vec))
    })
}
