//! Streaming anomaly detection per client certificate, cheap enough for the data path.
//!
//! Each certificate (by fingerprint) gets a small stats record, fetched once per connection; per
//! request only atomics are touched. Flags:
//!
//! - `rate_spike`: requests in the current second exceed `rate_factor` × the identity's EWMA
//!   baseline (and at least `rate_min`), once the baseline has had `warmup` to settle;
//! - `deny_burst`: at least `deny_burst` denials within 10 seconds;
//! - `new_route`: a route the identity never used, after it made `learn_requests` requests;
//! - `many_sources`: the certificate was seen from more than `max_sources` client addresses.
//!
//! Each kind is reported at most once per `cooldown` per certificate. Memory is bounded by
//! `max_identities`; the least recently seen are evicted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyConfig {
    pub rate_factor: f64,
    pub rate_min: u32,
    pub warmup: Duration,
    pub deny_burst: u32,
    pub learn_requests: u64,
    pub max_sources: usize,
    pub cooldown: Duration,
    pub max_identities: usize,
    /// After any flag, hold the identity to this stricter rate for this long (`None`: no action).
    pub tighten: Option<(crate::ratelimit::Rate, Duration)>,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            rate_factor: 10.0,
            rate_min: 50,
            warmup: Duration::from_secs(60),
            deny_burst: 20,
            learn_requests: 100,
            max_sources: 5,
            cooldown: Duration::from_secs(300),
            max_identities: 10_000,
            tighten: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RateSpike,
    DenyBurst,
    NewRoute,
    ManySources,
}

impl Kind {
    /// Every kind (the `kind` label's values, exported as 0 from start-up).
    pub const ALL: [Kind; 4] = [Kind::RateSpike, Kind::DenyBurst, Kind::NewRoute, Kind::ManySources];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::RateSpike => "rate_spike",
            Kind::DenyBurst => "deny_burst",
            Kind::NewRoute => "new_route",
            Kind::ManySources => "many_sources",
        }
    }
}

/// A flag raised for one certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    pub kind: Kind,
    pub detail: String,
}

const DENY_WINDOW_MS: u64 = 10_000;
/// EWMA weight of each finished second in the baseline (~ a one-minute memory).
const ALPHA: f64 = 1.0 / 60.0;

/// Per-certificate counters. All fields are atomics: request tasks on any thread update them
/// without a lock.
#[derive(Debug, Default)]
pub struct Stats {
    first_ms: AtomicU64,
    last_ms: AtomicU64,
    requests: AtomicU64,
    second: AtomicU64,
    in_second: AtomicU32,
    /// f64 bits of the requests-per-second EWMA.
    baseline: AtomicU64,
    deny_window_start: AtomicU64,
    denies: AtomicU32,
    /// Bit `i` set: route `i` used (routes beyond 63 share bit 63).
    routes: AtomicU64,
    /// Last report per kind (ms), for the cooldown.
    reported: [AtomicU64; 4],
    /// Distinct client addresses seen, up to `max_sources + 1` (touched per connection only).
    sources: Mutex<Vec<IpAddr>>,
    /// Until when (ms) the identity is held to the tightened rate after a flag.
    penalty_until_ms: AtomicU64,
}

impl Stats {
    /// Whether the identity is under a tightened rate limit at `now_ms`.
    pub fn penalized(&self, now_ms: u64) -> bool {
        now_ms < self.penalty_until_ms.load(Ordering::Relaxed)
    }
}

pub struct Detector {
    cfg: AnomalyConfig,
    /// Keyed by certificate fingerprint. Locked once per connection, never per request.
    identities: Mutex<HashMap<String, Arc<Stats>>>,
}

impl Detector {
    pub fn new(cfg: AnomalyConfig) -> Self {
        Self {
            cfg,
            identities: Mutex::new(HashMap::new()),
        }
    }

    /// Called once per connection: the certificate's stats, and a flag if it has now been seen
    /// from too many addresses.
    pub fn connection(&self, fingerprint: &str, source: IpAddr, now_ms: u64) -> (Arc<Stats>, Option<Flag>) {
        let stats = {
            let mut map = self.identities.lock().unwrap_or_else(|p| p.into_inner());
            if !map.contains_key(fingerprint) && map.len() >= self.cfg.max_identities {
                evict(&mut map, self.cfg.max_identities);
            }
            map.entry(fingerprint.to_string())
                .or_insert_with(|| {
                    let s = Stats::default();
                    s.first_ms.store(now_ms, Ordering::Relaxed);
                    Arc::new(s)
                })
                .clone()
        };
        stats.last_ms.store(now_ms, Ordering::Relaxed);
        let distinct = {
            let mut sources = stats.sources.lock().unwrap_or_else(|p| p.into_inner());
            if !sources.contains(&source) && sources.len() <= self.cfg.max_sources {
                sources.push(source);
            }
            sources.len()
        };
        let flag = (distinct > self.cfg.max_sources)
            .then(|| {
                self.report(
                    &stats,
                    Kind::ManySources,
                    now_ms,
                    format!("seen from more than {} addresses", self.cfg.max_sources),
                )
            })
            .flatten();
        (stats, flag)
    }

