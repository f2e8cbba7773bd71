//! The hash chain: every line carries `seq` and `prev` = SHA-256 (hex) of the previous line's
//! bytes (without its newline). The first line ever chains to 64 zeros; the first line of a
//! rotated-to file chains to the last line of the file before it.

use sha2::{Digest, Sha256};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Chain state: the next sequence number and the hash of the last line written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub next_seq: u64,
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
    /// Continues after an existing last line (read at start-up from the current file).
    pub fn after(line: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        Some(Self {
            next_seq: v.get("seq")?.as_u64()? + 1,
            prev: hash_line(line),
        })
    }

    /// Appends one record (a JSON object, `{...}`) to `out` as a chained line, newline included.
    pub fn append(&mut self, record: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(self.next_seq.to_string().as_bytes());
        out.extend_from_slice(b",\"prev\":\"");
        out.extend_from_slice(self.prev.as_bytes());
        out.push(b'"');
        // Splice the record's fields after ours: `{"a":1}` → `,"a":1}`.
        match record.strip_prefix(b"{") {
            Some(b"}") | None => out.push(b'}'),
            Some(rest) => {
                out.push(b',');
                out.extend_from_slice(rest);
            }
        }
        self.prev = hash_line(&out[start..]);
        self.next_seq += 1;
        out.push(b'\n');
    }
}

pub fn hash_line(line: &[u8]) -> String {
    crate::identity::hex(&Sha256::digest(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_chain_by_hash_and_sequence() {
        let mut c = Chain::default();
        let mut out = Vec::new();
        c.append(br#"{"a":1}"#, &mut out);
        c.append(br#"{"b":2}"#, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!(r#"{{"seq":1,"prev":"{GENESIS}","a":1}}"#));
        assert_eq!(
            lines[1],
            format!(r#"{{"seq":2,"prev":"{}","b":2}}"#, hash_line(lines[0].as_bytes()))
        );
        assert_eq!(Chain::after(lines[1].as_bytes()), Some(c));
    }
}
