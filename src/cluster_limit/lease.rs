//! The local token cache: per budget and identity, the tokens this replica has taken from the
//! shared bucket and not spent yet (a lease), and the time until which the shared bucket said
//! "empty". Pure bookkeeping over a clock value passed in, so it is tested without sockets.
//!
//! A request spends one local token when there is one (no round trip). When the count drops to
//! half a lease, the caller refills in the background, asking only for what tops the slot up to
//! one lease ([`Slot::want`]), so a replica never holds more than `lease` tokens; when it is
//! empty, the request waits for one round trip. When the shared bucket answered "empty, retry after T", requests are refused
//! locally until then, so a flood costs Redis one round trip per T, not one per request.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What the shared bucket answered to one round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    /// Tokens taken from the shared bucket (0 to the lease size).
    pub granted: u32,
    /// With `granted == 0`: how long until the shared bucket has a token again.
    pub retry_after: Duration,
}

/// The outcome of spending a token locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// A leased token was spent. `refill`: the lease is running low; start a background refill.
    Spent { refill: bool },
    /// The shared bucket is empty until this long from now.
    Limited(Duration),
    /// No leased token: ask the shared bucket (one round trip).
    Empty,
}

#[derive(Debug)]
struct Local {
    tokens: u32,
    /// The shared bucket said "empty" until then.
    blocked_until: Option<Instant>,
    /// Last spend or deposit: slots idle for a while are pruned.
    touched: Instant,
}

/// One budget × identity on this replica.
#[derive(Debug)]
pub(crate) struct Slot {
    local: Mutex<Local>,
    /// Held by the one round trip in flight for this slot: concurrent requests that find the
    /// lease empty queue here and then spend what it brought, instead of each asking Redis.
    pub(crate) gate: Arc<tokio::sync::Mutex<()>>,
}

impl Slot {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            local: Mutex::new(Local {
                tokens: 0,
                blocked_until: None,
                touched: now,
            }),
            gate: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        // The guarded section cannot panic (integer and time arithmetic only); should it ever,
        // the counts are still meaningful.
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spends one leased token if there is one. `lease`: the tokens one round trip asks for.
    pub(crate) fn take(&self, now: Instant, lease: u32) -> Take {
        let mut l = self.local();
        l.touched = now;
        if l.tokens > 0 {
            l.tokens -= 1;
            // Refill before running dry, so a steady stream never waits on Redis. A lease of 1
            // is "ask every time": nothing to prefetch.
            return Take::Spent {
                refill: lease > 1 && l.tokens <= lease / 2,
            };
        }
        match l.blocked_until {
            Some(until) if until > now => Take::Limited(until - now),
            _ => Take::Empty,
        }
    }

    /// Tokens a round trip should ask for: what tops the slot up to `lease`. Asked while the
    /// slot's round-trip gate is held (one round trip in flight per slot), and spending only
    /// lowers the count before the deposit, so held + granted never exceeds `lease`.
    pub(crate) fn want(&self, lease: u32) -> u32 {
        lease.saturating_sub(self.local().tokens)
    }

    /// Adds what a round trip brought (a background refill, or the one a request waited for).
    pub(crate) fn deposit(&self, grant: Grant, now: Instant) {
        let mut l = self.local();
        l.touched = now;
        l.tokens = l.tokens.saturating_add(grant.granted);
        l.blocked_until = (grant.granted == 0).then(|| now + grant.retry_after);
    }

    /// Tokens leased and not spent yet.
    #[cfg(test)]
    pub(crate) fn tokens(&self) -> u32 {
        self.local().tokens
    }

