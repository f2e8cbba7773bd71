//! `ztgate audit verify FILE...`: checks the chain across files given oldest first (e.g.
//! `audit.log.2 audit.log.1 audit.log`) and reports the first broken line.

use std::path::{Path, PathBuf};

use super::chain::hash_line;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}:{line}: not a JSON audit record with seq and prev (edited or truncated)")]
    Malformed { path: PathBuf, line: usize },
    #[error("{path}:{line}: prev does not match the line before: a line was edited, deleted or reordered")]
    BrokenLink { path: PathBuf, line: usize },
    #[error("{path}:{line}: seq {got} where {want} was expected: a line was deleted or reordered")]
    Sequence {
        path: PathBuf,
        line: usize,
        got: u64,
        want: u64,
    },
    #[error("{path}: the last line has no newline: the file was truncated")]
    Truncated { path: PathBuf },
}

/// What a successful verification covered.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

pub fn verify(files: &[&Path]) -> Result<Verified, VerifyError> {
    let mut prev: Option<(String, u64)> = None; // hash and seq of the last line seen
    let mut out = Verified {
        records: 0,
        first_seq: None,
        last_seq: None,
    };
    for path in files {
        let data = std::fs::read(path).map_err(|e| VerifyError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if !data.is_empty() && !data.ends_with(b"\n") {
            return Err(VerifyError::Truncated {
                path: path.to_path_buf(),
            });
        }
        // Every line ends with a newline (checked above), so each chunk is one whole line.
        for (i, chunk) in data.split_inclusive(|b| *b == b'\n').enumerate() {
            let line = chunk.strip_suffix(b"\n").unwrap_or(chunk);
            let n = i + 1;
            let here = || path.to_path_buf();
            let v: serde_json::Value =
                serde_json::from_slice(line).map_err(|_| VerifyError::Malformed { path: here(), line: n })?;
            let (Some(seq), Some(claimed)) = (
                v.get("seq").and_then(|s| s.as_u64()),
                v.get("prev").and_then(|p| p.as_str()),
            ) else {
                return Err(VerifyError::Malformed { path: here(), line: n });
            };
            if let Some((hash, last)) = &prev {
                if seq != last + 1 {
                    return Err(VerifyError::Sequence {
                        path: here(),
                        line: n,
                        got: seq,
                        want: last + 1,
                    });
                }
                if claimed != hash {
                    return Err(VerifyError::BrokenLink { path: here(), line: n });
                }
            }
            out.first_seq.get_or_insert(seq);
            out.last_seq = Some(seq);
            out.records += 1;
            prev = Some((hash_line(line), seq));
        }
    }
    Ok(out)
}
