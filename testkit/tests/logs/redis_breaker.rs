//! The shared breaker (`BREAKER_BACKEND=redis`) against a real Redis, seen from outside.
//!
//! Two `Breaker`s with the same name are two replicas of one service. They share a
//! `ManualClock` (the wall clock replicas agree on), so resets, windows and leases pass in
//! virtual milliseconds. Every test uses its own breaker name, hence its own keys, so the tests
//! run in parallel against one server. Redis going away, hanging and coming back is a
//! `RedisProxy` in front of it.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::breaker::redis::{key_ttl, trial_lease, ManualClock, PROBE_EVERY, REDIS_TIMEOUT};
use shared::breaker::{
    Backend, Breaker, BreakerBackend, BreakerConfig, BreakerError, BreakerState, Failure,
};
use testkit::redis::{closed_port, redis_url, RedisProxy};
use tokio::sync::Notify;
use tracing::Level;

use crate::capture::{self, events};

/// Skips the rest of a test when there is no Redis (never in CI, where `redis_url()` panics).
macro_rules! redis_or_skip {
    () => {
        match redis_url() {
            Some(url) => url,
            None => {
                eprintln!("skipped: no Redis");
                return;
            }
        }
    };
}

/// Room for a loaded 2-core CI machine on top of a bound.
const SLACK: Duration = Duration::from_millis(100);

// ---- a hop and its errors ----------------------------------------------------------------

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

/// Counts how often the hop was really called.
#[derive(Clone, Default)]
struct Hop(Arc<AtomicUsize>);

impl Hop {
    fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    async fn ok(&self, b: &Breaker) -> Outcome {
        b.call(None, || {
            self.0.fetch_add(1, Ordering::SeqCst);
            async { Ok(1) }
        })
        .await
    }

    async fn fail(&self, b: &Breaker) -> Outcome {
        b.call(None, || {
            self.0.fetch_add(1, Ordering::SeqCst);
            async { Err(Status(502)) }
        })
        .await
    }

    /// A call whose hop answers `Ok(7)` once `gate` is notified.
    fn gated(&self, b: Arc<Breaker>, gate: Arc<Notify>) -> impl Future<Output = Outcome> + Send {
        let calls = Arc::clone(&self.0);
        async move {
            b.call(None, || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                Ok(7)
            })
            .await
        }
    }
}

fn is_rejected(outcome: &Outcome) -> bool {
    matches!(outcome, Err(BreakerError::Rejected))
}

// ---- replicas ----------------------------------------------------------------------------

/// Default thresholds (5 calls, > 50 %, reset 10 s, window 10 s) and a timeout long enough
/// that a held trial never times out during a test.
fn config() -> BreakerConfig {
    BreakerConfig {
        timeout: Duration::from_secs(5),
        reset_jitter: Duration::ZERO,
        ..BreakerConfig::default()
    }
}

/// A breaker name no other test (or earlier run) uses.
fn unique_name(test: &str) -> String {
    testkit::unique_db_name(test).replace('_', "-")
}

fn replica(name: &str, url: &str, clock: &Arc<ManualClock>) -> Arc<Breaker> {
    let backend = BreakerBackend::Redis {
        url: url.to_owned(),
    };
    let breaker = Breaker::with_backend_and_clock(name, config(), &backend, clock.clone())
        .expect("a valid REDIS_URL builds a breaker");
    Arc::new(breaker)
}

/// Two replicas of one breaker on one clock.
fn two_replicas(test: &str, url: &str) -> (Arc<Breaker>, Arc<Breaker>, Arc<ManualClock>, String) {
    let name = unique_name(test);
    let clock = Arc::new(ManualClock::starting_now());
    let a = replica(&name, url, &clock);
    let b = replica(&name, url, &clock);
    (a, b, clock, name)
}

/// Opens the breaker with failures through `b` (as many as its window needs).
async fn open_through(b: &Breaker, hop: &Hop) {
    for _ in 0..100 {
        if b.state() == BreakerState::Open {
            return;
        }
        assert!(matches!(hop.fail(b).await, Err(BreakerError::Failed(_))));
    }
    panic!("100 failures did not open {}", b.name());
}

