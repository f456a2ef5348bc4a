//! The tuning model behind `saga advise`: from what a hop does when healthy (its latencies, its
//! failure share, the call rate) and how fast an outage must be detected, the breaker settings
//! that detect it in time and the price in false opens. Pure arithmetic, no I/O, so tests check
//! it against the real breaker on the paused clock.
//!
//! The model, for the rate policy (docs/breaker.md, "Tuning: `saga advise`"):
//!
//! - **timeout** τ = max(2 × p99, 1.5 × p99.9), at least 10 ms, rounded up to 10 ms: a healthy
//!   call almost never reaches it, and a hung hop is failed after τ.
//! - **healthy failure share** p = (failures + slow calls past τ + 1) / (calls + 2): the measured
//!   share, nudged away from 0 (Laplace's rule), because "no failure in 500 calls" does not mean
//!   "never fails".
//! - **threshold** θ = 50 %, raised to 2.5 p (at most 90 %) for a hop that fails often when
//!   healthy, so its normal noise stays far from the line.
//! - **window** W. When an outage starts the window is full of successes; each bucket that leaves
//!   it takes its successes along, while failures pile up, so the failure share after t seconds
//!   is about t / W, and it crosses θ at t = θ W. Buckets leave whole, so add a tenth: a refused
//!   connection is detected after 1.1 θ W, a hang after τ + 1.1 θ W (failures are counted when
//!   they time out). W is chosen so the hang, the slower case, is detected within the target:
//!   W = (target − τ − 1/λ) / (1.1 θ), rounded down to 10 ms (1/λ: see minimum calls).
//! - **minimum calls** m: the fewest calls at which a window holding one failure and the usual
//!   share of others is unlikely to open (chance ≤ 1 in 1000), at least 3, and no more than the
//!   window holds at the measured rate. Then the window already holds m calls when an outage
//!   starts, and m never delays detection; failures arrive one call apart (1/λ), which the
//!   expected detection time adds.
//! - **false opens per day**: the breaker decides on every failure; there are λ p per second,
//!   each with a window of n = λ W calls, and each opens with probability
//!   P(1 + Binomial(n − 1, p) > θ n). Their product over a day.
//! - **retries**: one retry (2 attempts) when healthy failures are rare enough for the hop's
//!   retry budget (10 % of calls) to cover them, else none; the budget caps what an outage costs.

use std::time::Duration;

/// What was measured of a healthy hop.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Calls per second the hop received.
    pub rate: f64,
    /// Latencies of the calls that answered, any order.
    pub latencies: Vec<Duration>,
    /// Calls that failed (5xx, refused, reset, the measurement's own timeout).
    pub failures: u64,
}

/// What the breaker should achieve.
#[derive(Debug, Clone, Copy)]
pub struct Goal {
    /// Longest an outage (refused or hung) may last before the breaker opens.
    pub detect_within: Duration,
}

/// The recommendation, and what it is expected to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Advice {
    pub timeout: Duration,
    pub window: Duration,
    pub min_calls: u32,
    pub threshold_pct: u8,
    pub retry_attempts: u32,
    /// Healthy failure share the model assumed (see the module docs).
    pub healthy_failure_share: f64,
    /// Calls in a window at the measured rate.
    pub calls_per_window: f64,
    /// Expected time to open when the hop refuses connections.
    pub detect_refused: Duration,
    /// Expected time to open when the hop hangs.
    pub detect_hang: Duration,
    /// Expected false opens per day of healthy traffic.
    pub false_opens_per_day: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
}

/// Why no advice can be given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoAdvice {
    #[error("no successful call was measured: is the hop up, and is the body one it accepts?")]
    NoSuccesses,
    #[error("the call rate must be positive, got {0}")]
    NoRate(f64),
    #[error(
        "a detection target of {target_ms} ms leaves no room for a window: the recommended \
         timeout alone is {timeout_ms} ms (p99.9 {p999_ms} ms); allow at least {need_ms} ms"
    )]
    TargetTooShort {
        target_ms: u64,
        timeout_ms: u64,
        p999_ms: u64,
        need_ms: u64,
    },
}

/// Buckets leave the window whole: detection can take up to a tenth of a window longer.
const BUCKET_SLACK: f64 = 1.1;
/// The false-open chance allowed for a window of `min_calls` calls.
const MIN_CALLS_RISK: f64 = 1e-3;
/// The hop's retry budget (`shared::retry`): retries are at most this share of calls.
const RETRY_BUDGET_SHARE: f64 = 0.10;

