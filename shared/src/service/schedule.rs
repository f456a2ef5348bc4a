//! When a record is due again: the saga's clock, as stored timestamps.
//!
//! Waits between re-drives are exponential with full jitter (`random(0, min(cap, base·2ⁿ))`),
//! computed when the record is written and *stored* as its `due_at`, not slept in memory: the
//! schedule survives SIGKILL with the rest of the state. (backon's jitter adds `random(0, d)` to
//! `d`, which is not full jitter, and its retry loop lives in memory; the one formula is
//! [`retry::full_jitter`].) The request flow (a degraded answer), compensation (the next hop
//! can't say yet) and the re-driver all schedule through these three functions, so there is one
//! formula for "later".

use crate::config::{RetryConfig, SagaConfig};
use crate::hop::Hop;
use crate::retry;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The wait before re-drive number `n + 1`: full jitter over `min(cap, base·2ⁿ)`.
pub fn backoff(cfg: &SagaConfig, n: u32) -> Duration {
    retry::full_jitter(
        &RetryConfig {
            max_attempts: 1,
            base: cfg.backoff_base,
            cap: cfg.backoff_cap,
            ..RetryConfig::default()
        },
        n,
    )
}

/// `now + d`, saturating at the end of time.
pub fn later(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// When an open breaker will admit a trial (at least 50 ms from now).
pub(super) fn when_open_ends(hop: &Hop) -> DateTime<Utc> {
    let ms = hop.breaker().snapshot().open_for_ms.unwrap_or(0).max(50);
    later(Utc::now(), Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SagaConfig {
        SagaConfig {
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(2),
            ..SagaConfig::default()
        }
    }

    #[test]
    fn backoff_is_full_jitter_under_the_capped_exponential() {
        let c = cfg();
        for n in 0..10 {
            let ceiling = Duration::from_millis((100u64 << n).min(2_000));
            for _ in 0..100 {
                assert!(backoff(&c, n) <= ceiling);
            }
        }
        let draws: Vec<_> = (0..200).map(|_| backoff(&c, 4)).collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(800)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(800)));
    }

    #[test]
    fn later_saturates_instead_of_overflowing() {
        assert_eq!(
            later(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
