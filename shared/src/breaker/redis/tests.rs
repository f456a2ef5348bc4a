//! Unit tests of the shared breaker's pieces that need no Redis: keys, lease and TTL arithmetic,
//! the manual clock, reply parsing, URL checking and probe claiming. Against a real Redis:
//! `testkit/tests/redis_breaker.rs`.

use super::*;

#[test]
fn keys_share_one_hash_tag_named_after_the_breaker() {
    let keys = Keys::for_breaker("payment->shipment");
    assert_eq!(keys.state, "breaker:{payment->shipment}:state");
    assert_eq!(keys.window, "breaker:{payment->shipment}:window");
}

#[test]
fn lease_is_the_call_timeout_plus_a_margin() {
    let cfg = BreakerConfig::default();
    assert_eq!(trial_lease(&cfg), Duration::from_millis(1_300));
}

#[test]
fn keys_outlive_the_window_the_open_time_and_the_lease() {
    let cfg = BreakerConfig {
        reset: Duration::from_secs(10),
        reset_jitter: Duration::from_secs(5),
        window: Duration::from_secs(10),
        ..BreakerConfig::default()
    };
    assert_eq!(key_ttl(&cfg), Duration::from_secs(30));
    let short = BreakerConfig {
        reset: Duration::from_millis(10),
        reset_jitter: Duration::ZERO,
        window: Duration::from_millis(10),
        timeout: Duration::ZERO,
        ..BreakerConfig::default()
    };
    assert_eq!(
        key_ttl(&short),
        Duration::from_secs(2),
        "the lease dominates"
    );
    let long_window = BreakerConfig {
        window: Duration::from_secs(60),
        ..BreakerConfig::default()
    };
    assert_eq!(key_ttl(&long_window), Duration::from_secs(120));
}

#[test]
fn manual_clock_moves_only_when_advanced() {
    let clock = ManualClock::new(1_000);
    assert_eq!(clock.now_ms(), 1_000);
    clock.advance(Duration::from_millis(2_500));
    assert_eq!(clock.now_ms(), 3_500);
    let wall = ManualClock::starting_now().now_ms();
    assert!(wall.abs_diff(SystemClock.now_ms()) < 60_000);
}

#[test]
fn admit_replies_parse_into_verdicts() {
    let reply = |v: &str, s: &str, until| parse_admit((v.into(), s.into(), until));
    assert_eq!(
        reply("normal", "closed", 0).expect("valid"),
        (Verdict::Normal, BreakerState::Closed, 0)
    );
    assert_eq!(
        reply("halfOpen", "halfOpen", 0).expect("valid"),
        (Verdict::HalfOpened, BreakerState::HalfOpen, 0)
    );
    assert_eq!(
        reply("trial", "halfOpen", 0).expect("valid").0,
        Verdict::Trial
    );
    assert_eq!(
        reply("reject", "open", 42).expect("valid"),
        (Verdict::Reject, BreakerState::Open, 42)
    );
    assert!(matches!(
        reply("maybe", "open", 0),
        Err(RedisDown::Reply(_))
    ));
    assert!(matches!(
        reply("normal", "ajar", 0),
        Err(RedisDown::Reply(_))
    ));
}

#[test]
fn record_replies_carry_the_window() {
    let (recorded, view) =
        parse_record(("opened".into(), "open".into(), 9_000, 5, 3)).expect("valid");
    assert_eq!(recorded, Recorded::Opened);
    assert_eq!(view.state, BreakerState::Open);
    assert_eq!(view.until_ms, 9_000);
    assert_eq!((view.window.calls, view.window.failures), (5, 3));
    assert_eq!(view.window.failure_pct, 60.0);
    for (name, expected) in [
        ("none", Recorded::Counted),
        ("reopened", Recorded::Reopened),
        ("closed", Recorded::Closed),
        ("stale", Recorded::Stale),
    ] {
        let reply = (name.into(), "closed".into(), 0, 0, 0);
        assert_eq!(parse_record(reply).expect("valid").0, expected);
    }
    assert!(parse_record(("tripped".into(), "open".into(), 0, 0, 0)).is_err());
}

#[test]
fn a_bad_url_fails_the_build_without_connecting() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cfg = BreakerConfig::default();
    assert!(Shared::new("b", &cfg, "http://nope", Arc::clone(&clock)).is_err());
    assert!(Shared::new("b", &cfg, "redis://127.0.0.1:1/", clock).is_ok());
}

#[tokio::test]
async fn only_one_caller_claims_a_due_probe() {
    let clock = Arc::new(ManualClock::new(10_000));
    let shared = Shared::new(
        "b",
        &BreakerConfig::default(),
        "redis://127.0.0.1:1/",
        clock.clone(),
    )
    .expect("a valid URL");
    assert!(shared.should_ask(), "up: every call asks");
    shared.went_down(&RedisDown::Timeout(REDIS_TIMEOUT));
    assert!(!shared.should_ask(), "down: no probe before PROBE_EVERY");
    clock.advance(PROBE_EVERY);
    assert!(shared.should_ask(), "the first caller after it probes");
    assert!(!shared.should_ask(), "the others do not");
    shared.came_up();
    assert!(shared.is_up() && shared.should_ask());
}
