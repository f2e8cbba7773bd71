//! Segment globs for paths and SPIFFE IDs: `*` is exactly one segment, a final `**` is any
//! number of segments (zero included, so `/admin/**` also covers `/admin` itself).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    One,
}

/// A compiled `/`-separated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegGlob {
    segs: Vec<Seg>,
    /// Ends in `**`: any remaining segments match.
    rest: bool,
}

impl SegGlob {
    /// Compiles a pattern that starts with `/`. Wildcards must fill a whole segment.
    pub fn compile(pattern: &str) -> Result<Self, String> {
        let body = pattern
            .strip_prefix('/')
            .ok_or_else(|| format!("pattern `{pattern}` must start with `/`"))?;
        let parts: Vec<&str> = body.split('/').filter(|s| !s.is_empty()).collect();
        let mut segs = Vec::with_capacity(parts.len());
        let mut rest = false;
        for (i, part) in parts.iter().enumerate() {
            match *part {
                "**" if i + 1 == parts.len() => rest = true,
                "**" => return Err(format!("`**` may only be the last segment in `{pattern}`")),
                "*" => segs.push(Seg::One),
                p if p.contains('*') => {
                    return Err(format!(
                        "`*` must be a whole segment in `{pattern}` (e.g. `/v1/*/items`)"
                    ));
                }
                p => segs.push(Seg::Lit(p.to_string())),
            }
        }
        Ok(Self { segs, rest })
    }

    /// Matches a path (already normalised); empty segments, e.g. a trailing `/`, are ignored.
    pub fn matches(&self, path: &str) -> bool {
        let mut it = path.split('/').filter(|s| !s.is_empty());
        for seg in &self.segs {
            match (seg, it.next()) {
                (_, None) => return false,
                (Seg::One, Some(_)) => {}
                (Seg::Lit(l), Some(s)) if l == s => {}
                (Seg::Lit(_), Some(_)) => return false,
            }
        }
        self.rest || it.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_star_covers_the_prefix_itself_and_everything_below() {
        let g = SegGlob::compile("/admin/**").unwrap();
        for p in ["/admin", "/admin/", "/admin/users/1"] {
            assert!(g.matches(p), "{p}");
        }
        for p in ["/", "/administrator", "/api/admin"] {
            assert!(!g.matches(p), "{p}");
        }
    }

    #[test]
    fn single_star_is_exactly_one_segment() {
        let g = SegGlob::compile("/v1/*/items").unwrap();
        assert!(g.matches("/v1/a/items"));
        assert!(!g.matches("/v1/items"));
        assert!(!g.matches("/v1/a/b/items"));
    }

    #[test]
    fn exact_patterns_match_only_themselves() {
        let g = SegGlob::compile("/healthz").unwrap();
        assert!(g.matches("/healthz"));
        assert!(!g.matches("/healthz/x"));
        let root = SegGlob::compile("/").unwrap();
        assert!(root.matches("/"));
        assert!(!root.matches("/a"));
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        assert!(SegGlob::compile("admin").is_err());
        assert!(SegGlob::compile("/a/**/b").is_err());
        assert!(SegGlob::compile("/a*").is_err());
    }
}
