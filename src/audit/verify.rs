//! `ztgate audit verify [--key PUB]... FILE...`: checks the chain across files given oldest first
//! (e.g. `audit.log.2 audit.log.1 audit.log`), names the first line that was edited, deleted,
//! reordered or cut, and with public keys checks the signed checkpoints: every line up to the
//! last valid checkpoint is proven, the lines after it are counted as unproven.

use std::path::{Path, PathBuf};

use super::chain::Line;
use super::checkpoint::{Reason, VerifyingKey};

/// Why verification failed. [`VerifyError::Read`] is about the command line (a file that cannot
/// be read); every other variant is evidence of tampering or damage and names the line.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}:{line}: not a chained audit record (a line that is not JSON, or lacks seq and prev): edited or damaged"
    )]
    Malformed { path: PathBuf, line: usize },
    #[error("{path}:{line}: the line does not match its own hash: it was edited")]
    Edited { path: PathBuf, line: usize },
    #[error(
        "{path}:{line}: the line was rewritten (its hash was recomputed, but the next line, {next_path}:{next_line}, chains to the original)"
    )]
    Rewritten {
        path: PathBuf,
        line: usize,
        next_path: PathBuf,
        next_line: usize,
    },
    #[error("{path}:{line}: seq {got} where {want} was expected: {what}")]
    Sequence {
        path: PathBuf,
        line: usize,
        got: u64,
        want: u64,
        /// Which records were deleted, or where the expected one is (reordered).
        what: String,
    },
    #[error("{path}:{line}: the line has no hash although the lines before it do: edited")]
    MissingHash { path: PathBuf, line: usize },
    #[error("{path}: the last line has no newline: the file was truncated")]
    Truncated { path: PathBuf },
    #[error("{path}:{line}: checkpoint {why}")]
    Checkpoint {
        path: PathBuf,
        line: usize,
        why: CheckpointFault,
    },
}

impl VerifyError {
    /// True when a file could not be read at all (a usage problem, not evidence of tampering).
    pub fn is_unreadable(&self) -> bool {
        matches!(self, VerifyError::Read { .. })
    }
}

/// What is wrong with a checkpoint line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointFault {
    #[error("lacks ts, key, reason or sig: edited")]
    Fields,
    #[error("is signed by key {0}, which is not among the --key files given")]
    UnknownKey(String),
    #[error("signature does not verify: the checkpoint was forged, edited or moved")]
    BadSignature,
}

/// The last checkpoint whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The checkpoint line's `seq`: every line up to it is proven.
    pub seq: u64,
    pub path: PathBuf,
    pub line: usize,
    /// The checkpoint's `ts`.
    pub ts: String,
    /// True for the checkpoint ztgate writes when it stops.
    pub at_shutdown: bool,
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// Lines read (records and checkpoints).
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Checkpoint lines seen (verified only when keys were given).
    pub checkpoints: u64,
    /// With keys: the last checkpoint that verified.
    pub proven: Option<Proven>,
    /// With keys: lines after the last verified checkpoint (all of them when none verified).
    pub unproven: u64,
}

/// The line before the current one, for the link check and for naming it.
struct Previous {
    link: String,
    seq: u64,
    file: usize,
    line: usize,
    hashed: bool,
}