/// Polls `cond` for up to two seconds (for work that happens on another task).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("REDIS_URL parses")
        .get_multiplexed_async_connection()
        .await
        .expect("the test Redis answers")
}

// ---- the log ------------------------------------------------------------------------------

fn count(name: &str, event: &str) -> usize {
    events(name).iter().filter(|s| s.event == event).count()
}

// ---- shared state -------------------------------------------------------------------------

#[tokio::test]
async fn failures_through_one_replica_open_the_other() {
    let url = redis_or_skip!();
    capture::install();
    let (a, b, _clock, name) = two_replicas("opens-other", &url);
    let hop = Hop::default();

    open_through(&a, &hop).await;
    assert_eq!(
        count(&name, "open"),
        1,
        "the replica whose failure tripped it logs open"
    );
    assert_eq!(a.snapshot().open_for_ms, Some(10_000));

    let before = hop.calls();
    assert!(is_rejected(&hop.ok(&b).await));
    assert_eq!(hop.calls(), before, "a rejected call never reaches the hop");
    assert_eq!(count(&name, "reject"), 1);

    let snapshot = b.snapshot();
    assert_eq!(snapshot.state, BreakerState::Open);
    assert_eq!(snapshot.backend, Backend::Redis);
    assert_eq!(snapshot.totals.reject, 1);
    assert_eq!(snapshot.totals.open, 0, "b did not open it");
    let json = serde_json::to_value(&snapshot).expect("snapshot serializes");
    assert_eq!(json["backend"], "redis");
}

#[tokio::test]
async fn failures_from_both_replicas_count_in_one_window_and_age_out_of_it() {
    let url = redis_or_skip!();
    let (a, b, clock, _) = two_replicas("one-window", &url);
    let hop = Hop::default();

    // 2 + 2 failures at t0: 4 calls, below min_calls 5.
    for r in [&a, &b, &a, &b] {
        let _ = hop.fail(r).await;
    }
    assert_eq!(a.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().window.failures, 4, "b sees a's failures too");

    // A full window later the old four have left it: one more failure is 1 of 1, below 5.
    clock.advance(Duration::from_secs(10));
    let _ = hop.fail(&a).await;
    assert_eq!(a.snapshot().window.calls, 1);
    assert_eq!(a.state(), BreakerState::Closed);

    // Within the window, failures from either replica add up and trip it.
    clock.advance(Duration::from_secs(5));
    for r in [&b, &a, &b, &a] {
        let _ = hop.fail(r).await;
    }
    assert_eq!(a.snapshot().window.calls, 5);
    assert!(is_rejected(&hop.ok(&b).await));
    assert!(is_rejected(&hop.ok(&a).await));
}

#[tokio::test]
async fn an_ordinary_call_landing_after_the_breaker_opened_is_not_counted() {
    let url = redis_or_skip!();
    let (a, b, _clock, _) = two_replicas("stale", &url);
    let hop = Hop::default();
    let gate = Arc::new(Notify::new());
    let slow = tokio::spawn(hop.gated(Arc::clone(&a), Arc::clone(&gate)));
    eventually("the slow call reaches the hop", || hop.calls() == 1).await;

    open_through(&b, &hop).await;
    gate.notify_one();
    assert_eq!(slow.await.expect("slow call task").expect("it answers"), 7);
    assert_eq!(
        a.state(),
        BreakerState::Open,
        "a stale success does not close it"
    );
    assert!(is_rejected(&hop.ok(&b).await));
}

