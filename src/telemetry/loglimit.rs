//! Bounded log volume for events a client can cause at will: refused requests (4xx), upstream
//! failures (502, 504), 503s and refused handshakes wrote one line each, without limit (372
//! lines/s in a soak). Each class now writes at most [`PER_SECOND`] lines per second; what is
//! held back is counted and reported by one summary line ([`summarize`], every few seconds while
//! anything was held back). Metrics and the audit log still see every event: this only bounds
//! what an operator reads.
//!
//! A fixed one-second window per class, kept in atomics: one clock read and two atomic
//! operations per event, no lock. The clock is a parameter ([`LogLimit::admit`]), so tests need
//! no sleeps.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Lines per second each class may write.
pub(crate) const PER_SECOND: u32 = 5;

/// The event classes, each with its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Requests refused by ztgate's checks (400, 401, 403, 404, 421, 429, ...).
    Rejected = 0,
    /// The upstream failed or timed out (502, 504).
    Upstream = 1,
    /// 503 (the audit log cannot be written) and other 5xx ztgate answers itself.
    Unavailable = 2,
    /// TLS handshakes refused (and certificates refused right after one).
    Handshake = 3,
}

impl Class {
    const ALL: [Class; 4] = [Class::Rejected, Class::Upstream, Class::Unavailable, Class::Handshake];
}

#[derive(Debug, Default)]
struct Slot {
    /// The window (milliseconds / window length) `used` counts in.
    window: AtomicU64,
    used: AtomicU32,
    /// Lines held back since the last [`LogLimit::take_suppressed`].
    suppressed: AtomicU64,
}

/// Per-class line budgets.
#[derive(Debug)]
pub(crate) struct LogLimit {
    /// Lines each class may write per window.
    per_window: u32,
    /// Window length in milliseconds.
    window_ms: u64,
    slots: [Slot; 4],
}

impl LogLimit {
    /// `per_window` lines per class every `window_ms` milliseconds.
    pub(crate) fn new(per_window: u32, window_ms: u64) -> Self {
        Self {
            per_window,
            window_ms: window_ms.max(1),
            slots: Default::default(),
        }
    }

    /// Whether an event of `class` at `now_ms` (any monotonic millisecond clock) may write its
    /// line; if not, it is counted for the summary.
    pub(crate) fn admit(&self, class: Class, now_ms: u64) -> bool {
        let slot = &self.slots[class as usize];
        let window = now_ms / self.window_ms;
        let seen = slot.window.load(Ordering::Acquire);
        if seen != window
            && slot
                .window
                .compare_exchange(seen, window, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.used.store(0, Ordering::Release);
        }
        if slot.used.fetch_add(1, Ordering::AcqRel) < self.per_window {
            true
        } else {
            slot.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// The lines held back per class since the last call, which starts counting again.
    pub(crate) fn take_suppressed(&self) -> [(Class, u64); 4] {
        Class::ALL.map(|c| (c, self.slots[c as usize].suppressed.swap(0, Ordering::AcqRel)))
    }
}

fn global() -> &'static LogLimit {
    static LIMIT: OnceLock<LogLimit> = OnceLock::new();
    LIMIT.get_or_init(|| LogLimit::new(PER_SECOND, 1000))
}

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Whether this event of `class` may write its log line (process-wide budget).
pub(crate) fn admit(class: Class) -> bool {
    global().admit(class, now_ms())
}

/// Writes one summary line if any line was held back since the last call (called every few
/// seconds by the app's housekeeping task).
pub(crate) fn summarize() {
    let held = global().take_suppressed();
    if held.iter().any(|(_, n)| *n > 0) {
        let n = |c: Class| held[c as usize].1;
        tracing::warn!(
            rejected = n(Class::Rejected),
            upstream = n(Class::Upstream),
            unavailable = n(Class::Unavailable),
            handshake = n(Class::Handshake),
            per_second = PER_SECOND,
            "log lines suppressed since the last summary (metrics and the audit log have every event)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_writes_at_most_its_budget_per_window_and_counts_the_rest() {
        let l = LogLimit::new(3, 1000);
        let admitted = (0..10).filter(|i| l.admit(Class::Upstream, 5_000 + i * 10)).count();
        assert_eq!(admitted, 3);
        // Another class has its own budget.
        assert!(l.admit(Class::Handshake, 5_100));
        assert_eq!(
            l.take_suppressed(),
            [
                (Class::Rejected, 0),
                (Class::Upstream, 7),
                (Class::Unavailable, 0),
                (Class::Handshake, 0)
            ]
        );
        // Taking resets the counts.
        assert!(l.take_suppressed().iter().all(|(_, n)| *n == 0));
    }

    #[test]
    fn the_next_window_has_a_fresh_budget() {
        let l = LogLimit::new(2, 1000);
        assert!(l.admit(Class::Rejected, 999));
        assert!(l.admit(Class::Rejected, 999));
        assert!(!l.admit(Class::Rejected, 999));
        assert!(l.admit(Class::Rejected, 1000), "a new second");
        assert!(l.admit(Class::Rejected, 1500));
        assert!(!l.admit(Class::Rejected, 1999));
        assert!(l.admit(Class::Rejected, 7000), "after a quiet gap");
        assert_eq!(l.take_suppressed()[Class::Rejected as usize], (Class::Rejected, 2));
    }

    #[test]
    fn a_steady_flood_is_cut_to_the_budget_times_the_seconds() {
        let l = LogLimit::new(PER_SECOND, 1000);
        // 372 events per second for 10 seconds, as in the soak.
        let admitted = (0..3720u64)
            .filter(|i| l.admit(Class::Rejected, i * 10_000 / 3720))
            .count();
        assert_eq!(admitted, 10 * PER_SECOND as usize);
        assert_eq!(l.take_suppressed()[0].1, 3720 - 10 * u64::from(PER_SECOND));
    }
}