/// Verifies `files` (oldest first) as one chain; `keys` (may be empty) check the checkpoints.
pub fn verify(files: &[&Path], keys: &[VerifyingKey]) -> Result<Verified, VerifyError> {
    let mut prev: Option<Previous> = None;
    let mut out = Verified::default();
    for (fi, path) in files.iter().enumerate() {
        let data = std::fs::read(path).map_err(|source| VerifyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if !data.is_empty() && !data.ends_with(b"\n") {
            return Err(VerifyError::Truncated {
                path: path.to_path_buf(),
            });
        }
        // Every line ends with a newline (checked above), so each chunk is one whole line.
        for (i, chunk) in data.split_inclusive(|b| *b == b'\n').enumerate() {
            let raw = chunk.strip_suffix(b"\n").unwrap_or(chunk);
            let n = i + 1;
            let here = || path.to_path_buf();
            let line = Line::parse(raw).ok_or_else(|| VerifyError::Malformed { path: here(), line: n })?;
            match line.hash_ok {
                Some(false) => return Err(VerifyError::Edited { path: here(), line: n }),
                None if prev.as_ref().is_some_and(|p| p.hashed) => {
                    return Err(VerifyError::MissingHash { path: here(), line: n });
                }
                _ => {}
            }
            if let Some(p) = &prev {
                let want = p.seq + 1;
                if line.seq != want {
                    return Err(VerifyError::Sequence {
                        path: here(),
                        line: n,
                        got: line.seq,
                        want,
                        what: explain_gap(files, want, line.seq),
                    });
                }
                if line.prev != p.link {
                    // Both lines match their own hashes, so the one before was rewritten whole.
                    return Err(VerifyError::Rewritten {
                        path: files[p.file].to_path_buf(),
                        line: p.line,
                        next_path: here(),
                        next_line: n,
                    });
                }
            }
            out.records += 1;
            out.unproven += 1;
            out.first_seq.get_or_insert(line.seq);
            out.last_seq = Some(line.seq);
            if let Some(cp) = checkpoint_fields(raw) {
                out.checkpoints += 1;
                if !keys.is_empty() {
                    let fault = |why| VerifyError::Checkpoint {
                        path: here(),
                        line: n,
                        why,
                    };
                    let cp = cp.ok_or_else(|| fault(CheckpointFault::Fields))?;
                    let key = keys
                        .iter()
                        .find(|k| k.id() == cp.key)
                        .ok_or_else(|| fault(CheckpointFault::UnknownKey(cp.key.clone())))?;
                    if !key.verifies(line.seq, &line.prev, &cp.ts, &cp.reason, &cp.sig) {
                        return Err(fault(CheckpointFault::BadSignature));
                    }
                    out.unproven = 0;
                    out.proven = Some(Proven {
                        seq: line.seq,
                        path: here(),
                        line: n,
                        at_shutdown: Reason::parse(&cp.reason) == Some(Reason::Shutdown),
                        ts: cp.ts,
                    });
                }
            }
            prev = Some(Previous {
                hashed: line.hash_ok.is_some(),
                link: line.link,
                seq: line.seq,
                file: fi,
                line: n,
            });
        }
    }
    Ok(out)
}

struct CheckpointLine {
    ts: String,
    key: String,
    reason: String,
    sig: String,
}

/// `None`: not a checkpoint. `Some(None)`: a checkpoint missing a field. Only a line with the
/// bytes `"kind":"checkpoint"` is parsed (inside a JSON string the quotes would be escaped).
fn checkpoint_fields(raw: &[u8]) -> Option<Option<CheckpointLine>> {
    const MARK: &[u8] = b"\"kind\":\"checkpoint\"";
    if !raw.windows(MARK.len()).any(|w| w == MARK) {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
    if v.get("kind").and_then(|k| k.as_str()) != Some("checkpoint") {
        return None;
    }
    let field = |name: &str| v.get(name).and_then(|f| f.as_str()).map(str::to_string);
    Some((|| {
        Some(CheckpointLine {
            ts: field("ts")?,
            key: field("key")?,
            reason: field("reason")?,
            sig: field("sig")?,
        })
    })())
}

/// Says whether the records between `want` and `got` were deleted or moved elsewhere.
fn explain_gap(files: &[&Path], want: u64, got: u64) -> String {
    for path in files {
        let Ok(data) = std::fs::read(path) else { continue };
        for (i, raw) in data.split(|b| *b == b'\n').enumerate() {
            if Line::parse(raw).is_some_and(|l| l.seq == want) {
                return format!("lines were reordered (seq {want} is at {}:{})", path.display(), i + 1);
            }
        }
    }
    if got > want {
        let last = got - 1;
        let range = if last == want {
            format!("record {want} was")
        } else {
            format!("records {want}..{last} were")
        };
        format!("{range} deleted")
    } else {
        format!("record {want} is missing and seq {got} came earlier: lines were deleted or reordered")
    }
}
