//! The advice checked against the real breaker on tokio's paused clock: a synthetic hop with a
//! latency tail and a healthy failure share is "measured", advised on, and then driven through
//! a `shared::breaker::Breaker` built from the advice, first for ten virtual minutes of healthy
//! traffic (the breaker must never open) and then through an outage, refused or hung (it must
//! open within the target).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use shared::breaker::{Breaker, BreakerConfig, BreakerState, Failure};
use tokio::time::{sleep_until, Instant};

use super::model::{advise, open_chance, Advice, Goal, Measured, NoAdvice};

/// xorshift64*: a reproducible stream of uniforms for the synthetic hop.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A healthy hop: 15 ms plus an exponential tail with a 10 ms mean; fails with `fail_share`.
struct Hop {
    rng: Rng,
    fail_share: f64,
}

impl Hop {
    fn new(seed: u64, fail_share: f64) -> Self {
        Self {
            rng: Rng(seed),
            fail_share,
        }
    }

    fn next(&mut self) -> (Duration, bool) {
        let tail = -10.0 * (1.0 - self.rng.uniform()).ln();
        let latency = Duration::from_secs_f64((15.0 + tail) / 1000.0);
        (latency, self.rng.uniform() < self.fail_share)
    }

    fn measure(&mut self, rate: f64, seconds: u64) -> Measured {
        let mut m = Measured {
            rate,
            ..Measured::default()
        };
        for _ in 0..(rate as u64 * seconds) {
            match self.next() {
                (_, true) => m.failures += 1,
                (latency, false) => m.latencies.push(latency),
            }
        }
        m
    }
}

#[derive(Debug)]
struct Status;

impl Failure for Status {
    fn counts_as_failure(&self) -> bool {
        true
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("http 502")
    }
}

/// What the hop does with a call during a phase.
#[derive(Clone, Copy)]
enum Phase {
    Healthy,
    Refused,
    Hung,
}

fn breaker(advice: &Advice) -> Arc<Breaker> {
    let cfg = BreakerConfig {
        timeout: advice.timeout,
        window: advice.window,
        min_calls: advice.min_calls,
        error_threshold_pct: advice.threshold_pct,
        reset: Duration::from_secs(3600), // an open breaker stays open: the test reads it
        ..BreakerConfig::default()
    };
    Arc::new(Breaker::new("payment->shipment", cfg))
}

/// Calls at `rate` from `from` for `length`, each as its own task, looking at the breaker every
/// `tick`. Returns how long into the phase it was first seen open.
async fn drive(
    b: &Arc<Breaker>,
    hop: &mut Hop,
    rate: f64,
    phase: Phase,
    from: Instant,
    length: Duration,
    tick: Duration,
) -> Option<Duration> {
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut next_call = from;
    let mut now = from;
    while now < from + length {
        sleep_until(now).await;
        while next_call <= now {
            let (latency, fails) = match phase {
                Phase::Healthy => hop.next(),
                Phase::Refused => (Duration::ZERO, true),
                Phase::Hung => (Duration::from_secs(3600), false),
            };
            let b = Arc::clone(b);
            tokio::spawn(async move {
                b.call(None, || async move {
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    if fails {
                        Err(Status)
                    } else {
                        Ok(())
                    }
                })
                .await
            });
            next_call += gap;
        }
        tokio::task::yield_now().await;
        if b.state() == BreakerState::Open {
            return Some(now - from);
        }
        now += tick;
    }
    None
}