    /// Called per request with its outcome; returns the flags it raises (usually none).
    pub fn request(&self, s: &Stats, route: Option<usize>, denied: bool, now_ms: u64) -> Vec<Flag> {
        let mut flags = Vec::new();
        s.last_ms.store(now_ms, Ordering::Relaxed);
        let n = s.requests.fetch_add(1, Ordering::Relaxed) + 1;

        // Rate: count this second; fold finished seconds into the baseline.
        let sec = now_ms / 1000;
        let prev_sec = s.second.load(Ordering::Relaxed);
        if sec != prev_sec
            && s.second
                .compare_exchange(prev_sec, sec, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let last = f64::from(s.in_second.swap(0, Ordering::AcqRel));
            let mut base = f64::from_bits(s.baseline.load(Ordering::Relaxed));
            // The finished second, then the idle seconds between it and this one.
            base += ALPHA * (last - base);
            let idle = sec.saturating_sub(prev_sec + 1).min(600);
            base *= (1.0 - ALPHA).powi(idle as i32);
            s.baseline.store(base.to_bits(), Ordering::Relaxed);
        }
        let in_second = s.in_second.fetch_add(1, Ordering::Relaxed) + 1;
        let base = f64::from_bits(s.baseline.load(Ordering::Relaxed));
        let warm = now_ms.saturating_sub(s.first_ms.load(Ordering::Relaxed)) >= self.cfg.warmup.as_millis() as u64;
        if warm && in_second >= self.cfg.rate_min && f64::from(in_second) > self.cfg.rate_factor * base.max(1.0) {
            let detail = format!("{in_second} requests this second, baseline {base:.1}/s");
            flags.extend(self.report(s, Kind::RateSpike, now_ms, detail));
        }

        if denied {
            let start = s.deny_window_start.load(Ordering::Relaxed);
            if now_ms.saturating_sub(start) > DENY_WINDOW_MS {
                s.deny_window_start.store(now_ms, Ordering::Relaxed);
                s.denies.store(0, Ordering::Relaxed);
            }
            let denies = s.denies.fetch_add(1, Ordering::Relaxed) + 1;
            if denies >= self.cfg.deny_burst {
                flags.extend(self.report(s, Kind::DenyBurst, now_ms, format!("{denies} denials within 10s")));
            }
        }

        if let Some(r) = route {
            let bit = 1u64 << r.min(63);
            let before = s.routes.fetch_or(bit, Ordering::Relaxed);
            if before & bit == 0 && n > self.cfg.learn_requests {
                flags.extend(self.report(
                    s,
                    Kind::NewRoute,
                    now_ms,
                    format!("first request to route #{r} after {n} requests"),
                ));
            }
        }
        flags
    }

