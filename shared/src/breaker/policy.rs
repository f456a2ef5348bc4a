//! The rolling-window failure policy: *when* a closed breaker should open.
//!
//! This is opossum's rolling window: the last `window` of time is split in [`BUCKETS`] buckets
//! that each count calls and failures; a bucket is recycled as soon as it falls out of the
//! window, so old failures stop counting bucket by bucket instead of all at once. The verdict
//! is taken on a failure, by a [`Trip`] rule over the window's totals:
//!
//! - `Rate` (the default, opossum's): open when the window holds at least `min_calls` calls and
//!   the failure percentage is strictly greater than the threshold (exactly 50 % with a
//!   threshold of 50 stays closed). The slow-call policy uses this rule too; what differs is
//!   that the breaker records a call that runs past `BREAKER_SLOW_CALL_MS` as a failure.
//! - `Count` (the seed's distributed breaker's): open at `failures` failures within the window
//!   (the seed's `expires`), however many calls succeeded beside them. A rate needs traffic to
//!   mean anything; a count does not, which is why a low-traffic hop may prefer it.
//!
//! One window serves both rules, so both age out bucket by bucket, in memory and in Redis
//! alike (`record.lua` applies the same rule).
//!
//! The window implements failsafe's [`FailurePolicy`], the seam through which the state
//! machine ([`super::machine::Machine`]) asks for a verdict. When the window says "open", it
//! answers with how long: `reset` plus a random jitter ([`ResetBackoff`], drawn from the
//! configured [`Jitter`]), so a fleet of callers does not probe a recovering hop in lock-step.
//!
//! failsafe's trait carries no timestamps, and a window cannot work without them, so the
//! machine first tells the policy the time of the outcome through [`Clocked`]. The policy never
//! reads a clock itself: tests drive it with plain `Instant`s, and the breaker reads the clock
//! *before* it takes its lock (on this project's VMs a clock read costs as much as the rest of
//! the call; inside the lock it tripled the cost under contention).
//!
//! The hot path ([`FailurePolicy::record_success`] inside the current bucket) is one comparison
//! and one increment: no division, no allocation.

use std::time::Duration;

use failsafe::failure_policy::FailurePolicy;
use serde::Serialize;
use tokio::time::Instant;

use super::config::{BreakerConfig, BreakerPolicy};
use super::jitter::Jitter;

/// Number of buckets the window is split into (opossum's default).
pub const BUCKETS: usize = 10;

/// A failure policy that needs to know when the outcome it is about to record happened.
pub trait Clocked {
    /// The time of the outcome reported by the next [`FailurePolicy`] call.
    fn set_now(&mut self, now: Instant);
}

/// How long an opened breaker stays open: `reset` plus a random duration in `[0, jitter]` drawn
/// from the [`Jitter`] distribution, afresh every time the breaker opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetBackoff {
    reset: Duration,
    jitter: Duration,
    shape: Jitter,
}

impl ResetBackoff {
    /// A backoff of `reset` plus up to `jitter`, drawn from `shape`.
    pub fn new(reset: Duration, jitter: Duration, shape: Jitter) -> Self {
        Self {
            reset,
            jitter,
            shape,
        }
    }

    /// The backoff a breaker configuration asks for.
    pub fn of(cfg: &BreakerConfig) -> Self {
        Self::new(cfg.reset, cfg.reset_jitter, cfg.jitter)
    }

    /// Draws the next open duration.
    pub fn next_delay(&self) -> Duration {
        self.reset.saturating_add(self.shape.draw(self.jitter))
    }
}

/// When a window full of outcomes says "open": the breaker's policy, minus the call path's part
/// (the slow-call policy is a [`Trip::Rate`] whose slow calls the breaker records as failures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trip {
    /// opossum's rule: at least `min_calls` calls and strictly more than `threshold_pct` % of
    /// them failed.
    Rate {
        /// Fewest calls in the window before it may open.
        min_calls: u32,
        /// Opens when the failure percentage is strictly greater than this.
        threshold_pct: u8,
    },
    /// The seed's rule: `failures` failures within the window (its `expires`), however many
    /// calls succeeded beside them.
    Count {
        /// Failures in the window that open the breaker.
        failures: u32,
    },
}

impl Trip {
    /// The rule a breaker configuration asks for.
    pub fn of(cfg: &BreakerConfig) -> Self {
        match cfg.policy {
            BreakerPolicy::Count { failures } => Self::Count { failures },
            BreakerPolicy::Rate | BreakerPolicy::Slow { .. } => Self::Rate {
                min_calls: cfg.min_calls,
                threshold_pct: cfg.error_threshold_pct,
            },
        }
    }

