use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::{advance, sleep};

use super::*;

/// A hop's error: 4xx passes through, 5xx counts.
#[derive(Debug, PartialEq, Eq)]
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

/// The defaults without the reset jitter, so a reset lasts exactly `reset`.
fn config() -> BreakerConfig {
    BreakerConfig {
        reset_jitter: Duration::ZERO,
        ..BreakerConfig::default()
    }
}

fn breaker(cfg: BreakerConfig) -> Arc<Breaker> {
    Arc::new(Breaker::new("payment->shipment", cfg))
}

async fn ok(b: &Breaker) -> Outcome {
    b.call(None, || async { Ok(1) }).await
}

async fn fail(b: &Breaker) -> Outcome {
    b.call(None, || async { Err(Status(502)) }).await
}

async fn open(b: &Breaker) {
    for _ in 0..b.config().min_calls {
        let _ = fail(b).await;
    }
    assert_eq!(b.state(), BreakerState::Open);
}

/// Opens `b`, then lets the reset timer elapse (no jitter in these configs).
async fn open_and_wait(b: &Breaker) {
    open(b).await;
    advance(b.config().reset).await;
}

fn is_rejected(outcome: &Outcome) -> bool {
    matches!(outcome, Err(BreakerError::Rejected))
}

/// A hop that counts its invocations and answers `Ok` once `gate` is notified.
fn gated_hop(
    calls: &Arc<AtomicUsize>,
    gate: &Arc<Notify>,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<u32, Status>> + Send>> {
    let calls = Arc::clone(calls);
    let gate = Arc::clone(gate);
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            gate.notified().await;
            Ok(7)
        })
    }
}

#[tokio::test(start_paused = true)]
async fn does_not_open_below_min_calls() {
    let b = breaker(config());
    for _ in 0..4 {
        assert!(matches!(
            fail(&b).await,
            Err(BreakerError::Failed(Status(502)))
        ));
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().window.failures, 4);
}

#[tokio::test(start_paused = true)]
async fn opens_when_failure_rate_exceeds_threshold() {
    let b = breaker(config());
    for _ in 0..2 {
        ok(&b).await.expect("closed breaker passes successes");
    }
    for _ in 0..3 {
        let _ = fail(&b).await;
    }
    assert_eq!(b.state(), BreakerState::Open);
    let snapshot = b.snapshot();
    assert_eq!(snapshot.window.failure_pct, 60.0);
    assert_eq!(snapshot.open_for_ms, Some(10_000));
}

#[tokio::test(start_paused = true)]
async fn exactly_threshold_failure_rate_does_not_open() {
    let b = breaker(config());
    for _ in 0..3 {
        ok(&b).await.expect("closed breaker passes successes");
    }
    for _ in 0..3 {
        let _ = fail(&b).await;
    }
    assert_eq!(b.snapshot().window.failure_pct, 50.0);
    assert_eq!(b.state(), BreakerState::Closed);
    let _ = fail(&b).await;
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn rejects_while_open_without_calling_the_hop() {
    let b = breaker(config());
    open(&b).await;
    let calls = AtomicUsize::new(0);
    for _ in 0..10 {
        let outcome: Outcome = b
            .call(None, || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Ok(1) }
            })
            .await;
        assert!(is_rejected(&outcome));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let snapshot = b.snapshot();
    assert_eq!(snapshot.totals.reject, 10);
    assert_eq!(snapshot.window.calls, 5, "rejections are not calls");
}

