//! How long a fetched key set stays fresh, from its answer's HTTP cache headers (RFC 9111), clamped
//! to the operator's bounds. Pure: unit-tested here, used by the refresher in [`super::remote`].
//!
//! - `Cache-Control: max-age=N` with `Age: A` → fresh for `N - A` seconds (§4.2.1, §4.2.3).
//! - `no-store`, `no-cache`, no `max-age`, an unparsable or repeated `max-age` → no freshness:
//!   the minimum interval. Key sets are small and a conditional request (`If-None-Match`) answers
//!   `304` cheaply, so treating "unknown" as "short" costs little and lets a removed key stop
//!   working soonest. `Expires` is not read: every IdP tried sends `Cache-Control`.

use std::time::Duration;

use http::HeaderMap;
use http::header::{AGE, CACHE_CONTROL};

/// The interval until the next refresh: the answer's freshness lifetime clamped to
/// `[min, max]`; `min` when the answer gives none. `min > max` is refused by validation; if it
/// ever happened, `min` wins (the rate limit is the stronger promise).
pub(super) fn refresh_interval(headers: &HeaderMap, min: Duration, max: Duration) -> Duration {
    freshness_lifetime(headers).unwrap_or(min).min(max).max(min)
}

/// `max-age` minus `Age`, or `None` when the answer must not be reused without asking again.
fn freshness_lifetime(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age: Option<u64> = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let text = value.to_str().ok()?;
        for directive in text.split(',') {
            let directive = directive.trim();
            let (name, arg) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (directive, None),
            };
            if name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("no-cache") {
                return None;
            }
            if name.eq_ignore_ascii_case("max-age") {
                // RFC 9111 §4.2.1: a repeated or invalid value makes the answer stale.
                let secs = arg.and_then(|a| a.parse::<u64>().ok())?;
                if max_age.replace(secs).is_some() {
                    return None;
                }
            }
        }
    }
    let age = headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    max_age.map(|m| Duration::from_secs(m.saturating_sub(age)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(30);
    const MAX: Duration = Duration::from_secs(3600);

    fn interval(headers: &[(&'static str, &'static str)]) -> Duration {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, http::HeaderValue::from_static(v));
        }
        refresh_interval(&map, MIN, MAX)
    }

    #[test]
    fn max_age_minus_age_sets_the_interval_within_the_bounds() {
        assert_eq!(
            interval(&[("cache-control", "public, max-age=600")]),
            Duration::from_secs(600)
        );
        assert_eq!(
            interval(&[("cache-control", "max-age=600"), ("age", "100")]),
            Duration::from_secs(500)
        );
        assert_eq!(
            interval(&[("cache-control", "Max-Age=\"120\"")]),
            Duration::from_secs(120)
        );
        // Across two header lines.
        assert_eq!(
            interval(&[("cache-control", "public"), ("cache-control", "max-age=90")]),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn the_interval_is_clamped_to_the_minimum_and_the_maximum() {
        assert_eq!(interval(&[("cache-control", "max-age=5")]), MIN, "below the minimum");
        assert_eq!(
            interval(&[("cache-control", "max-age=86400")]),
            MAX,
            "above the maximum"
        );
        assert_eq!(
            interval(&[("cache-control", "max-age=600"), ("age", "900")]),
            MIN,
            "older than its max-age"
        );
    }

    #[test]
    fn no_freshness_information_means_the_minimum() {
        assert_eq!(interval(&[]), MIN, "no Cache-Control");
        assert_eq!(interval(&[("cache-control", "no-cache")]), MIN);
        assert_eq!(interval(&[("cache-control", "max-age=600, no-store")]), MIN);
        assert_eq!(interval(&[("cache-control", "public")]), MIN, "no max-age");
        assert_eq!(interval(&[("cache-control", "max-age=soon")]), MIN, "invalid max-age");
        assert_eq!(
            interval(&[("cache-control", "max-age=600, max-age=60")]),
            MIN,
            "repeated max-age"
        );
    }

    #[test]
    fn an_inverted_range_keeps_the_minimum() {
        let mut map = HeaderMap::new();
        map.insert(CACHE_CONTROL, http::HeaderValue::from_static("max-age=10"));
        assert_eq!(
            refresh_interval(&map, Duration::from_secs(60), Duration::from_secs(1)),
            Duration::from_secs(60)
        );
    }
}
