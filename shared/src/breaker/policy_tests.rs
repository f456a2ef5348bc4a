//! The three policies and the reset jitter, through the whole [`Breaker`] on tokio's paused
//! clock: what opens it under `count` and `slow` that would not open it under `rate`, and what
//! the default jitter does to the open time. The window's own arithmetic is unit-tested in
//! `policy`; the rate policy's behaviour is the rest of the breaker's tests (`tests`).

use std::fmt;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::advance;

use super::*;

#[derive(Debug)]
struct Status(u16);

impl Failure for Status {
    fn counts_as_failure(&self) -> bool {
        self.0 >= 500
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http {}", self.0)
    }
}

type Outcome = Result<u32, BreakerError<Status>>;

fn breaker(policy: BreakerPolicy) -> Arc<Breaker> {
    let cfg = BreakerConfig {
        policy,
        reset_jitter: Duration::ZERO,
        ..BreakerConfig::default()
    };
    Arc::new(Breaker::new("payment->shipment", cfg))
}

async fn ok(b: &Breaker) -> Outcome {
    b.call(None, || async { Ok(1) }).await
}

async fn fail(b: &Breaker) -> Outcome {
    b.call(None, || async { Err(Status(502)) }).await
}

/// A call whose hop answers after `after` (virtual time).
async fn answering_after(b: &Breaker, after: Duration) -> Outcome {
    b.call(None, || async move {
        tokio::time::sleep(after).await;
        Ok(1)
    })
    .await
}

/// A call whose hop answers only when `gate` is notified.
fn held(b: &Arc<Breaker>, gate: &Arc<Notify>) -> tokio::task::JoinHandle<Outcome> {
    let (b, gate) = (Arc::clone(b), Arc::clone(gate));
    tokio::spawn(async move {
        b.call(None, || async move {
            gate.notified().await;
            Ok(7)
        })
        .await
    })
}

#[tokio::test(start_paused = true)]
async fn count_opens_at_n_failures_within_the_window_even_among_many_successes() {
    let count = breaker(BreakerPolicy::Count { failures: 3 });
    let rate = breaker(BreakerPolicy::Rate);
    for b in [&count, &rate] {
        for _ in 0..50 {
            ok(b).await.expect("closed");
        }
        for _ in 0..3 {
            let _ = fail(b).await;
        }
    }
    assert_eq!(
        count.state(),
        BreakerState::Open,
        "3 failures in the window"
    );
    assert_eq!(
        rate.state(),
        BreakerState::Closed,
        "3 in 53 is 6 %, below 50 %"
    );
    assert!(matches!(ok(&count).await, Err(BreakerError::Rejected)));
}