#[tokio::test(start_paused = true)]
async fn half_opens_after_reset() {
    let b = breaker(config());
    open(&b).await;
    advance(Duration::from_millis(9_999)).await;
    assert!(is_rejected(&ok(&b).await));
    advance(Duration::from_millis(1)).await;
    assert_eq!(b.snapshot().open_for_ms, Some(0));

    let (calls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let trial = tokio::spawn({
        let b = Arc::clone(&b);
        let hop = gated_hop(&calls, &gate);
        async move { b.call(None, hop).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.snapshot().totals.half_open, 1);
    gate.notify_one();
    assert_eq!(trial.await.expect("trial task").expect("trial answers"), 7);
}

#[tokio::test(start_paused = true)]
async fn only_one_of_many_concurrent_callers_is_the_trial() {
    let b = breaker(config());
    open_and_wait(&b).await;
    let (calls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let b = Arc::clone(&b);
            let hop = gated_hop(&calls, &gate);
            tokio::spawn(async move { b.call(None, hop).await })
        })
        .collect();
    for _ in 0..100 {
        if tasks.iter().filter(|t| t.is_finished()).count() == 19 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "only the trial reaches the hop"
    );
    assert_eq!(b.state(), BreakerState::HalfOpen);
    gate.notify_one();

    let mut admitted = 0;
    let mut rejected = 0;
    for task in tasks {
        match task.await.expect("caller task") {
            Ok(7) => admitted += 1,
            Err(BreakerError::Rejected) => rejected += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((admitted, rejected), (1, 19));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn trial_success_closes() {
    let b = breaker(config());
    open_and_wait(&b).await;
    assert_eq!(ok(&b).await.expect("trial passes"), 1);
    assert_eq!(b.state(), BreakerState::Closed);
    let snapshot = b.snapshot();
    assert_eq!(snapshot.window, WindowStats::default(), "window cleared");
    assert_eq!((snapshot.totals.half_open, snapshot.totals.close), (1, 1));
    ok(&b).await.expect("closed again");
}

#[tokio::test(start_paused = true)]
async fn trial_failure_reopens_and_restarts_the_timer() {
    let b = breaker(config());
    open_and_wait(&b).await;
    advance(Duration::from_secs(3)).await; // the trial comes late: timer must restart from it
    assert!(matches!(fail(&b).await, Err(BreakerError::Failed(_))));
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.snapshot().open_for_ms, Some(10_000));
    assert_eq!(b.snapshot().totals.open, 2);

    advance(Duration::from_millis(9_999)).await;
    assert!(is_rejected(&ok(&b).await));
    advance(Duration::from_millis(1)).await;
    ok(&b).await.expect("second trial admitted");
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn timed_out_call_counts_as_failure() {
    let b = breaker(BreakerConfig {
        min_calls: 1,
        ..config()
    });
    let start = Instant::now();
    let outcome: Outcome = b
        .call(None, || async {
            sleep(Duration::from_secs(1)).await;
            Ok(1)
        })
        .await;
    assert!(matches!(outcome, Err(BreakerError::Timeout(d)) if d == Duration::from_millis(300)));
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    let snapshot = b.snapshot();
    assert_eq!((snapshot.window.calls, snapshot.window.failures), (1, 1));
    assert_eq!(snapshot.totals.timeout, 1);
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_answer_within_the_timeout_succeeds() {
    let b = breaker(config());
    let outcome: Outcome = b
        .call(None, || async {
            sleep(Duration::from_millis(299)).await;
            Ok(1)
        })
        .await;
    assert_eq!(outcome.expect("answered in time"), 1);
    assert_eq!(b.snapshot().totals.success, 1);
}

#[tokio::test(start_paused = true)]
async fn four_xx_passes_through_uncounted() {
    let b = breaker(BreakerConfig {
        min_calls: 1,
        ..config()
    });
    for _ in 0..10 {
        let outcome: Outcome = b.call(None, || async { Err(Status(404)) }).await;
        assert!(matches!(outcome, Err(BreakerError::Failed(Status(404)))));
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().window, WindowStats::default());
}

#[tokio::test(start_paused = true)]
async fn trial_ending_in_four_xx_releases_the_slot_without_a_transition() {
    let b = breaker(config());
    open_and_wait(&b).await;
    let outcome: Outcome = b.call(None, || async { Err(Status(409)) }).await;
    assert!(matches!(outcome, Err(BreakerError::Failed(Status(409)))));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    ok(&b).await.expect("next caller is the new trial");
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn old_failures_leave_the_window() {
    let stale = breaker(config());
    let recent = breaker(config());
    for b in [&stale, &recent] {
        for _ in 0..4 {
            let _ = fail(b).await;
        }
    }
    advance(Duration::from_secs(5)).await;
    let _ = fail(&recent).await;
    assert_eq!(
        recent.state(),
        BreakerState::Open,
        "5 s old failures still count"
    );

    advance(Duration::from_secs(5)).await;
    assert_eq!(stale.snapshot().window, WindowStats::default());
    let _ = fail(&stale).await;
    assert_eq!(stale.state(), BreakerState::Closed);
    assert_eq!(stale.snapshot().window.calls, 1);
}

#[tokio::test(start_paused = true)]
async fn reset_jitter_stays_within_bounds() {
    let jitter = Duration::from_secs(2);
    let mut open_for = Vec::new();
    for _ in 0..50 {
        let b = breaker(BreakerConfig {
            reset_jitter: jitter,
            ..config()
        });
        open(&b).await;
        open_for.push(b.snapshot().open_for_ms.expect("open"));
        // A failed trial draws a fresh delay, also within bounds.
        advance(Duration::from_secs(12)).await;
        let _ = fail(&b).await;
        open_for.push(b.snapshot().open_for_ms.expect("re-opened"));
    }
    assert!(
        open_for.iter().all(|ms| (10_000..=12_000).contains(ms)),
        "{open_for:?}"
    );
    assert!(
        open_for.iter().any(|ms| *ms != open_for[0]),
        "jitter varies"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_trial_releases_the_slot() {
    let b = breaker(config());
    open_and_wait(&b).await;
    let trial = tokio::spawn({
        let b = Arc::clone(&b);
        async move {
            b.call(None, std::future::pending::<Result<u32, Status>>)
                .await
        }
    });
    tokio::task::yield_now().await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(is_rejected(&ok(&b).await), "the trial holds the slot");

    trial.abort();
    assert!(trial.await.expect_err("aborted").is_cancelled());
    assert_eq!(
        b.state(),
        BreakerState::HalfOpen,
        "no verdict from a cancelled trial"
    );
    ok(&b).await.expect("the next caller becomes the trial");
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn stale_success_does_not_close_a_half_open_breaker() {
    let b = breaker(BreakerConfig {
        timeout: Duration::from_secs(30),
        ..config()
    });
    // Admitted while closed, answers only after the breaker has gone half-open.
    let slow = tokio::spawn({
        let b = Arc::clone(&b);
        async move {
            b.call(None, || async {
                sleep(Duration::from_secs(15)).await;
                Ok::<_, Status>(1)
            })
            .await
        }
    });
    tokio::task::yield_now().await;
    open_and_wait(&b).await;
    let (calls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let trial = tokio::spawn({
        let b = Arc::clone(&b);
        let hop = gated_hop(&calls, &gate);
        async move { b.call(None, hop).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(b.state(), BreakerState::HalfOpen);

    advance(Duration::from_secs(5)).await;
    slow.await.expect("slow task").expect("slow call answers");
    assert_eq!(b.state(), BreakerState::HalfOpen);
    gate.notify_one();
    trial.await.expect("trial task").expect("trial answers");
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn deadline_shorter_than_timeout_wins_but_does_not_count() {
    let b = breaker(config());
    let slow = || async {
        sleep(Duration::from_secs(1)).await;
        Ok::<u32, Status>(1)
    };
    let start = Instant::now();
    let outcome = b.call(Some(Duration::from_millis(50)), slow).await;
    assert!(matches!(outcome, Err(BreakerError::Timeout(d)) if d == Duration::from_millis(50)));
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(
        b.snapshot().window,
        WindowStats::default(),
        "the caller's short deadline is not the hop's failure"
    );
    assert_eq!(b.snapshot().totals.timeout, 1);

    let start = Instant::now();
    let outcome = b.call(Some(Duration::from_secs(5)), slow).await;
    assert!(matches!(outcome, Err(BreakerError::Timeout(d)) if d == Duration::from_millis(300)));
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    let window = b.snapshot().window;
    assert_eq!(
        (window.calls, window.failures),
        (1, 1),
        "the full timeout counts"
    );
}

#[tokio::test(start_paused = true)]
async fn tiny_caller_deadlines_never_open_the_breaker() {
    let b = breaker(config());
    let hang = || std::future::pending::<Result<u32, Status>>();
    for ms in [8, 12, 20, 30, 149] {
        let outcome = b.call(Some(Duration::from_millis(ms)), hang).await;
        assert!(matches!(outcome, Err(BreakerError::Timeout(_))));
    }
    for _ in 0..5 {
        let _ = b.call(Some(Duration::from_millis(20)), hang).await;
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().window, WindowStats::default());
    assert_eq!(b.snapshot().totals.timeout, 10);
    ok(&b).await.expect("the hop is still called");
}

#[tokio::test(start_paused = true)]
async fn a_fair_share_of_the_timeout_still_counts() {
    // An inner hop never gets its full timeout from a caller with the same one (every hop keeps
    // a margin), so half of it and more is the hop's own slowness.
    let b = breaker(config());
    let hang = || std::future::pending::<Result<u32, Status>>();
    for _ in 0..b.config().min_calls {
        let _ = b.call(Some(Duration::from_millis(150)), hang).await;
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn exhausted_deadline_skips_the_hop_without_counting() {
    let b = breaker(BreakerConfig {
        min_calls: 1,
        ..config()
    });
    let calls = AtomicUsize::new(0);
    let outcome: Outcome = b
        .call(Some(Duration::ZERO), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok(1) }
        })
        .await;
    assert!(matches!(
        outcome,
        Err(BreakerError::Timeout(Duration::ZERO))
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().window, WindowStats::default());
    assert_eq!(b.snapshot().totals.timeout, 1);
}

#[tokio::test(start_paused = true)]
async fn disabled_breaker_never_opens_but_times_out() {
    let b = breaker(BreakerConfig {
        enabled: false,
        ..config()
    });
    for _ in 0..20 {
        let _ = fail(&b).await;
    }
    assert_eq!(b.state(), BreakerState::Closed);
    ok(&b).await.expect("still calling the hop");
    let outcome: Outcome = b
        .call(None, || async {
            sleep(Duration::from_secs(1)).await;
            Ok(1)
        })
        .await;
    assert!(matches!(outcome, Err(BreakerError::Timeout(_))));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn reason_names_open_timeout_or_the_hop_error() {
    assert_eq!(BreakerError::<Status>::Rejected.reason(), "open");
    assert_eq!(
        BreakerError::<Status>::Timeout(Duration::from_millis(300)).reason(),
        "timeout"
    );
    assert_eq!(BreakerError::Failed(Status(503)).reason(), "http 503");
}

#[tokio::test(start_paused = true)]
async fn snapshot_serializes_state_in_camel_case_and_durations_in_ms() {
    let b = breaker(config());
    open_and_wait(&b).await;
    let (calls, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
    let trial = tokio::spawn({
        let b = Arc::clone(&b);
        let hop = gated_hop(&calls, &gate);
        async move { b.call(None, hop).await }
    });
    tokio::task::yield_now().await;
    b.record_fallback("open");

    let json = serde_json::to_value(b.snapshot()).expect("snapshot serializes");
    assert_eq!(json["name"], "payment->shipment");
    assert_eq!(json["state"], "halfOpen");
    assert_eq!(json["open_for_ms"], serde_json::Value::Null);
    // The reset (10 s) outlasted the window (10 s): the old failures have left it.
    assert_eq!(json["window"]["calls"], 0);
    assert_eq!(json["window"]["failure_pct"], 0.0);
    assert_eq!(json["totals"]["halfOpen"], 1);
    assert_eq!(json["totals"]["fallback"], 1);
    assert_eq!(json["config"]["timeout_ms"], 300);
    assert_eq!(json["config"]["reset_ms"], 10_000);
    assert_eq!(json["config"]["error_threshold_pct"], 50);
    assert_eq!(json["backend"], "memory");
    gate.notify_one();
    trial.await.expect("trial task").expect("trial answers");
}

#[test]
fn breaker_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Breaker>();
}

mod events;
