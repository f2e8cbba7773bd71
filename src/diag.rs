//! Diagnostics for operator-edited files: every problem carries `file:line:col`.
//!
//! Config and policy loading collect *all* problems before failing, so that `ztgate check` shows
//! an operator everything wrong with a file in one pass instead of one error per edit-run cycle.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a file, located by line and column (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// All problems found in one file.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.path.display(), p.line, p.col, p.message)?;
        }
        Ok(())
    }
}

/// Collects problems against one source text, turning byte spans into line/column.
pub(crate) struct Collector<'a> {
    text: &'a str,
    problems: Vec<Problem>,
    /// What to call the key at a byte offset (`[listener] max_connections` for its value, `in
    /// [listener]` for the key itself); set for config files, empty for others.
    names: std::collections::HashMap<usize, String>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            text,
            problems: Vec::new(),
            names: std::collections::HashMap::new(),
        }
    }

    /// Names the keys of the text: a problem found at a named offset says which key it is about
    /// (`ztgate.toml:26:19: [listener] max_connections: expected a whole number ...`).
    pub(crate) fn name_keys(&mut self, names: std::collections::HashMap<usize, String>) {
        self.names = names;
    }

    pub(crate) fn push(&mut self, span: Range<usize>, message: impl Into<String>) {
        let problem = self.at(span, message);
        self.problems.push(problem);
    }

    /// A problem at `span`, named by its key as [`Collector::push`] names it, not recorded (for
    /// warnings, which do not fail the config).
    pub(crate) fn at(&self, span: Range<usize>, message: impl Into<String>) -> Problem {
        let (line, col) = line_col(self.text, span.start);
        let message = message.into();
        let message = match self.names.get(&span.start) {
            Some(name) if !message.starts_with(name.as_str()) => format!("{name}: {message}"),
            _ => message,
        };
        Problem { line, col, message }
    }

    /// Adds a TOML syntax or shape error (unknown key, wrong type, missing field). For an unknown
    /// key, names the closest valid one from `keys` (or from serde's "expected one of" list).
    pub(crate) fn push_toml(&mut self, err: &toml::de::Error, keys: &[&str]) {
        let span = err.span().unwrap_or(0..0);
        // toml's message can span several lines with a source excerpt; the first line is the gist.
        let message = err.message().lines().next().unwrap_or("invalid TOML").trim();
        let message = match unknown_field(message) {
            Some((unknown, expected)) => {
                let candidates: Vec<&str> = if keys.is_empty() { expected } else { keys.to_vec() };
                match closest(unknown, &candidates) {
                    Some(best) => format!("unknown key `{unknown}` (did you mean `{best}`?)"),
                    None => format!("unknown key `{unknown}` (valid keys: {})", candidates.join(", ")),
                }
            }
            None => plain_type_error(message).unwrap_or_else(|| message.to_string()),
        };
        self.push(span, message);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems found, sorted by line and column.
    pub(crate) fn into_problems(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|p| (p.line, p.col));
        self.problems
    }

    pub(crate) fn finish(mut self, path: &Path) -> Result<(), Diagnostics> {
        if self.problems.is_empty() {
            return Ok(());
        }
        self.problems.sort_by_key(|p| (p.line, p.col));
        Err(Diagnostics {
            path: path.to_path_buf(),
            problems: self.problems,
        })
    }
}

/// serde's "invalid type: string \"lots\", expected i64" in words an operator uses: "expected a
/// whole number, found the string \"lots\"". `None` for other messages.
fn plain_type_error(message: &str) -> Option<String> {
    let rest = message.strip_prefix("invalid type: ")?;
    let (found, expected) = rest.rsplit_once(", expected ")?;
    let expected = match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => {
            "a whole number (no quotes)"
        }
        "f32" | "f64" => "a number (no quotes)",
        "a boolean" => "true or false (no quotes)",
        "a string" => "a string in double quotes (a duration is written like \"60s\")",
        "a sequence" => "a list in brackets, like [\"a\", \"b\"]",
        "a map" => "a table",
        other => other,
    };
    let found = if let Some(s) = found.strip_prefix("string ") {
        format!("the string {s}")
    } else if let Some(n) = found
        .strip_prefix("integer ")
        .or_else(|| found.strip_prefix("floating point "))
    {
        format!("the number {}", n.trim_matches('`'))
    } else if let Some(b) = found.strip_prefix("boolean ") {
        b.trim_matches('`').to_string()
    } else if found == "sequence" {
        "a list".to_string()
    } else if found == "map" {
        "a table".to_string()
    } else {
        found.to_string()
    };
    Some(format!("expected {expected}, found {found}"))
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into `x` and `[a, b]`.
fn unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let expected = rest.split('`').skip(1).step_by(2).collect();
    Some((name, expected))
}

/// The candidate within edit distance 2 of `word` (or sharing a long prefix), if any.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (levenshtein(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// The start of every line of a text, for many offset → line lookups: O(log lines) each, where
/// [`line_col`] scans from the start. Compiling a 1,000-rule policy looked up each rule's line
/// with `line_col` and spent most of its time there (quadratic in the file size).
pub(crate) struct LineIndex(Vec<usize>);

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self(starts)
    }

    /// 1-based line of a byte offset (the same as `line_col(text, offset).0`).
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset).max(1)
    }
}

/// Parses durations as operators write them: `500ms`, `10s`, `2m`, `1h`.
pub(crate) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration `{s}` has no unit (use ms, s, m or h, e.g. `10s`)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration `{s}` must start with a whole number, e.g. `10s`"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("unknown unit `{unit}` in duration `{s}` (use ms, s, m or h)")),
    }
    .ok_or_else(|| format!("duration `{s}` is too large"))?;
    Ok(std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn type_errors_read_in_plain_words() {
        assert_eq!(
            plain_type_error("invalid type: string \"lots\", expected i64").as_deref(),
            Some("expected a whole number (no quotes), found the string \"lots\"")
        );
        assert_eq!(
            plain_type_error("invalid type: integer `5`, expected a string").as_deref(),
            Some("expected a string in double quotes (a duration is written like \"60s\"), found the number 5")
        );
        assert_eq!(
            plain_type_error("invalid type: string \"yes\", expected a boolean").as_deref(),
            Some("expected true or false (no quotes), found the string \"yes\"")
        );
        assert_eq!(plain_type_error("missing field `id`"), None);
    }

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 8), (2, 3));
    }

    #[test]
    fn line_index_agrees_with_line_col_at_every_offset() {
        for text in [
            "",
            "\n",
            "a = 1\nbb = 2\n",
            "x\n\n\nyz",
            "é = 1\n[[rule]]\nid = \"ü\"\n",
        ] {
            let index = LineIndex::new(text);
            // Spans start at character boundaries (and may point past the end).
            for offset in (0..=text.len() + 2).filter(|&o| o > text.len() || text.is_char_boundary(o)) {
                assert_eq!(index.line(offset), line_col(text, offset).0, "{text:?} at {offset}");
            }
        }
    }

    #[test]
    fn unknown_keys_get_the_closest_valid_key() {
        assert_eq!(closest("spife_id", &["spiffe_id", "cn", "paths"]), Some("spiffe_id"));
        assert_eq!(closest("efect", &["effect", "id"]), Some("effect"));
        assert_eq!(closest("zzzz", &["effect", "id"]), None);
        let (name, expected) = unknown_field("unknown field `clent_ca`, expected one of `cert`, `client_ca`").unwrap();
        assert_eq!((name, expected), ("clent_ca", vec!["cert", "client_ca"]));
    }

    #[test]
    fn durations_parse_with_units_and_reject_bare_numbers() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
    }
}
