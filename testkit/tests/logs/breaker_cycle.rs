//! A live breaker cycle — open → reject → halfOpen → close — seen from outside: the answers
//! order gives, `GET /breaker`, and the structured log events. The only stack in the `logs`
//! binary, so the `payment->shipment` events it captures are this scenario's.

use crate::capture;
use std::time::Duration;
use testkit::{mongo_stack_or_skip, seed, Svc};
use tracing::Level;

/// The events of `breaker` at `debug` and above (the verbosity this test reads), in order.
fn events_of(breaker: &str) -> Vec<String> {
    capture::events(breaker)
        .into_iter()
        .filter(|s| s.level <= Level::DEBUG)
        .map(|s| s.event)
        .collect()
}

/// `needles` appear in `hay` in this order (not necessarily next to each other).
fn in_order(hay: &[String], needles: &[&str]) -> bool {
    let mut it = hay.iter();
    needles.iter().all(|n| it.any(|h| h == n))
}

#[tokio::test]
async fn breaker_opens_under_injected_errors_and_closes_after_reset_once_healthy() {
    capture::install();

    let mut s = mongo_stack_or_skip!(
        &[
            ("ERR_RATE", "1"),
            ("BREAKER_MIN_CALLS", "3"),
            ("BREAKER_RESET_MS", "400"),
        ],
        &["shipment"]
    );
    // Three failures in the window: payment's breaker to shipment opens.
    for _ in 0..3 {
        let r = s.post(Svc::Order, "/create", &seed()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.json["next"]["fallback"]["reason"], "http 502",
            "{}",
            r.text
        );
    }
    let b = s.get(Svc::Payment, "/breaker").await;
    assert_eq!(b.json["breaker"]["state"], "open", "{}", b.text);

    // Open: order still answers 200 at once, and payment says why it skipped shipment.
    let shipments_before = s.count(Svc::Shipment).await;
    for _ in 0..3 {
        let r = s.post(Svc::Order, "/create", &seed()).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["status"], "degraded");
        assert_eq!(r.json["next"]["fallback"]["reason"], "open", "{}", r.text);
    }
    assert_eq!(
        s.count(Svc::Shipment).await,
        shipments_before,
        "an open breaker must not call the hop"
    );

    // Shipment healthy again; after the reset the trial call goes through and closes it.
    s.restart_shipment(false).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = s.post(Svc::Order, "/create", &seed()).await;
    assert_eq!(r.json["status"], "completed", "{}", r.text);
    let b = s.get(Svc::Payment, "/breaker").await;
    assert_eq!(b.json["breaker"]["state"], "closed", "{}", b.text);

    let seen = events_of("payment->shipment");
    assert!(
        in_order(
            &seen,
            &["failure", "open", "reject", "fallback", "halfOpen", "success", "close"]
        ),
        "events: {seen:?}"
    );
    s.stop().await;
}
