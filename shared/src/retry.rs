//! Retries of a hop call: exponential backoff with full jitter, under a retry budget.
//!
//! A retry is only worth making when the call is safe to repeat (every hop call carries an
//! idempotency key derived from the caller's saga, so `/create` is) and the failure might pass
//! (a 5xx, a refused connection, a timeout). It is never made when the breaker rejected the call
//! (hammering an open breaker is what it exists to stop), when the callee refused the request
//! (4xx), or when the backoff would outlive the caller's deadline.
//!
//! Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter"): attempt `n` (0-based)
//! sleeps `random(0, min(cap, base·2ⁿ))`, which spreads a crowd of retrying callers the most.
//! The retry budget keeps an outage from becoming a retry storm: every first attempt deposits
//! a tenth of a token, every retry withdraws one, and a small floor lets a quiet service retry
//! at all — so retries stay at most about 10 % of calls plus the floor, per hop.
//!
//! `RETRY_BUDGET=false` takes the budget away: every failed call is retried up to
//! `RETRY_MAX_ATTEMPTS`, which is how the outage simulator shows the storm it prevents.
//! `RETRY_SEED` makes the jitter a fixed sequence per hop, so a simulation can be run again
//! with the same sleeps.
//!
//! [`RetryConfig`] (`RETRY_MAX_ATTEMPTS`, `RETRY_BASE_MS`, `RETRY_CAP_MS`, `RETRY_BUDGET`,
//! `RETRY_SEED`) lives here with its defaults and parsing; the re-driver reuses [`full_jitter`]
//! with its own base and cap.

use crate::env::{self, Reader, DAY_MS};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Retries of a hop call (exponential backoff with full jitter): `RETRY_MAX_ATTEMPTS`,
/// `RETRY_BASE_MS`, `RETRY_CAP_MS`, `RETRY_BUDGET`, `RETRY_SEED`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Attempts in total, the first included: 1 means no retries.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
    /// `RETRY_BUDGET`: retries stay within the hop's [`RetryBudget`] (the default); `false`
    /// retries every failure up to `max_attempts`.
    pub budget: bool,
    /// `RETRY_SEED`: the jitter's random sequence, fixed per hop; unset draws from the OS.
    pub seed: Option<u64>,
}

impl Default for RetryConfig {
    /// No retries; when turned on, backoff from 50 ms up to 2 s.
    fn default() -> Self {
        Self {
            max_attempts: 1,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
            budget: true,
            seed: None,
        }
    }
}

impl RetryConfig {
    /// `RETRY_MAX_ATTEMPTS` (1 to 100), `RETRY_BASE_MS`, `RETRY_CAP_MS`, which may not be
    /// below the base, `RETRY_BUDGET` (boolean) and `RETRY_SEED` (a whole number).
    pub fn read(r: &mut Reader<'_>) -> Self {
        let d = Self::default();
        let retry = Self {
            max_attempts: r.u32_in("RETRY_MAX_ATTEMPTS", d.max_attempts, 1, 100),
            base: r.millis("RETRY_BASE_MS", d.base, 1, DAY_MS),
            cap: r.millis("RETRY_CAP_MS", d.cap, 1, DAY_MS),
            budget: r.bool("RETRY_BUDGET", d.budget),
            seed: r.parse(
                "RETRY_SEED",
                None,
                "a whole number from 0 to 18446744073709551615",
                |v| v.parse::<u64>().ok().map(Some),
            ),
        };
        r.not_below("RETRY_CAP_MS", retry.cap, "RETRY_BASE_MS", retry.base);
        retry
    }
}

/// Tokens each first attempt deposits: retries may be this share of calls.
pub const BUDGET_RATIO: f64 = 0.1;
/// Tokens a hop starts with and never drops below through deposits alone: the floor.
pub const BUDGET_FLOOR: f64 = 10.0;
/// The most tokens a hop can save up, so a long quiet spell can't fund a storm later.
pub const BUDGET_MAX: f64 = 100.0;

/// How many tokens are left for retries, shared by all calls to one hop, and the hop's jitter
/// draws.
#[derive(Debug)]
pub struct RetryBudget {
    tokens: Mutex<f64>,
    jitter: Mutex<StdRng>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::seeded(None)
    }
}

