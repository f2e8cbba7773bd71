//! The cluster-wide rate limit (`[cluster_rate_limit]`): the `[rate_limit]` and per-route
//! budgets counted once for all replicas, in Redis, instead of once per replica.
//!
//! ```text
//! request ─► local lease has a token? ──yes──► pass (no round trip; at half a lease, top it up to `lease` in the background)
//!                 │ no
//!                 ├─ Redis said "empty until T" and T is ahead ─► 429, Retry-After
//!                 └─ wait (≤ timeout) for one round trip: GCRA takes up to `lease` tokens
//!                      ├─ ≥ 1 granted ─► pass (the rest is the new lease)
//!                      ├─ 0 granted ─► 429, Retry-After
//!                      └─ error / timeout ─► on_error: closed → 503; open → pass (counted, logged)
//! ```
//!
//! The per-replica limits (`ratelimit::Limits`) still run first, unchanged: a replica never
//! legitimately passes more than the whole cluster's budget, so they cost no request, they keep a
//! flood aimed at one replica away from Redis, and they are what `on_error = "open"` falls back
//! to. Overshoot: tokens are taken before they are spent, so the shared count is never exceeded;
//! but a lease taken earlier and spent later can add to a bucket that has since refilled, so in
//! any window the cluster passes at most the GCRA budget plus replicas × `lease`.

mod backend;
mod lease;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tracing::{debug, warn};

use crate::error::ProxyError;
use crate::ratelimit::Rate;
use crate::telemetry::metrics;
use backend::{Backend, TakeError};
use lease::{Grant, Slot, Take};

/// What a shared-budget failure does to the request that needed a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Refuse with 503 (the check could not run: fail closed). The default.
    Closed,
    /// Let it through; the per-replica limits still apply. Counted and logged.
    Open,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::Closed => "closed",
            OnError::Open => "open",
        }
    }
}

/// `[cluster_rate_limit]`, validated. Its `Debug` shows the URL without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterLimitConfig {
    /// `redis://host:port/db` or `rediss://...` (TLS).
    pub url: String,
    /// PEM CA bundle for `rediss://` (else the system's roots).
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key for `rediss://` with client authentication.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The longest a request waits for a round trip (and the per-command timeout).
    pub timeout: Duration,
    pub on_error: OnError,
    /// Tokens one round trip takes for the local cache (1 = ask on every request).
    pub lease: NonZeroU32,
    /// Prepended to every Redis key (`{prefix}{budget}:{identity}`).
    pub key_prefix: String,
}

impl std::fmt::Debug for ClusterLimitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLimitConfig")
            .field("url", &redacted_url(&self.url))
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .field("lease", &self.lease)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// `url` with the password replaced by `***` (`redis://user:***@host:6379`), for every message
/// and log line that names it. Userinfo without a `:` (`redis://secret@host`) is replaced whole:
/// whether it is a user name or a password is the client's reading, not ours.
pub(crate) fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The last `@` ends the userinfo (a password may hold `@` or `/`; a path never needs `@`).
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let (userinfo, host) = rest.split_at(at);
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{scheme}://{shown}{host}")
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterLimitError {
    #[error("cluster_rate_limit: cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cluster_rate_limit: invalid Redis client settings: {source}")]
    Client {
        #[source]
        source: redis::RedisError,
    },
}

/// Whether `url` is a Redis URL the client accepts; the reason if not (for `ztgate check`).
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("must start with redis:// or rediss://".into());
    }
    if url.contains("#insecure") {
        return Err("`#insecure` would skip verifying Redis' certificate: give its CA in `ca` instead".into());
    }
    redis::Client::open(url).map(|_| ()).map_err(|e| e.to_string())
}

/// One shared budget: a key name and its GCRA parameters.
#[derive(Debug)]
struct Budget {
    /// Index in `slots` keys (0 = the default, 1 + i = route i's own).
    id: u32,
    /// `default` or the route's name, in the Redis key.
    name: Arc<str>,
    interval_us: u64,
    burst: u32,
}

impl Budget {
    fn new(id: u32, name: &str, rate: Rate) -> Self {
        Self {
            id,
            name: name.into(),
            interval_us: (1_000_000 / u64::from(rate.per_second.get())).max(1),
            burst: rate.burst.get(),
        }
    }
}

/// After a failed round trip, requests that need one are decided by `on_error` at once for
/// this long (instead of each waiting `timeout` for a Redis that is down); then one asks again.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// Slots idle this long are forgotten by [`ClusterLimiter::prune`].
const IDLE: Duration = Duration::from_secs(60);

/// The cluster-wide limiter: shared budgets in Redis, leased to this replica.
pub struct ClusterLimiter {
    /// By route index: the route's own budget or the default one; `None` = not limited.
    per_route: Vec<Option<Arc<Budget>>>,
    default: Option<Arc<Budget>>,
    slots: DashMap<(u32, Arc<str>), Arc<Slot>>,
    backend: Backend,
    timeout: Duration,
    on_error: OnError,
    lease: u32,
    key_prefix: String,
    /// Set by a failed round trip: see [`DOWN_FOR`].
    down_until: std::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for ClusterLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLimiter")
            .field("slots", &self.slots.len())
            .field("on_error", &self.on_error)
            .finish()
    }
}