    /// Applies the per-kind cooldown.
    fn report(&self, s: &Stats, kind: Kind, now_ms: u64, detail: String) -> Option<Flag> {
        let slot = &s.reported[kind as usize];
        let last = slot.load(Ordering::Relaxed);
        let cooldown = self.cfg.cooldown.as_millis() as u64;
        if last != 0 && now_ms.saturating_sub(last) < cooldown {
            return None;
        }
        slot.compare_exchange(last, now_ms.max(1), Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        if let Some((_, hold)) = self.cfg.tighten {
            s.penalty_until_ms
                .fetch_max(now_ms + hold.as_millis() as u64, Ordering::Relaxed);
        }
        Some(Flag { kind, detail })
    }

    pub fn tracked(&self) -> usize {
        self.identities.lock().map_or(0, |m| m.len())
    }
}

/// Drops the least recently seen tenth (at least one) of the identities.
fn evict(map: &mut HashMap<String, Arc<Stats>>, max: usize) {
    let mut by_age: Vec<(u64, String)> = map
        .iter()
        .map(|(k, s)| (s.last_ms.load(Ordering::Relaxed), k.clone()))
        .collect();
    by_age.sort_unstable();
    for (_, k) in by_age.into_iter().take((max / 10).max(1)) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> Detector {
        Detector::new(AnomalyConfig {
            warmup: Duration::from_secs(30),
            cooldown: Duration::from_secs(60),
            learn_requests: 50,
            ..AnomalyConfig::default()
        })
    }

    const IP: &str = "10.0.0.1";

    #[test]
    fn steady_traffic_is_not_flagged_and_a_burst_is_flagged_once() {
        let d = detector();
        let (s, _) = d.connection("fp", IP.parse().unwrap(), 0);
        // Five requests a second for two minutes, on two routes learnt early.
        for t in 0..120_000u64 / 200 {
            let flags = d.request(&s, Some((t % 2) as usize), false, t * 200);
            assert!(flags.is_empty(), "steady traffic flagged at {t}: {flags:?}");
        }
        // Then 300 requests within one second.
        let mut raised = Vec::new();
        for i in 0..300u64 {
            raised.extend(d.request(&s, Some(0), false, 120_000 + i * 3));
        }
        assert_eq!(
            raised.iter().filter(|f| f.kind == Kind::RateSpike).count(),
            1,
            "{raised:?}"
        );
    }

    #[test]
    fn a_burst_before_the_baseline_settles_is_not_flagged() {
        let d = detector();
        let (s, _) = d.connection("fp", IP.parse().unwrap(), 0);
        let flags: Vec<Flag> = (0..300u64).flat_map(|i| d.request(&s, Some(0), false, i * 3)).collect();
        assert!(flags.is_empty(), "{flags:?}");
    }

    #[test]
    fn a_burst_of_denials_is_flagged() {
        let d = detector();
        let (s, _) = d.connection("fp", IP.parse().unwrap(), 0);
        let spread: Vec<Flag> = (0..19u64).flat_map(|i| d.request(&s, None, true, i * 1000)).collect();
        assert!(spread.is_empty(), "19 denials do not reach the threshold: {spread:?}");
        let flags: Vec<Flag> = (0..25u64)
            .flat_map(|i| d.request(&s, None, true, 60_000 + i * 100))
            .collect();
        assert_eq!(flags.iter().map(|f| f.kind).collect::<Vec<_>>(), [Kind::DenyBurst]);
    }

    #[test]
    fn a_new_route_after_learning_is_flagged_but_not_during_it() {
        let d = detector();
        let (s, _) = d.connection("fp", IP.parse().unwrap(), 0);
        for i in 0..60u64 {
            assert!(d.request(&s, Some((i % 3) as usize), false, i * 1000).is_empty());
        }
        let flags = d.request(&s, Some(7), false, 61_000);
        assert_eq!(flags.iter().map(|f| f.kind).collect::<Vec<_>>(), [Kind::NewRoute]);
        assert!(
            d.request(&s, Some(7), false, 62_000).is_empty(),
            "a route is new only once"
        );
    }

    #[test]
    fn a_certificate_seen_from_many_addresses_is_flagged() {
        let d = detector();
        for i in 1..=5u8 {
            assert_eq!(d.connection("fp", IpAddr::from([10, 0, 0, i]), 0).1, None);
        }
        assert_eq!(
            d.connection("fp", IpAddr::from([10, 0, 0, 1]), 0).1,
            None,
            "a known address is fine"
        );
        let (_, flag) = d.connection("fp", IpAddr::from([10, 0, 0, 6]), 10);
        assert_eq!(flag.map(|f| f.kind), Some(Kind::ManySources));
        assert_eq!(d.connection("fp", IpAddr::from([10, 0, 0, 7]), 20).1, None, "cooldown");
    }

    #[test]
    fn a_flag_tightens_the_identity_for_the_configured_time_when_asked_to() {
        let rate = crate::ratelimit::Rate {
            per_second: std::num::NonZeroU32::new(1).unwrap(),
            burst: std::num::NonZeroU32::new(1).unwrap(),
        };
        let d = Detector::new(AnomalyConfig {
            deny_burst: 3,
            tighten: Some((rate, Duration::from_secs(60))),
            ..AnomalyConfig::default()
        });
        let (s, _) = d.connection("fp", IP.parse().unwrap(), 0);
        for i in 0..3u64 {
            d.request(&s, None, true, 1_000 + i);
        }
        assert!(s.penalized(2_000));
        assert!(!s.penalized(61_003), "the hold ends after tighten_for");
        let (calm, _) = detector().connection("other", IP.parse().unwrap(), 0);
        assert!(!calm.penalized(1));
    }

    #[test]
    fn memory_is_bounded_by_evicting_the_least_recently_seen() {
        let d = Detector::new(AnomalyConfig {
            max_identities: 100,
            ..AnomalyConfig::default()
        });
        for i in 0..1_000u64 {
            d.connection(&format!("fp{i}"), IP.parse().unwrap(), i);
        }
        assert!(d.tracked() <= 100);
        let map = d.identities.lock().unwrap();
        assert!(map.contains_key("fp999"));
        assert!(!map.contains_key("fp0"));
    }
}
