//! Per-identity rate limits (governor, GCRA): one bucket per client identity (SPIFFE ID, else
//! certificate fingerprint), a global default and per-route overrides. Keyed state is pruned
//! every minute (`retain_recent`), so idle identities cost nothing.
//!
//! Not `tower::limit::RateLimit`: hyper clones the service per connection, which would give
//! every connection its own budget.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

/// Requests per second and burst, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

type Keyed<C> = RateLimiter<Arc<str>, DefaultKeyedStateStore<Arc<str>>, C, NoOpMiddleware<<C as Clock>::Instant>>;

pub struct Limits<C: Clock = DefaultClock> {
    default: Option<Keyed<C>>,
    /// By route-table index; `None` falls back to the default.
    per_route: Vec<Option<Keyed<C>>>,
    /// The stricter budget of identities that anomaly detection flagged (checked in addition).
    penalty: Option<Keyed<C>>,
    clock: C,
}

/// The budget of one policy rule (`rate_limit` on the rule), per identity.
pub(crate) struct RuleLimiter {
    limiter: Keyed<DefaultClock>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RuleLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleLimiter")
            .field("tracked", &self.limiter.len())
            .finish()
    }
}

impl RuleLimiter {
    pub(crate) fn new(rate: Rate) -> Self {
        let clock = DefaultClock::default();
        Self {
            limiter: RateLimiter::dashmap_with_clock(
                Quota::per_second(rate.per_second).allow_burst(rate.burst),
                clock.clone(),
            ),
            clock,
        }
    }

    pub(crate) fn check(&self, key: &Arc<str>) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    pub(crate) fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

impl Limits<DefaultClock> {
    pub fn new(default: Option<Rate>, per_route: &[Option<Rate>], penalty: Option<Rate>) -> Self {
        Self::with_clock(default, per_route, penalty, DefaultClock::default())
    }
}

impl<C: Clock + Clone> Limits<C> {
    pub fn with_clock(default: Option<Rate>, per_route: &[Option<Rate>], penalty: Option<Rate>, clock: C) -> Self {
        let make = |r: &Rate| {
            RateLimiter::dashmap_with_clock(Quota::per_second(r.per_second).allow_burst(r.burst), clock.clone())
        };
        Self {
            default: default.as_ref().map(make),
            per_route: per_route.iter().map(|r| r.as_ref().map(make)).collect(),
            penalty: penalty.as_ref().map(make),
            clock,
        }
    }

    pub fn enabled(&self) -> bool {
        self.default.is_some() || self.penalty.is_some() || self.per_route.iter().any(Option::is_some)
    }

    /// `Ok` if `key` may make a request on `route` now, else how long until it may.
    /// `penalized`: anomaly detection holds this identity to the stricter penalty budget.
    pub fn check(&self, route: Option<usize>, key: &Arc<str>, penalized: bool) -> Result<(), Duration> {
        let limiter = route
            .and_then(|r| self.per_route.get(r))
            .and_then(Option::as_ref)
            .or(self.default.as_ref());
        let penalty = self.penalty.as_ref().filter(|_| penalized);
        for l in limiter.into_iter().chain(penalty) {
            if let Err(not_until) = l.check_key(key) {
                return Err(not_until.wait_time_from(self.clock.now()));
            }
        }
        Ok(())
    }

    /// Forgets identities whose buckets are full again (idle): bounds memory.
    pub fn prune(&self) {
        for l in self
            .default
            .iter()
            .chain(self.penalty.iter())
            .chain(self.per_route.iter().flatten())
        {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    pub fn tracked(&self) -> usize {
        self.default
            .iter()
            .chain(self.penalty.iter())
            .chain(self.per_route.iter().flatten())
            .map(|l| l.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn each_identity_has_its_own_budget_and_gets_a_retry_time() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::with_clock(Some(rate(2, 3)), &[None], None, clock.clone());
        let (a, b): (Arc<str>, Arc<str>) = ("spiffe://x/a".into(), "spiffe://x/b".into());
        for _ in 0..3 {
            assert_eq!(limits.check(Some(0), &a, false), Ok(()));
        }
        let wait = limits.check(Some(0), &a, false).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        assert_eq!(
            limits.check(Some(0), &b, false),
            Ok(()),
            "another identity is not affected"
        );
        clock.advance(Duration::from_millis(500));
        assert_eq!(
            limits.check(Some(0), &a, false),
            Ok(()),
            "the bucket refills at the configured rate"
        );
    }

    #[test]
    fn a_route_override_replaces_the_default_and_idle_keys_are_pruned() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::with_clock(Some(rate(100, 100)), &[Some(rate(1, 1)), None], None, clock.clone());
        let a: Arc<str> = "a".into();
        assert_eq!(limits.check(Some(0), &a, false), Ok(()));
        assert!(limits.check(Some(0), &a, false).is_err(), "the strict route limits");
        assert_eq!(limits.check(Some(1), &a, false), Ok(()), "other routes use the default");
        assert_eq!(limits.tracked(), 2);
        clock.advance(Duration::from_secs(10));
        limits.prune();
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn a_penalized_identity_is_held_to_the_stricter_budget() {
        let clock = FakeRelativeClock::default();
        let limits = Limits::with_clock(Some(rate(100, 100)), &[None], Some(rate(1, 1)), clock);
        let a: Arc<str> = "a".into();
        for _ in 0..5 {
            assert_eq!(limits.check(Some(0), &a, false), Ok(()), "unflagged: the normal budget");
        }
        assert_eq!(limits.check(Some(0), &a, true), Ok(()));
        assert!(limits.check(Some(0), &a, true).is_err(), "flagged: the penalty budget");
    }

    #[test]
    fn no_limit_configured_allows_everything() {
        let limits = Limits::new(None, &[None], None);
        assert!(!limits.enabled());
        assert_eq!(limits.check(Some(0), &Arc::from("a"), false), Ok(()));
    }
}
