//! Request path normalisation, done before routing and policy so that `/x/../admin`,
//! `/%61dmin` and `//admin` are all judged (and forwarded) as `/admin`.
//!
//! Percent-encoded unreserved characters are decoded (RFC 3986 §6.2.2.2), other escapes are kept
//! with uppercase hex, duplicate slashes merged and dot segments removed (§5.2.4). What cannot be
//! normalised without guessing how the upstream reads it is refused: an encoded `/` or `\`, a raw
//! `\`, and a path that climbs above the root.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("malformed percent-escape")]
    BadEscape,
    #[error("encoded '/' or '\\' in path")]
    EncodedSeparator,
    #[error("'\\' in path")]
    Backslash,
    #[error("path escapes the root with '..'")]
    EscapesRoot,
    /// RFC 3986 paths are ASCII without controls or spaces; anything else must be percent-encoded.
    #[error("raw control, space or non-ASCII byte in path")]
    InvalidCharacter,
    /// A `;` parameter that cannot be judged: `%3B` (servers disagree on whether it splits a
    /// segment), or, where parameters are allowed, one on an empty, `.` or `..` segment
    /// (`/..;x/admin` is `/../admin` to a Servlet container).
    #[error("ambiguous ';' path parameter")]
    Parameter,
}

/// How a route treats `;` path parameters (RFC 3986 §3.3), which Servlet containers remove
/// from each segment before routing (`/admin;x=1/users` is `/admin/users` to Tomcat).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PathParameters {
    /// A path with a `;` is refused with 400 (the default): ztgate cannot know how the upstream
    /// reads it.
    #[default]
    Refuse,
    /// For upstreams that use matrix parameters: the path is forwarded as sent, and routing and
    /// policy judge it with every parameter removed ([`without_parameters`]).
    Allow,
}

/// Returns the normalised path; borrows when the input is already normal (the common case).
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return Err(PathError::InvalidCharacter);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split('/').skip(1) {
        trailing_slash = false;
        match seg {
            "" | "." => trailing_slash = true,
            ".." => {
                out.pop().ok_or(PathError::EscapesRoot)?;
                trailing_slash = true;
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    Ok(Cow::Owned(result))
}

/// One pass over the bytes: no `%`, no empty, `.` or `..` segment (a trailing `/` is fine).
fn is_normal(path: &str) -> bool {
    // Length of the current segment, and whether it is all dots so far.
    let (mut len, mut dots) = (0usize, true);
    for &b in path.as_bytes().iter().skip(1) {
        match b {
            b'%' => return false,
            b'/' => {
                if len == 0 || (dots && len <= 2) {
                    return false;
                }
                (len, dots) = (0, true);
            }
            b'.' => len += 1,
            _ => (len, dots) = (len + 1, false),
        }
    }
    !(dots && (1..=2).contains(&len))
}

/// The path as a Servlet container (Tomcat, Jetty, Spring) reads it: every `;…` parameter
/// removed from each segment (RFC 3986 §3.3 leaves their meaning to the server). Takes a path
/// [`normalize`] returned; `None` when it has no `;` (the common case, no allocation).
///
/// A parameter on an empty, `.` or `..` segment is refused ([`PathError::Parameter`]): removing
/// it would create a dot segment or an empty one that the upstream resolves after judging.
pub fn without_parameters(path: &str) -> Result<Option<String>, PathError> {
    if !path.contains(';') {
        return Ok(None);
    }
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').skip(1) {
        let name = match seg.split_once(';') {
            Some(("" | "." | "..", _)) => return Err(PathError::Parameter),
            Some((name, _)) => name,
            None => seg,
        };
        out.push('/');
        out.push_str(name);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(Some(out))
}

fn decode_unreserved(path: &str) -> Result<String, PathError> {
    // `normalize` has refused every non-ASCII byte, so pushing bytes as chars is exact.
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16));
        let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16));
        let (Some(hi), Some(lo)) = (hi, lo) else {
            return Err(PathError::BadEscape);
        };
        let v = (hi * 16 + lo) as u8;
        match v {
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            b';' => return Err(PathError::Parameter),
            v if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => out.push(v as char),
            v => {
                out.push('%');
                out.push(char::from(b"0123456789ABCDEF"[(v >> 4) as usize]));
                out.push(char::from(b"0123456789ABCDEF"[(v & 0xf) as usize]));
            }
        }
        i += 3;
    }
    Ok(out)
}