/// The advice for `measured` under `goal` (see the module docs for the model).
pub fn advise(measured: &Measured, goal: Goal) -> Result<Advice, NoAdvice> {
    if !(measured.rate.is_finite() && measured.rate > 0.0) {
        return Err(NoAdvice::NoRate(measured.rate));
    }
    let mut sorted = measured.latencies.clone();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Err(NoAdvice::NoSuccesses);
    }
    let (p50, p99, p999) = (
        quantile(&sorted, 0.50),
        quantile(&sorted, 0.99),
        quantile(&sorted, 0.999),
    );
    let timeout = round_up_10ms((p99 * 2).max(p999.mul_f64(1.5)).max(ms(10)));
    let late = sorted.iter().filter(|d| **d >= timeout).count() as u64;
    let calls = sorted.len() as u64 + measured.failures;
    let p = (measured.failures + late + 1) as f64 / (calls + 2) as f64;
    let threshold_pct = (p * 250.0).ceil().clamp(50.0, 90.0) as u8;
    let theta = f64::from(threshold_pct) / 100.0;

    let room = goal.detect_within.saturating_sub(timeout);
    let gap = Duration::from_secs_f64(1.0 / measured.rate);
    let window = round_down_10ms(room.saturating_sub(gap).div_f64(BUCKET_SLACK * theta));
    if window < ms(10) {
        return Err(NoAdvice::TargetTooShort {
            target_ms: millis(goal.detect_within),
            timeout_ms: millis(timeout),
            p999_ms: millis(p999),
            need_ms: millis(timeout + gap + ms(10).mul_f64(BUCKET_SLACK * theta)) + 1,
        });
    }
    let calls_per_window = measured.rate * window.as_secs_f64();
    let max_min_calls = (calls_per_window.floor() as u32).max(3);
    let min_calls = (3..=max_min_calls)
        .find(|m| open_chance(*m, p, theta) <= MIN_CALLS_RISK)
        .unwrap_or(max_min_calls);

    // Failures arrive one call apart: the one that crosses the line may come up to a gap late.
    let detect_refused = window.mul_f64(BUCKET_SLACK * theta) + gap;
    let detect_hang = timeout + detect_refused;
    let n = calls_per_window.round().max(1.0) as u32;
    let false_opens_per_day = if n < min_calls {
        0.0
    } else {
        measured.rate * p * 86_400.0 * open_chance(n, p, theta)
    };
    let retry_attempts = if p <= RETRY_BUDGET_SHARE / 2.0 { 2 } else { 1 };

    Ok(Advice {
        timeout,
        window,
        min_calls,
        threshold_pct,
        retry_attempts,
        healthy_failure_share: p,
        calls_per_window,
        detect_refused,
        detect_hang,
        false_opens_per_day,
        p50,
        p99,
        p999,
    })
}

/// The chance that a window of `n` calls opens when one of them has just failed and each other
/// failed with probability `p`: P(1 + Binomial(n − 1, p) > θ n).
pub fn open_chance(n: u32, p: f64, theta: f64) -> f64 {
    // Failures needed: the smallest k with k > θ n.
    let need = (theta * f64::from(n)).floor() as u32 + 1;
    if need <= 1 {
        return 1.0;
    }
    binomial_tail(n - 1, p, need - 1)
}

/// P(Binomial(trials, p) ≥ k), summed in log space so large windows do not underflow early.
fn binomial_tail(trials: u32, p: f64, k: u32) -> f64 {
    if k > trials {
        return 0.0;
    }
    if p <= 0.0 {
        return if k == 0 { 1.0 } else { 0.0 };
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut ln_choose = ln_choose(trials, k);
    let mut total = 0.0;
    for i in k..=trials {
        total += (ln_choose + f64::from(i) * lp + f64::from(trials - i) * lq).exp();
        // C(n, i+1) = C(n, i) (n - i) / (i + 1)
        ln_choose += (f64::from(trials - i)).ln() - (f64::from(i + 1)).ln();
    }
    total.min(1.0)
}

fn ln_choose(n: u32, k: u32) -> f64 {
    (1..=k).fold(0.0, |acc, i| {
        acc + f64::from(n - k + i).ln() - f64::from(i).ln()
    })
}

/// The `q` quantile of `sorted` (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn millis(d: Duration) -> u64 {
    shared::env::millis(d)
}

fn round_up_10ms(d: Duration) -> Duration {
    ms(millis(d + ms(9)) / 10 * 10)
}

fn round_down_10ms(d: Duration) -> Duration {
    ms(millis(d) / 10 * 10)
}

impl Advice {
    /// The service variables that apply this advice.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BREAKER_POLICY", "rate".into()),
            ("BREAKER_TIMEOUT_MS", millis(self.timeout).to_string()),
            ("BREAKER_WINDOW_MS", millis(self.window).to_string()),
            ("BREAKER_MIN_CALLS", self.min_calls.to_string()),
            ("BREAKER_ERROR_THRESHOLD", self.threshold_pct.to_string()),
            ("RETRY_MAX_ATTEMPTS", self.retry_attempts.to_string()),
        ]
    }
}