    /// Whether nothing touched this slot for `idle` (it can be forgotten; its unspent tokens
    /// are lost, which only ever errs on the side of fewer requests).
    pub(crate) fn idle(&self, now: Instant, idle: Duration) -> bool {
        now.saturating_duration_since(self.local().touched) >= idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(granted: u32, retry_ms: u64) -> Grant {
        Grant {
            granted,
            retry_after: Duration::from_millis(retry_ms),
        }
    }

    #[test]
    fn an_empty_slot_asks_the_shared_bucket_then_spends_its_lease_locally() {
        let now = Instant::now();
        let slot = Slot::new(now);
        assert_eq!(slot.take(now, 4), Take::Empty, "no lease yet: one round trip");
        slot.deposit(grant(4, 0), now);
        assert_eq!(slot.take(now, 4), Take::Spent { refill: false }, "3 left");
        assert_eq!(
            slot.take(now, 4),
            Take::Spent { refill: true },
            "2 left: half a lease, refill"
        );
        assert_eq!(slot.take(now, 4), Take::Spent { refill: true });
        assert_eq!(slot.take(now, 4), Take::Spent { refill: true });
        assert_eq!(slot.take(now, 4), Take::Empty, "4 granted, 4 spent, no more");
        assert_eq!(slot.tokens(), 0);
    }

    #[test]
    fn a_refused_round_trip_refuses_locally_until_the_retry_time() {
        let now = Instant::now();
        let slot = Slot::new(now);
        slot.deposit(grant(0, 300), now);
        let Take::Limited(wait) = slot.take(now + Duration::from_millis(100), 4) else {
            panic!("the shared bucket said empty: refused without a round trip");
        };
        assert_eq!(wait, Duration::from_millis(200));
        assert_eq!(
            slot.take(now + Duration::from_millis(300), 4),
            Take::Empty,
            "after the retry time: ask again"
        );
        slot.deposit(grant(1, 0), now + Duration::from_millis(300));
        assert_eq!(
            slot.take(now + Duration::from_millis(300), 4),
            Take::Spent { refill: true },
            "a grant lifts the block"
        );
    }

    #[test]
    fn a_lease_of_one_never_prefetches_and_refills_add_up() {
        let now = Instant::now();
        let slot = Slot::new(now);
        slot.deposit(grant(1, 0), now);
        assert_eq!(slot.take(now, 1), Take::Spent { refill: false });
        slot.deposit(grant(3, 0), now);
        slot.deposit(grant(2, 0), now);
        assert_eq!(slot.tokens(), 5, "a background refill adds to what is left");
    }

    /// Two replicas, burst 40, lease 10 used to pass 72 in 1.8 s: a refill at half a lease
    /// asked for a whole lease on top of what was left. Now a refill asks for `lease − held`,
    /// also when requests spend tokens while it is in flight.
    #[test]
    fn held_tokens_never_exceed_the_lease_across_refills() {
        let now = Instant::now();
        let slot = Slot::new(now);
        let lease = 10;
        assert_eq!(slot.want(lease), 10, "an empty slot asks for a whole lease");
        slot.deposit(grant(slot.want(lease), 0), now);
        let mut refills = 0;
        for i in 0..200u32 {
            let Take::Spent { refill } = slot.take(now, lease) else {
                panic!("a slot that is refilled in time never runs dry");
            };
            if refill {
                refills += 1;
                let want = slot.want(lease);
                assert!(want >= lease / 2 && want <= lease, "{want}");
                // Requests spend while the round trip is in flight (0 to 2 of them).
                for _ in 0..i % 3 {
                    let _ = slot.take(now, lease);
                }
                slot.deposit(grant(want, 0), now);
            }
            assert!(slot.tokens() <= lease, "held {} > lease {lease}", slot.tokens());
        }
        assert!(refills > 20, "{refills}");
        // A full slot asks for nothing.
        assert_eq!(slot.want(lease), lease - slot.tokens());
        slot.deposit(grant(slot.want(lease), 0), now);
        assert_eq!((slot.tokens(), slot.want(lease)), (lease, 0));
    }

    #[test]
    fn an_idle_slot_can_be_pruned_a_used_one_not() {
        let now = Instant::now();
        let slot = Slot::new(now);
        assert!(!slot.idle(now + Duration::from_secs(30), Duration::from_secs(60)));
        assert!(slot.idle(now + Duration::from_secs(60), Duration::from_secs(60)));
        let _ = slot.take(now + Duration::from_secs(50), 4);
        assert!(!slot.idle(now + Duration::from_secs(60), Duration::from_secs(60)));
    }
}
