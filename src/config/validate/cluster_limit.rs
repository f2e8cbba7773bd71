//! `[cluster_rate_limit]`: the `[rate_limit]` and per-route budgets shared by all replicas
//! through Redis.

use std::num::NonZeroU32;

use super::*;
use crate::cluster_limit::{ClusterLimitConfig, OnError};

/// Tokens one round trip may lease at most: beyond this the overshoot bound (replicas × lease)
/// stops meaning anything for any sensible budget.
const MAX_LEASE: i64 = 1000;

/// `budgets`: the shared budgets (`[rate_limit]`, each route's own), named, with their burst.
pub(super) fn cluster_limit(
    c: &mut Collector<'_>,
    raw: &Spanned<RawClusterRateLimit>,
    budgets: &[(String, u32)],
) -> Option<ClusterLimitConfig> {
    let span = raw.span();
    let r = raw.get_ref();
    if budgets.is_empty() {
        c.push(
            span.clone(),
            "[cluster_rate_limit] shares the [rate_limit] and routes' rate_limit budgets, and none is set",
        );
    }
    let url = r.redis_url.get_ref();
    if let Err(why) = crate::cluster_limit::check_url(url) {
        let shown = crate::cluster_limit::redacted_url(url);
        c.push(r.redis_url.span(), format!("redis_url `{shown}`: {why}"));
    }
    let tls = url.starts_with("rediss://");
    super::tls_only(
        c,
        tls,
        "a rediss:// (TLS) redis_url",
        &[
            ("ca", &r.ca),
            ("client_cert", &r.client_cert),
            ("client_key", &r.client_key),
        ],
    );
    let ca = r.ca.as_ref().map(|v| non_empty_path(c, v));
    let client_cert = super::client_pair(c, &r.client_cert, &r.client_key);
    let timeout = r
        .timeout
        .as_ref()
        .map_or(Some(Duration::from_millis(50)), |d| duration(c, d));
    let on_error = match r.on_error.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("closed", _)) => OnError::Closed,
        Some(("open", _)) => OnError::Open,
        Some((other, span)) => {
            c.push(
                span,
                format!("unknown on_error `{other}` (expected \"closed\" or \"open\")"),
            );
            OnError::Closed
        }
    };
    let lease = match &r.lease {
        None => NonZeroU32::new(5),
        Some(n) => match *n.get_ref() {
            v @ 1..=MAX_LEASE => u32::try_from(v).ok().and_then(NonZeroU32::new),
            _ => {
                c.push(n.span(), format!("lease must be between 1 and {MAX_LEASE}"));
                None
            }
        },
    };
    // A lease as large as a burst: one replica's round trip can take the whole burst. At the
    // `lease` value, or at the table for the default.
    if let Some(lease) = lease
        && let Some((name, burst)) = budgets.iter().min_by_key(|(_, b)| *b)
        && lease.get() >= *burst
    {
        let (at, which) = match &r.lease {
            Some(n) => (n.span(), lease.to_string()),
            None => (span.clone(), format!("the default lease ({lease})")),
        };
        c.warn(
            at,
            format!(
                "{which} is at least the burst of {name} ({burst}): one replica can take the whole burst in one round trip, and requests to the other replicas are refused until it refills; keep lease well below the smallest burst"
            ),
        );
    }
    let key_prefix = r
        .key_prefix
        .as_ref()
        .map_or_else(|| "ztgate:rl:".to_string(), |p| p.get_ref().clone());
    Some(ClusterLimitConfig {
        url: url.clone(),
        ca,
        client_cert,
        timeout: timeout?,
        on_error,
        lease: lease?,
        key_prefix,
    })
}