/// What a request needs after the local look.
pub enum Step {
    /// A leased token was spent (or nothing limits this route).
    Pass,
    /// Refused without a round trip.
    Refuse(ProxyError),
    /// The lease is empty: wait for a round trip ([`Acquire::run`]).
    Wait(Acquire),
}

/// A request waiting for a round trip.
pub struct Acquire {
    limiter: Arc<ClusterLimiter>,
    budget: Arc<Budget>,
    slot: Arc<Slot>,
    identity: Arc<str>,
}

/// Why a round trip failed, for the metric's `reason` label.
#[derive(Debug, Clone, Copy)]
enum Failure {
    Timeout,
    Error,
    /// Not tried: a round trip failed less than [`DOWN_FOR`] ago.
    Unavailable,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Error => "error",
            Failure::Unavailable => "unavailable",
        }
    }
}

impl ClusterLimiter {
    /// `default`, `per_route` (by route index) and `names` (route names, same order) as in
    /// `[rate_limit]` and the routes' `rate_limit`. Reads the TLS files; connects lazily.
    pub fn new(
        cfg: &ClusterLimitConfig,
        default: Option<Rate>,
        per_route: &[Option<Rate>],
        names: &[&str],
    ) -> Result<Self, ClusterLimitError> {
        let default = default.map(|r| Arc::new(Budget::new(0, "default", r)));
        let per_route = per_route
            .iter()
            .zip(names)
            .enumerate()
            .map(|(i, (rate, name))| match rate {
                Some(r) => Some(Arc::new(Budget::new(
                    u32::try_from(i + 1).unwrap_or(u32::MAX),
                    &format!("route:{name}"),
                    *r,
                ))),
                None => default.clone(),
            })
            .collect();
        metrics::cluster_limit_init();
        Ok(Self {
            per_route,
            default,
            slots: DashMap::new(),
            backend: Backend::new(cfg)?,
            timeout: cfg.timeout,
            on_error: cfg.on_error,
            lease: cfg.lease.get(),
            key_prefix: cfg.key_prefix.clone(),
            down_until: std::sync::Mutex::new(None),
        })
    }

    /// Looks at the local lease of `identity` on `route`: pass, refuse, or wait for Redis.
    /// Never waits itself; starts a background refill when the lease runs low.
    pub fn check(self: &Arc<Self>, route: Option<usize>, identity: &Arc<str>) -> Step {
        let budget = match route {
            Some(r) => self.per_route.get(r).and_then(Option::as_ref),
            None => self.default.as_ref(),
        };
        let Some(budget) = budget else {
            return Step::Pass;
        };
        let slot = self.slot(budget, identity);
        let now = Instant::now();
        match slot.take(now, self.lease) {
            Take::Spent { refill } => {
                if refill {
                    self.refill_in_background(budget, &slot, identity);
                }
                Step::Pass
            }
            Take::Limited(wait) => Step::Refuse(ProxyError::rate_limited(wait)),
            Take::Empty if self.down(now) => match self.on_failure(Failure::Unavailable) {
                Ok(()) => Step::Pass,
                Err(e) => Step::Refuse(e),
            },
            Take::Empty => Step::Wait(Acquire {
                limiter: self.clone(),
                budget: budget.clone(),
                slot,
                identity: identity.clone(),
            }),
        }
    }

    fn down(&self, now: Instant) -> bool {
        let down = self
            .down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        down.is_some_and(|until| until > now)
    }

    /// Records whether Redis answered: a failure opens the [`DOWN_FOR`] window, an answer closes it.
    fn mark(&self, answered: bool) {
        let mut down = self
            .down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *down = (!answered).then(|| Instant::now() + DOWN_FOR);
    }

    /// A request the shared budget could not decide: counted, then `on_error` decides.
    fn on_failure(&self, failure: Failure) -> Result<(), ProxyError> {
        metrics::cluster_limit_backend_error(failure.as_str(), self.on_error.as_str());
        debug!(
            reason = failure.as_str(),
            on_error = self.on_error.as_str(),
            "cluster rate limit unavailable"
        );
        match self.on_error {
            OnError::Open => Ok(()),
            OnError::Closed => Err(ProxyError::RateLimitUnavailable),
        }
    }

    fn slot(&self, budget: &Budget, identity: &Arc<str>) -> Arc<Slot> {
        let key = (budget.id, identity.clone());
        if let Some(s) = self.slots.get(&key) {
            return s.clone();
        }
        self.slots
            .entry(key)
            .or_insert_with(|| Arc::new(Slot::new(Instant::now())))
            .clone()
    }

    fn key(&self, budget: &Budget, identity: &str) -> String {
        format!("{}{}:{identity}", self.key_prefix, budget.name)
    }

