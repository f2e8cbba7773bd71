//! SPIFFE ID parsing per the SPIFFE ID standard (spiffe/standards SPIFFE-ID.md §2).

use std::fmt;

/// A validated SPIFFE ID: `spiffe://<trust-domain><path>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    /// The full ID as it appears in the certificate (already canonical: validation rejects
    /// anything that would need normalising).
    id: String,
    /// Byte offset where the path starts inside `id` (`id.len()` when the path is empty).
    path_start: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("not a spiffe:// URI")]
    Scheme,
    #[error("SPIFFE ID is longer than 2048 bytes")]
    TooLong,
    #[error("empty trust domain")]
    EmptyTrustDomain,
    #[error("trust domain may only contain lowercase letters, digits, '.', '-' and '_'")]
    TrustDomainChars,
    #[error("path segments must be non-empty, not '.' or '..', without a trailing '/'")]
    PathSegment,
    #[error("path may only contain letters, digits, '.', '-', '_' and '/'")]
    PathChars,
}

const SCHEME: &str = "spiffe://";

impl SpiffeId {
    pub fn parse(s: &str) -> Result<Self, SpiffeError> {
        if s.len() > 2048 {
            return Err(SpiffeError::TooLong);
        }
        // The scheme is case-insensitive in URIs, but the SPIFFE spec requires lowercase.
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeError::Scheme)?;
        let (td, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if td.is_empty() {
            return Err(SpiffeError::EmptyTrustDomain);
        }
        // This also rejects userinfo ('@'), ports (':'), query ('?') and fragment ('#').
        if !td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        {
            return Err(SpiffeError::TrustDomainChars);
        }
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() || seg == "." || seg == ".." {
                    return Err(SpiffeError::PathSegment);
                }
                if !seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
                    return Err(SpiffeError::PathChars);
                }
            }
        }
        Ok(Self {
            id: s.to_string(),
            path_start: SCHEME.len() + td.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME.len()..self.path_start]
    }

    /// The path, `""` or starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.path_start..]
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_split_into_trust_domain_and_path() {
        let id = SpiffeId::parse("spiffe://ztgate.dev/ns/default/sa/client").unwrap();
        assert_eq!(id.trust_domain(), "ztgate.dev");
        assert_eq!(id.path(), "/ns/default/sa/client");
        let bare = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(bare.trust_domain(), "example.org");
        assert_eq!(bare.path(), "");
    }

    #[test]
    fn invalid_ids_are_rejected_with_the_rule_they_break() {
        let cases = [
            ("https://example.org/x", SpiffeError::Scheme),
            ("SPIFFE://example.org/x", SpiffeError::Scheme),
            ("spiffe:///x", SpiffeError::EmptyTrustDomain),
            ("spiffe://Example.org/x", SpiffeError::TrustDomainChars),
            ("spiffe://user@example.org/x", SpiffeError::TrustDomainChars),
            ("spiffe://example.org:8443/x", SpiffeError::TrustDomainChars),
            ("spiffe://example.org/", SpiffeError::PathSegment),
            ("spiffe://example.org/a//b", SpiffeError::PathSegment),
            ("spiffe://example.org/a/../b", SpiffeError::PathSegment),
            ("spiffe://example.org/a?b=c", SpiffeError::PathChars),
            ("spiffe://example.org/a%20b", SpiffeError::PathChars),
        ];
        for (input, want) in cases {
            assert_eq!(SpiffeId::parse(input), Err(want), "{input}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert_eq!(SpiffeId::parse(&long), Err(SpiffeError::TooLong));
    }
}