#[tokio::test(start_paused = true)]
async fn count_lets_failures_expire_with_the_window() {
    let b = breaker(BreakerPolicy::Count { failures: 3 });
    let _ = fail(&b).await;
    let _ = fail(&b).await;
    advance(Duration::from_secs(10)).await; // the window (the seed's `expires`)
    let _ = fail(&b).await;
    assert_eq!(b.state(), BreakerState::Closed, "the first two expired");
    let _ = fail(&b).await;
    let _ = fail(&b).await;
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_counts_calls_that_answer_late_but_within_the_timeout() {
    let slow = breaker(BreakerPolicy::Slow {
        slow_call: Duration::from_millis(100),
    });
    let rate = breaker(BreakerPolicy::Rate);
    for b in [&slow, &rate] {
        for _ in 0..5 {
            // 200 ms: late for the slow line, in time for the 300 ms timeout.
            let answer = answering_after(b, Duration::from_millis(200)).await;
            assert_eq!(answer.expect("the caller still gets the answer"), 1);
        }
    }
    assert_eq!(slow.state(), BreakerState::Open, "5 of 5 calls were slow");
    assert_eq!(slow.snapshot().totals.slow, 5);
    assert_eq!(slow.snapshot().totals.success, 0, "a slow call counts once");
    assert_eq!(rate.state(), BreakerState::Closed, "every call succeeded");
}

#[tokio::test(start_paused = true)]
async fn slow_opens_while_the_slow_calls_are_still_in_flight() {
    let b = breaker(BreakerPolicy::Slow {
        slow_call: Duration::from_millis(100),
    });
    let gate = Arc::new(Notify::new());
    let hung: Vec<_> = (0..5).map(|_| held(&b, &gate)).collect();
    tokio::task::yield_now().await;
    advance(Duration::from_millis(99)).await;
    assert_eq!(b.state(), BreakerState::Closed, "not slow yet");
    advance(Duration::from_millis(1)).await;
    tokio::task::yield_now().await;
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "five calls past the line, none of them finished"
    );
    assert!(matches!(ok(&b).await, Err(BreakerError::Rejected)));
    gate.notify_waiters();
    for call in hung {
        let answer = call.await.expect("the call task ran");
        assert_eq!(answer.expect("a slow answer still reaches its caller"), 7);
    }
    assert_eq!(b.snapshot().totals.open, 1, "late answers do not move it");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_that_then_time_out_count_once() {
    let b = breaker(BreakerPolicy::Slow {
        slow_call: Duration::from_millis(100),
    });
    let outcome = answering_after(&b, Duration::from_secs(5)).await;
    assert!(matches!(outcome, Err(BreakerError::Timeout(_))));
    let totals = b.snapshot().totals;
    assert_eq!((totals.slow, totals.timeout), (1, 0));
    assert_eq!(b.snapshot().window.failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_fast_answer_under_the_slow_policy_is_a_success() {
    let b = breaker(BreakerPolicy::Slow {
        slow_call: Duration::from_millis(100),
    });
    for _ in 0..10 {
        answering_after(&b, Duration::from_millis(99))
            .await
            .expect("in time");
    }
    let _ = fail(&b).await;
    assert_eq!(b.snapshot().window.failures, 1);
    assert_eq!(b.snapshot().totals.success, 10);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_caller_budget_shorter_than_the_slow_line_times_out_instead() {
    let b = breaker(BreakerPolicy::Slow {
        slow_call: Duration::from_millis(100),
    });
    let outcome: Outcome = b
        .call(Some(Duration::from_millis(50)), || async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(1)
        })
        .await;
    assert!(matches!(outcome, Err(BreakerError::Timeout(_))));
    assert_eq!(b.snapshot().totals.slow, 0);
    assert_eq!(b.snapshot().totals.timeout, 1);
}

#[tokio::test(start_paused = true)]
async fn default_jitter_opens_for_the_reset_plus_up_to_a_tenth_and_varies() {
    let mut open_for = Vec::new();
    for _ in 0..40 {
        let b = Breaker::new("payment->shipment", BreakerConfig::default());
        for _ in 0..5 {
            let _ = fail(&b).await;
        }
        open_for.push(b.snapshot().open_for_ms.expect("open"));
    }
    assert!(
        open_for.iter().all(|ms| (10_000..=11_000).contains(ms)),
        "{open_for:?}"
    );
    assert!(
        open_for.iter().any(|ms| *ms != open_for[0]),
        "on by default"
    );
}

#[tokio::test(start_paused = true)]
async fn gaussian_jitter_keeps_its_bound_and_reaches_the_trial() {
    let b = Breaker::new(
        "payment->shipment",
        BreakerConfig {
            jitter: Jitter::Gaussian,
            reset_jitter: Duration::from_secs(2),
            ..BreakerConfig::default()
        },
    );
    for _ in 0..5 {
        let _ = fail(&b).await;
    }
    let ms = b.snapshot().open_for_ms.expect("open");
    assert!((10_000..=12_000).contains(&ms), "{ms}");
    // `open_for_ms` is whole milliseconds, rounded down.
    advance(Duration::from_millis(ms + 1)).await;
    ok(&b)
        .await
        .expect("the trial is admitted once the jittered reset elapsed");
    assert_eq!(b.state(), BreakerState::Closed);
}
