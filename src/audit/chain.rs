//! The hash chain. Every line is
//!
//! ```text
//! {"seq":N,"prev":"<64 hex>",<the record's fields>,"hash":"<64 hex>"}
//! ```
//!
//! `hash` is the SHA-256 (hex) of the line's bytes up to, not including, `,"hash":` (so a line
//! proves its own content), and `prev` is the `hash` of the line before it (so it proves its
//! place). The first line ever chains to 64 zeros; the first line of a rotated-to file chains to
//! the last line of the file before it.
//!
//! Lines written before records carried their own hash (no `hash` field) are still read: their
//! successor's `prev` is the SHA-256 of the whole line, as it was then.

use sha2::{Digest, Sha256};

/// The `prev` of the very first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `,"hash":"` + 64 hex + `"}`: the fixed-length end of every line.
const HASH_OPEN: &[u8] = b",\"hash\":\"";
const SUFFIX_LEN: usize = HASH_OPEN.len() + 64 + 2;

/// Chain state: the next sequence number and the hash of the last line written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub next_seq: u64,
    /// The last line's hash (64 lowercase hex), or [`GENESIS`].
    pub prev: String,
}

impl Default for Chain {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev: GENESIS.to_string(),
        }
    }
}

impl Chain {
    /// Continues after an existing last line (read at start-up from the current file). `None`
    /// when the line is not a chained record.
    pub fn after(line: &[u8]) -> Option<Self> {
        let l = Line::parse(line)?;
        Some(Self {
            next_seq: l.seq.checked_add(1)?,
            prev: l.link,
        })
    }

    /// Appends one record (a JSON object, `{...}`) to `out` as a chained line, newline included.
    /// Returns the line's sequence number.
    pub fn append(&mut self, record: &[u8], out: &mut Vec<u8>) -> u64 {
        let seq = self.next_seq;
        let start = out.len();
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(seq.to_string().as_bytes());
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(self.prev.as_bytes());
        out.push(b'"');
        // Splice the record's fields after ours: `{"a":1}` → `,"a":1`.
        if let Some(rest) = record.strip_prefix(b"{").and_then(|r| r.strip_suffix(b"}"))
            && !rest.iter().all(u8::is_ascii_whitespace)
        {
            out.push(b',');
            out.extend_from_slice(rest);
        }
        let hash = hash_line(&out[start..]);
        out.extend_from_slice(HASH_OPEN);
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\"}\n");
        self.prev = hash;
        self.next_seq += 1;
        seq
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn hash_line(bytes: &[u8]) -> String {
    crate::identity::hex(&Sha256::digest(bytes))
}

/// One line as the verifier reads it (without its newline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) seq: u64,
    /// The `prev` the line claims.
    pub(crate) prev: String,
    /// What the next line's `prev` must be: the line's `hash` (or, for a line written before
    /// records carried one, the SHA-256 of the whole line).
    pub(crate) link: String,
    /// `Some(false)`: the line has a `hash` and its content does not match it (edited).
    /// `None`: a line from before records carried their own hash.
    pub(crate) hash_ok: Option<bool>,
}

impl Line {
    /// Reads `{"seq":N,"prev":"…"` at the start and `,"hash":"…"}` at the end; the whole line
    /// must be a JSON object. `None` when it is not a chained record at all.
    pub(crate) fn parse(line: &[u8]) -> Option<Self> {
        let rest = line.strip_prefix(b"{\"seq\":")?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let seq: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        let rest = rest[digits..].strip_prefix(b",\"prev\":\"")?;
        let prev = rest.get(..64).filter(|h| is_hex(h))?;
        if rest.get(64) != Some(&b'"') {
            return None;
        }
        serde_json::from_slice::<serde::de::IgnoredAny>(line).ok()?;
        let prev = String::from_utf8(prev.to_vec()).ok()?;
        let split = line.len().checked_sub(SUFFIX_LEN);
        let suffix = split.map(|at| (&line[..at], &line[at..]));
        match suffix {
            Some((body, tail))
                if tail.starts_with(HASH_OPEN)
                    && tail.ends_with(b"\"}")
                    && is_hex(&tail[HASH_OPEN.len()..HASH_OPEN.len() + 64]) =>
            {
                let claimed = String::from_utf8(tail[HASH_OPEN.len()..HASH_OPEN.len() + 64].to_vec()).ok()?;
                Some(Self {
                    seq,
                    prev,
                    hash_ok: Some(hash_line(body) == claimed),
                    link: claimed,
                })
            }
            _ => Some(Self {
                seq,
                prev,
                link: hash_line(line),
                hash_ok: None,
            }),
        }
    }
}

fn is_hex(b: &[u8]) -> bool {
    b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_their_own_hash_and_chain_to_the_one_before() {
        let mut c = Chain::default();
        let mut out = Vec::new();
        assert_eq!(c.append(br#"{"a":1}"#, &mut out), 1);
        assert_eq!(c.append(br#"{"b":2}"#, &mut out), 2);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let body1 = format!(r#"{{"seq":1,"prev":"{GENESIS}","a":1"#);
        let h1 = hash_line(body1.as_bytes());
        assert_eq!(lines[0], format!(r#"{body1},"hash":"{h1}"}}"#));
        let body2 = format!(r#"{{"seq":2,"prev":"{h1}","b":2"#);
        assert_eq!(
            lines[1],
            format!(r#"{body2},"hash":"{}"}}"#, hash_line(body2.as_bytes()))
        );
        assert_eq!(Chain::after(lines[1].as_bytes()), Some(c));
        let l = Line::parse(lines[0].as_bytes()).unwrap();
        assert_eq!((l.seq, l.hash_ok, l.link.as_str()), (1, Some(true), h1.as_str()));
    }

    #[test]
    fn an_edited_line_no_longer_matches_its_own_hash() {
        let mut out = Vec::new();
        Chain::default().append(br#"{"path":"/a"}"#, &mut out);
        let edited = String::from_utf8(out).unwrap().trim_end().replace("/a", "/b");
        assert_eq!(Line::parse(edited.as_bytes()).unwrap().hash_ok, Some(false));
    }

    #[test]
    fn an_empty_record_and_a_legacy_line_chain_too() {
        let mut c = Chain::default();
        let mut out = Vec::new();
        c.append(b"{}", &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with(&format!(r#"{{"seq":1,"prev":"{GENESIS}","hash":""#)));
        assert_eq!(Line::parse(line.trim_end().as_bytes()).unwrap().hash_ok, Some(true));
        // A line from before records carried their own hash: the next one chains to all of it.
        let legacy = format!(r#"{{"seq":7,"prev":"{GENESIS}","a":1}}"#);
        let after = Chain::after(legacy.as_bytes()).unwrap();
        assert_eq!((after.next_seq, after.prev), (8, hash_line(legacy.as_bytes())));
        assert_eq!(Line::parse(legacy.as_bytes()).unwrap().hash_ok, None);
        assert_eq!(Line::parse(b"not json"), None);
        assert_eq!(Line::parse(br#"{"seq":1}"#), None);
    }
}