    /// Whether `calls` calls of which `failures` failed trip the window. Integer arithmetic, so
    /// there is no rounding at the boundary.
    pub fn trips(self, calls: u32, failures: u32) -> bool {
        match self {
            Self::Rate {
                min_calls,
                threshold_pct,
            } => {
                calls >= min_calls
                    && u64::from(failures) * 100 > u64::from(threshold_pct) * u64::from(calls)
            }
            Self::Count { failures: limit } => failures >= limit,
        }
    }
}

/// Calls and failures currently inside the rolling window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct WindowStats {
    /// Counted calls (successes and failures; rejections and 4xx are not calls).
    pub calls: u32,
    /// Failures among them (5xx, connection errors, timeouts).
    pub failures: u32,
    /// `failures / calls` in percent, rounded to one decimal; 0 when there were no calls.
    pub failure_pct: f64,
}

impl WindowStats {
    pub(crate) fn new(calls: u32, failures: u32) -> Self {
        let failure_pct = if calls == 0 {
            0.0
        } else {
            (f64::from(failures) * 1000.0 / f64::from(calls)).round() / 10.0
        };
        Self {
            calls,
            failures,
            failure_pct,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    calls: u32,
    failures: u32,
}

/// The rolling-window failure policy (see the module docs).
#[derive(Debug)]
pub struct RollingWindow {
    buckets: [Bucket; BUCKETS],
    /// Index of the bucket that receives calls until `head_end`.
    head: usize,
    head_end: Instant,
    bucket_len: Duration,
    /// The time of the outcome being recorded ([`Clocked::set_now`]).
    now: Instant,
    trip: Trip,
    backoff: ResetBackoff,
}

impl RollingWindow {
    /// A window of length `window` (split in [`BUCKETS`] buckets) starting at `start`, that
    /// opens when `trip` says so, for the time `backoff` draws.
    pub fn new(window: Duration, trip: Trip, backoff: ResetBackoff, start: Instant) -> Self {
        // A zero window would make every bucket zero-length; one nanosecond degrades to
        // "only the current instant counts" instead of dividing by zero.
        let bucket_len = (window / BUCKETS as u32).max(Duration::from_nanos(1));
        Self {
            buckets: [Bucket::default(); BUCKETS],
            head: 0,
            head_end: start + bucket_len,
            bucket_len,
            now: start,
            trip,
            backoff,
        }
    }

    /// The calls and failures inside the window as of `now`, without changing anything.
    pub fn stats(&self, now: Instant) -> WindowStats {
        let expired = self.expired_buckets(now);
        if expired >= BUCKETS {
            return WindowStats::default();
        }
        // Rolling forward by `expired` would recycle the buckets at offsets 1..=expired after
        // the head (the oldest ones); the head and the rest are still inside the window.
        let (calls, failures) = std::iter::once(0)
            .chain(expired + 1..BUCKETS)
            .map(|offset| self.buckets[(self.head + offset) % BUCKETS])
            .fold((0u32, 0u32), |(c, f), b| {
                (c.saturating_add(b.calls), f.saturating_add(b.failures))
            });
        WindowStats::new(calls, failures)
    }

    /// How many bucket boundaries `now` has crossed since the head bucket started.
    fn expired_buckets(&self, now: Instant) -> usize {
        if now < self.head_end {
            return 0;
        }
        let past = (now - self.head_end).as_nanos() / self.bucket_len.as_nanos();
        usize::try_from(past)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
    }

    /// Moves the head to the bucket that covers `self.now`, recycling the buckets that left
    /// the window, and returns it.
    fn current(&mut self) -> &mut Bucket {
        let expired = self.expired_buckets(self.now);
        if expired >= BUCKETS {
            self.buckets = [Bucket::default(); BUCKETS];
            self.head_end = self.now + self.bucket_len;
        } else if expired > 0 {
            for _ in 0..expired {
                self.head = (self.head + 1) % BUCKETS;
                self.buckets[self.head] = Bucket::default();
            }
            // `expired < BUCKETS`, so the cast cannot truncate.
            self.head_end += self.bucket_len * expired as u32;
        }
        &mut self.buckets[self.head]
    }

    fn should_open(&self) -> bool {
        let stats = self.stats(self.now);
        self.trip.trips(stats.calls, stats.failures)
    }
}

impl Clocked for RollingWindow {
    fn set_now(&mut self, now: Instant) {
        self.now = now;
    }
}

impl FailurePolicy for RollingWindow {
    fn record_success(&mut self) {
        let bucket = self.current();
        bucket.calls = bucket.calls.saturating_add(1);
    }

    fn mark_dead_on_failure(&mut self) -> Option<Duration> {
        let bucket = self.current();
        bucket.calls = bucket.calls.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(1);
        self.should_open().then(|| self.backoff.next_delay())
    }

    fn revived(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn window(min_calls: u32, threshold_pct: u8, start: Instant) -> RollingWindow {
        let backoff = ResetBackoff::new(Duration::from_secs(10), Duration::ZERO, Jitter::None);
        let trip = Trip::Rate {
            min_calls,
            threshold_pct,
        };
        RollingWindow::new(WINDOW, trip, backoff, start)
    }

    /// Records `successes` then `failures` at `now`; the last failure's verdict.
    fn record(
        w: &mut RollingWindow,
        now: Instant,
        successes: u32,
        failures: u32,
    ) -> Option<Duration> {
        w.set_now(now);
        (0..successes).for_each(|_| w.record_success());
        (0..failures).fold(None, |_, _| w.mark_dead_on_failure())
    }

    #[test]
    fn counts_calls_and_failures_in_the_window() {
        let t0 = Instant::now();
        let mut w = window(100, 50, t0);
        record(&mut w, t0, 3, 1);
        assert_eq!(
            w.stats(t0),
            WindowStats {
                calls: 4,
                failures: 1,
                failure_pct: 25.0
            }
        );
    }

    #[test]
    fn exactly_the_threshold_does_not_trip_one_more_failure_does() {
        let t0 = Instant::now();
        let mut w = window(5, 50, t0);
        assert_eq!(record(&mut w, t0, 3, 3), None);
        assert_eq!(record(&mut w, t0, 0, 1), Some(Duration::from_secs(10)));
    }

    #[test]
    fn does_not_trip_below_min_calls() {
        let t0 = Instant::now();
        let mut w = window(5, 50, t0);
        assert_eq!(record(&mut w, t0, 0, 4), None);
        assert_eq!(record(&mut w, t0, 0, 1), Some(Duration::from_secs(10)));
    }

    #[test]
    fn buckets_leave_the_window_one_by_one() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = window(100, 50, t0);
        record(&mut w, at(0), 0, 2); // bucket [0 s, 1 s)
        record(&mut w, at(5_000), 0, 3); // bucket [5 s, 6 s)
        assert_eq!(w.stats(at(9_999)).failures, 5, "both still inside");
        assert_eq!(w.stats(at(10_000)).failures, 3, "the first bucket is out");
        record(&mut w, at(10_000), 1, 0); // rolling forward agrees with the read-only view
        assert_eq!(w.stats(at(10_000)).calls, 4);
        assert_eq!(w.stats(at(15_000)).failures, 0, "the second one too");
        assert_eq!(w.stats(at(15_000)).calls, 1);
        assert_eq!(w.stats(at(40_000)), WindowStats::default());
        record(&mut w, at(40_000), 1, 0);
        assert_eq!(
            w.stats(at(40_000)).calls,
            1,
            "a long gap recycles every bucket"
        );
    }

    #[test]
    fn count_trips_at_the_nth_failure_however_many_calls_succeeded() {
        let t0 = Instant::now();
        let backoff = ResetBackoff::new(Duration::from_secs(10), Duration::ZERO, Jitter::None);
        let mut w = RollingWindow::new(WINDOW, Trip::Count { failures: 3 }, backoff, t0);
        // 2 % failures: far below any rate threshold, but the third failure is the count.
        assert_eq!(record(&mut w, t0, 100, 2), None);
        assert_eq!(record(&mut w, t0, 0, 1), Some(Duration::from_secs(10)));
    }

    #[test]
    fn count_forgets_failures_older_than_the_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let backoff = ResetBackoff::new(Duration::from_secs(10), Duration::ZERO, Jitter::None);
        let mut w = RollingWindow::new(WINDOW, Trip::Count { failures: 3 }, backoff, t0);
        assert_eq!(record(&mut w, at(0), 0, 2), None);
        // Ten seconds later the first two have expired: this is one failure, not three.
        assert_eq!(record(&mut w, at(10_000), 0, 1), None);
        assert_eq!(record(&mut w, at(10_500), 0, 1), None);
        assert_eq!(
            record(&mut w, at(11_000), 0, 1),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn revived_clears_the_window() {
        let t0 = Instant::now();
        let mut w = window(100, 50, t0);
        record(&mut w, t0, 2, 2);
        w.revived();
        assert_eq!(w.stats(t0), WindowStats::default());
    }

    #[test]
    fn reset_jitter_stays_within_bounds() {
        let reset = Duration::from_secs(10);
        let jitter = Duration::from_secs(2);
        let backoff = ResetBackoff::new(reset, jitter, Jitter::Uniform);
        let delays: Vec<Duration> = (0..1_000).map(|_| backoff.next_delay()).collect();
        assert!(delays.iter().all(|d| (reset..=reset + jitter).contains(d)));
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "jitter must actually vary"
        );
        assert_eq!(
            ResetBackoff::new(reset, Duration::ZERO, Jitter::Uniform).next_delay(),
            reset
        );
        assert_eq!(
            ResetBackoff::new(reset, jitter, Jitter::None).next_delay(),
            reset
        );
    }
}
