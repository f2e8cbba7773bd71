//! Where chained lines go: the audit file (with size rotation) or standard output, and the
//! last resort, standard error, for lines that cannot reach either before ztgate exits.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub(super) enum Sink {
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

impl Sink {
    pub(super) fn write(&mut self, buf: &[u8], sync: bool) -> io::Result<()> {
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

    pub(super) fn sync(&mut self) -> io::Result<()> {
        match self {
            Sink::File { file: Some(f), .. } => f.sync_all(),
            _ => Ok(()),
        }
    }

    pub(super) fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File { path, file, len, .. } = self {
            let f = OpenOptions::new().create(true).append(true).open(&*path)?;
            *len = f.metadata().map(|m| m.len()).unwrap_or(0);
            *file = Some(f);
        }
        Ok(())
    }

    /// Whether the current file has reached `max_bytes` (time to rotate).
    pub(super) fn is_full(&self) -> bool {
        matches!(self, Sink::File { len, max_bytes, .. } if *len >= *max_bytes)
    }

    pub(super) fn rotate_and_reopen(&mut self) -> io::Result<()> {
        self.rotate()?;
        self.reopen()
    }

    /// `path` → `path.1`, `path.1` → `path.2`, ...; the oldest beyond `keep` is deleted.
    pub(super) fn rotate(&mut self) -> io::Result<()> {
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

/// The mark on a line written to the last-resort sink; docs/audit.md.
pub const NOT_WRITTEN: &str = "audit-record-not-written";

/// Writes `line` (a JSON object: a chained line, or a record that never got a place in the chain)
/// to standard error as one JSON line `{"ztgate":"audit-record-not-written","error":...,"record":
/// <line>}`. `false` when even that failed (the record is lost).
pub(super) fn divert(line: &[u8], error: &str) -> bool {
    let mut out = Vec::with_capacity(line.len() + 96);
    out.extend_from_slice(b"{\"ztgate\":\"");
    out.extend_from_slice(NOT_WRITTEN.as_bytes());
    out.extend_from_slice(b"\",\"error\":");
    // A string always serializes.
    out.extend_from_slice(&serde_json::to_vec(error).unwrap_or_else(|_| b"\"\"".to_vec()));
    out.extend_from_slice(b",\"record\":");
    out.extend_from_slice(line);
    out.extend_from_slice(b"}\n");
    let mut err = io::stderr().lock();
    err.write_all(&out).and_then(|()| err.flush()).is_ok()
}

pub(super) enum Tail {
    Empty,
    Line(Vec<u8>),
    /// The file does not end with a newline; the last complete line, if any.
    Partial(Option<Vec<u8>>),
}

/// The file's last line, reading only its tail.
pub(super) fn last_line(path: &Path) -> io::Result<Tail> {
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