/// Advises on a hop failing `fail_share` of its calls at `rate`, then checks the advice: ten
/// healthy minutes never open the breaker; a refused and a hung outage open it within the target.
async fn advice_holds(fail_share: f64, rate: f64, target: Duration) -> Advice {
    let mut hop = Hop::new(0x5EED, fail_share);
    let advice = advise(
        &hop.measure(rate, 60),
        Goal {
            detect_within: target,
        },
    )
    .expect("advice");

    let ms = Duration::from_millis(1);
    let healthy = breaker(&advice);
    let start = Instant::now();
    let ten_minutes = Duration::from_secs(600);
    let opened = drive(
        &healthy,
        &mut hop,
        rate,
        Phase::Healthy,
        start,
        ten_minutes,
        ms * 20,
    )
    .await;
    assert_eq!(opened, None, "opened on healthy traffic: {advice:?}");

    for outage in [Phase::Refused, Phase::Hung] {
        let b = breaker(&advice);
        let start = Instant::now();
        // A full window of healthy traffic first: the outage meets a window of successes.
        let warm = advice.window + Duration::from_secs(1);
        let early = drive(&b, &mut hop, rate, Phase::Healthy, start, warm, ms * 5).await;
        assert_eq!(early, None);
        let detected = drive(&b, &mut hop, rate, outage, start + warm, target * 2, ms)
            .await
            .expect("the outage opens the breaker");
        let expected = match outage {
            Phase::Refused => advice.detect_refused,
            _ => advice.detect_hang,
        };
        assert!(
            detected <= target,
            "detected after {detected:?}, target {target:?}: {advice:?}"
        );
        assert!(
            detected <= expected + ms * 25,
            "the model promised {expected:?}, the breaker took {detected:?}"
        );
    }
    advice
}

#[tokio::test(start_paused = true)]
async fn advice_detects_within_the_target_and_never_opens_on_healthy_traffic() {
    let advice = advice_holds(0.01, 50.0, Duration::from_secs(3)).await;
    assert_eq!(advice.threshold_pct, 50);
    assert_eq!(advice.retry_attempts, 2, "1 % fits in the retry budget");
    assert!(advice.false_opens_per_day < 1e-6, "{advice:?}");
}

#[tokio::test(start_paused = true)]
async fn a_noisy_hop_gets_a_higher_threshold_and_no_retries() {
    let advice = advice_holds(0.30, 50.0, Duration::from_secs(4)).await;
    assert!(advice.threshold_pct > 50, "{advice:?}");
    assert_eq!(advice.retry_attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_hop_is_advised_a_min_calls_its_window_holds() {
    // 2 calls per second: a handful per window, so min_calls must stay within it.
    let advice = advice_holds(0.01, 2.0, Duration::from_secs(3)).await;
    assert!(advice.calls_per_window < 10.0, "{advice:?}");
    assert!(
        f64::from(advice.min_calls) <= advice.calls_per_window,
        "{advice:?}"
    );
}

#[test]
fn the_timeout_sits_above_the_tail() {
    let mut hop = Hop::new(7, 0.0);
    let m = hop.measure(50.0, 60);
    let advice = advise(
        &m,
        Goal {
            detect_within: Duration::from_secs(3),
        },
    )
    .expect("advice");
    assert!(advice.timeout >= advice.p99 * 2, "{advice:?}");
    assert!(advice.timeout >= advice.p999.mul_f64(1.5));
    assert_eq!(advice.timeout.as_millis() % 10, 0);
    let late = m.latencies.iter().filter(|l| **l >= advice.timeout).count();
    assert_eq!(late, 0, "no healthy call reaches the timeout");
}

#[test]
fn a_target_shorter_than_the_timeout_is_refused() {
    let mut hop = Hop::new(7, 0.0);
    let result = advise(
        &hop.measure(50.0, 20),
        Goal {
            detect_within: Duration::from_millis(50),
        },
    );
    assert!(
        matches!(result, Err(NoAdvice::TargetTooShort { .. })),
        "{result:?}"
    );
    let nothing = advise(
        &Measured {
            rate: 50.0,
            ..Measured::default()
        },
        Goal {
            detect_within: Duration::from_secs(3),
        },
    );
    assert_eq!(nothing, Err(NoAdvice::NoSuccesses));
}

#[test]
fn open_chance_matches_the_binomial() {
    // 4 calls, θ 50 %: opens at 3 failures, so 2 more among 3: 3 p² (1 − p) + p³.
    let p: f64 = 0.1;
    let exact = 3.0 * p * p * (1.0 - p) + p.powi(3);
    assert!((open_chance(4, p, 0.5) - exact).abs() < 1e-12);
    assert_eq!(
        open_chance(1, p, 0.5),
        1.0,
        "one failure of one call is 100 %"
    );
    assert!(open_chance(300, 0.01, 0.5) < 1e-100);
    assert_eq!(open_chance(5, 0.0, 0.5), 0.0);
}