    /// One round trip for up to `want` tokens, counted by result; bounded by `timeout`.
    async fn round_trip(&self, budget: &Budget, identity: &str, want: u32) -> Result<Grant, Failure> {
        let key = self.key(budget, identity);
        let started = Instant::now();
        let result = tokio::time::timeout(
            self.timeout,
            self.backend.take(&key, budget.interval_us, budget.burst, want),
        )
        .await;
        let url = self.backend.shown_url();
        let result = match result {
            Ok(Ok(grant)) => Ok(grant),
            // The connection's own response timeout (the same `timeout`) may fire first.
            Ok(Err(TakeError::Command(e))) if e.is_timeout() => {
                warn!(url, timeout = ?self.timeout, "cluster rate limit: Redis did not answer in time");
                Err(Failure::Timeout)
            }
            // The connect task logged it (WARN) already.
            Ok(Err(e @ TakeError::Connect(_))) => {
                debug!(url, error = %e, "cluster rate limit: Redis round trip failed");
                Err(Failure::Error)
            }
            Ok(Err(e)) => {
                warn!(url, error = %e, "cluster rate limit: Redis round trip failed");
                Err(Failure::Error)
            }
            // A connection attempt still running goes on and logs its own error, if any.
            Err(_) => {
                warn!(url, timeout = ?self.timeout, "cluster rate limit: Redis did not answer in time");
                Err(Failure::Timeout)
            }
        };
        self.mark(result.is_ok());
        metrics::cluster_limit_round_trip(
            match &result {
                Ok(g) if g.granted > 0 => "granted",
                Ok(_) => "exhausted",
                Err(f) => f.as_str(),
            },
            started.elapsed(),
        );
        result
    }

    /// Coalesced: only when no round trip for this slot is in flight.
    fn refill_in_background(self: &Arc<Self>, budget: &Arc<Budget>, slot: &Arc<Slot>, identity: &Arc<str>) {
        let Ok(guard) = slot.gate.clone().try_lock_owned() else {
            return;
        };
        // Outside a runtime (never on the data path) there is nowhere to refill from; the next
        // request that finds the lease empty asks instead.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (this, budget, slot, identity) = (self.clone(), budget.clone(), slot.clone(), identity.clone());
        rt.spawn(async move {
            // Only what tops the slot up to `lease` (requests spending meanwhile only lower the
            // count): a replica never holds more than `lease` tokens. A failed refill changes
            // nothing: the lease runs dry and a request asks again.
            let want = slot.want(this.lease);
            if want == 0 {
                drop(guard);
                return;
            }
            if let Ok(grant) = this.round_trip(&budget, &identity, want).await {
                slot.deposit(grant, Instant::now());
            }
            drop(guard);
        });
    }

    /// Forgets slots idle for a minute (their unspent tokens with them): bounds memory.
    pub fn prune(&self) {
        let now = Instant::now();
        self.slots
            .retain(|_, s| !s.idle(now, IDLE) || s.gate.try_lock().is_err());
        self.slots.shrink_to_fit();
    }

    /// Budget × identity pairs this replica holds a lease for.
    pub fn tracked(&self) -> usize {
        self.slots.len()
    }
}

impl Acquire {
    /// Waits (at most `timeout` in all) for the slot's round trip, or makes it: `Ok` to pass,
    /// `Err` with 429 (shared budget spent) or 503 (Redis failed and `on_error = "closed"`).
    pub async fn run(self) -> Result<(), ProxyError> {
        let l = &self.limiter;
        let waited = tokio::time::timeout(l.timeout, async {
            let _gate = self.slot.gate.lock().await;
            // A round trip that finished while this request queued may have brought tokens
            // (or the "empty until" answer): use it before asking again.
            match self.slot.take(Instant::now(), l.lease) {
                Take::Spent { .. } => return Ok(Ok(())),
                Take::Limited(wait) => return Ok(Err(wait)),
                Take::Empty => {}
            }
            let want = self.slot.want(l.lease);
            let grant = l.round_trip(&self.budget, &self.identity, want).await?;
            self.slot.deposit(grant, Instant::now());
            Ok(match self.slot.take(Instant::now(), l.lease) {
                Take::Spent { .. } => Ok(()),
                Take::Limited(wait) => Err(wait),
                // A zero retry time: the bucket refills right now; the next request asks.
                Take::Empty => Err(Duration::ZERO),
            })
        })
        .await
        .unwrap_or_else(|_| {
            // The wait ran out before the round trip's own timeout could report it (a Redis that
            // accepts and does not answer): open the down window here too, or every request
            // would wait the whole timeout.
            l.mark(false);
            Err(Failure::Timeout)
        });
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(wait)) => Err(ProxyError::rate_limited(wait)),
            Err(failure) => l.on_failure(failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted_url;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            redacted_url("redis://:pw@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(
            redacted_url("rediss://ztgate:p@ss/w:rd@cache:6380/2"),
            "rediss://ztgate:***@cache:6380/2"
        );
        assert_eq!(redacted_url("redis://secret@cache"), "redis://***@cache");
        assert_eq!(redacted_url("redis://cache:6379/0"), "redis://cache:6379/0");
        assert_eq!(redacted_url("not a url"), "not a url");
    }
}
