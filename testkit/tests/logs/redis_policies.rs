//! The count and slow-call policies on the shared breaker (`BREAKER_BACKEND=redis`), against a
//! real Redis: `record.lua` applies the count rule, and a call still running at the slow line is
//! recorded in Redis while it runs, so every replica sees it. Replicas share a `ManualClock`,
//! as in `redis_breaker`; each test has its own breaker name.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use shared::breaker::redis::ManualClock;
use shared::breaker::{
    Breaker, BreakerBackend, BreakerConfig, BreakerError, BreakerPolicy, BreakerState, Failure,
};
use testkit::redis::redis_url;
use tokio::sync::Notify;

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

async fn ok(b: &Breaker) -> Outcome {
    b.call(None, || async { Ok(1) }).await
}

async fn fail(b: &Breaker) -> Outcome {
    b.call(None, || async { Err(Status(502)) }).await
}

/// Two replicas of one breaker with `policy`, on one clock; `None` without Redis (never in CI).
fn two_replicas(
    test: &str,
    policy: BreakerPolicy,
) -> Option<(Arc<Breaker>, Arc<Breaker>, Arc<ManualClock>)> {
    let Some(url) = redis_url() else {
        eprintln!("skipped: no Redis");
        return None;
    };
    let name = testkit::unique_db_name(test).replace('_', "-");
    let clock = Arc::new(ManualClock::starting_now());
    let cfg = BreakerConfig {
        policy,
        timeout: Duration::from_secs(5),
        reset_jitter: Duration::ZERO,
        ..BreakerConfig::default()
    };
    let replica = || {
        let backend = BreakerBackend::Redis { url: url.clone() };
        Breaker::with_backend_and_clock(&name, cfg.clone(), &backend, clock.clone())
            .map(Arc::new)
            .expect("a valid REDIS_URL builds a breaker")
    };
    Some((replica(), replica(), clock))
}

#[tokio::test]
async fn count_policy_in_redis_opens_at_n_failures_from_any_replica() {
    let Some((a, b, clock)) = two_replicas("count-redis", BreakerPolicy::Count { failures: 3 })
    else {
        return;
    };
    for _ in 0..20 {
        ok(&a).await.expect("closed");
        ok(&b).await.expect("closed");
    }
    let _ = fail(&a).await;
    let _ = fail(&b).await;
    assert_eq!(a.state(), BreakerState::Closed, "2 failures of 42 calls");

    // The window (the seed's `expires`) passes: those two no longer count.
    clock.advance(Duration::from_secs(10));
    let _ = fail(&b).await;
    let _ = fail(&a).await;
    assert_eq!(
        a.snapshot().window.failures,
        2,
        "only the two new ones (as a saw it last)"
    );
    assert_eq!(b.state(), BreakerState::Closed);

    let _ = fail(&b).await;
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "the third failure in the window"
    );
    assert!(
        matches!(ok(&a).await, Err(BreakerError::Rejected)),
        "for both replicas"
    );
}

#[tokio::test]
async fn slow_policy_in_redis_counts_calls_still_in_flight() {
    let Some((a, b, _clock)) = two_replicas(
        "slow-redis",
        BreakerPolicy::Slow {
            slow_call: Duration::from_millis(50),
        },
    ) else {
        return;
    };
    let gate = Arc::new(Notify::new());
    let hung: Vec<_> = (0..5)
        .map(|i| {
            let r = Arc::clone(if i % 2 == 0 { &a } else { &b });
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                r.call(None, || async move {
                    gate.notified().await;
                    Ok::<u32, Status>(7)
                })
                .await
            })
        })
        .collect();
    // Real time here (Redis's clock is the manual one, the slow line is tokio's): wait until
    // the five calls have crossed it and been recorded, while all of them are still hanging.
    let mut open = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if matches!(ok(&a).await, Err(BreakerError::Rejected)) {
            open = true;
            break;
        }
    }
    assert!(
        open,
        "five calls past the slow line opened the shared breaker"
    );
    assert!(
        hung.iter().all(|h| !h.is_finished()),
        "none of them had answered"
    );
    assert_eq!(b.state(), BreakerState::Open);
    gate.notify_waiters();
    for h in hung {
        assert_eq!(
            h.await
                .expect("task ran")
                .expect("late answer reaches the caller"),
            7
        );
    }
}
