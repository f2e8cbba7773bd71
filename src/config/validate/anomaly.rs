//! `[anomaly]`.

use super::*;

pub(super) fn anomaly(c: &mut Collector<'_>, a: &RawAnomaly) -> Option<crate::anomaly::AnomalyConfig> {
    if a.enabled == Some(false) {
        return None;
    }
    let d = crate::anomaly::AnomalyConfig::default();
    let count = |c: &mut Collector<'_>, v: &Option<Spanned<i64>>, default: u64, what: &str| match v {
        None => default,
        Some(n) => u64::try_from(*n.get_ref()).ok().filter(|n| *n > 0).unwrap_or_else(|| {
            c.push(n.span(), format!("{what} must be a positive number"));
            default
        }),
    };
    let rate_factor = match &a.rate_factor {
        Some(f) if *f.get_ref() <= 1.0 => {
            c.push(f.span(), "rate_factor must be greater than 1");
            d.rate_factor
        }
        Some(f) => *f.get_ref(),
        None => d.rate_factor,
    };
    let dur = |c: &mut Collector<'_>, v: &Option<Spanned<String>>, default: Duration| {
        v.as_ref().map_or(Some(default), |s| duration(c, s)).unwrap_or(default)
    };
    Some(crate::anomaly::AnomalyConfig {
        rate_factor,
        rate_min: u32::try_from(count(c, &a.rate_min, u64::from(d.rate_min), "rate_min")).unwrap_or(u32::MAX),
        warmup: dur(c, &a.warmup, d.warmup),
        deny_burst: u32::try_from(count(c, &a.deny_burst, u64::from(d.deny_burst), "deny_burst")).unwrap_or(u32::MAX),
        learn_requests: count(c, &a.learn_requests, d.learn_requests, "learn_requests"),
        max_sources: usize::try_from(count(c, &a.max_sources, d.max_sources as u64, "max_sources"))
            .unwrap_or(usize::MAX),
        cooldown: dur(c, &a.cooldown, d.cooldown),
        max_identities: usize::try_from(count(c, &a.max_identities, d.max_identities as u64, "max_identities"))
            .unwrap_or(usize::MAX),
        tighten: match (&a.tighten_rate, &a.tighten_for) {
            (Some(r), hold) => super::upstream::rate(c, r).map(|r| (r, dur(c, hold, Duration::from_secs(300)))),
            (None, Some(f)) => {
                c.push(
                    f.span(),
                    "tighten_for needs tighten_rate = { requests_per_second = N, burst = M }",
                );
                None
            }
            (None, None) => None,
        },
    })
}