// ---- the half-open trial ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_caller_of_all_replicas_gets_the_trial_and_its_success_closes_both() {
    let url = redis_or_skip!();
    capture::install();
    let (a, b, clock, name) = two_replicas("one-trial", &url);
    let hop = Hop::default();
    open_through(&a, &hop).await;
    clock.advance(Duration::from_secs(10));

    let before = hop.calls();
    let gate = Arc::new(Notify::new());
    let callers: Vec<_> = (0..20)
        .map(|i| {
            let replica = if i % 2 == 0 { &a } else { &b };
            tokio::spawn(hop.gated(Arc::clone(replica), Arc::clone(&gate)))
        })
        .collect();
    eventually("19 callers are rejected", || {
        callers.iter().filter(|c| c.is_finished()).count() == 19
    })
    .await;
    assert_eq!(hop.calls() - before, 1, "only the trial reaches the hop");
    assert_eq!(
        count(&name, "halfOpen"),
        1,
        "one replica moved it half-open"
    );
    assert_eq!(count(&name, "reject"), 19);

    gate.notify_one();
    let mut admitted = 0;
    for caller in callers {
        match caller.await.expect("caller task") {
            Ok(7) => admitted += 1,
            Err(BreakerError::Rejected) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(admitted, 1);
    assert_eq!(count(&name, "close"), 1);

    let before = hop.calls();
    hop.ok(&a).await.expect("a is closed");
    hop.ok(&b).await.expect("b is closed");
    assert_eq!(hop.calls() - before, 2);
    assert_eq!(
        b.snapshot().window.calls,
        2,
        "the window started afresh on close"
    );
}

#[tokio::test]
async fn a_failed_trial_reopens_for_every_replica_and_restarts_the_reset() {
    let url = redis_or_skip!();
    capture::install();
    let (a, b, clock, name) = two_replicas("trial-fails", &url);
    let hop = Hop::default();
    open_through(&a, &hop).await;
    clock.advance(Duration::from_secs(13)); // a late trial: the timer restarts from it

    assert!(matches!(hop.fail(&b).await, Err(BreakerError::Failed(_))));
    assert_eq!(
        count(&name, "open"),
        2,
        "a opened it, b's failed trial re-opened it"
    );
    assert_eq!(b.snapshot().open_for_ms, Some(10_000));
    assert!(is_rejected(&hop.ok(&a).await));

    clock.advance(Duration::from_millis(9_999));
    assert!(is_rejected(&hop.ok(&a).await));
    clock.advance(Duration::from_millis(1));
    hop.ok(&a).await.expect("the next trial is admitted");
    hop.ok(&b).await.expect("and its success closed both");
}

#[tokio::test]
async fn a_replica_that_dies_mid_trial_does_not_wedge_the_breaker() {
    let url = redis_or_skip!();
    let (a, b, clock, _) = two_replicas("dead-trial", &url);
    let hop = Hop::default();
    open_through(&a, &hop).await;
    clock.advance(Duration::from_secs(10));

    // a takes the trial and dies: its call never finishes and nothing gives the slot back.
    let gate = Arc::new(Notify::new());
    let mut trial = Box::pin(hop.gated(Arc::clone(&a), gate));
    tokio::select! {
        biased;
        _ = &mut trial => panic!("the trial's hop never answers"),
        () = eventually("a's trial reaches the hop", || hop.calls() == 6) => {}
    }
    std::mem::forget(trial);

    assert!(is_rejected(&hop.ok(&b).await), "the lease holds the slot");
    clock.advance(trial_lease(&config()));
    hop.ok(&b)
        .await
        .expect("after the lease, b's caller is the trial");
    assert_eq!(b.state(), BreakerState::Closed);
    hop.ok(&a).await.expect("closed for a too");
}

#[tokio::test]
async fn a_trial_that_outlived_its_lease_has_no_say() {
    let url = redis_or_skip!();
    let (a, b, clock, _) = two_replicas("late-trial", &url);
    let hop = Hop::default();
    open_through(&a, &hop).await;
    clock.advance(Duration::from_secs(10));

    let gate = Arc::new(Notify::new());
    let late = tokio::spawn({
        let (a, gate) = (Arc::clone(&a), Arc::clone(&gate));
        async move {
            a.call(None, || async move {
                gate.notified().await;
                Err::<u32, _>(Status(503))
            })
            .await
        }
    });
    tokio::task::yield_now().await;
    eventually("a holds the trial", || a.state() == BreakerState::HalfOpen).await;
    clock.advance(trial_lease(&config()));
    hop.ok(&b)
        .await
        .expect("b took the lease over and closed it");

    gate.notify_one();
    let outcome = late.await.expect("late trial task");
    assert!(matches!(outcome, Err(BreakerError::Failed(Status(503)))));
    assert_eq!(
        a.state(),
        BreakerState::Closed,
        "the old trial's failure is stale"
    );
    hop.ok(&b).await.expect("still closed");
}

#[tokio::test]
async fn a_timed_out_call_counts_as_a_shared_failure_unless_the_caller_cut_it_short() {
    let url = redis_or_skip!();
    capture::install();
    let name = unique_name("timeout");
    let clock = Arc::new(ManualClock::starting_now());
    let backend = BreakerBackend::Redis { url: url.clone() };
    let short = BreakerConfig {
        timeout: Duration::from_millis(40),
        ..BreakerConfig::default()
    };
    let replica = |cfg: BreakerConfig| {
        Arc::new(
            Breaker::with_backend_and_clock(&name, cfg, &backend, clock.clone())
                .expect("a valid REDIS_URL builds a breaker"),
        )
    };
    let (a, b) = (replica(short), replica(config()));

    // The caller's 10 ms deadline: a timeout, but not the hop's failure.
    let outcome: Outcome = a
        .call(Some(Duration::from_millis(10)), std::future::pending)
        .await;
    assert!(matches!(outcome, Err(BreakerError::Timeout(d)) if d == Duration::from_millis(10)));
    // The breaker's own timeout: a shared failure.
    let outcome: Outcome = a.call(None, std::future::pending).await;
    assert!(matches!(outcome, Err(BreakerError::Timeout(d)) if d == Duration::from_millis(40)));
    assert_eq!(count(&name, "timeout"), 2);
    let _ = Hop::default().ok(&b).await;
    let window = b.snapshot().window;
    assert_eq!(
        (window.calls, window.failures),
        (2, 1),
        "b sees a's full timeout, not the short one"
    );
}

#[tokio::test]
async fn a_cancelled_trial_or_a_4xx_frees_the_slot_for_the_other_replica() {
    let url = redis_or_skip!();
    let (a, b, clock, _) = two_replicas("released-trial", &url);
    let hop = Hop::default();
    open_through(&a, &hop).await;
    clock.advance(Duration::from_secs(10));

    let trial = tokio::spawn(hop.gated(Arc::clone(&a), Arc::new(Notify::new())));
    eventually("a's trial reaches the hop", || hop.calls() == 6).await;
    trial.abort();
    assert!(trial.await.expect_err("aborted").is_cancelled());
    // The slot is given back from a task of its own; no clock moves.
    let mut outcome = hop.ok(&b).await;
    for _ in 0..100 {
        if !is_rejected(&outcome) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        outcome = hop.ok(&b).await;
    }
    assert_eq!(outcome.expect("b's caller became the trial"), 1);

    open_through(&a, &hop).await;
    clock.advance(Duration::from_secs(10));
    let four_xx: Outcome = a.call(None, || async { Err(Status(409)) }).await;
    assert!(matches!(four_xx, Err(BreakerError::Failed(Status(409)))));
    assert_eq!(b.state(), BreakerState::Closed, "b has not looked yet");
    hop.ok(&b)
        .await
        .expect("a 4xx trial gave its slot back at once");
    assert_eq!(
        a.state(),
        BreakerState::HalfOpen,
        "state() is as a last saw it: at its trial"
    );
    hop.ok(&a).await.expect("closed");
    assert_eq!(a.state(), BreakerState::Closed);
}

// ---- keys ---------------------------------------------------------------------------------

#[tokio::test]
async fn every_key_carries_a_time_to_live() {
    let url = redis_or_skip!();
    let (a, _b, _clock, name) = two_replicas("ttl", &url);
    let hop = Hop::default();
    open_through(&a, &hop).await;

    let mut conn = redis(&url).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("breaker:{{{name}}}:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert_eq!(keys.len(), 2, "state and window: {keys:?}");
    let ttl_ms = u64::try_from(key_ttl(&config()).as_millis()).expect("fits");
    for key in keys {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .expect("PTTL");
        let pttl = u64::try_from(pttl).unwrap_or_else(|_| panic!("{key} has no TTL ({pttl})"));
        assert!(pttl > 0 && pttl <= ttl_ms, "{key}: {pttl} ms");
    }
}

// ---- Redis down, slow, back ---------------------------------------------------------------

#[tokio::test]
async fn unreachable_redis_degrades_to_the_local_breaker_and_says_so_once() {
    let _url = redis_or_skip!();
    capture::install();
    let name = unique_name("unreachable");
    let url = format!("redis://127.0.0.1:{}/", closed_port());
    let clock = Arc::new(ManualClock::starting_now());
    let b = replica(&name, &url, &clock); // builds: nothing connects yet
    let hop = Hop::default();

    for _ in 0..20 {
        let start = Instant::now();
        assert_eq!(hop.ok(&b).await.expect("the hop is called"), 1);
        assert!(
            start.elapsed() < REDIS_TIMEOUT + SLACK,
            "{:?}",
            start.elapsed()
        );
    }
    assert_eq!(hop.calls(), 20);
    let down: Vec<_> = events(&name)
        .into_iter()
        .filter(|s| s.event == "redisDown")
        .collect();
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(down[0].level, Level::WARN);
    let snapshot = b.snapshot();
    assert_eq!(snapshot.backend, Backend::RedisUnavailable);
    assert_eq!(
        serde_json::to_value(&snapshot).expect("serializes")["backend"],
        "redis-unavailable (local)"
    );

    // The local breaker protects the hop meanwhile, and a probe that fails says nothing new.
    open_through(&b, &hop).await;
    assert!(is_rejected(&hop.ok(&b).await));
    assert_eq!(count(&name, "open"), 1);
    clock.advance(PROBE_EVERY);
    assert!(is_rejected(&hop.ok(&b).await));
    assert_eq!(count(&name, "redisDown"), 1);
}

#[tokio::test]
async fn a_hanging_redis_costs_one_bounded_wait_then_nothing() {
    let url = redis_or_skip!();
    capture::install();
    let proxy = RedisProxy::start(&url).await.expect("proxy starts");
    let name = unique_name("hanging");
    let clock = Arc::new(ManualClock::starting_now());
    let b = replica(&name, proxy.url(), &clock);
    let hop = Hop::default();
    hop.ok(&b).await.expect("shared");
    assert_eq!(b.snapshot().backend, Backend::Redis);

    proxy.hang().await;
    let start = Instant::now();
    hop.ok(&b).await.expect("the hop is still called");
    let first = start.elapsed();
    assert!(first >= REDIS_TIMEOUT, "waited for Redis first: {first:?}");
    assert!(
        first < REDIS_TIMEOUT + SLACK,
        "but no longer than the bound: {first:?}"
    );
    let start = Instant::now();
    for _ in 0..20 {
        hop.ok(&b).await.expect("local");
    }
    assert!(
        start.elapsed() < SLACK,
        "no more waiting: {:?}",
        start.elapsed()
    );
    assert_eq!(b.snapshot().backend, Backend::RedisUnavailable);
    assert_eq!(count(&name, "redisDown"), 1);
}

#[tokio::test]
async fn when_redis_answers_again_the_breaker_is_shared_again() {
    let url = redis_or_skip!();
    capture::install();
    let proxy = RedisProxy::start(&url).await.expect("proxy starts");
    let name = unique_name("back");
    let clock = Arc::new(ManualClock::starting_now());
    let a = replica(&name, proxy.url(), &clock);
    let b = replica(&name, &url, &clock);
    let hop = Hop::default();
    hop.ok(&a).await.expect("shared");

    proxy.down().await;
    hop.ok(&a).await.expect("local");
    assert_eq!(a.snapshot().backend, Backend::RedisUnavailable);
    open_through(&b, &hop).await; // a cannot see this
    hop.ok(&a).await.expect("a is still local");

    proxy.up().await;
    hop.ok(&a).await.expect("no probe before PROBE_EVERY");
    assert_eq!(a.snapshot().backend, Backend::RedisUnavailable);
    clock.advance(PROBE_EVERY);
    assert!(
        is_rejected(&hop.ok(&a).await),
        "the probe reads the shared open state"
    );
    assert_eq!(a.snapshot().backend, Backend::Redis);
    assert_eq!(a.state(), BreakerState::Open);
    assert!(is_rejected(&hop.ok(&a).await));

    assert_eq!(count(&name, "redisDown"), 1);
    let up: Vec<_> = events(&name)
        .into_iter()
        .filter(|s| s.event == "redisUp")
        .collect();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].level, Level::INFO);
}