impl From<PathError> for crate::error::BadRequest {
    fn from(e: PathError) -> Self {
        use PathError as P;
        match e {
            P::NotAbsolute => crate::error::BadRequest::PathNotAbsolute,
            P::BadEscape => crate::error::BadRequest::PathBadEscape,
            P::EncodedSeparator => crate::error::BadRequest::PathEncodedSeparator,
            P::Backslash => crate::error::BadRequest::PathBackslash,
            P::EscapesRoot => crate::error::BadRequest::PathEscapesRoot,
            P::InvalidCharacter => crate::error::BadRequest::PathInvalidCharacter,
            P::Parameter => crate::error::BadRequest::PathParameter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bypass_attempts_normalise_to_the_protected_path() {
        for input in [
            "/admin",
            "/x/../admin",
            "/%61dmin",
            "//admin",
            "/./admin",
            "/a/b/../../admin",
            "/%2e%2e/admin/..//admin",
        ] {
            let got = normalize(input);
            // "/%2e%2e/admin" climbs above the root and must be refused, not matched loosely.
            if input.starts_with("/%2e%2e") {
                assert_eq!(got, Err(PathError::EscapesRoot), "{input}");
            } else {
                assert_eq!(got.as_deref(), Ok("/admin"), "{input}");
            }
        }
    }

    #[test]
    fn normal_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/api/v1/items",
            "/a/b/",
            "/file.tar.gz",
            "/...",
            "/a/.hidden",
            "/..a",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(s)) if s == p), "{p}");
        }
    }

    #[test]
    fn dot_segments_keep_a_directory_trailing_slash() {
        assert_eq!(normalize("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(normalize("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(normalize("/a//").as_deref(), Ok("/a/"));
        assert_eq!(normalize("/..%2F").unwrap_err(), PathError::EncodedSeparator);
    }

    #[test]
    fn reserved_escapes_are_kept_with_uppercase_hex() {
        assert_eq!(normalize("/a%3fb%20c").as_deref(), Ok("/a%3Fb%20c"));
    }

    #[test]
    fn raw_controls_and_non_ascii_are_refused_and_escaped_ones_round_trip() {
        // Found by the path_normalize fuzz target: raw UTF-8 was re-encoded byte by byte
        // (mojibake), so normalising twice gave a different path.
        assert_eq!(normalize("/a//\u{690}/b"), Err(PathError::InvalidCharacter));
        assert_eq!(normalize("/a\u{0}b"), Err(PathError::InvalidCharacter));
        assert_eq!(normalize("/a b"), Err(PathError::InvalidCharacter));
        assert_eq!(normalize("/a\u{7f}"), Err(PathError::InvalidCharacter));
        let n = normalize("/x/../%DA%90//b").unwrap();
        assert_eq!(n, "/%DA%90/b");
        assert_eq!(normalize(&n).unwrap(), n);
    }

    #[test]
    fn parameters_are_removed_per_segment_for_judging() {
        assert_eq!(without_parameters("/admin/users"), Ok(None));
        assert_eq!(without_parameters("/admin;x=1/users"), Ok(Some("/admin/users".into())));
        assert_eq!(without_parameters("/a;jsessionid=1"), Ok(Some("/a".into())));
        assert_eq!(without_parameters("/app/..;/admin"), Err(PathError::Parameter));
        assert_eq!(without_parameters("/app/.;x/admin"), Err(PathError::Parameter));
        assert_eq!(without_parameters("/;x/admin"), Err(PathError::Parameter));
        // A raw `;` survives normalisation (the route decides); `%3B` is refused outright.
        assert_eq!(normalize("/admin;x=1/users").as_deref(), Ok("/admin;x=1/users"));
        assert_eq!(normalize("/admin%3Bx=1/users"), Err(PathError::Parameter));
        assert_eq!(normalize("/admin%3bx/users"), Err(PathError::Parameter));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(normalize("/a%2Fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(normalize("/a\\b"), Err(PathError::Backslash));
        assert_eq!(normalize("/.."), Err(PathError::EscapesRoot));
        assert_eq!(normalize("/a/../.."), Err(PathError::EscapesRoot));
        assert_eq!(normalize("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize("/a%4"), Err(PathError::BadEscape));
        assert_eq!(normalize("admin"), Err(PathError::NotAbsolute));
    }
}