impl RetryBudget {
    /// A full budget whose jitter follows `seed` (`RETRY_SEED`), or the OS's randomness.
    pub fn seeded(seed: Option<u64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => rand::make_rng(),
        };
        Self {
            tokens: Mutex::new(BUDGET_FLOOR),
            jitter: Mutex::new(rng),
        }
    }

    /// The sleep before retry number `attempt + 1`, drawn from this hop's sequence.
    pub fn jitter(&self, cfg: &RetryConfig, attempt: u32) -> Duration {
        let mut rng = self.jitter.lock().unwrap_or_else(|p| p.into_inner());
        jitter_from(&mut *rng, cfg, attempt)
    }

    /// A first attempt was made.
    pub fn deposit(&self) {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        *t = (*t + BUDGET_RATIO).min(BUDGET_MAX);
    }

    /// Takes one token for a retry; `false` when there is none.
    pub fn withdraw(&self) -> bool {
        let mut t = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if *t >= 1.0 {
            *t -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn tokens(&self) -> f64 {
        *self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sleep before retry number `attempt + 1`: random in `[0, min(cap, base·2^attempt)]`.
pub fn full_jitter(cfg: &RetryConfig, attempt: u32) -> Duration {
    jitter_from(&mut rand::rng(), cfg, attempt)
}

fn jitter_from(rng: &mut impl rand::Rng, cfg: &RetryConfig, attempt: u32) -> Duration {
    let ceiling = cfg
        .base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cfg.cap)
        .min(cfg.cap);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

/// What a failed attempt means for the next one.
pub enum Verdict {
    /// Transient: another attempt may succeed.
    Retry,
    /// Final: retrying can't help (breaker open, 4xx, no time left).
    Stop,
}

/// Why the loop stopped retrying, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The error was not worth retrying, or the call succeeded.
    NotRetryable,
    /// `RETRY_MAX_ATTEMPTS` reached.
    Attempts,
    /// The hop's retry budget was empty.
    Budget,
    /// The backoff would end after the caller's deadline.
    Deadline,
}

/// Runs `op(attempt)` until it succeeds, `classify` says stop, or attempts, budget or deadline
/// run out. Returns the last result and, for an error, why no further attempt was made.
pub async fn run<T, E, F, Fut>(
    hop: &str,
    cfg: &RetryConfig,
    budget: &RetryBudget,
    deadline: Instant,
    classify: impl Fn(&E) -> Verdict,
    mut op: F,
) -> (Result<T, E>, u32, GaveUp)
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    budget.deposit();
    let mut attempt = 0;
    loop {
        let result = op(attempt).await;
        let err = match result {
            Ok(v) => return (Ok(v), attempt + 1, GaveUp::NotRetryable),
            Err(e) => e,
        };
        let why = if matches!(classify(&err), Verdict::Stop) {
            Some(GaveUp::NotRetryable)
        } else if attempt + 1 >= cfg.max_attempts {
            Some(GaveUp::Attempts)
        } else {
            None
        };
        if let Some(why) = why {
            return (Err(err), attempt + 1, why);
        }
        let delay = budget.jitter(cfg, attempt);
        if Instant::now() + delay >= deadline {
            return (Err(err), attempt + 1, GaveUp::Deadline);
        }
        if cfg.budget && !budget.withdraw() {
            tracing::warn!(
                event = "retryBudgetExhausted",
                hop,
                "retry budget empty: not retrying"
            );
            metrics::counter!("hop_retry_budget_exhausted_total", "hop" => hop.to_string())
                .increment(1);
            return (Err(err), attempt + 1, GaveUp::Budget);
        }
        metrics::counter!("hop_retries_total", "hop" => hop.to_string()).increment(1);
        tracing::info!(
            event = "retry",
            hop,
            attempt = attempt + 1,
            delay_ms = env::millis(delay),
            "retrying the next hop"
        );
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn cfg(max_attempts: u32) -> RetryConfig {
        RetryConfig {
            max_attempts,
            base: Duration::from_millis(50),
            cap: Duration::from_millis(400),
            ..RetryConfig::default()
        }
    }

    fn transient(_: &&str) -> Verdict {
        Verdict::Retry
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_capped_exponential() {
        let c = cfg(10);
        for attempt in 0..12 {
            let ceiling = (50u64 << attempt.min(20)).min(400);
            for _ in 0..200 {
                let d = full_jitter(&c, attempt);
                assert!(d <= Duration::from_millis(ceiling), "{attempt}: {d:?}");
            }
        }
        // Spread, not a constant: some sleeps of attempt 3 land in each half of [0, 400].
        let samples: Vec<_> = (0..200).map(|_| full_jitter(&c, 3)).collect();
        assert!(samples.iter().any(|d| *d < Duration::from_millis(200)));
        assert!(samples.iter().any(|d| *d > Duration::from_millis(200)));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_until_success() {
        let calls = AtomicU32::new(0);
        let budget = RetryBudget::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (res, attempts, _) = run("t", &cfg(5), &budget, deadline, transient, |_| async {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err("http 502")
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(res, Ok(7));
        assert_eq!(attempts, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_attempts_and_sleeps_within_the_cap() {
        let started = Instant::now();
        let budget = RetryBudget::default();
        let deadline = started + Duration::from_secs(10);
        let (res, attempts, why) = run("t", &cfg(4), &budget, deadline, transient, |_| async {
            Err::<(), _>("connect")
        })
        .await;
        assert!(res.is_err());
        assert_eq!((attempts, why), (4, GaveUp::Attempts));
        // Three sleeps, each at most min(400, 50·2ⁿ): 50 + 100 + 200.
        assert!(
            started.elapsed() <= Duration::from_millis(350),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_error_is_not_retried() {
        let calls = AtomicU32::new(0);
        let budget = RetryBudget::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (_, attempts, why) = run(
            "t",
            &cfg(5),
            &budget,
            deadline,
            |_: &&str| Verdict::Stop,
            |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("open")
            },
        )
        .await;
        assert_eq!((attempts, why), (1, GaveUp::NotRetryable));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_outlives_the_deadline() {
        let budget = RetryBudget::default();
        let deadline = Instant::now() + Duration::from_millis(1);
        let c = RetryConfig {
            max_attempts: 5,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(1),
            ..RetryConfig::default()
        };
        // A zero-length jitter draw could still fit: run until one doesn't, bounded.
        let (_, attempts, why) = run("t", &c, &budget, deadline, transient, |_| async {
            Err::<(), _>("timeout")
        })
        .await;
        assert!(attempts <= 5);
        assert!(matches!(why, GaveUp::Deadline | GaveUp::Attempts));
        assert!(Instant::now() <= deadline, "slept past the deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_retries_at_a_tenth_of_calls_plus_the_floor() {
        let budget = RetryBudget::default();
        let deadline = Instant::now() + Duration::from_secs(3600);
        let retries = AtomicU32::new(0);
        let calls = 200u32;
        for _ in 0..calls {
            let _ = run("t", &cfg(3), &budget, deadline, transient, |attempt| {
                if attempt > 0 {
                    retries.fetch_add(1, Ordering::SeqCst);
                }
                async { Err::<(), _>("http 503") }
            })
            .await;
        }
        let made = f64::from(retries.load(Ordering::SeqCst));
        let allowed = BUDGET_FLOOR + BUDGET_RATIO * f64::from(calls);
        assert!(made <= allowed, "{made} retries for {calls} calls");
        assert!(made >= allowed - 1.0, "the budget should be spent: {made}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_the_budget_every_failure_is_retried_to_the_last_attempt() {
        let budget = RetryBudget::default();
        let deadline = Instant::now() + Duration::from_secs(3600);
        let unbudgeted = RetryConfig {
            budget: false,
            ..cfg(3)
        };
        let retries = AtomicU32::new(0);
        for _ in 0..200 {
            let _ = run("t", &unbudgeted, &budget, deadline, transient, |attempt| {
                if attempt > 0 {
                    retries.fetch_add(1, Ordering::SeqCst);
                }
                async { Err::<(), _>("http 503") }
            })
            .await;
        }
        assert_eq!(retries.load(Ordering::SeqCst), 400);
    }

    #[test]
    fn a_seeded_hop_draws_the_same_jitter_every_time() {
        let c = cfg(10);
        let draws = |seed| {
            let b = RetryBudget::seeded(Some(seed));
            (0..20).map(|n| b.jitter(&c, n % 4)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
        let b = RetryBudget::seeded(Some(7));
        assert!((0..50).all(|_| b.jitter(&c, 2) <= Duration::from_millis(200)));
    }

    #[test]
    fn retry_budget_and_seed_are_read_and_checked() {
        let read = |vars: &'static [(&'static str, &'static str)]| {
            let mut r = Reader::new(move |k| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            });
            let c = RetryConfig::read(&mut r);
            r.finish(c)
        };
        let d = read(&[]).unwrap();
        assert!(d.budget);
        assert_eq!(d.seed, None);
        let c = read(&[("RETRY_BUDGET", "false"), ("RETRY_SEED", "42")]).unwrap();
        assert!(!c.budget);
        assert_eq!(c.seed, Some(42));
        let err = read(&[("RETRY_SEED", "-1")]).unwrap_err();
        assert_eq!(err.0[0].var, "RETRY_SEED");
    }
}
